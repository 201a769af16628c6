//! ssh habits on the client, run as the real `quill` binary against a real `quill
//! server` on loopback (`tests/common`): `user@host[:port]`, `-l`/`-p`/`-i`, the
//! config file `$QUILL_HOME/config`, the default identity, `quill fingerprint`,
//! `keygen`'s parent directory, and, in a pseudo-terminal, the first-contact question
//! before the password and the password prompt on `/dev/tty` with a pipe on stdin.
//!
//! Every command has a timeout; every pty wait is bounded.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::{assert_exit, stderr, TestServer, PASSWORD, USER};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A per-test quill home (`QUILL_HOME` and `HOME`), so that nothing of the user's
/// `~/.quill` is read.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn quill_home(&self) -> PathBuf {
        self.dir.path().join(".quill")
    }

    fn write_config(&self, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.quill_home()).unwrap();
        let path = self.quill_home().join("config");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn known_hosts(&self) -> PathBuf {
        self.quill_home().join("known_hosts")
    }

    /// `quill ARGS` with this home, no terminal (its own session), and a timeout.
    fn quill(&self) -> Command {
        let mut std_cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quill"));
        self.env(&mut std_cmd);
        // SAFETY: setsid is async-signal-safe; it only detaches from the terminal.
        unsafe {
            std_cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut c = Command::from_std(std_cmd);
        c.timeout(TIMEOUT);
        c
    }

    /// `quill ARGS` with `stdin`, its output.
    fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        self.quill().args(args).write_stdin(stdin).output().unwrap()
    }

    /// `quill keygen -o PATH`, which must succeed; returns what it printed.
    fn keygen(&self, path: &Path) -> String {
        let o = self
            .quill()
            .arg("keygen")
            .arg("-o")
            .arg(path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    }

    fn env(&self, c: &mut std::process::Command) {
        c.env("HOME", self.dir.path())
            .env("QUILL_HOME", self.quill_home())
            .env_remove("QUILL_KNOWN_HOSTS")
            .env("NO_COLOR", "1");
    }
}

