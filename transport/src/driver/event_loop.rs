//! The event loop: one thread, one `mio::Poll`, one UDP socket, one [`Endpoint`].
//!
//! Each turn:
//! 1. `poll` with the endpoint's next deadline (the timer wheel's) as the timeout;
//! 2. read the clock once;
//! 3. drain the socket (batched, GRO) into the endpoint, capped per turn so a flood
//!    cannot starve timers, and its ICMP error queue (clients: "port unreachable"
//!    ends a connection attempt at once); finish any sends that were waiting for
//!    writability;
//! 4. collect finished jobs from the worker pool (they arrive through a `mio::Waker`);
//! 5. expire timers (only connections whose deadline passed), recording how late each
//!    fired (see [`EventLoop::timer_lateness`]);
//! 6. hand events to the application's [`Handler`];
//! 7. flush: datagrams of one size to one destination are batched into one GSO send.
//!
//! Nothing slow runs here: the handler moves anything that can take milliseconds
//! (password checks, database writes, key files) to the worker pool with
//! [`Context::spawn`]; its completion runs back on this thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::histogram::{LatencyHistogram, LatencySummary};
use super::pool::{PoolFull, WorkerPool};
use super::socket::{SendOutcome, UdpConfig, UdpIo, MAX_UDP_PAYLOAD};
use super::workers::Steering;
use crate::proto::endpoint::{ConnectionHandle, Endpoint, EndpointConfig};
use crate::proto::{ClientConfig, ConfigError, Connection, EcnCodepoint, Event, ServerConfig};

pub(crate) const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
/// A server's second socket, at its preferred address ([`EventLoop::bind_preferred`]).
const PREFERRED: Token = Token(2);

/// Most datagrams in one GSO batch: the kernel's limit (UDP_MAX_SEGMENTS, 64); a
/// batch is also bounded by [`MAX_UDP_PAYLOAD`] bytes (45 datagrams of 1452 bytes).
const MAX_GSO_SEGMENTS: usize = 64;
/// Largest datagram we ever build.
const MAX_DATAGRAM: usize = 1500;

/// Work that finished on the worker pool, run back on the loop thread.
pub type Completion<H> = Box<dyn FnOnce(&mut H, &mut Context<'_, H>) + Send>;

/// The application side of the event loop (the zero-copy API): events arrive here and
/// the application acts through the [`Context`].
pub trait Handler: Sized + 'static {
    /// An event from a connection.
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, conn: ConnectionHandle, event: Event);
    /// Called once per loop turn after the events (for example, to write more data).
    fn on_turn(&mut self, _ctx: &mut Context<'_, Self>) {}
    /// Called when something outside the loop woke it through [`LoopHandle::wake`].
    fn on_wake(&mut self, _ctx: &mut Context<'_, Self>) {}
}

/// What the handler can do during a callback.
pub struct Context<'a, H: Handler> {
    now: Instant,
    endpoint: &'a mut Endpoint,
    pool: &'a WorkerPool<Completion<H>>,
    touched: &'a mut Vec<ConnectionHandle>,
    shutdown: &'a mut Option<(u64, String)>,
    /// Completions to run on this thread later in the turn ([`Context::run_soon`]).
    soon: &'a mut Vec<Completion<H>>,
}

