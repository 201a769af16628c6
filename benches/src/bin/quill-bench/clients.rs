//! The client subcommands: one bulk transfer, many handshakes, many idle connections.
//! Each uses one client [`EventLoop`] (the zero-copy handler API) and prints JSON.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Context, EventLoop, Handler};
use quill_transport::proto::{
    ClientConfig, Connection, Dir, Event, ReadOutcome, StreamEvent, StreamId, WriteError,
};
use quill_transport::proto::{ConnectionHandle, EndpointConfig};

use crate::common::{self, SuiteArg, Wire};

/// Whether the client loops send with UDP GSO (`--no-gso` turns it off: one datagram
/// per send, so that a server's reuseport steering sees each datagram rather than a
/// batch of several connections' datagrams steered as a whole by its first).
static GSO: AtomicBool = AtomicBool::new(true);

/// Sets whether this process's client loops use UDP GSO (before any is made).
pub fn set_gso(on: bool) {
    GSO.store(on, Ordering::Relaxed);
}

fn client_loop<H: Handler>(server: SocketAddr, handler: H) -> Result<EventLoop<H>, String> {
    common::require_loopback(server)?;
    let bind: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().expect("literal")
    } else {
        "[::1]:0".parse().expect("literal")
    };
    let udp = UdpConfig {
        gso: GSO.load(Ordering::Relaxed),
        ..UdpConfig::default()
    };
    EventLoop::bind(
        bind,
        &udp,
        EndpointConfig {
            max_connections: 200_000,
            ..EndpointConfig::default()
        },
        None,
        1,
        handler,
    )
    .map_err(|e| format!("bind {bind}: {e}"))
}

/// Closes every connection and lets the loop drain them (bounded).
fn close_all<H: Handler>(ev: &mut EventLoop<H>) {
    ev.with_context(|_, ctx| ctx.shutdown(0, "done"));
    let _ = ev.run_until(Duration::from_secs(5), |_, e| e.is_empty());
}

// ---------------------------------------------------------------------------------
// One connection (bulk, first byte)

/// What the one-connection clients ([`Bulk`], [`FirstByte`]) keep alike: their
/// connection, when it logged in, when the measurement was done, and the first error.
#[derive(Default)]
struct OneConnection {
    /// The connection is up at the end of the handshake ([`Wire::Reference`]: no login).
    without_login: bool,
    conn: Option<ConnectionHandle>,
    connected_at: Option<Instant>,
    done_at: Option<Instant>,
    error: Option<String>,
    /// The ALPN protocol negotiated (QUIC v1 only).
    alpn: Option<Vec<u8>>,
}

impl OneConnection {
    /// Notes the login, and a loss before the measurement is done as the error (after
    /// it, the loss is our own closing).
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::Connected { .. } => self.connected_at = Some(Instant::now()),
            Event::HandshakeConfirmed { .. } if self.without_login => {
                self.connected_at = Some(Instant::now())
            }
            Event::ConnectionLost(e) if self.done_at.is_none() => {
                self.error = Some(format!("connection lost: {e}"));
            }
            _ => {}
        }
    }

    /// The connection, once logged in (no stream is opened before).
    fn logged_in<'c, H: Handler>(
        &mut self,
        ctx: &'c mut Context<'_, H>,
    ) -> Option<&'c mut Connection> {
        self.connected_at?;
        let c = ctx.connection(self.conn?)?;
        if self.alpn.is_none() {
            self.alpn = c.alpn().map(<[u8]>::to_vec);
        }
        Some(c)
    }

    fn settled(&self) -> bool {
        self.done_at.is_some() || self.error.is_some()
    }
}

/// A handler that measures over one [`OneConnection`].
trait OneClient: Handler {
    fn one(&mut self) -> &mut OneConnection;
}

/// A one-connection client's loop after [`run_one`].
struct OneRun<H: Handler> {
    ev: EventLoop<H>,
    conn: ConnectionHandle,
    /// Just before the connect call.
    connect_at: Instant,
    /// Whether the measurement was done within the timeout.
    finished: bool,
}

