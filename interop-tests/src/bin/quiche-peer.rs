//! `quiche-peer`: Cloudflare's quiche (crates.io; BoringSSL built from source with
//! cmake) as a reference QUIC peer for quill's interop checks and the comparison
//! harness. The command line and the stream protocol are the shared ones of
//! [`quill_interop::refpeers`].
//!
//! quiche is a sans-IO library: this file is its event loop, written to show quiche at
//! its best rather than its example's worst:
//! - one thread, a `mio` poll, one non-blocking UDP socket with 4 MiB kernel buffers
//!   requested (what quill's driver asks for);
//! - receives through quinn-udp: `recvmmsg` batches of `quinn_udp::BATCH_SIZE` buffers
//!   of 64 KiB, each of which may be a GRO super-datagram (`UDP_GRO`), split by stride;
//! - sends through quinn-udp with GSO (`UDP_SEGMENT`): consecutive packets of one size
//!   to one destination are batched into one `sendmsg` of up to 64 KB (a shorter packet
//!   ends a batch; a longer one or another destination starts the next);
//! - quiche's pacing release times (`SendInfo::at`) are not enforced — doing so would
//!   break GSO batches apart; its congestion window still bounds every burst, and each
//!   connection sends at most `max(send_quantum, one batch)` before the loop goes back to
//!   the socket, so receives (ACKs) interleave with sends;
//! - timers: each connection's own `timeout_instant()` kept in an ordered set and
//!   re-armed after every event on that connection; the poll sleeps until the earliest;
//! - flow-control windows: `--window` (32 MiB), connection and streams, as quinn gets.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::{Events, Interest, Poll, Token, Waker};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use ring::rand::{SecureRandom, SystemRandom};
use slab::Slab;

use quill_interop::refpeers::{
    self, encode_header, hq, Cli, ClientArgs, ClientReport, Command, ConnTiming, HoldReport, OnOff,
    ProbeArgs, ProbeOutcome, ProbeReport, ServerArgs, EXIT_FAILURE, HEADER_LEN, MAX_UDP_PAYLOAD,
    ZEROS,
};

const PROG: &str = "quiche-peer";
const STACK: &str = "quiche";

const SOCK: Token = Token(0);
const WAKE: Token = Token(1);
/// Length of every connection ID this peer issues.
const CID_LEN: usize = 16;
/// Most bytes in one GSO batch (the kernel's limit is 64 KiB including headers).
const BATCH_BYTES: usize = 65_000;
/// One receive buffer: the largest GRO super-datagram.
const RECV_BUF: usize = 65_536;
/// RFC 9000 §14.1: a server MUST discard an Initial in a datagram below 1200 bytes, and
/// §6.1 (via 14.1) applies the same floor to datagrams that would get a Version
/// Negotiation.
const MIN_INITIAL: usize = 1200;

/// Stream buffers that can point at static data: quiche's zero-copy send path
/// (`stream_send_zc`), the counterpart of quinn's `write_chunk(Bytes::from_static)`.
/// Without it every `stream_send` copies the chunk into a fresh `Arc<[u8]>`, and the
/// allocation of 1 MiB buffers alone cost ~14% of the client's CPU in a profile.
#[derive(Debug, Clone, Default)]
struct ZcFactory;

/// A [`bytes::Bytes`] as a quiche stream buffer.
#[derive(Debug, Clone)]
struct ZcBuf(bytes::Bytes);

impl AsRef<[u8]> for ZcBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl quiche::BufSplit for ZcBuf {
    fn split_at(&mut self, at: usize) -> Self {
        ZcBuf(self.0.split_off(at))
    }
}

impl quiche::BufFactory for ZcFactory {
    type Buf = ZcBuf;
    type DgramBuf = Vec<u8>;

    fn buf_from_slice(buf: &[u8]) -> ZcBuf {
        ZcBuf(bytes::Bytes::copy_from_slice(buf))
    }

    fn dgram_buf_from_slice(buf: &[u8]) -> Vec<u8> {
        buf.to_vec()
    }
}

/// A quiche connection with zero-copy stream buffers.
type QConn = quiche::Connection<ZcFactory>;

/// Queues `len` zero bytes (at most [`ZEROS`]'s length) without copying; returns the
/// bytes quiche took.
fn send_zeros(q: &mut QConn, stream: u64, len: usize, fin: bool) -> quiche::Result<usize> {
    if len == 0 {
        return q.stream_send(stream, &[], fin);
    }
    let buf = ZcBuf(bytes::Bytes::from_static(&ZEROS[..len]));
    q.stream_send_zc(stream, buf, fin).map(|(n, _rest)| n)
}

static STOP: AtomicBool = AtomicBool::new(false);
static WAKER: OnceLock<Waker> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    if let Some(w) = WAKER.get() {
        // An eventfd write: async-signal-safe.
        let _ = w.wake();
    }
}

