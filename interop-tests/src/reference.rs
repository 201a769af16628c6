//! Reference-peer checks: quill coexisting with QUIC stacks nobody on this team wrote
//! (issue 7, "Reference peers"; RFC 8999, the version-independent properties of QUIC).
//!
//! quill speaks only its own version ([`QUILL_VERSION`], `0x51554c01`), so the only
//! thing a QUIC v1 stack and quill can do together is tell each other so, cleanly. The
//! checks run real processes on loopback: the `quill` CLI (server and client), and the
//! reference peers `quinn-peer` and `quiche-peer` ([`crate::refpeers`]).
//!
//! | scenario | client → server | pass rule |
//! |---|---|---|
//! | `vn-server` | quinn, quiche → quill (`quill server --no-quic-v1`) | through the relay ([`crate::relay`], no impairments): the probe reports `version_mismatch` (exit 0), and the capture holds, from the server, only Version Negotiation packets: long header, version 0, DCID = the client's SCID and SCID = the client's DCID, a list of ≥ 1 version that contains `QUILL_VERSION` and not the version the client offered (RFC 8999 §6, RFC 9000 §6.1) |
//! | `vn-client` | quill → quinn, quiche | `quill connect` exits 3 (the connection-failure code) within [`CLIENT_LIMIT`], printing `peer speaks QUIC versions …` with `0x00000001 (QUIC v1)` among them; exit 0, any other code, a signal or a hang fails |
//! | `undisturbed` | quinn, quiche → quill | a logged-in `quill ping --echo` session on the same quill server, spanning that stack's `vn-server` probe, gets every echo back (`N sent, N received`, exit 0) |
//!
//! [`run_reference_checks`] runs them all and returns one [`RefCheck`] each; nothing
//! panics, every child process is bounded in time and killed when late, and every
//! server is stopped (SIGTERM, or its standard input closed) on the way out.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quill_transport::service::hex;
use quill_transport::wire::{version_name, QUILL_VERSION};

use crate::capture::{Capture, Direction, HeaderInfo};
use crate::child;
use crate::relay::{Relay, RelayConfig};

/// Longest a `quill` client may take to give up on a foreign server.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(20);
/// Longest a probe process may run (its own limit is 5 s).
const PROBE_LIMIT: Duration = Duration::from_secs(15);
/// Longest a server may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(20);
/// The account the checks create on their quill server.
const USER: &str = "refcheck";
/// Its password.
const PASSWORD: &str = "reference peers are strangers";
/// PINGs of the `undisturbed` session, and their interval.
const PINGS: u32 = 30;
const PING_INTERVAL: &str = "50ms";

/// Paths of the binaries the checks run.
#[derive(Debug, Clone)]
pub struct RefBins {
    /// `quinn-peer`.
    pub quinn_peer: PathBuf,
    /// `quiche-peer`.
    pub quiche_peer: PathBuf,
    /// The `quill` CLI.
    pub quill: PathBuf,
}

impl RefBins {
    /// The three binaries in `dir` (e.g. `target/release`).
    pub fn in_dir(dir: &Path) -> RefBins {
        RefBins {
            quinn_peer: dir.join("quinn-peer"),
            quiche_peer: dir.join("quiche-peer"),
            quill: dir.join("quill"),
        }
    }

    /// The binaries next to the running executable: `target/<profile>/` for a binary,
    /// its parent for a test executable in `target/<profile>/deps/`.
    pub fn beside_current_exe() -> std::io::Result<RefBins> {
        let exe = std::env::current_exe()?;
        let mut dir = exe
            .parent()
            .ok_or_else(|| std::io::Error::other("the executable has no directory"))?
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        Ok(RefBins::in_dir(&dir))
    }

    /// The binaries that do not exist.
    pub fn missing(&self) -> Vec<&Path> {
        [&self.quinn_peer, &self.quiche_peer, &self.quill]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(PathBuf::as_path)
            .collect()
    }
}

