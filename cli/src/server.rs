//! `quill server`: event loops serving logins and the stream services of
//! [`quill_transport::service`] (ECHO, PUT, GET, SINK, SOURCE, STATS, ...).
//!
//! Threads: `--workers N` event loops, each on its own thread with its own socket on
//! the listening address ([`quill_transport::driver::Workers`]: datagrams steered to
//! the loop named in their QUIC-LB connection ID), sharing the account store, the
//! login limiter, the per-address handshake limits and the reset and Retry secrets;
//! logins are verified on the one worker pool the loops share
//! (`driver::login::verify_on_pool`: Argon2id and database writes never run on a
//! loop), and so are the two file operations that can take
//! long in one piece: hashing a whole file before a GET answers `OK size sha256`, and
//! the `fsync` + rename that commits a PUT.
//!
//! Streaming file data (the bytes of a PUT written to its temporary file, the bytes of
//! a GET read from the file) is done on the loop thread in bounded chunks: at most
//! [`IO_BUDGET`] bytes per stream per turn, in 64 KiB reads and writes that hit the page
//! cache. We chose this over shipping every chunk to the pool because the pool's queue
//! is sized for logins and a chunk costs microseconds; the budget keeps one turn short
//! however many bytes are waiting, and a stream that used up its budget wakes the loop
//! so it is served again at once (never waiting for a packet that flow control would
//! hold back).
//!
//! Memory per stream is bounded: the request line by [`MAX_LINE`], an echo by
//! [`ECHO_BUFFER`], a GET by one chunk; PUT data goes to the file as it arrives.
//!
//! Logins: without an account database every login would be refused, so `quill
//! server` requires `--accounts` (the file is created if missing; add accounts with
//! `quill user add`).
//!
//! Logs (at `info`, the server's default level): one line per connection event —
//! `connection accepted` (address, connection ID, version, suite, key exchange),
//! `login accepted`/`login refused` (from `driver::login`, with the user and the reason
//! as the server knows it) and `connection closed` (who closed, code, reason, duration,
//! bytes each way). See [`crate::logging`] for levels and formats, and
//! [`reload`] for SIGHUP.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::auth::{is_postgres_url, open_store};
use quill_transport::auth::{Limiter, LimiterConfig};
use quill_transport::auth::{LoginVerifier, Verdict};
use quill_transport::auth::{SessionCaps, DEFAULT_MAX_PER_ADDRESS, DEFAULT_MAX_PER_USER};
use quill_transport::driver::verify_on_pool;
use quill_transport::driver::TerminationSignals;
use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Completion, Context, Handler, LoopHandle};
use quill_transport::driver::{SteeringMode, Workers, WorkersConfig};
use quill_transport::proto::{parse_server_id, CidLayout};
use quill_transport::proto::{
    Connection, ConnectionError, Dir, Event, ReadOutcome, ServerConfig, StreamEvent, StreamId,
    TransportConfig,
};
use quill_transport::proto::{ConnectionHandle, EndpointConfig, RetryPolicy, RESET_SECRET_LABEL};
use quill_transport::proto::{QuicV1Server, ALPN_QUILL};

use crate::args::{parse_duration, parse_size, RetryArg, ServerArgs};
use crate::exit::{CliError, CliResult};
use crate::logging::{LogFormat, Logs};
use crate::perf::PerfCounters;
use crate::secret::read_secret;
use quill_transport::service::{
    hash_file, sweep_temp_files, Answer, Echo, Files, Pumped, Request, Upload, CHUNK, MAX_LINE,
};
use zeroize::Zeroizing;

use crate::serve_files::{run_file_job, FileJob};

/// Most bytes of file data (or echo, sink, source data) moved per stream per loop turn.
pub const IO_BUDGET: usize = 256 * 1024;
/// Most bytes an echo stream holds before the server stops reading it (back-pressure).
pub const ECHO_BUFFER: usize = 256 * 1024;
/// Application error code for streams the server abandons (RESET_STREAM / STOP_SENDING).
const STREAM_ABANDONED: u64 = 1;
/// Application error code of the STOP_SENDING that follows a final answer sent before
/// the client finished (a refusal): the server reads nothing more (docs/SPEC.md §10).
const STREAM_ANSWERED: u64 = 2;
/// Half-open handshakes from which on `--retry auto` asks new clients to retry.
const AUTO_RETRY_THRESHOLD: usize = 1024;
/// Largest configuration file read.
const MAX_CONFIG_FILE: u64 = 1 << 20;
/// Most `--workers` (a worker index is one byte of the connection ID).
const MAX_WORKERS: usize = 256;
/// Nonce bytes of the server's connection IDs: the worker index and 8 random bytes.
const CID_NONCE_LEN: usize = 9;

/// Everything a server needs; built from the command line by [`run`], or directly by
/// `quill demo` and tests.
pub struct ServerOptions {
    /// Address to bind.
    pub listen: SocketAddr,
    /// The host key.
    pub host_key: Arc<HostKeyPair>,
    /// The account database: a SQLite file (created if missing) or a PostgreSQL URL.
    pub accounts: PathBuf,
    /// Root of the file service; `None` disables PUT and GET.
    pub root: Option<PathBuf>,
    /// Largest PUT accepted, in bytes; larger ones are refused before any data moves.
    pub max_upload_size: Option<u64>,
    /// Let clients create accounts.
    pub allow_register: bool,
    /// Idle timeout, keep-alives, ... (checked with [`TransportConfig::validate`]).
    pub transport: TransportConfig,
    /// When to send Retry.
    pub retry: RetryPolicy,
    /// Caps on connections per account and per address.
    pub sessions: SessionCaps,
    /// Registrations one address may attempt per hour (0: no limit).
    pub registrations_per_address: u32,
    /// Handshakes in progress one address may hold at once (0: no cap).
    pub max_half_open_per_address: usize,
    /// QUIC v1's certificate chain and key (PEM files); `None`: the self-signed
    /// certificate over the host key (same fingerprint as on quill's version).
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// Accept QUIC v1 (ALPN `quill`) beside quill's own version.
    pub quic_v1: bool,
    /// Move QUIC v1 clients that offer QUIC v2 to v2 (RFC 9368/9369).
    pub quic_v2: bool,
    /// Also serve ALPN `hq-interop` to QUIC v1 clients: anonymous downloads from
    /// [`ServerOptions::root`] (needs `quic_v1` and a root).
    pub hq_interop: bool,
    /// The stateless-reset secret (`--reset-key`); `None`: derived from the host key.
    pub reset_key: Option<Zeroizing<[u8; 32]>>,
    /// The Retry-token secret (`--retry-key`); `None`: random per run.
    pub retry_key: Option<Zeroizing<[u8; 32]>>,
    /// Event loops (1..=256).
    pub workers: usize,
    /// QUIC-LB server ID carried in the connection IDs (1..=15 bytes).
    pub server_id: Vec<u8>,
}

/// ALPN of the QUIC interop runner's HTTP/0.9 (`--hq-interop`).
pub const ALPN_HQ: &[u8] = b"hq-interop";

/// A server running on its own thread.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The host key's fingerprint (`SHA256:...`).
    pub fingerprint: String,
    workers: Workers,
    /// Where [`reload`] leaves run-time settings for each loop thread.
    reloads: Vec<Arc<Mutex<Option<Runtime>>>>,
    /// The logins' verifier (SIGHUP empties its cache of authorised keys).
    verifier: Arc<LoginVerifier>,
}

