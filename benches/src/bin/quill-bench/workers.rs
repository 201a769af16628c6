//! `quill-bench compare --what workers`: quill's server on several event loops (issue
//! 15), `--server-workers 1,2` by default.
//!
//! The server is `quill-bench server --loops N`: the
//! [`Workers`](quill_transport::driver::Workers) of `quill server
//! --workers N` (one `SO_REUSEPORT` socket per loop, the reuseport BPF program steering
//! datagrams by connection ID, forwarding where a datagram still reaches the wrong
//! loop) with the benchmark handler on every loop. Each loop gets
//! `max(1, cores / N)` worker-pool threads, as `quill server` gives them. Every run
//! starts a fresh server; within each round the loop counts alternate (1 2, 1 2, …)
//! per cell, and the ratios to the first count are taken within each round:
//!
//! - **rate**: `--handshakes` handshakes + public-key logins (`--concurrency` in
//!   flight, one client process) checked against the SQLite account store; server CPU
//!   per handshake from `/proc` around the run.
//! - **bulk**: `--bulk-connections` client processes (one connection each) upload
//!   `--bytes` between them at once; aggregate goodput = all bytes / wall time from the
//!   first spawn to the last result (process starts and handshakes included), CPU from
//!   `wait4`.
//! - **spread**: `--spread-connections` logged-in connections held at once (one client
//!   process, handshakes 256 at a time); the server's live connections per loop while
//!   they are held, and its sessions per loop.
//!
//! Every run reads the server's last line: how many datagrams its loops forwarded to
//! one another (the steering's misses; 0 when the BPF program does its job).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::compare::{Options, Ratio};
use crate::loopback::{self, Server};
use crate::procs::{Proc, Usage};
use crate::stats::Summary;

const GIB: f64 = (1u64 << 30) as f64;
const SHUTDOWN: Duration = Duration::from_secs(15);

/// A server's own account of a run (its last line, [`crate::server_loops::stats_json`]).
pub(crate) struct ServerReport {
    /// Datagrams handed from one loop to another.
    forwarded: u64,
    /// Datagrams a full inbox refused.
    dropped: u64,
    /// Sessions created per loop.
    sessions: Vec<u64>,
    /// `bpf`, `single` or `forwarding (why)`.
    steering: String,
    raw: Value,
}

