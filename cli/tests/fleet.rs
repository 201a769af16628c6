//! A fleet on one machine, with the real binaries: two `quill server` processes on two
//! loopback ports sharing one throw-away PostgreSQL (tests/support/postgres.rs of
//! quill-transport), one host key and the same `--reset-key` / `--retry-key` files.
//!
//! - an account registered on one server logs in on the other;
//! - a Retry token issued by one is accepted by the other: a small relay in this test
//!   sends the client's first Initial to server A (which answers with a Retry: both
//!   run `--retry always`) and everything after it, the token-bearing Initial first,
//!   to server B;
//! - a stateless reset from the other server ends a session cleanly: the relay then
//!   sends the session's 1-RTT packets to A, which knows no such connection and
//!   answers with a reset that the client accepts and reports;
//! - and the failing paths: servers with different retry keys refuse each other's
//!   tokens, and bad `--accounts` URLs and key files are one-line errors.

mod common;

#[path = "../../transport/tests/support/postgres.rs"]
mod postgres;

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_exit, child, stderr, PASSWORD};
use postgres::TempPostgres;
use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::OsRandom;

/// Bound of every client command here.
const TIMEOUT: Duration = Duration::from_secs(30);

fn quill() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quill"));
    c.env_remove("QUILL_KNOWN_HOSTS");
    c
}

/// Runs a client command with `stdin`, bounded by [`TIMEOUT`].
fn run(cmd: &mut Command, stdin: &str) -> std::process::Output {
    let mut c = assert_cmd::Command::from_std(std::mem::replace(cmd, Command::new("true")));
    c.timeout(TIMEOUT).write_stdin(stdin.to_owned());
    c.output().unwrap()
}

/// The shared files of a fleet: host key, reset and retry secrets.
struct FleetFiles {
    dir: tempfile::TempDir,
    fingerprint: String,
}

