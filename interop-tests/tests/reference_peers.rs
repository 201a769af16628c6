//! The reference-peer checks (quill ↔ quinn, quiche; RFC 8999 version negotiation) and
//! a smoke test of the reference peers' bench interface (REFPEERS-INTERFACE), all on
//! loopback with real processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quill_interop::child;
use quill_interop::reference::{run_reference_checks, RefBins};

fn quinn_peer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quinn-peer"))
}

fn quiche_peer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quiche-peer"))
}

/// The binaries: the peers from cargo, `quill` from the same directory. The `quill`
/// CLI belongs to another package, which `cargo test -p quill-interop` does not build,
/// so it is built here with `$CARGO build -p quill-cli` when it is missing.
fn bins() -> RefBins {
    let dir = quinn_peer().parent().expect("bin dir").to_path_buf();
    let bins = RefBins {
        quinn_peer: quinn_peer(),
        quiche_peer: quiche_peer(),
        quill: dir.join("quill"),
    };
    if !bins.quill.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "quill-cli", "--bin", "quill"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the quill CLI failed");
    }
    assert!(
        bins.quill.is_file(),
        "no quill binary at {}",
        bins.quill.display()
    );
    bins
}

#[test]
fn reference_peer_checks_pass() {
    let bins = bins();
    let work = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let checks = run_reference_checks(&bins, work.path());
    for c in &checks {
        eprintln!("{}", c.to_json());
    }
    // Six checks: {vn-server, undisturbed, vn-client} × {quinn, quiche}.
    assert_eq!(checks.len(), 6, "{checks:?}");
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    let find = |s: &str, c: &str, v: &str| {
        checks
            .iter()
            .find(|k| k.scenario == s && k.client == c && k.server == v)
            .unwrap_or_else(|| panic!("no check {s} {c}->{v}"))
    };
    // What the wire showed, as the details say it.
    let quinn_vn = find("vn-server", "quinn", "quill").result.clone().unwrap();
    assert!(quinn_vn.contains("0x51554c01 (quill)"), "{quinn_vn}");
    assert!(quinn_vn.contains("answering 0x00000001"), "{quinn_vn}");
    let from_quinn = find("vn-client", "quill", "quinn").result.clone().unwrap();
    assert!(from_quinn.contains("exit 3"), "{from_quinn}");
    assert!(
        from_quinn.contains("peer speaks QUIC versions"),
        "{from_quinn}"
    );
    let from_quiche = find("vn-client", "quill", "quiche").result.clone().unwrap();
    assert!(
        from_quiche.contains("0x00000001 (QUIC v1)"),
        "{from_quiche}"
    );
    eprintln!("reference checks took {:?}", started.elapsed());
}

#[test]
fn missing_binaries_fail_every_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let checks = run_reference_checks(&RefBins::in_dir(dir.path()), dir.path());
    assert_eq!(checks.len(), 6);
    assert!(checks.iter().all(|c| !c.passed()), "{checks:?}");
}

/// A peer server process, stopped by closing its standard input.
struct Server {
    addr: String,
    child: Child,
}

impl Server {
    fn start(bin: &Path, cert_dir: &Path) -> Server {
        let (child, rx) = child::spawn_piped(
            Command::new(bin)
                .args(["server", "--listen", "127.0.0.1:0", "--cert-dir"])
                .arg(cert_dir),
            Stdio::inherit(),
        )
        .expect("server starts");
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server prints its address");
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        Server { addr, child }
    }

    /// Closes stdin and expects exit 0 within 10 s.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        match child::wait_or_kill(&mut self.child, Duration::from_secs(10)) {
            Some(s) => assert!(s.success(), "server exited {s}"),
            None => panic!("server did not stop when its stdin closed"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        child::kill(&mut self.child);
    }
}

/// Runs a client with `args`, bounded to 60 s; returns (exit code, stdout, stderr).
fn run_client(bin: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let ran = child::run_bounded(
        Command::new(bin).arg("client").args(args),
        b"",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("client: {e}"));
    (ran.code, ran.stdout, ran.stderr)
}

fn json_line(stdout: &str) -> serde_json::Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stdout:?}");
    serde_json::from_str(lines[0]).expect("JSON")
}

