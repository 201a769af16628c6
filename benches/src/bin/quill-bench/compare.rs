//! `quill-bench compare`: quill side by side with quinn, quiche, TCP and TCP + TLS.
//!
//! Every measurement runs servers and clients as separate processes on 127.0.0.1:
//! quill's are this executable's `server` / `client` / `handshakes` / `idle`
//! subcommands, TCP's are `tcp-server` / `tcp-client`, and quinn's and quiche's are the
//! `quinn-peer` / `quiche-peer` executables of package quill-interop, found next to this
//! executable or in `$QUILL_BENCH_PEER_DIR` (their interface: the `refpeers` module of
//! the interop crate). A
//! stack whose executable is missing or that fails is reported as unavailable, with the
//! reason, and the others still run.
//!
//! - **bulk**: one connection, an upload of `--bytes` (client → server), a fresh server
//!   per run. CPU seconds and peak RSS come from `wait4` (whole process lives). The
//!   configurations alternate within each round (A B C …, A B C …) and the ratios
//!   (quill / other) are computed *within each round* and then summarised, because the
//!   machine is shared: the ratios are the result, absolute numbers are context.
//! - **latency**: a fresh client process to the first byte of the answer, measured by
//!   the client from its own start: quill with the PQ hybrid handshake and a public-key
//!   login (checked against a SQLite account store), quinn and quiche with TLS 1.3.
//! - **rate**: handshakes per second against one server loop (quill: handshake +
//!   public-key login; quinn/quiche: handshake + one tiny stream).
//! - **idle**: server memory per idle connection at `--idle` connections, quill, quinn
//!   and quiche (the reference peers' clients in idle mode, `--hold-secs`; see [`idle`]).
//! - **sessions**: `--sessions` idle sessions with keep-alives (from both sides) on one
//!   quill server loop, held by several client processes; server RSS and CPU, the server
//!   loop's own timer lateness, and the keep-alives' lateness as the clients observe it
//!   (see [`sessions`]). `--sessions-sizes 1000,10000,100000` runs it once per size (a
//!   fresh server each): the cost curve.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::SuiteArg;
use crate::loopback;
use crate::procs::{self, Proc, Usage};
use crate::stats::{quantile, Summary};

#[path = "idle.rs"]
mod idle;

const GIB: f64 = (1u64 << 30) as f64;
const STARTUP: Duration = Duration::from_secs(20);
const SHUTDOWN: Duration = Duration::from_secs(15);

/// The bulk-transfer configurations (and, for `--stacks`, two shorthands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Stack {
    /// Every configuration below.
    All,
    /// The three quill configurations.
    Quill,
    /// quill, AES-256-GCM only.
    QuillAes256,
    /// quill, AES-128-GCM only.
    QuillAes128,
    /// quill over QUIC v1 (TLS 1.3 through rustls, ALPN quill, the same login and
    /// services), AES-256-GCM only.
    QuillV1,
    /// quinn (`quinn-peer`, rustls + ring).
    Quinn,
    /// quiche (`quiche-peer`, mio loop with GSO and GRO).
    Quiche,
    /// Cross-stack over QUIC v1: quill-bench's client → quiche-peer's server (ALPN
    /// quill-bench, the reference peers' stream protocol).
    QuillToQuiche,
    /// Cross-stack over QUIC v1: quinn-peer's client → quill-bench's server.
    QuinnToQuill,
    /// Plain TCP (the ceiling without encryption).
    Tcp,
    /// TCP + rustls TLS 1.3, AES-256-GCM.
    TcpTls,
}

/// The configurations in the order they run within a round.
const ORDER: [Stack; 9] = [
    Stack::QuillAes256,
    Stack::QuillAes128,
    Stack::QuillV1,
    Stack::Quinn,
    Stack::Quiche,
    Stack::QuillToQuiche,
    Stack::QuinnToQuill,
    Stack::Tcp,
    Stack::TcpTls,
];

impl Stack {
    /// The configuration's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stack::All => "all",
            Stack::Quill => "quill",
            Stack::QuillAes256 => "quill-aes256",
            Stack::QuillAes128 => "quill-aes128",
            Stack::QuillV1 => "quill-v1",
            Stack::Quinn => "quinn",
            Stack::Quiche => "quiche",
            Stack::QuillToQuiche => "quill-to-quiche",
            Stack::QuinnToQuill => "quinn-to-quill",
            Stack::Tcp => "tcp",
            Stack::TcpTls => "tcp-tls",
        }
    }

    fn covers(self, s: Stack) -> bool {
        self == s
            || self == Stack::All
            || (self == Stack::Quill
                && matches!(s, Stack::QuillAes256 | Stack::QuillAes128 | Stack::QuillV1))
    }

    /// The reference peer a configuration needs (as server or client).
    fn peer_exe_name(self) -> Option<&'static str> {
        match self {
            Stack::Quinn | Stack::QuinnToQuill => Some("quinn-peer"),
            Stack::Quiche | Stack::QuillToQuiche => Some("quiche-peer"),
            _ => None,
        }
    }

    /// quill-bench's own client and server, over either version.
    fn is_quill(self) -> bool {
        matches!(
            self,
            Stack::QuillAes256 | Stack::QuillAes128 | Stack::QuillV1
        )
    }

    /// A reference stack on both sides.
    fn is_reference(self) -> bool {
        matches!(self, Stack::Quinn | Stack::Quiche)
    }

    /// quill-bench client flags of a quill configuration.
    fn quill_flags(self) -> &'static [&'static str] {
        if self == Stack::QuillV1 {
            &["--quic-v1"]
        } else {
            &[]
        }
    }
}

/// Expands `--stacks` into configurations in [`ORDER`].
pub fn expand(stacks: &[Stack]) -> Vec<Stack> {
    ORDER
        .into_iter()
        .filter(|s| stacks.iter().any(|x| x.covers(*s)))
        .collect()
}

/// The measurements `compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// All of them.
    All,
    /// Bulk transfer: goodput, CPU-s/GiB, peak RSS, ratios per round.
    Bulk,
    /// Fresh client process to first byte.
    Latency,
    /// Handshakes per second against one server loop.
    Rate,
    /// Server memory per idle connection.
    Idle,
    /// Many idle sessions with keep-alives on one server loop.
    Sessions,
    /// quill's server on 1 and 2 event loops (`--server-workers`): handshakes, the
    /// goodput of 8 connections, datagrams forwarded between loops, the spread.
    Workers,
}