fn main() -> ExitCode {
    refpeers::process_start();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(a) => server(a).map(|()| 0),
        Command::Client(a) => client(a).map(|()| 0),
        Command::Probe(a) => Ok(probe(a)),
        Command::Hq { role } => hq_main(role),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            refpeers::print_error(PROG, e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// What every quiche configuration of this peer (bench and hq-interop, both sides)
/// shares: `alpn`, a 30 s idle timeout, datagrams up to `MAX_UDP_PAYLOAD`, and
/// bidirectional streams only, with `stream` bytes of window per stream and `conn`
/// per connection.
fn common_config(alpn: &[u8], stream: u64, conn: u64) -> Result<quiche::Config, String> {
    // `Config::new` loads the system CA bundle into its TLS context (several ms per
    // process, and roots this peer must not trust): start from an empty context
    // instead; clients add exactly their `--ca`.
    let ctx = boring::ssl::SslContextBuilder::new(boring::ssl::SslMethod::tls())
        .map_err(|e| format!("cannot create the TLS context: {e}"))?;
    let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx)
        .map_err(|e| e.to_string())?;
    c.set_application_protos(&[alpn])
        .map_err(|e| e.to_string())?;
    c.set_max_idle_timeout(30_000);
    c.set_max_send_udp_payload_size(MAX_UDP_PAYLOAD);
    c.set_initial_max_data(conn);
    c.set_initial_max_stream_data_bidi_local(stream);
    c.set_initial_max_stream_data_bidi_remote(stream);
    c.set_initial_max_stream_data_uni(0);
    c.set_initial_max_streams_uni(0);
    c.set_max_connection_window(conn);
    c.set_max_stream_window(stream);
    Ok(c)
}

/// The bench stream protocol's configuration (both sides).
fn base_config(window: u64) -> Result<quiche::Config, String> {
    let mut c = common_config(refpeers::ALPN, window, window)?;
    c.set_max_recv_udp_payload_size(RECV_BUF);
    c.set_initial_max_streams_bidi(1024);
    c.set_disable_active_migration(true);
    Ok(c)
}

// ---------------------------------------------------------------------------
// Socket I/O
// ---------------------------------------------------------------------------

struct Io {
    poll: Poll,
    sock: mio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    max_segments: usize,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    out: Vec<u8>,
    /// A batch in `out` the kernel refused with EAGAIN: (length, destination, segment).
    pending: Option<(usize, SocketAddr, Option<usize>)>,
}

impl Io {
    fn bind(addr: SocketAddr, gso: OnOff, gro: OnOff) -> Result<Io, String> {
        let std_sock = refpeers::bind_udp(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        let state = UdpSocketState::new((&std_sock).into())
            .map_err(|e| format!("cannot set up the socket: {e}"))?;
        if !gro.on() {
            use std::os::fd::AsFd;
            refpeers::disable_gro(std_sock.as_fd())
                .map_err(|e| format!("cannot turn GRO off: {e}"))?;
        }
        let local = std_sock.local_addr().map_err(|e| e.to_string())?;
        let mut sock = mio::net::UdpSocket::from_std(std_sock);
        let poll = Poll::new().map_err(|e| e.to_string())?;
        poll.registry()
            .register(&mut sock, SOCK, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        let max_segments = if gso.on() {
            state.max_gso_segments().max(1)
        } else {
            1
        };
        let batch = quinn_udp::BATCH_SIZE.max(1);
        Ok(Io {
            poll,
            sock,
            state,
            local,
            max_segments,
            bufs: (0..batch).map(|_| vec![0u8; RECV_BUF]).collect(),
            metas: vec![RecvMeta::default(); batch],
            out: vec![0u8; BATCH_BYTES + MAX_UDP_PAYLOAD],
            pending: None,
        })
    }

    /// Sends `out[..len]`; `Ok(false)` when the kernel said EAGAIN (kept as pending).
    fn send_out(&mut self, len: usize, dst: SocketAddr, seg: Option<usize>) -> io::Result<bool> {
        let t = Transmit {
            destination: dst,
            ecn: None,
            contents: &self.out[..len],
            segment_size: seg,
            src_ip: None,
        };
        match self.state.try_send((&self.sock).into(), &t) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending = Some((len, dst, seg));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Retries the pending batch; true when nothing is pending any more.
    fn retry_pending(&mut self) -> bool {
        let Some((len, dst, seg)) = self.pending.take() else {
            return true;
        };
        // A hard error loses the batch, like a lost packet.
        self.send_out(len, dst, seg).unwrap_or(true)
    }
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// A connection ID copied off a datagram.
#[derive(Clone, Copy)]
struct Cid {
    len: usize,
    bytes: [u8; 20],
}

impl Cid {
    fn new(s: &[u8]) -> Option<Cid> {
        let mut bytes = [0u8; 20];
        bytes.get_mut(..s.len())?.copy_from_slice(s);
        Some(Cid {
            len: s.len(),
            bytes,
        })
    }
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[derive(Default)]
struct ServerStream {
    header: [u8; HEADER_LEN],
    have: usize,
    fin_received: bool,
    remaining: u64,
}

#[derive(Default)]
struct ServerApp {
    streams: HashMap<u64, ServerStream>,
}

struct ClientApp {
    index: usize,
    download: u64,
    connect_start: Instant,
    established: Option<Instant>,
    transfer_start: Option<Instant>,
    header: [u8; HEADER_LEN],
    header_sent: usize,
    upload_left: u64,
    fin_sent: bool,
    got: u64,
    first_byte: Option<Instant>,
    end: Option<Instant>,
    recv_error: Option<quiche::Error>,
    /// Idle mode: stay open once the answer is in.
    hold: bool,
    /// Idle mode: the answer is in and its timing was reported; the connection is held.
    reported: bool,
    /// Idle mode: when the last keep-alive PING was queued (or the answer came).
    last_ping: Option<Instant>,
}

enum App {
    Server(ServerApp),
    Client(Box<ClientApp>),
}

struct Conn {
    q: QConn,
    ids: Vec<Vec<u8>>,
    timer: Option<Instant>,
    dirty: bool,
    /// A packet that did not fit the previous GSO batch.
    held: Vec<u8>,
    held_to: Option<SocketAddr>,
    app: App,
}

/// The state of one finished client connection.
enum Finished {
    Ok(usize, ConnTiming),
    Failed(usize, String, Option<quiche::Error>),
}

struct Endpoint {
    io: Io,
    config: quiche::Config,
    conns: Slab<Conn>,
    ids: HashMap<Vec<u8>, usize>,
    timers: BTreeSet<(Instant, usize)>,
    dirty: Vec<usize>,
    is_server: bool,
    scratch: Vec<u8>,
    rng: SystemRandom,
    finished: Vec<Finished>,
    /// Idle mode: client connections held open (answer in, not closed).
    held: usize,
    /// Idle mode: held connections that closed.
    lost_held: usize,
    /// Idle mode: keep-alive PINGs queued, on every connection.
    pings: u64,
}

impl Endpoint {
    fn new(io: Io, config: quiche::Config, is_server: bool) -> Endpoint {
        Endpoint {
            io,
            config,
            conns: Slab::new(),
            ids: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            is_server,
            scratch: vec![0u8; RECV_BUF],
            rng: SystemRandom::new(),
            finished: Vec::new(),
            held: 0,
            lost_held: 0,
            pings: 0,
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn new_cid(&self) -> Result<[u8; CID_LEN], String> {
        let mut scid = [0u8; CID_LEN];
        self.rng
            .fill(&mut scid)
            .map_err(|_| "the system random generator failed".to_string())?;
        Ok(scid)
    }

    /// Starts a client connection (`index` among the run's connections); `hold`: keep
    /// it open once its answer is in (idle mode).
    fn connect(
        &mut self,
        peer: SocketAddr,
        index: usize,
        (upload, download): (u64, u64),
        hold: bool,
    ) -> Result<(), String> {
        let scid = self.new_cid()?;
        let q = quiche::connect_with_buffer_factory::<ZcFactory>(
            Some(refpeers::SERVER_NAME),
            &quiche::ConnectionId::from_ref(&scid),
            self.io.local,
            peer,
            &mut self.config,
        )
        .map_err(|e| format!("quiche::connect: {e}"))?;
        let app = App::Client(Box::new(ClientApp {
            index,
            download,
            connect_start: Instant::now(),
            established: None,
            transfer_start: None,
            header: encode_header(download),
            header_sent: 0,
            upload_left: upload,
            fin_sent: false,
            got: 0,
            first_byte: None,
            end: None,
            recv_error: None,
            hold,
            reported: false,
            last_ping: None,
        }));
        let key = self.conns.insert(Conn {
            q,
            ids: vec![scid.to_vec()],
            timer: None,
            dirty: false,
            held: Vec::with_capacity(MAX_UDP_PAYLOAD),
            held_to: None,
            app,
        });
        self.ids.insert(scid.to_vec(), key);
        self.mark_dirty(key);
        Ok(())
    }

    /// One turn: wait for the socket or the earliest timer, then receive everything
    /// (interleaved with servicing the connections it touched) and fire due timers.
    fn turn(&mut self, events: &mut Events, max_wait: Option<Duration>) -> Result<(), String> {
        let now = Instant::now();
        let mut wait = self
            .timers
            .first()
            .map(|(t, _)| t.saturating_duration_since(now));
        if let Some(m) = max_wait {
            wait = Some(wait.map_or(m, |w| w.min(m)));
        }
        if !self.dirty.is_empty() {
            wait = Some(Duration::ZERO);
        }
        match self.io.poll.poll(events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        let mut writable = false;
        for ev in events.iter() {
            if ev.token() == SOCK && ev.is_writable() {
                writable = true;
            }
        }
        if writable && self.io.pending.is_some() && self.io.retry_pending() {
            // Everyone may have been held back by the full socket buffer.
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for k in keys {
                self.mark_dirty(k);
            }
        }
        // Bounded: each pass either reads a batch or ends the loop on EAGAIN, and the
        // pass count is capped so that timers and sends are never starved.
        for _ in 0..1024 {
            let got = self.recv_batch();
            self.fire_timers();
            self.service_dirty();
            if got == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reads one `recvmmsg` batch and feeds every datagram to its connection; returns
    /// the number of messages read (0 on EAGAIN).
    fn recv_batch(&mut self) -> usize {
        let mut bufs = std::mem::take(&mut self.io.bufs);
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> = bufs
                .iter_mut()
                .map(|b| IoSliceMut::new(&mut b[..]))
                .collect();
            // EAGAIN, or an error the next turn will meet again: nothing read.
            self.io
                .state
                .recv((&self.io.sock).into(), &mut iovs, &mut self.io.metas)
                .unwrap_or_default()
        };
        for (i, buf) in bufs.iter_mut().enumerate().take(n) {
            let meta = self.io.metas[i];
            let len = meta.len.min(RECV_BUF);
            let stride = meta.stride.clamp(1, RECV_BUF);
            for dgram in buf[..len].chunks_mut(stride) {
                self.on_datagram(dgram, meta.addr);
            }
        }
        self.io.bufs = bufs;
        n
    }

    fn on_datagram(&mut self, pkt: &mut [u8], from: SocketAddr) {
        let Some(&first) = pkt.first() else {
            return;
        };
        let long = first & 0x80 != 0;
        let (dcid, long_info) = if long {
            // RFC 8999 §5.1: the version-independent long header.
            match quill_transport::wire::parse_invariant(pkt) {
                Ok(h) => match (Cid::new(h.dcid), Cid::new(h.scid)) {
                    (Some(d), Some(s)) => (d, Some((h.version, s))),
                    _ => return,
                },
                Err(_) => return,
            }
        } else {
            match pkt.get(1..1 + CID_LEN).and_then(Cid::new) {
                Some(d) => (d, None),
                None => return,
            }
        };
        let key = match self.ids.get(dcid.as_slice()) {
            Some(&k) => k,
            None => {
                let Some((version, scid)) = long_info else {
                    return;
                };
                if !self.is_server || version == 0 || pkt.len() < MIN_INITIAL {
                    return;
                }
                if !quiche::version_is_supported(version) {
                    // RFC 9000 §6.1: "If the version selected by the client is not
                    // acceptable to the server, the server responds with a Version
                    // Negotiation packet".
                    self.send_version_negotiation(&scid, &dcid, from);
                    return;
                }
                // RFC 9000 §17.2.2: only an Initial starts a connection.
                if (first >> 4) & 0x03 != 0 {
                    return;
                }
                match self.accept(&dcid, from) {
                    Some(k) => k,
                    None => return,
                }
            }
        };
        let to = self.io.local;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.q.recv(pkt, quiche::RecvInfo { from, to }) {
            Ok(_) | Err(quiche::Error::Done) => {}
            Err(e) => {
                if let App::Client(app) = &mut c.app {
                    app.recv_error.get_or_insert(e);
                }
            }
        }
        self.mark_dirty(key);
    }

    fn send_version_negotiation(&mut self, scid: &Cid, dcid: &Cid, to: SocketAddr) {
        if self.io.pending.is_some() {
            return; // best effort: the client will retransmit
        }
        let scid = quiche::ConnectionId::from_ref(scid.as_slice());
        let dcid = quiche::ConnectionId::from_ref(dcid.as_slice());
        if let Ok(n) = quiche::negotiate_version(&scid, &dcid, &mut self.io.out) {
            if let Ok(false) = self.io.send_out(n, to, None) {
                self.io.pending = None; // stateless: drop rather than hold
            }
        }
    }

    fn accept(&mut self, odcid: &Cid, from: SocketAddr) -> Option<usize> {
        let scid = self.new_cid().ok()?;
        let q = quiche::accept_with_buf_factory::<ZcFactory>(
            &quiche::ConnectionId::from_ref(&scid),
            None,
            self.io.local,
            from,
            &mut self.config,
        )
        .ok()?;
        let key = self.conns.insert(Conn {
            q,
            ids: vec![scid.to_vec(), odcid.as_slice().to_vec()],
            timer: None,
            dirty: false,
            held: Vec::with_capacity(MAX_UDP_PAYLOAD),
            held_to: None,
            app: App::Server(ServerApp::default()),
        });
        // The client's Initial retransmissions still carry its original DCID.
        self.ids.insert(scid.to_vec(), key);
        self.ids.insert(odcid.as_slice().to_vec(), key);
        Some(key)
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(t, key)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(c) = self.conns.get_mut(key) {
                c.timer = None;
                c.q.on_timeout();
            }
            self.mark_dirty(key);
        }
    }

    fn service_dirty(&mut self) {
        let keys = std::mem::take(&mut self.dirty);
        for key in keys {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
            }
            self.service(key);
        }
    }

    /// Application work, then sends, then the timer, then removal when closed.
    fn service(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match &mut c.app {
            App::Server(app) => server_streams(&mut c.q, app, &mut self.scratch),
            // RFC 9000 §6.2: "A client that supports only this version MUST abandon the
            // current connection attempt if it receives a Version Negotiation packet"
            // -- without the CONNECTION_CLOSE quiche queued, which the server could not
            // read anyway. Any other receive error ends the attempt the same way.
            App::Client(app) if app.recv_error.is_some() => {
                self.remove(key);
                return;
            }
            App::Client(app) => {
                client_streams(&mut c.q, app, &mut self.scratch);
                if app.hold && app.end.is_some() && !app.reported {
                    // Idle mode: the answer is in; report it and keep the connection.
                    app.reported = true;
                    app.last_ping = app.end;
                    self.held += 1;
                    self.finished.push(finish_client(&c.q, app));
                }
            }
        }
        let more = flush(&mut self.io, c);
        let client_done = match &c.app {
            App::Client(app) => (app.end.is_some() && !app.hold) || app.recv_error.is_some(),
            App::Server(_) => false,
        };
        if c.q.is_closed() || (client_done && !more) {
            self.remove(key);
            return;
        }
        if more && self.io.pending.is_none() {
            self.mark_dirty(key);
        }
        self.rearm(key);
    }

    fn rearm(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let next = c.q.timeout_instant();
        if next != c.timer {
            if let Some(old) = c.timer {
                self.timers.remove(&(old, key));
            }
            if let Some(t) = next {
                self.timers.insert((t, key));
            }
            c.timer = next;
        }
    }

    fn remove(&mut self, key: usize) {
        let c = self.conns.remove(key);
        if let Some(t) = c.timer {
            self.timers.remove(&(t, key));
        }
        for id in &c.ids {
            if self.ids.get(id) == Some(&key) {
                self.ids.remove(id);
            }
        }
        if let App::Client(app) = c.app {
            if app.reported {
                self.held -= 1;
                self.lost_held += 1;
            } else {
                self.finished.push(finish_client(&c.q, &app));
            }
        }
    }

    /// Idle mode: queues a PING on every held connection whose last one is at least
    /// `every` old (quiche has no keep-alive timer of its own).
    fn keep_alive(&mut self, every: Duration) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            let App::Client(app) = &mut c.app else {
                continue;
            };
            let last = app.last_ping.unwrap_or(now);
            if app.reported && now.saturating_duration_since(last) >= every {
                if c.q.send_ack_eliciting().is_ok() {
                    self.pings += 1;
                }
                app.last_ping = Some(now);
                due.push(key);
            }
        }
        for key in due {
            self.mark_dirty(key);
        }
    }

    /// Closes every connection and sends the CONNECTION_CLOSE frames once.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(c) = self.conns.get_mut(key) {
                let _ = c.q.close(true, 0, b"shutting down");
                let _ = flush(&mut self.io, c);
            }
        }
    }
}

fn finish_client(q: &QConn, app: &ClientApp) -> Finished {
    if let (Some(end), Some(established), Some(start)) =
        (app.end, app.established, app.transfer_start)
    {
        if app.got == app.download {
            return Finished::Ok(
                app.index,
                ConnTiming {
                    connect_start: app.connect_start,
                    established,
                    transfer_start: start,
                    first_byte: app.first_byte.unwrap_or(end),
                    transfer_end: end,
                    downloaded: app.got,
                },
            );
        }
        return Finished::Failed(
            app.index,
            format!("received {} bytes, expected {}", app.got, app.download),
            None,
        );
    }
    let why = if let Some(e) = app.recv_error {
        format!("quiche: {e:?}")
    } else if let Some(e) = q.peer_error() {
        format!(
            "closed by the server: code {:#x} {}",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        )
    } else if let Some(e) = q.local_error() {
        format!(
            "closed locally: code {:#x} {}",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        )
    } else if q.is_timed_out() {
        "the connection timed out".to_string()
    } else {
        "the connection closed".to_string()
    };
    Finished::Failed(app.index, why, app.recv_error)
}

/// Server side of the stream protocol on every readable stream, then the answers.
fn server_streams(q: &mut QConn, app: &mut ServerApp, scratch: &mut [u8]) {
    if !(q.is_established() || q.is_in_early_data()) {
        return;
    }
    for s in q.readable() {
        let st = app.streams.entry(s).or_default();
        loop {
            match q.stream_recv(s, scratch) {
                Ok((n, fin)) => {
                    if st.have < HEADER_LEN {
                        let take = n.min(HEADER_LEN - st.have);
                        st.header[st.have..st.have + take].copy_from_slice(&scratch[..take]);
                        st.have += take;
                    }
                    if fin {
                        st.fin_received = true;
                        st.remaining = if st.have == HEADER_LEN {
                            u64::from_be_bytes(st.header)
                        } else {
                            0
                        };
                        break;
                    }
                }
                Err(quiche::Error::Done) => break,
                Err(_) => {
                    st.fin_received = false;
                    break;
                }
            }
        }
    }
    let mut done = Vec::new();
    for (&s, st) in app.streams.iter_mut() {
        if !st.fin_received {
            continue;
        }
        loop {
            let chunk = st.remaining.min(ZEROS.len() as u64) as usize;
            let last = st.remaining == chunk as u64;
            match send_zeros(q, s, chunk, last) {
                Ok(n) => {
                    st.remaining -= n as u64;
                    if last && n == chunk {
                        done.push(s);
                        break;
                    }
                    if n < chunk {
                        break;
                    }
                }
                Err(quiche::Error::Done) => break,
                Err(_) => {
                    done.push(s);
                    break;
                }
            }
        }
    }
    for s in done {
        app.streams.remove(&s);
    }
}

/// Client side: once established, send header + upload + FIN on stream 0, read the
/// answer to FIN, then close.
fn client_streams(q: &mut QConn, app: &mut ClientApp, scratch: &mut [u8]) {
    const STREAM: u64 = 0;
    if app.end.is_some() || !q.is_established() {
        return;
    }
    let now = Instant::now();
    app.established.get_or_insert(now);
    app.transfer_start.get_or_insert(now);
    while !app.fin_sent {
        let (n, wanted) = if app.header_sent < HEADER_LEN {
            let fin = app.upload_left == 0;
            let buf = app.header;
            let want = HEADER_LEN - app.header_sent;
            match q.stream_send(STREAM, &buf[app.header_sent..], fin) {
                Ok(n) => {
                    app.header_sent += n;
                    app.fin_sent = fin && n == want;
                    (n, want)
                }
                Err(_) => break,
            }
        } else {
            let chunk = app.upload_left.min(ZEROS.len() as u64) as usize;
            let last = app.upload_left == chunk as u64;
            match send_zeros(q, STREAM, chunk, last) {
                Ok(n) => {
                    app.upload_left -= n as u64;
                    app.fin_sent = last && n == chunk;
                    (n, chunk)
                }
                Err(_) => break,
            }
        };
        if n < wanted {
            break; // flow control or send buffer full: more after the next ACKs
        }
    }
    for s in q.readable() {
        while let Ok((n, fin)) = q.stream_recv(s, scratch) {
            let t = Instant::now();
            app.first_byte.get_or_insert(t);
            app.got += n as u64;
            if fin {
                app.end = Some(t);
                if !app.hold {
                    let _ = q.close(true, 0, b"done");
                }
                return;
            }
        }
    }
}

/// Sends what `c` has, in GSO batches of same-size packets; true if it has more to
/// send (stopped by the burst limit or a full socket buffer).
fn flush(io: &mut Io, c: &mut Conn) -> bool {
    if io.pending.is_some() {
        return true;
    }
    let limit = c.q.send_quantum().max(BATCH_BYTES);
    let mut sent = 0usize;
    loop {
        let mut len = 0usize;
        let mut seg = 0usize;
        let mut count = 0usize;
        let mut dst = None;
        if let Some(to) = c.held_to.take() {
            len = c.held.len();
            io.out[..len].copy_from_slice(&c.held);
            seg = len;
            count = 1;
            dst = Some(to);
        }
        let mut drained = false;
        while count < io.max_segments && len + MAX_UDP_PAYLOAD <= BATCH_BYTES {
            match c.q.send(&mut io.out[len..len + MAX_UDP_PAYLOAD]) {
                Ok((n, info)) => {
                    if count == 0 {
                        seg = n;
                        dst = Some(info.to);
                        len = n;
                        count = 1;
                    } else if Some(info.to) != dst || n > seg {
                        // Does not fit this batch: keep it for the next one.
                        c.held.clear();
                        c.held.extend_from_slice(&io.out[len..len + n]);
                        c.held_to = Some(info.to);
                        break;
                    } else {
                        len += n;
                        count += 1;
                        if n < seg {
                            break; // a short packet can only end a GSO batch
                        }
                    }
                }
                Err(_) => {
                    // Done, or a fatal error that quiche turned into a close.
                    drained = true;
                    break;
                }
            }
        }
        let Some(to) = dst else {
            return false;
        };
        let segment = (count > 1).then_some(seg);
        match io.send_out(len, to, segment) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(_) => {} // lost like a dropped packet; quiche recovers
        }
        sent += len;
        if drained && c.held_to.is_none() {
            return false;
        }
        if sent >= limit {
            return true;
        }
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

fn install_stop(io: &Io, watch_stdin: bool) -> Result<(), String> {
    let waker = Waker::new(io.poll.registry(), WAKE).map_err(|e| e.to_string())?;
    let _ = WAKER.set(waker);
    // SAFETY: installing an async-signal-safe handler (an atomic store and an eventfd
    // write) for SIGTERM and SIGINT.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    if watch_stdin {
        refpeers::watch_stdin(|| on_signal(0));
    }
    Ok(())
}

fn server(a: ServerArgs) -> Result<(), String> {
    let files = refpeers::ensure_certificate(&a.cert_dir).map_err(|e| {
        format!(
            "cannot write the certificate into {}: {e}",
            a.cert_dir.display()
        )
    })?;
    let mut config = base_config(a.net.window)?;
    config
        .load_cert_chain_from_pem_file(&files.cert_pem.to_string_lossy())
        .map_err(|e| format!("cannot load {}: {e}", files.cert_pem.display()))?;
    config
        .load_priv_key_from_pem_file(&files.key_pem.to_string_lossy())
        .map_err(|e| format!("cannot load {}: {e}", files.key_pem.display()))?;
    config.verify_peer(false);
    let io = Io::bind(a.listen, a.net.gso, a.net.gro)?;
    install_stop(&io, !a.ignore_stdin)?;
    let addr = io.local;
    let mut ep = Endpoint::new(io, config, true);
    refpeers::print_listening(addr);
    let mut events = Events::with_capacity(64);
    while !STOP.load(Ordering::SeqCst) {
        ep.turn(&mut events, None)?;
    }
    ep.close_all();
    Ok(())
}

fn client(a: ClientArgs) -> Result<(), String> {
    let mut config = base_config(a.net.window)?;
    config.verify_peer(true);
    config
        .load_verify_locations_from_file(&a.ca.to_string_lossy())
        .map_err(|e| format!("cannot load {}: {e}", a.ca.display()))?;
    let io = Io::bind(refpeers::local_bind_for(a.connect), a.net.gso, a.net.gro)?;
    let mut ep = Endpoint::new(io, config, false);
    let total = a.connections as usize;
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
    let wall_start = Instant::now();
    let mut results: Vec<Option<ConnTiming>> = vec![None; total];
    let mut next = 0usize;
    let mut done = 0usize;
    let mut events = Events::with_capacity(64);
    let hold = a.hold();
    // Idle mode: held connections get their keep-alives from a scan every quarter
    // interval (so each PING goes out between one and 1.25 intervals after the last).
    let scan = a.keep_alive() / 4;
    let mut next_scan = Instant::now() + scan;
    while done < total {
        // Held connections are not in flight.
        while next < total && ep.conns.len() - ep.held < a.concurrency as usize {
            ep.connect(a.connect, next, (a.upload, a.download), hold.is_some())?;
            next += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("timed out after {} s", a.timeout_secs));
        }
        let mut wait = deadline - now;
        if hold.is_some() {
            if now >= next_scan {
                ep.keep_alive(a.keep_alive());
                next_scan = now + scan;
            }
            wait = wait.min(next_scan - now);
        }
        ep.turn(&mut events, Some(wait))?;
        for f in ep.finished.drain(..) {
            match f {
                Finished::Ok(i, t) => {
                    done += 1;
                    results[i] = Some(t);
                }
                Finished::Failed(i, why, _) => {
                    return Err(format!("connection {}: {why}", i + 1));
                }
            }
        }
    }
    let wall = wall_start.elapsed();
    let held = hold.map(|h| hold_connections(&mut ep, &mut events, h, &a));
    let timings: Vec<ConnTiming> = results.into_iter().flatten().collect();
    let report = ClientReport::from_timings(STACK, a.upload, a.download, &timings, wall)
        .ok_or("no connection completed")?;
    let json = report.to_json();
    refpeers::print_json_line(&match held {
        Some(h) => h?.add_to(json),
        None => json,
    });
    Ok(())
}

/// Idle mode: `ready K`, then the held connections stay open for `hold` with a
/// keep-alive PING every `--keep-alive-ms`; then they are closed.
fn hold_connections(
    ep: &mut Endpoint,
    events: &mut Events,
    hold: Duration,
    a: &ClientArgs,
) -> Result<HoldReport, String> {
    let held = ep.held;
    let lost_before = ep.lost_held;
    refpeers::print_ready(held);
    let end = Instant::now() + hold;
    let scan = a.keep_alive() / 4;
    let mut next_scan = Instant::now();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_scan {
            ep.keep_alive(a.keep_alive());
            next_scan = now + scan;
        }
        ep.turn(events, Some((next_scan - now).min(end - now)))?;
    }
    let report = HoldReport {
        held: held as u32,
        lost_while_held: (ep.lost_held - lost_before) as u32,
        keep_alives_sent: ep.pings,
        keep_alive_ms: a.keep_alive_ms,
        hold_secs: a.hold_secs,
    };
    ep.close_all();
    Ok(report)
}

fn probe(a: ProbeArgs) -> u8 {
    let (outcome, detail) = match probe_inner(&a) {
        Ok(r) => r,
        Err(e) => (ProbeOutcome::Error, e),
    };
    ProbeReport {
        stack: STACK,
        outcome,
        detail,
    }
    .emit()
}

fn probe_inner(a: &ProbeArgs) -> Result<(ProbeOutcome, String), String> {
    // Certificate verification on, with no trusted root: refuses everything.
    let mut config = base_config(refpeers::DEFAULT_WINDOW)?;
    config.verify_peer(true);
    let io = Io::bind(refpeers::local_bind_for(a.connect), OnOff::On, OnOff::On)?;
    let mut ep = Endpoint::new(io, config, false);
    ep.connect(a.connect, 0, (0, 0), false)?;
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
    let mut events = Events::with_capacity(16);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok((
                ProbeOutcome::Timeout,
                format!("quiche: no answer within {} s", a.timeout_secs),
            ));
        }
        ep.turn(&mut events, Some(deadline - now))?;
        // The VN shows up as an error from Connection::recv before the connection is
        // gone; look at the live connection first.
        if let Some((_, c)) = ep.conns.iter().next() {
            if c.q.is_established() {
                return Ok((
                    ProbeOutcome::Connected,
                    "quiche: the handshake completed".into(),
                ));
            }
        }
        if let Some(f) = ep.finished.pop() {
            return Ok(match f {
                Finished::Failed(_, _, Some(quiche::Error::UnknownVersion)) => (
                    ProbeOutcome::VersionMismatch,
                    "quiche: Connection::recv returned Error::UnknownVersion (the server's \
                     Version Negotiation lists no version quiche supports)"
                        .to_string(),
                ),
                Finished::Failed(_, why, _) => (ProbeOutcome::Error, why),
                Finished::Ok(..) => (
                    ProbeOutcome::Connected,
                    "quiche: the handshake completed".into(),
                ),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// hq-interop (the QUIC interop runner's HTTP/0.9) for `quill-interop run --suite quic-v1`
// ---------------------------------------------------------------------------

/// Key-exchange groups offered (BoringSSL names): post-quantum first.
const HQ_CURVES: &str = "X25519MLKEM768:X25519:P-256";

/// Longest wait for a datagram before timers and the stop flag are looked at.
const HQ_TICK: Duration = Duration::from_millis(10);

fn hq_main(role: hq::HqCommand) -> Result<u8, String> {
    let Some(p) = refpeers::hq_profile(&role, PROG) else {
        return Ok(hq::EXIT_UNSUPPORTED);
    };
    if p.preferred_address {
        // quiche 0.30 has no server option for the parameter, and its client does not
        // follow one by itself (only probe_path/migrate, given addresses).
        hq::print_unsupported(match role {
            hq::HqCommand::Server(_) => {
                "quiche cannot offer a preferred address (no API) as a server"
            }
            hq::HqCommand::Client(_) => {
                "quiche does not move to a server's preferred address as a client"
            }
        });
        return Ok(hq::EXIT_UNSUPPORTED);
    }
    if testcase_of(&role) == "ecn" {
        // quiche::RecvInfo and SendInfo carry addresses (and a send time) only.
        hq::print_unsupported(
            "quiche neither reads nor sets ECN codepoints (no ECN in its RecvInfo/SendInfo API)",
        );
        return Ok(hq::EXIT_UNSUPPORTED);
    }
    match role {
        hq::HqCommand::Server(a) => hq_server(a, p).map(|()| 0),
        hq::HqCommand::Client(a) => {
            // BoringSSL fixes the TLS 1.3 cipher preference and quiche has no
            // key-update call: the client cannot play these two.
            if p.chacha20 || p.key_update {
                hq::print_unsupported(&format!(
                    "quiche cannot {} as a client",
                    if p.chacha20 {
                        "offer only ChaCha20-Poly1305 (BoringSSL's TLS 1.3 suites are fixed)"
                    } else {
                        "initiate a key update (no API)"
                    }
                ));
                return Ok(hq::EXIT_UNSUPPORTED);
            }
            Ok(hq_client(a, p))
        }
    }
}

/// The test case name a `hq` command was given.
fn testcase_of(role: &hq::HqCommand) -> &str {
    match role {
        hq::HqCommand::Server(a) => &a.testcase,
        hq::HqCommand::Client(a) => &a.testcase,
    }
}

fn hq_config(p: &hq::Profile, server: bool) -> Result<quiche::Config, String> {
    let (stream, conn) = p.windows();
    let mut c = common_config(hq::ALPN_HQ, stream, conn)?;
    c.set_curves_list(HQ_CURVES).map_err(|e| e.to_string())?;
    c.verify_peer(false);
    c.set_max_recv_udp_payload_size(MAX_UDP_PAYLOAD);
    c.set_initial_max_streams_bidi(if server { p.max_streams_bidi } else { 0 });
    // quiche keeps at most this many paths (rebind-port makes a new one each time).
    c.set_active_connection_id_limit(8);
    Ok(c)
}

fn hq_negotiated(q: &quiche::Connection) -> hq::Negotiated {
    hq::Negotiated {
        version: Some(quiche::PROTOCOL_VERSION),
        alpn: Some(String::from_utf8_lossy(q.application_proto()).into_owned()),
        // quiche exposes neither the group nor the suite; the runner reads both off
        // the server's Initial (ServerHello).
        group: None,
        cipher: None,
    }
}

/// Gives the peer one more connection ID of ours, `len` bytes like the others
/// (random, with a random reset token), for a path the client will migrate to;
/// returns it.
fn offer_spare_scid(
    q: &mut quiche::Connection,
    rng: &SystemRandom,
    len: usize,
) -> Result<Vec<u8>, String> {
    let mut cid = vec![0u8; len];
    let mut token = [0u8; 16];
    rng.fill(&mut cid)
        .map_err(|_| "no randomness".to_string())?;
    rng.fill(&mut token)
        .map_err(|_| "no randomness".to_string())?;
    q.new_scid(
        &quiche::ConnectionId::from_ref(&cid),
        u128::from_be_bytes(token),
        true,
    )
    .map(|_| cid.to_vec())
    .map_err(|e| format!("new_scid: {e}"))
}

/// Sends everything `q` has to send, on every path it knows from `local` (after a
/// peer's address changed, the probe of the new path and the data go on different
/// paths; quiche's own server loops over `paths_iter` the same way).
fn hq_flush(
    sock: &std::net::UdpSocket,
    q: &mut quiche::Connection,
    local: SocketAddr,
    out: &mut [u8],
) {
    let peers: Vec<SocketAddr> = q.paths_iter(local).collect();
    for peer in peers {
        // Bounded: a path produces finitely many packets before its congestion window
        // or pacing says Done.
        for _ in 0..10_000 {
            match q.send_on_path(out, Some(local), Some(peer)) {
                Ok((n, info)) => {
                    let _ = sock.send_to(&out[..n], info.to);
                }
                Err(_) => break,
            }
        }
    }
}

/// Waits at most until `q`'s timer (capped at [`HQ_TICK`]) for a datagram.
fn hq_recv(
    sock: &std::net::UdpSocket,
    timer: Option<Duration>,
    buf: &mut [u8],
) -> Result<Option<(usize, SocketAddr)>, String> {
    let wait = timer
        .unwrap_or(HQ_TICK)
        .clamp(Duration::from_millis(1), HQ_TICK);
    sock.set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    match sock.recv_from(buf) {
        Ok(r) => Ok(Some(r)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("receive failed: {e}")),
    }
}

struct HqServerConn {
    q: quiche::Connection,
    requests: HashMap<u64, Vec<u8>>,
    responses: HashMap<u64, (Vec<u8>, usize)>,
    counted: bool,
}

/// The server's connection ID for a client-chosen Destination CID: a keyed hash, so
/// that the client's repeated Initials reach the same connection.
fn hq_conn_id(key: &ring::hmac::Key, dcid: &[u8]) -> Vec<u8> {
    ring::hmac::sign(key, dcid).as_ref()[..quiche::MAX_CONN_ID_LEN].to_vec()
}

/// A Retry token: a MAC over the client's address and original DCID, then the DCID.
fn hq_mint_token(key: &ring::hmac::Key, from: &SocketAddr, odcid: &[u8]) -> Vec<u8> {
    let mut msg = from.to_string().into_bytes();
    msg.extend_from_slice(odcid);
    let mut token = ring::hmac::sign(key, &msg).as_ref().to_vec();
    token.extend_from_slice(odcid);
    token
}

/// The original DCID in a token this server minted for `from`.
fn hq_check_token(key: &ring::hmac::Key, from: &SocketAddr, token: &[u8]) -> Option<Vec<u8>> {
    let (mac, odcid) = token.split_at_checked(32)?;
    let mut msg = from.to_string().into_bytes();
    msg.extend_from_slice(odcid);
    ring::hmac::verify(key, &msg, mac).ok()?;
    Some(odcid.to_vec())
}

fn hq_server(a: hq::HqServerArgs, p: hq::Profile) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let files = refpeers::ensure_certificate_chain(dir.path(), p.cert_chain_len)
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let mut config = hq_config(&p, true)?;
    // BoringSSL issues session tickets by itself; zerortt also accepts early data.
    if p.zero_rtt {
        config.enable_early_data();
    }
    config
        .load_cert_chain_from_pem_file(&files.cert_pem.to_string_lossy())
        .map_err(|e| format!("certificate: {e}"))?;
    config
        .load_priv_key_from_pem_file(&files.key_pem.to_string_lossy())
        .map_err(|e| format!("key: {e}"))?;
    let sock = std::net::UdpSocket::bind(a.listen)
        .map_err(|e| format!("cannot bind {}: {e}", a.listen))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let rng = SystemRandom::new();
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).map_err(|_| "no randomness")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    refpeers::watch_stdin(move || s.store(true, Ordering::SeqCst));
    refpeers::print_listening(local);

    let mut conns: HashMap<Vec<u8>, HqServerConn> = HashMap::new();
    // connectionmigration: the spare connection IDs given to clients, to the
    // connection's first one (bounded by the connections: pruned with them).
    let mut aliases: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut tally = hq::HqServerTally::default();
    let mut neg = hq::Negotiated::default();
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; MAX_UDP_PAYLOAD];
    let mut scratch = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::SeqCst) {
        let timer = conns.values().filter_map(|c| c.q.timeout()).min();
        if let Some((len, from)) = hq_recv(&sock, timer, &mut buf)? {
            let pkt = &mut buf[..len];
            let Ok(hdr) = quiche::Header::from_slice(pkt, quiche::MAX_CONN_ID_LEN) else {
                continue;
            };
            let mut id = hdr.dcid.to_vec();
            if let Some(first) = aliases.get(&id) {
                id = first.clone();
            }
            if !conns.contains_key(&id) {
                id = hq_conn_id(&key, &hdr.dcid);
            }
            if !conns.contains_key(&id) {
                if hdr.ty != quiche::Type::Initial {
                    continue;
                }
                if !quiche::version_is_supported(hdr.version) {
                    if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
                        let _ = sock.send_to(&out[..n], from);
                    }
                    continue;
                }
                let mut odcid = None;
                if p.retry {
                    let token = hdr.token.as_deref().unwrap_or(&[]);
                    if token.is_empty() {
                        let new = quiche::ConnectionId::from_vec(id.clone());
                        let t = hq_mint_token(&key, &from, &hdr.dcid);
                        if let Ok(n) =
                            quiche::retry(&hdr.scid, &hdr.dcid, &new, &t, hdr.version, &mut out)
                        {
                            let _ = sock.send_to(&out[..n], from);
                            tally.retry_sent += 1;
                        }
                        continue;
                    }
                    let Some(o) = hq_check_token(&key, &from, token) else {
                        continue;
                    };
                    // The Retry's Source CID is the one the client now addresses.
                    id = hdr.dcid.to_vec();
                    odcid = Some(quiche::ConnectionId::from_vec(o));
                }
                let scid = quiche::ConnectionId::from_vec(id.clone());
                let Ok(q) = quiche::accept(&scid, odcid.as_ref(), local, from, &mut config) else {
                    continue;
                };
                conns.insert(
                    id.clone(),
                    HqServerConn {
                        q,
                        requests: HashMap::new(),
                        responses: HashMap::new(),
                        counted: false,
                    },
                );
            }
            if let Some(c) = conns.get_mut(&id) {
                let _ = c.q.recv(pkt, quiche::RecvInfo { from, to: local });
            }
        }
        for (id, c) in conns.iter_mut() {
            if c.q.timeout() == Some(Duration::ZERO) {
                c.q.on_timeout();
            }
            if c.q.is_established() && !c.counted {
                c.counted = true;
                tally.connections += 1;
                neg = hq_negotiated(&c.q);
                if p.active_migration {
                    // quiche leaves spare connection IDs to the application; a client
                    // that migrates needs one (RFC 9000 §9.5).
                    // The server's connection IDs are all as long as the short-header
                    // parse above assumes.
                    match offer_spare_scid(&mut c.q, &rng, quiche::MAX_CONN_ID_LEN) {
                        Ok(cid) => {
                            aliases.insert(cid, id.clone());
                        }
                        Err(e) => eprintln!("quiche-peer: {e}"),
                    }
                }
            }
            hq_serve(c, &a.root, &mut scratch, &mut tally);
            hq_flush(&sock, &mut c.q, local, &mut out);
        }
        conns.retain(|_, c| !c.q.is_closed());
        aliases.retain(|_, first| conns.contains_key(first));
    }
    for c in conns.values_mut() {
        let _ = c.q.close(true, 0, b"server shutting down");
        hq_flush(&sock, &mut c.q, local, &mut out);
    }
    hq::print_server_report(STACK, &tally, &neg);
    Ok(())
}