/// Connects `handler`'s one connection to `server` and runs the loop until the
/// measurement is done, an error or `timeout`; the handler's error is the result's.
fn run_one<H: OneClient>(
    server: SocketAddr,
    suite: SuiteArg,
    login: common::LoginArg,
    wire: &Wire,
    timeout: Duration,
    handler: H,
) -> Result<OneRun<H>, String> {
    let mut config = common::client_config_with(suite.suite(), None, login);
    wire.apply(&mut config)?;
    let mut ev = client_loop(server, handler)?;
    ev.handler().one().without_login = wire.without_login();
    let connect_at = Instant::now();
    let conn = ev
        .with_context(|_, ctx| ctx.connect(config, server))
        .map_err(|e| format!("connect: {e}"))?;
    ev.handler().one().conn = Some(conn);
    let finished = ev
        .run_until(timeout, |b, _| b.one().settled())
        .map_err(|e| format!("client loop: {e}"))?;
    if let Some(e) = ev.handler().one().error.take() {
        return Err(e);
    }
    Ok(OneRun {
        ev,
        conn,
        connect_at,
        finished,
    })
}

// ---------------------------------------------------------------------------------
// Bulk

/// One connection, one unidirectional stream of `total` bytes; done when the server's
/// 8-byte count arrives (see `server.rs`). With `reference`, the reference peers'
/// protocol instead: one bidirectional stream with an 8-byte header asking for no
/// answer, the bytes and FIN; done when the server's FIN arrives on it.
struct Bulk {
    one: OneConnection,
    reference: bool,
    total: u64,
    sent: u64,
    stream: Option<StreamId>,
    finished: bool,
    reply: Option<StreamId>,
    reply_bytes: Vec<u8>,
    /// The data written, over and over (handed to quill by reference, no copy).
    chunk: Bytes,
}

impl OneClient for Bulk {
    fn one(&mut self) -> &mut OneConnection {
        &mut self.one
    }
}

impl Handler for Bulk {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        if let Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) = event {
            if let Some(c) = ctx.connection(h) {
                while let Some(id) = c.accept_stream(Dir::Uni) {
                    self.reply = Some(id);
                }
            }
        }
        self.one.on_event(&event);
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let Some(c) = self.one.logged_in(ctx) else {
            return;
        };
        if self.stream.is_none() {
            if self.reference {
                self.stream = c.open_stream(Dir::Bi);
                if let Some(id) = self.stream {
                    // A fresh stream's send buffer always takes 8 bytes.
                    if let Err(e) = c.write(id, &0u64.to_be_bytes()) {
                        self.one.error = Some(format!("write: {e}"));
                        return;
                    }
                    self.reply = Some(id);
                }
            } else {
                self.stream = c.open_stream(Dir::Uni);
            }
        }
        if let Some(id) = self.stream {
            while self.sent < self.total {
                let n = (self.total - self.sent).min(self.chunk.len() as u64) as usize;
                match c.write_bytes(id, self.chunk.slice(..n)) {
                    // Flow control or a full send buffer: more after the next ACKs.
                    Ok(0) | Err(WriteError::Blocked) => break,
                    Ok(k) => self.sent += k as u64,
                    Err(e) => {
                        self.one.error = Some(format!("write: {e}"));
                        return;
                    }
                }
            }
            if self.sent == self.total && !self.finished {
                self.finished = c.finish(id).is_ok();
            }
        }
        if let Some(id) = self.reply {
            let mut buf = [0u8; 64];
            loop {
                match c.read(id, &mut buf) {
                    Ok(ReadOutcome::Data(n)) => {
                        // The reply is 8 bytes; anything longer is an error below.
                        if self.reply_bytes.len() < 64 {
                            self.reply_bytes.extend_from_slice(&buf[..n]);
                        }
                    }
                    Ok(ReadOutcome::Finished) => {
                        self.one.done_at = Some(Instant::now());
                        self.reply = None;
                        break;
                    }
                    Ok(ReadOutcome::Blocked) => break,
                    Err(e) => {
                        self.one.error = Some(format!("reply stream: {e}"));
                        break;
                    }
                }
            }
        }
    }
}