fn port_of(server: &TestServer) -> &str {
    server.addr.rsplit(':').next().expect("port")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that `quill connect` succeeded, echoed `data` and logged `log_needle`.
fn assert_echoed(o: &std::process::Output, data: &str, log_needle: &str) {
    assert!(o.status.success(), "{}", stderr(o));
    assert_eq!(stdout(o), data);
    assert!(stderr(o).contains(log_needle), "{}", stderr(o));
}

#[test]
fn user_at_host_dash_p_and_dash_l_log_in() {
    let server = TestServer::start(false);
    let home = Home::new();
    let login = ["--password-stdin", "--host-key", &server.fingerprint];
    let target = format!("{USER}@127.0.0.1");
    let args = [&["connect", &target, "-p", port_of(&server)][..], &login].concat();
    let o = home.run(&args, &format!("{PASSWORD}\nhello\n"));
    assert_echoed(&o, "hello\n", "");

    // `-l` with HOST:PORT, on ping (whose -i stays the interval).
    let args = [
        &["ping", &server.addr, "-c", "1", "-i", "10ms", "-l", USER][..],
        &login,
    ]
    .concat();
    let o = home.run(&args, &format!("{PASSWORD}\n"));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn user_and_port_given_twice_must_agree() {
    let home = Home::new();
    for (args, want) in [
        (
            &["connect", "bob@127.0.0.1", "-l", "alice"][..],
            "two account names",
        ),
        (&["connect", "127.0.0.1:5000", "-p", "5001"], "two ports"),
        (&["send", "f", "@127.0.0.1:f"], "empty user name"),
        (&["ping", "127.0.0.1", "-p", "0"], "-p"),
    ] {
        let o = home.run(&[args, &["--password-stdin"]].concat(), "pw\n");
        assert_exit(&o, 2, want);
    }
}

#[test]
fn config_file_gives_host_name_port_user_and_host_key_policy() {
    let server = TestServer::start(false);
    let home = Home::new();
    home.write_config(&format!(
        "# the test server\nHost srv\n    HostName 127.0.0.1\n    Port {}\n    User {USER}\n    \
         StrictHostKeyChecking accept-new\n",
        port_of(&server)
    ));
    let o = home.run(
        &["-v", "connect", "srv", "--password-stdin"],
        &format!("{PASSWORD}\nvia config\n"),
    );
    assert_echoed(&o, "via config\n", "from the config file");
    let known = std::fs::read_to_string(home.known_hosts()).unwrap();
    assert!(
        known.starts_with(&format!("127.0.0.1:{} quill-ed25519 ", port_of(&server))),
        "{known}"
    );
}

#[test]
fn a_bad_config_line_is_a_one_line_error_naming_file_and_line() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let args = ["connect", "srv", "--password-stdin"];
    let path = home.write_config("Host srv\n  Port 4433\n  Usr alice\n");
    let o = home.run(&args, "pw\n");
    assert_exit(
        &o,
        2,
        &format!("{}:3: unknown keyword \"Usr\"", path.display()),
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    home.write_config("Host *\n  StrictHostKeyChecking no\n");
    assert_exit(
        &home.run(&args, "pw\n"),
        2,
        "config:2: StrictHostKeyChecking no",
    );

    let path = home.write_config("Port 4433\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_exit(&home.run(&args, "pw\n"), 2, "chmod 600");
}

/// Authorises `pub_key` for [`USER`] in the test server's account database.
fn authorise(home: &Home, server: &TestServer, pub_key: &Path) {
    let o = home
        .quill()
        .args(["user", "add-key", USER])
        .arg(pub_key)
        .arg("--accounts")
        .arg(server.dir.path().join("accounts.db"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_default_identity_is_used_when_present_and_no_password_is_given() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start(false);
    let home = Home::new();
    // keygen creates ~/.quill (0700), as its own help example says.
    let key = home.quill_home().join("id_ed25519");
    home.keygen(&key);
    let mode = std::fs::metadata(home.quill_home())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let mut public = key.into_os_string();
    public.push(".pub");
    authorise(&home, &server, Path::new(&public));

    let target = format!("{USER}@{}", server.addr);
    let args = ["-v", "connect", &target, "--host-key", &server.fingerprint];
    let o = home.run(&args, "by key\n");
    assert_echoed(&o, "by key\n", "id_ed25519 (default)");

    // `IdentityFile none` turns it off: then a password is needed, and there is no
    // terminal to ask for one.
    home.write_config("IdentityFile none\n");
    let o = home.run(&args, "");
    assert_exit(&o, 2, "cannot prompt for a password: no terminal");
}

#[test]
fn a_refused_default_identity_says_how_to_use_a_password() {
    let server = TestServer::start(false);
    let home = Home::new();
    home.keygen(&home.quill_home().join("id_ed25519"));
    // Not authorised on the server.
    let target = format!("{USER}@{}", server.addr);
    let o = home.run(&["connect", &target, "--host-key", &server.fingerprint], "");
    assert_exit(&o, 4, "found by default");
    assert!(stderr(&o).contains("IdentityFile none"), "{}", stderr(&o));
}

#[test]
fn fingerprint_prints_what_keygen_prints_and_the_server_presents() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let dir = home.dir.path();
    let key = dir.join("id.key");
    let printed = home.keygen(&key);
    let want = printed
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("keygen prints the fingerprint")
        .to_owned();
    let fingerprint_of = |file: &Path| home.run(&["fingerprint", file.to_str().unwrap()], "");
    for file in [key.clone(), dir.join("id.key.pub")] {
        let o = fingerprint_of(&file);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), want, "{}", file.display());
    }
    // A running server's key: the one it presents (named in the unknown-host error).
    let server = TestServer::start(false);
    let o = fingerprint_of(&server.dir.path().join("host.key"));
    let theirs = stdout(&o).trim().to_owned();
    assert_eq!(theirs, server.fingerprint);
    let refused = home.run(&["connect", &format!("{USER}@{}", server.addr)], "");
    assert_exit(&refused, 5, &format!("--host-key {theirs}"));

    // Failing paths: a directory, a file that is no key, a private key others can read.
    assert_exit(&fingerprint_of(dir), 2, "is a directory");
    std::fs::write(dir.join("junk"), "hello\n").unwrap();
    assert_exit(
        &fingerprint_of(&dir.join("junk")),
        2,
        "not a quill key file",
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_exit(&fingerprint_of(&key), 2, "chmod 600");
}

#[test]
fn server_key_errors_say_what_is_wrong_not_chmod() {
    let home = Home::new();
    let dir = home.dir.path();
    let key = dir.join("host.key");
    home.keygen(&key);
    let root = dir.to_str().unwrap();
    let db = dir.join("accounts.db");
    for (given, want) in [
        (dir.join("host.key.pub"), "is a public key"),
        (dir.to_path_buf(), "is a directory"),
    ] {
        let args = ["server", "--key", given.to_str().unwrap(), "--root", root];
        let o = home.run(
            &[&args[..], &["--accounts", db.to_str().unwrap()]].concat(),
            "",
        );
        assert_exit(&o, 2, want);
        assert!(!stderr(&o).contains("chmod"), "{}", stderr(&o));
    }
}

#[test]
fn an_unknown_host_off_a_terminal_exits_5_with_advice_and_records_nothing() {
    let server = TestServer::start(false);
    let home = Home::new();
    let target = format!("{USER}@{}", server.addr);
    let o = home.run(
        &["connect", &target, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_exit(&o, 5, "--accept-new-host");
    assert!(stderr(&o).contains(&server.fingerprint), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no terminal to ask on"),
        "{}",
        stderr(&o)
    );
    assert!(!home.known_hosts().exists());
}

// ---- In a pseudo-terminal -------------------------------------------------------

/// A command in a new session whose controlling terminal is a fresh pty; what it
/// writes there is collected by a thread.
struct Pty {
    child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(home: &Home, program: &str, args: &[&str]) -> Pty {
        let (mut master_fd, mut slave_fd) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the given integers.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        home.env(&mut cmd);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the pty (stdin) becomes
        // the new session's controlling terminal, so the child's /dev/tty is it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn in a pty");
        drop(cmd); // closes our copies of the slave
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every holder of the slave has exited.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits (at most [`TIMEOUT`]) until the terminal shows `needle`; returns all of it.
    fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!("{needle:?} did not appear within {TIMEOUT:?}; the terminal shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// The exit code, waiting at most [`TIMEOUT`].
    fn wait(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!(
                    "no exit within {TIMEOUT:?}; the terminal shows:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const QUESTION: &str = "Are you sure you want to continue connecting (yes/no/[fingerprint])?";

/// `quill connect alice@SERVER` in a pty with an empty known_hosts, up to the
/// first-contact question, which must show the fingerprint and come before any
/// password prompt.
fn first_contact() -> (TestServer, Home, Pty, String) {
    let server = TestServer::start(false);
    let home = Home::new();
    let target = format!("{USER}@{}", server.addr);
    let mut pty = Pty::spawn(&home, env!("CARGO_BIN_EXE_quill"), &["connect", &target]);
    let shown = pty.expect(QUESTION);
    assert!(shown.contains(&server.fingerprint), "{shown}");
    assert!(
        !shown.contains("Password"),
        "asked for the password first:\n{shown}"
    );
    (server, home, pty, target)
}

#[test]
fn first_contact_asks_yes_no_before_the_password_and_records_the_key() {
    let (server, home, mut pty, target) = first_contact();
    pty.send("yes\n");
    pty.expect(&format!("Password for {USER}@127.0.0.1: "));
    assert!(pty.text().contains("Permanently added"), "{}", pty.text());
    pty.send(&format!("{PASSWORD}\n"));
    pty.expect("end input with Ctrl-D");
    pty.send("over the terminal\n\x04");
    assert_eq!(pty.wait(), Some(0), "{}", pty.text());
    // The line typed (echoed by the terminal) and the server's echo of it.
    assert_eq!(
        pty.text().matches("over the terminal").count(),
        2,
        "{}",
        pty.text()
    );
    assert!(!pty.text().contains(PASSWORD), "the password was echoed");
    let known = std::fs::read_to_string(home.known_hosts()).unwrap();
    assert!(
        known.starts_with(&format!("{} quill-ed25519 ", server.addr)),
        "{known}"
    );

    // Known now: no question the second time.
    let mut pty = Pty::spawn(&home, env!("CARGO_BIN_EXE_quill"), &["connect", &target]);
    pty.expect("Password for");
    assert!(!pty.text().contains(QUESTION), "{}", pty.text());
}

#[test]
fn answering_no_exits_5_without_asking_for_the_password() {
    let (_server, home, mut pty, _) = first_contact();
    pty.send("maybe\n");
    pty.expect("Please type 'yes', 'no' or the fingerprint:");
    pty.send("no\n");
    assert_eq!(pty.wait(), Some(5), "{}", pty.text());
    let text = pty.text();
    assert!(text.contains("was not accepted"), "{text}");
    assert!(!text.contains("Password"), "{text}");
    assert!(!home.known_hosts().exists());
}

/// `echo DATA | quill connect SERVER -l alice --host-key FP` in a pty (`-l` so that
/// the test does not depend on who runs it), up to the password prompt.
fn piped_connect(data: &str) -> (TestServer, Pty) {
    let server = TestServer::start(false);
    let line = format!(
        "echo {data} | '{}' connect {} -l {USER} --host-key {}",
        env!("CARGO_BIN_EXE_quill"),
        server.addr,
        server.fingerprint
    );
    let mut pty = Pty::spawn(&Home::new(), "sh", &["-c", &line]);
    pty.expect(&format!("Password for {USER}@127.0.0.1: "));
    (server, pty)
}

#[test]
fn the_password_prompt_reads_the_terminal_when_stdin_is_a_pipe() {
    let (_server, mut pty) = piped_connect("hello from the pipe");
    pty.send(&format!("{PASSWORD}\n"));
    assert_eq!(pty.wait(), Some(0), "{}", pty.text());
    assert!(pty.text().contains("hello from the pipe"), "{}", pty.text());
}

#[test]
fn the_local_user_name_default_is_said_in_the_prompt() {
    let server = TestServer::start(false);
    let home = Home::new();
    let mut pty = Pty::spawn(
        &home,
        env!("CARGO_BIN_EXE_quill"),
        &["connect", &server.addr, "--host-key", &server.fingerprint],
    );
    pty.expect("(your local user name; -l USER for another): ");
    pty.send("x\n");
    // Whatever the local account, this password is wrong or the account unknown.
    assert_eq!(pty.wait(), Some(4), "{}", pty.text());
}

#[test]
fn ctrl_c_at_the_tty_password_prompt_puts_echo_back() {
    use std::os::fd::AsRawFd;
    let (_server, mut pty) = piped_connect("data");
    let echo_on = |pty: &Pty| {
        // SAFETY: tcgetattr fills the zeroed struct we own; the master reports the
        // terminal's settings.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(pty.master.as_raw_fd(), &mut t), 0);
            t.c_lflag & libc::ECHO != 0
        }
    };
    assert!(!echo_on(&pty), "the prompt turned echo off");
    pty.send("\x03");
    assert_eq!(pty.wait(), Some(130), "{}", pty.text());
    assert!(echo_on(&pty), "echo was left off:\n{}", pty.text());
}