/// Reads requests to FIN and writes responses as far as flow control allows.
fn hq_serve(
    c: &mut HqServerConn,
    root: &std::path::Path,
    scratch: &mut [u8],
    tally: &mut hq::HqServerTally,
) {
    let readable: Vec<u64> = c.q.readable().collect();
    for id in readable {
        while let Ok((n, fin)) = c.q.stream_recv(id, scratch) {
            let req = c.requests.entry(id).or_default();
            if req.len() + n > hq::MAX_REQUEST {
                let _ = c.q.stream_shutdown(id, quiche::Shutdown::Read, 0x10);
                tally.refused += 1;
                break;
            }
            req.extend_from_slice(&scratch[..n]);
            if fin {
                let req = c.requests.remove(&id).unwrap_or_default();
                match hq::read_requested(root, &req) {
                    Ok(data) => {
                        c.responses.insert(id, (data, 0));
                    }
                    Err(_) => {
                        let _ = c.q.stream_shutdown(id, quiche::Shutdown::Write, 0x10);
                        tally.refused += 1;
                    }
                }
                break;
            }
        }
    }
    let mut done = Vec::new();
    for (id, (data, off)) in c.responses.iter_mut() {
        match c.q.stream_send(*id, &data[*off..], true) {
            Ok(n) => {
                *off += n;
                if *off == data.len() {
                    done.push(*id);
                }
            }
            Err(quiche::Error::Done) => {}
            Err(_) => done.push(*id),
        }
    }
    for id in done {
        if c.responses
            .remove(&id)
            .is_some_and(|(d, off)| off == d.len())
        {
            tally.files_served += 1;
        }
    }
}

