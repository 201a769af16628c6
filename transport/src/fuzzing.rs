//! Stateful fuzzing harness (test support, not part of the API): a server and a
//! client [`Endpoint`] complete a real handshake and login in memory, then the fuzz
//! input is played against one of them (the *target*) as a sequence of operations:
//! raw datagrams, frames sealed into correctly protected 1-RTT packets with the
//! peer's real keys and next packet number, clock jumps, and legitimate application
//! actions on either side. After every operation the target's queues and tables
//! are checked against bounds, so a peer that makes memory grow fails like a panic.
//!
//! Used by the cargo-fuzz targets `endpoint_server` and `endpoint_client`
//! (`transport/fuzz`, built with the `fuzzing` feature) and by this crate's own
//! tests, which replay the checked-in corpora (`transport/fuzz/corpus/`) on stable.
//! See docs/FUZZING.md.
//!
//! Everything is deterministic: seeded randomness for both endpoints, and a virtual
//! clock that only the input moves.
//!
//! # Input format
//!
//! A byte string read front to back; a short read takes what is left. Each
//! operation starts with one byte, `op % 8` choosing:
//!
//! | op | reads | does |
//! |----|-------|------|
//! | 0 | flags, len (u16 LE), bytes | a raw datagram to the target ([`RAW_ROUTED`]: prefixed with a short header byte and the target's CID; [`RAW_RESET_TOKEN`]: the target's expected stateless reset token appended) |
//! | 1 | flags, [skip], len (u16 LE), frame bytes | the frame bytes sealed by the peer connection into a 1-RTT packet ([`SEAL_SKIP`]: skip packet numbers first; [`SEAL_TWICE`]: deliver it twice) |
//! | 2 | b | advance the clock by `b² + 1` ms and run the timers |
//! | 3 | action, arg | an application action on the peer (see [`Harness::app`]) |
//! | 4 | action, arg | an application action on the target |
//! | 5 | drop mask | transmit, then deliver queued datagrams, dropping the target's i-th if bit `i % 8` is set |
//! | 6 | – | up to 8 rounds of transmit and deliver both ways |
//! | 7 | – | transmit, then deliver the target's queued datagrams in reverse order |
//!
//! Flags bits 1–2 choose the source address of datagrams to the target: the peer's,
//! the peer's IP with another port, another IP, or the peer's again; with [`MOVE`]
//! the peer moves there.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::SeededRandom;
use zeroize::Zeroizing;

use crate::proto::endpoint::{ConnectionHandle, Endpoint, EndpointConfig, RetryPolicy};
use crate::proto::{
    ClientConfig, Connection, Dir, Event, HostKeyPolicy, Login, ReadOutcome, ServerConfig,
    StreamEvent, StreamId, TransportConfig,
};
use crate::wire::frame::Frame;
use crate::wire::{encode_ack, Writer};

/// Which endpoint the input attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The server endpoint; the client is the peer that seals the hostile frames.
    Server,
    /// The client endpoint; the server is the peer.
    Client,
}

impl Target {
    /// The cargo-fuzz target (and corpus directory) name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Server => "endpoint_server",
            Target::Client => "endpoint_client",
        }
    }
}

/// Raw datagram flag: prefix a short header byte and the target's connection ID,
/// so that the endpoint routes it to the live connection.
pub const RAW_ROUTED: u8 = 0x01;
/// Raw datagram flag: append the stateless reset token the target expects.
pub const RAW_RESET_TOKEN: u8 = 0x20;
/// Sealed packet flag: a byte follows with packet numbers to skip.
pub const SEAL_SKIP: u8 = 0x08;
/// Sealed packet flag: deliver the packet twice (duplicate detection).
pub const SEAL_TWICE: u8 = 0x10;
/// Raw and sealed flag: the peer moves to the chosen source address for good (its
/// own datagrams come from there too), as after a NAT rebinding or a migration.
pub const MOVE: u8 = 0x40;

/// What a run did, for tests that check that the harness reaches what it should.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The handshake and login completed on both sides.
    pub established: bool,
    /// Operations played.
    pub ops: usize,
    /// Packets the target's connection decrypted (0 if it is gone).
    pub target_packets_received: u64,
    /// Stream bytes the target's application read.
    pub target_bytes_read: u64,
    /// Datagrams (RFC 9221) the target's application received.
    pub target_datagrams_read: u64,
    /// Peer address changes the target saw.
    pub target_migrations: u64,
    /// Paths the target validated.
    pub target_paths_validated: u64,
    /// Key updates the target completed.
    pub target_key_updates: u64,
    /// The target's connection ended (its `ConnectionLost` was polled).
    pub target_lost: bool,
}

