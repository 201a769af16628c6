//! `quill-bench server`: one event loop that accepts every password login whose
//! password is `bench`, sinks unidirectional streams and echoes bidirectional ones.
//!
//! QUIC v1 clients are accepted too: with ALPN `quill` exactly as above (login, sinks,
//! echo); with ALPN `quill-bench` (a reference peer's client, no login) bidirectional
//! streams follow the reference peers' bench protocol ([`common::ALPN_BENCH`]).
//!
//! Completion signal for bulk transfers: when a unidirectional stream from the client
//! ends (FIN), the server opens a unidirectional stream of its own on the same
//! connection and writes the number of bytes it received on that stream as an 8-byte
//! big-endian integer, then FIN. The client stops its clock when that count arrives and
//! checks that it equals what it sent.
//!
//! Control on stdin, one command per line: `reset-lateness` forgets the loop's
//! timer-lateness samples (start of a measured period); `lateness` prints
//! `lateness {JSON}` with the samples since (count, p50/p99/p99.9/max in µs, see
//! [`EventLoop::timer_lateness`]); end of input shuts the server down gracefully. The
//! JSON summary printed at exit includes the lateness too (shutdown included).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quill_transport::driver::LatencySummary;
use quill_transport::driver::TerminationSignals;
use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Completion, Context, EventLoop, Handler, LoopHandle};
use quill_transport::proto::{
    ConnectionHandle, EndpointConfig, QuicV1Server, RetryPolicy, ALPN_QUILL,
};
use quill_transport::proto::{
    Dir, Event, LoginMethod, LoginRequest, ReadOutcome, ServerConfig, StreamEvent, StreamId,
};

use crate::common;
use quill_transport::auth::{AccountStore, SqliteStore};
use quill_transport::auth::{Limiter, LimiterConfig};
use quill_transport::auth::{LoginVerifier, Verdict};
use quill_transport::driver::verify_on_pool;
use quill_transport::service::{Echo, Pumped};

/// Most bytes an echo stream holds before the server stops reading it (back-pressure).
const ECHO_BUFFER: usize = 1 << 20;

/// The benchmark server's application state (one per event loop).
pub(crate) struct BenchServer {
    /// With `--accounts`: logins are checked against a real account store (Argon2id
    /// for passwords) on the worker pool.
    verifier: Option<Arc<LoginVerifier>>,
    /// Logins waiting for room on the worker pool.
    waiting: VecDeque<(ConnectionHandle, LoginRequest)>,
    /// Unidirectional streams being sunk: bytes received so far.
    sinks: HashMap<(ConnectionHandle, StreamId), u64>,
    /// Completion counts still to be sent (the connection had no stream credit yet).
    replies: Vec<(ConnectionHandle, u64)>,
    /// Bidirectional streams being echoed.
    echo: HashMap<(ConnectionHandle, StreamId), Echo>,
    /// Bidirectional streams of reference clients (ALPN `quill-bench`).
    reference: HashMap<(ConnectionHandle, StreamId), RefStream>,
    buf: Vec<u8>,
    logins: u64,
    refused: u64,
    bytes_sunk: u64,
}

impl Handler for BenchServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::LoginRequested(req) => match &self.verifier {
                Some(v) => {
                    verify_on_pool(ctx, v, h, req, |server: &mut BenchServer, _, verdict| {
                        match verdict {
                            Verdict::Accept { .. } => server.logins += 1,
                            Verdict::Refuse { .. } => server.refused += 1,
                        }
                    })
                }
                None => self.waiting.push_back((h, req)),
            },
            Event::Stream(StreamEvent::Opened { .. }) => {
                let Some(c) = ctx.connection(h) else { return };
                let reference = c.alpn() == Some(common::ALPN_BENCH);
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    if reference {
                        self.reference.insert((h, id), RefStream::default());
                    } else {
                        self.echo.insert((h, id), Echo::default());
                    }
                }
                while let Some(id) = c.accept_stream(Dir::Uni) {
                    self.sinks.insert((h, id), 0);
                }
            }
            Event::ConnectionLost(_) => {
                self.sinks.retain(|k, _| k.0 != h);
                self.echo.retain(|k, _| k.0 != h);
                self.reference.retain(|k, _| k.0 != h);
                self.replies.retain(|r| r.0 != h);
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        self.start_logins(ctx);
        self.drain_sinks(ctx);
        self.send_replies(ctx);
        self.pump_echo(ctx);
        self.serve_reference(ctx);
    }
}