impl FleetFiles {
    fn new() -> FleetFiles {
        let dir = tempfile::tempdir().unwrap();
        let key = HostKeyPair::generate(&OsRandom::new()).unwrap();
        key.write_to(&dir.path().join("host.key")).unwrap();
        // The secrets come from `quill keygen --secret`, as an operator makes them.
        for name in ["reset.key", "retry.key", "other-retry.key"] {
            let path = dir.path().join(name);
            let o = quill()
                .args(["keygen", "--secret", "-o"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let meta = std::fs::metadata(&path).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert_eq!(meta.len(), 32);
        }
        FleetFiles {
            fingerprint: key.public().fingerprint(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One `quill server` of the fleet.
struct FleetServer {
    addr: SocketAddr,
    child: Child,
    _root: tempfile::TempDir,
}

impl FleetServer {
    /// A server with QUIC-LB server ID `server_id` (each of a fleet has its own).
    fn start(files: &FleetFiles, accounts: &str, retry_key: &str, server_id: &str) -> FleetServer {
        let root = tempfile::tempdir().unwrap();
        let mut command: Vec<OsString> = vec![env!("CARGO_BIN_EXE_quill").into()];
        command.extend(
            [
                "server",
                "--listen",
                "127.0.0.1:0",
                "--retry",
                "always",
                "--allow-register",
                "--accounts",
                accounts,
                "--server-id",
                server_id,
            ]
            .map(OsString::from),
        );
        for (flag, file) in [
            ("--key", "host.key"),
            ("--reset-key", "reset.key"),
            ("--retry-key", retry_key),
        ] {
            command.push(flag.into());
            command.push(files.path(file).into_os_string());
        }
        let (child, addr) = common::spawn_server(&command, root.path());
        FleetServer {
            addr: addr.parse().unwrap(),
            child,
            _root: root,
        }
    }
}

impl Drop for FleetServer {
    fn drop(&mut self) {
        child::terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// Client options: the account, the password on stdin, the fleet's host key.
fn login_args<'a>(cmd: &'a mut Command, user: &str, fingerprint: &str) -> &'a mut Command {
    cmd.args([
        "--user",
        user,
        "--password-stdin",
        "--host-key",
        fingerprint,
    ])
    .args(["--connect-timeout", "5s"])
}

#[test]
fn an_account_registered_on_one_server_logs_in_on_the_other() {
    let pg = TempPostgres::start();
    let url = pg.create_db("fleet");
    let files = FleetFiles::new();
    let a = FleetServer::start(&files, &url, "retry.key", "0x0a01");
    let b = FleetServer::start(&files, &url, "retry.key", "0x0a02");
    let pw = "bob's long password";

    let o = run(
        login_args(
            quill().args(["register", &a.addr.to_string()]),
            "bob",
            &files.fingerprint,
        ),
        &format!("{pw}\n"),
    );
    assert!(o.status.success(), "register on A: {}", stderr(&o));

    let o = run(
        login_args(
            quill().args(["connect", &b.addr.to_string()]),
            "bob",
            &files.fingerprint,
        ),
        &format!("{pw}\nhello fleet\n"),
    );
    assert!(o.status.success(), "login on B: {}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello fleet\n");

    // The same name cannot be registered again on the other server.
    let o = run(
        login_args(
            quill().args(["register", &b.addr.to_string()]),
            "bob",
            &files.fingerprint,
        ),
        &format!("{PASSWORD}\n"),
    );
    assert!(!o.status.success(), "bob registered twice");

    // `quill user` administers the same database.
    let o = run(quill().args(["user", "list", "--accounts", &url]), "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("bob"));
}

/// Where [`Relay`] sends the client's datagrams.
const TO_A: usize = 0;
const TO_B: usize = 1;

/// A UDP relay between one client and two servers. The client's datagrams go to A
/// until A has answered once (its Retry), then to B; [`Relay::send_to`] switches by
/// hand. Both servers see the client as the relay's one back socket, so a Retry
/// token bound to that address is valid at either.
struct Relay {
    front: SocketAddr,
    target: Arc<AtomicUsize>,
    from: Arc<[AtomicU64; 2]>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(servers: [SocketAddr; 2]) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let target = Arc::new(AtomicUsize::new(TO_A));
        let from = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (target, from, stop) = (target.clone(), from.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut client: Option<SocketAddr> = None;
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok((n, src)) = front.recv_from(&mut buf) {
                        client = Some(src);
                        let _ = back.send_to(&buf[..n], servers[target.load(Ordering::SeqCst)]);
                    }
                    if let Ok((n, src)) = back.recv_from(&mut buf) {
                        if let Some(i) = servers.iter().position(|s| *s == src) {
                            // A's first answer is its Retry: from now on, B.
                            if i == TO_A && from[TO_A].fetch_add(1, Ordering::SeqCst) == 0 {
                                target.store(TO_B, Ordering::SeqCst);
                            }
                            if i == TO_B {
                                from[TO_B].fetch_add(1, Ordering::SeqCst);
                            }
                            if let Some(c) = client {
                                let _ = front.send_to(&buf[..n], c);
                            }
                        }
                    }
                }
            })
        };
        Relay {
            front: addr,
            target,
            from,
            stop,
            thread: Some(thread),
        }
    }

    fn send_to(&self, which: usize) {
        self.target.store(which, Ordering::SeqCst);
    }

    fn datagrams_from(&self, which: usize) -> u64 {
        self.from[which].load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Registers `user` through server `addr` (its own Retry, its own handshake).
fn register(addr: SocketAddr, user: &str, fingerprint: &str) {
    let o = run(
        login_args(
            quill().args(["register", &addr.to_string()]),
            user,
            fingerprint,
        ),
        &format!("{PASSWORD}\n"),
    );
    assert!(o.status.success(), "register {user}: {}", stderr(&o));
}

#[test]
fn a_retry_token_from_one_server_is_accepted_by_the_other_and_its_reset_ends_the_session() {
    let pg = TempPostgres::start();
    let url = pg.create_db("fleet");
    let files = FleetFiles::new();
    let a = FleetServer::start(&files, &url, "retry.key", "0x0a01");
    let b = FleetServer::start(&files, &url, "retry.key", "0x0a02");
    register(a.addr, "carol", &files.fingerprint);

    let relay = Relay::start([a.addr, b.addr]);
    let mut client = login_args(
        quill().args(["connect", &relay.front.to_string()]),
        "carol",
        &files.fingerprint,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let out = child::lines(client.stdout.take().unwrap());
    let err = child::reader(client.stderr.take());
    writeln!(stdin, "{PASSWORD}\nthrough the fleet").unwrap();
    let echoed = out.recv_timeout(TIMEOUT);
    if echoed.is_err() {
        child::kill(&mut client);
        panic!(
            "no echo through B: {}",
            err.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
        );
    }
    assert_eq!(echoed.unwrap(), "through the fleet");
    // A sent exactly one datagram (the Retry); the session, token and all, is on B.
    assert_eq!(relay.datagrams_from(TO_A), 1);
    assert!(relay.datagrams_from(TO_B) > 0);

    // Now the session's packets go to A, which has no such connection: it answers
    // with a stateless reset under the shared reset key, and the client ends.
    relay.send_to(TO_A);
    writeln!(stdin, "after the move").unwrap();
    let status = child::wait_or_kill(&mut client, TIMEOUT).expect("the client ends on the reset");
    let msg = err.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    assert_eq!(status.code(), Some(3), "{msg}");
    assert!(msg.contains("stateless reset"), "{msg}");
    assert!(relay.datagrams_from(TO_A) >= 2, "A never answered");
    drop(stdin);
}

#[test]
fn servers_with_different_retry_keys_refuse_each_others_tokens() {
    let pg = TempPostgres::start();
    let url = pg.create_db("fleet");
    let files = FleetFiles::new();
    let a = FleetServer::start(&files, &url, "retry.key", "0x0a01");
    let b = FleetServer::start(&files, &url, "other-retry.key", "0x0a02");
    register(a.addr, "dave", &files.fingerprint);
    let relay = Relay::start([a.addr, b.addr]);
    let o = run(
        login_args(
            quill().args(["connect", &relay.front.to_string()]),
            "dave",
            &files.fingerprint,
        ),
        &format!("{PASSWORD}\nhello\n"),
    );
    // A connection failure (exit 3) within the client's connect timeout, not a login.
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "B accepted a token it cannot open");
    assert_eq!(relay.datagrams_from(TO_A), 1, "A sent its Retry");
}

#[test]
fn bad_accounts_urls_and_key_files_are_one_line_errors() {
    let files = FleetFiles::new();
    let key = files.path("host.key");
    let server = |extra: &[&str]| {
        let mut c = quill();
        c.args(["server", "--listen", "127.0.0.1:0", "--key"])
            .arg(&key)
            .args(extra);
        run(&mut c, "")
    };
    let one_line = |o: &std::process::Output| {
        let e = stderr(o);
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(!e.contains("hunter22"), "password leaked: {e}");
    };

    // A malformed URL: usage error, the password redacted.
    let o = server(&[
        "--accounts",
        "postgres://quill:hunter22@127.0.0.1:notaport/quill",
    ]);
    assert_exit(&o, 2, "postgres://quill:***@127.0.0.1:notaport/quill");
    one_line(&o);
    // Nobody listening: the server does not start, and says why.
    let o = server(&[
        "--accounts",
        "postgresql://quill:hunter22@127.0.0.1:1/quill",
    ]);
    assert_exit(&o, 2, "unreachable");
    one_line(&o);
    // `quill user` too, with the connection exit code.
    let o = run(
        quill().args([
            "user",
            "list",
            "--accounts",
            "postgres://quill:hunter22@127.0.0.1:1/quill",
        ]),
        "",
    );
    assert_exit(&o, 3, "postgres://quill:***@127.0.0.1:1/quill");
    one_line(&o);

    // Secret files: mode and length are checked.
    let accounts = files.path("accounts.db");
    let accounts = accounts.to_str().unwrap();
    let open = files.path("open.key");
    std::fs::write(&open, [7u8; 32]).unwrap();
    set_mode(&open, 0o644);
    let o = server(&[
        "--accounts",
        accounts,
        "--reset-key",
        open.to_str().unwrap(),
    ]);
    assert_exit(&o, 2, "chmod 600");
    one_line(&o);
    let short = files.path("short.key");
    std::fs::write(&short, [7u8; 16]).unwrap();
    set_mode(&short, 0o600);
    let o = server(&[
        "--accounts",
        accounts,
        "--retry-key",
        short.to_str().unwrap(),
    ]);
    assert_exit(&o, 2, "exactly 32 bytes");
    one_line(&o);
    // keygen --secret never overwrites, and needs -o.
    let o = run(
        quill()
            .args(["keygen", "--secret", "-o"])
            .arg(files.path("reset.key")),
        "",
    );
    assert_exit(&o, 2, "already exists");
    let o = run(quill().args(["keygen", "--secret"]), "");
    assert_exit(&o, 2, "-o FILE");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
