//! `quill-bench loopback`: the orchestrator. Every measurement runs the server and the
//! client subcommands as separate processes of this executable on 127.0.0.1; CPU time
//! and peak RSS come from `wait4`, the idle server's RSS from `/proc/PID/status`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::SuiteArg;
use crate::procs::{self, Proc, Usage};
use crate::stats::Summary;

const GIB: f64 = (1u64 << 30) as f64;
const STARTUP: Duration = Duration::from_secs(10);
const SHUTDOWN: Duration = Duration::from_secs(15);

/// What to measure (the options of `quill-bench loopback`, and of `compare` for its
/// quill runs).
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// Bytes per bulk run (client → server).
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Rounds; each runs every configuration once, in a fixed order (`loopback`:
    /// AES-256-GCM then AES-128-GCM).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Connections per handshake-rate run (0 skips).
    #[arg(long, default_value_t = 5000)]
    pub handshakes: usize,
    /// Handshakes in flight in the rate runs.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Idle connections to measure memory with (0 skips).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// quill server worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub(crate) struct Server {
    pub(crate) proc: Proc,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(workers: usize) -> Result<Server, String> {
        Server::start_with(workers, &[])
    }

    /// [`Server::start`] with extra arguments (e.g. `--accounts PATH`).
    pub(crate) fn start_with(workers: usize, extra: &[String]) -> Result<Server, String> {
        let args = [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            &workers.to_string(),
        ]
        .map(String::from);
        let args: Vec<String> = args.into_iter().chain(extra.iter().cloned()).collect();
        let proc = Proc::spawn("server", &args)?;
        let addr = proc.listening_addr(STARTUP)?;
        Ok(Server { proc, addr })
    }

    /// Graceful stop (stdin closed) and the server's whole-life usage.
    pub(crate) fn stop(mut self) -> Result<Usage, String> {
        self.proc.shut_down(SHUTDOWN)
    }
}

/// The arguments of a client process: `COMMAND ADDR [NAME VALUE]... --timeout-secs T`.
fn client_args(
    command: &str,
    addr: &str,
    options: &[(&str, String)],
    timeout: Duration,
) -> Vec<String> {
    let mut args = vec![command.to_owned(), addr.to_owned()];
    for (name, value) in options {
        args.extend([(*name).to_owned(), value.clone()]);
    }
    args.extend(["--timeout-secs".to_owned(), timeout.as_secs().to_string()]);
    args
}

pub(crate) fn run_client(args: Vec<String>, timeout: Duration) -> Result<(Value, Usage), String> {
    Proc::spawn(&args[0].clone(), &args)?.json_result(timeout, SHUTDOWN)
}

pub(crate) struct BulkRun {
    pub(crate) gbps: f64,
    pub(crate) handshake_ms: f64,
    pub(crate) server: Usage,
    pub(crate) client: Usage,
    pub(crate) raw: Value,
}

/// One bulk run of `quill-bench client` (with `flags`, e.g. `--quic-v1`) against a
/// fresh `quill-bench server`.
pub(crate) fn bulk_run(plan: &Plan, suite: SuiteArg, flags: &[&str]) -> Result<BulkRun, String> {
    let server = Server::start(plan.workers)?;
    // Generous: 30 s plus 10 MB/s.
    let timeout = Duration::from_secs(30 + plan.bytes / 10_000_000);
    let options = [
        ("--bytes", plan.bytes.to_string()),
        ("--suite", suite.name().into()),
    ];
    let mut args = client_args("client", &server.addr, &options, timeout);
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    let (v, client) = run_client(args, timeout + Duration::from_secs(5))?;
    let server = server.stop()?;
    let gbps = v["goodput_bps"].as_f64().unwrap_or(0.0) / 1e9;
    let handshake_ms = v["handshake_ms"].as_f64().unwrap_or(0.0);
    Ok(BulkRun {
        gbps,
        handshake_ms,
        server,
        client,
        raw: v,
    })
}

struct BulkSummary {
    suite: SuiteArg,
    gbps: Summary,
    server_cpu: Summary,
    client_cpu: Summary,
    total_cpu: Summary,
    server_rss_mib: Summary,
    client_rss_mib: Summary,
    handshake_ms: Summary,
    runs: Vec<Value>,
}

