//! The quill interop peer (`quill-interop-peer`), like the QUIC interop runner's
//! endpoint images: one executable with a `server` and a `client` role and the knobs
//! the scenarios need.
//!
//! # Protocol
//!
//! The file service of `quill server` (docs/SPEC.md §10), GET only: the client opens a
//! bidirectional stream, writes `GET <path>\n` and FIN; the server answers
//! `OK <size> <sha256-hex>\n` and the bytes, then FIN, or `ERR <message>\n`. Requests,
//! answers and the path guard are `quill server`'s own ([`quill_transport::service`]). Logins go
//! through the same path as `quill server`: [`LoginVerifier`] over a SQLite account
//! store, verified on the worker pool with [`verify_on_pool`].
//!
//! # Output
//!
//! - server: prints `listening ADDR` on stdout once bound; serves until stdin closes or
//!   SIGTERM/SIGINT arrives; then closes every connection gracefully (giving up after
//!   [`SHUTDOWN_GRACE`]) and prints one JSON
//!   line with its totals (see [`ServerReport`]).
//! - client: prints zero or more event lines `{"event": ...}` and then exactly one
//!   result line `{"role":"client", ...}` (see [`ClientReport`]); exit 0 when it did
//!   everything it was asked, 1 otherwise. A watchdog ends it with an error result
//!   after `--timeout-secs`.
//!
//! Bad command-line input: one line on stderr, exit 2.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::packet::Suite;
use quill_transport::auth::LoginVerifier;
use quill_transport::auth::{AccountStore, SqliteStore};
use quill_transport::driver::blocking::{self, BlockingConnection, ConnectError};
use quill_transport::driver::verify_on_pool;
use quill_transport::driver::TerminationSignals;
use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Context, EventLoop, Handler, LoopHandle};
use quill_transport::proto::{
    ClientConfig, ConnectionError, ConnectionStats, Dir, Event, HostKeyPolicy, Login, ReadOutcome,
    ServerConfig, StreamEvent, StreamId, StreamsConfig, TransportConfig,
};
use quill_transport::proto::{ConnectionHandle, EndpointConfig, RetryPolicy};
use quill_transport::service::{check_relative, sha256_hex, Answer, Files, Request, MAX_LINE};
use serde_json::json;
use zeroize::Zeroizing;

mod hq;

/// Largest file the peer server serves (it reads a file whole before sending it).
pub const MAX_FILE: u64 = 64 << 20;
/// Exit code for bad command-line input.
pub const USAGE: i32 = 2;

/// Command line of `quill-interop-peer`.
#[derive(Parser, Debug)]
#[command(
    name = "quill-interop-peer",
    about = "quill interop peer (server or client)"
)]
pub struct PeerCli {
    /// Role.
    #[command(subcommand)]
    pub role: Role,
}

/// Server or client.
#[derive(Subcommand, Debug)]
pub enum Role {
    /// Serve files from --root until stdin closes or SIGTERM.
    Server(ServerArgs),
    /// Fetch files from a server and print one JSON result line.
    Client(ClientArgs),
    /// QUIC v1 with TLS 1.3 and the interop runner's HTTP/0.9 (`hq-interop`), with the
    /// reference peers' command line (`interop-tests/src/refpeers/hq.rs`).
    Hq {
        /// `server` or `client`.
        #[command(subcommand)]
        cmd: crate::refpeers::hq::HqCommand,
    },
}

/// Knobs both roles share.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Name of the scenario (logged only; behaviour comes from the other flags).
    #[arg(long, default_value = "none")]
    pub testcase: String,
    /// AEAD suites offered/accepted, comma-separated: aes256, aes128, chacha20.
    #[arg(long, default_value = "aes256,aes128,chacha20")]
    pub suites: String,
    /// Initiate a key update after this many packets in one key phase (>= 1000).
    #[arg(long)]
    pub key_update: Option<u64>,
    /// Small flow-control windows: 64 KiB per stream, 128 KiB per connection, no
    /// auto-tuning.
    #[arg(long)]
    pub small_windows: bool,
    /// Idle timeout in milliseconds.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Keep-alive interval in milliseconds.
    #[arg(long)]
    pub keep_alive_ms: Option<u64>,
    /// Acknowledge after this many ack-eliciting packets.
    #[arg(long)]
    pub ack_every: Option<u32>,
    /// Account name.
    #[arg(long, default_value = "interop")]
    pub user: String,
    /// Password.
    #[arg(long, default_value = "interop-password-2026")]
    pub password: String,
    /// Fault injection (hidden): truncate-file (server), ignore-path-challenge (either).
    #[arg(long, hide = true)]
    pub fault: Option<String>,
}

