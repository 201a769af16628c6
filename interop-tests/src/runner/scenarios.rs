//! The scenarios, one table entry each: the network the relay makes ([`Scenario::relay`],
//! described in [`Scenario::network`]), the files and peer flags of a run
//! ([`Scenario::setup`]) and the judge of the written pass rule ([`Scenario::rule`]).
//! Adding a scenario is adding an entry to [`SCENARIOS`] (and its judge below it).

use std::net::IpAddr;
use std::time::Duration;

use quill_crypto::packet::Suite;
use serde_json::{json, Value};

use super::{
    amplification_strict, basic, check_retry_wire, execute, fnv, initial_dcids, metrics, names,
    one, retries_on_wire, save_capture, u, Outcome, PeerImpl, RunOptions, RunOutput, Setup, MB,
};
use crate::capture::{Action, Capture, Direction};
use crate::relay::{Impairments, Rebind, RebindKind, RelayConfig};
use quill_transport::wire::LongType;

/// One scenario: its network, its setup, its written pass rule and the judge of it.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// The pass rule, as documented in docs/INTEROP.md.
    pub rule: &'static str,
    /// The impairments, in words.
    pub network: &'static str,
    /// The impairments, as the relay's configuration.
    pub(super) relay: fn(&mut RelayConfig),
    /// Files, peer flags and time bound of a run.
    pub(super) setup: fn() -> Setup,
    /// How a cell is run and judged.
    pub(super) judge: Judge,
}

/// How a cell is run and judged.
#[derive(Debug, Clone, Copy)]
pub(super) enum Judge {
    /// One run of the setup, judged by this rule (a note on pass, the reason on fail).
    Run(fn(&RunOutput) -> Result<String, String>),
    /// Several runs (login: a wrong then the right password; goodput: five runs).
    Cell(fn(&CellRun<'_>) -> (Outcome, Value)),
}

/// What a [`Judge::Cell`] needs to run the scenario's setup itself.
pub(super) struct CellRun<'a> {
    opts: &'a RunOptions,
    sc: &'a Scenario,
    client: &'a PeerImpl,
    server: &'a PeerImpl,
}

impl CellRun<'_> {
    /// One run of `setup` (the `run`th of the cell).
    fn execute(&self, setup: &Setup, run: u64) -> Result<RunOutput, String> {
        execute(self.opts, self.sc, self.client, self.server, setup, run)
    }

    /// Keeps a failed run's capture.
    fn save_capture(&self, capture: &Capture) {
        save_capture(
            self.opts,
            self.sc.name,
            &self.client.name,
            &self.server.name,
            capture,
        )
    }
}

impl Scenario {
    /// The relay's impairments for this scenario.
    pub(super) fn impair(&self, rc: &mut RelayConfig) {
        (self.relay)(rc)
    }

    /// Runs one cell (scenario × pairing) and judges it.
    pub(super) fn judge(
        &self,
        opts: &RunOptions,
        client: &PeerImpl,
        server: &PeerImpl,
    ) -> (Outcome, Value) {
        let setup = (self.setup)();
        if setup.ipv6 && std::net::UdpSocket::bind("[::1]:0").is_err() {
            return (
                Outcome::Unsupported("no IPv6 loopback on this machine".into()),
                Value::Null,
            );
        }
        match self.judge {
            Judge::Run(rule) => one(opts, self, client, server, &setup, rule),
            Judge::Cell(cell) => cell(&CellRun {
                opts,
                sc: self,
                client,
                server,
            }),
        }
    }
}

