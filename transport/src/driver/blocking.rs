//! The simple blocking API: [`connect`] returns a [`BlockingConnection`] whose streams
//! implement `std::io::Read` and `Write`. The event loop runs on a background thread;
//! calls here wait on a condition variable and wake the loop through its `mio::Waker`.
//!
//! Memory stays bounded: each stream buffers at most [`STREAM_BUFFER`] bytes in each
//! direction between the application and the loop; a writer waits when its buffer is
//! full and the loop reads from the connection only while the reader's buffer has room,
//! so flow control reaches all the way back to the peer.
//!
//! Nothing here waits on a stream the peer has given up on: when the peer stops our
//! sending side (STOP_SENDING, RFC 9000 §3.5), buffered data is dropped and every
//! write, flush or finish, including one already waiting for room, fails at once with
//! [`io::ErrorKind::BrokenPipe`]; the stream's reading side still delivers what the
//! peer sent (typically the answer saying why it stopped).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use quill_transport::driver::blocking;
//! use quill_transport::{ClientConfig, HostKeyPolicy, Login};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let login = Login::Password { user: "alice".into(), password: "secret".to_string().into() };
//! let config = ClientConfig::new(login, HostKeyPolicy::Pinned(vec!["SHA256:...".into()]));
//! let conn = blocking::connect("127.0.0.1:4433".parse()?, config)?;
//! let mut stream = conn.open_bi()?;
//! stream.write_all(b"hello")?;
//! stream.finish()?;
//! let mut echo = Vec::new();
//! stream.read_to_end(&mut echo)?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{
    self,
    ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset},
};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::event_loop::{Context, EventLoop, Handler, LoopHandle};
use super::socket::UdpConfig;
use crate::proto::endpoint::{ConnectionHandle, EndpointConfig};
use crate::proto::{
    ClientConfig, ConnectionError, Dir, Event, PingError, PingId, ReadOutcome, StreamEvent,
    StreamId, MAX_OUTSTANDING_PINGS,
};

/// Bytes buffered per stream and direction between the application and the loop.
pub const STREAM_BUFFER: usize = 1 << 20;

#[derive(Default)]
struct StreamState {
    /// Written by the application, not yet accepted by the connection.
    out: VecDeque<u8>,
    /// The application finished writing.
    finish: bool,
    finish_sent: bool,
    /// Read from the connection, not yet taken by the application.
    input: VecDeque<u8>,
    /// The peer finished its side and everything is in `input`.
    eof: bool,
    /// The connection said there is data to read.
    readable: bool,
    /// Reading failed (stream reset by the peer).
    reset: Option<u64>,
    /// The peer sent STOP_SENDING with this code: writes fail, `out` is dropped.
    stopped: Option<u64>,
    /// The application abandoned the stream with this code (RESET_STREAM and
    /// STOP_SENDING on the loop's next turn).
    abandon: Option<u64>,
    abandon_sent: bool,
    /// Writes fail as soon as the peer has sent anything on the stream
    /// ([`BlockingStream::fail_writes_on_answer`]).
    fail_writes_on_answer: bool,
}

impl StreamState {
    /// The peer stopped our sending side: nothing buffered will ever be sent.
    fn on_stopped(&mut self, code: u64) {
        self.stopped = Some(code);
        self.out = VecDeque::new();
    }

    /// The error a write, flush or finish returns, if the stream cannot take more.
    fn write_error(&self) -> Option<io::Error> {
        if let Some(code) = self.stopped {
            return Some(ended(
                BrokenPipe,
                "the peer stopped reading the stream",
                code,
            ));
        }
        if let Some(code) = self.abandon {
            return Some(ended(BrokenPipe, "the stream was abandoned", code));
        }
        if self.fail_writes_on_answer
            && (!self.input.is_empty() || self.eof || self.reset.is_some())
        {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the peer answered before taking all the data",
            ));
        }
        None
    }
}

