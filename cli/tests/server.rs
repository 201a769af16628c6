//! The real `quill` binary: keygen, user administration, and a server answering the
//! stream services over UDP on 127.0.0.1 (clients from `driver::blocking`, host key
//! pinned). Every wait is bounded and every child is killed at the end.

/// SIGTERM, bounded waits and SIGKILL for child processes (shared with the interop suite).
#[path = "../../interop-tests/src/child.rs"]
#[allow(dead_code)]
mod child;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quill_transport::auth::pinned_policy;
use quill_transport::driver::blocking::{self, BlockingConnection};
use quill_transport::proto::{ClientConfig, Login};
use quill_transport::service::sha256_hex;
use zeroize::Zeroizing;

const PASSWORD: &str = "correct horse battery";

fn quill() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("quill").expect("the quill binary")
}

/// Runs `quill ARGS PATH` (bounded) and returns its output.
fn run_with_path(args: &[&str], path: &Path) -> std::process::Output {
    quill()
        .args(args)
        .arg(path)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap()
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = run_with_path(&["keygen", "-o"], &path);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let fp = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("a fingerprint line")
        .trim()
        .to_owned();
    (path, fp)
}

fn user(db: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    quill()
        .arg("user")
        .args(args)
        .arg("--accounts")
        .arg(db)
        .write_stdin(stdin)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap()
}

