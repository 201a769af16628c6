//! `quill server`: one event loop serving logins and the stream services of
//! [`crate::service`] (ECHO, PUT, GET, SINK, SOURCE).
//!
//! Threads: the event loop runs on its own thread ([`spawn`]); logins are verified on
//! the loop's worker pool (`driver::login::verify_on_pool`: Argon2id and database
//! writes never run on the loop), and so are the two file operations that can take
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

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::auth::SqliteStore;
use quill_transport::auth::{Limiter, LimiterConfig};
use quill_transport::auth::{LoginVerifier, Verdict};
use quill_transport::auth::{SessionCaps, DEFAULT_MAX_PER_ADDRESS, DEFAULT_MAX_PER_USER};
use quill_transport::driver::verify_on_pool;
use quill_transport::driver::TerminationSignals;
use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Completion, Context, EventLoop, Handler, LoopHandle};
use quill_transport::proto::{
    Connection, Dir, Event, ReadOutcome, ServerConfig, StreamEvent, StreamId, TransportConfig,
};
use quill_transport::proto::{ConnectionHandle, EndpointConfig, RetryPolicy, RESET_SECRET_LABEL};

use crate::args::{parse_duration, parse_size, RetryArg, ServerArgs};
use crate::exit::{CliError, CliResult};
use crate::service::{hex, Request, MAX_LINE};

/// Most bytes of file data (or echo, sink, source data) moved per stream per loop turn.
pub const IO_BUDGET: usize = 256 * 1024;
/// Most bytes an echo stream holds before the server stops reading it (back-pressure).
pub const ECHO_BUFFER: usize = 256 * 1024;
/// One file read or write.
const CHUNK: usize = 64 * 1024;
/// Application error code for streams the server abandons (RESET_STREAM / STOP_SENDING).
const STREAM_ABANDONED: u64 = 1;
/// Application error code of the STOP_SENDING that follows a final answer sent before
/// the client finished (a refusal): the server reads nothing more (docs/SPEC.md §10).
const STREAM_ANSWERED: u64 = 2;
/// Half-open handshakes from which on `--retry auto` asks new clients to retry.
const AUTO_RETRY_THRESHOLD: usize = 1024;
/// Largest configuration file read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Everything a server needs; built from the command line by [`run`], or directly by
/// `quill demo` and tests.
pub struct ServerOptions {
    /// Address to bind.
    pub listen: SocketAddr,
    /// The host key.
    pub host_key: Arc<HostKeyPair>,
    /// The account database (created if missing).
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
}