impl RunningServer {
    /// Graceful stop: every connection is closed with CONNECTION_CLOSE and drained,
    /// then the loop thread ends. Errors of the loop are logged.
    pub fn stop(mut self) {
        self.workers.shutdown();
        if let Err(e) = self.join() {
            tracing::error!("{e}");
        }
    }

    /// Waits until the loop ends (after a [`LoopHandle::shutdown`] from elsewhere).
    fn wait(mut self) -> Result<(), CliError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), CliError> {
        let joined = self.workers.join();
        log_worker_stats(&self.workers);
        joined.map_err(|e| CliError::connection(format!("server loop failed: {e}")))
    }
}

/// Logs each loop's datagram counts, and how many reached the wrong loop.
fn log_worker_stats(workers: &Workers) {
    let stats = workers.stats();
    let forwarded: u64 = stats.iter().map(|s| s.forwarded_out).sum();
    for (i, s) in stats.iter().enumerate() {
        tracing::info!(
            "worker {i}: {} datagrams in, {} sessions, {} forwarded to other workers",
            s.datagrams_in,
            s.sessions_created,
            s.forwarded_out
        );
    }
    if workers.len() > 1 {
        tracing::info!("datagrams forwarded between workers: {forwarded}");
    }
}

/// Binds and starts a server on a new thread.
pub fn spawn(opts: ServerOptions) -> Result<RunningServer, CliError> {
    opts.transport
        .validate()
        .map_err(|e| CliError::usage(e.to_string()))?;
    let root = match &opts.root {
        Some(r) => Some(r.canonicalize().map_err(|e| {
            CliError::usage(format!(
                "file service root {}: {e}; create the directory or fix --root",
                r.display()
            ))
        })?),
        None => None,
    };
    if let Some(r) = &root {
        if !r.is_dir() {
            return Err(CliError::usage(format!(
                "file service root {} is not a directory",
                r.display()
            )));
        }
        let removed = sweep_temp_files(r);
        if removed > 0 {
            tracing::info!("removed {removed} unfinished uploads left by an earlier run");
        }
    }
    let store = open_store(&opts.accounts).map_err(|e| CliError::usage(e.to_string()))?;
    let mut verifier = LoginVerifier::new(store, opts.allow_register);
    verifier.sessions = opts.sessions;
    verifier.limiter = std::sync::Mutex::new(Limiter::new(LimiterConfig {
        registrations_per_source: opts.registrations_per_address,
        ..LimiterConfig::default()
    }));
    let verifier = Arc::new(verifier);
    let fingerprint = opts.host_key.public().fingerprint();
    // The stateless-reset secret comes from --reset-key (shared by a fleet) or the host
    // key, so that a restarted server resets its predecessor's connections at once
    // (clients learn of the restart in one round trip instead of an idle timeout).
    let secret = match &opts.reset_key {
        Some(k) => **k,
        None => *opts.host_key.derive_secret(RESET_SECRET_LABEL),
    };
    // QUIC v1 beside quill's own version on the same port: ALPN `quill`, the login
    // on the first stream; with --hq-interop also the interop runner's HTTP/0.9.
    let mut alpn = vec![ALPN_QUILL.to_vec()];
    if opts.hq_interop {
        if !opts.quic_v1 || root.is_none() {
            return Err(CliError::usage(
                "--hq-interop serves the files of --root over QUIC v1: give --root DIR \
                 and drop --no-quic-v1",
            ));
        }
        tracing::warn!(
            "--hq-interop: every file under the root, every account's space included, is \
             readable without a login"
        );
        alpn.push(ALPN_HQ.to_vec());
    }
    let quic_v1 = match &opts.certificate {
        None => QuicV1Server::with_host_key(opts.host_key.clone(), alpn),
        Some((cert, key)) => {
            let pem = |e: quill_crypto::Error| CliError::usage(e.to_string());
            let chain = quill_crypto::tls::load_pem_chain(cert).map_err(pem)?;
            let key = quill_crypto::tls::load_pem_key(key).map_err(pem)?;
            QuicV1Server::with_certificate(chain, key, alpn)
        }
    }
    .map_err(|e| CliError::usage(format!("--cert/--cert-key: {e}")))?;
    let mut quic_v1 = quic_v1;
    quic_v1.quic_v2 = opts.quic_v2;
    let mut config = ServerConfig::new(opts.host_key);
    config.transport = Arc::new(opts.transport);
    config.allow_register = opts.allow_register;
    config.quic_v1 = opts.quic_v1.then_some(quic_v1);
    let endpoint = EndpointConfig {
        retry: opts.retry,
        secret,
        retry_secret: opts.retry_key.clone(),
        // Retry tokens expire on the wall clock, so a fleet's servers agree on them.
        unix_time_at_start: SystemTime::now().duration_since(UNIX_EPOCH).ok(),
        max_half_open_per_address: opts.max_half_open_per_address,
        ..EndpointConfig::default()
    };
    let layout = CidLayout::new(&opts.server_id, CID_NONCE_LEN)
        .map_err(|e| CliError::usage(format!("--server-id: {e}")))?;
    if !(1..=MAX_WORKERS).contains(&opts.workers) {
        return Err(CliError::usage(format!(
            "--workers is 1 to {MAX_WORKERS}, not {}",
            opts.workers
        )));
    }
    // Slow work (Argon2id, file commits) runs on one pool the loops share: about one
    // thread per core, whatever the number of loops.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let workers_config = WorkersConfig {
        workers: opts.workers,
        bpf: true,
        layout,
        pool_threads: cores,
        pool_capacity: 0,
    };
    let max_upload_size = opts.max_upload_size;
    let reloads: Vec<Arc<Mutex<Option<Runtime>>>> =
        (0..opts.workers).map(|_| Arc::default()).collect();
    let workers = Workers::spawn(
        opts.listen,
        &workers_config,
        &UdpConfig::default(),
        endpoint,
        config,
        |i, handle| FileServer {
            verifier: verifier.clone(),
            root: root.clone(),
            max_upload_size,
            streams: HashMap::new(),
            buf: vec![0u8; CHUNK],
            wake: Some(handle),
            accepted: HashSet::new(),
            perf: HashMap::new(),
            reloads: reloads[i].clone(),
        },
    )
    .map_err(|e| CliError::connection(format!("cannot listen on {}: {e}", opts.listen)))?;
    match workers.steering() {
        SteeringMode::Single => {}
        SteeringMode::Bpf => tracing::info!(
            "{} workers, datagrams steered by connection ID (reuseport BPF)",
            workers.len()
        ),
        SteeringMode::Forwarding(why) => tracing::warn!(
            "{} workers without kernel steering ({why}); datagrams are forwarded between \
             workers",
            workers.len()
        ),
    }
    Ok(RunningServer {
        addr: workers.local_addr(),
        fingerprint,
        workers,
        reloads,
        verifier,
    })
}