impl<H: Handler> Context<'_, H> {
    /// The time read at the start of this turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The connection behind `handle`, to read, write, accept a login, ...
    pub fn connection(&mut self, handle: ConnectionHandle) -> Option<&mut Connection> {
        // Whatever the application does may move the connection's deadline or give it
        // something to send: re-arm it at the end of the turn.
        self.touched.push(handle);
        self.endpoint.connection(handle)
    }

    /// Opens a client connection.
    pub fn connect(
        &mut self,
        config: ClientConfig,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, ConfigError> {
        let h = self.endpoint.connect(self.now, config, remote)?;
        self.touched.push(h);
        Ok(h)
    }

    /// Runs `job` on the worker pool; the [`Completion`] it returns then runs on the loop
    /// thread. Fails at once (never blocks) when the pool's queue is full.
    pub fn spawn(
        &mut self,
        job: impl FnOnce() -> Completion<H> + Send + 'static,
    ) -> Result<(), PoolFull> {
        self.pool.submit(job).map(|_| ())
    }

    /// Runs `completion` on this thread once the current callback has returned, later
    /// in this turn (before the flush): work decided without the worker pool that
    /// still needs the handler.
    pub(crate) fn run_soon(&mut self, completion: Completion<H>) {
        self.soon.push(completion);
    }

    /// Whether [`Context::spawn`] would accept a job now.
    pub fn pool_has_room(&self) -> bool {
        self.pool.outstanding() < self.pool.capacity()
    }

    /// Begins a graceful shutdown: every connection is closed with `code` and
    /// `reason`, and [`EventLoop::run`] returns once all have drained.
    pub fn shutdown(&mut self, code: u64, reason: &str) {
        *self.shutdown = Some((code, reason.to_owned()));
    }

    /// Number of live connections.
    pub fn connections(&self) -> usize {
        self.endpoint.len()
    }
}

/// Cloneable handle for other threads: wake the loop, or ask it to shut down.
#[derive(Clone)]
pub struct LoopHandle {
    waker: Arc<Waker>,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
    abort: Arc<std::sync::atomic::AtomicBool>,
    migrate: Arc<std::sync::atomic::AtomicBool>,
}