/// One stream of the reference peers' bench protocol: an 8-byte big-endian count D,
/// upload bytes to discard, FIN; then D bytes and FIN back.
#[derive(Default)]
struct RefStream {
    header: Vec<u8>,
    /// Bytes still to answer, once the upload has ended.
    answer: Option<u64>,
}

/// Zeros the reference answers are written from (by reference, no copy).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl RefStream {
    /// Reads what has arrived and answers once the upload has ended; false when the
    /// stream is done with (answered, reset or gone).
    fn pump(
        &mut self,
        c: &mut quill_transport::proto::Connection,
        id: StreamId,
        sunk: &mut u64,
    ) -> bool {
        while self.answer.is_none() {
            let header = &mut self.header;
            match c.read_in_place(id, usize::MAX, |data| {
                let need = 8 - header.len().min(8);
                header.extend_from_slice(&data[..need.min(data.len())]);
            }) {
                Ok(ReadOutcome::Data(n)) => *sunk += n as u64,
                Ok(ReadOutcome::Finished) => {
                    let Ok(d) = <[u8; 8]>::try_from(self.header.as_slice()) else {
                        // A header cut short: not the protocol.
                        let _ = c.reset_stream(id, 1);
                        return false;
                    };
                    self.answer = Some(u64::from_be_bytes(d));
                }
                Ok(ReadOutcome::Blocked) => return true,
                Err(_) => return false,
            }
        }
        let left = self.answer.get_or_insert(0);
        while *left > 0 {
            let n = (*left).min(ZEROS.len() as u64) as usize;
            match c.write(id, &ZEROS[..n]) {
                Ok(0) | Err(quill_transport::proto::WriteError::Blocked) => return true,
                Ok(k) => *left -= k as u64,
                Err(_) => return false,
            }
        }
        let _ = c.finish(id);
        false
    }
}

impl BenchServer {
    /// Hands queued logins to the worker pool. The check is a plain comparison (no
    /// Argon2id: this measures the transport), but it still takes the same path as a
    /// real verification: off the loop thread and back through the loop's waker.
    fn start_logins(&mut self, ctx: &mut Context<'_, Self>) {
        while ctx.pool_has_room() {
            let Some((h, req)) = self.waiting.pop_front() else {
                break;
            };
            let job = move || -> Completion<BenchServer> {
                let ok = matches!(&req.method, LoginMethod::Password(p) if p.as_slice() == common::PASSWORD.as_bytes());
                let user = req.user;
                Box::new(
                    move |server: &mut BenchServer, ctx: &mut Context<'_, BenchServer>| {
                        let now = ctx.now();
                        if let Some(c) = ctx.connection(h) {
                            if ok {
                                server.logins += 1;
                                c.accept_login(now, &user, "bench");
                            } else {
                                server.refused += 1;
                                c.refuse_login(now, "login refused");
                            }
                        }
                    },
                )
            };
            if ctx.spawn(job).is_err() {
                break; // cannot happen after pool_has_room; retried next turn anyway
            }
        }
    }

    fn drain_sinks(&mut self, ctx: &mut Context<'_, Self>) {
        let replies = &mut self.replies;
        let total = &mut self.bytes_sunk;
        self.sinks.retain(|&(h, id), count| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            loop {
                // Sunk in place: the data is counted where it lies, not copied out.
                match c.read_in_place(id, usize::MAX, |_| {}) {
                    Ok(ReadOutcome::Data(n)) => {
                        *count += n as u64;
                        *total += n as u64;
                    }
                    Ok(ReadOutcome::Finished) => {
                        replies.push((h, *count));
                        return false;
                    }
                    Ok(ReadOutcome::Blocked) => return true,
                    Err(_) => return false,
                }
            }
        });
    }

    /// Opens a unidirectional stream per finished sink and writes the 8-byte count.
    fn send_replies(&mut self, ctx: &mut Context<'_, Self>) {
        self.replies.retain(|&(h, count)| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            let Some(id) = c.open_stream(Dir::Uni) else {
                return true; // no stream credit yet: try again next turn
            };
            // A fresh stream's send buffer always takes 8 bytes.
            let _ = c.write(id, &count.to_be_bytes());
            let _ = c.finish(id);
            false
        });
    }

    fn pump_echo(&mut self, ctx: &mut Context<'_, Self>) {
        let buf = &mut self.buf;
        self.echo.retain(|&(h, id), echo| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            matches!(
                echo.pump(c, id, buf, ECHO_BUFFER, ECHO_BUFFER),
                Pumped::Moved(_)
            )
        });
    }

    fn serve_reference(&mut self, ctx: &mut Context<'_, Self>) {
        let sunk = &mut self.bytes_sunk;
        self.reference
            .retain(|&(h, id), s| match ctx.connection(h) {
                Some(c) => s.pump(c, id, sunk),
                None => false,
            });
    }
}