/// `quill-interop-peer server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Directory of the files to serve.
    #[arg(long)]
    pub root: PathBuf,
    /// Directory for the account database (a temporary one if omitted).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Send a Retry to every new connection.
    #[arg(long)]
    pub retry: bool,
    /// Shared knobs.
    #[command(flatten)]
    pub common: Common,
}

/// `quill-interop-peer client`.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Server (or relay) address.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Where downloaded files are written.
    #[arg(long)]
    pub download: PathBuf,
    /// Files to fetch, paths under the server's root.
    #[command(flatten)]
    pub files: crate::refpeers::hq::FileList,
    /// Connections to make one after another; connection i fetches file i (mod the
    /// number of files). With 1, one connection fetches every file.
    #[arg(long, default_value_t = 1)]
    pub handshakes: u32,
    /// Streams in flight at once on one connection.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Pause between files in milliseconds (sequential fetching only).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Keep-alive check: after the first file stay idle this long, fetch the rest,
    /// print `{"event":"vanish_now"}` and wait for the connection to end.
    #[arg(long)]
    pub idle_ms: Option<u64>,
    /// From the middle of the file list on, ask for a key update before each file
    /// until one happened (sequential fetching only).
    #[arg(long)]
    pub initiate_key_update: bool,
    /// Give up (error result, exit 1) after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Shared knobs.
    #[command(flatten)]
    pub common: Common,
}

/// Entry point of `quill-interop-peer`.
pub fn main() {
    std::process::exit(main_from(std::env::args()));
}

/// Runs the peer with these arguments (the first is the program name, as in
/// `std::env::args`); returns the exit code. `quill-interop peer ...` calls this too.
pub fn main_from(args: impl IntoIterator<Item = String>) -> i32 {
    let cli = match PeerCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            if !e.use_stderr() {
                let _ = e.print();
                return 0;
            }
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            eprintln!("quill-interop-peer: {first} (see --help)");
            return USAGE;
        }
    };
    let code = match cli.role {
        Role::Server(a) => match run_server(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("quill-interop-peer server: {e}");
                e.code()
            }
        },
        Role::Client(a) => run_client(&a),
        Role::Hq { cmd } => hq::run(cmd),
    };
    code
}

/// A one-line error with an exit code.
#[derive(Debug)]
pub struct PeerError {
    usage: bool,
    msg: String,
}

impl PeerError {
    fn usage(msg: impl Into<String>) -> PeerError {
        PeerError {
            usage: true,
            msg: msg.into(),
        }
    }
    fn other(msg: impl Into<String>) -> PeerError {
        PeerError {
            usage: false,
            msg: msg.into(),
        }
    }
    /// Exit code: 2 for bad input, 1 otherwise.
    pub fn code(&self) -> i32 {
        if self.usage {
            USAGE
        } else {
            1
        }
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Parses `aes256,aes128,chacha20`.
pub fn parse_suites(s: &str) -> Result<Vec<Suite>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let suite = match part {
            "aes256" => Suite::Aes256Gcm,
            "aes128" => Suite::Aes128Gcm,
            "chacha20" => Suite::ChaCha20Poly1305,
            _ => {
                return Err(format!(
                    "unknown suite '{part}'; use aes256, aes128 or chacha20"
                ))
            }
        };
        if !out.contains(&suite) {
            out.push(suite);
        }
    }
    if out.is_empty() {
        return Err("--suites needs at least one suite".into());
    }
    Ok(out)
}

/// A fault the peer can be told to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Server: serve every file without its last byte (with a matching header).
    TruncateFile,
    /// Either: never answer PATH_CHALLENGE.
    IgnorePathChallenge,
}

fn parse_fault(s: &Option<String>) -> Result<Option<Fault>, PeerError> {
    match s.as_deref() {
        None => Ok(None),
        Some("truncate-file") => Ok(Some(Fault::TruncateFile)),
        Some("ignore-path-challenge") => Ok(Some(Fault::IgnorePathChallenge)),
        Some(other) => Err(PeerError::usage(format!(
            "unknown fault '{other}'; use truncate-file or ignore-path-challenge"
        ))),
    }
}

/// The transport configuration the shared knobs ask for.
fn transport_config(c: &Common, fault: Option<Fault>) -> Result<TransportConfig, PeerError> {
    let mut t = TransportConfig::default();
    if let Some(ms) = c.idle_timeout_ms {
        t.idle_timeout = Duration::from_millis(ms);
    }
    // The lossy scenarios (handshakeloss, handshakecorruption) judge a handshake by
    // the idle timeout, as before the handshake timeout existed.
    t.handshake_timeout = t
        .idle_timeout
        .clamp(t.handshake_timeout, Duration::from_secs(3600));
    t.keep_alive_interval = c.keep_alive_ms.map(Duration::from_millis);
    if let Some(n) = c.key_update {
        t.key_update_interval = n;
    }
    if let Some(n) = c.ack_every {
        t.ack_eliciting_threshold = n;
    }
    if c.small_windows {
        const KIB: u64 = 1024;
        t.streams = StreamsConfig {
            stream_receive_window: 64 * KIB,
            max_stream_receive_window: 64 * KIB,
            receive_window: 128 * KIB,
            max_receive_window: 128 * KIB,
            ..StreamsConfig::default()
        };
    }
    t.ignore_path_challenge = fault == Some(Fault::IgnorePathChallenge);
    t.validate().map_err(|e| PeerError::usage(e.to_string()))?;
    Ok(t)
}