/// Runs `quill server` until SIGINT or SIGTERM, then drains connections and returns.
/// SIGHUP re-reads `--config` ([`reload`]).
pub fn run(args: &ServerArgs, logs: Logs) -> CliResult {
    // Before any thread exists, so that every thread inherits the blocked set and the
    // signals reach only the thread `on_signals` starts.
    let signals = TerminationSignals::block_with_hangup();
    let settings = Settings::from_args(args)?;
    let opts = settings.options()?;
    let server = spawn(opts)?;
    crate::output::note!("listening {}", server.addr);
    crate::output::note!("host key fingerprint {}", server.fingerprint);
    let handles = server.workers.handles().to_vec();
    let reloads = server.reloads.clone();
    let verifier = server.verifier.clone();
    let args = args.clone();
    let mut running = settings;
    signals.on_signals(move |sig| {
        if sig == libc::SIGHUP {
            // Key changes made with `quill user` apply from the next login on.
            verifier.keys.clear();
            tracing::info!("SIGHUP: the cache of authorised keys is emptied");
            reload(&args, &mut running, &logs, &reloads, &handles);
            return true;
        }
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        tracing::info!("{name}: closing connections");
        handles.iter().for_each(LoopHandle::shutdown);
        false
    });
    server.wait()?;
    tracing::info!("server stopped");
    Ok(())
}

/// The server's log settings from its configuration file (read before the logger
/// exists; the command line and `RUST_LOG` win over them).
#[derive(Debug, Default)]
pub struct LogSettings {
    /// `log-format`.
    pub format: Option<LogFormat>,
    /// `log-level` (checked).
    pub level: Option<String>,
}

/// [`LogSettings`] of `quill server`'s `--config`; an error names the file and line.
pub fn log_settings(args: &ServerArgs) -> Result<LogSettings, CliError> {
    let s = Settings::from_args(args)?;
    Ok(LogSettings {
        format: s.log_format,
        level: s.log_level,
    })
}

// ---------------------------------------------------------------------------------
// SIGHUP: reloading the configuration file.

/// Keys that SIGHUP applies to a running server; every other key needs a restart.
pub const RELOADABLE_KEYS: &[&str] = &[
    "log-level",
    "max-upload-size",
    "max-connections-per-user",
    "max-connections-per-address",
    "max-registrations-per-address",
];

/// The settings SIGHUP can change, handed to the loop thread.
#[derive(Debug, Clone, PartialEq)]
struct Runtime {
    max_upload_size: Option<u64>,
    max_connections_per_user: usize,
    max_connections_per_address: usize,
    max_registrations_per_address: u32,
}

impl Runtime {
    fn of(s: &Settings) -> Runtime {
        Runtime {
            max_upload_size: s.max_upload_size,
            max_connections_per_user: s.max_connections_per_user.unwrap_or(DEFAULT_MAX_PER_USER),
            max_connections_per_address: s
                .max_connections_per_address
                .unwrap_or(DEFAULT_MAX_PER_ADDRESS),
            max_registrations_per_address: s
                .max_registrations_per_address
                .unwrap_or(LimiterConfig::default().registrations_per_source),
        }
    }
}

/// SIGHUP, on the signal thread: re-reads `--config` under the same command line (which
/// still wins). A file that does not parse is reported and the running settings stay.
/// The log filter changes at once; the keys of [`RELOADABLE_KEYS`] go to the loop
/// thread through `reloads` and apply to new logins and uploads there (sessions and
/// transfers in progress are not touched); any other changed key is reported as
/// needing a restart, and keeps its running value.
fn reload(
    args: &ServerArgs,
    running: &mut Settings,
    logs: &Logs,
    reloads: &[Arc<Mutex<Option<Runtime>>>],
    handles: &[LoopHandle],
) {
    let Some(path) = &args.config else {
        tracing::warn!("SIGHUP: no --config file to reload; nothing changed");
        return;
    };
    let new = match Settings::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("SIGHUP: {}; keeping the running configuration", e.message);
            return;
        }
    };
    let mut changed = Vec::new();
    match logs.set_level(new.log_level.as_deref()) {
        Ok(Some((old, now))) => changed.push(format!("log-level {old} -> {now}")),
        Ok(None) => {}
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the running configuration");
            return;
        }
    }
    let (old_rt, new_rt) = (Runtime::of(running), Runtime::of(&new));
    let size = |v: Option<u64>| v.map_or("none".to_string(), |n| n.to_string());
    if old_rt.max_upload_size != new_rt.max_upload_size {
        changed.push(format!(
            "max-upload-size {} -> {}",
            size(old_rt.max_upload_size),
            size(new_rt.max_upload_size)
        ));
    }
    for (key, old, now) in [
        (
            "max-connections-per-user",
            old_rt.max_connections_per_user,
            new_rt.max_connections_per_user,
        ),
        (
            "max-connections-per-address",
            old_rt.max_connections_per_address,
            new_rt.max_connections_per_address,
        ),
        (
            "max-registrations-per-address",
            old_rt.max_registrations_per_address as usize,
            new_rt.max_registrations_per_address as usize,
        ),
    ] {
        if old != now {
            changed.push(format!("{key} {old} -> {now}"));
        }
    }
    let restart = running.needs_restart(&new);
    // What the loop applies, and what the next SIGHUP compares with: the new run-time
    // values over the running start-up values (which only a restart changes).
    running.max_upload_size = new.max_upload_size;
    running.max_connections_per_user = new.max_connections_per_user;
    running.max_connections_per_address = new.max_connections_per_address;
    running.max_registrations_per_address = new.max_registrations_per_address;
    running.log_level = new.log_level.clone();
    if old_rt != new_rt {
        // Each loop applies them on its own thread.
        for (mailbox, handle) in reloads.iter().zip(handles) {
            *mailbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(new_rt.clone());
            handle.wake();
        }
    }
    let changed = if changed.is_empty() {
        "nothing".to_string()
    } else {
        changed.join(", ")
    };
    if restart.is_empty() {
        tracing::info!("SIGHUP: reloaded {}: changed {changed}", path.display());
    } else {
        tracing::warn!(
            "SIGHUP: reloaded {}: changed {changed}; needs a restart to apply: {} \
             (still running with the old values; SIGHUP applies {})",
            path.display(),
            restart.join(", "),
            RELOADABLE_KEYS.join(", ")
        );
    }
}

// ---------------------------------------------------------------------------------
// Settings: the command line over the configuration file.

/// The server's settings after merging `--config FILE` under the command line.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    listen: SocketAddr,
    key: Option<PathBuf>,
    accounts: Option<PathBuf>,
    reset_key: Option<PathBuf>,
    retry_key: Option<PathBuf>,
    root: Option<PathBuf>,
    max_upload_size: Option<u64>,
    allow_register: bool,
    keep_alive: Option<Duration>,
    idle_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    retry: RetryArg,
    qlog_dir: Option<PathBuf>,
    max_connections_per_user: Option<usize>,
    max_connections_per_address: Option<usize>,
    max_registrations_per_address: Option<u32>,
    max_half_open_per_address: Option<usize>,
    cert: Option<PathBuf>,
    cert_key: Option<PathBuf>,
    no_quic_v1: bool,
    no_quic_v2: bool,
    hq_interop: bool,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    workers: Option<usize>,
    server_id: Option<String>,
}

/// The keys a configuration file may set: the long option names.
const CONFIG_KEYS: &[&str] = &[
    "listen",
    "key",
    "accounts",
    "reset-key",
    "retry-key",
    "root",
    "max-upload-size",
    "allow-register",
    "keep-alive",
    "idle-timeout",
    "handshake-timeout",
    "retry",
    "qlog-dir",
    "max-connections-per-user",
    "max-connections-per-address",
    "max-registrations-per-address",
    "max-half-open-per-address",
    "cert",
    "cert-key",
    "no-quic-v1",
    "no-quic-v2",
    "hq-interop",
    "log-level",
    "log-format",
    "workers",
    "server-id",
];