/// Requests from the stdin thread to the loop thread, acted on after the loop turn in
/// which the thread woke the loop.
#[derive(Default)]
struct Control {
    reset_lateness: AtomicBool,
    report_lateness: AtomicBool,
}

/// The loop's timer lateness as JSON, in microseconds.
pub fn lateness_json(s: &LatencySummary) -> serde_json::Value {
    serde_json::json!({
        "count": s.count,
        "p50_us": s.p50.as_micros() as u64,
        "p99_us": s.p99.as_micros() as u64,
        "p999_us": s.p999.as_micros() as u64,
        "max_us": s.max.as_micros() as u64,
    })
}

/// What every event loop of the benchmark server shares: the server and endpoint
/// configurations, the login verifier (with `--accounts`) and the host key's
/// fingerprint.
pub(crate) struct Setup {
    pub(crate) config: ServerConfig,
    pub(crate) endpoint: EndpointConfig,
    pub(crate) verifier: Option<Arc<LoginVerifier>>,
    pub(crate) fingerprint: String,
}

impl Setup {
    /// The configurations of `quill-bench server` (see [`run`] for the arguments).
    pub(crate) fn new(
        accounts: Option<&std::path::Path>,
        keep_alive: Option<Duration>,
        cert_dir: Option<&std::path::Path>,
    ) -> Result<Setup, String> {
        let mut transport = common::transport_config();
        transport.keep_alive_interval = keep_alive;
        transport
            .validate()
            .map_err(|e| format!("--keep-alive-ms: {e}"))?;
        let host_key = common::host_key();
        let fingerprint = host_key.public().fingerprint();
        let mut config = ServerConfig::new(host_key.clone());
        config.transport = Arc::new(transport);
        let alpn = vec![ALPN_QUILL.to_vec(), common::ALPN_BENCH.to_vec()];
        let quic_v1 = match cert_dir {
            None => QuicV1Server::with_host_key(host_key, alpn),
            Some(dir) => {
                let (cert, key) = crate::tcp::certificate(dir)?;
                QuicV1Server::with_certificate(vec![cert], key, alpn)
            }
        };
        config.quic_v1 = Some(quic_v1.map_err(|e| e.to_string())?);
        // Many connections from one source address, at a high rate: the per-source rate
        // limit is off, Retry is off (it would add a round trip to every handshake) and
        // there is room for many handshakes in flight.
        let endpoint = EndpointConfig {
            per_source_handshakes_per_sec: 0,
            max_half_open_per_address: 0,
            max_half_open: 65_536,
            max_connections: 200_000,
            retry: RetryPolicy::Never,
            ..EndpointConfig::default()
        };
        let verifier = match accounts {
            Some(path) => Some(Arc::new(accounts_verifier(path)?)),
            None => None,
        };
        Ok(Setup {
            config,
            endpoint,
            verifier,
            fingerprint: fingerprint.to_string(),
        })
    }
}

impl BenchServer {
    /// A loop's fresh state; logins go to `verifier` when there is one.
    pub(crate) fn new(verifier: Option<Arc<LoginVerifier>>) -> BenchServer {
        BenchServer {
            verifier,
            waiting: VecDeque::new(),
            sinks: HashMap::new(),
            replies: Vec::new(),
            echo: HashMap::new(),
            reference: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
            logins: 0,
            refused: 0,
            bytes_sunk: 0,
        }
    }
}