/// A server running on its own thread.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The host key's fingerprint (`SHA256:...`).
    pub fingerprint: String,
    handle: LoopHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    /// Graceful stop: every connection is closed with CONNECTION_CLOSE and drained,
    /// then the loop thread ends. Errors of the loop are logged.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Err(e) = self.join() {
            tracing::error!("{e}");
        }
    }

    /// Waits until the loop ends (after a [`LoopHandle::shutdown`] from elsewhere).
    fn wait(mut self) -> Result<(), CliError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), CliError> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(CliError::connection(format!("server loop failed: {e}"))),
            Some(Err(_)) => Err(CliError::connection("server loop panicked")),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            let _ = self.join();
        }
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
    let store = SqliteStore::open(&opts.accounts).map_err(|e| CliError::usage(e.to_string()))?;
    let mut verifier = LoginVerifier::new(Arc::new(store), opts.allow_register);
    verifier.sessions = opts.sessions;
    verifier.limiter = std::sync::Mutex::new(Limiter::new(LimiterConfig {
        registrations_per_source: opts.registrations_per_address,
        ..LimiterConfig::default()
    }));
    let verifier = Arc::new(verifier);
    let fingerprint = opts.host_key.public().fingerprint();
    // The stateless-reset secret comes from the host key, so that a restarted server
    // resets its predecessor's connections at once (clients learn of the restart in
    // one round trip instead of an idle timeout).
    let secret = *opts.host_key.derive_secret(RESET_SECRET_LABEL);
    let mut config = ServerConfig::new(opts.host_key);
    config.transport = Arc::new(opts.transport);
    config.allow_register = opts.allow_register;
    let endpoint = EndpointConfig {
        retry: opts.retry,
        secret,
        max_half_open_per_address: opts.max_half_open_per_address,
        ..EndpointConfig::default()
    };
    let handler = FileServer {
        verifier,
        root,
        max_upload_size: opts.max_upload_size,
        streams: HashMap::new(),
        buf: vec![0u8; CHUNK],
        wake: None,
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let mut ev = EventLoop::bind(
        opts.listen,
        &UdpConfig::default(),
        endpoint,
        Some(config),
        workers,
        handler,
    )
    .map_err(|e| CliError::connection(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = ev.local_addr();
    let handle = ev.handle();
    ev.handler().wake = Some(handle.clone());
    let thread = std::thread::Builder::new()
        .name("quill-server".into())
        .spawn(move || ev.run())
        .map_err(|e| CliError::connection(format!("cannot start the server thread: {e}")))?;
    Ok(RunningServer {
        addr,
        fingerprint,
        handle,
        thread: Some(thread),
    })
}

/// Runs `quill server` until SIGINT or SIGTERM, then drains connections and returns.
pub fn run(args: &ServerArgs) -> CliResult {
    // Before any thread exists, so that every thread inherits the blocked set and the
    // signals reach only the thread `on_signal` starts.
    let signals = TerminationSignals::block();
    let settings = Settings::from_args(args)?;
    let opts = settings.options()?;
    let server = spawn(opts)?;
    crate::output::note!("listening {}", server.addr);
    crate::output::note!("host key fingerprint {}", server.fingerprint);
    let handle = server.handle.clone();
    signals.on_signal(move |sig| {
        tracing::info!("signal {sig}: closing connections");
        handle.shutdown();
    });
    server.wait()?;
    tracing::info!("server stopped");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Settings: the command line over the configuration file.

/// The server's settings after merging `--config FILE` under the command line.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    listen: SocketAddr,
    key: Option<PathBuf>,
    accounts: Option<PathBuf>,
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
}

/// The keys a configuration file may set: the long option names.
const CONFIG_KEYS: &[&str] = &[
    "listen",
    "key",
    "accounts",
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
                    "accounts" if s.accounts.is_none() => s.accounts = file_path(),
                    "root" if s.root.is_none() => s.root = file_path(),
                    "qlog-dir" if s.qlog_dir.is_none() => s.qlog_dir = file_path(),
                    "max-upload-size" if s.max_upload_size.is_none() => {
                        s.max_upload_size = Some(parse_size(&value).map_err(at)?);
                    }
                    "allow-register" => {
                        s.allow_register |= parse_bool(&value).map_err(at)?;
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
                    "max-half-open-per-address" if s.max_half_open_per_address.is_none() => {
                        s.max_half_open_per_address = Some(parse_count(&value).map_err(at)?);
                    }
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
                "quill server needs --accounts DB (created if missing; add accounts with \
                 `quill user add NAME --accounts DB`)",
            )
        })?;
        if self.qlog_dir.is_some() {
            tracing::warn!("qlog not implemented yet; --qlog-dir is ignored");
        }
        let mut transport = TransportConfig::default();
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
enum Service {
    /// Reading the request line (at most `MAX_LINE` bytes plus its `\n`).
    Request { line: Vec<u8> },
    /// Echoing: bytes not yet written back, and whether the peer finished.
    Echo { pending: Vec<u8>, fin: bool },
    /// Receiving a PUT into its temporary file.
    Put(Box<Upload>),
    /// A pool job owns this stream's work (hashing for GET, commit of a PUT); its
    /// completion sets the next state.
    Waiting,
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
}

struct Entry {
    svc: Service,
    /// The peer's side is over (FIN or reset); input is no longer read.
    input_done: bool,
}

/// A PUT in progress. Dropping it before it is committed removes the temporary file.
struct Upload {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    size: u64,
    received: u64,
    sha256: String,
    hash: ring::digest::Context,
    committed: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Slow file work for the worker pool.
enum Job {
    /// Hash a file for GET.
    Hash(PathBuf),
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
}

impl Handler for FileServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::LoginRequested(req) => {
                verify_on_pool(ctx, &self.verifier, h, req, |_, h, verdict| match verdict {
                    Verdict::Accept { account, .. } => {
                        tracing::info!("{h:?}: login accepted for {account}")
                    }
                    Verdict::Refuse { reason } => tracing::info!("{h:?}: login refused: {reason}"),
                });
            }
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
                tracing::info!("{h:?}: connection ended: {e}");
                self.streams.retain(|k, _| k.0 != h);
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let files = Files {
            root: self.root.as_deref(),
            max_upload_size: self.max_upload_size,
        };
        let buf = &mut self.buf;
        let mut jobs = Vec::new();
        let mut busy = false;
        self.streams.retain(|&(h, id), entry| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            let step = pump(c, id, entry, files, buf);
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
                Job::Hash(_) => answer("ERR server busy, try again"),
                Job::Commit(upload) => commit(upload),
            };
            if let Some(entry) = self.streams.get_mut(&(h, id)) {
                entry.svc = next;
            }
            return;
        }
        let run = move || -> Completion<FileServer> {
            let next = match job {
                Job::Hash(path) => hash_file(&path),
                Job::Commit(upload) => commit(upload),
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
                entry.svc = answer("ERR server busy, try again");
            }
        }
    }
}