/// Everything `compare` takes from the command line: `loopback`'s plan (the quill
/// measurements both run the same way), and which stacks and measurements.
#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub plan: loopback::Plan,
    /// Configurations, comma-separated: all, quill (= quill-aes256,quill-aes128),
    /// quill-aes256, quill-aes128, quinn, quiche, tcp, tcp-tls.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub stacks: Vec<Stack>,
    /// Measurements, comma-separated: all, bulk, latency, rate, idle, sessions, workers.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub what: Vec<What>,
    /// Fresh client processes per stack for the latency measurement.
    #[arg(long, default_value_t = 10)]
    pub latency_samples: usize,
    /// Idle sessions with keep-alives on one server loop.
    #[arg(long, default_value_t = 100_000)]
    pub sessions: usize,
    /// Run the sessions measurement once per size instead (comma-separated, e.g.
    /// 1000,10000,100000; a fresh server each): the cost curve in the JSON's
    /// `sessions_curve`, and `sessions` is the last size's.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub sessions_sizes: Vec<u64>,
    /// Client processes that hold the sessions.
    #[arg(long, default_value_t = 4)]
    pub session_clients: usize,
    /// Seconds the sessions are held and measured.
    #[arg(long, default_value_t = 20)]
    pub hold_secs: u64,
    /// Keep-alive interval of the sessions (clients and server both send them), in
    /// milliseconds (below 15000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..15_000))]
    pub keep_alive_ms: u64,
    /// Event-loop counts of quill's server that `--what workers` compares,
    /// comma-separated (`quill-bench server --loops N`: the `Workers` of `quill server
    /// --workers N`); the first is the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub server_workers: Vec<u64>,
    /// Concurrent connections (one client process each) sharing `--bytes` in the
    /// `workers` goodput cell.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub bulk_connections: u64,
    /// Connections held at once in the `workers` spread cell (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub spread_connections: usize,
    /// The `workers` cell's handshake and spread clients send without UDP GSO (a GSO
    /// batch of several connections' datagrams is steered as a whole by its first).
    #[arg(long)]
    pub no_client_gso: bool,
}

impl Options {
    fn wants(&self, w: What) -> bool {
        self.what.iter().any(|x| *x == w || *x == What::All)
    }

    /// The sizes the sessions measurement runs at: `--sessions-sizes`, else `--sessions`.
    fn session_sizes(&self) -> Vec<usize> {
        if self.sessions_sizes.is_empty() {
            vec![self.sessions]
        } else {
            self.sessions_sizes.iter().map(|&n| n as usize).collect()
        }
    }
}

/// Scratch directory for certificates and the account database; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("quill-bench-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn certs(&self) -> PathBuf {
        self.0.join("certs")
    }

    fn ca(&self) -> String {
        self.certs().join("cert.pem").display().to_string()
    }

    fn accounts(&self) -> String {
        self.0.join("accounts.db").display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Environment variable naming another directory to find quinn-peer / quiche-peer in
/// (default: this executable's own directory).
pub const PEER_DIR_ENV: &str = "QUILL_BENCH_PEER_DIR";

/// Where quinn-peer / quiche-peer should be, and whether they are there.
fn peer_exe(stack: Stack) -> Result<Option<PathBuf>, String> {
    let Some(name) = stack.peer_exe_name() else {
        return Ok(None);
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = match std::env::var_os(PEER_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => exe.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(Some(path))
    } else {
        Err(format!(
            "{name} not found in {}: run `cargo build --release -p quill-interop --bins`",
            dir.display()
        ))
    }
}

/// Raises the soft limit on open files to the hard limit (the TCP and peer clients
/// may open many sockets; quill's use one per loop). Returns (soft, hard) after.
fn raise_nofile() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return (0, 0);
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl = want;
            }
        }
        (rl.rlim_cur as u64, rl.rlim_max as u64)
    }
}

// ---------------------------------------------------------------------------------
// Processes

/// A running server of some stack.
struct Srv {
    proc: Proc,
    addr: String,
}

impl Srv {
    /// Starts `stack`'s server on 127.0.0.1:0. `accounts`: quill checks logins against
    /// the SQLite store (needed for public-key logins).
    fn start(stack: Stack, o: &Options, dir: &Scratch, accounts: bool) -> Result<Srv, String> {
        let certs = dir.certs().display().to_string();
        let listen = "127.0.0.1:0";
        let proc = match stack {
            Stack::QuillAes256
            | Stack::QuillAes128
            | Stack::QuillV1
            | Stack::QuinnToQuill
            | Stack::Quill
            | Stack::All => {
                let mut args = vec![
                    "server".to_owned(),
                    "--listen".into(),
                    listen.into(),
                    "--workers".into(),
                    o.plan.workers.to_string(),
                ];
                if accounts {
                    args.extend(["--accounts".to_owned(), dir.accounts()]);
                }
                if stack == Stack::QuinnToQuill {
                    // quinn-peer's client checks the certificate against `--ca`.
                    args.extend(["--cert-dir".to_owned(), certs.clone()]);
                }
                Proc::spawn("quill server", &args)?
            }
            Stack::Quinn | Stack::Quiche | Stack::QuillToQuiche => {
                let exe = peer_exe(stack)?.expect("a peer");
                let args = ["server", "--listen", listen, "--cert-dir", &certs].map(String::from);
                Proc::spawn_exe(&format!("{} server", stack.name()), &exe, &args)?
            }
            Stack::Tcp => Proc::spawn(
                "tcp-server",
                &["tcp-server", "--listen", listen].map(String::from),
            )?,
            Stack::TcpTls => Proc::spawn(
                "tcp-server --tls",
                &["tcp-server", "--listen", listen, "--cert-dir", &certs].map(String::from),
            )?,
        };
        let addr = proc.listening_addr(STARTUP)?;
        Ok(Srv { proc, addr })
    }

    /// Closes stdin (every server's shutdown signal) and reaps it.
    fn stop(mut self) -> Result<Usage, String> {
        self.proc.shut_down(SHUTDOWN)
    }
}

/// Runs a client to completion: its JSON line and its `wait4` usage. The client is
/// the stack's reference peer, or quill-bench itself (quill, and quill → quiche).
fn run_client(
    stack: Stack,
    args: Vec<String>,
    timeout: Duration,
) -> Result<(Value, Usage), String> {
    let name = format!("{} {}", stack.name(), args[0]);
    let peer = match stack {
        Stack::QuillToQuiche => None,
        _ => peer_exe(stack)?,
    };
    let mut p = match peer {
        Some(exe) => Proc::spawn_exe(&name, &exe, &args)?,
        None => Proc::spawn(&name, &args)?,
    };
    p.json_result(timeout, SHUTDOWN)
}