fn summarise(plan: &Plan, suite: SuiteArg, runs: &[BulkRun]) -> BulkSummary {
    let gib = plan.bytes as f64 / GIB;
    let s = |f: &dyn Fn(&BulkRun) -> f64| Summary::of(&runs.iter().map(f).collect::<Vec<_>>());
    BulkSummary {
        suite,
        gbps: s(&|r| r.gbps),
        server_cpu: s(&|r| r.server.cpu_s() / gib),
        client_cpu: s(&|r| r.client.cpu_s() / gib),
        total_cpu: s(&|r| (r.server.cpu_s() + r.client.cpu_s()) / gib),
        server_rss_mib: s(&|r| r.server.max_rss_kib as f64 / 1024.0),
        client_rss_mib: s(&|r| r.client.max_rss_kib as f64 / 1024.0),
        handshake_ms: s(&|r| r.handshake_ms),
        runs: runs
            .iter()
            .map(|r| {
                let run = json!({
                    "client": r.raw,
                    "server_max_rss_kib": r.server.max_rss_kib,
                    "client_max_rss_kib": r.client.max_rss_kib,
                });
                procs::with_cpu(run, &r.server, &r.client)
            })
            .collect(),
    }
}

struct HandshakeResult {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    raw: Value,
}

fn handshake_run(plan: &Plan) -> Result<HandshakeResult, String> {
    let server = Server::start(plan.workers)?;
    let before = server.proc.cpu_now()?;
    let timeout = Duration::from_secs(60 + plan.handshakes as u64 / 100);
    let options = [
        ("--count", plan.handshakes.to_string()),
        ("--concurrency", plan.concurrency.to_string()),
    ];
    let args = client_args("handshakes", &server.addr, &options, timeout);
    let (v, client) = run_client(args, timeout + Duration::from_secs(5))?;
    let after = server.proc.cpu_now()?;
    server.stop()?;
    let ok = v["ok"].as_u64().unwrap_or(0).max(1) as f64;
    Ok(HandshakeResult {
        per_sec: v["handshakes_per_sec"].as_f64().unwrap_or(0.0),
        p50_ms: v["latency_p50_ms"].as_f64().unwrap_or(0.0),
        p99_ms: v["latency_p99_ms"].as_f64().unwrap_or(0.0),
        server_cpu_us: (after - before) / ok * 1e6,
        client_cpu_us: client.cpu_s() / ok * 1e6,
        raw: v,
    })
}

pub(crate) struct IdleResult {
    pub(crate) rss0_kib: u64,
    pub(crate) rss_n_kib: u64,
    pub(crate) per_conn_bytes: f64,
    pub(crate) client_per_conn_bytes: f64,
    pub(crate) raw: Value,
}

impl IdleResult {
    /// The cells of a Markdown row: server RSS at 0 and at N connections, then bytes
    /// per connection on the server and (peak) on the client.
    pub(crate) fn cells(&self) -> String {
        format!(
            "{:.1} MiB | {:.1} MiB | {:.0} | {:.0}",
            self.rss0_kib as f64 / 1024.0,
            self.rss_n_kib as f64 / 1024.0,
            self.per_conn_bytes,
            self.client_per_conn_bytes
        )
    }
}

pub(crate) fn idle_run(plan: &Plan) -> Result<IdleResult, String> {
    let server = Server::start(plan.workers)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = server.proc.status_kib("VmRSS")?;
    let timeout = Duration::from_secs(60 + plan.idle as u64 / 100);
    let hold = 5;
    let options = [
        ("--count", plan.idle.to_string()),
        ("--hold-secs", hold.to_string()),
    ];
    let args = client_args("idle", &server.addr, &options, timeout);
    let mut client = Proc::spawn("idle", &args)?;
    client.line_starting("ready ", timeout + Duration::from_secs(5))?;
    // All logged in: let the server settle (pending ACKs, freed handshake state),
    // then sample while the connections are held.
    std::thread::sleep(Duration::from_secs(2));
    let rss_n = server.proc.status_kib("VmRSS")?;
    let line = client.line_starting("{", Duration::from_secs(hold + 30))?;
    let client_usage = client.wait(SHUTDOWN)?;
    server.stop()?;
    let v: Value =
        serde_json::from_str(&line).map_err(|e| format!("idle: bad JSON {line}: {e}"))?;
    let n = plan.idle.max(1) as f64;
    Ok(IdleResult {
        rss0_kib: rss0,
        rss_n_kib: rss_n,
        per_conn_bytes: (rss_n.saturating_sub(rss0) * 1024) as f64 / n,
        client_per_conn_bytes: (client_usage.max_rss_kib * 1024) as f64 / n,
        raw: v,
    })
}