impl Settings {
    /// The command line, with the configuration file filling what it does not set.
    /// `--listen` and `--retry` have defaults, so the file's value wins over an
    /// unchanged default.
    fn from_args(args: &ServerArgs) -> Result<Settings, CliError> {
        let mut s = Settings {
            listen: args.listen,
            key: args.key.clone(),
            accounts: args.accounts.clone(),
            reset_key: args.reset_key.clone(),
            retry_key: args.retry_key.clone(),
            root: args.root.clone(),
            max_upload_size: args.max_upload_size,
            allow_register: args.allow_register,
            keep_alive: args.keep_alive,
            idle_timeout: args.idle_timeout,
            handshake_timeout: args.handshake_timeout,
            retry: args.retry,
            qlog_dir: args.qlog_dir.clone(),
            max_connections_per_user: args.max_connections_per_user,
            max_connections_per_address: args.max_connections_per_address,
            max_registrations_per_address: args.max_registrations_per_address,
            max_half_open_per_address: args.max_half_open_per_address,
            cert: args.cert.clone(),
            cert_key: args.cert_key.clone(),
            no_quic_v1: args.no_quic_v1,
            no_quic_v2: args.no_quic_v2,
            hq_interop: args.hq_interop,
            log_level: None,
            log_format: None,
            workers: args.workers,
            server_id: args.server_id.clone(),
        };
        if let Some(path) = &args.config {
            let text = read_config(path)?;
            let base = path.parent().unwrap_or(Path::new("."));
            let default_listen: SocketAddr = "[::]:4433".parse().expect("valid");
            let from_file = parse_config(&text)
                .map_err(|e| CliError::usage(format!("{}:{e}", path.display())))?;
            for (line, key, value) in from_file {
                let at = |msg: String| CliError::usage(format!("{}:{line}: {msg}", path.display()));
                let file_path = || Some(base.join(&value));
                match key.as_str() {
                    "listen" if s.listen == default_listen => {
                        s.listen = value.parse().map_err(|_| {
                            at(format!("'{value}' is not an address like [::]:4433"))
                        })?;
                    }
                    "key" if s.key.is_none() => s.key = file_path(),
                    "accounts" if s.accounts.is_none() => {
                        // A PostgreSQL URL is taken as it is, a file relative to here.
                        s.accounts = if is_postgres_url(&value) {
                            Some(PathBuf::from(&value))
                        } else {
                            file_path()
                        };
                    }
                    "reset-key" if s.reset_key.is_none() => s.reset_key = file_path(),
                    "retry-key" if s.retry_key.is_none() => s.retry_key = file_path(),
                    "root" if s.root.is_none() => s.root = file_path(),
                    "qlog-dir" if s.qlog_dir.is_none() => s.qlog_dir = file_path(),
                    "cert" if s.cert.is_none() => s.cert = file_path(),
                    "cert-key" if s.cert_key.is_none() => s.cert_key = file_path(),
                    "max-upload-size" if s.max_upload_size.is_none() => {
                        s.max_upload_size = Some(parse_size(&value).map_err(at)?);
                    }
                    "allow-register" => {
                        s.allow_register |= parse_bool(&value).map_err(at)?;
                    }
                    "no-quic-v1" => {
                        s.no_quic_v1 |= parse_bool(&value).map_err(at)?;
                    }
                    "no-quic-v2" => {
                        s.no_quic_v2 |= parse_bool(&value).map_err(at)?;
                    }
                    "hq-interop" => {
                        s.hq_interop |= parse_bool(&value).map_err(at)?;
                    }
                    "keep-alive" if s.keep_alive.is_none() => {
                        s.keep_alive = Some(parse_duration(&value).map_err(at)?);
                    }
                    "idle-timeout" if s.idle_timeout.is_none() => {
                        s.idle_timeout = Some(parse_duration(&value).map_err(at)?);
                    }
                    "handshake-timeout" if s.handshake_timeout.is_none() => {
                        s.handshake_timeout = Some(parse_duration(&value).map_err(at)?);
                    }
                    "max-connections-per-user" if s.max_connections_per_user.is_none() => {
                        s.max_connections_per_user = Some(parse_count(&value).map_err(at)?);
                    }
                    "max-connections-per-address" if s.max_connections_per_address.is_none() => {
                        s.max_connections_per_address = Some(parse_count(&value).map_err(at)?);
                    }
                    "max-registrations-per-address"
                        if s.max_registrations_per_address.is_none() =>
                    {
                        s.max_registrations_per_address = Some(parse_count(&value).map_err(at)?);
                    }
                    "workers" if s.workers.is_none() => {
                        s.workers = Some(parse_count(&value).map_err(at)?);
                    }
                    "server-id" if s.server_id.is_none() => s.server_id = Some(value),
                    "max-half-open-per-address" if s.max_half_open_per_address.is_none() => {
                        s.max_half_open_per_address = Some(parse_count(&value).map_err(at)?);
                    }
                    "log-level" => {
                        crate::logging::check_level(&value).map_err(at)?;
                        s.log_level = Some(value);
                    }
                    "log-format" => s.log_format = Some(value.parse().map_err(at)?),
                    "retry" if s.retry == RetryArg::Auto => {
                        s.retry = match value.as_str() {
                            "always" => RetryArg::Always,
                            "auto" => RetryArg::Auto,
                            "never" => RetryArg::Never,
                            _ => {
                                return Err(at(format!(
                                    "retry is always, auto or never, not '{value}'"
                                )))
                            }
                        };
                    }
                    _ => {} // set on the command line, which wins
                }
            }
        }
        Ok(s)
    }