/// Every scenario, in matrix order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "handshake",
        network: "no impairment",
        rule: "1 file (10 KB) byte-exact; the client reports 1 handshake and no Retry; \
               the capture shows client Initials to exactly 1 client-chosen Destination CID and \
               no Retry",
        relay: no_impairment,
        setup: || Setup::new(vec![("hello.bin".into(), 10_000)]),
        judge: Judge::Run(handshake),
    },
    Scenario {
        name: "transfer",
        network: "no impairment",
        rule: "files of 2, 3 and 5 MB byte-exact over one connection with 64 KiB stream / \
               128 KiB connection windows on both sides",
        relay: no_impairment,
        setup: transfer_setup,
        judge: Judge::Run(byte_exact),
    },
    Scenario {
        name: "multiplexing",
        network: "no impairment",
        rule: "1000 small files (1-4 KB) byte-exact, 32 streams in flight, over one \
               connection: 1 handshake and client Initials to 1 Destination CID",
        relay: no_impairment,
        setup: multiplexing_setup,
        judge: Judge::Run(multiplexing),
    },
    Scenario {
        name: "longrtt",
        network: "750 ms delay each way (1.5 s RTT)",
        rule: "1 file (100 KB) byte-exact; the capture shows the client sent Initial \
               datagrams again (more than 100 ms after its first flight) before the \
               server's first reply could have reached it",
        relay: |rc| each_way(rc, |d| d.delay = Duration::from_millis(750)),
        setup: || one_file("long.bin", 100_000, 60),
        judge: Judge::Run(longrtt),
    },
    Scenario {
        name: "chacha20",
        network: "no impairment",
        rule: "both sides offer only ChaCha20-Poly1305; 1 file (1 MB) byte-exact; the \
               client reports ChaCha20-Poly1305 negotiated",
        relay: no_impairment,
        setup: || Setup {
            server_args: args(&["--suites", "chacha20"]),
            client_args: args(&["--suites", "chacha20"]),
            ..Setup::new(vec![("c.bin".into(), MB)])
        },
        judge: Judge::Run(chacha20),
    },
    Scenario {
        name: "retry",
        network: "no impairment",
        rule: "server sends Retry to every new connection; 1 file byte-exact; the client \
               reports 1 Retry; on the capture every client Initial after the first Retry \
               carries its token, the first goes to the Retry's Source CID, and the client's \
               Initial packet numbers (header protection removed) continue after the Retry \
               instead of restarting",
        relay: no_impairment,
        setup: || Setup {
            server_args: args(&["--retry"]),
            ..Setup::new(vec![("r.bin".into(), 100_000)])
        },
        judge: Judge::Run(retry),
    },
    Scenario {
        name: "keyupdate",
        network: "no impairment",
        rule: "40 files of 200 KB byte-exact; the server updates keys every 1000 packets, \
               the client asks for an update half-way; both report at least 1 key update \
               they initiated",
        relay: no_impairment,
        setup: keyupdate_setup,
        judge: Judge::Run(keyupdate),
    },
    fifty_handshakes(
        "handshakeloss",
        "30% random loss each way",
        "50 connections one after another, each fetching a 1 KB file: all 50 \
         handshakes succeed and all 50 files are byte-exact",
        |rc| each_way(rc, |d| d.loss = 0.3),
    ),
    Scenario {
        name: "transferloss",
        network: "2% random loss each way",
        rule: "1 file (2 MB) byte-exact",
        relay: |rc| each_way(rc, |d| d.loss = 0.02),
        setup: || one_file("t.bin", 2 * MB, 90),
        judge: Judge::Run(transferloss),
    },
    fifty_handshakes(
        "handshakecorruption",
        "30% of datagrams get one byte flipped within their first 50 bytes, each way",
        "50 connections one after another, each fetching a 1 KB file: all succeed, \
         all byte-exact",
        |rc| {
            each_way(rc, |d| {
                d.corrupt = 0.3;
                d.corrupt_first_50 = true;
            })
        },
    ),
    Scenario {
        name: "transfercorruption",
        network: "2% of datagrams get one byte flipped anywhere, each way",
        rule: "1 file (3 MB) byte-exact",
        relay: |rc| each_way(rc, |d| d.corrupt = 0.02),
        setup: || one_file("t.bin", 3 * MB, 90),
        judge: Judge::Run(transfercorruption),
    },
    Scenario {
        name: "blackhole",
        network: "20 Mbit/s each way; everything dropped for 2 s out of every 3.5 s",
        rule: "1 file (10 MB) byte-exact, and the capture shows the outages hit the \
               transfer (black-holed datagrams in both directions)",
        relay: |rc| {
            each_way(rc, |d| d.rate_bps = Some(20_000_000));
            // 2 s outages between 1.5 s windows: the pattern that, before PTO backoff
            // was capped, put every probe into an outage (docs/INTEROP.md).
            rc.blackhole = Some((Duration::from_secs(2), Duration::from_millis(1500)));
        },
        setup: || one_file("b.bin", 10 * MB, 120),
        judge: Judge::Run(blackhole),
    },
    Scenario {
        name: "amplificationlimit",
        network:
            "every client datagram after its first flight (two datagrams) dropped for the first 4 s",
        rule: "1 file byte-exact; on the capture, before the first client Handshake \
               packet reaches the server, the server sent at most 3x the bytes it received",
        relay: |rc| rc.c2s.drop_from_until = Some((2, Duration::from_secs(4))),
        setup: || Setup::new(vec![("a.bin".into(), 10_000)]),
        judge: Judge::Run(amplification),
    },
    Scenario {
        name: "rebind-port",
        network: "the relay's server-facing source port changes 2 s in",
        rule: "40 files of 64 KB fetched 100 ms apart, byte-exact; the capture shows 2 \
               client source addresses and the server reports at least 1 validated path",
        relay: |rc| {
            rc.rebind = vec![Rebind {
                at: Duration::from_secs(2),
                kind: RebindKind::Port,
            }]
        },
        setup: rebind_setup,
        judge: Judge::Run(rebind_port),
    },
    Scenario {
        name: "rebind-addr",
        network: "the relay's server-facing source address changes to 127.0.0.2 2 s in",
        rule: "as rebind-port, with 2 client source IP addresses on the capture",
        relay: |rc| {
            rc.rebind = vec![Rebind {
                at: Duration::from_secs(2),
                kind: RebindKind::Address(std::net::Ipv4Addr::new(127, 0, 0, 2)),
            }]
        },
        setup: rebind_setup,
        judge: Judge::Run(rebind_addr),
    },
    Scenario {
        name: "ipv6",
        network: "server, relay and client on ::1",
        rule: "1 file (1 MB) byte-exact; every datagram on the capture went over IPv6",
        relay: no_impairment,
        setup: || Setup {
            ipv6: true,
            ..Setup::new(vec![("six.bin".into(), MB)])
        },
        judge: Judge::Run(ipv6),
    },
    Scenario {
        name: "keepalive",
        network: "no impairment; the server is killed at the end",
        rule: "idle timeout 1 s, client keep-alive 300 ms: after a first file the \
               connection idles 6 s (6 idle timeouts) and then fetches a second file; \
               in the idle window every datagram is small (<= 128 bytes, keep-alives and \
               their ACKs) and there are at least 5; then the server is killed and the \
               client reports an idle timeout within 4 s",
        relay: no_impairment,
        setup: keepalive_setup,
        judge: Judge::Run(keepalive),
    },
    Scenario {
        name: "login",
        network: "no impairment",
        rule: "a wrong password is refused (client error login_refused, no file, server \
               counts 1 refused login); the right password is accepted and the file is \
               byte-exact",
        relay: no_impairment,
        setup: || Setup::new(vec![("l.bin".into(), 10_000)]),
        judge: Judge::Cell(login),
    },
    Scenario {
        name: "goodput",
        network: "10 Mbit/s each way, 64 KB queue",
        rule: "5 runs of 1 file (10 MB) byte-exact; goodput (file bytes / client transfer \
               time) is reported per run, not judged",
        relay: |rc| each_way(rc, |d| d.rate_bps = Some(10_000_000)),
        setup: || one_file("g.bin", 10 * MB, 60),
        judge: Judge::Cell(goodput),
    },
];