#[derive(Default)]
struct State {
    connected: Option<(String, String)>,
    error: Option<ConnectionError>,
    streams: HashMap<u64, StreamState>,
    incoming: VecDeque<StreamId>,
    /// Streams the application asked to open; answered in `opened`.
    open_requests: VecDeque<Dir>,
    opened: VecDeque<Option<StreamId>>,
    close: Option<(u64, String)>,
    /// The application asked for a key update.
    key_update: bool,
    /// Pings asked for ([`BlockingConnection::ping`]); answered in `pinged`.
    ping_requests: usize,
    pinged: VecDeque<Result<PingId, PingError>>,
    /// What became of pings, oldest first, until [`BlockingConnection::wait_ping`]
    /// takes them (at most [`MAX_PING_OUTCOMES`]).
    ping_outcomes: VecDeque<(PingId, PingOutcome)>,
    rtt: Duration,
    stats: crate::proto::ConnectionStats,
    suite: Option<quill_crypto::packet::Suite>,
    /// The version, ALPN and key-exchange group, once connected.
    negotiated: Negotiated,
    /// The event loop thread has returned (the connection is closed and drained).
    loop_done: bool,
    /// QUIC v1 client: streams may be used before the handshake completes (0-RTT).
    early: bool,
}

/// What became of a [`BlockingConnection::ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// The packet carrying it was acknowledged ([`Event::PingAcknowledged`]).
    Acknowledged {
        /// Its round trip less the peer's ACK delay (RFC 9002 §5.3).
        rtt: Duration,
        /// The ACK delay taken off.
        ack_delay: Duration,
    },
    /// No acknowledgement within `after` ([`Event::PingLost`]).
    Lost {
        /// How long it waited.
        after: Duration,
    },
}

/// Most ping outcomes kept for [`BlockingConnection::wait_ping`]; older ones are
/// dropped when an application never takes them.
const MAX_PING_OUTCOMES: usize = 4 * MAX_OUTSTANDING_PINGS;

/// Longest [`BlockingConnection::ping`] waits for the loop thread to take a request.
const LOOP_ANSWER: Duration = Duration::from_secs(5);

impl State {
    fn push_ping_outcome(&mut self, id: PingId, outcome: PingOutcome) {
        if self.ping_outcomes.len() >= MAX_PING_OUTCOMES {
            self.ping_outcomes.pop_front();
        }
        self.ping_outcomes.push_back((id, outcome));
    }
}

/// What the handshake settled besides the suite.
#[derive(Default, Clone)]
struct Negotiated {
    version: u32,
    alpn: Option<Vec<u8>>,
    group: Option<rustls::NamedGroup>,
    /// QUIC v1: the handshake resumed a session; the server accepted 0-RTT.
    resumed: bool,
    zero_rtt_accepted: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the loop to change the state.
    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(st).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the loop to change the state, or `None` once `deadline` has passed.
    fn wait_until<'a>(
        &self,
        st: MutexGuard<'a, State>,
        deadline: std::time::Instant,
    ) -> Option<MutexGuard<'a, State>> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let (st, _) = self
            .changed
            .wait_timeout(st, left)
            .unwrap_or_else(|e| e.into_inner());
        Some(st)
    }
}

struct FacadeHandler {
    shared: Arc<Shared>,
    conn: Option<ConnectionHandle>,
    buf: Vec<u8>,
}