// ---------------------------------------------------------------------------------
// Server

/// Totals the server prints when it stops.
#[derive(Debug, Clone, Default)]
pub struct ServerReport {
    /// Connections that asked to log in.
    pub connections: u64,
    /// Logins accepted.
    pub logins_accepted: u64,
    /// Logins refused.
    pub logins_refused: u64,
    /// Files served completely.
    pub files_served: u64,
    /// Sum of every connection's counters.
    pub stats: ConnectionStats,
    /// Retry packets sent by the endpoint.
    pub retry_sent: u64,
}

fn add_stats(total: &mut ConnectionStats, s: &ConnectionStats) {
    total.packets_sent += s.packets_sent;
    total.packets_received += s.packets_received;
    total.bytes_sent += s.bytes_sent;
    total.bytes_received += s.bytes_received;
    total.packets_lost += s.packets_lost;
    total.packets_dropped += s.packets_dropped;
    total.keep_alives_sent += s.keep_alives_sent;
    total.key_updates += s.key_updates;
    total.key_updates_initiated += s.key_updates_initiated;
    total.retries += s.retries;
    total.congestion_events += s.congestion_events;
    total.ptos += s.ptos;
    total.migrations += s.migrations;
    total.paths_validated += s.paths_validated;
}

/// A connection's counters as JSON.
pub fn stats_json(s: &ConnectionStats) -> serde_json::Value {
    json!({
        "packets_sent": s.packets_sent,
        "packets_received": s.packets_received,
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "packets_lost": s.packets_lost,
        "packets_dropped": s.packets_dropped,
        "keep_alives_sent": s.keep_alives_sent,
        "key_updates": s.key_updates,
        "key_updates_initiated": s.key_updates_initiated,
        "retries": s.retries,
        "congestion_events": s.congestion_events,
        "ptos": s.ptos,
        "migrations": s.migrations,
        "paths_validated": s.paths_validated,
    })
}

impl ServerReport {
    /// The JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "role": "server",
            "connections": self.connections,
            "logins_accepted": self.logins_accepted,
            "logins_refused": self.logins_refused,
            "files_served": self.files_served,
            "retry_sent": self.retry_sent,
            "key_updates": self.stats.key_updates,
            "key_updates_initiated": self.stats.key_updates_initiated,
            "paths_validated": self.stats.paths_validated,
            "migrations": self.stats.migrations,
            "stats": stats_json(&self.stats),
        })
    }
}

/// One stream being served.
enum Serve {
    /// Reading the request line.
    Request(Vec<u8>),
    /// Writing `out[pos..]`, then FIN.
    Send {
        out: Vec<u8>,
        pos: usize,
        file: bool,
    },
}

/// What the server's streams speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    /// The file service of `quill server` (GET only), after a login.
    Quill,
    /// QUIC v1's `hq-interop`: `GET /path\r\n`, answered with the bare file.
    Hq,
}

struct PeerServer {
    /// Logins (quill's own version); `None` serves QUIC v1 only.
    verifier: Option<Arc<LoginVerifier>>,
    app: App,
    /// QUIC v1: what the last connection negotiated.
    negotiated: crate::refpeers::hq::Negotiated,
    /// QUIC v1: requests refused.
    refused: u64,
    root: PathBuf,
    fault: Option<Fault>,
    streams: HashMap<(ConnectionHandle, StreamId), Serve>,
    live: HashMap<ConnectionHandle, ConnectionStats>,
    report: ServerReport,
    buf: Vec<u8>,
}