#[test]
fn keygen_writes_a_private_key_0600_and_a_pub_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, fp) = keygen(dir.path(), "host.key");
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(dir.path().join("host.key.pub")).unwrap();
    let (key, _) = quill_crypto::hostkey::PublicKey::from_openssh_line(public.trim()).unwrap();
    assert_eq!(key.fingerprint(), fp);
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keygen(dir.path(), "id");
    let before = std::fs::read(&path).unwrap();
    let out = quill().args(["keygen", "-o"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the key was changed");
}

#[test]
fn server_refuses_a_key_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keygen(dir.path(), "host.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = quill()
        .args(["server", "--listen", "127.0.0.1:0", "--key"])
        .arg(&path)
        .arg("--accounts")
        .arg(dir.path().join("accounts.db"))
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn server_limit_keys_take_counts() {
    let err =
        refused_config("max-connections-per-user = 4\nmax-registrations-per-address = lots\n");
    assert!(
        err.contains("server.conf:2: 'lots' is not a count"),
        "{err}"
    );
    let out = quill()
        .args(["server", "--max-connections-per-address", "-1"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `quill server --config FILE` with `text` in FILE (`server.conf`): exit 2 and its
/// one-line error.
fn refused_config(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, text).unwrap();
    let out = run_with_path(&["server", "--config"], &conf);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn server_config_file_unknown_key_names_the_line() {
    let err = refused_config("# quill\nroot = files\ncolour = blue\n");
    assert!(err.contains("server.conf:3: unknown key 'colour'"), "{err}");
}

#[test]
fn user_add_list_passwd_disable_del() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("accounts.db");
    let out = user(
        &db,
        &["add", "alice", "--password-stdin"],
        "hunter2hunter2\n",
    );
    assert!(out.status.success(), "{out:?}");
    // The same name again is refused, in one line.
    let out = user(
        &db,
        &["add", "Alice", "--password-stdin"],
        "hunter2hunter2\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // A weak password is refused.
    let out = user(&db, &["add", "bob", "--password-stdin"], "short\n");
    assert_eq!(out.status.code(), Some(2));

    let list = |db: &Path| {
        let out = user(db, &["list"], "");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = list(&db);
    let row = table
        .lines()
        .find(|l| l.starts_with("alice"))
        .expect("alice listed");
    assert!(row.contains("never") && row.contains(" no "), "{row}");

    let out = user(
        &db,
        &["passwd", "alice", "--password-stdin"],
        "another-password\n",
    );
    assert!(out.status.success(), "{out:?}");
    let out = user(&db, &["disable", "alice"], "");
    assert!(out.status.success(), "{out:?}");
    let table = list(&db);
    let row = table.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(row.contains("yes"), "{row}");
    let out = user(&db, &["enable", "alice"], "");
    assert!(out.status.success(), "{out:?}");

    let (key, fp) = keygen(dir.path(), "alice_id");
    let mut pubkey = key.into_os_string();
    pubkey.push(".pub");
    let out = user(&db, &["add-key", "alice", pubkey.to_str().unwrap()], "");
    assert!(out.status.success(), "{out:?}");
    assert!(list(&db)
        .lines()
        .any(|l| l.starts_with("alice") && l.ends_with('1')));
    let out = user(&db, &["del-key", "alice", &fp], "");
    assert!(out.status.success(), "{out:?}");

    let out = user(&db, &["del", "alice"], "");
    assert!(out.status.success(), "{out:?}");
    assert!(!list(&db).lines().any(|l| l.starts_with("alice")));
    let out = user(&db, &["del", "alice"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named"));
}

/// A `quill server` child process; killed when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
}

/// A host key and an account database holding `names` (password PASSWORD) in `dir`.
fn key_and_accounts(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let (key, _) = keygen(dir, "host.key");
    let db = dir.join("accounts.db");
    for name in names {
        let out = user(
            &db,
            &["add", name, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        assert!(out.status.success(), "{out:?}");
    }
    (key, db)
}

impl ServerProcess {
    /// `quill server --listen 127.0.0.1:0 --key KEY --accounts DB` and `extra`.
    fn on_loopback(key: &Path, db: &Path, extra: &[&std::ffi::OsStr]) -> ServerProcess {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
            "--accounts".as_ref(),
            db.as_os_str(),
        ];
        args.extend_from_slice(extra);
        ServerProcess::start(&args)
    }

    fn start(args: &[&std::ffi::OsStr]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
            .arg("server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = child::lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut addr, mut fingerprint) = (None, None);
        while addr.is_none() || fingerprint.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start: {:?}", child.wait());
                }
            };
            if let Some(a) = line.strip_prefix("listening ") {
                addr = Some(a.trim().parse().unwrap());
            } else if let Some(f) = line.strip_prefix("host key fingerprint ") {
                fingerprint = Some(f.trim().to_owned());
            }
        }
        ServerProcess {
            child,
            addr: addr.unwrap(),
            fingerprint: fingerprint.unwrap(),
        }
    }

    fn connect(&self, password: &str) -> BlockingConnection {
        let config = ClientConfig::new(
            Login::Password {
                user: "alice".into(),
                password: Zeroizing::new(password.into()),
            },
            pinned_policy(&self.fingerprint).unwrap(),
        );
        blocking::connect(self.addr, config).expect("connect and log in")
    }

    /// SIGTERM, then the exit status within `limit`.
    fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        child::terminate(&mut self.child, limit)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        child::kill(&mut self.child);
    }
}

/// Sends a request and `body`, then FIN; returns everything the server answered.
fn exchange(conn: &BlockingConnection, request: &str, body: &[u8]) -> Vec<u8> {
    let mut stream = conn.open_bi().unwrap();
    let mut w = stream.try_clone();
    let mut data = request.as_bytes().to_vec();
    data.extend_from_slice(body);
    let writer = std::thread::spawn(move || {
        // The server may answer ERR and stop reading early; that is not our failure.
        let _ = w.write_all(&data);
        let _ = w.finish();
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

#[test]
fn server_echo_put_get_confinement_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (key, db) = key_and_accounts(dir.path(), &["alice"]);
    let root = dir.path().join("files");
    std::fs::create_dir(&root).unwrap();

    let mut server = ServerProcess::on_loopback(&key, &db, &["--root".as_ref(), root.as_os_str()]);
    let conn = server.connect(PASSWORD);
    assert_eq!(conn.account(), "alice");

    // ECHO: a few hundred KiB, so the echo buffer's back-pressure is exercised.
    let payload: Vec<u8> = (0..700_000u32).map(|i| (i * 31 + i / 977) as u8).collect();
    assert_eq!(exchange(&conn, "ECHO\n", &payload), payload);

    // PUT then GET, byte for byte.
    let put = format!(
        "PUT {} {} dir-less.bin\n",
        payload.len(),
        sha256_hex(&payload)
    );
    assert_eq!(exchange(&conn, &put, &payload), b"OK\n");
    // In alice's own space, created on her first request.
    assert_eq!(
        std::fs::read(root.join("alice/dir-less.bin")).unwrap(),
        payload
    );
    let got = exchange(&conn, "GET dir-less.bin\n", b"");
    let nl = got.iter().position(|&b| b == b'\n').unwrap();
    let header = std::str::from_utf8(&got[..nl]).unwrap();
    assert_eq!(
        header,
        format!("OK {} {}", payload.len(), sha256_hex(&payload))
    );
    assert_eq!(&got[nl + 1..], &payload[..]);

    // A PUT whose hash does not match is refused and leaves nothing behind.
    let bad = format!("PUT 5 {} wrong.txt\n", "00".repeat(32));
    let answer = exchange(&conn, &bad, b"hello");
    assert!(
        answer.starts_with(b"ERR"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(!root.join("alice/wrong.txt").exists());

    // Paths that leave the root are refused.
    for path in ["../escape.txt", "/tmp/escape.txt", "a/../../escape.txt"] {
        let answer = exchange(&conn, &format!("PUT 1 {} {path}\n", sha256_hex(b"x")), b"x");
        assert!(
            answer.starts_with(b"ERR"),
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
        let answer = exchange(&conn, &format!("GET {path}\n"), b"");
        assert!(
            answer.starts_with(b"ERR"),
            "{path}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(!dir.path().join("escape.txt").exists());
    // ... also through a symbolic link that points outside.
    std::os::unix::fs::symlink(dir.path(), root.join("alice/out")).unwrap();
    let answer = exchange(&conn, "GET out/accounts.db\n", b"");
    assert!(
        answer.starts_with(b"ERR"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // SINK and SOURCE.
    assert_eq!(
        exchange(&conn, "SINK\n", &payload),
        format!("OK {}\n", payload.len()).into_bytes()
    );
    assert_eq!(exchange(&conn, "SOURCE 100000\n", b"").len(), 100_000);

    // SIGTERM with a connection open: drained, exit status 0.
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(conn);
}

fn alice_config(fingerprint: &str, password: &str) -> ClientConfig {
    ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new(password.into()),
        },
        pinned_policy(fingerprint).unwrap(),
    )
}

/// A server killed without a word and started again on the same port with the same
/// key answers the old session's next packet with a stateless reset the client
/// recognises (the reset secret comes from the host key), so the client learns of the
/// restart at once instead of after its 30 s idle timeout.
#[test]
fn a_restarted_server_resets_old_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (key, db) = key_and_accounts(dir.path(), &["alice"]);
    let args = |listen: &str| -> Vec<std::ffi::OsString> {
        vec![
            "--listen".into(),
            listen.into(),
            "--key".into(),
            key.clone().into(),
            "--accounts".into(),
            db.clone().into(),
        ]
    };
    let start = |listen: &str| {
        let a = args(listen);
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        ServerProcess::start(&refs)
    };
    let mut first = start("127.0.0.1:0");
    let addr = first.addr;
    // No keep-alive: the client sends nothing until the new server is up.
    let conn = blocking::connect(addr, alice_config(&first.fingerprint, PASSWORD)).expect("log in");
    first.child.kill().unwrap(); // SIGKILL: no CONNECTION_CLOSE
    first.child.wait().unwrap();
    let second = start(&addr.to_string());
    assert_eq!(second.addr, addr);
    // The session's next packet reaches a server that has never heard of it.
    let mut stream = conn.open_bi().unwrap();
    let _ = stream.write_all(b"ECHO\n");
    let why = conn.wait_closed(Duration::from_secs(5));
    assert!(
        matches!(why, Some(quill_transport::ConnectionError::Reset)),
        "expected a stateless reset within 5 s, got {why:?}"
    );
    drop(second);
}

/// `--max-connections-per-user` (flag) and `max-connections-per-address` (config
/// file): a session beyond either cap is refused with a reason the client prints, and
/// `quill connect` exits 4.
#[test]
fn connection_caps_refuse_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (key, db) = key_and_accounts(dir.path(), &["alice", "bob"]);
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "max-connections-per-address = 2\n").unwrap();
    let server = ServerProcess::on_loopback(
        &key,
        &db,
        &[
            "--max-connections-per-user".as_ref(),
            "1".as_ref(),
            "--config".as_ref(),
            conf.as_os_str(),
        ],
    );
    // `quill connect` as `name`, refused: exit 4 and a one-line error, returned.
    let refused_as = |name: &str| {
        let out = quill()
            .args(["connect", &server.addr.to_string(), "--user", name])
            .args(["--password-stdin", "--host-key", &server.fingerprint])
            .write_stdin(format!("{PASSWORD}\n"))
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        err
    };
    let held = server.connect(PASSWORD);
    let err = refused_as("alice");
    assert!(
        err.contains("too many connections for this account (the server allows 1)"),
        "{err}"
    );
    let bob = blocking::connect(
        server.addr,
        ClientConfig::new(
            Login::Password {
                user: "bob".into(),
                password: Zeroizing::new(PASSWORD.into()),
            },
            pinned_policy(&server.fingerprint).unwrap(),
        ),
    )
    .expect("a second session from the address");
    let err = refused_as("bob");
    assert!(
        err.contains("too many connections from your address (the server allows 2)"),
        "{err}"
    );
    drop((held, bob));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Argon2id needs 19 MiB per verification. The server's memory after many logins
/// stays at its bound (one reusable work area per worker), instead of growing by what
/// the allocator kept of every verification (≈ 260 MB after 20 logins before).
/// `QUILL_LOGINS=1000` measures the number recorded in docs/BENCHMARKS.md.
#[test]
fn server_memory_stays_bounded_after_many_logins() {
    let logins: usize = std::env::var("QUILL_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().unwrap();
    let (key, db) = key_and_accounts(dir.path(), &["alice"]);
    let server = ServerProcess::on_loopback(&key, &db, &[]);
    let pid = server.child.id();
    let before = rss_kib(pid);
    let started = Instant::now();
    for i in 0..logins {
        // The server admits 50 new handshakes per second per address; stay under it.
        let t = Instant::now();
        drop(server.connect(PASSWORD));
        if let Some(rest) = Duration::from_millis(25).checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
        if i % 100 == 99 {
            eprintln!("{} logins: RSS {} KiB", i + 1, rss_kib(pid));
        }
    }
    let after = rss_kib(pid);
    eprintln!(
        "server RSS before {before} KiB, after {logins} logins {after} KiB ({:?})",
        started.elapsed()
    );
    // quill server's pool: one worker per core, 2..=8; each keeps one 19 MiB area.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let bound = (64 + 20 * workers as u64) * 1024;
    assert!(
        after < bound,
        "RSS {after} KiB after {logins} logins exceeds {bound} KiB"
    );
}

/// Names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// `quill server --workers 12`: the loops share one worker pool of one thread per core
/// (2..=8), so Argon2id's 19 MiB per pool thread does not multiply with the loops (a
/// pool per loop would be at least 12 threads); logins are served through it.
#[test]
fn workers_share_one_pool_of_one_thread_per_core() {
    let dir = tempfile::tempdir().unwrap();
    let (key, db) = key_and_accounts(dir.path(), &["alice"]);
    let extra: [&std::ffi::OsStr; 2] = ["--workers".as_ref(), "12".as_ref()];
    let server = ServerProcess::on_loopback(&key, &db, &extra);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    // A thread names itself when it first runs, which may be just after "listening":
    // read the names again (for at most 5 s) until every thread has named itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut names = thread_names(server.child.id());
    let named =
        |names: &[String], prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    while (named(&names, "quill-loop-") < 12 || named(&names, "quill-worker-") < cores)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        names = thread_names(server.child.id());
    }
    assert_eq!(named(&names, "quill-loop-"), 12, "{names:?}");
    assert_eq!(named(&names, "quill-worker-"), cores, "{names:?}");
    let conns: Vec<_> = (0..4).map(|_| server.connect(PASSWORD)).collect();
    for conn in &conns {
        assert_eq!(exchange(conn, "ECHO\n", b"one pool"), b"one pool");
    }
}

/// `quill server --workers 2 --server-id 0x0a01`: eight clients are served (spread over
/// both loops by their connection IDs) and SIGTERM drains both; bad values are refused
/// with a one-line error and exit 2.
#[test]
fn two_workers_serve_clients_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, db) = key_and_accounts(dir.path(), &["alice"]);
    let extra: [&std::ffi::OsStr; 4] = [
        "--workers".as_ref(),
        "2".as_ref(),
        "--server-id".as_ref(),
        "0x0a01".as_ref(),
    ];
    let mut server = ServerProcess::on_loopback(&key, &db, &extra);
    let conns: Vec<_> = (0..8).map(|_| server.connect(PASSWORD)).collect();
    for conn in &conns {
        assert_eq!(exchange(conn, "ECHO\n", b"two loops"), b"two loops");
    }
    drop(conns);
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    for (flag, value, needle) in [
        ("--workers", "0", "--workers is 1 to 256"),
        ("--server-id", "0xzz", "--server-id: server ID '0xzz'"),
        (
            "--server-id",
            "0x00112233445566778899aa",
            "connection IDs; use 8..=20",
        ),
    ] {
        let out = quill()
            .args(["server", "--listen", "127.0.0.1:0", "--key"])
            .arg(&key)
            .arg("--accounts")
            .arg(&db)
            .args([flag, value])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{flag} {value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let err = refused_config("workers = many\n");
    assert!(
        err.contains("server.conf:1: 'many' is not a count"),
        "{err}"
    );
}