impl FacadeHandler {
    fn pump(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let Some(conn) = self.conn.and_then(|h| ctx.connection(h)) else {
            // Nothing left to close: a close waiting for its hand-over may go on.
            if self.shared.lock().close.take().is_some() {
                self.shared.changed.notify_all();
            }
            return;
        };
        let mut st = self.shared.lock();
        st.rtt = conn.rtt();
        st.stats.clone_from(conn.stats());
        st.suite = conn.suite();
        st.early = conn.zero_rtt_writable();
        while let Some(dir) = st.open_requests.pop_front() {
            let id = conn.open_stream(dir);
            if let Some(id) = id {
                st.streams.entry(id.0).or_default();
            }
            st.opened.push_back(id);
        }
        if st.key_update {
            // No key update may start before the handshake is confirmed (RFC 9001
            // §6; a QUIC v1 client is up before that) or while the last one is not
            // acknowledged: the request waits for a turn where it can.
            let before = conn.stats().key_updates_initiated;
            conn.initiate_key_update();
            st.key_update = conn.stats().key_updates_initiated == before;
        }
        while st.ping_requests > 0 {
            st.ping_requests -= 1;
            let r = conn.ping(now);
            st.pinged.push_back(r);
        }
        if let Some((code, reason)) = st.close.take() {
            conn.close(now, code, &reason);
        }
        let buf = &mut self.buf;
        for (&raw, s) in st.streams.iter_mut() {
            let id = StreamId(raw);
            if let (Some(code), false) = (s.abandon, s.abandon_sent) {
                s.abandon_sent = true;
                s.out = VecDeque::new();
                let _ = conn.reset_stream(id, code);
                let _ = conn.stop_sending(id, code);
            }
            while !s.out.is_empty() {
                let (a, _) = s.out.as_slices();
                match conn.write(id, a) {
                    Ok(n) if n > 0 => {
                        s.out.drain(..n);
                    }
                    Err(crate::proto::WriteError::Stopped(code)) => s.on_stopped(code),
                    Ok(_) | Err(_) => break,
                }
            }
            if s.finish && s.out.is_empty() && !s.finish_sent && conn.finish(id).is_ok() {
                s.finish_sent = true;
            }
            while s.readable && s.input.len() < STREAM_BUFFER {
                let room = (STREAM_BUFFER - s.input.len()).min(buf.len());
                match conn.read(id, &mut buf[..room]) {
                    Ok(ReadOutcome::Data(n)) => s.input.extend(&buf[..n]),
                    Ok(ReadOutcome::Finished) => {
                        s.eof = true;
                        s.readable = false;
                    }
                    Ok(ReadOutcome::Blocked) => s.readable = false,
                    Err(crate::proto::ReadError::Reset(code)) => {
                        s.reset = Some(code);
                        s.readable = false;
                    }
                    Err(_) => s.readable = false,
                }
            }
        }
        drop(st);
        self.shared.changed.notify_all();
    }
}