fn hq_client(a: hq::HqClientArgs, p: hq::Profile) -> u8 {
    let mut tally = hq::HqClientTally::default();
    let mut neg = hq::Negotiated::default();
    let start = Instant::now();
    let result = hq_client_run(&a, &p, &mut tally, &mut neg, start + a.timeout());
    tally.seconds = start.elapsed().as_secs_f64();
    let code = if result.is_ok() { 0 } else { EXIT_FAILURE };
    hq::print_client_report(STACK, &tally, &neg, result.err());
    code
}

fn hq_client_run(
    a: &hq::HqClientArgs,
    p: &hq::Profile,
    tally: &mut hq::HqClientTally,
    neg: &mut hq::Negotiated,
    deadline: Instant,
) -> Result<(), (&'static str, String)> {
    let io = |e: String| ("io", e);
    let files = a.all_files().map_err(io)?;
    let mut config = hq_config(p, false).map_err(io)?;
    if p.zero_rtt {
        config.enable_early_data();
    }
    // resumption, zerortt: the first connection's session, resumed by the next.
    let mut session: Option<Vec<u8>> = None;
    let mut sock = std::net::UdpSocket::bind(refpeers::local_bind_for(a.connect))
        .map_err(|e| io(format!("cannot bind: {e}")))?;
    let mut local = sock.local_addr().map_err(|e| io(e.to_string()))?;
    let rng = SystemRandom::new();
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = vec![0u8; MAX_UDP_PAYLOAD];
    let mut scratch = vec![0u8; RECV_BUF];
    for group in p.groups(files) {
        let mut scid = [0u8; 16];
        rng.fill(&mut scid)
            .map_err(|_| io("no randomness".into()))?;
        let scid = quiche::ConnectionId::from_ref(&scid);
        let mut q = quiche::connect(
            Some(refpeers::SERVER_NAME),
            &scid,
            local,
            a.connect,
            &mut config,
        )
        .map_err(|e| io(format!("cannot connect: {e}")))?;
        if let Some(s) = &session {
            q.set_session(s)
                .map_err(|e| io(format!("cannot resume the session: {e}")))?;
        }
        let mut bodies: HashMap<u64, (String, Vec<u8>)> = HashMap::new();
        let (mut next, mut done, mut counted) = (0usize, 0usize, false);
        // connectionmigration: not yet moved to a new local port.
        let mut to_migrate = p.active_migration;
        hq_flush(&sock, &mut q, local, &mut out);
        while done < group.len() {
            if Instant::now() >= deadline {
                return Err((
                    "timeout",
                    format!("{done} of {} files after the deadline", group.len()),
                ));
            }
            if let Some((len, from)) = hq_recv(&sock, q.timeout(), &mut buf).map_err(io)? {
                let _ = q.recv(&mut buf[..len], quiche::RecvInfo { from, to: local });
            }
            if q.timeout() == Some(Duration::ZERO) {
                q.on_timeout();
            }
            if q.is_closed() {
                let why = q
                    .peer_error()
                    .or(q.local_error())
                    .map(|e| {
                        format!(
                            "error 0x{:x} {}",
                            e.error_code,
                            String::from_utf8_lossy(&e.reason)
                        )
                    })
                    .unwrap_or_else(|| {
                        if q.is_timed_out() {
                            "idle timeout".into()
                        } else {
                            "closed".into()
                        }
                    });
                let kind = if counted {
                    "closed_by_peer"
                } else {
                    "handshake"
                };
                return Err((kind, format!("connection closed after {done} files: {why}")));
            }
            if q.is_established() && !counted {
                counted = true;
                tally.handshakes += 1;
                *neg = hq_negotiated(&q);
                if p.active_migration {
                    // quiche leaves it to the application to give the server spare
                    // connection IDs; a migration needs one.
                    offer_spare_scid(&mut q, &rng, scid.len()).map_err(io)?;
                }
            }
            if to_migrate && q.is_established() && q.stats().recv_bytes >= 400_000 {
                to_migrate = false;
                let moved = std::net::UdpSocket::bind(refpeers::local_bind_for(a.connect))
                    .map_err(|e| e.to_string())
                    .and_then(|s| Ok((s.local_addr().map_err(|e| e.to_string())?, s)))
                    .and_then(|(l, s)| {
                        q.migrate_source(l)
                            .map_err(|e| format!("migrate_source: {e}"))?;
                        Ok((l, s))
                    });
                match moved {
                    Ok((l, s)) => (local, sock) = (l, s),
                    Err(e) => eprintln!("quiche-peer: cannot migrate: {e}"),
                }
            }
            // zerortt: requests may go out before the handshake completes.
            if q.is_established() || q.is_in_early_data() {
                while next < group.len() && bodies.len() < 100 && q.peer_streams_left_bidi() > 0 {
                    let id = 4 * next as u64;
                    match q.stream_send(id, &hq::request(&group[next]), true) {
                        Ok(_) => {
                            bodies.insert(id, (group[next].clone(), Vec::new()));
                            next += 1;
                        }
                        Err(_) => break,
                    }
                }
                let readable: Vec<u64> = q.readable().collect();
                for id in readable {
                    while let Ok((n, fin)) = q.stream_recv(id, &mut scratch) {
                        let Some((_, body)) = bodies.get_mut(&id) else {
                            break;
                        };
                        body.extend_from_slice(&scratch[..n]);
                        if fin {
                            if let Some((name, body)) = bodies.remove(&id) {
                                hq::save(&a.download, &name, &body)
                                    .map_err(|e| io(format!("{name}: cannot save: {e}")))?;
                                tally.files += 1;
                                tally.bytes += body.len() as u64;
                                done += 1;
                            }
                            break;
                        }
                    }
                }
            }
            hq_flush(&sock, &mut q, local, &mut out);
        }
        if p.resume {
            session = q.session().map(<[u8]>::to_vec);
        }
        let _ = q.close(true, 0, b"done");
        hq_flush(&sock, &mut q, local, &mut out);
    }
    Ok(())
}