/// Operations played at most per input (each consumes at least one byte anyway).
const MAX_OPS: usize = 4096;
/// Datagrams waiting for one node at most; the oldest are dropped beyond it.
const MAX_INBOX: usize = 64;
/// Datagrams one node may emit in one flush before the harness calls it a runaway.
const MAX_FLUSH: usize = 4096;
/// Sessions an endpoint holds at most in the harness.
const MAX_CONNECTIONS: usize = 4;
/// The largest frame payload a sealed packet carries.
const MAX_FRAMES_LEN: usize = 1400;
/// A bound for internal queues without a tighter known one; a peer that grows a
/// queue per frame it sends exceeds it within one input.
const MAX_QUEUE: usize = 1024;
/// Streams the application keeps track of, per side.
const MAX_APP_STREAMS: usize = 64;

const SERVER: usize = 0;
const CLIENT: usize = 1;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

/// Plays `data` against the target; panics on a violated bound (and, like any
/// code, if the protocol core panics).
pub fn run(target: Target, data: &[u8]) -> Outcome {
    let mut h = Harness::new(target);
    let mut out = Outcome {
        established: h.established(),
        ..Outcome::default()
    };
    assert!(
        out.established,
        "the harness handshake must complete (it is deterministic)"
    );
    let mut input = Input { data };
    while !input.data.is_empty() && out.ops < MAX_OPS {
        h.step(&mut input);
        h.check_bounds();
        out.ops += 1;
    }
    h.flush();
    h.check_bounds();
    h.summarise(&mut out);
    out
}