impl Handler for FacadeHandler {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, conn: ConnectionHandle, event: Event) {
        let mut st = self.shared.lock();
        match event {
            // Logged in (quill's version, or QUIC v1 with ALPN `quill`), or QUIC v1
            // up without a login or an account.
            Event::Connected { .. } | Event::HandshakeConfirmed { .. } => {
                if let Some(c) = ctx.connection(conn) {
                    st.negotiated = Negotiated {
                        version: c.version(),
                        alpn: c.alpn().map(<[u8]>::to_vec),
                        group: c.key_exchange_group(),
                        resumed: c.resumed(),
                        zero_rtt_accepted: c.zero_rtt_accepted(),
                    };
                }
                st.connected = Some(match event {
                    Event::Connected { account, message } => (account, message),
                    _ => (String::new(), String::new()),
                });
            }
            Event::ConnectionLost(e) => {
                st.error = Some(e);
                drop(st);
                ctx.shutdown(0, "");
                self.shared.changed.notify_all();
            }
            Event::Stream(StreamEvent::Readable(id)) => {
                st.streams.entry(id.0).or_default().readable = true;
            }
            Event::PingAcknowledged { id, rtt, ack_delay } => {
                st.push_ping_outcome(id, PingOutcome::Acknowledged { rtt, ack_delay });
            }
            Event::PingLost { id, after } => {
                st.push_ping_outcome(id, PingOutcome::Lost { after });
            }
            // RFC 9000 §3.5: the peer no longer reads; the connection has reset our
            // sending side. Writers waiting for room are woken by this turn's pump.
            Event::Stream(StreamEvent::Stopped { id, code }) => {
                if let Some(s) = st.streams.get_mut(&id.0) {
                    s.on_stopped(code);
                }
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                drop(st);
                let mut accepted = Vec::new();
                if let Some(c) = ctx.connection(conn) {
                    while let Some(id) = c.accept_stream(dir) {
                        accepted.push(id);
                    }
                }
                let mut st = self.shared.lock();
                for id in accepted {
                    let s = st.streams.entry(id.0).or_default();
                    s.readable = true;
                    st.incoming.push_back(id);
                }
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        self.pump(ctx);
    }

    fn on_wake(&mut self, ctx: &mut Context<'_, Self>) {
        self.pump(ctx);
    }
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Socket or thread trouble.
    Io(io::Error),
    /// The configuration was refused.
    Config(crate::proto::ConfigError),
    /// The connection failed (host key, login, timeout, version, ...).
    Connection(ConnectionError),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Config(e) => write!(f, "{e}"),
            ConnectError::Connection(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A connected connection driven by a background event loop: logged in on quill's
/// own version, up with no account on QUIC v1.
pub struct BlockingConnection {
    shared: Arc<Shared>,
    handle: LoopHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    account: String,
    message: String,
}

/// Connects to `server`, runs the handshake and login, and returns once logged in
/// (QUIC v1: once the handshake is complete; there is no login).
pub fn connect(
    server: SocketAddr,
    config: ClientConfig,
) -> Result<BlockingConnection, ConnectError> {
    start(server, config, false)
}

/// Like [`connect`], but a QUIC v1 client that resumes a session allowing early data
/// ([`ClientConfig::early_data`]) returns at once: what is written on its streams
/// before the handshake completes goes in 0-RTT packets (replayable: idempotent
/// requests only). Otherwise it returns when [`connect`] would.
pub fn connect_early(
    server: SocketAddr,
    config: ClientConfig,
) -> Result<BlockingConnection, ConnectError> {
    start(server, config, true)
}

fn start(
    server: SocketAddr,
    config: ClientConfig,
    early: bool,
) -> Result<BlockingConnection, ConnectError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    let handler = FacadeHandler {
        shared: shared.clone(),
        conn: None,
        buf: vec![0u8; 64 * 1024],
    };
    // ICMP errors tell a client at once that nothing listens at the server's address.
    let udp = UdpConfig {
        icmp_errors: true,
        ..UdpConfig::default()
    };
    let mut ev = EventLoop::bind(bind, &udp, EndpointConfig::default(), None, 1, handler)
        .map_err(ConnectError::Io)?;
    let h = ev
        .with_context(|_, ctx| ctx.connect(config, server))
        .map_err(ConnectError::Config)?;
    ev.handler().conn = Some(h);
    let handle = ev.handle();
    let done = shared.clone();
    let thread = std::thread::Builder::new()
        .name("quill-loop".into())
        .spawn(move || {
            let r = ev.run();
            done.lock().loop_done = true;
            done.changed.notify_all();
            r
        })
        .map_err(ConnectError::Io)?;
    let mut st = shared.lock();
    loop {
        let up = match st.connected.clone() {
            Some(c) => Some(c),
            None if early && st.early => Some((String::new(), String::new())),
            None => None,
        };
        if let Some((account, message)) = up {
            drop(st);
            return Ok(BlockingConnection {
                shared,
                handle,
                thread: Some(thread),
                account,
                message,
            });
        }
        if let Some(e) = st.error.clone() {
            drop(st);
            let _ = thread.join();
            return Err(ConnectError::Connection(e));
        }
        st = shared.wait(st);
    }
}

impl BlockingConnection {
    /// The account the server logged us into.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The QUIC version spoken (quill's own or QUIC v1's `0x00000001`).
    pub fn version(&self) -> u32 {
        self.shared.lock().negotiated.version
    }

    /// QUIC v1: the negotiated ALPN protocol.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.shared.lock().negotiated.alpn.clone()
    }

    /// QUIC v1: the negotiated TLS key-exchange group (e.g. X25519MLKEM768).
    pub fn key_exchange_group(&self) -> Option<rustls::NamedGroup> {
        self.shared.lock().negotiated.group
    }

    /// QUIC v1: whether the handshake resumed a session (known once complete).
    pub fn resumed(&self) -> bool {
        self.shared.lock().negotiated.resumed
    }

    /// QUIC v1: whether the server accepted 0-RTT (known once the handshake is
    /// complete).
    pub fn zero_rtt_accepted(&self) -> bool {
        self.shared.lock().negotiated.zero_rtt_accepted
    }

    /// The server's welcome message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The current smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.shared.lock().rtt
    }