/// The result of one reference-peer check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefCheck {
    /// `vn-server`, `vn-client` or `undisturbed`.
    pub scenario: String,
    /// The client's stack: `quill`, `quinn` or `quiche`.
    pub client: String,
    /// The server's stack.
    pub server: String,
    /// `Ok(detail)` on pass, `Err(reason)` on failure.
    pub result: Result<String, String>,
}

impl RefCheck {
    fn new(scenario: &str, client: &str, server: &str, result: Result<String, String>) -> Self {
        RefCheck {
            scenario: scenario.into(),
            client: client.into(),
            server: server.into(),
            result,
        }
    }

    /// True on pass.
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// One JSON object: scenario, client, server, pass, detail or reason.
    pub fn to_json(&self) -> serde_json::Value {
        let (pass, text) = match &self.result {
            Ok(d) => (true, d.as_str()),
            Err(r) => (false, r.as_str()),
        };
        serde_json::json!({
            "scenario": self.scenario,
            "client": self.client,
            "server": self.server,
            "pass": pass,
            if pass { "detail" } else { "reason" }: text,
        })
    }
}

/// The foreign stacks the checks know.
pub const STACKS: &[&str] = &["quinn", "quiche"];

/// Runs every reference-peer check against every stack in [`STACKS`]; see
/// [`run_reference_checks_for`].
pub fn run_reference_checks(bins: &RefBins, work_dir: &Path) -> Vec<RefCheck> {
    run_reference_checks_for(bins, work_dir, STACKS)
}