fn no_impairment(_: &mut RelayConfig) {}

/// A scenario of 50 connections one after another, each fetching a 1 KB file, through
/// the impairments of `relay`.
const fn fifty_handshakes(
    name: &'static str,
    network: &'static str,
    rule: &'static str,
    relay: fn(&mut RelayConfig),
) -> Scenario {
    Scenario {
        name,
        rule,
        network,
        relay,
        setup: handshakes_setup,
        judge: Judge::Run(handshakes),
    }
}

/// The same impairment in both directions.
pub(super) fn each_way(rc: &mut RelayConfig, set: impl Fn(&mut Impairments)) {
    set(&mut rc.c2s);
    set(&mut rc.s2c);
}

/// One file of `size` bytes, fetched within `secs` seconds.
fn one_file(name: &str, size: usize, secs: u64) -> Setup {
    Setup {
        timeout: Duration::from_secs(secs),
        ..Setup::new(vec![(name.into(), size)])
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------------------------
// Setups

fn transfer_setup() -> Setup {
    Setup {
        server_args: args(&["--small-windows"]),
        client_args: args(&["--small-windows"]),
        timeout: Duration::from_secs(90),
        ..Setup::new(vec![
            ("f2mb.bin".into(), 2 * MB),
            ("f3mb.bin".into(), 3 * MB),
            ("f5mb.bin".into(), 5 * MB),
        ])
    }
}

fn multiplexing_setup() -> Setup {
    let files: Vec<(String, usize)> = names("m", 1000)
        .into_iter()
        .map(|n| {
            let size = 1000 + (fnv(&n) % 3000) as usize;
            (n, size)
        })
        .collect();
    Setup {
        client_args: args(&["--parallel", "32"]),
        timeout: Duration::from_secs(90),
        ..Setup::new(files)
    }
}

fn keyupdate_setup() -> Setup {
    Setup {
        server_args: args(&["--key-update", "1000"]),
        client_args: args(&["--initiate-key-update"]),
        timeout: Duration::from_secs(90),
        ..Setup::new(names("k", 40).into_iter().map(|n| (n, 200_000)).collect())
    }
}

fn handshakes_setup() -> Setup {
    Setup {
        client_args: args(&["--handshakes", "50"]),
        timeout: Duration::from_secs(400),
        ..Setup::new(names("h", 50).into_iter().map(|n| (n, 1000)).collect())
    }
}

fn rebind_setup() -> Setup {
    Setup {
        client_args: args(&["--pause-ms", "100"]),
        timeout: Duration::from_secs(40),
        ..Setup::new(names("p", 40).into_iter().map(|n| (n, 64_000)).collect())
    }
}

fn keepalive_setup() -> Setup {
    Setup {
        server_args: args(&["--idle-timeout-ms", "1000"]),
        client_args: args(&[
            "--idle-timeout-ms",
            "1000",
            "--keep-alive-ms",
            "300",
            "--idle-ms",
            "6000",
        ]),
        vanish: true,
        timeout: Duration::from_secs(40),
        ..Setup::new(vec![("ka1.bin".into(), 10_000), ("ka2.bin".into(), 10_000)])
    }
}

// ---------------------------------------------------------------------------------
// Judges

fn byte_exact(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    Ok(String::new())
}

fn handshake(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let hs = u(&o.client, "handshakes");
    let retries = u(&o.client, "retries");
    let dcids = initial_dcids(&o.capture);
    let wire_retries = retries_on_wire(&o.capture);
    if hs != 1 || retries != 0 || dcids != 1 || wire_retries != 0 {
        return Err(format!(
            "expected 1 handshake without Retry: client reports {hs} handshakes, \
             {retries} Retry; capture shows Initials to {dcids} DCIDs and \
             {wire_retries} Retry"
        ));
    }
    Ok(String::new())
}

fn multiplexing(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let hs = u(&o.client, "handshakes");
    let dcids = initial_dcids(&o.capture);
    let files = u(&o.client, "files");
    if hs != 1 || dcids != 1 || files != 1000 {
        return Err(format!(
            "expected 1000 files over 1 connection: {files} files, {hs} handshakes, \
             Initials to {dcids} DCIDs"
        ));
    }
    Ok(String::new())
}

pub(super) fn longrtt(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let cap = &o.capture;
    let Some(first_reply) = cap.dir(Direction::S2C).map(|r| r.t).next() else {
        return Err("the server never answered".into());
    };
    let reachable = first_reply + Duration::from_millis(750);
    let initials: Vec<Duration> = cap
        .originals(Direction::C2S)
        .filter(|r| r.header.contains(LongType::Initial))
        .map(|r| r.t)
        .collect();
    let Some(&t0) = initials.first() else {
        return Err("no client Initial on the capture".into());
    };
    // The first flight leaves in one burst (the ClientHello fills two
    // datagrams); anything 100 ms later is a retransmission.
    let burst = t0 + Duration::from_millis(100);
    let first = initials.iter().filter(|&&t| t <= burst).count();
    let early = initials
        .iter()
        .filter(|&&t| t > burst && t < reachable)
        .count();
    if early < 1 {
        return Err(format!(
            "the client sent its first flight ({first} Initial datagrams) and nothing \
             more before the server's reply could reach it; expected a retransmission"
        ));
    }
    Ok(format!(
        "first flight {first} Initial datagrams, {early} retransmitted before the reply"
    ))
}

fn chacha20(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let suite = o
        .client
        .as_ref()
        .and_then(|c| c.get("suite"))
        .and_then(Value::as_str)
        .unwrap_or("none");
    if suite != Suite::ChaCha20Poly1305.name() {
        return Err(format!(
            "negotiated suite {suite}, expected ChaCha20-Poly1305"
        ));
    }
    Ok(String::new())
}

fn retry(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let retries = u(&o.client, "retries");
    if retries != 1 {
        return Err(format!("client reports {retries} Retry, expected 1"));
    }
    check_retry_wire(&o.capture)
}

fn keyupdate(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let c = u(&o.client, "key_updates_initiated");
    let sv = u(&o.server, "key_updates_initiated");
    if c < 1 || sv < 1 {
        return Err(format!(
            "key updates initiated: client {c}, server {sv}; expected at least 1 each"
        ));
    }
    Ok(format!(
        "initiated: client {c}, server {sv}; completed: client {}, server {}",
        u(&o.client, "key_updates"),
        u(&o.server, "key_updates")
    ))
}

fn handshakes(o: &RunOutput) -> Result<String, String> {
    let hs = u(&o.client, "handshakes");
    basic(o).map_err(|e| format!("{hs} of 50 handshakes: {e}"))?;
    if hs != 50 {
        return Err(format!("{hs} of 50 handshakes succeeded"));
    }
    Ok(format!(
        "50 handshakes in {:.1} s",
        u(&o.client, "elapsed_ms") as f64 / 1000.0
    ))
}

pub(super) fn transferloss(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let lost = o.capture.dropped_indices(Direction::S2C).len()
        + o.capture.dropped_indices(Direction::C2S).len();
    Ok(format!("{lost} datagrams dropped"))
}

pub(super) fn transfercorruption(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let corrupted = o
        .capture
        .records
        .iter()
        .filter(|r| matches!(r.action, Action::Corrupted { .. }))
        .count();
    Ok(format!("{corrupted} datagrams corrupted"))
}

pub(super) fn blackhole(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let bh = |d| {
        o.capture
            .count(d, Action::Dropped(crate::capture::DropReason::Blackhole))
    };
    let (c, s) = (bh(Direction::C2S), bh(Direction::S2C));
    if c == 0 || s == 0 {
        return Err(format!(
            "the outages did not hit the transfer ({c} c2s, {s} s2c datagrams black-holed)"
        ));
    }
    Ok(format!("{} datagrams black-holed", c + s))
}

fn amplification(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let (c, s) = amplification_strict(&o.capture);
    if c == 0 || s == 0 {
        return Err(format!("nothing to measure (client {c} B, server {s} B)"));
    }
    if s > 3 * c {
        return Err(format!(
            "server sent {s} bytes before address validation for {c} received (> 3x)"
        ));
    }
    Ok(format!("{s} B sent for {c} B received (limit {})", 3 * c))
}

fn rebind_port(o: &RunOutput) -> Result<String, String> {
    rebind(o, false)
}

fn rebind_addr(o: &RunOutput) -> Result<String, String> {
    rebind(o, true)
}

fn rebind(o: &RunOutput, by_addr: bool) -> Result<String, String> {
    let mut reasons = Vec::new();
    let validated = u(&o.server, "paths_validated");
    let migrations = u(&o.server, "migrations");
    if o.server.is_none() {
        reasons.push("the server gave no report".to_string());
    } else if validated < 1 {
        reasons.push(format!(
            "the server validated no new path (paths_validated 0, migrations {migrations})"
        ));
    }
    let sources = if by_addr {
        o.capture.distinct_client_ips()
    } else {
        o.capture.distinct_client_sources()
    };
    if sources < 2 {
        reasons.push(format!(
            "the capture shows {sources} client source(s); the rebinding did not happen during the transfer"
        ));
    }
    if let Err(e) = basic(o) {
        reasons.push(e);
    }
    if !reasons.is_empty() {
        return Err(reasons.join("; "));
    }
    let last_up = o.capture.records.last().map(|r| r.upstream);
    let to_new = o
        .capture
        .dir(Direction::S2C)
        .filter(|r| Some(r.upstream) == last_up)
        .count();
    Ok(format!(
        "{validated} path(s) validated, {to_new} server datagrams to the new address"
    ))
}

pub(super) fn ipv6(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let n = o.capture.records.len();
    let v4 = o
        .capture
        .records
        .iter()
        .filter(|r| !matches!(r.upstream.ip(), IpAddr::V6(_)))
        .count();
    if n == 0 || v4 > 0 {
        return Err(format!("{v4} of {n} datagrams were not IPv6"));
    }
    Ok(format!("{n} datagrams, all IPv6"))
}

fn keepalive(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let at = |name: &str| o.events.iter().find(|(e, _)| e == name).map(|(_, t)| *t);
    let (Some(start), Some(end)) = (at("idle_start"), at("idle_end")) else {
        return Err("the client did not report its idle window".into());
    };
    let margin = Duration::from_millis(150);
    if end < start + Duration::from_secs(5) + 2 * margin {
        return Err(format!(
            "idle window {:?} is shorter than 5 idle timeouts",
            end - start
        ));
    }
    let window: Vec<_> = o
        .capture
        .records
        .iter()
        .filter(|r| r.t > start + margin && r.t + margin < end)
        .collect();
    let big = window.iter().filter(|r| r.size > 128).count();
    let pings = window.iter().filter(|r| r.dir == Direction::C2S).count();
    if big > 0 {
        return Err(format!(
            "{big} datagram(s) over 128 bytes while the connection was idle"
        ));
    }
    if pings < 5 {
        return Err(format!(
            "only {pings} client datagrams in the idle window; expected keep-alives"
        ));
    }
    let closed = |key: &str| {
        let c = o.client.as_ref()?;
        c.pointer(&format!("/closed/{key}"))
    };
    let kind = closed("kind").and_then(Value::as_str).unwrap_or("none");
    let ms = closed("elapsed_ms")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if kind != "idle_timeout" || ms > 4000 {
        return Err(format!(
            "after the server vanished the client reported {kind} after {ms} ms; \
             expected idle_timeout within 4000 ms"
        ));
    }
    Ok(format!(
        "{pings} keep-alive datagrams in {:.1} s idle; idle timeout after {ms} ms",
        (end - start).as_secs_f64()
    ))
}

/// A wrong password, then the right one.
fn login(r: &CellRun<'_>) -> (Outcome, Value) {
    let right = (r.sc.setup)();
    let wrong = Setup {
        password: Some("not-the-password".into()),
        ..right.clone()
    };
    let first = r.execute(&wrong, 0);
    let second = r.execute(&right, 1);
    let (a, b) = match (first, second) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return (Outcome::Fail(e), Value::Null),
    };
    let m = json!({"wrong": metrics(&a), "right": metrics(&b)});
    let kind = a
        .client
        .as_ref()
        .and_then(|c| c.pointer("/error/kind"))
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_string();
    let mut reasons = Vec::new();
    if kind != "login_refused" || u(&a.client, "files") != 0 {
        reasons.push(format!(
            "wrong password: client reported {kind} with {} files; expected login_refused",
            u(&a.client, "files")
        ));
    }
    if u(&a.server, "logins_refused") != 1 {
        reasons.push(format!(
            "wrong password: server counted {} refused logins, expected 1",
            u(&a.server, "logins_refused")
        ));
    }
    if let Err(e) = basic(&b) {
        reasons.push(format!("right password: {e}"));
    }
    if reasons.is_empty() {
        (Outcome::Pass(String::new()), m)
    } else {
        r.save_capture(&a.capture);
        (Outcome::Fail(reasons.join("; ")), m)
    }
}

/// Five runs; goodput is reported, not judged.
pub(super) fn goodput(r: &CellRun<'_>) -> (Outcome, Value) {
    let setup = (r.sc.setup)();
    let mut rates = Vec::new();
    let mut runs = Vec::new();
    for run in 0..5 {
        let o = match r.execute(&setup, run) {
            Ok(o) => o,
            Err(e) => return (Outcome::Fail(format!("run {}: {e}", run + 1)), Value::Null),
        };
        runs.push(metrics(&o));
        if let Err(e) = basic(&o) {
            r.save_capture(&o.capture);
            return (
                Outcome::Fail(format!("run {}: {e}", run + 1)),
                json!({"runs": runs}),
            );
        }
        let bps = o
            .client
            .as_ref()
            .and_then(|c| c.get("goodput_bps"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        rates.push(bps / 1e6);
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let min = rates.iter().cloned().fold(f64::MAX, f64::min);
    let max = rates.iter().cloned().fold(0.0, f64::max);
    (
        Outcome::Pass(format!(
            "goodput {mean:.2} Mbit/s mean, {min:.2}-{max:.2} over 5 runs"
        )),
        json!({"runs": runs, "goodput_mbps": rates}),
    )
}