    /// The connection's counters (packets sent, lost, keep-alives, ...), as of the
    /// event loop's last turn.
    pub fn stats(&self) -> crate::proto::ConnectionStats {
        self.shared.lock().stats.clone()
    }

    /// The negotiated AEAD suite.
    pub fn suite(&self) -> Option<quill_crypto::packet::Suite> {
        self.shared.lock().suite
    }

    fn open(&self, dir: Dir) -> io::Result<BlockingStream> {
        let mut st = self.shared.lock();
        st.open_requests.push_back(dir);
        self.handle.wake();
        loop {
            if let Some(e) = &st.error {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    e.to_string(),
                ));
            }
            if let Some(r) = st.opened.pop_front() {
                return match r {
                    Some(id) => Ok(BlockingStream {
                        shared: self.shared.clone(),
                        handle: self.handle.clone(),
                        id,
                    }),
                    None => Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the server's stream limit is reached; finish a stream first",
                    )),
                };
            }
            st = self.shared.wait(st);
        }
    }

    /// Opens a bidirectional stream.
    pub fn open_bi(&self) -> io::Result<BlockingStream> {
        self.open(Dir::Bi)
    }

    /// Opens a unidirectional stream.
    pub fn open_uni(&self) -> io::Result<BlockingStream> {
        self.open(Dir::Uni)
    }

    /// Waits for a stream the server opened.
    pub fn accept(&self) -> io::Result<BlockingStream> {
        let mut st = self.shared.lock();
        loop {
            if let Some(id) = st.incoming.pop_front() {
                return Ok(BlockingStream {
                    shared: self.shared.clone(),
                    handle: self.handle.clone(),
                    id,
                });
            }
            if let Some(e) = &st.error {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    e.to_string(),
                ));
            }
            st = self.shared.wait(st);
        }
    }

    /// Asks for a key update (RFC 9001 §6) on the loop's next turn; ignored while the
    /// previous one is unacknowledged. [`BlockingConnection::stats`] counts the ones
    /// that happened.
    pub fn initiate_key_update(&self) {
        self.shared.lock().key_update = true;
        self.handle.wake();
    }

    /// Moves the connection to a new local UDP port on the loop's next turn (active
    /// migration, RFC 9000 §9.2: a fresh connection ID, the new path validated), as
    /// a device does on a network change. [`BlockingConnection::stats`] counts it
    /// (`local_migrations`, and `paths_validated` once the server answered).
    pub fn migrate(&self) {
        self.handle.migrate();
    }

    /// Sends a PING frame in the next 1-RTT packet ([`Connection::ping`]) and returns
    /// its identity; [`BlockingConnection::wait_ping`] then says what became of it.
    /// Fails when the connection has ended, when [`MAX_OUTSTANDING_PINGS`] are
    /// outstanding ([`io::ErrorKind::WouldBlock`]), or when the event loop does not
    /// take the request within 5 s.
    ///
    /// [`Connection::ping`]: crate::proto::Connection::ping
    pub fn ping(&self) -> io::Result<PingId> {
        let deadline = std::time::Instant::now() + LOOP_ANSWER;
        self.shared.lock().ping_requests += 1;
        self.handle.wake();
        let Some(r) = self.wait_for(deadline, |st| st.pinged.pop_front())? else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the event loop did not take the ping within 5 s",
            ));
        };
        r.map_err(|e| {
            let kind = match e {
                PingError::TooMany => io::ErrorKind::WouldBlock,
                PingError::NotConnected => io::ErrorKind::NotConnected,
                PingError::Closed => io::ErrorKind::ConnectionAborted,
            };
            io::Error::new(kind, e.to_string())
        })
    }

    /// Waits at most `timeout` for what became of the next ping (acknowledged or
    /// lost, in the order the transport learned it). `Ok(None)` when nothing came in
    /// time; an error once the connection has ended and no outcome is left.
    pub fn wait_ping(&self, timeout: Duration) -> io::Result<Option<(PingId, PingOutcome)>> {
        let deadline = std::time::Instant::now() + timeout;
        self.wait_for(deadline, |st| st.ping_outcomes.pop_front())
    }

    /// Waits until `deadline` for `take` to find something in the state the loop
    /// shares: `Ok(None)` at the deadline, an error once the connection has ended
    /// and `take` found nothing.
    fn wait_for<T>(
        &self,
        deadline: std::time::Instant,
        mut take: impl FnMut(&mut State) -> Option<T>,
    ) -> io::Result<Option<T>> {
        let mut st = self.shared.lock();
        loop {
            if let Some(v) = take(&mut st) {
                return Ok(Some(v));
            }
            if let Some(e) = &st.error {
                return Err(aborted(e));
            }
            if st.loop_done {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the connection is closed",
                ));
            }
            st = match self.shared.wait_until(st, deadline) {
                Some(st) => st,
                None => return Ok(None),
            };
        }
    }

    /// Waits at most `timeout` for the connection to end on its own (idle timeout,
    /// close by the peer, reset) and returns why, or `None` if it is still up.
    pub fn wait_closed(&self, timeout: Duration) -> Option<ConnectionError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = &st.error {
                return Some(e.clone());
            }
            st = self.shared.wait_until(st, deadline)?;
        }
    }

    /// A handle that closes this connection from another thread (a signal handler
    /// thread, for example) while this one may be blocked in a read or write.
    pub fn closer(&self) -> ConnectionCloser {
        ConnectionCloser {
            shared: self.shared.clone(),
            handle: self.handle.clone(),
        }
    }

    /// Closes the connection (application code and reason) and waits for the loop.
    pub fn close(mut self, code: u64, reason: &str) {
        let deadline = std::time::Instant::now() + CLOSE_HANDOVER;
        hand_over_close(&self.shared, &self.handle, code, reason, deadline);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Longest a close waits for the loop thread to take its code and reason before the
/// loop is told to shut down anyway.
const CLOSE_HANDOVER: Duration = Duration::from_secs(1);

/// Gives `(code, reason)` to the loop thread, waits (until `deadline` at most) until
/// the handler has closed the connection with them, then asks the loop to shut down.
/// In that order because the loop's shutdown closes whatever is still open with its
/// own generic reason: asked for at once, it could overtake the handler (the loop may
/// be between the handler and its shutdown check when the flag is set), and the peer
/// would read "server shutting down" instead of the reason given here.
fn hand_over_close(
    shared: &Shared,
    handle: &LoopHandle,
    code: u64,
    reason: &str,
    deadline: std::time::Instant,
) {
    let mut st = shared.lock();
    if !st.loop_done {
        st.close = Some((code, reason.to_owned()));
        handle.wake();
        while st.close.is_some() && !st.loop_done {
            match shared.wait_until(st, deadline) {
                Some(next) => st = next,
                None => break,
            }
        }
    }
    handle.shutdown();
}

/// Closes a [`BlockingConnection`] from any thread: see [`BlockingConnection::closer`].
#[derive(Clone)]
pub struct ConnectionCloser {
    shared: Arc<Shared>,
    handle: LoopHandle,
}

impl ConnectionCloser {
    /// Sends an application CONNECTION_CLOSE with `code` and `reason` (if the
    /// connection is still up) and waits at most `timeout` for the event loop to finish
    /// closing. Returns whether it finished in time.
    pub fn close(&self, code: u64, reason: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let handover = deadline.min(std::time::Instant::now() + CLOSE_HANDOVER);
        hand_over_close(&self.shared, &self.handle, code, reason, handover);
        let mut st = self.shared.lock();
        while !st.loop_done {
            match self.shared.wait_until(st, deadline) {
                Some(next) => st = next,
                None => return false,
            }
        }
        true
    }
}

impl Drop for BlockingConnection {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown();
            let _ = t.join();
        }
    }
}