/// The fuzz input, read front to back.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        b
    }

    fn len(&mut self) -> usize {
        usize::from(u16::from_le_bytes([self.byte(), self.byte()]))
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// One endpoint with a scripted application.
struct Node {
    ep: Endpoint,
    addr: SocketAddr,
    conn: Option<ConnectionHandle>,
    connected: bool,
    lost: bool,
    /// Streams the application opened or accepted (the most recent ones).
    streams: VecDeque<StreamId>,
    /// Streams the application opened itself (a peer cannot make these grow).
    opened: usize,
    bytes_read: u64,
    datagrams_read: u64,
    /// Datagrams for this node: (from, bytes).
    inbox: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Node {
    fn new(ep: Endpoint, addr: SocketAddr) -> Node {
        Node {
            ep,
            addr,
            conn: None,
            connected: false,
            lost: false,
            streams: VecDeque::new(),
            opened: 0,
            bytes_read: 0,
            datagrams_read: 0,
            inbox: VecDeque::new(),
        }
    }

    fn conn(&mut self) -> Option<&mut Connection> {
        let h = self.conn?;
        self.ep.connection(h)
    }

    fn remember(&mut self, id: StreamId) {
        if !self.streams.contains(&id) {
            if self.streams.len() >= MAX_APP_STREAMS {
                self.streams.pop_front();
            }
            self.streams.push_back(id);
        }
    }

    /// The application: accepts logins, reads everything, records what happened.
    fn on_events(&mut self, now: Instant) {
        let mut buf = [0u8; 4096];
        // Each event is polled once; a connection has finitely many.
        for _ in 0..100_000 {
            let Some((h, e)) = self.ep.poll_event() else {
                return;
            };
            if self.conn.is_none() {
                self.conn = Some(h);
            }
            if Some(h) != self.conn {
                // A second session (a hostile Initial that decrypted): close it.
                if let Some(c) = self.ep.connection(h) {
                    c.close(now, 0, "harness: one session only");
                }
                continue;
            }
            match e {
                Event::LoginRequested(req) => {
                    // The harness answers at once: no Argon2, no account store.
                    if let Some(c) = self.ep.connection(h) {
                        c.accept_login(now, &req.user, "welcome");
                    }
                }
                Event::Connected { .. } | Event::HandshakeConfirmed { .. } => self.connected = true,
                Event::ConnectionLost(_) => {
                    self.lost = true;
                    self.conn = None;
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    let mut accepted = Vec::new();
                    if let Some(c) = self.ep.connection(h) {
                        while let Some(id) = c.accept_stream(dir) {
                            accepted.push(id);
                            if accepted.len() > 100_000 {
                                break;
                            }
                        }
                    }
                    for id in accepted {
                        self.remember(id);
                        self.read(id, &mut buf);
                    }
                }
                Event::Stream(StreamEvent::Readable(id)) => self.read(id, &mut buf),
                Event::DatagramReceived => {
                    if let Some(c) = self.ep.connection(h) {
                        for _ in 0..100_000 {
                            if c.recv_datagram().is_none() {
                                break;
                            }
                            self.datagrams_read += 1;
                        }
                    }
                }
                Event::Stream(_)
                | Event::HostKeyAccepted(_)
                | Event::PingAcknowledged { .. }
                | Event::PingLost { .. } => {}
            }
        }
        panic!("an endpoint raised more than 100000 events in one go");
    }

    fn read(&mut self, id: StreamId, buf: &mut [u8]) {
        let Some(c) = self.conn() else {
            return;
        };
        let mut n = 0u64;
        for _ in 0..100_000 {
            match c.read(id, buf) {
                Ok(ReadOutcome::Data(k)) => n += k as u64,
                _ => break,
            }
        }
        self.bytes_read += n;
    }
}

struct Harness {
    now: Instant,
    nodes: [Node; 2],
    target: usize,
    buf: Vec<u8>,
}

/// The server's host key, derived once per process (deriving it per input would
/// cost a twentieth of each run; the key never changes).
fn host_key() -> Arc<HostKeyPair> {
    static KEY: OnceLock<Arc<HostKeyPair>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(HostKeyPair::from_seed(&[7; 32]).expect("a valid seed")))
        .clone()
}

fn endpoint_config(seed: u8) -> EndpointConfig {
    EndpointConfig {
        secret: [seed; 32],
        rng: Arc::new(SeededRandom::new([seed; 32])),
        max_connections: MAX_CONNECTIONS,
        per_source_handshakes_per_sec: 0,
        retry: RetryPolicy::Never,
        ..EndpointConfig::default()
    }
}

impl Harness {
    /// Both endpoints, connected and logged in.
    fn new(target: Target) -> Harness {
        let now = Instant::now();
        let key = host_key();
        let mut server = ServerConfig::new(key.clone());
        server.rng = Arc::new(SeededRandom::new([0x5e; 32]));
        let server_ep = Endpoint::new(endpoint_config(0x5e), Some(server), now)
            .expect("a valid server configuration");
        let mut client_ep =
            Endpoint::new(endpoint_config(0xc0), None, now).expect("a valid client config");
        let mut client = ClientConfig::new(
            Login::Password {
                user: "alice".into(),
                password: Zeroizing::new("correct horse".into()),
            },
            HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
        );
        client.rng = Arc::new(SeededRandom::new([0xc1; 32]));
        let server_addr = addr("10.0.0.2:4433");
        let handle = client_ep
            .connect(now, client, server_addr)
            .expect("a valid client configuration");
        let mut client_node = Node::new(client_ep, addr("10.0.0.1:50000"));
        client_node.conn = Some(handle);
        let mut h = Harness {
            now,
            nodes: [Node::new(server_ep, server_addr), client_node],
            target: match target {
                Target::Server => SERVER,
                Target::Client => CLIENT,
            },
            buf: vec![0u8; 2048],
        };
        for _ in 0..64 {
            if h.established() {
                break;
            }
            if !h.settle(8) {
                h.advance(Duration::from_millis(5));
            }
        }
        h
    }

    fn established(&self) -> bool {
        self.nodes.iter().all(|n| n.connected && n.conn.is_some())
    }

    fn peer(&self) -> usize {
        1 - self.target
    }

    /// The source address `flags` chooses for a datagram to the target (and with
    /// [`MOVE`], the peer's address from now on).
    fn source(&mut self, flags: u8) -> SocketAddr {
        let p = self.peer();
        let peer = self.nodes[p].addr;
        let from = match (flags >> 1) & 3 {
            1 => SocketAddr::new(peer.ip(), peer.port().wrapping_add(1)),
            2 => addr("192.0.2.77:40000"),
            _ => peer,
        };
        if flags & MOVE != 0 {
            self.nodes[p].addr = from;
        }
        from
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.byte() % 8 {
            0 => {
                let flags = input.byte();
                let len = input.len();
                let body = input.bytes(len.min(1500));
                let mut d = Vec::with_capacity(body.len() + 40);
                let t = self.target;
                if flags & RAW_ROUTED != 0 {
                    if let Some(c) = self.nodes[t].conn() {
                        d.push(0x40 | (flags >> 3) & 0x3f);
                        d.extend_from_slice(c.local_cid().as_ref());
                    }
                }
                d.extend_from_slice(body);
                if flags & RAW_RESET_TOKEN != 0 {
                    if let Some(token) = self.nodes[t].conn().and_then(|c| c.peer_reset_token()) {
                        d.extend_from_slice(&token);
                    }
                }
                let from = self.source(flags);
                self.deliver(t, from, d);
            }
            1 => {
                let flags = input.byte();
                let skip = if flags & SEAL_SKIP != 0 {
                    input.byte()
                } else {
                    0
                };
                let len = input.len();
                let frames = input.bytes(len.min(MAX_FRAMES_LEN));
                let from = self.source(flags);
                let (p, t) = (self.peer(), self.target);
                let mut buf = std::mem::take(&mut self.buf);
                let sealed = self.nodes[p]
                    .conn()
                    .and_then(|c| c.fuzz_seal_1rtt(skip, frames, &mut buf))
                    .map(|tx| buf[..tx.size].to_vec());
                self.buf = buf;
                if let Some(d) = sealed {
                    if flags & SEAL_TWICE != 0 {
                        self.deliver(t, from, d.clone());
                    }
                    self.deliver(t, from, d);
                }
            }
            2 => {
                let b = u64::from(input.byte());
                self.advance(Duration::from_millis(b * b + 1));
            }
            3 => {
                let (action, arg) = (input.byte(), input.byte());
                self.app(self.peer(), action, arg);
            }
            4 => {
                let (action, arg) = (input.byte(), input.byte());
                self.app(self.target, action, arg);
            }
            5 => {
                let mask = input.byte();
                self.flush();
                let t = self.target;
                let queued: Vec<_> = self.nodes[t].inbox.drain(..).collect();
                for (i, (from, d)) in queued.into_iter().enumerate() {
                    if mask & (1 << (i % 8)) == 0 {
                        self.deliver(t, from, d);
                    }
                }
                self.deliver_inbox(self.peer());
            }
            6 => {
                self.settle(8);
            }
            _ => {
                self.flush();
                let t = self.target;
                let queued: Vec<_> = self.nodes[t].inbox.drain(..).rev().collect();
                for (from, d) in queued {
                    self.deliver(t, from, d);
                }
            }
        }
        for n in &mut self.nodes {
            n.on_events(self.now);
        }
    }

    /// An application action on node `i`.
    fn app(&mut self, i: usize, action: u8, arg: u8) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let picked =
            (!node.streams.is_empty()).then(|| node.streams[usize::from(arg) % node.streams.len()]);
        let data = vec![arg; usize::from(arg) * 16];
        let Some(c) = node.conn() else {
            return;
        };
        let mut opened = None;
        match action % 11 {
            a @ (0 | 1) => {
                let dir = if a == 0 { Dir::Bi } else { Dir::Uni };
                if let Some(id) = c.open_stream(dir) {
                    let _ = c.write(id, &data);
                    opened = Some(id);
                }
            }
            2 => {
                if let Some(id) = picked {
                    let _ = c.write(id, &data);
                }
            }
            3 => {
                if let Some(id) = picked {
                    let _ = c.finish(id);
                }
            }
            4 => {
                if let Some(id) = picked {
                    let _ = c.reset_stream(id, u64::from(arg));
                }
            }
            5 => {
                if let Some(id) = picked {
                    let _ = c.stop_sending(id, u64::from(arg));
                }
            }
            6 => {
                let _ = c.send_datagram(&data[..data.len().min(1000)]);
            }
            7 => {
                let _ = c.ping(now);
            }
            8 => c.initiate_key_update(),
            9 => {
                c.rotate_remote_cid();
            }
            _ => c.close(now, u64::from(arg), "harness close"),
        }
        if let Some(id) = opened {
            node.opened += 1;
            node.remember(id);
        }
    }

    /// Every node's application acts and its endpoint transmits into the other's inbox.
    fn flush(&mut self) {
        let now = self.now;
        for i in 0..2 {
            self.nodes[i].on_events(now);
            let from = self.nodes[i].addr;
            let mut sent = Vec::new();
            while let Some(t) = self.nodes[i].ep.poll_transmit(now, &mut self.buf) {
                sent.push(self.buf[..t.size].to_vec());
                assert!(
                    sent.len() <= MAX_FLUSH,
                    "an endpoint kept transmitting ({MAX_FLUSH} datagrams in one flush)"
                );
            }
            let inbox = &mut self.nodes[1 - i].inbox;
            for d in sent {
                if inbox.len() >= MAX_INBOX {
                    inbox.pop_front();
                }
                inbox.push_back((from, d));
            }
        }
    }

    fn deliver(&mut self, to: usize, from: SocketAddr, mut d: Vec<u8>) {
        let now = self.now;
        self.nodes[to].ep.handle_datagram(now, from, &mut d);
    }

    fn deliver_inbox(&mut self, to: usize) -> bool {
        let queued: Vec<_> = self.nodes[to].inbox.drain(..).collect();
        let any = !queued.is_empty();
        for (from, d) in queued {
            self.deliver(to, from, d);
        }
        any
    }

    /// Up to `rounds` rounds of transmit and deliver both ways; whether anything moved.
    fn settle(&mut self, rounds: usize) -> bool {
        let mut moved = false;
        for _ in 0..rounds {
            self.flush();
            let a = self.deliver_inbox(SERVER);
            let b = self.deliver_inbox(CLIENT);
            if !a && !b {
                break;
            }
            moved = true;
        }
        for n in &mut self.nodes {
            n.on_events(self.now);
        }
        moved
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for n in &mut self.nodes {
            if n.ep.poll_timeout().is_some_and(|t| t <= now) {
                n.ep.handle_timeout(now);
            }
        }
    }

    /// The bounds the target must keep whatever its peer sends.
    fn check_bounds(&mut self) {
        let t = self.target;
        let node = &mut self.nodes[t];
        let stats = node.ep.stats();
        assert!(
            stats.connections <= MAX_CONNECTIONS,
            "{} sessions",
            stats.connections
        );
        let opened = node.opened;
        let Some(c) = node.conn() else {
            return;
        };
        let config = TransportConfig::default();
        let sizes = c.buffer_sizes();
        // Each space keeps at most MAX_ACK_RANGES ranges (plus one being merged).
        assert!(sizes.ack_ranges <= 3 * 33, "ack ranges: {sizes:?}");
        assert!(sizes.sent_packets <= 16_384, "sent packets: {sizes:?}");
        assert!(sizes.events <= MAX_QUEUE, "events: {sizes:?}");
        let remote_streams = config.streams.max_concurrent_bidi + config.streams.max_concurrent_uni;
        assert!(
            sizes.streams as u64 <= remote_streams + opened as u64,
            "streams: {sizes:?}, {opened} opened by the application"
        );
        for (name, len) in c.fuzz_queue_lens() {
            let bound = match name {
                "path_responses" => 8,
                "cids.retire_pending" => 64,
                "datagrams_in" => config.datagram_receive_queue,
                "datagrams_out" => config.datagram_send_queue,
                _ => MAX_QUEUE,
            };
            assert!(len <= bound, "{name} holds {len} entries (bound {bound})");
        }
    }

    fn summarise(&mut self, out: &mut Outcome) {
        let t = self.target;
        let node = &mut self.nodes[t];
        out.target_bytes_read = node.bytes_read;
        out.target_datagrams_read = node.datagrams_read;
        out.target_lost = node.lost;
        if let Some(c) = node.conn() {
            let s = c.stats();
            out.target_packets_received = s.packets_received;
            out.target_migrations = s.migrations;
            out.target_paths_validated = s.paths_validated;
            out.target_key_updates = s.key_updates;
        }
    }
}