/// The file service's settings, as the stream services see them.
#[derive(Clone, Copy)]
struct Files<'a> {
    /// Canonical root; `None` disables PUT and GET.
    root: Option<&'a Path>,
    /// Largest PUT accepted.
    max_upload_size: Option<u64>,
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

fn answer(line: &str) -> Service {
    let mut out = line.as_bytes().to_vec();
    out.push(b'\n');
    Service::Answer { out, pos: 0 }
}

/// Serves one stream for one turn.
fn pump(
    c: &mut Connection,
    id: StreamId,
    entry: &mut Entry,
    files: Files<'_>,
    buf: &mut [u8],
) -> Step {
    // Some states change into others within one turn (a request becomes an echo whose
    // first bytes came with it): loop while the state changed.
    for _ in 0..4 {
        let before = std::mem::discriminant(&entry.svc);
        let step = pump_once(c, id, entry, files, buf);
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
) -> Step {
    let mut step = Step::keep();
    match &mut entry.svc {
        Service::Request { line } => loop {
            if entry.input_done {
                entry.svc = answer("ERR the request line must end with a newline");
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
                        entry.svc = start_service(c, id, line, rest, files, &mut step);
                        break;
                    }
                    if line.len() > MAX_LINE {
                        entry.svc = answer("ERR request line too long");
                        break;
                    }
                }
                Ok(ReadOutcome::Finished) => entry.input_done = true,
                Ok(ReadOutcome::Blocked) => break,
                Err(_) => return abandon(c, id),
            }
        },
        Service::Echo { pending, fin } => {
            let mut moved = 0;
            loop {
                while pending.len() < ECHO_BUFFER && !*fin {
                    let room = (ECHO_BUFFER - pending.len()).min(buf.len());
                    match c.read(id, &mut buf[..room]) {
                        Ok(ReadOutcome::Data(n)) => pending.extend_from_slice(&buf[..n]),
                        Ok(ReadOutcome::Finished) => *fin = true,
                        Ok(ReadOutcome::Blocked) => break,
                        Err(_) => return abandon(c, id),
                    }
                }
                let mut wrote = 0;
                while wrote < pending.len() {
                    match c.write(id, &pending[wrote..]) {
                        Ok(0) | Err(quill_transport::proto::WriteError::Blocked) => break,
                        Ok(n) => wrote += n,
                        Err(_) => return abandon(c, id),
                    }
                }
                pending.drain(..wrote);
                moved += wrote;
                if wrote == 0 || *fin || moved >= IO_BUDGET {
                    break;
                }
            }
            entry.input_done = *fin;
            if *fin && pending.is_empty() {
                let _ = c.finish(id);
                return Step {
                    keep: false,
                    ..Step::keep()
                };
            }
            step.busy = moved >= IO_BUDGET;
        }
        Service::Put(up) => {
            let mut moved = 0;
            while moved < IO_BUDGET {
                match c.read(id, buf) {
                    Ok(ReadOutcome::Data(n)) => {
                        moved += n;
                        if let Err(e) = up.write(&buf[..n]) {
                            entry.svc = answer(&format!("ERR {e}"));
                            return step;
                        }
                    }
                    Ok(ReadOutcome::Finished) => {
                        entry.input_done = true;
                        if up.received < up.size {
                            let msg = format!(
                                "ERR upload ended after {} of {} bytes",
                                up.received, up.size
                            );
                            entry.svc = answer(&msg);
                            return step;
                        }
                        let actual = hex(up.hash.clone().finish().as_ref());
                        if actual != up.sha256 {
                            entry.svc = answer(
                                "ERR SHA-256 mismatch: the upload was corrupted; send it again",
                            );
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
                    }
                    Ok(ReadOutcome::Finished) => {
                        entry.input_done = true;
                        entry.svc = answer(&format!("OK {count}"));
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
        Service::Answer { out, pos } => {
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
                // side was finished or stopped above.
                return Step {
                    keep: false,
                    ..Step::keep()
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
) -> Service {
    let user = c.account().unwrap_or("?").to_owned();
    let Ok(line) = std::str::from_utf8(line) else {
        return answer("ERR the request line is not UTF-8");
    };
    let request = match Request::parse(line) {
        Ok(r) => r,
        Err(e) => return answer(&format!("ERR {e}")),
    };
    tracing::info!(
        "{user} {id:?}: {}",
        line.chars().take(200).collect::<String>()
    );
    match request {
        Request::Echo => Service::Echo {
            pending: rest,
            fin: false,
        },
        Request::Sink => Service::Sink {
            count: rest.len() as u64,
        },
        Request::Source { bytes } => Service::Source { remaining: bytes },
        Request::Get { path } => {
            let Some(root) = files.root else {
                return answer("ERR file service disabled");
            };
            match resolve_get(root, &path) {
                Ok(p) => {
                    step.job = Some(Job::Hash(p));
                    Service::Waiting
                }
                Err(e) => answer(&format!("ERR {e}")),
            }
        }
        Request::Put { size, sha256, path } => {
            let Some(root) = files.root else {
                return answer("ERR file service disabled");
            };
            if let Some(max) = files.max_upload_size.filter(|&max| size > max) {
                return answer(&format!(
                    "ERR the file is {size} bytes; this server takes at most {max} bytes per upload"
                ));
            }
            match Upload::start(root, &path, size, sha256) {
                Ok(mut up) => match up.write(&rest) {
                    Ok(()) => Service::Put(Box::new(up)),
                    Err(e) => answer(&format!("ERR {e}")),
                },
                Err(e) => answer(&format!("ERR {e}")),
            }
        }
    }
}

/// Checks a request path's form: relative, `/`-separated, no empty, `.` or `..` part,
/// no control character, no name reserved for the server's temporary files.
fn check_relative(rel: &str) -> Result<(), String> {
    if rel.starts_with('/') {
        return Err("absolute paths are refused; give a path under the server's root".into());
    }
    if rel.chars().any(char::is_control) {
        return Err("control characters (newline, tab, NUL, ...) are refused in paths".into());
    }
    for part in rel.split('/') {
        match part {
            ".." => return Err("'..' is refused: paths may not leave the server's root".into()),
            "" | "." => return Err(format!("malformed path '{rel}'")),
            _ if is_temp_name(part) => {
                return Err(format!(
                    "'{part}' is the name of an upload in progress; choose another name"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The name of an upload's temporary file: `.NAME.quill-PID-N.tmp`.
fn temp_name(name: &str, pid: u32, n: u64) -> String {
    format!(".{name}.quill-{pid}-{n}.tmp")
}

/// Whether `name` has the form of [`temp_name`]; returns the PID in it.
fn temp_name_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (base, tail) = inner.rsplit_once(".quill-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if base.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

fn is_temp_name(name: &str) -> bool {
    temp_name_pid(name).is_some()
}

/// Most directory levels [`sweep_temp_files`] descends.
const SWEEP_DEPTH: usize = 32;
/// Most directory entries [`sweep_temp_files`] looks at (a start-up cost bound).
const SWEEP_ENTRIES: usize = 1_000_000;

/// Removes the temporary files that uploads of a server killed without cleanup
/// (kill -9, power loss) left under `root`: those whose PID is ours (a previous
/// process of the same PID, as in a container) or no longer runs. Symbolic links are
/// not followed. Returns how many were removed.
fn sweep_temp_files(root: &Path) -> usize {
    let own = std::process::id();
    let mut removed = 0;
    let mut seen = 0;
    let mut dirs = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > SWEEP_ENTRIES {
                tracing::warn!("temporary file sweep stopped after {SWEEP_ENTRIES} entries");
                return removed;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < SWEEP_DEPTH {
                    dirs.push((entry.path(), depth + 1));
                }
                continue;
            }
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temp_name_pid) else {
                continue;
            };
            if kind.is_file()
                && (pid == own || !process_alive(pid))
                && std::fs::remove_file(entry.path()).is_ok()
            {
                tracing::info!("removed stale upload {}", entry.path().display());
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a process with this PID exists (kill(2) with signal 0).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The canonical file a GET names, which must be a regular file under `root`.
fn resolve_get(root: &Path, rel: &str) -> Result<PathBuf, String> {
    check_relative(rel)?;
    let path = root
        .join(rel)
        .canonicalize()
        .map_err(|e| format!("{rel}: {e}"))?;
    if !path.starts_with(root) {
        return Err(format!("{rel} leaves the server's root"));
    }
    // Also through a symbolic link: an upload in progress is never served.
    if path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_temp_name)
    {
        return Err(format!("{rel} is an upload in progress"));
    }
    if !path.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    Ok(path)
}

/// The canonical destination of a PUT: its parent directory must exist and be under
/// `root` after resolving symbolic links; the name itself may not be a symbolic link
/// or a directory.
fn resolve_put(root: &Path, rel: &str) -> Result<(PathBuf, PathBuf), String> {
    check_relative(rel)?;
    let joined = root.join(rel);
    let name = joined
        .file_name()
        .ok_or_else(|| format!("malformed path '{rel}'"))?
        .to_owned();
    let parent = joined.parent().unwrap_or(root);
    let parent = parent
        .canonicalize()
        .map_err(|e| format!("directory of {rel}: {e}; create it on the server first"))?;
    if !parent.starts_with(root) {
        return Err(format!("{rel} leaves the server's root"));
    }
    let dest = parent.join(name);
    if let Ok(meta) = dest.symlink_metadata() {
        if meta.file_type().is_symlink() {
            return Err(format!("{rel} is a symbolic link; refusing to replace it"));
        }
        if meta.is_dir() {
            return Err(format!("{rel} is a directory"));
        }
    }
    Ok((parent, dest))
}

impl Upload {
    /// Creates the temporary file next to the destination.
    fn start(root: &Path, rel: &str, size: u64, sha256: String) -> Result<Upload, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (parent, dest) = resolve_put(root, rel)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(temp_name(
            &name,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| format!("cannot create a file in the directory of {rel}: {e}"))?;
        Ok(Upload {
            file: Some(file),
            tmp,
            dest,
            size,
            received: 0,
            sha256,
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            committed: false,
        })
    }

    /// Appends received bytes: never more than the announced size.
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        if self.received + data.len() as u64 > self.size {
            return Err(format!("more data than the announced {} bytes", self.size));
        }
        let file = self.file.as_mut().ok_or("upload already closed")?;
        file.write_all(data)
            .map_err(|e| format!("writing the file failed: {e}"))?;
        self.hash.update(data);
        self.received += data.len() as u64;
        Ok(())
    }
}

/// On the pool: makes a complete, verified upload durable and gives it its name.
fn commit(mut up: Box<Upload>) -> Service {
    let Some(file) = up.file.take() else {
        return answer("ERR internal error");
    };
    if let Err(e) = file.sync_all() {
        return answer(&format!("ERR writing the file failed: {e}"));
    }
    drop(file);
    if let Err(e) = std::fs::rename(&up.tmp, &up.dest) {
        return answer(&format!("ERR cannot rename the upload into place: {e}"));
    }
    up.committed = true;
    // The rename is durable once the directory is synced.
    if let Some(dir) = up.dest.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    tracing::info!("stored {} ({} bytes)", up.dest.display(), up.size);
    answer("OK")
}

/// On the pool: hashes a file for GET and rewinds it for sending.
fn hash_file(path: &Path) -> Service {
    let result = (|| -> io::Result<(File, u64, String)> {
        let mut file = File::open(path)?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            size += n as u64;
        }
        file.rewind()?;
        Ok((file, size, hex(ctx.finish().as_ref())))
    })();
    match result {
        Ok((file, size, sha)) => Service::Get {
            file,
            remaining: size,
            out: format!("OK {size} {sha}\n").into_bytes(),
            pos: 0,
        },
        Err(e) => answer(&format!("ERR cannot read the file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quill-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    #[test]
    fn handshake_timeout_from_the_file_and_the_command_line() {
        use clap::Parser;
        let dir = temp_root("handshake-timeout");
        let file = dir.join("server.conf");
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
        let _ = std::fs::remove_dir_all(&dir);
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

    #[test]
    fn relative_paths_only() {
        assert!(check_relative("a/b.txt").is_ok());
        for bad in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        for bad in ["in.txt\nGET ../x", "a\rb", "a\tb", "a\0", "a\u{1b}[2J"] {
            let e = check_relative(bad).unwrap_err();
            assert!(e.contains("control characters"), "{bad:?}: {e}");
        }
        for temp in [".f.quill-12-0.tmp", "d/.a b.quill-1-99.tmp"] {
            let e = check_relative(temp).unwrap_err();
            assert!(e.contains("upload in progress"), "{temp}: {e}");
        }
    }

    #[test]
    fn temp_names_are_recognised() {
        let name = temp_name("f.txt", 4321, 7);
        assert_eq!(name, ".f.txt.quill-4321-7.tmp");
        assert_eq!(temp_name_pid(&name), Some(4321));
        assert_eq!(temp_name_pid(".x.quill-1-2-3.tmp.quill-5-6.tmp"), Some(5));
        for not in [
            "f.quill-1-2.tmp",
            "..quill-1-2.tmp",
            ".f.quill-1-.tmp",
            ".f.quill--2.tmp",
            ".f.quill-a-2.tmp",
            ".f.quill-1-2.tmpx",
            ".f.tmp",
        ] {
            assert_eq!(temp_name_pid(not), None, "{not}");
        }
    }

    #[test]
    fn sweep_removes_only_stale_temp_files() {
        let root = temp_root("sweep");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        // PIDs above the kernel's limit (at most 2^22) never run; ours is "stale" too,
        // as for a restarted container whose server is always PID 1.
        let dead = [
            root.join(temp_name("x", 999_999_999, 0)),
            root.join("a/b").join(temp_name("y", 999_999_998, 3)),
            root.join(temp_name("z", std::process::id(), 1)),
        ];
        // PID 1 runs (init): a server of another process may be writing that one.
        let live = root.join(temp_name("w", 1, 0));
        let keep = [root.join("x"), root.join("a/.hidden.tmp"), live.clone()];
        for f in dead.iter().chain(&keep) {
            std::fs::write(f, b"partial").unwrap();
        }
        assert_eq!(sweep_temp_files(&root), dead.len());
        for f in &dead {
            assert!(!f.exists(), "{} left", f.display());
        }
        for f in &keep {
            assert!(f.exists(), "{} removed", f.display());
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn temp_files_are_never_served() {
        let root = temp_root("noserve");
        let tmp = temp_name("secret", 999_999_999, 0);
        std::fs::write(root.join(&tmp), b"half").unwrap();
        assert!(resolve_get(&root, &tmp).is_err());
        assert!(resolve_put(&root, &tmp).is_err());
        // Nor through a symbolic link with an innocent name.
        std::os::unix::fs::symlink(root.join(&tmp), root.join("innocent")).unwrap();
        let e = resolve_get(&root, "innocent").unwrap_err();
        assert!(e.contains("upload in progress"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let root = temp_root("escape");
        let outside = temp_root("outside");
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::write(outside.join("secret"), b"x").unwrap();
        assert!(resolve_put(&root, "link/new")
            .unwrap_err()
            .contains("leaves"));
        assert!(resolve_get(&root, "link/secret")
            .unwrap_err()
            .contains("leaves"));
        std::fs::create_dir(root.join("sub")).unwrap();
        let (parent, dest) = resolve_put(&root, "sub/new").unwrap();
        assert_eq!(parent, root.join("sub"));
        assert_eq!(dest, root.join("sub/new"));
        assert!(resolve_put(&root, "missing/new").is_err());
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }

    #[test]
    fn upload_is_bounded_and_cleaned_up() {
        let root = temp_root("upload");
        let mut up = Upload::start(&root, "f", 3, "00".repeat(32)).unwrap();
        let tmp = up.tmp.clone();
        assert!(tmp.exists());
        up.write(b"ab").unwrap();
        assert!(up.write(b"cd").is_err());
        drop(up);
        assert!(!tmp.exists());
        assert!(!root.join("f").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn commit_renames_into_place() {
        let root = temp_root("commit");
        let mut up = Upload::start(&root, "f", 5, "00".repeat(32)).unwrap();
        up.write(b"hello").unwrap();
        let tmp = up.tmp.clone();
        assert!(matches!(commit(Box::new(up)), Service::Answer { ref out, .. } if out == b"OK\n"));
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"hello");
        assert!(!tmp.exists());
        match hash_file(&root.join("f")) {
            Service::Get { remaining, out, .. } => {
                assert_eq!(remaining, 5);
                let want = hex(ring::digest::digest(&ring::digest::SHA256, b"hello").as_ref());
                assert_eq!(out, format!("OK 5 {want}\n").into_bytes());
            }
            _ => panic!("hash_file failed"),
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