impl LoopHandle {
    pub(crate) fn new(waker: Arc<Waker>) -> Self {
        LoopHandle {
            waker,
            shutdown: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            abort: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            migrate: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Wakes the loop; the handler's [`Handler::on_wake`] runs.
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Stops the loop at once without closing anything, as a crash would (peers learn
    /// of it by idle timeout, or by a stateless reset from a restarted server).
    pub fn abort(&self) {
        self.abort.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }

    /// Client: asks the loop to move to a new UDP socket (a new local port of the same
    /// address family) and migrate its connections there (RFC 9000 §9.2), as a
    /// device does on a network change. [`EventLoop::migrate`] does it on the loop.
    pub fn migrate(&self) {
        self.migrate
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }

    /// Asks the loop to close every connection and return (graceful shutdown).
    pub fn shutdown(&self) {
        self.shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }
}

/// Statistics of the loop itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopStats {
    /// Loop turns.
    pub turns: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent (GSO segments counted one by one).
    pub datagrams_out: u64,
    /// GSO sends with more than one segment.
    pub gso_batches: u64,
    /// Times sending stopped because the socket pushed back.
    pub send_blocked: u64,
    /// Datagrams sent from the preferred address's socket ([`EventLoop::bind_preferred`]).
    pub preferred_out: u64,
    /// Datagrams another loop of a [`Workers`](super::Workers) set handed to this one.
    pub forwarded_in: u64,
}

/// One event loop: socket, endpoint, worker pool, application handler.
pub struct EventLoop<H: Handler> {
    poll: Poll,
    socket: UdpIo,
    /// How `socket` was opened (again for [`EventLoop::migrate`]).
    udp: UdpConfig,
    /// The server's preferred address's socket, if bound.
    preferred: Option<UdpIo>,
    endpoint: Endpoint,
    pool: WorkerPool<Completion<H>>,
    handler: H,
    handle: LoopHandle,
    events: Events,
    touched: Vec<ConnectionHandle>,
    /// [`Context::run_soon`]'s queue (empty between turns).
    soon: Vec<Completion<H>>,
    send_buf: Vec<u8>,
    blocked: bool,
    shutdown: Option<(u64, String)>,
    closing: bool,
    stats: LoopStats,
    /// How late the wheel's timers fired: the turn's clock read minus the deadline.
    timer_lateness: LatencyHistogram,
    /// One loop of several ([`super::Workers`]): where datagrams of other loops go.
    steering: Option<Steering>,
    /// Other loops handed over more than one turn takes.
    inbox_pending: bool,
}

impl<H: Handler> EventLoop<H> {
    /// Binds `addr` and builds the loop. `server` makes it accept connections.
    pub fn bind(
        addr: SocketAddr,
        udp: &UdpConfig,
        endpoint: EndpointConfig,
        server: Option<ServerConfig>,
        workers: usize,
        handler: H,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let socket = UdpIo::bind(addr, udp, poll.registry(), SOCKET)?;
        let handle = LoopHandle::new(waker.clone());
        // Every half-open handshake may be waiting for a login verdict at once: the
        // pool's queue holds that many jobs, so a burst of logins waits, not fails.
        let pool = WorkerPool::with_capacity(workers, endpoint.max_half_open.max(256), waker)?;
        Self::assemble(
            poll,
            handle,
            socket,
            udp,
            endpoint,
            server,
            pool,
            handler,
            Instant::now(),
        )
    }

    /// Builds a loop around a socket already registered with `poll` (token
    /// [`SOCKET`]) and a pool handle whose waker is `poll`'s ([`WAKER`]); `now` starts
    /// the endpoint's clock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        poll: Poll,
        handle: LoopHandle,
        socket: UdpIo,
        udp: &UdpConfig,
        endpoint: EndpointConfig,
        server: Option<ServerConfig>,
        pool: WorkerPool<Completion<H>>,
        handler: H,
        now: Instant,
    ) -> io::Result<Self> {
        let endpoint = Endpoint::new(endpoint, server, now)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(EventLoop {
            endpoint,
            socket,
            udp: udp.clone(),
            preferred: None,
            pool,
            handler,
            handle,
            events: Events::with_capacity(256),
            touched: Vec::new(),
            soon: Vec::new(),
            send_buf: vec![0u8; MAX_GSO_SEGMENTS * MAX_DATAGRAM],
            blocked: false,
            shutdown: None,
            closing: false,
            stats: LoopStats::default(),
            timer_lateness: LatencyHistogram::new(),
            steering: None,
            inbox_pending: false,
            poll,
        })
    }

    /// Makes this loop one of several: datagrams for other loops are handed to them.
    pub(crate) fn steer(&mut self, steering: Steering) {
        self.steering = Some(steering);
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// Also listens on `addr` with a second socket on this loop, as the server's
    /// preferred address (RFC 9000 §9.6). Connections made from now on offer the bound
    /// address, unless `ServerConfig::preferred_address` names another (an address
    /// that forwards here, such as a NAT's). Datagrams there go to the same sessions
    /// (routed by connection ID); a connection whose client moved there answers from
    /// this socket. Returns the bound address.
    pub fn bind_preferred(&mut self, addr: SocketAddr, udp: &UdpConfig) -> io::Result<SocketAddr> {
        let sock = UdpIo::bind(addr, udp, self.poll.registry(), PREFERRED)?;
        let bound = sock.local_addr();
        self.preferred = Some(sock);
        self.endpoint.offer_preferred_address(bound);
        Ok(bound)
    }

    /// Client: moves to a new socket on a new port of the same local address (the
    /// old one is closed: what it still held is lost and recovered as any loss) and
    /// migrates every connection to it ([`Connection::migrate`]: a fresh connection ID
    /// and a validated path). Returns the new local address.
    pub fn migrate(&mut self) -> io::Result<SocketAddr> {
        let old = self.socket.local_addr();
        let any = SocketAddr::new(old.ip(), 0);
        // Both sockets share the token for a moment; the old one is closed (and so
        // leaves the poll) when it is replaced. If the bind fails, nothing changed.
        let sock = UdpIo::bind(any, &self.udp, self.poll.registry(), SOCKET)?;
        self.socket = sock;
        self.blocked = false;
        let moved = self.endpoint.migrate_all(Instant::now());
        let new = self.socket.local_addr();
        tracing::debug!(from = %old, to = %new, moved, "moved to a new local address");
        Ok(new)
    }

    /// A handle other threads can use to wake or stop the loop.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// The application handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The application handler, the loop done with (after [`EventLoop::run`]).
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// The endpoint (for inspection between turns).
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Loop statistics.
    pub fn stats(&self) -> LoopStats {
        self.stats
    }

    /// How late the timer wheel's timers fired since the loop started or the last
    /// [`EventLoop::reset_timer_lateness`]: one sample per session timer expired
    /// (keep-alive, ACK delay, loss detection, idle, ... whichever was the session's
    /// earliest), `now − deadline` where `now` is the clock read right after `poll`
    /// returned for that turn. It therefore measures the loop's wake-up lateness (the
    /// wheel's 1 ms tick, `epoll_wait`'s millisecond timeout, scheduling delays and any
    /// earlier turn that ran long); work done in the same turn before the timers (socket
    /// input, completions) is not included.
    pub fn timer_lateness(&self) -> LatencySummary {
        self.timer_lateness.summary()
    }

    /// Forgets the samples of [`EventLoop::timer_lateness`] (e.g. at the start of a
    /// measured period).
    pub fn reset_timer_lateness(&mut self) {
        self.timer_lateness.reset();
    }

    /// Calls `f` with a [`Context`] (for example to connect before running).
    pub fn with_context<R>(&mut self, f: impl FnOnce(&mut H, &mut Context<'_, H>) -> R) -> R {
        let mut ctx = Context {
            now: Instant::now(),
            endpoint: &mut self.endpoint,
            pool: &self.pool,
            touched: &mut self.touched,
            shutdown: &mut self.shutdown,
            soon: &mut self.soon,
        };
        let r = f(&mut self.handler, &mut ctx);
        self.apply_touched();
        r
    }

    /// Runs until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            if self.turn(None)? {
                return Ok(());
            }
        }
    }