/// One stream of a [`BlockingConnection`].
pub struct BlockingStream {
    shared: Arc<Shared>,
    handle: LoopHandle,
    id: StreamId,
}

impl BlockingStream {
    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Another handle to the same stream, so one thread can write while another reads
    /// (like `TcpStream::try_clone`).
    pub fn try_clone(&self) -> BlockingStream {
        BlockingStream {
            shared: self.shared.clone(),
            handle: self.handle.clone(),
            id: self.id,
        }
    }

    /// Ends our side of the stream once everything written has been handed over.
    /// Fails if the peer stopped the stream (then nothing more will be delivered).
    pub fn finish(&mut self) -> io::Result<()> {
        let mut st = self.shared.lock();
        if let Some(s) = st.streams.get_mut(&self.id.0) {
            if let Some(e) = s.write_error() {
                return Err(e);
            }
            s.finish = true;
        }
        drop(st);
        self.handle.wake();
        Ok(())
    }

    /// For request/answer exchanges where the peer answers once it has everything,
    /// or early to refuse: from now on writes (and `flush`, `finish`) fail with
    /// [`io::ErrorKind::BrokenPipe`] as soon as the peer has sent anything on this
    /// stream, instead of waiting for room that a peer which already answered may
    /// never give. Read the answer then.
    pub fn fail_writes_on_answer(&mut self) {
        let mut st = self.shared.lock();
        st.streams
            .entry(self.id.0)
            .or_default()
            .fail_writes_on_answer = true;
        drop(st);
        // Wake writers already waiting, so they check the new condition.
        self.shared.changed.notify_all();
    }