/// One bulk client run against `srv` (`--upload`, `--download`): its JSON line, after
/// checking that it succeeded as `stack`.
fn bulk(
    client: &Path,
    srv: &Server,
    ca: &str,
    (up, down): (&str, &str),
    stack: &str,
) -> serde_json::Value {
    let args = [
        "--connect",
        &srv.addr,
        "--ca",
        ca,
        "--upload",
        up,
        "--download",
        down,
    ];
    let (code, out, err) = run_client(client, &args);
    assert_eq!(code, Some(0), "{stack} bulk client failed: {err}");
    let j = json_line(&out);
    assert_eq!(j["stack"], stack);
    j
}

/// Bulk transfer (4 MiB up, 1 MiB down) and 20 handshakes, `client` against `server`.
fn smoke(client: &Path, server: &Path, stack: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let srv = Server::start(server, &certs);
    for f in ["cert.pem", "cert.der", "key.pem"] {
        assert!(certs.join(f).is_file(), "{f} written");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key.pem is private");
    let ca = certs.join("cert.pem");
    let ca = ca.to_str().unwrap();

    let j = bulk(client, &srv, ca, ("4MiB", "1048576"), stack);
    assert_eq!(j["connections"], 1);
    assert_eq!(j["upload_bytes"], 4 << 20);
    assert_eq!(j["download_bytes"], 1 << 20);
    for k in [
        "handshake_ms",
        "handshake_ms_median",
        "first_byte_ms",
        "seconds",
        "goodput_bps",
        "handshakes_per_sec",
    ] {
        let v = j[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is a number: {j}"));
        assert!(v > 0.0 && v.is_finite(), "{k} = {v}");
    }
    assert!(j["first_byte_ms"].as_f64() >= j["handshake_ms"].as_f64());

    let (code, out, err) = run_client(
        client,
        &[
            "--connect",
            &srv.addr,
            "--ca",
            ca,
            "--connections",
            "20",
            "--concurrency",
            "4",
            "--download",
            "100",
        ],
    );
    assert_eq!(code, Some(0), "handshake client failed: {err}");
    let j = json_line(&out);
    assert_eq!(j["connections"], 20);
    assert_eq!(j["download_bytes"], 100);
    assert!(j["handshakes_per_sec"].as_f64().unwrap() > 0.0);

    // A client that trusts another certificate must fail cleanly (exit 3, one line).
    let other = dir.path().join("other");
    let other_srv = Server::start(server, &other);
    other_srv.stop();
    let (code, out, err) = run_client(
        client,
        &[
            "--connect",
            &srv.addr,
            "--ca",
            other.join("cert.pem").to_str().unwrap(),
            "--timeout-secs",
            "10",
        ],
    );
    assert_eq!(code, Some(3), "untrusted certificate accepted: {out}");
    assert!(out.is_empty(), "no JSON on failure: {out}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err:?}");
    srv.stop();
}

#[test]
fn quinn_peer_smoke() {
    smoke(&quinn_peer(), &quinn_peer(), "quinn");
}

#[test]
fn quiche_peer_smoke() {
    smoke(&quiche_peer(), &quiche_peer(), "quiche");
}

/// Idle mode (`--hold-secs`, what `quill-bench compare --what idle` drives): every
/// connection gets its answer, `ready K` comes once all are open, they stay open with
/// keep-alives for the hold, then the JSON line. Then the failing path: a server that
/// goes away during the hold shows as every connection lost.
fn idle(peer: &Path, stack: &str) {
    const N: u64 = 24;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let ca = certs.join("cert.pem");
    let client = |srv: &Server, hold: &str| {
        let mut cmd = Command::new(peer);
        cmd.args(["client", "--connect", &srv.addr, "--ca"])
            .arg(&ca)
            .args(["--connections", &N.to_string(), "--concurrency", "8"])
            .args(["--hold-secs", hold, "--keep-alive-ms", "200"])
            .args(["--timeout-secs", "30"]);
        child::spawn_piped(&mut cmd, Stdio::inherit()).expect("client starts")
    };
    let line = |rx: &std::sync::mpsc::Receiver<String>, what: &str| {
        rx.recv_timeout(Duration::from_secs(40))
            .unwrap_or_else(|e| panic!("{stack}: no {what} line: {e}"))
    };
    let finish = |mut c: Child, rx: &std::sync::mpsc::Receiver<String>| {
        let j: serde_json::Value = serde_json::from_str(&line(rx, "JSON")).expect("JSON");
        let status = child::wait_or_kill(&mut c, Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{stack}: {status:?}");
        assert_eq!(j["stack"], stack, "{j}");
        assert_eq!(
            (j["connections"].as_u64(), j["held"].as_u64()),
            (Some(N), Some(N)),
            "{j}"
        );
        j
    };

    let srv = Server::start(peer, &certs);
    let (c, rx) = client(&srv, "2");
    assert_eq!(line(&rx, "ready"), format!("ready {N}"));
    let j = finish(c, &rx);
    assert_eq!(j["lost_while_held"], 0, "{j}");
    // Two seconds at one PING per 200 ms: several per connection.
    assert!(j["keep_alives_sent"].as_u64().unwrap() >= 2 * N, "{j}");
    assert_eq!(
        (j["hold_seconds"].as_u64(), j["keep_alive_ms"].as_u64()),
        (Some(2), Some(200))
    );

    // The server stops (closing its connections) while they are held.
    let (c, rx) = client(&srv, "3");
    assert_eq!(line(&rx, "ready"), format!("ready {N}"));
    srv.stop();
    let j = finish(c, &rx);
    assert_eq!(j["lost_while_held"].as_u64(), Some(N), "{j}");
}

#[test]
fn quinn_peer_holds_idle_connections() {
    idle(&quinn_peer(), "quinn");
}

#[test]
fn quiche_peer_holds_idle_connections() {
    idle(&quiche_peer(), "quiche");
}

/// The two reference peers speak standard QUIC v1 to each other.
#[test]
fn quinn_and_quiche_interoperate() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (client, server, stack) in [
        (quinn_peer(), quiche_peer(), "quinn"),
        (quiche_peer(), quinn_peer(), "quiche"),
    ] {
        let certs = dir.path().join(stack);
        let srv = Server::start(&server, &certs);
        let ca = certs.join("cert.pem");
        let j = bulk(&client, &srv, ca.to_str().unwrap(), ("2MiB", "2MiB"), stack);
        assert_eq!(j["download_bytes"], 2 << 20);
        srv.stop();
    }
}

#[test]
fn bad_command_lines_exit_2() {
    for bin in [quinn_peer(), quiche_peer()] {
        let out = Command::new(&bin)
            .args([
                "client",
                "--connect",
                "127.0.0.1:1",
                "--ca",
                "x",
                "--upload",
                "lots",
            ])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{}", bin.display());
        // Idle mode: a keep-alive at or above half the 30 s idle timeout is refused.
        let out = Command::new(&bin)
            .args(["client", "--connect", "127.0.0.1:1", "--ca", "x"])
            .args(["--hold-secs", "5", "--keep-alive-ms", "15000"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{}", bin.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--keep-alive-ms"), "{err}");
    }
}

/// The runner's `--peers quinn` path: the reference checks arrive as matrix cells, and
/// the quinn client's Version Negotiation check is one of them, green.
#[test]
fn runner_shows_reference_cells_in_the_matrix() {
    let _ = bins(); // builds `quill` beside the peers when it is missing
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = quill_interop::runner::RunOptions::new(quinn_peer());
    o.scenarios = Vec::new();
    o.peers = vec!["quill".into(), "quinn".into()];
    o.previous_release = false;
    o.results = dir.path().to_path_buf();
    o.external = Some(quill_interop::reference::cells);
    let cells = quill_interop::runner::run(&o);
    let table = quill_interop::runner::markdown(&cells, &o);
    let vn = cells
        .iter()
        .find(|c| c.scenario == "vn-server" && c.client == "quinn" && c.server == "quill")
        .unwrap_or_else(|| panic!("no quinn → quill vn-server cell:\n{table}"));
    assert_eq!(vn.outcome.label(), "pass", "{table}");
    assert_eq!(cells.len(), 3, "{table}");
    assert!(cells.iter().all(|c| c.outcome.label() == "pass"), "{table}");
    assert!(table.contains("quill → quinn"), "{table}");
}