    /// The keys outside [`RELOADABLE_KEYS`] whose value differs in `new`.
    fn needs_restart(&self, new: &Settings) -> Vec<&'static str> {
        // `[key, ...]` of the listed fields that differ between `$old` and `$new`.
        macro_rules! differing {
            ($old:ident, $new:ident: $($field:ident => $key:literal),* $(,)?) => {{
                let mut keys = Vec::new();
                $(if $old.$field != $new.$field { keys.push($key); })*
                keys
            }};
        }
        let old = self;
        differing!(old, new:
            listen => "listen", key => "key", accounts => "accounts", root => "root",
            allow_register => "allow-register", keep_alive => "keep-alive",
            idle_timeout => "idle-timeout", handshake_timeout => "handshake-timeout",
            retry => "retry", qlog_dir => "qlog-dir",
            max_half_open_per_address => "max-half-open-per-address", cert => "cert",
            cert_key => "cert-key", no_quic_v1 => "no-quic-v1", no_quic_v2 => "no-quic-v2",
            hq_interop => "hq-interop", log_format => "log-format",
            reset_key => "reset-key", retry_key => "retry-key", workers => "workers",
            server_id => "server-id",
        )
    }

    /// Loads the key and builds [`ServerOptions`].
    fn options(&self) -> Result<ServerOptions, CliError> {
        let key_path = self.key.as_ref().ok_or_else(|| {
            CliError::usage(
                "quill server needs --key PATH (create a host key with `quill keygen -o PATH`)",
            )
        })?;
        let host_key = HostKeyPair::read_from(key_path)
            .map_err(|e| CliError::usage(format!("host key: {e}")))?;
        let accounts = self.accounts.clone().ok_or_else(|| {
            CliError::usage(
                "quill server needs --accounts DB (a file, created if missing, or \
                 postgres://USER@HOST/DB; add accounts with \
                 `quill user add NAME --accounts DB`)",
            )
        })?;
        let qlog = self.qlog_dir.as_deref().map(crate::qlog::sink);
        let mut transport = TransportConfig {
            qlog: qlog.transpose()?,
            ..TransportConfig::default()
        };
        if let Some(t) = self.idle_timeout {
            transport.idle_timeout = t;
        }
        if let Some(t) = self.handshake_timeout {
            transport.handshake_timeout = t;
        }
        transport.keep_alive_interval = self.keep_alive;
        transport
            .validate()
            .map_err(|e| CliError::usage(e.to_string()))?;
        let retry = match self.retry {
            RetryArg::Always => RetryPolicy::Always,
            RetryArg::Auto => RetryPolicy::Auto {
                half_open_threshold: AUTO_RETRY_THRESHOLD,
            },
            RetryArg::Never => RetryPolicy::Never,
        };
        Ok(ServerOptions {
            listen: self.listen,
            host_key: Arc::new(host_key),
            accounts,
            root: self.root.clone(),
            max_upload_size: self.max_upload_size,
            allow_register: self.allow_register,
            transport,
            retry,
            sessions: SessionCaps::new(
                self.max_connections_per_user
                    .unwrap_or(DEFAULT_MAX_PER_USER),
                self.max_connections_per_address
                    .unwrap_or(DEFAULT_MAX_PER_ADDRESS),
            ),
            registrations_per_address: self
                .max_registrations_per_address
                .unwrap_or(LimiterConfig::default().registrations_per_source),
            max_half_open_per_address: self
                .max_half_open_per_address
                .unwrap_or(EndpointConfig::default().max_half_open_per_address),
            certificate: match (&self.cert, &self.cert_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                _ => {
                    return Err(CliError::usage(
                        "--cert and --cert-key go together: give both PEM files",
                    ))
                }
            },
            quic_v1: !self.no_quic_v1,
            quic_v2: !self.no_quic_v2,
            hq_interop: self.hq_interop,
            reset_key: self
                .reset_key
                .as_deref()
                .map(|p| read_secret("--reset-key", p))
                .transpose()?,
            retry_key: self
                .retry_key
                .as_deref()
                .map(|p| read_secret("--retry-key", p))
                .transpose()?,
            workers: self
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            server_id: match &self.server_id {
                Some(id) => {
                    parse_server_id(id).map_err(|e| CliError::usage(format!("--server-id: {e}")))?
                }
                None => vec![0; quill_transport::proto::DEFAULT_SERVER_ID_LEN],
            },
        })
    }
}

fn read_config(path: &Path) -> Result<String, CliError> {
    let fail = |e: io::Error| CliError::usage(format!("config file {}: {e}", path.display()));
    let file = File::open(path).map_err(fail)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE)
        .read_to_string(&mut text)
        .map_err(fail)?;
    Ok(text)
}

/// Parses `key = value` lines (`#` starts a comment line; values may be quoted).
/// Returns `(line number, key, value)`; an unknown key or a line without `=` is an
/// error `"LINE: message"`.
fn parse_config(text: &str) -> Result<Vec<(usize, String, String)>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{n}: expected `key = value`, found '{line}'"))?;
        let key = key.trim().replace('_', "-");
        if !CONFIG_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "{n}: unknown key '{key}'; known keys: {}",
                CONFIG_KEYS.join(", ")
            ));
        }
        let mut value = value.trim();
        if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value = &value[1..value.len() - 1];
        }
        out.push((n, key, value.to_owned()));
    }
    Ok(out)
}

fn parse_count<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("'{v}' is not a count (a whole number, 0 for no limit)"))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

// ---------------------------------------------------------------------------------
// The event-loop handler: logins and stream services.

/// One bidirectional stream being served.
pub(crate) enum Service {
    /// Reading the request line (at most `MAX_LINE` bytes plus its `\n`).
    Request { line: Vec<u8> },
    /// Echoing.
    Echo(Echo),
    /// Receiving a PUT into its temporary file.
    Put(Box<Upload>),
    /// A pool job owns this stream's work (hashing for GET, commit of a PUT); its
    /// completion sets the next state.
    Waiting,
    /// Like `Waiting`, but the client's data is left unread for the next state (a PUT
    /// whose temporary file the pool is creating).
    Pending,
    /// Sending a GET: `out[pos..]` is being written, `remaining` bytes still to read.
    Get {
        file: File,
        remaining: u64,
        out: Vec<u8>,
        pos: usize,
    },
    /// Counting bytes until FIN.
    Sink { count: u64 },
    /// Sending this many more bytes.
    Source { remaining: u64 },
    /// Writing a final answer line, then FIN.
    Answer { out: Vec<u8>, pos: usize },
    /// An HTTP/0.9 request that cannot be served: HTTP/0.9 has no error answer, so
    /// the stream is reset.
    Reset,
}

struct Entry {
    svc: Service,
    /// The peer's side is over (FIN or reset); input is no longer read.
    input_done: bool,
}

/// Slow file work for the worker pool.
pub(crate) enum Job {
    /// A file request in an account's space (`serve_files.rs`): GET, PUT, LIST, MKDIR, RM.
    File(Box<FileJob>),
    /// Open a file for an HTTP/0.9 GET (no answer line, no hash).
    Open(PathBuf),
    /// fsync and rename a complete, verified PUT.
    Commit(Box<Upload>),
}

struct FileServer {
    verifier: Arc<LoginVerifier>,
    /// Canonical root of the file service.
    root: Option<PathBuf>,
    /// `--max-upload-size`.
    max_upload_size: Option<u64>,
    streams: HashMap<(ConnectionHandle, StreamId), Entry>,
    buf: Vec<u8>,
    /// To wake the loop when a stream used its budget and has more to do.
    wake: Option<LoopHandle>,
    /// Connections whose `connection accepted` line is written.
    accepted: HashSet<ConnectionHandle>,
    /// What SINK and SOURCE moved per connection, for `STATS` (removed with the
    /// connection).
    perf: HashMap<ConnectionHandle, PerfCounters>,
    /// Settings from a SIGHUP, applied on the next wake-up ([`reload`]).
    reloads: Arc<Mutex<Option<Runtime>>>,
}