/// Runs the reference-peer checks for the given foreign stacks (`quinn`, `quiche`),
/// using `work_dir` for keys, accounts, certificates and known_hosts (created if
/// missing). Per stack: `vn-server` (its client → quill), `undisturbed` (the quill
/// session beside those probes, reported under the stack's pairing) and `vn-client`
/// (quill → its server). Never panics; a setup failure fails the checks that needed
/// it, with the reason. An unknown stack name gets failed checks saying so.
pub fn run_reference_checks_for(bins: &RefBins, work_dir: &Path, stacks: &[&str]) -> Vec<RefCheck> {
    let mut out = Vec::new();
    let missing = bins.missing();
    let unknown: Vec<&str> = stacks
        .iter()
        .copied()
        .filter(|s| !STACKS.contains(s))
        .collect();
    let setup_error = if !missing.is_empty() {
        Some(format!(
            "missing binaries: {} (build them with `cargo build -p quill-interop --bins -p quill-cli`)",
            missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    } else if !unknown.is_empty() {
        Some(format!(
            "unknown reference stack {} (known: {})",
            unknown.join(", "),
            STACKS.join(", ")
        ))
    } else {
        None
    };
    if let Some(why) = setup_error {
        for stack in stacks {
            for (s, c, v) in [
                ("vn-server", *stack, "quill"),
                ("undisturbed", *stack, "quill"),
                ("vn-client", "quill", *stack),
            ] {
                out.push(RefCheck::new(s, c, v, Err(why.clone())));
            }
        }
        return out;
    }
    let _ = std::fs::create_dir_all(work_dir);
    let bin_of = |stack: &str| -> &PathBuf {
        if stack == "quinn" {
            &bins.quinn_peer
        } else {
            &bins.quiche_peer
        }
    };

    // (a) and (c): each foreign stack's client against a quill server, while a
    // logged-in quill session on that server carries on.
    for stack in stacks {
        match QuillServer::start(&bins.quill, &work_dir.join(format!("quill-server-{stack}"))) {
            Ok(server) => {
                let session = PingSession::start(&bins.quill, server.addr, work_dir);
                out.push(RefCheck::new(
                    "vn-server",
                    stack,
                    "quill",
                    check_vn_from_quill(bin_of(stack), server.addr),
                ));
                out.push(RefCheck::new(
                    "undisturbed",
                    stack,
                    "quill",
                    session.and_then(PingSession::finish),
                ));
                drop(server);
            }
            Err(e) => {
                for s in ["vn-server", "undisturbed"] {
                    out.push(RefCheck::new(
                        s,
                        stack,
                        "quill",
                        Err(format!("quill server: {e}")),
                    ));
                }
            }
        }
    }

    // (b): the quill client against each foreign server.
    for stack in stacks {
        let result = PeerServer::start(bin_of(stack), &work_dir.join(format!("{stack}-certs")))
            .and_then(|srv| check_quill_client_vn(&bins.quill, srv.addr, work_dir));
        out.push(RefCheck::new("vn-client", "quill", stack, result));
    }
    out
}

/// The runner's hook ([`crate::runner::ExternalChecks`]): the checks for one foreign
/// stack as matrix cells, with the binaries next to the running executable and the
/// work files under the results directory.
pub fn cells(stack: &str, opts: &crate::runner::RunOptions) -> Vec<crate::runner::Cell> {
    use crate::runner::{Cell, Outcome};
    let started = Instant::now();
    let checks = match RefBins::beside_current_exe() {
        Ok(bins) => run_reference_checks_for(
            &bins,
            &opts.results.join("reference-work").join(stack),
            &[stack],
        ),
        Err(e) => vec![RefCheck::new(
            "vn-server",
            stack,
            "quill",
            Err(format!("cannot locate the reference peers: {e}")),
        )],
    };
    let each = started.elapsed().as_secs_f64() / checks.len().max(1) as f64;
    checks
        .into_iter()
        .map(|c| Cell {
            outcome: match c.result {
                Ok(detail) => Outcome::Pass(detail),
                Err(reason) => Outcome::Fail(reason),
            },
            scenario: c.scenario,
            client: c.client,
            server: c.server,
            seconds: each,
            metrics: serde_json::Value::Null,
        })
        .collect()
}

/// Names versions as in quill's error message: `0x00000001 (QUIC v1), ...`.
fn list_versions(vs: &[u32]) -> String {
    vs.iter()
        .map(|&v| format!("{v:#010x} ({})", version_name(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// (a) A probe through the relay to the quill server, judged by its report and by the
/// relay's capture.
fn check_vn_from_quill(probe_bin: &Path, server: SocketAddr) -> Result<String, String> {
    let relay = Relay::start(RelayConfig::new(server)).map_err(|e| format!("relay: {e}"))?;
    let run = child::run_bounded(
        Command::new(probe_bin)
            .arg("probe")
            .arg("--connect")
            .arg(relay.addr().to_string())
            .args(["--timeout-secs", "5"]),
        b"",
        PROBE_LIMIT,
    );
    let capture = relay.stop();
    let run = run?;
    let line = run.stdout.lines().next().unwrap_or("").to_string();
    let report: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
        format!(
            "probe printed no JSON line: {:?} / {}",
            run.stdout,
            run.stderr.trim()
        )
    })?;
    let outcome = report["outcome"].as_str().unwrap_or("");
    let detail = report["detail"].as_str().unwrap_or("");
    if outcome != "version_mismatch" {
        return Err(format!(
            "the probe reported {outcome:?} ({detail}), not a version mismatch"
        ));
    }
    if run.code != Some(0) {
        return Err(format!(
            "the probe reported a mismatch but exited {:?}",
            run.code
        ));
    }
    let wire = judge_vn_capture(&capture)?;
    Ok(format!("{wire}; {detail}"))
}

/// RFC 8999 §6 on the capture: the server answered the client's first packet with a
/// well-formed Version Negotiation and nothing else.
pub fn judge_vn_capture(capture: &Capture) -> Result<String, String> {
    let first = capture
        .dir(Direction::C2S)
        .next()
        .ok_or("the capture holds no client packet")?;
    let HeaderInfo::Long {
        version: offered,
        dcid: c_dcid,
        scid: c_scid,
        ..
    } = &first.header
    else {
        return Err("the client's first packet has no long header".into());
    };
    let mut vn_count = 0;
    for r in capture.dir(Direction::S2C) {
        match &r.header {
            // RFC 8999 §6: "The Version field of a Version Negotiation packet MUST be set
            // to 0x00000000." and "the server MUST include the value from the Source
            // Connection ID field of the packet it receives in the Destination Connection
            // ID field. The value for Source Connection ID MUST be copied from the
            // Destination Connection ID of the received packet".
            HeaderInfo::Long {
                version: 0,
                dcid,
                scid,
                ..
            } => {
                if dcid != c_scid || scid != c_dcid {
                    return Err(format!(
                        "Version Negotiation #{} does not echo the connection IDs: dcid {} scid {}, client sent dcid {} scid {}",
                        r.index,
                        hex(dcid),
                        hex(scid),
                        hex(c_dcid),
                        hex(c_scid)
                    ));
                }
                vn_count += 1;
            }
            other => {
                return Err(format!(
                    "the server sent something other than Version Negotiation (datagram #{}: {other:?})",
                    r.index
                ))
            }
        }
    }
    if vn_count == 0 {
        return Err("the server sent no Version Negotiation packet".into());
    }
    let lists: Vec<_> = capture
        .version_negotiations
        .iter()
        .filter(|v| v.dir == Direction::S2C)
        .collect();
    if lists.len() != vn_count {
        return Err(format!(
            "{vn_count} Version Negotiation headers but {} parsable version lists",
            lists.len()
        ));
    }
    for l in &lists {
        if l.versions.is_empty() {
            return Err("a Version Negotiation packet lists no version".into());
        }
        if !l.versions.contains(&QUILL_VERSION) {
            return Err(format!(
                "the Version Negotiation lists {} but not quill's {QUILL_VERSION:#010x}",
                list_versions(&l.versions)
            ));
        }
        // RFC 9000 §6.1: sent only "If the version selected by the client is not
        // acceptable to the server".
        if l.versions.contains(offered) {
            return Err(format!(
                "the Version Negotiation lists the client's own version {offered:#010x}"
            ));
        }
    }
    Ok(format!(
        "{vn_count} Version Negotiation packet(s) answering {offered:#010x} ({}), listing {}, connection IDs echoed",
        version_name(*offered),
        list_versions(&lists[0].versions)
    ))
}

/// (b) `quill connect` to a foreign server: exit 3 with "peer speaks QUIC versions".
fn check_quill_client_vn(quill: &Path, server: SocketAddr, work: &Path) -> Result<String, String> {
    let known_hosts = work.join(format!("known_hosts-{}", server.port()));
    let start = Instant::now();
    let run = child::run_bounded(
        Command::new(quill)
            .arg("connect")
            .arg(server.to_string())
            .args(["--user", USER, "--password-stdin", "--accept-new-host"])
            .arg("--known-hosts")
            .arg(&known_hosts),
        format!("{PASSWORD}\nhello\n").as_bytes(),
        CLIENT_LIMIT,
    )?;
    let took = start.elapsed();
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("peer speaks QUIC versions"))
        .map(str::to_string);
    match (run.code, line) {
        (Some(3), Some(l)) if l.contains("0x00000001 (QUIC v1)") => Ok(format!(
            "exit 3 after {} ms: {}",
            took.as_millis(),
            l.trim()
        )),
        (Some(3), Some(l)) => Err(format!("the versions named do not include QUIC v1: {l}")),
        (Some(0), _) => Err(format!(
            "quill reported success against a foreign QUIC server (stdout {:?})",
            run.stdout
        )),
        (code, _) => Err(format!(
            "quill exited {} without the expected message; stderr: {}",
            code.map_or("by a signal".to_string(), |c| c.to_string()),
            run.stderr.trim()
        )),
    }
}

/// Waits up to `limit` for a line containing `needle`; returns it.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// A real `quill server` with a fresh host key and one account.
struct QuillServer {
    addr: SocketAddr,
    child: Child,
}

impl QuillServer {
    fn start(quill: &Path, dir: &Path) -> Result<QuillServer, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("root")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let key = dir.join("host.key");
        let accounts = dir.join("accounts.db");
        let k = child::run_bounded(
            Command::new(quill).arg("keygen").arg("-o").arg(&key),
            b"",
            Duration::from_secs(20),
        )?;
        if k.code != Some(0) {
            return Err(format!("quill keygen failed: {}", k.stderr.trim()));
        }
        let u = child::run_bounded(
            Command::new(quill)
                .args(["user", "add", USER, "--password-stdin", "--accounts"])
                .arg(&accounts),
            format!("{PASSWORD}\n").as_bytes(),
            Duration::from_secs(30),
        )?;
        if u.code != Some(0) {
            return Err(format!("quill user add failed: {}", u.stderr.trim()));
        }
        let mut child = Command::new(quill)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--retry",
                "never",
                // quill's own version only: the QUIC v1 probes get Version Negotiation.
                "--no-quic-v1",
                "--key",
            ])
            .arg(&key)
            .arg("--accounts")
            .arg(&accounts)
            .arg("--root")
            .arg(dir.join("root"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start quill server: {e}"))?;
        let lines = child::lines(child.stderr.take().expect("piped"));
        let Some(line) = wait_for_line(&lines, "listening ", START_LIMIT) else {
            child::stop(&mut child, Duration::from_secs(10));
            return Err("quill server did not print `listening ADDR`".into());
        };
        let addr = line
            .split("listening ")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(QuillServer { addr, child }),
            None => {
                child::stop(&mut child, Duration::from_secs(10));
                Err(format!("unparsable server line: {line}"))
            }
        }
    }
}

impl Drop for QuillServer {
    fn drop(&mut self) {
        child::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// A `quinn-peer` or `quiche-peer` server, stopped by closing its standard input.
struct PeerServer {
    addr: SocketAddr,
    child: Child,
}

impl PeerServer {
    fn start(bin: &Path, cert_dir: &Path) -> Result<PeerServer, String> {
        let (mut child, lines) = child::spawn_piped(
            Command::new(bin)
                .arg("server")
                .args(["--listen", "127.0.0.1:0", "--cert-dir"])
                .arg(cert_dir),
            Stdio::null(),
        )
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let line = wait_for_line(&lines, "listening ", START_LIMIT);
        let addr = line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening "))
            .and_then(|a| a.trim().parse().ok());
        match addr {
            Some(addr) => Ok(PeerServer { addr, child }),
            None => {
                child::stop(&mut child, Duration::from_secs(10));
                Err(format!(
                    "{} server did not print `listening ADDR`",
                    bin.display()
                ))
            }
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if child::wait_or_kill(&mut self.child, Duration::from_secs(5)).is_none() {
            child::stop(&mut self.child, Duration::from_secs(10));
        }
    }
}

/// (c) A `quill ping` session, logged in before the foreign clients arrive.
struct PingSession {
    child: Child,
    lines: mpsc::Receiver<String>,
    connected: String,
}

impl PingSession {
    fn start(quill: &Path, server: SocketAddr, work: &Path) -> Result<PingSession, String> {
        let (mut child, lines) = child::spawn_piped(
            Command::new(quill)
                .arg("ping")
                .arg(server.to_string())
                .args(["-c", &PINGS.to_string(), "-i", PING_INTERVAL, "--echo"])
                .args(["--user", USER, "--password-stdin", "--accept-new-host"])
                .arg("--known-hosts")
                .arg(work.join("known_hosts-ping")),
            Stdio::piped(),
        )
        .map_err(|e| format!("cannot start quill ping: {e}"))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = writeln!(i, "{PASSWORD}");
        }
        match wait_for_line(&lines, "connected to", CLIENT_LIMIT) {
            Some(connected) => Ok(PingSession {
                child,
                lines,
                connected,
            }),
            None => {
                let err = child::reader(child.stderr.take());
                let _ = child::wait_or_kill(&mut child, Duration::from_secs(2));
                let _ = child.kill();
                let _ = child.wait();
                let e = err.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                Err(format!("quill ping did not log in: {}", e.trim()))
            }
        }
    }

    fn finish(mut self) -> Result<String, String> {
        let err = child::reader(self.child.stderr.take());
        let limit = Duration::from_secs(30);
        let status = child::wait_or_kill(&mut self.child, limit);
        let mut out: Vec<String> = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            out.push(l);
        }
        let stderr = err.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        let want = format!("{PINGS} sent, {PINGS} received");
        let summary = out
            .iter()
            .find(|l| l.contains(" sent, "))
            .cloned()
            .unwrap_or_default();
        match status {
            Some(s) if s.code() == Some(0) && summary.contains(&want) => Ok(format!(
                "a session logged in before the foreign probes ({}) kept working: {summary}",
                self.connected.trim()
            )),
            Some(s) => Err(format!(
                "the quill session was disturbed: exit {:?}, summary {summary:?}, stderr {}",
                s.code(),
                stderr.trim()
            )),
            None => Err(format!(
                "quill ping did not finish within {} s",
                limit.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Action, Record, VnList};

    fn rec(dir: Direction, index: u64, version: u32, dcid: &[u8], scid: &[u8]) -> Record {
        Record {
            dir,
            index,
            t: Duration::ZERO,
            size: 1200,
            action: Action::Forwarded,
            upstream: "127.0.0.1:1000".parse().expect("addr"),
            header: HeaderInfo::Long {
                version,
                dcid: dcid.to_vec(),
                scid: scid.to_vec(),
                ty: None,
                coalesced: Vec::new(),
            },
            head: None,
            ecn: 0,
        }
    }

    fn capture(vn_dcid: &[u8], vn_scid: &[u8], versions: Vec<u32>) -> Capture {
        Capture {
            records: vec![
                rec(Direction::C2S, 0, 1, b"\x01\x02\x03\x04", b"\x0a\x0b"),
                rec(Direction::S2C, 0, 0, vn_dcid, vn_scid),
            ],
            truncated: 0,
            version_negotiations: vec![VnList {
                dir: Direction::S2C,
                index: 0,
                versions,
            }],
        }
    }

    #[test]
    fn a_well_formed_negotiation_passes() {
        let c = capture(
            b"\x0a\x0b",
            b"\x01\x02\x03\x04",
            vec![QUILL_VERSION, 0x1a2a_3a4a],
        );
        let d = judge_vn_capture(&c).expect("passes");
        assert!(
            d.contains("0x51554c01 (quill), 0x1a2a3a4a (reserved)"),
            "{d}"
        );
    }

    #[test]
    fn bad_negotiations_fail() {
        // Connection IDs not swapped.
        let c = capture(b"\x01\x02\x03\x04", b"\x0a\x0b", vec![QUILL_VERSION]);
        assert!(judge_vn_capture(&c).unwrap_err().contains("echo"));
        // quill's version missing.
        let c = capture(b"\x0a\x0b", b"\x01\x02\x03\x04", vec![0x1a2a_3a4a]);
        assert!(judge_vn_capture(&c).unwrap_err().contains("not quill's"));
        // The client's own version listed.
        let c = capture(b"\x0a\x0b", b"\x01\x02\x03\x04", vec![QUILL_VERSION, 1]);
        assert!(judge_vn_capture(&c).unwrap_err().contains("own version"));
        // No Version Negotiation at all.
        let mut c = capture(b"\x0a\x0b", b"\x01\x02\x03\x04", vec![QUILL_VERSION]);
        c.records.truncate(1);
        c.version_negotiations.clear();
        assert!(judge_vn_capture(&c)
            .unwrap_err()
            .contains("no Version Negotiation"));
        // Something else from the server.
        let mut c = capture(b"\x0a\x0b", b"\x01\x02\x03\x04", vec![QUILL_VERSION]);
        c.records
            .push(rec(Direction::S2C, 1, 1, b"\x0a\x0b", b"\x05"));
        assert!(judge_vn_capture(&c).unwrap_err().contains("other than"));
    }

    #[test]
    fn check_json_names_the_outcome() {
        let ok = RefCheck::new("vn-client", "quill", "quinn", Ok("fine".into()));
        assert_eq!(ok.to_json()["pass"], true);
        assert_eq!(ok.to_json()["detail"], "fine");
        let bad = RefCheck::new("vn-client", "quill", "quinn", Err("hung".into()));
        assert_eq!(bad.to_json()["reason"], "hung");
        assert!(!bad.passed());
    }
}