    /// Runs until `done` holds (checked every turn), a shutdown completes, or `limit`
    /// passes. Returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut H, &mut Endpoint) -> bool,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            if done(&mut self.handler, &mut self.endpoint) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if self.turn(Some(deadline))? {
                return Ok(done(&mut self.handler, &mut self.endpoint));
            }
        }
    }

    /// One turn of the loop. Returns true when a shutdown has completed.
    pub fn turn(&mut self, cap: Option<Instant>) -> io::Result<bool> {
        self.stats.turns += 1;
        // 1. Poll with the earliest deadline (or at once if the socket has more queued).
        let mut wake_at = self.endpoint.poll_timeout();
        if let Some(c) = cap {
            wake_at = Some(wake_at.map_or(c, |w| w.min(c)));
        }
        let pref_pending = self.preferred.as_ref().is_some_and(|p| p.rx_pending());
        let timeout = if self.socket.rx_pending()
            || self.socket.errors_pending()
            || pref_pending
            || self.inbox_pending
            || !self.soon.is_empty()
        {
            Some(Duration::ZERO)
        } else {
            wake_at.map(|t| t.saturating_duration_since(Instant::now()))
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if self.handle.abort.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(true);
        }
        if self
            .handle
            .migrate
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            if let Err(e) = self.migrate() {
                tracing::warn!("cannot move to a new local address: {e}");
            }
        }
        // 2. One clock read per turn.
        let now = Instant::now();
        let mut readable = self.socket.rx_pending();
        let mut errored = false;
        let mut writable = false;
        let mut woken = false;
        let (mut pref_readable, mut pref_writable) = (pref_pending, false);
        for ev in self.events.iter() {
            match ev.token() {
                SOCKET => {
                    readable |= ev.is_readable();
                    writable |= ev.is_writable();
                    errored |= ev.is_error();
                }
                WAKER => woken = true,
                PREFERRED => {
                    pref_readable |= ev.is_readable();
                    pref_writable |= ev.is_writable();
                }
                _ => {}
            }
        }
        if let Some(pref) = self.preferred.as_mut() {
            if pref_readable {
                let endpoint = &mut self.endpoint;
                let n = pref.recv(|from, data| {
                    endpoint.handle_datagram_via_preferred(now, from, data);
                })?;
                self.stats.datagrams_in += n as u64;
            }
            if pref_writable {
                pref.flush_queued()?;
            }
        }
        // 3. Socket input, then pending output.
        if readable {
            let endpoint = &mut self.endpoint;
            let steering = &mut self.steering;
            let n = self.socket.recv_ecn(|from, ecn, data| {
                // A datagram another loop owns goes there (only without kernel
                // steering, or when it erred).
                if steering.as_mut().is_some_and(|s| s.divert(from, ecn, data)) {
                    return;
                }
                endpoint.handle_datagram_ecn(now, from, ecn, data);
            })?;
            self.stats.datagrams_in += n as u64;
            if let Some(s) = self.steering.as_mut() {
                s.wake_peers();
            }
        }
        if let Some(s) = self
            .steering
            .as_mut()
            .filter(|_| woken || self.inbox_pending)
        {
            let endpoint = &mut self.endpoint;
            let stats = &mut self.stats;
            self.inbox_pending = s.drain_inbox(|from, ecn, data| {
                stats.forwarded_in += 1;
                endpoint.handle_datagram_ecn(now, from, ecn, data);
            });
        }
        if errored || self.socket.errors_pending() {
            let endpoint = &mut self.endpoint;
            let read = self.socket.recv_errors(|e| {
                tracing::debug!("ICMP error for {}: {}", e.destination, e.reason);
                endpoint.handle_unreachable(now, e.destination, e.reason);
            });
            if let Err(e) = read {
                // Losing an ICMP report only means waiting for the handshake timeout.
                tracing::debug!("reading the socket's error queue failed: {e}");
            }
        }
        if (writable || self.blocked) && self.socket.flush_queued()? {
            self.blocked = false;
        }
        // 4. Finished jobs, 5. timers, 6. events.
        let mut ctx = Context {
            now,
            endpoint: &mut self.endpoint,
            pool: &self.pool,
            touched: &mut self.touched,
            shutdown: &mut self.shutdown,
            soon: &mut self.soon,
        };
        if woken {
            let handler = &mut self.handler;
            self.pool.drain_results(|_, result| match result {
                Ok(completion) => completion(handler, &mut ctx),
                Err(panicked) => tracing::error!("worker job panicked: {panicked}"),
            });
            self.handler.on_wake(&mut ctx);
        }
        let lateness = &mut self.timer_lateness;
        ctx.endpoint.handle_timeout_observed(now, |deadline| {
            lateness.record(now.saturating_duration_since(deadline));
        });
        loop {
            while let Some((h, ev)) = ctx.endpoint.poll_event() {
                self.handler.on_event(&mut ctx, h, ev);
            }
            if ctx.soon.is_empty() {
                break;
            }
            let mut soon = std::mem::take(ctx.soon);
            for completion in soon.drain(..) {
                completion(&mut self.handler, &mut ctx);
            }
            if ctx.soon.is_empty() {
                *ctx.soon = soon;
            }
        }
        self.handler.on_turn(&mut ctx);
        self.apply_touched();
        if self
            .handle
            .shutdown
            .load(std::sync::atomic::Ordering::SeqCst)
            && self.shutdown.is_none()
        {
            self.shutdown = Some((0, "server shutting down".into()));
        }
        if let Some((code, reason)) = self.shutdown.take() {
            self.endpoint.close_all(now, code, &reason);
            self.closing = true;
        }
        // 7. Flush.
        self.flush(now)?;
        if let Some(s) = &self.steering {
            let e = self.endpoint.stats();
            s.publish(self.stats.datagrams_in, e.sessions_created, e.connections);
        }
        Ok(self.closing && self.endpoint.is_empty())
    }

    fn apply_touched(&mut self) {
        for h in self.touched.drain(..) {
            self.endpoint.touch(h);
        }
    }

    /// Sends everything the endpoint has, batching same-size datagrams to the same
    /// destination into one GSO send; stops when the socket pushes back.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.blocked {
            return Ok(());
        }
        let max_segments = self.socket.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS);
        loop {
            let mut len = 0;
            let mut dest = None;
            let mut ecn = None;
            let mut segment = 0;
            let mut count = 0;
            // A batch is one `sendmsg`: at most 64 KB of payload (udp(7), UDP_SEGMENT).
            while count < max_segments && (count == 0 || len + segment <= MAX_UDP_PAYLOAD) {
                let slot = &mut self.send_buf[len..len + MAX_DATAGRAM];
                let Some(t) = self.endpoint.poll_transmit(now, slot) else {
                    break;
                };
                count += 1;
                self.stats.datagrams_out += 1;
                if self.preferred.is_some() && self.endpoint.last_transmit_via_preferred() {
                    // From the preferred address's socket, alone: first what is
                    // batched for the main one.
                    if let Some(d) = dest {
                        if !self.send_batch(d, len, segment, count - 1, ecn)? {
                            return Ok(());
                        }
                    }
                    self.send_preferred(t.destination, len, t.size, t.ecn);
                    len = 0;
                    dest = None;
                    count = 0;
                    continue;
                }
                if dest.is_none() {
                    dest = Some(t.destination);
                    ecn = t.ecn;
                    segment = t.size;
                }
                if dest != Some(t.destination) || ecn != t.ecn || t.size > segment {
                    // Does not fit the batch: send the batch, then this one alone.
                    if !self.send_batch(dest.expect("set"), len, segment, count - 1, ecn)? {
                        self.socket_send_single(t.destination, len, t.size, t.ecn)?;
                        return Ok(());
                    }
                    if !self.socket_send_single(t.destination, len, t.size, t.ecn)? {
                        return Ok(());
                    }
                    len = 0;
                    dest = None;
                    count = 0;
                    continue;
                }
                len += t.size;
                if t.size < segment {
                    break; // a short datagram ends a GSO batch
                }
            }
            if count == 0 {
                return Ok(());
            }
            if !self.send_batch(dest.expect("set"), len, segment, count, ecn)? {
                return Ok(());
            }
        }
    }

    /// Sends `send_buf[..len]` as `count` segments. Returns false if the socket pushed back.
    fn send_batch(
        &mut self,
        dest: SocketAddr,
        len: usize,
        segment: usize,
        count: usize,
        ecn: Option<EcnCodepoint>,
    ) -> io::Result<bool> {
        if count == 0 || len == 0 {
            return Ok(true);
        }
        let seg = (count > 1).then_some(segment);
        if count > 1 {
            self.stats.gso_batches += 1;
        }
        self.send_outcome(dest, 0, len, seg, ecn)
    }

    /// Sends the datagram at `send_buf[at..at + size]` from the preferred address's
    /// socket. Back-pressure there is not waited for: the socket keeps what it can
    /// (sent when writable) and loss recovery resends the rest.
    fn send_preferred(
        &mut self,
        dest: SocketAddr,
        at: usize,
        size: usize,
        ecn: Option<EcnCodepoint>,
    ) {
        let Some(pref) = self.preferred.as_mut() else {
            return;
        };
        self.stats.preferred_out += 1;
        match pref.send_ecn(dest, &self.send_buf[at..at + size], None, ecn) {
            Ok(SendOutcome::Sent) => {}
            Ok(SendOutcome::Queued) | Ok(SendOutcome::Full) => self.stats.send_blocked += 1,
            Err(e) => tracing::debug!("send to {dest} from the preferred address failed: {e}"),
        }
    }

    /// Sends the single datagram at `send_buf[at..at + size]`.
    fn socket_send_single(
        &mut self,
        dest: SocketAddr,
        at: usize,
        size: usize,
        ecn: Option<EcnCodepoint>,
    ) -> io::Result<bool> {
        self.send_outcome(dest, at, at + size, None, ecn)
    }

    fn send_outcome(
        &mut self,
        dest: SocketAddr,
        from: usize,
        to: usize,
        seg: Option<usize>,
        ecn: Option<EcnCodepoint>,
    ) -> io::Result<bool> {
        match self
            .socket
            .send_ecn(dest, &self.send_buf[from..to], seg, ecn)
        {
            Ok(SendOutcome::Sent) => Ok(true),
            Ok(SendOutcome::Queued) | Ok(SendOutcome::Full) => {
                // Back-pressure, not loss: `Queued` kept the bytes; `Full` means the
                // queue is at its bound, and the protocol's loss recovery will resend
                // what this turn could not hand over.
                self.blocked = true;
                self.stats.send_blocked += 1;
                Ok(false)
            }
            Err(e) => {
                // A failed send is a lost datagram (e.g. no route); recovery handles it.
                tracing::debug!("send to {dest} failed: {e}");
                Ok(true)
            }
        }
    }
}