impl Handler for FileServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::LoginRequested(req) => {
                self.log_accepted(ctx, h);
                // driver::login logs the verdict (user, address, the server's reason).
                verify_on_pool(ctx, &self.verifier, h, req, |_, _, _: &Verdict| {});
            }
            Event::HandshakeConfirmed { .. } => self.log_accepted(ctx, h),
            Event::Stream(StreamEvent::Opened { .. }) => {
                let Some(c) = ctx.connection(h) else { return };
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    self.streams.insert(
                        (h, id),
                        Entry {
                            svc: Service::Request { line: Vec::new() },
                            input_done: false,
                        },
                    );
                }
                // No service uses unidirectional streams.
                while let Some(id) = c.accept_stream(Dir::Uni) {
                    let _ = c.stop_sending(id, STREAM_ABANDONED);
                }
            }
            Event::ConnectionLost(e) => {
                self.accepted.remove(&h);
                let now = ctx.now();
                if let Some(c) = ctx.connection(h) {
                    log_closed(c, &e, now);
                }
                self.streams.retain(|k, _| k.0 != h);
                self.perf.remove(&h);
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, _ctx: &mut Context<'_, Self>) {
        let reload = self
            .reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = reload {
            // Applies to new logins and uploads; nothing in progress is touched.
            self.max_upload_size = rt.max_upload_size;
            self.verifier
                .sessions
                .set_caps(rt.max_connections_per_user, rt.max_connections_per_address);
            self.verifier
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_registrations_per_source(rt.max_registrations_per_address);
            tracing::debug!("SIGHUP settings applied on the loop thread: {rt:?}");
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let files = Files {
            root: self.root.as_deref(),
            max_upload_size: self.max_upload_size,
        };
        let buf = &mut self.buf;
        let perf = &mut self.perf;
        let mut jobs = Vec::new();
        let mut busy = false;
        self.streams.retain(|&(h, id), entry| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            let step = pump(c, id, entry, files, buf, perf.entry(h).or_default());
            busy |= step.busy;
            if let Some(job) = step.job {
                jobs.push((h, id, job));
            }
            step.keep
        });
        for (h, id, job) in jobs {
            self.start_job(ctx, h, id, job);
        }
        if busy {
            if let Some(w) = &self.wake {
                w.wake();
            }
        }
    }
}

impl FileServer {
    /// `connection accepted`, once per connection: the key exchange is done (quill's
    /// version: the login request came with it; QUIC v1: the TLS handshake).
    fn log_accepted(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle) {
        if !self.accepted.insert(h) {
            return;
        }
        let Some(c) = ctx.connection(h) else { return };
        let version = c.version();
        let kx = match c.key_exchange_group() {
            Some(g) => format!("{g:?}"),
            None if version == quill_transport::wire::QUILL_VERSION => {
                "X25519+ML-KEM-768".to_string()
            }
            None => "-".to_string(),
        };
        let suite = c.suite().map_or("-".to_string(), |s| format!("{s:?}"));
        let alpn = c
            .alpn()
            .map(|a| String::from_utf8_lossy(a).escape_debug().to_string());
        tracing::info!(
            peer = %c.remote_address(),
            cid = %c.local_cid(),
            version = quill_transport::wire::version_name(version),
            suite,
            kx,
            alpn,
            "connection accepted"
        );
    }

    /// Runs `job` on the pool; its completion sets the stream's next state. When the
    /// pool's queue is full, a GET is answered "busy" and a commit runs here (an fsync
    /// of one file: bounded, and the upload must not be lost).
    fn start_job(
        &mut self,
        ctx: &mut Context<'_, Self>,
        h: ConnectionHandle,
        id: StreamId,
        job: Job,
    ) {
        if !ctx.pool_has_room() {
            let next = match job {
                Job::File(_) => refuse("server busy, try again"),
                Job::Open(_) => Service::Reset,
                Job::Commit(upload) => commit(*upload),
            };
            if let Some(entry) = self.streams.get_mut(&(h, id)) {
                entry.svc = next;
            }
            return;
        }
        let run = move || -> Completion<FileServer> {
            let next = match job {
                Job::File(job) => run_file_job(*job),
                Job::Open(path) => start_hq_get(&path),
                Job::Commit(upload) => commit(*upload),
            };
            Box::new(
                move |server: &mut FileServer, _ctx: &mut Context<'_, FileServer>| {
                    if let Some(entry) = server.streams.get_mut(&(h, id)) {
                        entry.svc = next;
                    }
                },
            )
        };
        if ctx.spawn(run).is_err() {
            // Cannot happen after `pool_has_room`; the job (and its temporary file) is
            // dropped and the client told to retry.
            if let Some(entry) = self.streams.get_mut(&(h, id)) {
                entry.svc = refuse("server busy, try again");
            }
        }
    }
}

/// `connection closed`: who closed, the code and reason, how long the connection
/// lasted and the UDP payload bytes each way.
fn log_closed(c: &Connection, e: &ConnectionError, now: Instant) {
    // Codes: `app/0x0` for an application's, the name (or number) for a transport's.
    use quill_transport::wire::TransportErrorCode;
    let (by, code, reason) = match e {
        ConnectionError::ClosedByPeer { code, app, reason } => (
            "client",
            match app {
                true => format!("app/{code:#x}"),
                false => TransportErrorCode(*code).to_string(),
            },
            reason.clone(),
        ),
        ConnectionError::ClosedLocally { code, reason } => {
            ("server", format!("app/{code:#x}"), reason.clone())
        }
        ConnectionError::LoginRefused { reason } => (
            "server",
            TransportErrorCode::LOGIN_REFUSED.to_string(),
            reason.clone(),
        ),
        ConnectionError::Transport(t) => ("server", t.code.to_string(), t.reason.clone()),
        ConnectionError::TimedOut => ("idle-timeout", "-".into(), e.to_string()),
        ConnectionError::HandshakeTimedOut { .. } => {
            ("handshake-timeout", "-".into(), e.to_string())
        }
        ConnectionError::Reset => ("client", "stateless-reset".into(), e.to_string()),
        other => ("network", "-".into(), other.to_string()),
    };
    let stats = c.stats();
    tracing::info!(
        peer = %c.remote_address(),
        cid = %c.local_cid(),
        user = c.account().unwrap_or("-"),
        by = %by,
        code = %code,
        reason = reason.as_str(),
        duration = %format_args!("{:.3}s", now.saturating_duration_since(c.started()).as_secs_f64()),
        bytes_in = stats.bytes_received,
        bytes_out = stats.bytes_sent,
        "connection closed"
    );
}

/// What one stream's turn produced.
struct Step {
    keep: bool,
    busy: bool,
    job: Option<Job>,
}

impl Step {
    fn keep() -> Step {
        Step {
            keep: true,
            busy: false,
            job: None,
        }
    }
}

pub(crate) fn answer(a: Answer) -> Service {
    Service::Answer {
        out: a.line().into_bytes(),
        pos: 0,
    }
}

/// A refusal: `ERR <message>`.
pub(crate) fn refuse(message: impl Into<String>) -> Service {
    answer(Answer::Err(message.into()))
}

/// On the pool: makes a complete, verified upload durable and gives it its name.
fn commit(up: Upload) -> Service {
    match up.commit() {
        Ok(a) => answer(a),
        Err(e) => refuse(e),
    }
}

/// On the pool: hashes a file for GET; its answer line and bytes are then sent.
pub(crate) fn start_get(path: &Path) -> Service {
    match hash_file(path) {
        Ok((file, size, sha256)) => Service::Get {
            file,
            remaining: size,
            out: Answer::File { size, sha256 }.line().into_bytes(),
            pos: 0,
        },
        Err(e) => refuse(format!("cannot read the file: {e}")),
    }
}

/// On the pool: opens a file for an HTTP/0.9 GET; its bytes alone are then sent.
fn start_hq_get(path: &Path) -> Service {
    let opened = File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    match opened {
        Ok((size, file)) => Service::Get {
            file,
            remaining: size,
            out: Vec::new(),
            pos: 0,
        },
        Err(e) => {
            tracing::info!("hq-interop: cannot read {}: {e}", path.display());
            Service::Reset
        }
    }
}

