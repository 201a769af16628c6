//! How `quill` ends when its surroundings give out: standard output closed under it
//! (exit 141, quietly, no panic), a key file write that fails (nothing left behind),
//! and Ctrl-C in the middle of a transfer (exit 130, no partial file, the server told
//! at once). Real binary, real test server on loopback; every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, PASSWORD, USER};

/// Hang guard for one command.
const TIMEOUT: Duration = Duration::from_secs(60);

fn quill() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quill"));
    c.env_remove("QUILL_KNOWN_HOSTS");
    c
}

/// A pipe whose read end is already closed: every write to the other end fails with
/// EPIPE, deterministically (no race with a reader that has not gone yet).
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// Waits at most [`TIMEOUT`] for `child`, killing it on expiry.
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` with stdout a closed pipe and `stdin` as its input; returns the exit
/// status and what it wrote on stderr.
fn run_into_closed_pipe(mut cmd: Command, stdin: &[u8], what: &str) -> (ExitStatus, String) {
    cmd.stdin(Stdio::piped())
        .stdout(closed_pipe())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn quill");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = wait_bounded(&mut child, what);
    let _ = feeder.join();
    (status, reader.join().unwrap_or_default())
}

/// A 0600 file holding the test account's password.
fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("password");
    std::fs::write(&path, format!("{PASSWORD}\n")).expect("write password file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

#[test]
fn every_command_that_prints_exits_141_quietly_on_a_closed_pipe() {
    let server = TestServer::start(true);
    let work = tempfile::tempdir().expect("tempdir");
    let pw = password_file(work.path());
    std::fs::write(server.space().join("notes.txt"), b"some notes\n").expect("server file");
    let local = work.path().join("upload.txt");
    std::fs::write(&local, b"to send\n").expect("local file");
    let login = |c: &mut Command| {
        c.args(["--user", USER, "--password-file"])
            .arg(&pw)
            .args(["--host-key", &server.fingerprint]);
    };
    let remote = |path: &str| format!("{}:{path}", server.addr);
    let mut cases: Vec<(&str, Command, Vec<u8>)> = Vec::new();
    for args in [
        &["--help"][..],
        &["--version"],
        &["ping", "--help"],
        &["demo", "--bytes", "1000"],
    ] {
        let mut c = quill();
        c.args(args);
        cases.push((args[0], c, Vec::new()));
    }
    let mut c = quill();
    c.arg("keygen").arg("-o").arg(work.path().join("id"));
    cases.push(("keygen", c, Vec::new()));
    let mut c = quill();
    c.args(["user", "list", "--accounts"])
        .arg(server.dir.path().join("accounts.db"));
    cases.push(("user list", c, Vec::new()));
    let mut c = quill();
    c.args(["ping", &server.addr, "-c", "3", "-i", "10ms"]);
    login(&mut c);
    cases.push(("ping", c, Vec::new()));
    let mut c = quill();
    c.args(["perf", &server.addr, "--bytes", "100000"]);
    login(&mut c);
    cases.push(("perf", c, Vec::new()));
    let mut c = quill();
    c.args(["perf", &server.addr, "--bytes", "100000", "--json"]);
    login(&mut c);
    cases.push(("perf --json", c, Vec::new()));
    let mut c = quill();
    c.args(["get", &remote("notes.txt"), "-"]);
    login(&mut c);
    cases.push(("get to -", c, Vec::new()));
    let mut c = quill();
    c.args(["get", &remote("notes.txt")])
        .arg(work.path().join("copy.txt"));
    login(&mut c);
    cases.push(("get to a file", c, Vec::new()));
    let mut c = quill();
    c.arg("send").arg(&local).arg(remote("upload.txt"));
    login(&mut c);
    cases.push(("send", c, Vec::new()));
    let mut c = quill();
    c.args(["connect", &server.addr]);
    login(&mut c);
    cases.push(("connect", c, b"hello\n".to_vec()));
    let mut c = quill();
    c.args([
        "register",
        &server.addr,
        "--user",
        "carol",
        "--password-stdin",
    ])
    .args(["--host-key", &server.fingerprint]);
    cases.push(("register", c, b"a password for carol\n".to_vec()));

    for (what, cmd, stdin) in cases {
        let (status, stderr) = run_into_closed_pipe(cmd, &stdin, what);
        assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
        assert_eq!(
            status.code(),
            Some(141),
            "{what}: expected exit 141 (128 + SIGPIPE), got {status}; stderr:\n{stderr}"
        );
        assert!(
            !stderr.contains("quill:"),
            "{what} should end quietly on a closed pipe, but said:\n{stderr}"
        );
    }
}

/// `quill keygen -o PATH` with every file it writes limited to `limit` bytes: a write
/// past it fails with EFBIG (SIGXFSZ is ignored), as a full disk would fail it.
fn keygen_with_file_size_limit(path: &Path, limit: Option<u64>) -> std::process::Output {
    let mut c = quill();
    c.arg("keygen").arg("-o").arg(path);
    if let Some(limit) = limit {
        // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keygen");
    let _ = wait_bounded(&mut child, "keygen");
    child.wait_with_output().expect("output")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_key_write_leaves_nothing_and_the_retry_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("host.key");
    // Room for the start of the private key file but not all of it.
    let o = keygen_with_file_size_limit(&path, Some(20));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "keygen should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("cannot write the key"), "{err}");
    assert_eq!(
        names_in(dir.path()),
        Vec::<String>::new(),
        "a failed keygen left files behind"
    );

    let o = keygen_with_file_size_limit(&path, None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the retry failed: {err}");
    assert_eq!(names_in(dir.path()), ["host.key", "host.key.pub"]);
    let mode = std::fs::metadata(&path).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).expect("read key");
    assert!(
        text.starts_with("-----BEGIN QUILL PRIVATE KEY-----"),
        "{text}"
    );
}

/// Polls `cond` every 10 ms for at most `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigint(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

/// A sparse file of `len` bytes (zeros): large enough that a transfer is still
/// running when the test interrupts it, without using the disk.
fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(len))
        .expect("sparse file");
}