/// The answer to one request line (and whether it carries a file): the file service's
/// GET (docs/SPEC.md §10) under `root` (canonical), with `quill server`'s path guard.
fn answer_get(root: &Path, fault: Option<Fault>, line: &[u8]) -> (Vec<u8>, bool) {
    let err = |m: String| (Answer::Err(m).line().into_bytes(), false);
    let Ok(line) = std::str::from_utf8(line) else {
        return err("the request line is not UTF-8".into());
    };
    let path = match Request::parse(line) {
        Ok(Request::Get { path }) => path,
        Ok(_) => return err("this peer serves GET only".into()),
        Err(e) => return err(e),
    };
    let files = Files {
        root: Some(root),
        max_upload_size: None,
    };
    let full = match files.get(&path) {
        Ok(p) => p,
        Err(e) => return err(e),
    };
    let data = match std::fs::metadata(&full) {
        Ok(m) if m.len() <= MAX_FILE => std::fs::read(&full),
        Ok(_) => return err(format!("{path} is larger than {MAX_FILE} bytes")),
        Err(e) => Err(e),
    };
    let mut data = match data {
        Ok(d) => d,
        Err(e) => return err(format!("{path}: {e}")),
    };
    if fault == Some(Fault::TruncateFile) {
        data.pop();
    }
    let answer = Answer::File {
        size: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    let mut out = answer.line().into_bytes();
    out.extend_from_slice(&data);
    (out, true)
}

impl Handler for PeerServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::LoginRequested(req) => {
                let Some(verifier) = &self.verifier else {
                    let now = ctx.now();
                    if let Some(c) = ctx.connection(h) {
                        c.refuse_login(now, "this server speaks QUIC v1 only");
                    }
                    return;
                };
                self.report.connections += 1;
                self.live.entry(h).or_default();
                verify_on_pool(
                    ctx,
                    verifier,
                    h,
                    req,
                    |s: &mut Self, _, verdict| match verdict {
                        quill_transport::auth::Verdict::Accept { .. } => {
                            s.report.logins_accepted += 1
                        }
                        quill_transport::auth::Verdict::Refuse { .. } => {
                            s.report.logins_refused += 1
                        }
                    },
                );
            }
            Event::HandshakeConfirmed {
                alpn,
                key_exchange_group,
            } => {
                self.report.connections += 1;
                self.live.entry(h).or_default();
                let suite = ctx.connection(h).and_then(|c| c.suite());
                self.negotiated = hq::negotiated(alpn.as_deref(), key_exchange_group, suite);
                self.negotiated.version = ctx.connection(h).map(|c| c.version());
            }
            Event::Stream(StreamEvent::Opened { .. }) => {
                let Some(c) = ctx.connection(h) else { return };
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    self.streams.insert((h, id), Serve::Request(Vec::new()));
                }
                while let Some(id) = c.accept_stream(Dir::Uni) {
                    let _ = c.stop_sending(id, 1);
                }
            }
            Event::ConnectionLost(_) => {
                if let Some(c) = ctx.connection(h) {
                    let s = c.stats().clone();
                    self.live.insert(h, s);
                }
                if let Some(s) = self.live.remove(&h) {
                    add_stats(&mut self.report.stats, &s);
                }
                self.streams.retain(|k, _| k.0 != h);
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        for (h, s) in self.live.iter_mut() {
            if let Some(c) = ctx.connection(*h) {
                s.clone_from(c.stats());
            }
        }
        let mut streams = std::mem::take(&mut self.streams);
        let mut buf = std::mem::take(&mut self.buf);
        streams.retain(|&(h, id), serve| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            if let Serve::Request(line) = serve {
                loop {
                    match c.read(id, &mut buf) {
                        Ok(ReadOutcome::Data(n)) => {
                            line.extend_from_slice(&buf[..n]);
                            if line.len() > MAX_LINE + 1 {
                                let _ = c.reset_stream(id, 1);
                                return false;
                            }
                        }
                        Ok(ReadOutcome::Finished) => break,
                        Ok(ReadOutcome::Blocked) => return true,
                        Err(_) => {
                            let _ = c.reset_stream(id, 1);
                            return false;
                        }
                    }
                }
                // FIN received: the request is complete.
                let text = match line.iter().position(|&b| b == b'\n') {
                    Some(i) => line[..i].to_vec(),
                    None => line.clone(),
                };
                let (out, file) = match self.app {
                    App::Quill => answer_get(&self.root, self.fault, &text),
                    App::Hq => match hq::answer(&self.root, self.fault, line) {
                        Ok(data) => (data, true),
                        Err(_) => {
                            // hq-interop has no error answer: the stream is reset.
                            self.refused += 1;
                            let _ = c.reset_stream(id, hq::REFUSED);
                            return false;
                        }
                    },
                };
                *serve = Serve::Send { out, pos: 0, file };
            }
            let Serve::Send { out, pos, file } = serve else {
                return false;
            };
            while *pos < out.len() {
                match c.write(id, &out[*pos..]) {
                    Ok(0) | Err(quill_transport::proto::WriteError::Blocked) => return true,
                    Ok(n) => *pos += n,
                    Err(_) => return false,
                }
            }
            let _ = c.finish(id);
            if *file {
                self.report.files_served += 1;
            }
            false
        });
        self.buf = buf;
        self.streams = streams;
    }
}

/// How long a graceful shutdown may take before the server stops without draining
/// (a peer that vanished, or a path it cannot reach, must not keep it up).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Starts a graceful shutdown and aborts the loop if it has not ended after `grace`.
fn stop_within(handle: &LoopHandle, grace: Duration) {
    handle.shutdown();
    std::thread::sleep(grace);
    handle.abort();
}

