//! A userspace UDP relay between one client and one server on loopback, with seeded,
//! reproducible impairments per direction (the kernel here has no `netem`).
//!
//! Every random decision about datagram `i` of a direction is a pure function of
//! `(seed, direction, i)`, so the same seed drops, corrupts and duplicates the same
//! datagrams whatever the timing. Gilbert-Elliott state advances once per datagram,
//! in index order, so it too is reproducible.
//!
//! The relay runs one thread with a `mio` poll loop; its timeout is the next delivery
//! deadline, so it sleeps when idle. Everything is bounded: datagrams in flight,
//! the rate limiter's queue, the capture, and the relay's lifetime.

use std::collections::{BinaryHeap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use quill_transport::driver::keep_ecn_in_control_messages;
use quinn_udp::{EcnCodepoint, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use crate::capture::{Action, Capture, Direction, DropReason, HeaderInfo, Record};
use quill_transport::wire::LongType;

/// Two-state burst-loss model: in the good state datagrams are lost with
/// `loss_good`, in the bad state with `loss_bad`; the state changes before each
/// datagram with the given probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad.
    pub p_good_to_bad: f64,
    /// Probability of moving from bad to good.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

/// Impairments applied to one direction, in this order: drop list, black hole,
/// random loss, burst loss, corruption, duplication, rate limit, delay/jitter/reorder.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairments {
    /// Independent loss probability, 0..=1.
    pub loss: f64,
    /// Burst loss, on top of `loss`.
    pub burst: Option<GilbertElliott>,
    /// Indices (from 0, per direction) of datagrams to drop.
    pub drop_indices: Vec<u64>,
    /// `(n, until)`: drop every datagram from index `n` on that arrives before `until`
    /// (time since the relay started), e.g. to keep a server's address unvalidated.
    pub drop_from_until: Option<(u64, Duration)>,
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter`.
    pub jitter: Duration,
    /// Fraction of datagrams held back by `reorder_delay` more.
    pub reorder: f64,
    /// Extra delay of the held-back datagrams.
    pub reorder_delay: Duration,
    /// Probability of sending a second copy.
    pub duplicate: f64,
    /// Probability of flipping one byte.
    pub corrupt: f64,
    /// The QUIC network simulator's corrupt-rate model: flip only within the first 50
    /// bytes, and never in a Version Negotiation packet (a client rightly abandons on
    /// one whose list lost its version, RFC 9000 §6.2, so the simulator spares them).
    pub corrupt_first_50: bool,
    /// Link rate in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes the rate limiter may queue; beyond that it drops the tail.
    pub queue_bytes: usize,
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments {
            loss: 0.0,
            burst: None,
            drop_indices: Vec::new(),
            drop_from_until: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            duplicate: 0.0,
            corrupt: 0.0,
            corrupt_first_50: false,
            rate_bps: None,
            queue_bytes: 64 * 1024,
        }
    }
}

/// How the relay's upstream (server-facing) socket changes at a rebind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebindKind {
    /// A new socket on the same address: a new source port.
    Port,
    /// A new socket on this 127.0.0.x address (any port).
    Address(Ipv4Addr),
}

/// A NAT rebinding at a set time after the relay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebind {
    /// When, since the relay started.
    pub at: Duration,
    /// What changes.
    pub kind: RebindKind,
}

/// Relay configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// The server's address.
    pub server: SocketAddr,
    /// Seed of every random decision.
    pub seed: u64,
    /// Client-to-server impairments.
    pub c2s: Impairments,
    /// Server-to-client impairments.
    pub s2c: Impairments,
    /// Rebindings of the upstream socket, in any order.
    pub rebind: Vec<Rebind>,
    /// Black-hole cycle `(on, off)` applied to both directions: the cycle starts with
    /// `off` (everything passes) and then drops everything for `on`, repeatedly.
    pub blackhole: Option<(Duration, Duration)>,
    /// Most records kept in the capture (later ones are only counted).
    pub capture_limit: usize,
    /// Most datagrams held for delayed delivery (later ones are dropped as overload).
    pub max_in_flight: usize,
    /// The relay stops on its own after this long.
    pub max_lifetime: Duration,
    /// Behave like a NAT toward a client that changes its own address (active
    /// migration, RFC 9000 §9.2): datagrams from a new client address leave from a new
    /// upstream socket (a new source port), so the server sees the change too.
    pub follow_client_address: bool,
}

impl RelayConfig {
    /// No impairments, seed 0, generous bounds.
    pub fn new(server: SocketAddr) -> RelayConfig {
        RelayConfig {
            server,
            seed: 0,
            c2s: Impairments::default(),
            s2c: Impairments::default(),
            rebind: Vec::new(),
            blackhole: None,
            capture_limit: 1 << 20,
            max_in_flight: 16 * 1024,
            max_lifetime: Duration::from_secs(600),
            follow_client_address: false,
        }
    }
}

/// A running relay; [`Relay::stop`] returns its capture.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<Capture>>,
}

const DOWN: Token = Token(0);
const UP: Token = Token(1);
const WAKE: Token = Token(2);
const DOWN2: Token = Token(3);
const UP2: Token = Token(4);
const MAX_DATAGRAM: usize = 65536;

impl Relay {
    /// Binds the client-facing socket and the upstream socket on the loopback
    /// address of the server's family (127.0.0.1 or ::1, so an IPv6 server gets only
    /// IPv6 on the wire), and starts the relay thread.
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        Relay::start_inner(config, None)
    }

    /// [`Relay::start`] with a second path: datagrams from the client to `second` (a
    /// socket the caller bound, so that its address can be given to the server before
    /// the relay starts, e.g. as the server's preferred address, RFC 9000 §9.6) go to
    /// the server from a second upstream socket (on 127.0.0.2 for an IPv4 server: the
    /// server sees another client address), with the same impairments, and the
    /// server's answers to that socket come back to the client from `second`. Records
    /// of the second path carry that upstream socket's address.
    pub fn start_with_second_path(
        config: RelayConfig,
        second: std::net::UdpSocket,
    ) -> io::Result<Relay> {
        Relay::start_inner(config, Some(second))
    }

    fn start_inner(config: RelayConfig, second: Option<std::net::UdpSocket>) -> io::Result<Relay> {
        let poll = Poll::new()?;
        let local = match config.server {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
        };
        let mut down = bind_udp(local)?;
        let mut up = bind_udp(local)?;
        let (down_state, up_state) = open_path(&poll, &mut down, &mut up, (DOWN, UP))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let addr = down.local_addr()?;
        let second = match second {
            Some(sock) => {
                sock.set_nonblocking(true)?;
                let mut down = UdpSocket::from_std(sock);
                let up_addr = match config.server {
                    SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)),
                    SocketAddr::V6(_) => local,
                };
                let mut up = bind_udp(up_addr)?;
                let (down_state, up_state) = open_path(&poll, &mut down, &mut up, (DOWN2, UP2))?;
                Some(SecondPath {
                    down,
                    up,
                    down_state,
                    up_state,
                    client: None,
                })
            }
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut rebind = config.rebind.clone();
        rebind.sort_by_key(|r| std::cmp::Reverse(r.at));
        let state = Loop {
            start: Instant::now(),
            poll,
            down,
            up,
            down_state,
            up_state,
            client: None,
            second,
            on_second: false,
            dirs: [
                DirState::new(&config.c2s, config.seed, Direction::C2S),
                DirState::new(&config.s2c, config.seed, Direction::S2C),
            ],
            pending: BinaryHeap::new(),
            seq: 0,
            rebind,
            capture: Capture::default(),
            head: None,
            ecn: None,
            stop: stop.clone(),
            config,
        };
        let thread = std::thread::Builder::new()
            .name("quill-relay".into())
            .spawn(move || state.run())?;
        Ok(Relay {
            addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the relay (datagrams still in flight are discarded) and returns the capture.
    pub fn stop(mut self) -> Capture {
        self.halt()
    }

    fn halt(&mut self) -> Capture {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_default(),
            None => Capture::default(),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}

/// Kernel buffer asked for on each relay socket, so that a burst waits in the kernel
/// rather than being lost before the relay has decided anything (the kernel caps it at
/// `net.core.rmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// quinn-udp's state of `sock`, which keeps each datagram's ECN codepoint on receive.
fn ecn_state(sock: &UdpSocket) -> io::Result<UdpSocketState> {
    let state = UdpSocketState::new(UdpSockRef::from(sock))?;
    keep_ecn_in_control_messages(sock)?;
    Ok(state)
}

/// A path's client-facing and server-facing sockets: their quinn-udp states, and both
/// registered with `poll` under `tokens` (client-facing, server-facing).
fn open_path(
    poll: &Poll,
    down: &mut UdpSocket,
    up: &mut UdpSocket,
    tokens: (Token, Token),
) -> io::Result<(UdpSocketState, UdpSocketState)> {
    let states = (ecn_state(down)?, ecn_state(up)?);
    poll.registry()
        .register(down, tokens.0, Interest::READABLE)?;
    poll.registry().register(up, tokens.1, Interest::READABLE)?;
    Ok(states)
}

/// A non-blocking UDP socket bound to `addr`, with large kernel buffers.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: a smaller buffer still works, only less forgivingly.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(UdpSocket::from_std(sock.into()))
}

/// `::ffff:a.b.c.d` as `a.b.c.d` (quinn-udp reports IPv4 senders on an IPv6 socket
/// that way; the relay's sockets are of one family, so this is only a safeguard).
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per-datagram random source: `draw(k)` is a pure function of (seed, dir, index, k).
struct Draws(u64);

impl Draws {
    fn new(seed: u64, dir: Direction, index: u64) -> Draws {
        let d = match dir {
            Direction::C2S => 0x1234_5678,
            Direction::S2C => 0x8765_4321,
        };
        Draws(mix(mix(seed ^ d).wrapping_add(index)))
    }

    fn u64(&self, k: u64) -> u64 {
        mix(self.0 ^ mix(k))
    }

    /// Uniform in [0, 1).
    fn unit(&self, k: u64) -> f64 {
        (self.u64(k) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&self, k: u64, p: f64) -> bool {
        p > 0.0 && self.unit(k) < p
    }
}

struct DirState {
    imp: Impairments,
    drop_list: HashSet<u64>,
    seed: u64,
    dir: Direction,
    next_index: u64,
    /// Gilbert-Elliott: currently in the bad state.
    bad: bool,
    /// When the rate-limited link finishes sending what it has accepted.
    link_free_at: Option<Instant>,
}

impl DirState {
    fn new(imp: &Impairments, seed: u64, dir: Direction) -> DirState {
        DirState {
            drop_list: imp.drop_indices.iter().copied().collect(),
            imp: imp.clone(),
            seed,
            dir,
            next_index: 0,
            bad: false,
            link_free_at: None,
        }
    }
}

struct Pending {
    at: Instant,
    seq: u64,
    dir: Direction,
    /// On the relay's second path ([`Relay::start_with_second_path`]).
    second: bool,
    data: Vec<u8>,
    /// The ECN codepoint it arrived with, forwarded unchanged.
    ecn: Option<EcnCodepoint>,
}

/// The sockets of the relay's second path.
struct SecondPath {
    /// Client-facing.
    down: UdpSocket,
    /// Server-facing.
    up: UdpSocket,
    /// quinn-udp's state of `down` and `up` (ECN codepoints, as on the first path).
    down_state: UdpSocketState,
    up_state: UdpSocketState,
    /// The client's address as seen on `down`.
    client: Option<SocketAddr>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Loop {
    start: Instant,
    poll: Poll,
    down: UdpSocket,
    up: UdpSocket,
    /// quinn-udp's state of `down` and `up`: it asks the kernel for each datagram's
    /// TOS / Traffic Class byte (IP_RECVTOS, IPV6_RECVTCLASS) and sets it on sends,
    /// so the relay carries ECN codepoints through like a router that does not mark.
    down_state: UdpSocketState,
    up_state: UdpSocketState,
    client: Option<SocketAddr>,
    second: Option<SecondPath>,
    /// The datagram being admitted came over the second path.
    on_second: bool,
    dirs: [DirState; 2],
    pending: BinaryHeap<Pending>,
    seq: u64,
    /// Remaining rebinds, latest first (so the next is at the end).
    rebind: Vec<Rebind>,
    capture: Capture,
    /// [`Record::head`] of the datagram being admitted.
    head: Option<Vec<u8>>,
    /// The ECN codepoint of the datagram being admitted.
    ecn: Option<EcnCodepoint>,
    stop: Arc<AtomicBool>,
    config: RelayConfig,
}

/// Bytes of an Initial or Retry datagram kept in [`Record::head`]: the whole datagram
/// as quill sends them (the packet's Length field must fit for it to parse).
const HEAD_BYTES: usize = 2048;

/// A long header with version 0 (RFC 8999 §6): what the QUIC network simulator's
/// corrupt-rate model leaves alone (it checks the version field only).
fn is_version_negotiation(data: &[u8]) -> bool {
    data.len() > 5 && data[0] & 0x80 != 0 && data[1..5] == [0, 0, 0, 0]
}

/// The first bytes of `data` when its first packet is a long-header Initial or Retry
/// (RFC 9000 §17.2: type bits 0b00 and 0b11; in QUIC v2 0b01 and 0b00), for checks that read packet numbers
/// and tokens; `None` for everything else, so the capture stays small.
fn head_of(data: &[u8]) -> Option<Vec<u8>> {
    let first = *data.first()?;
    let version = u32::from_be_bytes(data.get(1..5)?.try_into().ok()?);
    // QUIC v2's type bits differ (RFC 9369 §3.2).
    let ty = LongType::from_bits_for(first >> 4, version);
    (first & 0x80 != 0 && matches!(ty, LongType::Initial | LongType::Retry))
        .then(|| data[..data.len().min(HEAD_BYTES)].to_vec())
}

impl Loop {
    fn run(mut self) -> Capture {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let deadline = self.start + self.config.max_lifetime;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.do_rebinds(now);
            self.deliver(now);
            let mut next = deadline;
            if let Some(p) = self.pending.peek() {
                next = next.min(p.at);
            }
            if let Some(r) = self.rebind.last() {
                next = next.min(self.start + r.at);
            }
            let timeout = next.saturating_duration_since(Instant::now());
            // Round up to whole milliseconds so that a wake-up is never early
            // (epoll counts milliseconds), which would spin until the deadline.
            let timeout = Duration::from_millis(timeout.as_micros().div_ceil(1000) as u64);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            // Drain every socket whatever the events say (readiness is edge-triggered).
            self.drain(Direction::C2S, false, &mut buf);
            self.drain(Direction::S2C, false, &mut buf);
            if self.second.is_some() {
                self.drain(Direction::C2S, true, &mut buf);
                self.drain(Direction::S2C, true, &mut buf);
            }
        }
        self.capture
    }

    /// Reads every datagram waiting on the side `dir` comes from (the client's for
    /// C2S, the server's for S2C) of the first or the `second` path and admits it.
    fn drain(&mut self, dir: Direction, second: bool, buf: &mut [u8]) {
        let mut errors = 0;
        loop {
            let (sock, state) = match (dir, second, &self.second) {
                (Direction::C2S, false, _) => (&self.down, &self.down_state),
                (Direction::S2C, false, _) => (&self.up, &self.up_state),
                (Direction::C2S, true, Some(p)) => (&p.down, &p.down_state),
                (Direction::S2C, true, Some(p)) => (&p.up, &p.up_state),
                (_, true, None) => return,
            };
            let mut meta = [RecvMeta::default()];
            let received = {
                let mut iov = [io::IoSliceMut::new(buf)];
                state.recv(UdpSockRef::from(sock), &mut iov, &mut meta)
            };
            match received {
                Ok(0) => break,
                Ok(_) => {
                    let m = meta[0];
                    let from = canonical(m.addr);
                    match dir {
                        Direction::C2S if second => {
                            if let Some(p) = self.second.as_mut() {
                                p.client = Some(from);
                            }
                        }
                        Direction::C2S => {
                            if self.config.follow_client_address
                                && self.client.is_some_and(|c| c != from)
                            {
                                self.rebind_upstream(RebindKind::Port);
                            }
                            self.client = Some(from);
                        }
                        Direction::S2C if from != self.config.server => continue,
                        Direction::S2C => {}
                    }
                    let len = m.len.min(buf.len());
                    // GRO may hand over several datagrams back to back, `stride` apart.
                    let stride = if m.stride == 0 { len.max(1) } else { m.stride };
                    for chunk in buf[..len].chunks(stride) {
                        self.ecn = m.ecn;
                        self.on_second = second;
                        self.admit(dir, chunk.to_vec());
                    }
                    self.ecn = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors (peer port closed) surface here on Linux: skip a few,
                // then wait for the next readiness rather than loop.
                Err(_) => {
                    errors += 1;
                    if errors > 16 {
                        break;
                    }
                }
            }
        }
    }

    fn in_blackhole(&self, t: Duration) -> bool {
        let Some((on, off)) = self.config.blackhole else {
            return false;
        };
        let period = on + off;
        if on.is_zero() || period.is_zero() {
            return false;
        }
        let phase = t.as_nanos() % period.as_nanos();
        phase >= off.as_nanos()
    }

    /// Decides the fate of one arriving datagram and schedules it.
    fn admit(&mut self, dir: Direction, mut data: Vec<u8>) {
        let now = Instant::now();
        let t = now - self.start;
        let blackhole = self.in_blackhole(t);
        let d = match dir {
            Direction::C2S => 0,
            Direction::S2C => 1,
        };
        let no_peer = dir == Direction::S2C && self.client_of_path().is_none();
        let st = &mut self.dirs[d];
        let index = st.next_index;
        st.next_index += 1;
        let r = Draws::new(st.seed, st.dir, index);
        // Burst state advances on every datagram, whatever else happens to it.
        let mut burst_loss = false;
        if let Some(ge) = st.imp.burst {
            let flip = if st.bad {
                ge.p_bad_to_good
            } else {
                ge.p_good_to_bad
            };
            if r.chance(1, flip) {
                st.bad = !st.bad;
            }
            burst_loss = r.chance(2, if st.bad { ge.loss_bad } else { ge.loss_good });
        }
        let drop = if st.drop_list.contains(&index)
            || st
                .imp
                .drop_from_until
                .is_some_and(|(n, until)| index >= n && t < until)
        {
            Some(DropReason::DropList)
        } else if blackhole {
            Some(DropReason::Blackhole)
        } else if r.chance(3, st.imp.loss) {
            Some(DropReason::Loss)
        } else if burst_loss {
            Some(DropReason::Burst)
        } else if no_peer {
            Some(DropReason::NoPeer)
        } else {
            None
        };
        self.head = head_of(&data);
        // Recorded as they arrived: corruption below flips a byte, after this header
        // was read, and keeps the length.
        let (size, header) = (data.len(), HeaderInfo::parse(&data));
        if let Some(reason) = drop {
            self.record_with(dir, index, t, size, header, Action::Dropped(reason));
            return;
        }
        self.capture.note_version_negotiation(dir, index, &data);
        let mut action = Action::Forwarded;
        let spared = st.imp.corrupt_first_50 && is_version_negotiation(&data);
        if !data.is_empty() && !spared && r.chance(4, st.imp.corrupt) {
            let span = if st.imp.corrupt_first_50 {
                data.len().min(50)
            } else {
                data.len()
            };
            let offset = (r.u64(5) % span as u64) as usize;
            // XOR with a non-zero byte so the value always changes.
            data[offset] ^= (r.u64(6) % 255) as u8 + 1;
            action = Action::Corrupted { offset };
        }
        let duplicate = r.chance(7, st.imp.duplicate);
        // Rate limit: the link serialises accepted bytes; what waits for it is the queue.
        let mut depart = now;
        if let Some(rate) = st.imp.rate_bps.filter(|&r| r > 0) {
            let copies = if duplicate { 2 } else { 1 };
            let free = st.link_free_at.unwrap_or(now).max(now);
            let backlog = (free - now).as_secs_f64() * rate as f64 / 8.0;
            if backlog + (data.len() * copies) as f64 > st.imp.queue_bytes as f64 {
                self.record_with(
                    dir,
                    index,
                    t,
                    size,
                    header,
                    Action::Dropped(DropReason::QueueFull),
                );
                return;
            }
            let tx = Duration::from_secs_f64((data.len() * 8) as f64 / rate as f64);
            depart = free + tx;
            st.link_free_at = Some(depart + tx * (copies as u32 - 1));
        }
        let mut delay = st.imp.delay;
        if !st.imp.jitter.is_zero() {
            let j = st.imp.jitter.as_nanos() as u64;
            delay += Duration::from_nanos(r.u64(8) % (j + 1));
        }
        if r.chance(9, st.imp.reorder) {
            delay += st.imp.reorder_delay;
        }
        let at = depart + delay;
        if self.pending.len() + usize::from(duplicate) >= self.config.max_in_flight {
            self.record_with(
                dir,
                index,
                t,
                size,
                header,
                Action::Dropped(DropReason::Overload),
            );
            return;
        }
        if duplicate {
            self.schedule(at, dir, data.clone());
        }
        self.schedule(at, dir, data);
        self.record_with(dir, index, t, size, header.clone(), action);
        if duplicate {
            self.record_with(dir, index, t, size, header, Action::Duplicated);
        }
    }

    fn record_with(
        &mut self,
        dir: Direction,
        index: u64,
        t: Duration,
        size: usize,
        header: HeaderInfo,
        action: Action,
    ) {
        let record = Record {
            dir,
            index,
            t,
            size,
            action,
            upstream: self.upstream_of_path().unwrap_or(self.config.server),
            header,
            head: self.head.clone(),
            ecn: self.ecn.map_or(0, |e| e as u8),
        };
        self.capture.push(record, self.config.capture_limit);
    }

    fn schedule(&mut self, at: Instant, dir: Direction, data: Vec<u8>) {
        self.seq += 1;
        self.pending.push(Pending {
            at,
            seq: self.seq,
            dir,
            second: self.on_second,
            data,
            ecn: self.ecn,
        });
    }

    /// The client's address on the path of the datagram being admitted.
    fn client_of_path(&self) -> Option<SocketAddr> {
        match (&self.second, self.on_second) {
            (Some(p), true) => p.client,
            _ => self.client,
        }
    }

    /// The upstream socket's address on the path of the datagram being admitted.
    fn upstream_of_path(&self) -> Option<SocketAddr> {
        match (&self.second, self.on_second) {
            (Some(p), true) => p.up.local_addr().ok(),
            _ => self.up.local_addr().ok(),
        }
    }

    fn deliver(&mut self, now: Instant) {
        while self.pending.peek().is_some_and(|p| p.at <= now) {
            let Some(p) = self.pending.pop() else { break };
            let (sock, state, to) = match (p.dir, p.second, &self.second) {
                (Direction::C2S, false, _) => (&self.up, &self.up_state, self.config.server),
                (Direction::S2C, false, _) => match self.client {
                    Some(c) => (&self.down, &self.down_state, c),
                    None => continue,
                },
                (Direction::C2S, true, Some(s)) => (&s.up, &s.up_state, self.config.server),
                (Direction::S2C, true, Some(s)) => match s.client {
                    Some(c) => (&s.down, &s.down_state, c),
                    None => continue,
                },
                (_, true, None) => continue,
            };
            let transmit = Transmit {
                destination: to,
                ecn: p.ecn,
                contents: &p.data,
                segment_size: None,
                src_ip: None,
            };
            let sent = state.try_send(UdpSockRef::from(sock), &transmit);
            // A full socket buffer or an ICMP error loses the datagram, as a network
            // would; the capture already holds the decision.
            let _ = sent;
        }
    }

    fn do_rebinds(&mut self, now: Instant) {
        while self.rebind.last().is_some_and(|r| self.start + r.at <= now) {
            let Some(r) = self.rebind.pop() else { break };
            self.rebind_upstream(r.kind);
        }
    }

    /// A new upstream socket (the source the server sees changes); on failure the
    /// old one stays.
    fn rebind_upstream(&mut self, kind: RebindKind) {
        let bind = match kind {
            RebindKind::Port => match self.up.local_addr() {
                Ok(a) => SocketAddr::new(a.ip(), 0),
                Err(_) => return,
            },
            RebindKind::Address(ip) => SocketAddr::from((ip, 0)),
        };
        let Ok(mut sock) = bind_udp(bind) else {
            return;
        };
        let Ok(state) = ecn_state(&sock) else {
            return;
        };
        if self
            .poll
            .registry()
            .register(&mut sock, UP, Interest::READABLE)
            .is_err()
        {
            return;
        }
        let mut old = std::mem::replace(&mut self.up, sock);
        self.up_state = state;
        let _ = self.poll.registry().deregister(&mut old);
    }
}