impl ServerReport {
    fn parse(v: Value) -> ServerReport {
        let per_loop = |key: &str| -> Vec<u64> {
            v["loops"]
                .as_array()
                .map(|a| a.iter().map(|l| l[key].as_u64().unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        ServerReport {
            forwarded: v["forwarded"].as_u64().unwrap_or(0),
            dropped: v["forward_dropped"].as_u64().unwrap_or(0),
            sessions: per_loop("sessions_created"),
            steering: v["steering"].as_str().unwrap_or("?").to_owned(),
            raw: v,
        }
    }
}

/// Worker-pool threads, shared by every loop of the server: one per core (2 to 8),
/// whatever the number of loops, as `quill server` has them.
fn pool_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

fn start(loops: usize, extra: &[String]) -> Result<Server, String> {
    let mut args = vec!["--loops".to_owned(), loops.to_string()];
    args.extend(extra.iter().cloned());
    Server::start_with(pool_threads(), &args)
}

/// Graceful stop: the server's usage and its report.
fn stop(mut s: Server) -> Result<(Usage, ServerReport), String> {
    let usage = s.proc.shut_down(SHUTDOWN)?;
    let line = s.proc.line_starting("{", Duration::from_secs(5))?;
    let v = serde_json::from_str(&line).map_err(|e| format!("server: bad JSON {line}: {e}"))?;
    Ok((usage, ServerReport::parse(v)))
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// `args` with `--no-gso` when `--no-client-gso` asks for it.
fn with_gso(o: &Options, mut args: Vec<String>) -> Vec<String> {
    if o.no_client_gso {
        args.push("--no-gso".into());
    }
    args
}

/// One handshake-rate run.
pub(crate) struct RateRun {
    per_sec: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    p99_ms: f64,
    server: ServerReport,
}

fn rate_once(loops: usize, o: &Options, accounts: &str) -> Result<RateRun, String> {
    let server = start(loops, &args(&["--accounts", accounts]))?;
    let before = server.proc.cpu_now()?;
    let timeout = Duration::from_secs(60 + o.plan.handshakes as u64 / 100);
    let client = args(&[
        "handshakes",
        &server.addr,
        "--count",
        &o.plan.handshakes.to_string(),
        "--concurrency",
        &o.plan.concurrency.to_string(),
        "--login",
        "publickey",
        "--timeout-secs",
        &timeout.as_secs().to_string(),
    ]);
    let client = with_gso(o, client);
    let result = loopback::run_client(client, timeout + Duration::from_secs(5));
    let after = server.proc.cpu_now();
    let stopped = stop(server);
    let (v, client) = result?;
    let (_, report) = stopped?;
    if v["failed"].as_u64().unwrap_or(0) > 0 {
        return Err(format!(
            "{} of {} handshakes failed: {}",
            v["failed"], o.plan.handshakes, v["first_error"]
        ));
    }
    let ok = v["ok"].as_u64().unwrap_or(0).max(1) as f64;
    Ok(RateRun {
        per_sec: v["handshakes_per_sec"].as_f64().unwrap_or(0.0),
        server_cpu_us: (after? - before) / ok * 1e6,
        client_cpu_us: client.cpu_s() / ok * 1e6,
        p99_ms: v["latency_p99_ms"].as_f64().unwrap_or(0.0),
        server: report,
    })
}

/// One run of concurrent uploads.
pub(crate) struct BulkRun {
    gbps: f64,
    wall_s: f64,
    bytes: u64,
    server_cpu_s: f64,
    clients_cpu_s: f64,
    server: ServerReport,
}

fn bulk_once(loops: usize, o: &Options) -> Result<BulkRun, String> {
    let conns = o.bulk_connections.max(1);
    let each = (o.plan.bytes / conns).max(1);
    let server = start(loops, &[])?;
    // Generous: 30 s plus 10 MB/s for all of it.
    let timeout = Duration::from_secs(30 + o.plan.bytes / 10_000_000);
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..conns {
        let a = args(&[
            "client",
            &server.addr,
            "--bytes",
            &each.to_string(),
            "--timeout-secs",
            &timeout.as_secs().to_string(),
        ]);
        clients.push(Proc::spawn(&format!("client {}", i + 1), &a)?);
    }
    let mut clients_cpu_s = 0.0;
    for c in clients.iter_mut() {
        let left = (timeout + Duration::from_secs(5)).saturating_sub(started.elapsed());
        let (v, usage) = c.json_result(left, SHUTDOWN)?;
        if v["bytes"].as_u64().is_some_and(|b| b != each) {
            return Err(format!("a client sent {} bytes, not {each}", v["bytes"]));
        }
        clients_cpu_s += usage.cpu_s();
    }
    let wall_s = started.elapsed().as_secs_f64();
    let (usage, report) = stop(server)?;
    let bytes = each * conns;
    Ok(BulkRun {
        gbps: bytes as f64 * 8.0 / wall_s / 1e9,
        wall_s,
        bytes,
        server_cpu_s: usage.cpu_s(),
        clients_cpu_s,
        server: report,
    })
}

/// One run holding many connections.
pub(crate) struct SpreadRun {
    connected: u64,
    /// Live connections per loop while they were held (as each loop last published
    /// them; empty with one loop, which publishes none).
    live: Vec<u64>,
    connect_s: f64,
    server: ServerReport,
}

fn spread_once(loops: usize, o: &Options) -> Result<SpreadRun, String> {
    let mut server = start(loops, &[])?;
    let n = o.spread_connections;
    let timeout = Duration::from_secs(60 + n as u64 / 100);
    let a = args(&[
        "idle",
        &server.addr,
        "--count",
        &n.to_string(),
        "--concurrency",
        "256",
        "--hold-secs",
        "1",
        "--wait-go",
        "--timeout-secs",
        &timeout.as_secs().to_string(),
    ]);
    let a = with_gso(o, a);
    let started = Instant::now();
    let mut client = Proc::spawn("idle client", &a)?;
    let ready = client.line_starting("ready ", timeout + Duration::from_secs(5))?;
    let connect_s = started.elapsed().as_secs_f64();
    let connected = ready["ready ".len()..].trim().parse::<u64>().unwrap_or(0);
    // Every loop publishes its counters once per turn; let each take one.
    std::thread::sleep(Duration::from_millis(200));
    let stats = server.proc.query("stats", Duration::from_secs(10))?;
    let live = if loops > 1 {
        ServerReport::parse(stats).per_loop_connections()
    } else {
        Vec::new()
    };
    client.send_line("go")?;
    client.json_result(Duration::from_secs(60), SHUTDOWN)?;
    let (_, report) = stop(server)?;
    Ok(SpreadRun {
        connected,
        live,
        connect_s,
        server: report,
    })
}

impl ServerReport {
    fn per_loop_connections(&self) -> Vec<u64> {
        self.raw["loops"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| l["connections"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One loop count's runs, by round (None where a run failed), and the failures.
pub(crate) struct Cell<R> {
    loops: usize,
    runs: Vec<Option<R>>,
    errors: Vec<String>,
}

/// Everything the `workers` measurement found.
pub(crate) struct WorkersResult {
    /// `/proc/loadavg` (1, 5, 15 minutes) before and after.
    load: [[f64; 3]; 2],
    rate: Vec<Cell<RateRun>>,
    bulk: Vec<Cell<BulkRun>>,
    spread: Vec<Cell<SpreadRun>>,
}

/// The load average (1, 5, 15 minutes); zeros if unreadable.
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [0; 3].map(|_| it.next().unwrap_or(0.0))
}

/// Runs `once` for every loop count, alternating within each round.
fn rounds<R>(
    counts: &[usize],
    o: &Options,
    what: &str,
    mut once: impl FnMut(usize) -> Result<R, String>,
    describe: impl Fn(&R) -> String,
) -> Vec<Cell<R>> {
    let mut cells: Vec<Cell<R>> = counts
        .iter()
        .map(|&loops| Cell {
            loops,
            runs: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    for round in 1..=o.plan.rounds {
        for c in cells.iter_mut() {
            match once(c.loops) {
                Ok(r) => {
                    eprintln!(
                        "round {round}: {what} --loops {}: {}",
                        c.loops,
                        describe(&r)
                    );
                    c.runs.push(Some(r));
                }
                Err(e) => {
                    eprintln!("round {round}: {what} --loops {} failed: {e}", c.loops);
                    c.errors.push(format!("round {round}: {e}"));
                    c.runs.push(None);
                }
            }
        }
    }
    cells
}

/// Runs the three cells (rate, bulk, spread; each skipped when its count is 0).
pub(crate) fn run(o: &Options, accounts: &str) -> WorkersResult {
    let counts: Vec<usize> = o.server_workers.iter().map(|&n| n as usize).collect();
    let load0 = load_average();
    let rate = if o.plan.handshakes > 0 {
        rounds(
            &counts,
            o,
            "handshakes",
            |n| rate_once(n, o, accounts),
            |r| {
                format!(
                    "{:.0}/s, server {:.0} µs/handshake, forwarded {}",
                    r.per_sec, r.server_cpu_us, r.server.forwarded
                )
            },
        )
    } else {
        Vec::new()
    };
    let bulk = if o.plan.bytes > 0 {
        rounds(
            &counts,
            o,
            "bulk",
            |n| bulk_once(n, o),
            |r| {
                format!(
                    "{:.2} Gbit/s, CPU-s server {:.2} clients {:.2}, forwarded {}",
                    r.gbps, r.server_cpu_s, r.clients_cpu_s, r.server.forwarded
                )
            },
        )
    } else {
        Vec::new()
    };
    let spread = if o.spread_connections > 0 {
        rounds(
            &counts,
            o,
            "spread",
            |n| spread_once(n, o),
            |r| {
                format!(
                    "{} connected in {:.1} s, live per loop {:?}, sessions per loop {:?}, forwarded {}",
                    r.connected, r.connect_s, r.live, r.server.sessions, r.server.forwarded
                )
            },
        )
    } else {
        Vec::new()
    };
    WorkersResult {
        load: [load0, load_average()],
        rate,
        bulk,
        spread,
    }
}

fn summary<R>(c: &Cell<R>, f: impl Fn(&R) -> f64) -> Summary {
    Summary::of(&c.runs.iter().flatten().map(f).collect::<Vec<_>>())
}

/// The ratio of `f` between each cell and the first, within each round.
fn ratios<R>(cells: &[Cell<R>], f: impl Fn(&R) -> f64 + Copy) -> Vec<(usize, Ratio)> {
    let Some(base) = cells.first() else {
        return Vec::new();
    };
    cells
        .iter()
        .skip(1)
        .map(|c| {
            let r = Ratio::within_rounds("", "", &c.runs, &base.runs, f);
            (c.loops, r)
        })
        .collect()
}

fn ratios_json<R>(base: &[Cell<R>], f: impl Fn(&R) -> f64 + Copy) -> Value {
    let first = base.first().map_or(0, |c| c.loops);
    ratios(base, f)
        .iter()
        .map(|(n, r)| {
            let s = r.summary();
            json!({
                "numerator_loops": n,
                "denominator_loops": first,
                "per_round": r.per_round,
                "median": (r.count() > 0).then_some(s.median),
                "min": (r.count() > 0).then_some(s.min),
                "max": (r.count() > 0).then_some(s.max),
            })
        })
        .collect()
}

fn forwarded<R: HasServer>(c: &Cell<R>) -> Vec<Option<u64>> {
    c.runs
        .iter()
        .map(|r| r.as_ref().map(|r| r.server().forwarded))
        .collect()
}

/// A cell's JSON: `fields` (its summaries) with its `loops`, `errors`, the datagrams
/// its servers forwarded (`forwarded_per_round`) and every run as `run` words it, with
/// the server's report as `server` (`null` where the run failed).
fn cell_json<R: HasServer>(c: &Cell<R>, mut fields: Value, run: impl Fn(&R) -> Value) -> Value {
    fields["loops"] = c.loops.into();
    fields["errors"] = json!(c.errors);
    fields["forwarded_per_round"] = json!(forwarded(c));
    fields["runs"] = c
        .runs
        .iter()
        .map(|r| {
            r.as_ref().map(|r| {
                let mut v = run(r);
                v["server"] = r.server().raw.clone();
                v
            })
        })
        .collect::<Vec<_>>()
        .into();
    fields
}

/// A run that reports its server's counters.
trait HasServer {
    fn server(&self) -> &ServerReport;
}

impl HasServer for RateRun {
    fn server(&self) -> &ServerReport {
        &self.server
    }
}

impl HasServer for BulkRun {
    fn server(&self) -> &ServerReport {
        &self.server
    }
}

impl HasServer for SpreadRun {
    fn server(&self) -> &ServerReport {
        &self.server
    }
}

/// The `workers` object of `compare --json`.
pub(crate) fn json(o: &Options, w: &WorkersResult) -> Value {
    let gib = |r: &BulkRun| r.bytes as f64 / GIB;
    json!({
        "rounds": o.plan.rounds,
        "server_workers": o.server_workers,
        "client_gso": !o.no_client_gso,
        "load_average_before": w.load[0],
        "load_average_after": w.load[1],
        "rate": {
            "connections": o.plan.handshakes,
            "concurrency": o.plan.concurrency,
            "login": "publickey",
            "cells": w.rate.iter().map(|c| cell_json(c, json!({
                "pool_threads": pool_threads(),
                "handshakes_per_sec": summary(c, |r| r.per_sec).json(),
                "server_cpu_us_per_handshake": summary(c, |r| r.server_cpu_us).json(),
                "client_cpu_us_per_handshake": summary(c, |r| r.client_cpu_us).json(),
                "latency_p99_ms": summary(c, |r| r.p99_ms).json(),
            }), |r| json!({
                "handshakes_per_sec": r.per_sec,
                "server_cpu_us_per_handshake": r.server_cpu_us, "client_cpu_us_per_handshake": r.client_cpu_us,
            }))).collect::<Vec<_>>(),
            "ratios": ratios_json(&w.rate, |r| r.per_sec),
        },
        "bulk": {
            "connections": o.bulk_connections,
            "bytes_per_run": o.plan.bytes,
            "cells": w.bulk.iter().map(|c| cell_json(c, json!({
                "goodput_gbps": summary(c, |r| r.gbps).json(),
                "server_cpu_s_per_gib": summary(c, |r| r.server_cpu_s / gib(r)).json(),
                "clients_cpu_s_per_gib": summary(c, |r| r.clients_cpu_s / gib(r)).json(),
            }), |r| json!({
                "goodput_gbps": r.gbps,
                "wall_s": r.wall_s,
                "bytes": r.bytes,
                "server_cpu_s": r.server_cpu_s,
                "clients_cpu_s": r.clients_cpu_s,
            }))).collect::<Vec<_>>(),
            "ratios": ratios_json(&w.bulk, |r| r.gbps),
        },
        "spread": {
            "connections": o.spread_connections,
            "cells": w.spread.iter().map(|c| cell_json(c, json!({}), |r| json!({
                "connected": r.connected,
                "connect_s": r.connect_s,
                "live_connections_per_loop": r.live,
                "sessions_per_loop": r.server.sessions,
                "forwarded": r.server.forwarded,
                "forward_dropped": r.server.dropped,
                "steering": r.server.steering,
            }))).collect::<Vec<_>>(),
        },
    })
}

/// Forwarded datagrams per round, `a / b / c` (`–` where the run failed).
fn show_forwarded<R: HasServer>(c: &Cell<R>) -> String {
    let v: Vec<String> = forwarded(c)
        .iter()
        .map(|f| f.map_or("–".to_owned(), |f| f.to_string()))
        .collect();
    v.join(" / ")
}

/// The steering of a cell's first run (`bpf`, `single`, `forwarding (why)`).
fn steering<R: HasServer>(c: &Cell<R>) -> String {
    c.runs
        .iter()
        .flatten()
        .next()
        .map_or("–".to_owned(), |r| r.server().steering.clone())
}

fn errors<R>(c: &Cell<R>) -> String {
    if c.errors.is_empty() {
        String::new()
    } else {
        format!(" (failed: {})", c.errors.join("; "))
    }
}

/// Prints the Markdown tables.
pub(crate) fn table(o: &Options, w: &WorkersResult) {
    let l = |a: [f64; 3]| format!("{:.2} {:.2} {:.2}", a[0], a[1], a[2]);
    println!(
        "\nquill's server on several event loops (`quill-bench server --loops N`), {} rounds, loop counts alternating, client GSO {}; median [min–max]; load average before {}, after {}",
        o.plan.rounds,
        if o.no_client_gso { "off" } else { "on" },
        l(w.load[0]),
        l(w.load[1])
    );
    if !w.rate.is_empty() {
        println!(
            "\nHandshakes + public-key logins: {} connections, {} in flight, one client process\n",
            o.plan.handshakes, o.plan.concurrency
        );
        println!("| loops | steering | handshakes/s | server CPU µs/handshake | client CPU µs/handshake | p99 ms | forwarded per round |");
        println!("|---|---|---|---|---|---|---|");
        for c in &w.rate {
            println!(
                "| {}{} | {} | {} | {} | {} | {} | {} |",
                c.loops,
                errors(c),
                steering(c),
                summary(c, |r| r.per_sec).show(0),
                summary(c, |r| r.server_cpu_us).show(0),
                summary(c, |r| r.client_cpu_us).show(0),
                summary(c, |r| r.p99_ms).show(1),
                show_forwarded(c)
            );
        }
        print_ratios("handshakes/s", &w.rate, |r| r.per_sec);
    }
    if !w.bulk.is_empty() {
        println!(
            "\nAggregate goodput: {} connections (one client process each) uploading {} MiB between them\n",
            o.bulk_connections,
            o.plan.bytes >> 20
        );
        println!("| loops | goodput Gbit/s | server CPU-s/GiB | clients CPU-s/GiB | forwarded per round |");
        println!("|---|---|---|---|---|");
        for c in &w.bulk {
            let gib = |r: &BulkRun| r.bytes as f64 / GIB;
            println!(
                "| {}{} | {} | {} | {} | {} |",
                c.loops,
                errors(c),
                summary(c, |r| r.gbps).show(2),
                summary(c, |r| r.server_cpu_s / gib(r)).show(2),
                summary(c, |r| r.clients_cpu_s / gib(r)).show(2),
                show_forwarded(c)
            );
        }
        print_ratios("goodput", &w.bulk, |r| r.gbps);
    }
    if !w.spread.is_empty() {
        println!(
            "\nSpread: {} connections held at once (one client process, 256 handshakes in flight)\n",
            o.spread_connections
        );
        println!("| loops | round | connected | connect s | live connections per loop | sessions per loop | forwarded |");
        println!("|---|---|---|---|---|---|---|");
        for c in &w.spread {
            for (i, r) in c.runs.iter().enumerate() {
                match r {
                    Some(r) => println!(
                        "| {} | {} | {} | {:.1} | {} | {} | {} |",
                        c.loops,
                        i + 1,
                        r.connected,
                        r.connect_s,
                        join(&r.live),
                        join(&r.server.sessions),
                        r.server.forwarded
                    ),
                    None => println!("| {} | {} | failed | | | | |", c.loops, i + 1),
                }
            }
        }
        if w.spread.iter().any(|c| !c.errors.is_empty()) {
            for c in &w.spread {
                for e in &c.errors {
                    println!("\n{} loops: {e}", c.loops);
                }
            }
        }
    }
}

/// `WHAT, N loops / M within each round: median [min–max]` for every loop count but
/// the first (M).
fn print_ratios<R>(what: &str, cells: &[Cell<R>], f: impl Fn(&R) -> f64 + Copy) {
    for (n, r) in ratios(cells, f) {
        if r.count() > 0 {
            println!(
                "\n{what}, {n} loops / {} within each round: {}",
                cells[0].loops,
                r.summary().show(2)
            );
        }
    }
}

fn join(v: &[u64]) -> String {
    if v.is_empty() {
        return "–".to_owned();
    }
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_reports_parse_and_tolerate_missing_fields() {
        let v = json!({
            "steering": "bpf",
            "forwarded": 3,
            "forward_dropped": 0,
            "loops": [
                { "sessions_created": 4990, "connections": 4990 },
                { "sessions_created": 5010, "connections": 5009 },
            ],
        });
        let r = ServerReport::parse(v);
        assert_eq!((r.forwarded, r.dropped), (3, 0));
        assert_eq!(r.sessions, [4990, 5010]);
        assert_eq!(r.per_loop_connections(), [4990, 5009]);
        assert_eq!(r.steering, "bpf");
        let r = ServerReport::parse(json!({}));
        assert_eq!(
            (r.forwarded, r.sessions.len(), r.steering.as_str()),
            (0, 0, "?")
        );
    }

    #[test]
    fn the_shared_pool_has_one_thread_per_core_within_bounds() {
        assert!((2..=8).contains(&pool_threads()));
    }
}