/// Serves on `listen` until standard input closes or SIGTERM/SIGINT arrives (then
/// within [`SHUTDOWN_GRACE`]); prints `listening ADDR` once bound. Returns the
/// handler with every connection's counters summed into its report.
fn run_loop(
    listen: SocketAddr,
    endpoint: EndpointConfig,
    config: ServerConfig,
    handler: PeerServer,
) -> Result<PeerServer, PeerError> {
    let signals = TerminationSignals::block();
    let mut ev = EventLoop::bind(
        listen,
        &UdpConfig::default(),
        endpoint,
        Some(config),
        2,
        handler,
    )
    .map_err(|e| PeerError::other(format!("cannot listen on {listen}: {e}")))?;
    let handle = ev.handle();
    println!("listening {}", ev.local_addr());
    let _ = io::stdout().flush();
    let h2 = handle.clone();
    signals.on_signal(move |_| stop_within(&h2, SHUTDOWN_GRACE));
    let h3: LoopHandle = handle.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = io::stdin().lock().read_to_end(&mut sink);
        stop_within(&h3, SHUTDOWN_GRACE);
    });
    ev.run()
        .map_err(|e| PeerError::other(format!("server loop failed: {e}")))?;
    let retry_sent = ev.endpoint().stats().retry_sent;
    let server = ev.handler();
    let live: Vec<ConnectionStats> = server.live.drain().map(|(_, s)| s).collect();
    for s in &live {
        add_stats(&mut server.report.stats, s);
    }
    server.report.retry_sent = retry_sent;
    Ok(ev.into_handler())
}

/// The fixed host key of the peer's servers: interop checks transport behaviour, not
/// key management.
fn peer_host_key() -> Result<Arc<HostKeyPair>, PeerError> {
    HostKeyPair::from_seed(&[0x51; 32])
        .map(Arc::new)
        .map_err(|e| PeerError::other(e.to_string()))
}

/// The servers' endpoint: Retry for every new connection or none, and no per-address
/// limits (every client arrives through the relay's one address).
fn relay_endpoint(retry: bool) -> EndpointConfig {
    EndpointConfig {
        retry: if retry {
            RetryPolicy::Always
        } else {
            RetryPolicy::Never
        },
        per_source_handshakes_per_sec: 0,
        max_half_open_per_address: 0,
        ..EndpointConfig::default()
    }
}