/// `quill-bench client`: sends `bytes` on one stream and prints one JSON line.
pub fn bulk(
    server: SocketAddr,
    bytes: u64,
    suite: SuiteArg,
    login: common::LoginArg,
    wire: &Wire,
    timeout: Duration,
) -> Result<(), String> {
    let chunk: Bytes = (0..1usize << 20)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let handler = Bulk {
        one: OneConnection::default(),
        reference: wire.without_login(),
        total: bytes,
        sent: 0,
        stream: None,
        finished: false,
        reply: None,
        reply_bytes: Vec::new(),
        chunk,
    };
    let OneRun {
        mut ev,
        conn: h,
        connect_at: started,
        finished,
    } = run_one(server, suite, login, wire, timeout, handler)?;
    let b = ev.handler();
    if !finished {
        return Err(format!(
            "timed out after {timeout:?} with {} of {bytes} bytes written",
            b.sent
        ));
    }
    if b.reference {
        // The reference protocol's answer: the 0 bytes the header asked for, then FIN.
        if !b.reply_bytes.is_empty() {
            return Err(format!(
                "the server answered {} bytes, the header asked for none",
                b.reply_bytes.len()
            ));
        }
    } else {
        let count = <[u8; 8]>::try_from(b.reply_bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| format!("bad completion signal of {} bytes", b.reply_bytes.len()))?;
        if count != bytes {
            return Err(format!("server received {count} bytes, we sent {bytes}"));
        }
    }
    let connected_at = b.one.connected_at.expect("connected before done");
    let done_at = b.one.done_at.expect("done");
    let seconds = (done_at - connected_at).as_secs_f64();
    let handshake_ms = (connected_at - started).as_secs_f64() * 1e3;
    let (version, alpn) = match &b.one.alpn {
        Some(a) => ("quic-v1", Some(String::from_utf8_lossy(a).into_owned())),
        None => ("quill", None),
    };
    let stats = ev
        .endpoint()
        .connection(h)
        .map(|c| (c.stats().packets_sent, c.stats().packets_lost, c.mtu()));
    let loop_stats = ev.stats();
    close_all(&mut ev);
    let (packets_sent, packets_lost, mtu) = stats.unwrap_or_default();
    let out = serde_json::json!({
        "suite": suite.name(),
        "version": version,
        "alpn": alpn,
        "bytes": bytes,
        "seconds": seconds,
        "goodput_bps": bytes as f64 * 8.0 / seconds,
        "handshake_ms": handshake_ms,
        "packets_sent": packets_sent,
        "packets_lost": packets_lost,
        "mtu": mtu,
        "gso_batches": loop_stats.gso_batches,
        "datagrams_in": loop_stats.datagrams_in,
        "turns": loop_stats.turns,
        "send_blocked": loop_stats.send_blocked,
    });
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------
// First byte (handshake latency from a fresh process)

/// One connection; once logged in, one bidirectional stream with one byte and FIN;
/// done when the server's echo of that byte arrives.
/// Its [`OneConnection::done_at`] is when the echoed byte arrived.
struct FirstByte {
    one: OneConnection,
    stream: Option<StreamId>,
}

impl OneClient for FirstByte {
    fn one(&mut self) -> &mut OneConnection {
        &mut self.one
    }
}

impl Handler for FirstByte {
    fn on_event(&mut self, _ctx: &mut Context<'_, Self>, _h: ConnectionHandle, event: Event) {
        self.one.on_event(&event);
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let Some(c) = self.one.logged_in(ctx) else {
            return;
        };
        if self.stream.is_none() {
            let Some(id) = c.open_stream(Dir::Bi) else {
                return;
            };
            // A fresh stream's send buffer always takes one byte.
            if let Err(e) = c.write(id, b"q") {
                self.one.error = Some(format!("write: {e}"));
            }
            let _ = c.finish(id);
            self.stream = Some(id);
        }
        let Some(id) = self.stream else { return };
        let mut buf = [0u8; 16];
        match c.read(id, &mut buf) {
            Ok(ReadOutcome::Data(n)) if n > 0 => {
                self.one.done_at.get_or_insert_with(Instant::now);
            }
            Ok(ReadOutcome::Finished) if self.one.done_at.is_none() => {
                self.one.error = Some("the server finished the stream without echoing".into());
            }
            Ok(_) => {}
            Err(e) => self.one.error = Some(format!("read: {e}")),
        }
    }
}

/// `quill-bench client --first-byte`: handshake + login, then one byte echoed on a
/// bidirectional stream; prints `handshake_ms` and `first_byte_ms`, both measured
/// from the start of this process (key generation and all included).
pub fn first_byte(
    server: SocketAddr,
    suite: SuiteArg,
    login: common::LoginArg,
    wire: &Wire,
    timeout: Duration,
) -> Result<(), String> {
    if wire.without_login() {
        return Err("--first-byte uses quill's echo service: drop --ca".into());
    }
    let handler = FirstByte {
        one: OneConnection::default(),
        stream: None,
    };
    let OneRun {
        mut ev,
        connect_at,
        finished,
        ..
    } = run_one(server, suite, login, wire, timeout, handler)?;
    let b = &ev.handler().one;
    if !finished {
        return Err(format!("no echoed byte within {timeout:?}"));
    }
    let start = common::process_start();
    let ms = |t: Instant| (t - start).as_secs_f64() * 1e3;
    let out = serde_json::json!({
        "stack": "quill",
        "suite": suite.name(),
        "login": format!("{login:?}").to_lowercase(),
        "handshake_ms": ms(b.connected_at.expect("connected before the echo")),
        // The same span as the reference peers' `handshake_ms_median` for one
        // connection: from the connect call to the login's end.
        "connect_to_established_ms":
            (b.connected_at.expect("connected") - connect_at).as_secs_f64() * 1e3,
        "first_byte_ms": ms(b.done_at.expect("done")),
    });
    close_all(&mut ev);
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------
// Many connections (handshake rate, idle memory)

/// Opens `total` connections with at most `concurrency` handshakes in flight.
struct Many {
    config: ClientConfig,
    server: SocketAddr,
    total: usize,
    concurrency: usize,
    /// Close each connection as soon as it is logged in (handshake benchmark).
    close_after_login: bool,
    started: usize,
    ok: usize,
    failed: usize,
    /// Logged-in connections that were lost afterwards (idle benchmark: must stay 0).
    lost_after_login: usize,
    pending: HashMap<ConnectionHandle, Instant>,
    /// Connections logged in and kept open (idle benchmark).
    held: Vec<ConnectionHandle>,
    latencies: Vec<Duration>,
    first_error: Option<String>,
    first_start: Option<Instant>,
    last_login: Option<Instant>,
}

impl Many {
    fn new(
        config: ClientConfig,
        server: SocketAddr,
        total: usize,
        concurrency: usize,
        close: bool,
    ) -> Self {
        Many {
            config,
            server,
            total,
            concurrency: concurrency.max(1),
            close_after_login: close,
            started: 0,
            ok: 0,
            failed: 0,
            lost_after_login: 0,
            pending: HashMap::new(),
            held: Vec::new(),
            latencies: Vec::with_capacity(total),
            first_error: None,
            first_start: None,
            last_login: None,
        }
    }

    fn settled(&self) -> bool {
        self.ok + self.failed == self.total
    }

    fn latency_ms(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        crate::stats::quantile(&mut v, q)
    }

    fn seconds(&self) -> f64 {
        match (self.first_start, self.last_login) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

impl Handler for Many {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::Connected { .. } => {
                if let Some(t0) = self.pending.remove(&h) {
                    let now = Instant::now();
                    self.ok += 1;
                    self.latencies.push(now - t0);
                    self.last_login = Some(now);
                    if self.close_after_login {
                        let now = ctx.now();
                        if let Some(c) = ctx.connection(h) {
                            c.close(now, 0, "bye");
                        }
                    } else {
                        self.held.push(h);
                    }
                }
            }
            Event::ConnectionLost(e) => {
                if self.pending.remove(&h).is_some() {
                    self.failed += 1;
                    self.first_error.get_or_insert_with(|| e.to_string());
                } else if !self.close_after_login {
                    self.lost_after_login += 1;
                    self.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        while self.pending.len() < self.concurrency && self.started < self.total {
            self.started += 1;
            let now = Instant::now();
            self.first_start.get_or_insert(now);
            match ctx.connect(self.config.clone(), self.server) {
                Ok(h) => {
                    self.pending.insert(h, now);
                }
                Err(e) => {
                    self.failed += 1;
                    self.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

fn run_many(ev: &mut EventLoop<Many>, timeout: Duration) -> Result<(), String> {
    // The first connections start in `on_turn`; one turn with a zero cap starts them.
    ev.turn(Some(Instant::now()))
        .map_err(|e| format!("client loop: {e}"))?;
    let settled = ev
        .run_until(timeout, |m, _| m.settled())
        .map_err(|e| format!("client loop: {e}"))?;
    if !settled {
        let m = ev.handler();
        return Err(format!(
            "timed out after {timeout:?}: {} logged in, {} failed, {} in flight of {}",
            m.ok,
            m.failed,
            m.pending.len(),
            m.total
        ));
    }
    Ok(())
}

/// `quill-bench handshakes`: `count` connections, each handshake + login then close.
pub fn handshakes(
    server: SocketAddr,
    count: usize,
    concurrency: usize,
    timeout: Duration,
    login: common::LoginArg,
    wire: &Wire,
) -> Result<(), String> {
    if wire.without_login() {
        return Err("handshakes log in to quill-bench's server: drop --ca".into());
    }
    let mut config = common::client_config_with(SuiteArg::Aes256gcm.suite(), None, login);
    wire.apply(&mut config)?;
    let mut ev = client_loop(server, Many::new(config, server, count, concurrency, true))?;
    run_many(&mut ev, timeout)?;
    close_all(&mut ev);
    let m = ev.handler();
    let seconds = m.seconds();
    let out = serde_json::json!({
        "count": m.total,
        "ok": m.ok,
        "failed": m.failed,
        "first_error": m.first_error,
        "concurrency": m.concurrency,
        "seconds": seconds,
        "handshakes_per_sec": if seconds > 0.0 { m.ok as f64 / seconds } else { 0.0 },
        "latency_p50_ms": m.latency_ms(0.5),
        "latency_p99_ms": m.latency_ms(0.99),
    });
    println!("{out}");
    Ok(())
}

/// How `quill-bench idle` runs.
pub struct IdleOptions {
    /// Connections to hold.
    pub count: usize,
    /// Handshakes in flight while connecting.
    pub concurrency: usize,
    /// How long to hold them once all are logged in (after `go`, with `wait_go`).
    pub hold: Duration,
    /// Give up connecting after this long.
    pub timeout: Duration,
    /// Keep-alive interval of the client connections.
    pub keep_alive: Duration,
    /// After `ready N`, wait for a line on stdin before the hold period starts (so that
    /// several client processes measure the same period); bounded by `timeout`.
    pub wait_go: bool,
}

/// Keep-alive round trips of the held connections: each connection's PING is sampled
/// once, at the first scan at least `settle` (half a keep-alive interval, at most
/// 500 ms) after it was sent; its ACK has arrived by then unless the server is that
/// late. Scans come every quarter interval (at most every second), so that every PING
/// meets a scan in its settled window.
struct RttSampler {
    settle: Duration,
    /// Time between scans.
    period: Duration,
    keep_alive: Duration,
    /// Per held connection: keep-alives already sampled (or skipped), and when the
    /// last of them was sent.
    seen: Vec<(u64, Option<Instant>)>,
    samples_us: Vec<u64>,
    /// This client loop's own timer lateness: a keep-alive is due one interval after
    /// the previous one (nothing else ack-eliciting is sent), so the gap between two
    /// consecutive ones minus the interval is how late this loop's turn came.
    own_late_us: Vec<u64>,
}

impl RttSampler {
    fn new(ev: &mut EventLoop<Many>, keep_alive: Duration) -> RttSampler {
        let held = ev.handler().held.clone();
        // Whatever was sent before the hold (during the connection burst) is not sampled.
        let seen = held
            .iter()
            .map(|h| {
                ev.endpoint().connection(*h).map_or((0, None), |c| {
                    (c.stats().keep_alives_sent, c.stats().last_keep_alive)
                })
            })
            .collect();
        RttSampler {
            settle: (keep_alive / 2).min(Duration::from_millis(500)),
            period: (keep_alive / 4).min(Duration::from_secs(1)),
            keep_alive,
            seen,
            samples_us: Vec::new(),
            own_late_us: Vec::new(),
        }
    }

    fn scan(&mut self, ev: &mut EventLoop<Many>) {
        let held = std::mem::take(&mut ev.handler().held);
        let now = Instant::now();
        for (i, h) in held.iter().enumerate() {
            let Some(c) = ev.endpoint().connection(*h) else {
                continue;
            };
            let n = c.stats().keep_alives_sent;
            let last = c.stats().last_keep_alive;
            let settled = last.is_some_and(|t| now.saturating_duration_since(t) >= self.settle);
            let (seen, prev) = self.seen[i];
            if n != seen && settled {
                self.samples_us.push(c.latest_rtt().as_micros() as u64);
                if let (true, Some(a), Some(b)) = (n == seen + 1, prev, last) {
                    let late = b
                        .saturating_duration_since(a)
                        .saturating_sub(self.keep_alive);
                    self.own_late_us.push(late.as_micros() as u64);
                }
                self.seen[i] = (n, last);
            }
        }
        ev.handler().held = held;
    }
}

/// Waits (running the loop) for one line on stdin, at most `limit`.
fn wait_for_go(ev: &mut EventLoop<Many>, limit: Duration) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let deadline = Instant::now() + limit;
    while rx.try_recv().is_err() {
        if Instant::now() >= deadline {
            return Err(format!("no `go` on stdin within {limit:?}"));
        }
        ev.run_until(Duration::from_millis(50), |_, _| false)
            .map_err(|e| format!("client loop: {e}"))?;
    }
    Ok(())
}

/// `quill-bench idle`: `count` logged-in connections with keep-alives (idle timeout
/// 30 s). Prints `ready N` once all are logged in, holds them for `hold` (sampling the
/// keep-alives' round trips), then prints JSON.
pub fn idle(server: SocketAddr, o: &IdleOptions) -> Result<(), String> {
    let config = common::client_config(SuiteArg::Aes256gcm.suite(), Some(o.keep_alive));
    let mut ev = client_loop(
        server,
        Many::new(config, server, o.count, o.concurrency, false),
    )?;
    run_many(&mut ev, o.timeout)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready {}", ev.handler().ok);
        let _ = out.flush();
    }
    if o.wait_go {
        wait_for_go(&mut ev, o.timeout)?;
    }
    let mut sampler = RttSampler::new(&mut ev, o.keep_alive);
    let hold_start = Instant::now();
    let lost_before = ev.handler().lost_after_login;
    while hold_start.elapsed() < o.hold {
        // Borrowing a connection re-arms it, so the scan is not every turn.
        let slice = (o.hold - hold_start.elapsed()).min(sampler.period);
        ev.run_until(slice, |_, _| false)
            .map_err(|e| format!("client loop: {e}"))?;
        sampler.scan(&mut ev);
    }
    let alive = ev.endpoint().len();
    let held = std::mem::take(&mut ev.handler().held);
    let keep_alives: u64 = held
        .iter()
        .filter_map(|h| {
            ev.endpoint()
                .connection(*h)
                .map(|c| c.stats().keep_alives_sent)
        })
        .sum();
    // Lost while held (our own closing below would count every one).
    let lost = ev.handler().lost_after_login;
    close_all(&mut ev);
    let m = ev.handler();
    let mut rtts_ms: Vec<f64> = sampler
        .samples_us
        .iter()
        .map(|&us| us as f64 / 1e3)
        .collect();
    let out = serde_json::json!({
        "count": m.total,
        "ok": m.ok,
        "failed": m.failed,
        "lost_after_login": lost,
        "lost_while_held": lost - lost_before,
        "alive_after_hold": alive,
        "keep_alives_sent": keep_alives,
        "keep_alive_ms": o.keep_alive.as_millis() as u64,
        "first_error": m.first_error,
        "connect_seconds": m.seconds(),
        "hold_seconds": o.hold.as_secs_f64(),
        "keep_alive_rtt_samples": rtts_ms.len(),
        "keep_alive_rtt_p50_ms": crate::stats::quantile(&mut rtts_ms, 0.5),
        "keep_alive_rtt_p99_ms": crate::stats::quantile(&mut rtts_ms, 0.99),
        "keep_alive_rtt_max_ms": crate::stats::quantile(&mut rtts_ms, 1.0),
        "keep_alive_rtt_us": sampler.samples_us,
        "own_timer_lateness_us": sampler.own_late_us,
    });
    println!("{out}");
    Ok(())
}
