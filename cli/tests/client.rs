//! The client commands, run as the real `quill` binary against a test server
//! (`tests/common`). Every command has a timeout.

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::{assert_exit, other_fingerprint, stderr, TestServer, PASSWORD, USER};

const TIMEOUT: Duration = Duration::from_secs(30);

fn quill() -> Command {
    let mut c = Command::cargo_bin("quill").expect("binary");
    c.timeout(TIMEOUT).env_remove("QUILL_KNOWN_HOSTS");
    c
}

/// `quill SUB ... --user alice --password-stdin --host-key FP` with the password on stdin.
fn client(server: &TestServer, args: &[&str], stdin_after_password: &[u8]) -> Command {
    let mut c = quill();
    c.args(args)
        .args(["--user", USER, "--password-stdin", "--host-key"])
        .arg(&server.fingerprint);
    let mut input = format!("{PASSWORD}\n").into_bytes();
    input.extend_from_slice(stdin_after_password);
    c.write_stdin(input);
    c
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn demo_succeeds() {
    let o = quill()
        .args(["demo", "--bytes", "1000000"])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {}", stderr(&o));
    for want in [
        "host key         SHA256:",
        "handshake+login",
        "AES-256-GCM, key exchange X25519+ML-KEM-768",
        "upload           1000000 bytes",
        "download         1000000 bytes",
        "matched both ways",
        "3 rounds sent, 3 answered",
        "demo finished",
    ] {
        assert!(out.contains(want), "missing '{want}' in:\n{out}");
    }
}

#[test]
fn register_then_connect_echoes_stdin() {
    let server = TestServer::start(true);
    let pw = "a new password for bob";
    let o = quill()
        .args([
            "register",
            &server.addr,
            "--user",
            "bob",
            "--password-stdin",
        ])
        .args(["--host-key", &server.fingerprint])
        .write_stdin(format!("{pw}\n"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("registered and logged in as bob"),
        "{}",
        stdout(&o)
    );

    // Log in with the new account; the host is trusted on first use in a known_hosts.
    let known = server.dir.path().join("known_hosts");
    let o = quill()
        .args(["connect", &server.addr, "--user", "bob", "--password-stdin"])
        .arg("--known-hosts")
        .arg(&known)
        .arg("--accept-new-host")
        .write_stdin(format!("{pw}\nhello quill\nsecond line\n"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello quill\nsecond line\n");
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(recorded.contains(&server.addr), "{recorded}");
}

#[test]
fn send_get_round_trip() {
    let server = TestServer::start(false);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("random.bin");
    let mut data = vec![0u8; 1 << 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut data).unwrap();
    std::fs::write(&src, &data).unwrap();

    // PUT does not create directories: `dir` must exist in alice's space.
    std::fs::create_dir(server.space().join("dir")).unwrap();
    let remote = format!("{}:dir/copy.bin", server.addr);
    let o = client(&server, &["send"], b"")
        .arg(&src)
        .arg(&remote)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1048576 bytes"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read(server.space().join("dir/copy.bin")).unwrap(),
        data
    );

    let dst = local.path().join("back.bin");
    let o = client(&server, &["get", &remote], b"")
        .arg(&dst)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert!(!local.path().join("back.bin.quill-partial").exists());
}

#[test]
fn get_missing_remote_fails_and_writes_nothing() {
    let server = TestServer::start(false);
    let local = tempfile::tempdir().unwrap();
    let dst = local.path().join("never.bin");
    let remote = format!("{}:no/such/file", server.addr);
    let o = client(&server, &["get", &remote], b"")
        .arg(&dst)
        .output()
        .unwrap();
    assert_exit(&o, 3, "the server refused");
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(!dst.exists());
    assert!(!local.path().join("never.bin.quill-partial").exists());
}

#[test]
fn send_missing_local_file_is_a_usage_error() {
    let server = TestServer::start(false);
    let o = client(&server, &["send", "/nonexistent/quill-file"], b"")
        .arg(format!("{}:x", server.addr))
        .output()
        .unwrap();
    assert_exit(&o, 2, "does not exist");
}

#[test]
fn ping_prints_the_expected_lines() {
    let server = TestServer::start(false);
    let o = client(
        &server,
        &["ping", &server.addr, "-c", "3", "-i", "50ms"],
        b"",
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(
        lines[0].starts_with(&format!("connected to {} as {USER} in ", server.addr))
            && lines[0].ends_with(" ms (AES-256-GCM, X25519+ML-KEM-768)"),
        "{out}"
    );
    for (i, l) in lines[1..4].iter().enumerate() {
        assert!(
            l.starts_with(&format!("seq={} time=", i + 1)) && l.ends_with(" ms"),
            "{out}"
        );
    }
    assert_eq!(lines[5], "3 sent, 3 acknowledged, 0% lost", "{out}");
    assert!(lines[6].starts_with("rtt min/avg/max/mdev = "), "{out}");
}

#[test]
fn perf_json_has_every_field() {
    let server = TestServer::start(false);
    for reverse in [false, true] {
        let mut c = client(&server, &["perf", &server.addr, "--bytes", "3000000"], b"");
        c.args(["--streams", "2", "--json"]);
        if reverse {
            c.arg("--reverse");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        for field in [
            "bytes",
            "seconds",
            "goodput_bps",
            "handshake_ms",
            "rtt_ms",
            "lost_packets",
            "cpu_seconds",
        ] {
            assert!(v[field].is_number(), "{field} missing in {v}");
        }
        assert_eq!(v["bytes"], 3_000_000, "{v}");
    }
}

/// One `quill ping` as USER, the password on stdin, the host key pinned to `host_key`.
fn ping_once(server: &TestServer, host_key: &str, stdin: &str) -> std::process::Output {
    ping_at(&[], &server.addr, host_key, &[], stdin)
}

/// `quill FLAGS ping ADDR -c 1` as USER, the password on stdin, the host key pinned to
/// `host_key`, with `extra` options.
fn ping_at(
    flags: &[&str],
    addr: &str,
    host_key: &str,
    extra: &[&str],
    stdin: &str,
) -> std::process::Output {
    quill()
        .args(flags)
        .args(["ping", addr, "-c", "1", "--user", USER])
        .args(["--password-stdin", "--host-key", host_key])
        .args(extra)
        .write_stdin(stdin)
        .output()
        .unwrap()
}

#[test]
fn wrong_password_is_refused() {
    let server = TestServer::start(false);
    let o = ping_once(&server, &server.fingerprint, "not the password\n");
    assert_exit(&o, 4, "login refused");
}

#[test]
fn host_key_mismatch_exits_5() {
    let server = TestServer::start(false);
    let o = ping_once(&server, &other_fingerprint(), &format!("{PASSWORD}\n"));
    assert_exit(&o, 5, "rejected");
}

/// `--password-file FILE` (mode 0600) with `--host-key`, leaving stdin to the command.
fn with_password_file(
    server: &TestServer,
    dir: &std::path::Path,
    mode: u32,
    args: &[&str],
) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut c = quill();
    c.args(args)
        .args([
            "--user",
            USER,
            "--host-key",
            &server.fingerprint,
            "--password-file",
        ])
        .arg(&pw);
    c
}

#[test]
fn connect_with_a_password_file_echoes_all_of_stdin() {
    let server = TestServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let o = with_password_file(&server, dir.path(), 0o600, &["connect", &server.addr])
        .write_stdin("hello\nsecond line\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\nsecond line\n");
}

#[test]
fn a_password_file_others_can_read_is_refused() {
    let server = TestServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let o = with_password_file(
        &server,
        dir.path(),
        0o644,
        &["ping", &server.addr, "-c", "1"],
    )
    .output()
    .unwrap();
    assert_exit(&o, 2, "chmod 600");
}

#[test]
fn get_to_dash_writes_the_file_to_stdout() {
    let server = TestServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(server.space().join("data.bin"), &data).unwrap();
    let o = with_password_file(
        &server,
        dir.path(),
        0o600,
        &["get", &format!("{}:data.bin", server.addr), "-"],
    )
    .current_dir(dir.path())
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == data, "stdout is not the file");
    assert!(stderr(&o).contains("verified"), "{}", stderr(&o));
    assert!(!dir.path().join("-").exists() && !dir.path().join("-.quill-partial").exists());
}

/// A port nothing listens on answers with ICMP port unreachable: the client reports
/// it at once instead of waiting for its connect timeout.
#[test]
fn a_closed_port_is_refused_at_once() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let start = std::time::Instant::now();
    let pw = format!("{PASSWORD}\n");
    let o = ping_at(
        &[],
        &addr,
        &other_fingerprint(),
        &["--connect-timeout", "30s"],
        &pw,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "connection refused by {addr}: nothing listens there"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // Hang guard: well inside the 30 s connect timeout, so the ICMP error ended it.
    assert!(start.elapsed() < Duration::from_secs(15), "{err}");
}

/// A server that swallows every datagram (a black hole: no ICMP either) is given
/// up on after --connect-timeout, with a message saying so; -v says what the client
/// was waiting for.
#[test]
fn a_silent_server_is_given_up_on_after_the_connect_timeout() {
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap().to_string();
    let pw = format!("{PASSWORD}\n");
    let o = ping_at(
        &["-v"],
        &addr,
        &other_fingerprint(),
        &["--connect-timeout", "1s"],
        &pw,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("quill: no answer from {addr} within 1 s")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "waiting for the server's handshake (Initial sent to {addr}"
        )),
        "{err}"
    );
    drop(hole);
}

#[test]
fn verbose_client_says_when_it_waits_for_the_login() {
    let server = TestServer::start(false);
    let o = client(&server, &["-v", "ping", &server.addr, "-c", "1"], b"")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("waiting for the server's handshake"), "{err}");
    assert!(err.contains("waiting for login verification"), "{err}");
}

#[test]
fn connect_timeout_out_of_range_is_a_usage_error() {
    let o = quill()
        .args(["ping", "127.0.0.1:9", "--user", USER, "--password-stdin"])
        .args([
            "--host-key",
            &other_fingerprint(),
            "--connect-timeout",
            "10ms",
        ])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    assert_exit(&o, 2, "--connect-timeout");
}