/// The canonical `--root` and the state directory: `--state-dir`, or a temporary one
/// (returned too: it lives as long as the caller keeps it).
fn root_and_state(
    root: &Path,
    state_dir: Option<&Path>,
) -> Result<(PathBuf, PathBuf, Option<tempfile::TempDir>), PeerError> {
    let root = root.canonicalize().map_err(|e| {
        PeerError::usage(format!("--root {}: {e}; create it first", root.display()))
    })?;
    match state_dir {
        Some(d) => Ok((root, d.to_path_buf(), None)),
        None => {
            let tmp = tempfile::tempdir().map_err(|e| PeerError::other(e.to_string()))?;
            Ok((root, tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// `quill-interop-peer server`.
pub fn run_server(a: &ServerArgs) -> Result<(), PeerError> {
    let fault = parse_fault(&a.common.fault)?;
    let suites = parse_suites(&a.common.suites).map_err(PeerError::usage)?;
    let transport = transport_config(&a.common, fault)?;
    let (root, state, _tmp) = root_and_state(&a.root, a.state_dir.as_deref())?;
    std::fs::create_dir_all(&state)
        .map_err(|e| PeerError::usage(format!("--state-dir {}: {e}", state.display())))?;
    let db = state.join(format!("accounts-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let store = SqliteStore::open(&db).map_err(|e| PeerError::other(e.to_string()))?;
    store
        .add_user(&a.common.user, Some(a.common.password.as_bytes()), &[])
        .map_err(|e| PeerError::usage(format!("account {}: {e}", a.common.user)))?;
    let verifier = Arc::new(LoginVerifier::new(Arc::new(store), false));
    let mut config = ServerConfig::new(peer_host_key()?);
    config.transport = Arc::new(transport);
    config.suites = suites;
    let endpoint = relay_endpoint(a.retry);
    let handler = PeerServer {
        verifier: Some(verifier),
        app: App::Quill,
        negotiated: Default::default(),
        refused: 0,
        root,
        fault,
        streams: HashMap::new(),
        live: HashMap::new(),
        report: ServerReport::default(),
        buf: vec![0u8; 64 * 1024],
    };
    let server = run_loop(a.listen, endpoint, config, handler)?;
    println!("{}", server.report.to_json());
    let _ = io::stdout().flush();
    let _ = std::fs::remove_file(&db);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Client

/// What the client reports.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// It did everything it was asked.
    pub ok: bool,
    /// Handshakes completed (logged in).
    pub handshakes: u64,
    /// Files fetched and written.
    pub files: u64,
    /// Bytes of file content received.
    pub bytes: u64,
    /// Seconds from the first request to the last byte, summed over connections.
    pub seconds: f64,
    /// Negotiated suite of the last connection.
    pub suite: Option<String>,
    /// Sum of every connection's counters.
    pub stats: ConnectionStats,
    /// Why it failed: `(kind, message)`.
    pub error: Option<(String, String)>,
    /// Milliseconds from the client's start to the end of its run.
    pub elapsed_ms: u64,
    /// Keep-alive check: how the connection ended and how long after `vanish_now`.
    pub closed: Option<(String, u64)>,
}

impl ClientReport {
    /// The JSON result line.
    pub fn to_json(&self) -> serde_json::Value {
        let goodput = if self.seconds > 0.0 {
            self.bytes as f64 * 8.0 / self.seconds
        } else {
            0.0
        };
        json!({
            "role": "client",
            "ok": self.ok,
            "handshakes": self.handshakes,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "goodput_bps": goodput,
            "suite": self.suite,
            "retries": self.stats.retries,
            "key_updates": self.stats.key_updates,
            "key_updates_initiated": self.stats.key_updates_initiated,
            "stats": stats_json(&self.stats),
            "elapsed_ms": self.elapsed_ms,
            "error": self.error.as_ref().map(|(k, m)| json!({"kind": k, "message": m, "elapsed_ms": self.elapsed_ms})),
            "closed": self.closed.as_ref().map(|(k, ms)| json!({"kind": k, "elapsed_ms": ms})),
        })
    }
}

/// The error kind the runner judges by.
pub fn error_kind(e: &ConnectionError) -> &'static str {
    match e {
        ConnectionError::TimedOut => "idle_timeout",
        ConnectionError::ClosedByPeer { .. } => "closed_by_peer",
        ConnectionError::ClosedLocally { .. } => "closed_locally",
        ConnectionError::LoginRefused { .. } => "login_refused",
        ConnectionError::HostKeyRejected { .. } => "host_key_rejected",
        ConnectionError::Transport(_) => "protocol_error",
        ConnectionError::VersionMismatch { .. } => "version_mismatch",
        ConnectionError::Reset => "reset",
        ConnectionError::HandshakeTimedOut { .. } => "handshake_timeout",
        ConnectionError::Unreachable(_) => "unreachable",
    }
}

/// Prints a line on stdout at most once for the result (the watchdog and the main
/// thread race for it).
static RESULT_PRINTED: AtomicBool = AtomicBool::new(false);
static OUT: Mutex<()> = Mutex::new(());

fn print_event(name: &str) {
    let _g = OUT.lock().unwrap_or_else(|e| e.into_inner());
    println!("{}", json!({ "event": name }));
    let _ = io::stdout().flush();
}

fn print_result(r: &ClientReport) -> bool {
    let _g = OUT.lock().unwrap_or_else(|e| e.into_inner());
    if RESULT_PRINTED.swap(true, Ordering::SeqCst) {
        return false;
    }
    println!("{}", r.to_json());
    let _ = io::stdout().flush();
    true
}

/// Why one fetch failed.
struct FetchError {
    kind: String,
    message: String,
}

fn fetch_err(kind: &str, message: impl Into<String>) -> FetchError {
    FetchError {
        kind: kind.into(),
        message: message.into(),
    }
}

/// A stream error, explained with the connection's own reason when it has ended.
fn stream_err(conn: &BlockingConnection, what: &str, e: io::Error) -> FetchError {
    match conn.wait_closed(Duration::from_millis(200)) {
        Some(ce) => fetch_err(error_kind(&ce), format!("{what}: {ce}")),
        None => fetch_err("io", format!("{what}: {e}")),
    }
}

/// Fetches one file over a new stream and writes it under `dir`. Returns its size.
fn fetch(conn: &BlockingConnection, path: &str, dir: &Path) -> Result<u64, FetchError> {
    check_relative(path).map_err(|e| fetch_err("usage", e))?;
    let mut stream = loop {
        match conn.open_bi() {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(stream_err(conn, "opening a stream", e)),
        }
    };
    stream
        .write_all(format!("GET {path}\n").as_bytes())
        .and_then(|_| stream.finish())
        .map_err(|e| stream_err(conn, "sending the request", e))?;
    let mut reader = io::BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| stream_err(conn, "reading the answer", e))?;
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    let (size, sha) = match Answer::parse(&text) {
        Some(Answer::File { size, sha256 }) => (size, sha256),
        Some(Answer::Err(_)) => return Err(fetch_err("server_error", format!("{path}: '{text}'"))),
        _ => return Err(fetch_err("server_error", format!("bad answer '{text}'"))),
    };
    let mut data = Vec::with_capacity(size.min(MAX_FILE) as usize);
    (&mut reader)
        .take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| stream_err(conn, &format!("receiving {path}"), e))?;
    if data.len() as u64 != size || sha256_hex(&data) != sha {
        return Err(fetch_err(
            "integrity",
            format!(
                "{path}: received {} bytes not matching the announced {size} bytes / SHA-256",
                data.len()
            ),
        ));
    }
    let dest = dir.join(path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| fetch_err("io", format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(&dest, &data)
        .map_err(|e| fetch_err("io", format!("{}: {e}", dest.display())))?;
    Ok(size)
}

/// `quill-interop-peer client`; returns the exit code.
pub fn run_client(a: &ClientArgs) -> i32 {
    let started = Instant::now();
    let mut report = ClientReport::default();
    let fail = |mut r: ClientReport, kind: &str, msg: String| {
        r.ok = false;
        r.elapsed_ms = started.elapsed().as_millis() as u64;
        r.error = Some((kind.into(), msg));
        print_result(&r);
        1
    };
    let fault = match parse_fault(&a.common.fault) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("quill-interop-peer client: {e}");
            return USAGE;
        }
    };
    let suites = match parse_suites(&a.common.suites) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("quill-interop-peer client: {e}");
            return USAGE;
        }
    };
    let transport = match transport_config(&a.common, fault) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("quill-interop-peer client: {e}");
            return USAGE;
        }
    };
    let files = match a.files.all() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("quill-interop-peer client: {e}");
            return USAGE;
        }
    };
    if a.idle_ms.is_some() && files.len() < 2 {
        eprintln!("quill-interop-peer client: --idle-ms needs at least two files");
        return USAGE;
    }
    if let Err(e) = std::fs::create_dir_all(&a.download) {
        eprintln!(
            "quill-interop-peer client: --download {}: {e}",
            a.download.display()
        );
        return USAGE;
    }
    // Watchdog: a result line whatever happens.
    let timeout = Duration::from_secs(a.timeout_secs.max(1));
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let r = ClientReport {
            elapsed_ms: started.elapsed().as_millis() as u64,
            error: Some((
                "timeout".into(),
                format!("gave up after {} s", timeout.as_secs()),
            )),
            ..ClientReport::default()
        };
        print_result(&r);
        std::process::exit(1);
    });

    let config = |user: &str, password: &str| {
        let mut c = ClientConfig::new(
            Login::Password {
                user: user.into(),
                password: Zeroizing::new(password.into()),
            },
            HostKeyPolicy::AcceptAndReport,
        );
        c.transport = transport.clone();
        c.suites = suites.clone();
        c
    };
    let handshakes = a.handshakes.max(1);
    for i in 0..handshakes {
        let conn = match blocking::connect(a.connect, config(&a.common.user, &a.common.password)) {
            Ok(c) => c,
            Err(ConnectError::Connection(e)) => {
                let kind = error_kind(&e);
                return fail(report, kind, format!("handshake {}: {e}", i + 1));
            }
            Err(e) => return fail(report, "io", format!("handshake {}: {e}", i + 1)),
        };
        report.handshakes += 1;
        let mine: Vec<String> = if handshakes == 1 {
            files.clone()
        } else {
            vec![files[i as usize % files.len()].clone()]
        };
        let start = Instant::now();
        let result = if a.parallel > 1 {
            fetch_parallel(&conn, &mine, &a.download, a.parallel)
        } else {
            fetch_sequential(&conn, &mine, a)
        };
        report.seconds += start.elapsed().as_secs_f64();
        let stats = conn.stats();
        add_stats(&mut report.stats, &stats);
        report.suite = conn.suite().map(|s| s.name().to_string());
        match result {
            Ok((n, bytes)) => {
                report.files += n;
                report.bytes += bytes;
            }
            Err(e) => {
                conn.close(0, "failed");
                return fail(report, &e.kind, e.message);
            }
        }
        if a.idle_ms.is_some() {
            // The runner makes the server vanish now; the connection must notice.
            print_event("vanish_now");
            let t0 = Instant::now();
            let limit = transport.idle_timeout * 10 + Duration::from_secs(5);
            match conn.wait_closed(limit) {
                Some(e) => {
                    report.closed =
                        Some((error_kind(&e).to_string(), t0.elapsed().as_millis() as u64))
                }
                None => {
                    return fail(
                        report,
                        "no_timeout",
                        format!(
                            "connection still up {} ms after the server vanished",
                            limit.as_millis()
                        ),
                    )
                }
            }
            report.stats.keep_alives_sent = conn.stats().keep_alives_sent;
            conn.close(0, "done");
        } else {
            conn.close(0, "done");
        }
    }
    report.ok = true;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if !print_result(&report) {
        return 1;
    }
    0
}