/// Runs the server until SIGINT/SIGTERM or (unless `ignore_stdin`) until stdin closes.
/// `keep_alive`: the server's sessions send keep-alives of their own at this interval
/// (their timers then fire on this loop, which is what the sessions benchmark
/// measures).
pub fn run(
    listen: SocketAddr,
    workers: usize,
    ignore_stdin: bool,
    accounts: Option<&std::path::Path>,
    keep_alive: Option<Duration>,
    cert_dir: Option<&std::path::Path>,
) -> Result<(), String> {
    common::require_loopback(listen)?;
    let setup = Setup::new(accounts, keep_alive, cert_dir)?;
    let signals = TerminationSignals::block();
    let fingerprint = setup.fingerprint;
    let mut ev = EventLoop::bind(
        listen,
        &UdpConfig::default(),
        setup.endpoint,
        Some(setup.config),
        workers.max(1),
        BenchServer::new(setup.verifier),
    )
    .map_err(|e| format!("bind {listen}: {e}"))?;
    let handle = ev.handle();
    let control = Arc::new(Control::default());
    let h = handle.clone();
    signals.on_signal(move |_| h.shutdown());
    if !ignore_stdin {
        spawn_stdin_thread(handle, control.clone());
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {}", ev.local_addr());
        let _ = writeln!(out, "fingerprint {fingerprint}");
        let _ = out.flush();
    }
    loop {
        if ev.turn(None).map_err(|e| format!("server loop: {e}"))? {
            break;
        }
        if control.reset_lateness.swap(false, Ordering::SeqCst) {
            ev.reset_timer_lateness();
        }
        if control.report_lateness.swap(false, Ordering::SeqCst) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "lateness {}", lateness_json(&ev.timer_lateness()));
            let _ = out.flush();
        }
    }
    let stats = ev.stats();
    let lateness = lateness_json(&ev.timer_lateness());
    let h = ev.handler();
    let summary = serde_json::json!({
        "logins": h.logins,
        "refused": h.refused,
        "bytes_sunk": h.bytes_sunk,
        "datagrams_in": stats.datagrams_in,
        "datagrams_out": stats.datagrams_out,
        "gso_batches": stats.gso_batches,
        "send_blocked": stats.send_blocked,
        "turns": stats.turns,
        "timer_lateness": lateness,
    });
    println!("{summary}");
    Ok(())
}

/// Reads control commands (see the module docs) until stdin closes, then shuts the
/// loop down. Unknown lines are ignored.
fn spawn_stdin_thread(handle: LoopHandle, control: Arc<Control>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let flag = match line.trim() {
                "reset-lateness" => &control.reset_lateness,
                "lateness" => &control.report_lateness,
                _ => continue,
            };
            flag.store(true, Ordering::SeqCst);
            handle.wake();
        }
        handle.shutdown();
    });
}

/// Opens (or creates) the account database at `path` with the benchmark user
/// ([`common::USER`], password [`common::PASSWORD`], identity key authorised). Failure
/// counters and session caps are off: every login here is a success.
fn accounts_verifier(path: &std::path::Path) -> Result<LoginVerifier, String> {
    let store = SqliteStore::open(path).map_err(|e| e.to_string())?;
    if store
        .get(common::USER)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        store
            .add_user(
                common::USER,
                Some(common::PASSWORD.as_bytes()),
                &[common::identity_key().public()],
            )
            .map_err(|e| e.to_string())?;
    }
    let mut verifier = LoginVerifier::new(Arc::new(store), false);
    verifier.limiter = std::sync::Mutex::new(Limiter::new(LimiterConfig {
        pair_free_failures: u32::MAX,
        source_free_failures: u32::MAX,
        account_free_failures: u32::MAX,
        ..LimiterConfig::default()
    }));
    // Benchmarks open many connections of one account from one address.
    verifier.sessions = quill_transport::auth::SessionCaps::new(0, 0);
    Ok(verifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_addresses() {
        let err = run("192.0.2.1:4433".parse().unwrap(), 1, true, None, None, None).unwrap_err();
        assert!(err.contains("not a loopback"), "{err}");
    }

    #[test]
    fn refuses_a_keep_alive_longer_than_half_the_idle_timeout() {
        let err = run(
            "127.0.0.1:0".parse().unwrap(),
            1,
            true,
            None,
            Some(Duration::from_secs(3600)),
            None,
        )
        .unwrap_err();
        assert!(err.contains("--keep-alive-ms"), "{err}");
    }
}