/// Serves one stream for one turn.
fn pump(
    c: &mut Connection,
    id: StreamId,
    entry: &mut Entry,
    files: Files<'_>,
    buf: &mut [u8],
    perf: &mut PerfCounters,
) -> Step {
    // Some states change into others within one turn (a request becomes an echo whose
    // first bytes came with it): loop while the state changed.
    for _ in 0..4 {
        let before = std::mem::discriminant(&entry.svc);
        let step = pump_once(c, id, entry, files, buf, perf);
        if !step.keep || step.job.is_some() || std::mem::discriminant(&entry.svc) == before {
            return step;
        }
    }
    Step::keep()
}

fn pump_once(
    c: &mut Connection,
    id: StreamId,
    entry: &mut Entry,
    files: Files<'_>,
    buf: &mut [u8],
    perf: &mut PerfCounters,
) -> Step {
    let mut step = Step::keep();
    match &mut entry.svc {
        Service::Request { line } => loop {
            if entry.input_done {
                entry.svc = if c.alpn() == Some(ALPN_HQ) {
                    // HTTP/0.9 clients may end the request with FIN alone.
                    start_hq(id, line, files, &mut step)
                } else {
                    refuse("the request line must end with a newline")
                };
                break;
            }
            let room = (MAX_LINE + 1 - line.len()).min(buf.len());
            match c.read(id, &mut buf[..room]) {
                Ok(ReadOutcome::Data(n)) => {
                    let start = line.len();
                    line.extend_from_slice(&buf[..n]);
                    if let Some(nl) = line[start..].iter().position(|&b| b == b'\n') {
                        let rest = line.split_off(start + nl + 1);
                        line.pop();
                        entry.svc = start_service(c, id, line, rest, files, &mut step, perf);
                        break;
                    }
                    if line.len() > MAX_LINE {
                        entry.svc = if c.alpn() == Some(ALPN_HQ) {
                            Service::Reset
                        } else {
                            refuse("request line too long")
                        };
                        break;
                    }
                }
                Ok(ReadOutcome::Finished) => entry.input_done = true,
                Ok(ReadOutcome::Blocked) => break,
                Err(_) => return abandon(c, id),
            }
        },
        Service::Echo(echo) => {
            let pumped = echo.pump(c, id, buf, ECHO_BUFFER, IO_BUDGET);
            entry.input_done = echo.peer_finished();
            match pumped {
                Pumped::Failed => return abandon(c, id),
                Pumped::Done => {
                    return Step {
                        keep: false,
                        ..Step::keep()
                    }
                }
                Pumped::Moved(moved) => step.busy = moved >= IO_BUDGET,
            }
        }
        Service::Put(up) => {
            let mut moved = 0;
            while moved < IO_BUDGET {
                match c.read(id, buf) {
                    Ok(ReadOutcome::Data(n)) => {
                        moved += n;
                        if let Err(e) = up.write(&buf[..n]) {
                            entry.svc = refuse(e);
                            return step;
                        }
                    }
                    Ok(ReadOutcome::Finished) => {
                        entry.input_done = true;
                        if let Err(e) = up.verify() {
                            entry.svc = refuse(e);
                            return step;
                        }
                        let Service::Put(up) = std::mem::replace(&mut entry.svc, Service::Waiting)
                        else {
                            unreachable!("matched above")
                        };
                        step.job = Some(Job::Commit(up));
                        return step;
                    }
                    Ok(ReadOutcome::Blocked) => return step,
                    Err(_) => return abandon(c, id),
                }
            }
            step.busy = true;
        }
        Service::Waiting => step.busy = discard_input(c, id, &mut entry.input_done, buf),
        Service::Pending => {}
        Service::Get {
            file,
            remaining,
            out,
            pos,
        } => {
            step.busy = discard_input(c, id, &mut entry.input_done, buf);
            let mut moved = 0;
            loop {
                if *pos == out.len() {
                    if *remaining == 0 {
                        let _ = c.finish(id);
                        step.keep = !entry.input_done;
                        return step;
                    }
                    if moved >= IO_BUDGET {
                        step.busy = true;
                        break;
                    }
                    let want = (*remaining).min(CHUNK as u64) as usize;
                    out.resize(want, 0);
                    match file.read(&mut out[..want]) {
                        Ok(0) | Err(_) => {
                            // The file shrank (or failed) after it was hashed.
                            let _ = c.reset_stream(id, STREAM_ABANDONED);
                            step.keep = !entry.input_done;
                            return step;
                        }
                        Ok(n) => {
                            out.truncate(n);
                            *pos = 0;
                            *remaining -= n as u64;
                            moved += n;
                        }
                    }
                }
                match c.write(id, &out[*pos..]) {
                    Ok(0) | Err(quill_transport::proto::WriteError::Blocked) => break,
                    Ok(n) => *pos += n,
                    Err(_) => return abandon(c, id),
                }
            }
        }
        Service::Sink { count } => {
            let mut moved = 0;
            while moved < IO_BUDGET {
                match c.read(id, buf) {
                    Ok(ReadOutcome::Data(n)) => {
                        moved += n;
                        *count += n as u64;
                        perf.bytes_in += n as u64;
                    }
                    Ok(ReadOutcome::Finished) => {
                        entry.input_done = true;
                        entry.svc = answer(Answer::Count(*count));
                        return step;
                    }
                    Ok(ReadOutcome::Blocked) => return step,
                    Err(_) => return abandon(c, id),
                }
            }
            step.busy = true;
        }
        Service::Source { remaining } => {
            step.busy = discard_input(c, id, &mut entry.input_done, buf);
            static ZEROS: [u8; CHUNK] = [0u8; CHUNK];
            let mut moved = 0;
            while *remaining > 0 && moved < IO_BUDGET {
                let want = (*remaining).min(CHUNK as u64) as usize;
                match c.write(id, &ZEROS[..want]) {
                    Ok(0) | Err(quill_transport::proto::WriteError::Blocked) => return step,
                    Ok(n) => {
                        *remaining -= n as u64;
                        moved += n;
                        perf.bytes_out += n as u64;
                    }
                    Err(_) => return abandon(c, id),
                }
            }
            if *remaining == 0 {
                let _ = c.finish(id);
                step.keep = !entry.input_done;
                return step;
            }
            step.busy = true;
        }
        Service::Reset => return abandon(c, id),
        Service::Answer { out, pos } => {
            if !entry.input_done && !out.starts_with(b"ERR") {
                // An answer that is no refusal (the pool was quicker than the client's
                // FIN): what the client still sends is read and dropped, as for a GET.
                step.busy = discard_input(c, id, &mut entry.input_done, buf);
            }
            if !entry.input_done {
                // The answer is final (a refusal, since every other answer comes after
                // the client's FIN): nothing the client still sends will be read.
                // RFC 9000 §3.5: "If an application is no longer interested in the data
                // it is receiving on a stream, it can abort reading the stream and
                // specify an application error code." The STOP_SENDING makes the client
                // reset its side: its blocked writes end, and it reads this answer.
                let _ = c.stop_sending(id, STREAM_ANSWERED);
                entry.input_done = true;
            }
            while *pos < out.len() {
                match c.write(id, &out[*pos..]) {
                    Ok(0) | Err(quill_transport::proto::WriteError::Blocked) => return step,
                    Ok(n) => *pos += n,
                    Err(_) => return abandon(c, id),
                }
            }
            if *pos == out.len() {
                let _ = c.finish(id);
                // The answer is with the connection, which delivers it; the client's
                // side was finished or stopped above, or is still being drained.
                return Step {
                    keep: !entry.input_done,
                    ..step
                };
            }
        }
    }
    step
}