fn strings<const N: usize>(a: [&str; N]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// A reference peer's client arguments: connect to `addr` trusting `ca`, do `what`,
/// give up after `timeout_secs`.
fn reference_client(addr: &str, ca: &str, what: &[&str], timeout_secs: &str) -> Vec<String> {
    let mut args = strings(["client", "--connect", addr, "--ca", ca]);
    args.extend(what.iter().map(|s| (*s).to_owned()));
    args.extend(strings(["--timeout-secs", timeout_secs]));
    args
}

/// `quill-bench`'s own client `command` against `addr` with a public-key login: do
/// `what`, give up after `timeout_secs`.
fn quill_client(command: &str, addr: &str, what: &[&str], timeout_secs: &str) -> Vec<String> {
    let mut args = strings([command, addr]);
    args.extend(what.iter().map(|s| (*s).to_owned()));
    args.extend(strings([
        "--login",
        "publickey",
        "--timeout-secs",
        timeout_secs,
    ]));
    args
}

// ---------------------------------------------------------------------------------
// Bulk

/// One bulk run.
struct Run {
    gbps: f64,
    server: Usage,
    client: Usage,
    raw: Value,
}

impl Run {
    fn total_cpu_per_gib(&self, bytes: u64) -> f64 {
        (self.server.cpu_s() + self.client.cpu_s()) / (bytes as f64 / GIB)
    }
}

fn bulk_once(stack: Stack, o: &Options, dir: &Scratch) -> Result<Run, String> {
    let timeout = Duration::from_secs(30 + o.plan.bytes / 10_000_000);
    let t = timeout.as_secs().to_string();
    let n = o.plan.bytes.to_string();
    if let Some(suite) = match stack {
        Stack::QuillAes256 | Stack::QuillV1 => Some(SuiteArg::Aes256gcm),
        Stack::QuillAes128 => Some(SuiteArg::Aes128gcm),
        _ => None,
    } {
        // quill's own bulk run (fresh server, wait4 of both).
        let r = loopback::bulk_run(&o.plan, suite, stack.quill_flags())?;
        return Ok(Run {
            gbps: r.gbps,
            server: r.server,
            client: r.client,
            raw: r.raw,
        });
    }
    let server = Srv::start(stack, o, dir, false)?;
    let ca = dir.ca();
    let args = match stack {
        Stack::Quinn | Stack::Quiche | Stack::QuinnToQuill => {
            reference_client(&server.addr, &ca, &["--upload", &n], &t)
        }
        Stack::QuillToQuiche => strings([
            "client",
            &server.addr,
            "--bytes",
            &n,
            "--ca",
            &ca,
            "--timeout-secs",
            &t,
        ]),
        Stack::Tcp => strings([
            "tcp-client",
            &server.addr,
            "--bytes",
            &n,
            "--timeout-secs",
            &t,
        ]),
        _ => strings([
            "tcp-client",
            &server.addr,
            "--bytes",
            &n,
            "--tls",
            "--ca",
            &ca,
            "--timeout-secs",
            &t,
        ]),
    };
    let result = run_client(stack, args, timeout + Duration::from_secs(5));
    let server_usage = server.stop();
    let (v, client) = result?;
    let gbps = v["goodput_bps"]
        .as_f64()
        .ok_or_else(|| format!("{}: no goodput_bps in {v}", stack.name()))?
        / 1e9;
    Ok(Run {
        gbps,
        server: server_usage?,
        client,
        raw: v,
    })
}

/// Per configuration: its runs by round (None where it did not run) and why it is
/// unavailable, if it is.
struct Config<R = Run> {
    stack: Stack,
    runs: Vec<Option<R>>,
    unavailable: Option<String>,
}

impl<R> Config<R> {
    /// A configuration with no runs yet; unavailable when its executable is missing.
    fn new(stack: Stack) -> Config<R> {
        Config {
            stack,
            runs: Vec::new(),
            unavailable: peer_exe(stack).err(),
        }
    }
}

/// Median [min–max] of `f` over the runs a configuration has.
fn summary<R>(c: &Config<R>, f: impl Fn(&R) -> f64) -> Summary {
    Summary::of(&c.runs.iter().flatten().map(f).collect::<Vec<_>>())
}

/// Runs `once` for every configuration, alternating within each round (A B C …, A B C
/// …). A configuration that is unavailable gets `None` for the round; one that fails
/// becomes unavailable from then on, with the reason. `describe` words a run for the
/// progress line.
fn run_rounds<R>(
    configs: &mut [Config<R>],
    rounds: usize,
    what: &str,
    mut once: impl FnMut(Stack) -> Result<R, String>,
    describe: impl Fn(&R) -> String,
) {
    for round in 1..=rounds {
        for c in configs.iter_mut() {
            if c.unavailable.is_some() {
                c.runs.push(None);
                continue;
            }
            match once(c.stack) {
                Ok(r) => {
                    eprintln!("round {round}: {:<12} {}", c.stack.name(), describe(&r));
                    c.runs.push(Some(r));
                }
                Err(e) => {
                    eprintln!("round {round}: {} {what} failed: {e}", c.stack.name());
                    c.unavailable = Some(format!("failed in round {round}: {e}"));
                    c.runs.push(None);
                }
            }
        }
    }
}

/// A ratio numerator / denominator computed within each round where both ran.
pub struct Ratio {
    /// Numerator configuration.
    pub num: &'static str,
    /// Denominator configuration.
    pub den: &'static str,
    /// Per round (None where either is missing).
    pub per_round: Vec<Option<f64>>,
}

impl Ratio {
    /// Ratio of `f` within each round.
    pub fn within_rounds<T>(
        num: &'static str,
        den: &'static str,
        a: &[Option<T>],
        b: &[Option<T>],
        f: impl Fn(&T) -> f64,
    ) -> Ratio {
        let per_round = a
            .iter()
            .zip(b)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) if f(y) > 0.0 => Some(f(x) / f(y)),
                _ => None,
            })
            .collect();
        Ratio {
            num,
            den,
            per_round,
        }
    }

    /// Median [min–max] of the per-round ratios.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.per_round.iter().flatten().copied().collect::<Vec<_>>())
    }

    /// Rounds that gave a ratio.
    pub fn count(&self) -> usize {
        self.per_round.iter().flatten().count()
    }

    fn json(&self) -> Value {
        let s = self.summary();
        json!({
            "per_round": self.per_round,
            "rounds": self.count(),
            "median": if self.count() > 0 { Some(s.median) } else { None },
            "min": if self.count() > 0 { Some(s.min) } else { None },
            "max": if self.count() > 0 { Some(s.max) } else { None },
        })
    }
}