/// Runs the plan and prints the report.
pub fn run(plan: &Plan) -> Result<(), String> {
    let suites = [SuiteArg::Aes256gcm, SuiteArg::Aes128gcm];
    let mut runs: Vec<Vec<BulkRun>> = suites.iter().map(|_| Vec::new()).collect();
    for round in 0..plan.rounds {
        for (i, &suite) in suites.iter().enumerate() {
            let r = bulk_run(plan, suite, &[])?;
            eprintln!(
                "round {}: {} {:.2} Gbit/s, CPU-s server {:.2} client {:.2}",
                round + 1,
                suite.name(),
                r.gbps,
                r.server.cpu_s(),
                r.client.cpu_s()
            );
            runs[i].push(r);
        }
    }
    let bulk: Vec<BulkSummary> = suites
        .iter()
        .zip(&runs)
        .filter(|(_, r)| !r.is_empty())
        .map(|(&s, r)| summarise(plan, s, r))
        .collect();
    let hs = if plan.handshakes > 0 {
        let r = handshake_run(plan)?;
        eprintln!("handshakes: {:.0}/s", r.per_sec);
        Some(r)
    } else {
        None
    };
    let idle = if plan.idle > 0 {
        let r = idle_run(plan)?;
        eprintln!("idle: {:.0} B per connection", r.per_conn_bytes);
        Some(r)
    } else {
        None
    };
    if plan.json {
        let out = json!({
            "bytes_per_run": plan.bytes,
            "rounds": plan.rounds,
            "bulk": bulk.iter().map(|b| json!({
                "suite": b.suite.name(),
                "goodput_gbps": b.gbps.json(),
                "server_cpu_s_per_gib": b.server_cpu.json(),
                "client_cpu_s_per_gib": b.client_cpu.json(),
                "total_cpu_s_per_gib": b.total_cpu.json(),
                "server_peak_rss_mib": b.server_rss_mib.json(),
                "client_peak_rss_mib": b.client_rss_mib.json(),
                "handshake_ms": b.handshake_ms.json(),
                "runs": b.runs,
            })).collect::<Vec<_>>(),
            "handshakes": hs.as_ref().map(|h| json!({
                "per_sec": h.per_sec,
                "latency_p50_ms": h.p50_ms,
                "latency_p99_ms": h.p99_ms,
                "server_cpu_us_per_handshake": h.server_cpu_us,
                "client_cpu_us_per_handshake": h.client_cpu_us,
                "client": h.raw,
            })),
            "idle": idle.as_ref().map(|i| json!({
                "connections": plan.idle,
                "server_rss_kib_0": i.rss0_kib,
                "server_rss_kib_n": i.rss_n_kib,
                "server_bytes_per_connection": i.per_conn_bytes,
                "client_peak_bytes_per_connection": i.client_per_conn_bytes,
                "client": i.raw,
            })),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "Bulk: one connection, one stream, {} MiB per run, {} rounds (A B A B ...); median [min–max]",
        plan.bytes >> 20,
        plan.rounds
    );
    println!(
        "| suite | Gbit/s | server CPU-s/GiB | client CPU-s/GiB | total CPU-s/GiB | server peak RSS MiB | client peak RSS MiB | handshake ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for b in &bulk {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            b.suite.name(),
            b.gbps.show(2),
            b.server_cpu.show(2),
            b.client_cpu.show(2),
            b.total_cpu.show(2),
            b.server_rss_mib.show(1),
            b.client_rss_mib.show(1),
            b.handshake_ms.show(2)
        );
    }
    if let Some(h) = &hs {
        println!();
        println!(
            "Handshakes + logins: {} connections, {} in flight, one server loop",
            plan.handshakes, plan.concurrency
        );
        println!("| handshakes/s | latency p50 ms | latency p99 ms | server CPU µs/handshake | client CPU µs/handshake | failed |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            h.per_sec, h.p50_ms, h.p99_ms, h.server_cpu_us, h.client_cpu_us, h.raw["failed"]
        );
    }
    if let Some(i) = &idle {
        println!();
        println!(
            "Idle connections: {} logged in, keep-alive 5 s, idle timeout 30 s",
            plan.idle
        );
        println!("| server RSS, 0 conns | server RSS, N conns | server bytes/connection | client peak bytes/connection | lost |");
        println!("|---|---|---|---|---|");
        println!("| {} | {} |", i.cells(), i.raw["lost_after_login"]);
    }
    Ok(())
}