/// Reads and drops the peer's data (services that take none). Returns true when it
/// stopped at the budget with more possibly waiting: the caller marks the stream busy,
/// so the loop comes back at once. Left undrained, the data would hold the stream's
/// flow-control window closed, and a client with no credit sends nothing that would
/// wake the loop again.
#[must_use]
fn discard_input(c: &mut Connection, id: StreamId, done: &mut bool, buf: &mut [u8]) -> bool {
    let mut moved = 0;
    while !*done {
        if moved >= IO_BUDGET {
            return true;
        }
        match c.read(id, buf) {
            Ok(ReadOutcome::Data(n)) => moved += n,
            Ok(ReadOutcome::Blocked) => return false,
            Ok(ReadOutcome::Finished) | Err(_) => *done = true,
        }
    }
    false
}

/// The peer reset or stopped the stream: give up on it in both directions.
fn abandon(c: &mut Connection, id: StreamId) -> Step {
    let _ = c.reset_stream(id, STREAM_ABANDONED);
    let _ = c.stop_sending(id, STREAM_ABANDONED);
    Step {
        keep: false,
        busy: false,
        job: None,
    }
}

/// Starts the service a request line asks for; `rest` is what followed the line.
fn start_service(
    c: &Connection,
    id: StreamId,
    line: &[u8],
    rest: Vec<u8>,
    files: Files<'_>,
    step: &mut Step,
    perf: &mut PerfCounters,
) -> Service {
    if c.alpn() == Some(ALPN_HQ) {
        return start_hq(id, line, files, step);
    }
    let user = c.account().unwrap_or("?").to_owned();
    let Ok(line) = std::str::from_utf8(line) else {
        return refuse("the request line is not UTF-8");
    };
    let request = match Request::parse(line) {
        Ok(r) => r,
        Err(e) => return refuse(e),
    };
    let request_line: String = line.chars().take(200).collect();
    tracing::info!(
        peer = %c.remote_address(),
        cid = %c.local_cid(),
        user = user.as_str(),
        stream = id.0,
        request = request_line.as_str(),
        "request"
    );
    match request {
        Request::Echo => Service::Echo(Echo::new(rest)),
        Request::Sink => {
            perf.start();
            perf.bytes_in += rest.len() as u64;
            Service::Sink {
                count: rest.len() as u64,
            }
        }
        Request::Source { bytes } => {
            perf.start();
            Service::Source { remaining: bytes }
        }
        Request::Stats => Service::Answer {
            out: perf.stats(c).line().into_bytes(),
            pos: 0,
        },
        request => match FileJob::new(files, c.account(), request, rest) {
            Ok(job) => {
                let next = job.waiting();
                step.job = Some(Job::File(Box::new(job)));
                next
            }
            Err(e) => refuse(e),
        },
    }
}

/// An HTTP/0.9 request (`GET /PATH`, the line's `\r` optional): the file from the
/// root through the file service's path guard, opened on the pool; anything else
/// resets the stream.
fn start_hq(id: StreamId, line: &[u8], files: Files<'_>, step: &mut Step) -> Service {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let path = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("GET /"));
    let Some(path) = path else {
        tracing::info!("hq-interop {id:?}: not a GET request");
        return Service::Reset;
    };
    tracing::info!(
        "anonymous {id:?}: hq-interop GET /{}",
        path.chars().take(200).collect::<String>()
    );
    match files.get(path) {
        Ok(p) => {
            step.job = Some(Job::Open(p));
            Service::Waiting
        }
        Err(e) => {
            tracing::info!("hq-interop {id:?}: {e}");
            Service::Reset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_timeout_from_the_file_and_the_command_line() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.conf");
        std::fs::write(
            &file,
            "handshake-timeout = 3s\nmax-half-open-per-address = 7\n",
        )
        .unwrap();
        let settings = |extra: &[&str]| {
            let mut argv = vec!["quill", "server", "--config", file.to_str().unwrap()];
            argv.extend_from_slice(extra);
            let cli = crate::args::Cli::try_parse_from(argv).unwrap();
            let crate::args::Command::Server(args) = cli.command else {
                unreachable!("parsed as server")
            };
            Settings::from_args(&args).unwrap()
        };
        assert_eq!(
            settings(&[]).handshake_timeout,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            settings(&["--handshake-timeout", "20s"]).handshake_timeout,
            Some(Duration::from_secs(20)),
            "the command line wins"
        );
        assert_eq!(settings(&[]).max_half_open_per_address, Some(7));
        assert_eq!(
            settings(&["--max-half-open-per-address", "0"]).max_half_open_per_address,
            Some(0)
        );
    }

    #[test]
    fn every_config_key_is_reloaded_or_reported_as_needing_a_restart() {
        use clap::Parser;
        let sample = |key: &str| -> &str {
            match key {
                "listen" => "127.0.0.1:5000",
                "max-upload-size" => "5",
                "allow-register" | "no-quic-v1" | "no-quic-v2" | "hq-interop" => "yes",
                "keep-alive" | "idle-timeout" | "handshake-timeout" => "7s",
                "retry" => "always",
                "log-level" => "debug",
                "log-format" => "json",
                "workers" => "2",
                "server-id" => "0x0a01",
                k if k.starts_with("max-") => "3",
                "key" | "accounts" | "root" | "qlog-dir" | "cert" | "cert-key" | "reset-key"
                | "retry-key" => "some/path",
                other => panic!(
                    "give '{other}' a sample value here, and decide whether SIGHUP reloads it"
                ),
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.conf");
        let settings = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let argv = ["quill", "server", "--config", file.to_str().unwrap()];
            let cli = crate::args::Cli::try_parse_from(argv).unwrap();
            let crate::args::Command::Server(args) = cli.command else {
                unreachable!("parsed as server")
            };
            Settings::from_args(&args).unwrap()
        };
        let base = settings("");
        for key in CONFIG_KEYS {
            let new = settings(&format!("{key} = {}\n", sample(key)));
            assert_ne!(new, base, "{key} changed nothing");
            let restart = base.needs_restart(&new);
            if RELOADABLE_KEYS.contains(key) {
                assert!(restart.is_empty(), "{key}: {restart:?}");
            } else {
                assert_eq!(restart, vec![*key], "a change to {key} must be reported");
            }
        }
    }

    #[test]
    fn config_lines() {
        let text = "# comment\nlisten = 127.0.0.1:5000\n\nroot = \"files\"\nallow_register = yes\n";
        let got = parse_config(text).unwrap();
        assert_eq!(
            got,
            vec![
                (2, "listen".into(), "127.0.0.1:5000".into()),
                (4, "root".into(), "files".into()),
                (5, "allow-register".into(), "yes".into()),
            ]
        );
        let err = parse_config("listen = x\ncolour = blue\n").unwrap_err();
        assert!(err.starts_with("2: unknown key 'colour'"), "{err}");
        assert!(parse_config("just words")
            .unwrap_err()
            .starts_with("1: expected"));
    }
}