/// Builds inputs in the format above (for seed corpora and tests).
#[derive(Debug, Default, Clone)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// A raw datagram.
    pub fn raw(mut self, flags: u8, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(&[0, flags]);
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Frame bytes sealed by the peer (`flags` without [`SEAL_SKIP`]; see `skipped`).
    pub fn sealed(self, flags: u8, frames: &[u8]) -> Self {
        self.sealed_skip(flags & !SEAL_SKIP, None, frames)
    }

    /// Frame bytes sealed by the peer after skipping `skip` packet numbers.
    pub fn sealed_skip(mut self, flags: u8, skip: Option<u8>, frames: &[u8]) -> Self {
        match skip {
            Some(s) => self.0.extend_from_slice(&[1, flags | SEAL_SKIP, s]),
            None => self.0.extend_from_slice(&[1, flags]),
        }
        self.0
            .extend_from_slice(&(frames.len() as u16).to_le_bytes());
        self.0.extend_from_slice(frames);
        self
    }

    /// Advances the clock by `b² + 1` ms.
    pub fn advance(mut self, b: u8) -> Self {
        self.0.extend_from_slice(&[2, b]);
        self
    }

    /// An application action on the peer.
    pub fn peer(mut self, action: u8, arg: u8) -> Self {
        self.0.extend_from_slice(&[3, action, arg]);
        self
    }

    /// An application action on the target.
    pub fn target(mut self, action: u8, arg: u8) -> Self {
        self.0.extend_from_slice(&[4, action, arg]);
        self
    }

    /// Transmit, then deliver with a drop mask.
    pub fn deliver(mut self, mask: u8) -> Self {
        self.0.extend_from_slice(&[5, mask]);
        self
    }

    /// Rounds of transmit and deliver both ways.
    pub fn settle(mut self) -> Self {
        self.0.push(6);
        self
    }

    /// Transmit, then deliver the target's datagrams in reverse order.
    pub fn reorder(mut self) -> Self {
        self.0.push(7);
        self
    }
}