struct BulkResult {
    configs: Vec<Config>,
    ratios: Vec<(Ratio, Ratio)>,
}

fn bulk(o: &Options, stacks: &[Stack], dir: &Scratch) -> BulkResult {
    let mut configs: Vec<Config> = stacks.iter().map(|&stack| Config::new(stack)).collect();
    for c in &configs {
        if let Some(why) = &c.unavailable {
            eprintln!("compare: {} unavailable: {why}", c.stack.name());
        }
    }
    run_rounds(
        &mut configs,
        o.plan.rounds,
        "bulk",
        |stack| bulk_once(stack, o, dir),
        |r| {
            format!(
                "{:6.2} Gbit/s, CPU-s server {:.2} client {:.2}",
                r.gbps,
                r.server.cpu_s(),
                r.client.cpu_s()
            )
        },
    );
    let mut ratios = Vec::new();
    // quill's configurations over the others run on both ends by one stack (the
    // cross-stack cells have no single stack to compare).
    for num in configs.iter().filter(|c| c.stack.is_quill()) {
        for den in configs
            .iter()
            .filter(|c| !c.stack.is_quill() && !is_cross(c.stack))
        {
            let g = Ratio::within_rounds(
                num.stack.name(),
                den.stack.name(),
                &num.runs,
                &den.runs,
                |r| r.gbps,
            );
            let cpu = Ratio::within_rounds(
                num.stack.name(),
                den.stack.name(),
                &num.runs,
                &den.runs,
                |r| r.total_cpu_per_gib(o.plan.bytes),
            );
            ratios.push((g, cpu));
        }
    }
    BulkResult { configs, ratios }
}

/// quill's own version (the name "quill" in the latency and rate tables).
fn is_quill(s: Stack) -> bool {
    matches!(s, Stack::QuillAes256 | Stack::QuillAes128)
}

/// A cross-stack cell (one stack's client, another's server).
fn is_cross(s: Stack) -> bool {
    matches!(s, Stack::QuillToQuiche | Stack::QuinnToQuill)
}