fn fetch_sequential(
    conn: &BlockingConnection,
    files: &[String],
    a: &ClientArgs,
) -> Result<(u64, u64), FetchError> {
    let (mut n, mut bytes) = (0, 0);
    for (k, f) in files.iter().enumerate() {
        if k > 0 && a.pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(a.pause_ms));
        }
        if a.initiate_key_update && k >= files.len() / 2 && conn.stats().key_updates_initiated == 0
        {
            conn.initiate_key_update();
        }
        bytes += fetch(conn, f, &a.download)?;
        n += 1;
        if k == 0 {
            if let Some(idle) = a.idle_ms {
                print_event("idle_start");
                std::thread::sleep(Duration::from_millis(idle));
                if let Some(e) = conn.wait_closed(Duration::ZERO) {
                    return Err(fetch_err(
                        error_kind(&e),
                        format!("the idle connection ended: {e}"),
                    ));
                }
                print_event("idle_end");
            }
        }
    }
    Ok((n, bytes))
}

fn fetch_parallel(
    conn: &BlockingConnection,
    files: &[String],
    dir: &Path,
    parallel: usize,
) -> Result<(u64, u64), FetchError> {
    fetch_each(files, parallel, |f| fetch(conn, f, dir))
}

/// Runs `fetch` for every name, `threads` at a time (one thread each), until the
/// first error; returns `(files, bytes)` of those fetched.
fn fetch_each<E: Send>(
    names: &[String],
    threads: usize,
    fetch: impl Fn(&str) -> Result<u64, E> + Sync,
) -> Result<(u64, u64), E> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: Mutex<Option<E>> = Mutex::new(None);
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(names.len()) {
            s.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(name) = names.get(i) else { return };
                match fetch(name) {
                    Ok(n) => {
                        bytes.fetch_add(n, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        if let Ok(mut g) = failed.lock() {
                            g.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or(None) {
        return Err(e);
    }
    Ok((done.into_inner(), bytes.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_and_refuse_unknown_names() {
        assert_eq!(
            parse_suites("chacha20").unwrap(),
            vec![Suite::ChaCha20Poly1305]
        );
        assert_eq!(
            parse_suites("aes256, aes128,aes256").unwrap(),
            vec![Suite::Aes256Gcm, Suite::Aes128Gcm]
        );
        assert!(parse_suites("des")
            .unwrap_err()
            .contains("unknown suite 'des'"));
        assert!(parse_suites(",").is_err());
    }

    #[test]
    fn get_uses_quill_servers_path_guard() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::write(root.join("a.bin"), b"abc").unwrap();
        std::fs::write(outside.join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::write(root.join(".up.quill-1-0.tmp"), b"half").unwrap();
        let ask = |line: &str| {
            let (out, file) = answer_get(&root, None, line.as_bytes());
            (String::from_utf8_lossy(&out).into_owned(), file)
        };
        let (ok, file) = ask("GET a.bin");
        assert_eq!(ok, format!("OK 3 {}\nabc", sha256_hex(b"abc")));
        assert!(file);
        let (truncated, _) = answer_get(&root, Some(Fault::TruncateFile), b"GET a.bin");
        assert!(truncated.starts_with(b"OK 2 "));
        for (line, why) in [
            ("GET link/secret", "leaves the server's root"),
            ("GET .up.quill-1-0.tmp", "upload in progress"),
            ("GET ../outside/secret", "'..' is refused"),
            ("GET a\rb", "control characters"),
            ("ECHO", "GET only"),
            ("GET", "unknown request"),
        ] {
            let (err, file) = ask(line);
            assert!(
                err.starts_with("ERR ") && err.contains(why),
                "{line:?}: {err}"
            );
            assert!(!file);
        }
    }

    #[test]
    fn faults_and_windows_configure_the_transport() {
        let common = |fault: Option<&str>| Common {
            testcase: "t".into(),
            suites: "aes256".into(),
            key_update: Some(1000),
            small_windows: true,
            idle_timeout_ms: Some(1000),
            keep_alive_ms: Some(300),
            ack_every: None,
            user: "u".into(),
            password: "p".into(),
            fault: fault.map(String::from),
        };
        let c = common(Some("ignore-path-challenge"));
        let f = parse_fault(&c.fault).unwrap();
        let t = transport_config(&c, f).unwrap();
        assert!(t.ignore_path_challenge);
        assert_eq!(t.streams.max_stream_receive_window, 64 * 1024);
        assert_eq!(t.key_update_interval, 1000);
        assert!(parse_fault(&Some("explode".into())).is_err());
        let mut bad = common(None);
        bad.keep_alive_ms = Some(900); // more than half the idle timeout
        assert_eq!(transport_config(&bad, None).unwrap_err().code(), USAGE);
    }
}