    /// Abandons the stream in both directions with application error `code`
    /// (RESET_STREAM and STOP_SENDING frames, RFC 9000 §19.4, §19.5): data not yet sent is
    /// dropped, and the peer learns at once that nothing more will come.
    pub fn abandon(&mut self, code: u64) {
        let mut st = self.shared.lock();
        let s = st.streams.entry(self.id.0).or_default();
        if s.abandon.is_none() {
            s.abandon = Some(code);
        }
        drop(st);
        self.shared.changed.notify_all();
        self.handle.wake();
    }
}

/// The error for a stream that `what` ended with application error `code`.
fn ended(kind: io::ErrorKind, what: &str, code: u64) -> io::Error {
    io::Error::new(kind, format!("{what} (code {code})"))
}

fn aborted(e: &ConnectionError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
}

impl io::Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = &st.error {
                return Err(aborted(e));
            }
            let s = st.streams.entry(self.id.0).or_default();
            if let Some(e) = s.write_error() {
                return Err(e);
            }
            if s.finish {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "stream already finished",
                ));
            }
            let room = STREAM_BUFFER.saturating_sub(s.out.len());
            if room > 0 {
                let n = room.min(buf.len());
                s.out.extend(&buf[..n]);
                drop(st);
                self.handle.wake();
                return Ok(n);
            }
            st = self.shared.wait(st);
        }
    }

    /// Waits until the connection has taken everything written so far.
    fn flush(&mut self) -> io::Result<()> {
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = &st.error {
                return Err(aborted(e));
            }
            let s = st.streams.get(&self.id.0);
            if let Some(e) = s.and_then(StreamState::write_error) {
                return Err(e);
            }
            if s.is_none_or(|s| s.out.is_empty()) {
                return Ok(());
            }
            st = self.shared.wait(st);
        }
    }
}

impl io::Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.shared.lock();
        loop {
            let err = st.error.clone();
            let s = st.streams.entry(self.id.0).or_default();
            if !s.input.is_empty() {
                let n = buf.len().min(s.input.len());
                for (d, b) in buf[..n].iter_mut().zip(s.input.drain(..n)) {
                    *d = b;
                }
                let refill = s.input.len() < STREAM_BUFFER / 2;
                if refill {
                    s.readable = true;
                }
                drop(st);
                if refill {
                    self.handle.wake();
                }
                return Ok(n);
            }
            if s.eof {
                return Ok(0);
            }
            if let Some(code) = s.reset {
                return Err(ended(ConnectionReset, "stream reset by the peer", code));
            }
            if let Some(code) = s.abandon {
                return Err(ended(ConnectionAborted, "the stream was abandoned", code));
            }
            if let Some(e) = err {
                return Err(aborted(&e));
            }
            st = self.shared.wait(st);
        }
    }
}
