//! `quill server` run like sshd, with the real binary: its connection log lines (text
//! and JSON), colour only on a terminal, and SIGHUP (reload, survive, keep the old
//! settings when the file is broken). Every wait is bounded.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::child;
use common::{ServerFiles, PASSWORD, USER};

/// Bound on one client command, and on waiting for one log line.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A `quill server` whose standard error (its log) the test reads line by line.
struct LoggedServer {
    addr: String,
    fingerprint: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    lines: Receiver<String>,
    /// Every line read so far.
    log: Vec<String>,
}

impl LoggedServer {
    /// Starts a server with `args`, `config` as its `--config` file (if given) and
    /// `env` added to its environment (RUST_LOG and NO_COLOR are removed first).
    fn start(args: &[&str], config: Option<&str>, env: &[(&str, &str)]) -> LoggedServer {
        let files = ServerFiles::new();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quill"));
        cmd.args(["server", "--listen", "127.0.0.1:0", "--retry", "never"])
            .arg("--key")
            .arg(&files.key_path)
            .arg("--accounts")
            .arg(&files.accounts)
            .arg("--root")
            .arg(&files.root)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(text) = config {
            let file = files.dir.path().join("server.conf");
            std::fs::write(&file, text).expect("config");
            cmd.arg("--config").arg(&file);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("quill server starts");
        let lines = child::lines(child.stderr.take().expect("stderr"));
        let mut server = LoggedServer {
            addr: String::new(),
            fingerprint: files.key.public().fingerprint(),
            dir: files.dir,
            child: Some(child),
            lines,
            log: Vec::new(),
        };
        let line = server.wait_for("listening", |l| l.starts_with("listening "));
        server.addr = line["listening ".len()..].trim().to_string();
        server
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("server.conf")
    }

    /// Waits (at most [`TIMEOUT`]) for a log line that `want` accepts.
    fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.log.iter().find(|l| want(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if want(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no log line {what} within {TIMEOUT:?}; the log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Forgets the lines read so far (the next waits see only new ones).
    fn clear(&mut self) {
        self.log.clear();
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child process.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
    }

    fn still_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        child.try_wait().expect("try_wait").is_none()
    }

    /// A client command with the password on standard input.
    fn client(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("quill").expect("binary");
        c.timeout(TIMEOUT)
            .env_remove("QUILL_KNOWN_HOSTS")
            .args(args)
            .args(["--password-stdin", "--host-key", &self.fingerprint]);
        c
    }

    /// `echo hi | quill connect` as `user` with `password`.
    fn connect(&self, user: &str, password: &str) -> std::process::Output {
        self.client(&["connect", &self.addr, "--user", user])
            .write_stdin(format!("{password}\nhi\n"))
            .output()
            .expect("quill connect")
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            child::stop(&mut c, Duration::from_secs(10));
        }
    }
}

fn has_escape_codes(lines: &[String]) -> bool {
    lines.iter().any(|l| l.contains('\u{1b}'))
}

/// The value of `key=` in a text log line: up to the next space, or a quoted string
/// (returned without its quotes; the test values have no escapes).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => Some(rest.split(' ').next().unwrap_or(rest)),
    }
}