/// Encodes frames into bytes.
pub fn frames(list: &[Frame<'_>]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::new(&mut buf);
    for f in list {
        f.encode(&mut w);
    }
    let n = w.len();
    buf.truncate(n);
    buf
}

/// An ACK frame for the given descending, inclusive ranges.
pub fn ack(ranges: &[(u64, u64)], delay: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::new(&mut buf);
    encode_ack(&mut w, ranges.iter().map(|&(a, b)| a..=b), delay, None, 64);
    let n = w.len();
    buf.truncate(n);
    buf
}

/// The seed inputs for a target's corpus: one or more per frame type and per kind
/// of operation. `transport/fuzz/corpus/<target>/seed-*` holds exactly these
/// (checked by a test; regenerate with `cargo test -p quill-transport --features
/// fuzzing write_seed_corpus -- --ignored`).
pub fn seeds(target: Target) -> Vec<(String, Vec<u8>)> {
    let mut s: Vec<(&str, Script)> = Vec::new();
    let cid = crate::wire::ConnectionId::from_slice(&[0xab; 8]).expect("8 bytes");
    // The peer's first stream of each kind, as the target sees it.
    let (bidi, uni) = match target {
        Target::Server => (0u64, 2u64),
        Target::Client => (1u64, 3u64),
    };
    let own_bidi = bidi ^ 1;
    let f = |list: &[Frame<'_>]| frames(list);
    s.push(("empty", Script::default()));
    s.push((
        "ping",
        Script::default().sealed(0, &f(&[Frame::Ping])).settle(),
    ));
    s.push((
        "stream",
        Script::default()
            .sealed(
                0,
                &f(&[Frame::Stream {
                    id: bidi,
                    offset: 0,
                    data: b"hello",
                    fin: true,
                }]),
            )
            .settle(),
    ));
    s.push((
        "stream-gaps",
        Script::default()
            .sealed(
                0,
                &f(&[
                    Frame::Stream {
                        id: uni,
                        offset: 100,
                        data: &[1; 50],
                        fin: false,
                    },
                    Frame::Stream {
                        id: uni,
                        offset: 10,
                        data: &[2; 50],
                        fin: false,
                    },
                    Frame::Stream {
                        id: uni,
                        offset: 0,
                        data: &[3; 20],
                        fin: false,
                    },
                ]),
            )
            .settle(),
    ));
    s.push((
        "reset-stop",
        Script::default()
            .peer(0, 4)
            .settle()
            .sealed(
                0,
                &f(&[
                    Frame::ResetStream {
                        id: bidi,
                        code: 7,
                        final_size: 64,
                    },
                    Frame::StopSending { id: bidi, code: 9 },
                ]),
            )
            .settle(),
    ));
    s.push((
        "flow-control",
        Script::default()
            .sealed(
                0,
                &f(&[
                    Frame::MaxData(1 << 30),
                    Frame::MaxStreamData {
                        id: own_bidi,
                        max: 1 << 20,
                    },
                    Frame::MaxStreams {
                        bidi: true,
                        max: 1000,
                    },
                    Frame::MaxStreams {
                        bidi: false,
                        max: 1000,
                    },
                    Frame::DataBlocked(10),
                    Frame::StreamDataBlocked { id: bidi, limit: 5 },
                    Frame::StreamsBlocked {
                        bidi: true,
                        limit: 3,
                    },
                ]),
            )
            .target(0, 40)
            .target(1, 40)
            .settle(),
    ));
    s.push((
        "crypto-1rtt",
        Script::default()
            .sealed(
                0,
                &f(&[Frame::Crypto {
                    offset: 5000,
                    data: &[0x11; 40],
                }]),
            )
            .settle(),
    ));
    s.push((
        "new-token",
        Script::default()
            .sealed(0, &f(&[Frame::NewToken { token: &[1, 2, 3] }]))
            .settle(),
    ));
    s.push((
        "cids",
        Script::default()
            .sealed(
                0,
                &f(&[
                    Frame::NewConnectionId {
                        seq: 1,
                        retire_prior_to: 0,
                        cid,
                        reset_token: [0x55; 16],
                    },
                    Frame::RetireConnectionId { seq: 1 },
                ]),
            )
            .target(9, 0)
            .settle(),
    ));
    s.push((
        "path-challenge-new-address",
        Script::default()
            .sealed(
                0b10 | MOVE,
                &f(&[
                    Frame::PathChallenge([9; 8]),
                    Frame::Ping,
                    Frame::Padding { len: 100 },
                ]),
            )
            .settle()
            .sealed(0b100, &f(&[Frame::PathResponse([1; 8])]))
            .settle(),
    ));
    s.push((
        "close",
        Script::default()
            .sealed(
                0,
                &f(&[Frame::ConnectionClose {
                    app: false,
                    code: 0xa,
                    frame_type: Some(8),
                    reason: b"bye",
                }]),
            )
            .settle()
            .advance(40),
    ));
    s.push((
        "handshake-done",
        Script::default()
            .sealed(0, &f(&[Frame::HandshakeDone]))
            .settle(),
    ));
    s.push((
        "datagram",
        Script::default()
            .sealed(0, &f(&[Frame::Datagram { data: b"dgram" }]))
            .settle(),
    ));
    s.push((
        "ack-data",
        Script::default()
            .target(0, 80)
            .deliver(0xff)
            .sealed(0, &ack(&[(3, 3), (0, 1)], 10))
            .sealed(0, &ack(&[(1 << 20, 1 << 20)], 0))
            .settle(),
    ));
    s.push((
        "ack-range-holes",
        (0..40)
            .fold(Script::default(), |sc, i| {
                sc.sealed_skip(0, Some(1 + (i % 3)), &f(&[Frame::Ping]))
            })
            .settle(),
    ));
    s.push((
        "duplicate-and-reorder",
        Script::default()
            .sealed(SEAL_TWICE, &f(&[Frame::Ping]))
            .peer(0, 100)
            .reorder()
            .settle(),
    ));
    s.push((
        "key-update",
        Script::default()
            .peer(8, 0)
            .peer(0, 10)
            .settle()
            .advance(30)
            .target(8, 0)
            .target(0, 10)
            .settle()
            .sealed(0, &f(&[Frame::Ping]))
            .settle(),
    ));
    s.push((
        "idle-timeout",
        Script::default().advance(200).advance(200).settle(),
    ));
    s.push((
        "loss-and-timers",
        Script::default()
            .peer(0, 200)
            .target(0, 200)
            .deliver(0b1010_1010)
            .advance(20)
            .deliver(0)
            .advance(30)
            .settle(),
    ));
    s.push((
        "app-actions",
        (0..11).fold(Script::default(), |sc, a| {
            sc.peer(a, 20).target(a, 21).settle()
        }),
    ));
    s.push((
        "raw-garbage",
        Script::default()
            .raw(0, &[0x40; 30])
            .raw(RAW_ROUTED, &[0x5a; 60])
            .raw(0, &[0xc0; 1200])
            .settle(),
    ));
    s.push((
        "raw-stateless-reset",
        Script::default()
            .raw(RAW_ROUTED | RAW_RESET_TOKEN, &[0x33; 24])
            .settle(),
    ));
    s.push((
        "frame-encoding-error",
        Script::default().sealed(0, &[0x1f, 0xff]).settle(),
    ));
    s.into_iter()
        .map(|(name, sc)| (format!("seed-{name}"), sc.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus_dir(target: Target) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target.name())
    }

    /// CI's replay of the fuzz corpora: every checked-in input runs through the same
    /// harness as the fuzz targets, on stable, without a panic or a broken bound.
    #[test]
    fn checked_in_corpora_replay_cleanly() {
        for target in [Target::Server, Target::Client] {
            let dir = corpus_dir(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("a directory entry").path())
                .collect();
            files.sort();
            assert!(files.len() >= seeds(target).len(), "{}", dir.display());
            for f in files {
                let data = std::fs::read(&f).expect("a readable corpus file");
                let out = run(target, &data);
                assert!(out.established, "{}", f.display());
            }
        }
    }

    /// The checked-in seeds are what `seeds` builds now (so a change to the input
    /// format cannot silently turn them into noise).
    #[test]
    fn seed_files_match_the_seed_scripts() {
        for target in [Target::Server, Target::Client] {
            for (name, data) in seeds(target) {
                let path = corpus_dir(target).join(&name);
                let on_disk = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (regenerate the seeds)", path.display()));
                assert!(on_disk == data, "{} differs from seeds()", path.display());
            }
        }
    }

    /// Writes the seed corpora (run by hand after changing `seeds`).
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        for target in [Target::Server, Target::Client] {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, data) in seeds(target) {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
    }

    /// Sealed frames reach the target's frame handlers: stream data is read by its
    /// application, a datagram is received, a new address gets validated.
    #[test]
    fn sealed_frames_reach_the_handlers() {
        for target in [Target::Server, Target::Client] {
            let (bidi, _) = match target {
                Target::Server => (0u64, 2u64),
                Target::Client => (1u64, 3u64),
            };
            let script = Script::default()
                .sealed(
                    0,
                    &frames(&[
                        Frame::Stream {
                            id: bidi,
                            offset: 0,
                            data: &[7; 300],
                            fin: true,
                        },
                        Frame::Datagram { data: b"dgram" },
                    ]),
                )
                .settle()
                // Padded: the server may send 3x what the new address sent before
                // it is validated (RFC 9000 §8.1), and a PATH_CHALLENGE packet
                // needs room.
                .sealed(
                    0b10 | MOVE,
                    &frames(&[Frame::Ping, Frame::Padding { len: 100 }]),
                )
                .settle()
                .advance(3)
                .settle();
            let out = run(target, &script.0);
            assert!(out.established);
            assert_eq!(out.target_bytes_read, 300, "{target:?}: {out:?}");
            assert_eq!(out.target_datagrams_read, 1, "{target:?}: {out:?}");
            assert!(!out.target_lost, "{target:?}: {out:?}");
            if target == Target::Server {
                assert_eq!(out.target_paths_validated, 1, "{out:?}");
            }
        }
    }

    /// A frame that breaks the protocol closes the target's connection (the input
    /// really is interpreted by the connection, not dropped as undecryptable).
    #[test]
    fn a_bad_frame_closes_the_target() {
        for target in [Target::Server, Target::Client] {
            let script = Script::default()
                .sealed(0, &[0x1f, 0xff])
                .settle()
                .advance(100)
                .settle();
            let out = run(target, &script.0);
            assert!(out.target_lost, "{target:?}: {out:?}");
        }
    }

    /// A key update initiated by either side completes through the harness.
    #[test]
    fn key_updates_complete() {
        for target in [Target::Server, Target::Client] {
            let script = Script::default()
                .peer(8, 0)
                .sealed(0, &frames(&[Frame::Ping]))
                .settle();
            let out = run(target, &script.0);
            assert_eq!(out.target_key_updates, 1, "{target:?}: {out:?}");
        }
    }
}