fn bulk_json(o: &Options, b: &BulkResult) -> Value {
    let gib = o.plan.bytes as f64 / GIB;
    json!({
        "bytes_per_run": o.plan.bytes,
        "rounds": o.plan.rounds,
        "order": b.configs.iter().map(|c| c.stack.name()).collect::<Vec<_>>(),
        "configurations": b.configs.iter().map(|c| json!({
            "stack": c.stack.name(),
            "available": c.unavailable.is_none(),
            "reason": c.unavailable,
            "completed_runs": c.runs.iter().flatten().count(),
            "goodput_gbps": summary(c, |r| r.gbps).json(),
            "server_cpu_s_per_gib": summary(c, |r| r.server.cpu_s() / gib).json(),
            "client_cpu_s_per_gib": summary(c, |r| r.client.cpu_s() / gib).json(),
            "total_cpu_s_per_gib": summary(c, |r| r.total_cpu_per_gib(o.plan.bytes)).json(),
            "server_peak_rss_mib": summary(c, |r| r.server.max_rss_kib as f64 / 1024.0).json(),
            "client_peak_rss_mib": summary(c, |r| r.client.max_rss_kib as f64 / 1024.0).json(),
            "runs": c.runs.iter().map(|r| r.as_ref().map(|r| procs::with_cpu(json!({
                "goodput_gbps": r.gbps,
                "total_cpu_s_per_gib": r.total_cpu_per_gib(o.plan.bytes),
                "server_peak_rss_kib": r.server.max_rss_kib,
                "client_peak_rss_kib": r.client.max_rss_kib,
                "client": r.raw,
            }), &r.server, &r.client))).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "ratios": b.ratios.iter().map(|(g, cpu)| json!({
            "numerator": g.num,
            "denominator": g.den,
            "goodput": g.json(),
            "total_cpu_s_per_gib": cpu.json(),
        })).collect::<Vec<_>>(),
    })
}

fn bulk_table(o: &Options, b: &BulkResult) {
    let gib = o.plan.bytes as f64 / GIB;
    println!(
        "Bulk upload: one connection, {} MiB per run, {} rounds, order {} per round; median [min–max]",
        o.plan.bytes >> 20,
        o.plan.rounds,
        b.configs.iter().map(|c| c.stack.name()).collect::<Vec<_>>().join(" ")
    );
    println!();
    println!("| configuration | Gbit/s | CPU-s/GiB client | CPU-s/GiB server | CPU-s/GiB total | peak RSS client MiB | peak RSS server MiB |");
    println!("|---|---|---|---|---|---|---|");
    for c in &b.configs {
        if c.runs.iter().flatten().next().is_none() {
            println!(
                "| {} | unavailable: {} | | | | | |",
                c.stack.name(),
                c.unavailable.as_deref().unwrap_or("no runs")
            );
            continue;
        }
        let note = match &c.unavailable {
            Some(why) => format!(" ({why})"),
            None => String::new(),
        };
        println!(
            "| {}{} | {} | {} | {} | {} | {} | {} |",
            c.stack.name(),
            note,
            summary(c, |r| r.gbps).show(2),
            summary(c, |r| r.client.cpu_s() / gib).show(2),
            summary(c, |r| r.server.cpu_s() / gib).show(2),
            summary(c, |r| r.total_cpu_per_gib(o.plan.bytes)).show(2),
            summary(c, |r| r.client.max_rss_kib as f64 / 1024.0).show(1),
            summary(c, |r| r.server.max_rss_kib as f64 / 1024.0).show(1),
        );
    }
    if b.ratios.is_empty() {
        return;
    }
    println!();
    println!("Ratios within each round (quill / other), median [min–max] over rounds");
    println!();
    println!("| ratio | goodput | CPU-s/GiB (total) | rounds |");
    println!("|---|---|---|---|");
    for (g, cpu) in &b.ratios {
        if g.count() == 0 {
            println!("| {} / {} | n/a | n/a | 0 |", g.num, g.den);
        } else {
            println!(
                "| {} / {} | {} | {} | {} |",
                g.num,
                g.den,
                g.summary().show(2),
                cpu.summary().show(2),
                g.count()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Latency and handshake rate

/// The stacks compared in the latency and rate measurements: quill and the
/// reference peers that `--stacks` names.
fn handshake_stacks(stacks: &[Stack]) -> Vec<Stack> {
    let mut v = vec![Stack::QuillAes256];
    if stacks.iter().any(|s| s.covers(Stack::QuillV1)) {
        v.push(Stack::QuillV1);
    }
    v.extend(stacks.iter().filter(|s| s.is_reference()));
    v
}

/// Per stack: samples or the reason it is unavailable.
struct Samples {
    stack: Stack,
    values: Vec<Value>,
    unavailable: Option<String>,
}

fn field(values: &[Value], key: &str) -> Summary {
    Summary::of(
        &values
            .iter()
            .filter_map(|v| v[key].as_f64())
            .collect::<Vec<_>>(),
    )
}

fn latency(o: &Options, stacks: &[Stack], dir: &Scratch) -> Vec<Samples> {
    let mut out: Vec<(Samples, Option<Srv>)> = handshake_stacks(stacks)
        .into_iter()
        .map(|stack| {
            let srv = peer_exe(stack).and_then(|_| Srv::start(stack, o, dir, true));
            let (srv, unavailable) = match srv {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            (
                Samples {
                    stack,
                    values: Vec::new(),
                    unavailable,
                },
                srv,
            )
        })
        .collect();
    let ca = dir.ca();
    for i in 0..o.latency_samples {
        for (s, srv) in out.iter_mut() {
            let Some(server) = srv.as_ref() else { continue };
            if s.unavailable.is_some() {
                continue;
            }
            let args = if s.stack.is_quill() {
                let what = [&["--first-byte"], s.stack.quill_flags()].concat();
                quill_client("client", &server.addr, &what, "30")
            } else {
                reference_client(&server.addr, &ca, &["--download", "1"], "30")
            };
            match run_client(s.stack, args, Duration::from_secs(35)) {
                Ok((v, _)) => s.values.push(v),
                Err(e) => {
                    eprintln!("latency sample {}: {} failed: {e}", i + 1, s.stack.name());
                    s.unavailable = Some(format!("failed: {e}"));
                }
            }
        }
    }
    out.into_iter()
        .map(|(s, srv)| {
            if let Some(srv) = srv {
                let _ = srv.stop();
            }
            s
        })
        .collect()
}

/// The field of a latency sample that spans connect call → handshake (and login) done.
fn connect_key(s: Stack) -> &'static str {
    if s.is_quill() {
        "connect_to_established_ms"
    } else {
        "handshake_ms_median"
    }
}

fn latency_name(s: Stack) -> &'static str {
    if is_quill(s) {
        "quill (PQ hybrid + public-key login)"
    } else if s == Stack::QuillV1 {
        "quill over QUIC v1 (TLS 1.3, X25519MLKEM768 + public-key login)"
    } else if s == Stack::Quinn {
        "quinn (TLS 1.3, X25519)"
    } else {
        "quiche (TLS 1.3, X25519)"
    }
}

/// One handshake-rate run.
struct RateRun {
    per_sec: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    raw: Value,
}

fn rate_once(stack: Stack, o: &Options, dir: &Scratch) -> Result<RateRun, String> {
    let server = Srv::start(stack, o, dir, true)?;
    let before = server.proc.cpu_now()?;
    let timeout = Duration::from_secs(60 + o.plan.handshakes as u64 / 100);
    let (k, c, t) = (
        o.plan.handshakes.to_string(),
        o.plan.concurrency.to_string(),
        timeout.as_secs().to_string(),
    );
    let ca = dir.ca();
    let args = if stack.is_quill() {
        let what = [&["--count", &k, "--concurrency", &c], stack.quill_flags()].concat();
        quill_client("handshakes", &server.addr, &what, &t)
    } else {
        reference_client(
            &server.addr,
            &ca,
            &["--connections", &k, "--concurrency", &c],
            &t,
        )
    };
    let result = run_client(stack, args, timeout + Duration::from_secs(5));
    let after = server.proc.cpu_now();
    let _ = server.stop();
    let (v, client) = result?;
    if v["failed"].as_u64().unwrap_or(0) > 0 {
        return Err(format!(
            "{} of {} handshakes failed: {}",
            v["failed"], k, v["first_error"]
        ));
    }
    let n = o.plan.handshakes.max(1) as f64;
    Ok(RateRun {
        per_sec: v["handshakes_per_sec"].as_f64().unwrap_or(0.0),
        server_cpu_us: (after? - before) / n * 1e6,
        client_cpu_us: client.cpu_s() / n * 1e6,
        raw: v,
    })
}

type RateConfig = Config<RateRun>;

fn rate(o: &Options, stacks: &[Stack], dir: &Scratch) -> (Vec<RateConfig>, Vec<Ratio>) {
    let mut configs: Vec<RateConfig> = handshake_stacks(stacks)
        .into_iter()
        .map(Config::new)
        .collect();
    run_rounds(
        &mut configs,
        o.plan.rounds,
        "handshakes",
        |stack| rate_once(stack, o, dir),
        |r| format!("{:.0} handshakes/s", r.per_sec),
    );
    let ratios = configs
        .iter()
        .skip(1)
        .map(|d| {
            Ratio::within_rounds(
                "quill",
                d.stack.name(),
                &configs[0].runs,
                &d.runs,
                |r: &RateRun| r.per_sec,
            )
        })
        .collect();
    (configs, ratios)
}

// ---------------------------------------------------------------------------------
// Sessions

/// Result of the sessions measurement.
struct SessionsResult {
    connected: u64,
    lost: u64,
    rss0_kib: u64,
    rss_kib: u64,
    server_cpu_pct: f64,
    rtt_ms: [f64; 3],
    lateness_ms: [f64; 3],
    client_timer_ms: [f64; 3],
    /// The server loop's timer lateness over the hold, as it reported it
    /// (`count`, `p50_us`, `p99_us`, `p999_us`, `max_us`).
    server_timers: Value,
    samples: usize,
    ack_delay_ms: f64,
    clients: Vec<Value>,
}

/// `sessions`: N idle logged-in sessions with keep-alives (interval K, sent by both the
/// clients and the server) on one quill server loop, held by several client processes
/// (one loop each). Once every client reports `ready`, all are told `go` and hold the
/// sessions for `--hold-secs`; the server's RSS is read in the middle of the hold and
/// its CPU over it.
///
/// Server timer lateness (the measurement that counts): the server loop records, for
/// every timer its wheel expires (its own keep-alives, the ACK delays of the clients'
/// PINGs, loss detection, ...), how long after the deadline the loop woke up for it
/// ([`EventLoop::timer_lateness`](quill_transport::driver::EventLoop::timer_lateness)).
/// It is reset when the hold starts and read just before it ends, before the clients
/// close anything.
///
/// Client-observed keep-alive lateness: every keep-alive PING a client sends is acknowledged by the
/// server within its advertised `max_ack_delay` (25 ms, an ACK timer on the server's
/// wheel) plus the time the datagrams spend on loopback and in the two loops. The
/// client reads each PING's round trip (`latest_rtt`, not smoothed) half a second
/// after sending it; lateness = max(0, RTT − max_ack_delay), i.e. how much later than
/// scheduled the server's ACK timer fired and its ACK made it back. It includes the
/// loaded client loops' own delays, so it is an upper bound for the server's.
fn sessions(o: &Options, sessions: usize) -> Result<SessionsResult, String> {
    let mut server = loopback::Server::start_with(
        o.plan.workers,
        &strings(["--keep-alive-ms", &o.keep_alive_ms.to_string()]),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = server.proc.status_kib("VmRSS")?;
    let procs = o.session_clients.clamp(1, sessions.max(1));
    let timeout = Duration::from_secs(120 + sessions as u64 / 200);
    let mut clients = Vec::new();
    for i in 0..procs {
        let n = sessions / procs + usize::from(i < sessions % procs);
        let args = strings([
            "idle",
            &server.addr,
            "--count",
            &n.to_string(),
            "--concurrency",
            "128",
            "--hold-secs",
            &o.hold_secs.to_string(),
            "--keep-alive-ms",
            &o.keep_alive_ms.to_string(),
            "--timeout-secs",
            &timeout.as_secs().to_string(),
            "--wait-go",
        ]);
        clients.push(Proc::spawn(&format!("idle client {}", i + 1), &args)?);
    }
    let started = Instant::now();
    let mut connected = 0;
    for c in &clients {
        let left = (timeout + Duration::from_secs(10)).saturating_sub(started.elapsed());
        let l = c.line_starting("ready ", left)?;
        connected += l["ready ".len()..].trim().parse::<u64>().unwrap_or(0);
    }
    eprintln!(
        "sessions: {connected} connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let the handshake burst's leftovers settle before the hold starts.
    std::thread::sleep(Duration::from_secs(2));
    server.proc.send_line("reset-lateness")?;
    for c in clients.iter_mut() {
        c.send_line("go")?;
    }
    let cpu0 = server.proc.cpu_now()?;
    let t0 = Instant::now();
    let hold = Duration::from_secs(o.hold_secs);
    std::thread::sleep(hold / 2);
    let rss = server.proc.status_kib("VmRSS")?;
    // Read the server's timer lateness just before the clients' holds end (each began
    // when its `go` arrived, after `reset-lateness` was sent): their closing is not in it.
    std::thread::sleep((hold - hold / 2).saturating_sub(Duration::from_millis(250)));
    let server_timers = server.proc.query("lateness", Duration::from_secs(30))?;
    let mut outs = Vec::new();
    for c in clients.iter_mut() {
        let l = c.line_starting("{", Duration::from_secs(o.hold_secs + 60))?;
        let _ = c.wait(SHUTDOWN)?;
        outs.push(serde_json::from_str::<Value>(&l).map_err(|e| format!("idle: bad JSON: {e}"))?);
    }
    let cpu1 = server.proc.cpu_now()?;
    let held = t0.elapsed().as_secs_f64();
    // Sessions whose client's close was lost close from the server's side, each for
    // three PTOs; after a loaded handshake burst those can be seconds.
    server
        .proc
        .shut_down(SHUTDOWN + Duration::from_secs(sessions as u64 / 2_000))?;
    let ack_delay_ms = crate::common::transport_config()
        .max_ack_delay
        .as_secs_f64()
        * 1e3;
    // Every client's samples of `key` (microseconds), in milliseconds.
    let ms_samples = |key: &str| -> Vec<f64> {
        outs.iter()
            .flat_map(|v| v[key].as_array().cloned().unwrap_or_default())
            .filter_map(|x| x.as_f64())
            .map(|us| us / 1e3)
            .collect()
    };
    let mut rtt = ms_samples("keep_alive_rtt_us");
    let mut late: Vec<f64> = rtt.iter().map(|r| (r - ack_delay_ms).max(0.0)).collect();
    let mut own = ms_samples("own_timer_lateness_us");
    let q = |v: &mut Vec<f64>| [quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0)];
    let lost = outs
        .iter()
        .map(|v| v["lost_while_held"].as_u64().unwrap_or(0))
        .sum();
    // The per-sample arrays are long; the report keeps the clients' summaries.
    for v in outs.iter_mut() {
        if let Some(m) = v.as_object_mut() {
            m.remove("keep_alive_rtt_us");
            m.remove("own_timer_lateness_us");
        }
    }
    Ok(SessionsResult {
        connected,
        lost,
        rss0_kib: rss0,
        rss_kib: rss,
        server_cpu_pct: (cpu1 - cpu0) / held * 100.0,
        samples: rtt.len(),
        rtt_ms: q(&mut rtt),
        lateness_ms: q(&mut late),
        client_timer_ms: q(&mut own),
        server_timers,
        ack_delay_ms,
        clients: outs,
    })
}

/// A microsecond count from the server's JSON as milliseconds (NaN if missing).
fn us_to_ms(v: &Value) -> f64 {
    v.as_f64().map_or(f64::NAN, |us| us / 1e3)
}

// ---------------------------------------------------------------------------------
// The whole comparison

/// Runs what `o` asks for and prints the report.
pub fn run(o: &Options) -> Result<(), String> {
    if o.plan.rounds == 0 && (o.wants(What::Bulk) || o.wants(What::Rate) || o.wants(What::Workers))
    {
        return Err("--rounds must be at least 1".into());
    }
    let stacks = expand(&o.stacks);
    if stacks.is_empty() {
        return Err("--stacks selects nothing; use e.g. --stacks all".into());
    }
    let nofile = raise_nofile();
    let dir = Scratch::new()?;
    let bulk = o.wants(What::Bulk).then(|| bulk(o, &stacks, &dir));
    let lat = (o.wants(What::Latency) && o.latency_samples > 0).then(|| latency(o, &stacks, &dir));
    let rate = (o.wants(What::Rate) && o.plan.handshakes > 0).then(|| rate(o, &stacks, &dir));
    let idle = (o.wants(What::Idle) && o.plan.idle > 0).then(|| idle::run(o, &stacks, &dir));
    // Per size (one unless --sessions-sizes): the size and its result; the last is
    // the report's `sessions`, all are its `sessions_curve`.
    let curve: Vec<(usize, Result<SessionsResult, String>)> = if o.wants(What::Sessions) {
        o.session_sizes()
            .into_iter()
            .filter(|&n| n > 0)
            .map(|n| (n, sessions(o, n)))
            .collect()
    } else {
        Vec::new()
    };
    let loops = o
        .wants(What::Workers)
        .then(|| crate::workers::run(o, &dir.accounts()));
    if o.plan.json {
        let out = json!({
            "stacks": stacks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "open_files_limit": { "soft": nofile.0, "hard": nofile.1 },
            "bulk": bulk.as_ref().map(|b| bulk_json(o, b)),
            "latency": lat.as_ref().map(|l| json!({
                "samples_per_stack": o.latency_samples,
                "stacks": l.iter().map(|s| json!({
                    "stack": if is_quill(s.stack) { "quill" } else { s.stack.name() },
                    "what": latency_name(s.stack),
                    "available": s.unavailable.is_none(),
                    "reason": s.unavailable,
                    "first_byte_ms": field(&s.values, "first_byte_ms").json(),
                    "handshake_ms": field(&s.values, "handshake_ms").json(),
                    "connect_to_established_ms": field(&s.values, connect_key(s.stack)).json(),
                    "samples": s.values,
                })).collect::<Vec<_>>(),
            })),
            "rate": rate.as_ref().map(|(configs, ratios)| json!({
                "connections": o.plan.handshakes,
                "concurrency": o.plan.concurrency,
                "stacks": configs.iter().map(|c| json!({
                    "stack": if is_quill(c.stack) { "quill" } else { c.stack.name() },
                    "available": c.unavailable.is_none(),
                    "reason": c.unavailable,
                    "handshakes_per_sec": summary(c, |r| r.per_sec).json(),
                    "server_cpu_us_per_handshake": summary(c, |r| r.server_cpu_us).json(),
                    "client_cpu_us_per_handshake": summary(c, |r| r.client_cpu_us).json(),
                    // What one core would sustain on the server's CPU cost alone.
                    "server_bound_per_sec": c.runs.iter().flatten().next().map(|_| {
                        1e6 / summary(c, |r| r.server_cpu_us).median.max(1e-9)
                    }),
                    "runs": c.runs.iter().map(|r| r.as_ref().map(|r| r.raw.clone())).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "ratios": ratios.iter().map(|r| json!({
                    "numerator": r.num, "denominator": r.den, "handshakes_per_sec": r.json(),
                })).collect::<Vec<_>>(),
            })),
            "idle": idle.as_ref().map(|cells| idle::json(o, cells)),
            "sessions_curve": (!curve.is_empty()).then(|| {
                curve.iter().map(|(n, r)| sessions_json(o, *n, r)).collect::<Vec<_>>()
            }),
            "sessions": curve.last().map(|(n, r)| sessions_json(o, *n, r)),
            "workers": loops.as_ref().map(|w| crate::workers::json(o, w)),
        });
        println!("{out}");
    } else {
        print_tables(
            o,
            bulk.as_ref(),
            lat.as_deref(),
            rate.as_ref(),
            idle.as_deref(),
            &curve,
        );
        if let Some(w) = &loops {
            crate::workers::table(o, w);
        }
    }
    // A measurement that failed outright is an error (after the report); an
    // unavailable reference stack is not.
    if let Some(Err(e)) = idle.as_ref().and_then(|c| c.first()).map(|c| &c.result) {
        return Err(format!("idle: {e}"));
    }
    for (n, r) in &curve {
        if let Err(e) = r {
            return Err(format!("sessions ({n}): {e}"));
        }
    }
    Ok(())
}

/// The JSON of one sessions run of `n` sessions (the report's `sessions`, and each
/// size of `sessions_curve`).
fn sessions_json(o: &Options, n: usize, r: &Result<SessionsResult, String>) -> Value {
    match r {
        Ok(s) => json!({
            "sessions": n,
            "client_processes": o.session_clients,
            "keep_alive_ms": o.keep_alive_ms,
            "hold_secs": o.hold_secs,
            "connected": s.connected,
            "lost_while_held": s.lost,
            "server_rss_kib_0": s.rss0_kib,
            "server_rss_kib": s.rss_kib,
            "server_bytes_per_session": (s.rss_kib.saturating_sub(s.rss0_kib) * 1024) as f64 / s.connected.max(1) as f64,
            "server_cpu_percent_of_a_core": s.server_cpu_pct,
            "server_max_ack_delay_ms": s.ack_delay_ms,
            "keep_alive_samples": s.samples,
            "keep_alive_rtt_ms": { "p50": s.rtt_ms[0], "p99": s.rtt_ms[1], "max": s.rtt_ms[2] },
            "server_timer_lateness_ms": {
                "count": s.server_timers["count"],
                "p50": us_to_ms(&s.server_timers["p50_us"]),
                "p99": us_to_ms(&s.server_timers["p99_us"]),
                "p999": us_to_ms(&s.server_timers["p999_us"]),
                "max": us_to_ms(&s.server_timers["max_us"]),
            },
            "keep_alive_lateness_ms": { "p50": s.lateness_ms[0], "p99": s.lateness_ms[1], "max": s.lateness_ms[2] },
            "client_timer_lateness_ms": { "p50": s.client_timer_ms[0], "p99": s.client_timer_ms[1], "max": s.client_timer_ms[2] },
            "clients": s.clients,
        }),
        Err(e) => json!({ "sessions": n, "error": e }),
    }
}

fn print_tables(
    o: &Options,
    bulk: Option<&BulkResult>,
    lat: Option<&[Samples]>,
    rate: Option<&(Vec<RateConfig>, Vec<Ratio>)>,
    idle: Option<&[idle::IdleCell]>,
    curve: &[(usize, Result<SessionsResult, String>)],
) {
    if let Some(b) = bulk {
        bulk_table(o, b);
        println!();
    }
    if let Some(l) = lat {
        println!(
            "Handshake latency: fresh client process → first byte of the answer, {} samples per stack (alternating); median [min–max]",
            o.latency_samples
        );
        println!();
        println!("| stack | first byte ms | handshake done ms | connect → established ms |");
        println!("|---|---|---|---|");
        for s in l {
            match &s.unavailable {
                Some(why) if s.values.is_empty() => {
                    println!("| {} | unavailable: {why} | | |", latency_name(s.stack))
                }
                _ => println!(
                    "| {} | {} | {} | {} |",
                    latency_name(s.stack),
                    field(&s.values, "first_byte_ms").show(2),
                    field(&s.values, "handshake_ms").show(2),
                    field(&s.values, connect_key(s.stack)).show(2)
                ),
            }
        }
        println!();
    }
    if let Some((configs, ratios)) = rate {
        println!(
            "Handshakes per second against one server loop: {} connections, {} in flight, {} rounds; median [min–max]",
            o.plan.handshakes, o.plan.concurrency, o.plan.rounds
        );
        println!();
        println!("| stack | handshakes/s | server CPU µs/handshake | client CPU µs/handshake | server-bound ceiling/s (1 core) |");
        println!("|---|---|---|---|---|");
        for c in configs {
            let name = if is_quill(c.stack) {
                "quill (PQ + public-key login)"
            } else {
                c.stack.name()
            };
            if c.runs.iter().flatten().next().is_none() {
                println!(
                    "| {name} | unavailable: {} | | | |",
                    c.unavailable.as_deref().unwrap_or("no runs")
                );
                continue;
            }
            let server_us = summary(c, |r| r.server_cpu_us);
            println!(
                "| {name} | {} | {} | {} | {:.0} |",
                summary(c, |r| r.per_sec).show(0),
                server_us.show(0),
                summary(c, |r| r.client_cpu_us).show(0),
                1e6 / server_us.median.max(1e-9)
            );
        }
        for r in ratios.iter().filter(|r| r.count() > 0) {
            println!(
                "\nquill / {} handshakes per second, within each round: {}",
                r.den,
                r.summary().show(2)
            );
        }
        println!();
    }
    if let Some(cells) = idle {
        idle::table(o, cells);
    }
    for (n, s) in curve {
        println!(
            "Idle sessions on one quill server loop: {} sessions from {} client processes, keep-alive {} ms, held {} s",
            n, o.session_clients, o.keep_alive_ms, o.hold_secs
        );
        println!();
        match s {
            Ok(s) => {
                let t = &s.server_timers;
                println!("| connected | lost | server RSS | bytes/session | server CPU (% of a core) | **server loop timer lateness** p50 / p99 / p99.9 / max ms | timers fired | client-observed keep-alive RTT p50 / p99 ms | client-observed lateness p50 / p99 / max ms | clients' own timer lateness p50 / p99 ms | samples |");
                println!("|---|---|---|---|---|---|---|---|---|---|---|");
                println!(
                    "| {} | {} | {:.1} MiB | {:.0} | {:.1} | {:.2} / {:.2} / {:.2} / {:.2} | {} | {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {} |",
                    s.connected,
                    s.lost,
                    s.rss_kib as f64 / 1024.0,
                    (s.rss_kib.saturating_sub(s.rss0_kib) * 1024) as f64 / s.connected.max(1) as f64,
                    s.server_cpu_pct,
                    us_to_ms(&t["p50_us"]),
                    us_to_ms(&t["p99_us"]),
                    us_to_ms(&t["p999_us"]),
                    us_to_ms(&t["max_us"]),
                    t["count"].as_u64().unwrap_or(0),
                    s.rtt_ms[0],
                    s.rtt_ms[1],
                    s.lateness_ms[0],
                    s.lateness_ms[1],
                    s.lateness_ms[2],
                    s.client_timer_ms[0],
                    s.client_timer_ms[1],
                    s.samples
                );
                println!(
                    "\n(server loop timer lateness: every timer the server's wheel expired during the hold, its keep-alives \
                     included, woken how long after its deadline; client-observed lateness = keep-alive round trip − the \
                     server's max_ack_delay of {:.0} ms, which includes the client loops' own delays)",
                    s.ack_delay_ms
                );
            }
            Err(e) => println!("failed: {e}"),
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_expand_in_round_order() {
        assert_eq!(expand(&[Stack::All]), ORDER.to_vec());
        assert_eq!(
            expand(&[Stack::TcpTls, Stack::Quill, Stack::Tcp]),
            vec![
                Stack::QuillAes256,
                Stack::QuillAes128,
                Stack::QuillV1,
                Stack::Tcp,
                Stack::TcpTls
            ]
        );
        // A cross-stack cell needs both peers, and only the reference peer's server.
        assert_eq!(Stack::QuillToQuiche.peer_exe_name(), Some("quiche-peer"));
        assert_eq!(Stack::QuinnToQuill.peer_exe_name(), Some("quinn-peer"));
        assert!(!Stack::QuillToQuiche.is_quill() && !Stack::QuillToQuiche.is_reference());
        assert!(expand(&[]).is_empty());
    }

    #[test]
    fn sessions_run_at_each_size_or_at_sessions() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            o: Options,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from([&["compare"][..], args].concat())
                .map(|c| c.o)
                .expect("parses")
        };
        assert_eq!(parse(&[]).session_sizes(), [100_000]);
        assert_eq!(parse(&["--sessions", "64"]).session_sizes(), [64]);
        let o = parse(&["--sessions", "64", "--sessions-sizes", "1000,10000"]);
        assert_eq!(o.session_sizes(), [1000, 10_000]);
    }

    #[test]
    fn ratios_are_taken_within_rounds() {
        let a = [Some(10.0), Some(6.0), None, Some(9.0)];
        let b = [Some(5.0), Some(6.0), Some(1.0), Some(3.0)];
        let r = Ratio::within_rounds("a", "b", &a, &b, |x| *x);
        assert_eq!(r.per_round, vec![Some(2.0), Some(1.0), None, Some(3.0)]);
        let s = r.summary();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        // Not the ratio of the medians (9.5 / 4.0).
        assert_eq!(r.count(), 3);
    }
}