#[test]
fn text_log_has_one_line_per_connection_event() {
    let mut server = LoggedServer::start(&[], None, &[]);

    let ok = server.connect(USER, PASSWORD);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let accepted = server.wait_for("connection accepted", |l| {
        l.contains("INFO connection accepted")
    });
    assert!(accepted.contains(" INFO "), "{accepted}");
    assert!(
        field(&accepted, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{accepted}"
    );
    let cid = field(&accepted, "cid").expect("cid").to_string();
    assert!(cid.len() >= 8, "{accepted}");
    assert!(accepted.contains("X25519+ML-KEM-768"), "{accepted}");
    assert!(field(&accepted, "suite").is_some(), "{accepted}");
    let login = server.wait_for("login accepted", |l| l.contains("INFO login accepted"));
    assert_eq!(field(&login, "user"), Some(USER), "{login}");
    assert_eq!(field(&login, "cid"), Some(cid.as_str()), "{login}");
    assert_eq!(field(&login, "method"), Some("password"), "{login}");
    let closed = server.wait_for("connection closed", |l| {
        l.contains("INFO connection closed")
    });
    assert_eq!(field(&closed, "by"), Some("client"), "{closed}");
    assert_eq!(field(&closed, "reason"), Some("done"), "{closed}");
    assert_eq!(field(&closed, "user"), Some(USER), "{closed}");
    assert_eq!(field(&closed, "cid"), Some(cid.as_str()), "{closed}");
    assert!(
        field(&closed, "duration").is_some_and(|d| d.ends_with('s')),
        "{closed}"
    );
    for key in ["bytes_in", "bytes_out"] {
        let n: u64 = field(&closed, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {closed}"));
        assert!(n > 1000, "a handshake moves kilobytes: {closed}");
    }
    assert!(
        !server.log.iter().any(|l| l.contains("shutting down")),
        "a client's close is not the server shutting down:\n{}",
        server.log.join("\n")
    );

    server.clear();
    let refused = server.connect(USER, "not the password");
    assert_eq!(refused.status.code(), Some(4), "login refused exits 4");
    let line = server.wait_for("login refused", |l| l.contains("INFO login refused"));
    assert_eq!(field(&line, "user"), Some(USER), "{line}");
    assert!(
        field(&line, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert_eq!(field(&line, "reason"), Some("wrong password"), "{line}");
    assert!(!line.contains("ConnectionHandle"), "{line}");
    // The client still gets the one answer for every failure.
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("login refused"), "{err}");
    assert!(!err.contains("wrong password"), "{err}");

    server.clear();
    let unknown = server.connect("mallory", PASSWORD);
    assert_eq!(unknown.status.code(), Some(4));
    let line = server.wait_for("login refused", |l| l.contains("INFO login refused"));
    assert_eq!(field(&line, "user"), Some("mallory"), "{line}");
    assert_eq!(field(&line, "reason"), Some("unknown account"), "{line}");
    let closed = server.wait_for("connection closed", |l| {
        l.contains("INFO connection closed")
    });
    assert_eq!(field(&closed, "by"), Some("server"), "{closed}");
    assert!(closed.contains("LOGIN_REFUSED"), "{closed}");

    // stderr is a pipe: no colour codes.
    assert!(!has_escape_codes(&server.log), "{:?}", server.log);
}

#[test]
fn json_log_lines_parse_and_carry_the_same_fields() {
    let mut server = LoggedServer::start(&["--log-format", "json"], None, &[]);
    assert!(server.connect(USER, PASSWORD).status.success());
    assert_eq!(server.connect(USER, "wrong").status.code(), Some(4));
    let parse = |l: &str| -> serde_json::Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    let is = |m: &'static str| move |l: &str| l.contains(&format!("\"message\":\"{m}\""));
    let accepted = parse(&server.wait_for("connection accepted", is("connection accepted")));
    assert_eq!(accepted["level"], "INFO");
    assert!(accepted["timestamp"].is_string(), "{accepted}");
    assert!(accepted["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(accepted["cid"].is_string());
    assert_eq!(accepted["kx"], "X25519+ML-KEM-768");
    let login = parse(&server.wait_for("login accepted", is("login accepted")));
    assert_eq!(login["user"], USER);
    let closed = parse(&server.wait_for("connection closed", is("connection closed")));
    assert_eq!(closed["by"], "client");
    assert_eq!(closed["reason"], "done");
    assert!(closed["bytes_in"].as_u64().unwrap() > 0, "{closed}");
    assert!(closed["bytes_out"].as_u64().unwrap() > 0, "{closed}");
    let refused = parse(&server.wait_for("login refused", is("login refused")));
    assert_eq!(refused["user"], USER);
    assert_eq!(refused["reason"], "wrong password");
    assert!(refused["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The listening line is the only line that is not JSON (it is not a log event).
    for l in &server.log {
        if !l.starts_with("listening ") && !l.starts_with("host key fingerprint ") {
            parse(l);
        }
    }
}

#[test]
fn log_format_from_the_config_file_and_rust_log_wins_over_the_default() {
    // log-format = json from the file; RUST_LOG=warn hides the info lines.
    let mut server = LoggedServer::start(
        &[],
        Some("log-format = json\n"),
        &[("RUST_LOG", "warn,quill::login=info")],
    );
    assert!(server.connect(USER, PASSWORD).status.success());
    let login = server.wait_for("login accepted", |l| {
        l.contains(r#""message":"login accepted""#)
    });
    assert!(login.starts_with('{'), "{login}");
    assert!(
        !server
            .log
            .iter()
            .any(|l| l.contains("INFO connection accepted")),
        "RUST_LOG=warn,quill::login=info keeps only the login lines:\n{}",
        server.log.join("\n")
    );
}

#[test]
fn a_bad_log_setting_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "log-level = loud\n").unwrap();
    let o = assert_cmd::Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args(["server", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("server.conf:1: 'loud' is not a log level"),
        "{err}"
    );
    let o = assert_cmd::Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args(["server", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Runs `quill -v connect` to a port nothing listens on (it logs at `info`, then fails
/// at once) under a pseudo-terminal (`script`), and returns what the terminal showed.
fn on_a_terminal(no_color: bool) -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let quill = env!("CARGO_BIN_EXE_quill");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let line = format!(
        "{quill} -v connect 127.0.0.1:{port} --user alice --password-file {} --host-key {} \
         --connect-timeout 2s </dev/null",
        pw.display(),
        common::other_fingerprint()
    );
    let mut cmd = assert_cmd::Command::new("script");
    cmd.timeout(TIMEOUT)
        .args(["-qec", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let o = cmd.output().expect("script");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed for this test: apt-get install bsdutils");
    }
    let tty = on_a_terminal(false);
    assert!(tty.contains("INFO"), "{tty}");
    assert!(tty.contains('\u{1b}'), "a terminal gets colour: {tty:?}");
    let plain = on_a_terminal(true);
    assert!(plain.contains("INFO"), "{plain}");
    assert!(
        !plain.contains("\u{1b}["),
        "NO_COLOR: no escape codes: {plain:?}"
    );
}

#[test]
fn no_escape_codes_with_no_color_in_a_pipe() {
    let mut server = LoggedServer::start(&[], None, &[("NO_COLOR", "1")]);
    assert!(server.connect(USER, PASSWORD).status.success());
    server.wait_for("connection closed", |l| {
        l.contains("INFO connection closed")
    });
    assert!(!has_escape_codes(&server.log), "{:?}", server.log);
}

/// A `quill connect` session kept open: lines written to it come back.
struct Session {
    child: Child,
    out: Receiver<String>,
}

impl Session {
    fn open(server: &LoggedServer) -> Session {
        let pw = server.dir.path().join("password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(["connect", &server.addr, "--user", USER, "--password-file"])
            .arg(&pw)
            .args(["--host-key", &server.fingerprint])
            .env_remove("QUILL_KNOWN_HOSTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("quill connect");
        let out = child::lines(child.stdout.take().unwrap());
        Session { child, out }
    }

    fn echo(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to quill connect");
        stdin.flush().unwrap();
        let got = self.out.recv_timeout(TIMEOUT).expect("the echo comes back");
        assert_eq!(got, line);
    }
}

impl Session {
    /// Closes its input: the session ends with exit 0.
    fn close(mut self) {
        drop(self.child.stdin.take());
        let status = child::wait_or_kill(&mut self.child, Duration::from_secs(10));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "quill connect ends cleanly after its input closed"
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        child::wait_or_kill(&mut self.child, Duration::from_secs(10));
    }
}

fn write_config(path: &Path, text: &str) {
    // Written whole and renamed, as an editor or a config manager does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `quill send` of a 100-byte file; its exit code and standard error.
fn send_100_bytes(server: &LoggedServer, name: &str) -> (Option<i32>, String) {
    let file = server.dir.path().join("hundred.bin");
    std::fs::write(&file, [7u8; 100]).unwrap();
    let o = server
        .client(&["send"])
        .arg(&file)
        .arg(format!("{}:{name}", server.addr))
        .args(["--user", USER])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn sighup_reloads_the_config_and_keeps_sessions() {
    let mut server = LoggedServer::start(&[], Some("max-upload-size = 10\n"), &[]);
    let (code, err) = send_100_bytes(&server, "a.bin");
    assert_eq!(code, Some(3), "over the 10-byte limit: {err}");

    let mut session = Session::open(&server);
    session.echo("before the reload");

    write_config(
        &server.config_path(),
        "max-upload-size = 1M\nidle-timeout = 45s\nlog-level = debug\n",
    );
    server.clear();
    server.signal(libc::SIGHUP);
    let line = server.wait_for("the reload", |l| l.contains("SIGHUP: reloaded"));
    assert!(line.contains("max-upload-size 10 -> 1048576"), "{line}");
    assert!(line.contains("log-level info -> debug"), "{line}");
    assert!(
        line.contains("needs a restart to apply: idle-timeout"),
        "{line}"
    );
    assert!(server.still_running(), "SIGHUP must not end the server");

    session.echo("after the reload");
    let (code, err) = send_100_bytes(&server, "b.bin");
    assert_eq!(code, Some(0), "the new limit applies: {err}");
    // Uploads land in the account's own space (ROOT/<account>/).
    assert!(server
        .dir
        .path()
        .join("root")
        .join(USER)
        .join("b.bin")
        .exists());
    // log-level = debug took effect too.
    server.wait_for("a debug line", |l| l.contains("DEBUG"));
    session.close();

    // Still stops cleanly on SIGTERM.
    server.signal(libc::SIGTERM);
    let mut child = server.child.take().unwrap();
    let status = child::wait_or_kill(&mut child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let mut server = LoggedServer::start(&[], Some("max-upload-size = 1M\n"), &[]);
    write_config(&server.config_path(), "max-upload-size = lots\n");
    server.signal(libc::SIGHUP);
    let line = server.wait_for("the refusal", |l| {
        l.contains("keeping the running configuration")
    });
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("server.conf:1"), "{line}");
    assert!(server.still_running());
    let (code, err) = send_100_bytes(&server, "c.bin");
    assert_eq!(code, Some(0), "the old limit (1M) still applies: {err}");

    // A missing file, then an unknown key: the same.
    std::fs::remove_file(server.config_path()).unwrap();
    server.clear();
    server.signal(libc::SIGHUP);
    server.wait_for("the refusal", |l| {
        l.contains("keeping the running configuration")
    });
    write_config(&server.config_path(), "colour = blue\n");
    server.clear();
    server.signal(libc::SIGHUP);
    let line = server.wait_for("the refusal", |l| {
        l.contains("keeping the running configuration")
    });
    assert!(line.contains("unknown key 'colour'"), "{line}");
    // Several SIGHUPs in a row never end it.
    for _ in 0..3 {
        server.signal(libc::SIGHUP);
    }
    server.clear();
    assert!(server.connect(USER, PASSWORD).status.success());
    server.wait_for("a login", |l| l.contains("INFO login accepted"));
    assert!(server.still_running());
}

#[test]
fn sighup_without_a_config_file_is_harmless() {
    let mut server = LoggedServer::start(&[], None, &[]);
    server.signal(libc::SIGHUP);
    server.wait_for("the notice", |l| l.contains("no --config file to reload"));
    assert!(server.connect(USER, PASSWORD).status.success());
    assert!(server.still_running());
}