fn client(server: &TestServer, pw: &Path, args: &[&str]) -> Child {
    quill()
        .args(args)
        .args(["--user", USER, "--password-file"])
        .arg(pw)
        .args(["--host-key", &server.fingerprint])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quill")
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(e) = child.stderr.take() {
        for line in BufReader::new(e).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

#[test]
fn ctrl_c_during_get_removes_the_partial_file_and_exits_130() {
    let server = TestServer::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let pw = password_file(work.path());
    sparse_file(&server.space().join("big"), 1 << 30);
    let local = work.path().join("copy");
    let partial = work.path().join("copy.quill-partial");
    let remote = format!("{}:big", server.addr);
    let mut child = client(
        &server,
        &pw,
        &["get", &remote, local.to_str().expect("utf-8")],
    );
    wait_for(TIMEOUT, "the first bytes of the download", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0)
    });
    sigint(&child);
    let status = wait_bounded(&mut child, "get after SIGINT");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!partial.exists(), "the partial file was left behind");
    assert!(!local.exists(), "an incomplete download got the final name");
}

#[test]
fn ctrl_c_during_send_exits_130_and_the_server_drops_the_upload_at_once() {
    let server = TestServer::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let pw = password_file(work.path());
    let local = work.path().join("big");
    sparse_file(&local, 1 << 30);
    let remote = format!("{}:big", server.addr);
    let mut child = client(
        &server,
        &pw,
        &["send", local.to_str().expect("utf-8"), &remote],
    );
    let root = server.space();
    let receiving = || {
        std::fs::read_dir(&root)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
            })
            .unwrap_or(false)
    };
    wait_for(TIMEOUT, "the server to receive the first bytes", receiving);
    sigint(&child);
    let status = wait_bounded(&mut child, "send after SIGINT");
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The client closed the connection: the server drops the temporary file now, not
    // after its 30 s idle timeout.
    wait_for(
        Duration::from_secs(10),
        "the server to drop the upload",
        || std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none()),
    );
}
