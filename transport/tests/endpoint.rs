//! Endpoints exchanging datagrams in-process: a tiny network loop with a fixed
//! one-way delay and virtual time that jumps to the next deadline. No sockets.

#[path = "support/datagrams.rs"]
mod datagrams;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::SeededRandom;
use quill_transport::proto::{
    ClientConfig, ConnectionError, Dir, Event, HandshakeStage, HostKeyPolicy, Login, ReadOutcome,
    ServerConfig, StreamEvent,
};
use quill_transport::proto::{ConnectionHandle, Endpoint, EndpointConfig, RetryPolicy};
use quill_transport::wire::QUILL_VERSION;
use quill_transport::wire::{parse_header, parse_version_negotiation, LongType, PacketKind};
use zeroize::Zeroizing;

use datagrams::unknown_version_datagram;

const DELAY: Duration = Duration::from_millis(5);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn host_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[7; 32]).unwrap())
}

fn endpoint_config(seed: u8) -> EndpointConfig {
    EndpointConfig {
        secret: [seed; 32],
        rng: Arc::new(SeededRandom::new([seed; 32])),
        per_source_handshakes_per_sec: 0,
        ..EndpointConfig::default()
    }
}

/// [`endpoint_config`] adjusted by `tune`.
fn endpoint_config_tuned(seed: u8, tune: impl FnOnce(&mut EndpointConfig)) -> EndpointConfig {
    let mut cfg = endpoint_config(seed);
    tune(&mut cfg);
    cfg
}

fn server_config() -> ServerConfig {
    let mut s = ServerConfig::new(host_key());
    s.rng = Arc::new(SeededRandom::new([0x5e; 32]));
    s
}

fn client_config(user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(
        Login::Password {
            user: user.into(),
            password: Zeroizing::new("correct horse".into()),
        },
        HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
    );
    c.rng = Arc::new(SeededRandom::new([0xc1; 32]));
    c
}

/// One endpoint at one address, with a scripted application.
struct Node {
    addr: SocketAddr,
    ep: Endpoint,
    /// Server: accept every login.
    accept_logins: bool,
    connected: Vec<(ConnectionHandle, String)>,
    lost: Vec<(ConnectionHandle, ConnectionError)>,
    received: Vec<(ConnectionHandle, Vec<u8>)>,
}

impl Node {
    fn new(addr: SocketAddr, ep: Endpoint) -> Node {
        Node {
            addr,
            ep,
            accept_logins: true,
            connected: Vec::new(),
            lost: Vec::new(),
            received: Vec::new(),
        }
    }

    fn on_events(&mut self, now: Instant) {
        while let Some((h, e)) = self.ep.poll_event() {
            match e {
                Event::LoginRequested(req) if self.accept_logins => {
                    let c = self.ep.connection(h).expect("live handle");
                    c.accept_login(now, &req.user, "welcome");
                    self.ep.touch(h);
                }
                Event::Connected { account, .. } => self.connected.push((h, account)),
                Event::ConnectionLost(err) => self.lost.push((h, err)),
                Event::Stream(StreamEvent::Opened { dir }) => {
                    let c = self.ep.connection(h).expect("live handle");
                    while let Some(id) = c.accept_stream(dir) {
                        read_all(c, id, &mut self.received, h);
                    }
                }
                Event::Stream(StreamEvent::Readable(id)) => {
                    let c = self.ep.connection(h).expect("live handle");
                    read_all(c, id, &mut self.received, h);
                }
                _ => {}
            }
        }
    }
}

fn read_all(
    c: &mut quill_transport::proto::Connection,
    id: quill_transport::proto::StreamId,
    out: &mut Vec<(ConnectionHandle, Vec<u8>)>,
    h: ConnectionHandle,
) {
    let mut buf = [0u8; 4096];
    while let Ok(ReadOutcome::Data(n)) = c.read(id, &mut buf) {
        out.push((h, buf[..n].to_vec()));
    }
}

type Datagram = (SocketAddr, SocketAddr, Vec<u8>);
type HoldFilter = Box<dyn Fn(&Datagram) -> bool>;

/// Nodes and the datagrams between them.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    /// (deliver at, from, to, bytes), in delivery order (constant delay).
    flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Datagrams matching this are held back in `held` instead of sent.
    hold: Option<HoldFilter>,
    held: Vec<Datagram>,
    buf: Vec<u8>,
}

impl Net {
    fn new(now: Instant) -> Net {
        Net {
            now,
            nodes: Vec::new(),
            flight: VecDeque::new(),
            hold: None,
            held: Vec::new(),
            buf: vec![0u8; 2048],
        }
    }

    fn add(&mut self, addr: SocketAddr, ep: Endpoint) -> usize {
        self.nodes.push(Node::new(addr, ep));
        self.nodes.len() - 1
    }

    fn node(&mut self, addr: SocketAddr) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.addr == addr)
    }

    /// Applications act and every endpoint transmits.
    fn pump(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            node.on_events(now);
            let mut n = 0;
            while let Some(t) = node.ep.poll_transmit(now, &mut self.buf) {
                let d = (node.addr, t.destination, self.buf[..t.size].to_vec());
                if self.hold.as_ref().is_some_and(|f| f(&d)) {
                    self.held.push(d);
                } else {
                    self.flight.push_back((now + DELAY, d.0, d.1, d.2));
                }
                n += 1;
                assert!(n < 1_000_000, "endpoint never stopped transmitting");
            }
        }
    }

    /// One turn; false when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.pump();
        let next = self
            .nodes
            .iter()
            .filter_map(|n| n.ep.poll_timeout())
            .chain(self.flight.front().map(|f| f.0))
            .min();
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while self.flight.front().is_some_and(|f| f.0 <= now) {
            let (_, from, to, mut data) = self.flight.pop_front().unwrap();
            if let Some(node) = self.node(to) {
                node.ep.handle_datagram(now, from, &mut data);
            }
        }
        for node in &mut self.nodes {
            if node.ep.poll_timeout().is_some_and(|t| t <= now) {
                node.ep.handle_timeout(now);
            }
        }
        true
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now > deadline || !self.step() {
                return done(self);
            }
        }
    }
}

const SERVER: &str = "10.0.0.2:4433";
const CLIENT: &str = "10.0.0.1:50000";

/// A client endpoint with `cfg`, started at `now`.
fn client_endpoint(cfg: EndpointConfig, now: Instant) -> Endpoint {
    Endpoint::new(cfg, None, now).unwrap()
}

/// A server endpoint with `cfg`, started at `now`.
fn server_endpoint(cfg: EndpointConfig, now: Instant) -> Endpoint {
    Endpoint::new(cfg, Some(server_config()), now).unwrap()
}

/// A server node (index 0) with `endpoint_config(seed)` and a client node
/// (index 1), starting now (`net.now`).
fn pair(seed: u8) -> Net {
    pair_tuned(seed, |_| {})
}

/// [`pair`] with the server's endpoint config adjusted by `tune`.
fn pair_tuned(seed: u8, tune: impl FnOnce(&mut EndpointConfig)) -> Net {
    let t0 = Instant::now();
    let mut net = Net::new(t0);
    net.add(
        addr(SERVER),
        server_endpoint(endpoint_config_tuned(seed, tune), t0),
    );
    net.add(addr(CLIENT), client_endpoint(endpoint_config(0xc0), t0));
    net
}

/// [`pair`] with one connection from `user`, run until both sides report it
/// connected.
fn connected_pair(seed: u8, user: &str) -> (Net, ConnectionHandle) {
    let mut net = pair(seed);
    let h = connect(&mut net, 1, user);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        !n.nodes[1].connected.is_empty() && !n.nodes[0].connected.is_empty()
    }));
    (net, h)
}

fn connect(net: &mut Net, client: usize, user: &str) -> ConnectionHandle {
    let now = net.now;
    net.nodes[client]
        .ep
        .connect(now, client_config(user), addr(SERVER))
        .unwrap()
}

/// A copy of the client's first flight that arrives late (a duplicate in the network,
/// or a datagram that waited in a loop's forwarding channel) belongs to the session it
/// started, not to a new one: the client's original connection ID stays routed for the
/// session's life (found by `quill-bench compare --what workers`: 10,001–10,003
/// sessions for 10,000 connections).
#[test]
fn a_late_copy_of_the_first_flight_starts_no_second_session() {
    let mut net = pair(14);
    connect(&mut net, 1, "alice");
    net.pump();
    let client = addr(CLIENT);
    let first_flight: Vec<_> = net
        .flight
        .iter()
        .filter(|f| f.1 == client)
        .cloned()
        .collect();
    assert!(!first_flight.is_empty());
    assert!(net.run_until(Duration::from_secs(10), |n| {
        !n.nodes[1].connected.is_empty() && !n.nodes[0].connected.is_empty()
    }));
    // After the handshake, with the Initial keys gone on both sides.
    net.run_until(Duration::from_millis(300), |_| false);
    for (_, from, to, data) in first_flight {
        let now = net.now;
        net.flight.push_back((now, from, to, data));
    }
    net.run_until(Duration::from_millis(300), |_| false);
    let st = net.nodes[0].ep.stats();
    assert_eq!(st.sessions_created, 1, "{st:?}");
    assert!(net.nodes[0].lost.is_empty(), "{:?}", net.nodes[0].lost);
    assert!(net.nodes[1].lost.is_empty(), "{:?}", net.nodes[1].lost);
    assert_eq!(net.nodes[0].ep.len(), 1);
    assert_eq!(net.nodes[1].connected.len(), 1);
}

#[test]
fn handshake_login_and_data_through_endpoints() {
    let (mut net, h) = connected_pair(1, "alice");
    assert_eq!(net.nodes[1].connected, vec![(h, "alice".to_string())]);
    assert_eq!(net.nodes[0].connected[0].1, "alice");
    let st = net.nodes[0].ep.stats();
    assert_eq!(st.sessions_created, 1);
    assert_eq!(st.half_open, 0, "logged in: no longer half-open");
    assert_eq!(st.retry_sent, 0);

    // Data from client to server through the endpoints.
    let c = net.nodes[1].ep.connection(h).unwrap();
    let id = c.open_stream(Dir::Bi).unwrap();
    assert_eq!(c.write(id, b"hello endpoint").unwrap(), 14);
    c.finish(id).unwrap();
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[0]
            .received
            .iter()
            .flat_map(|(_, d)| d.iter().copied())
            .count()
            == 14
    }));
    let got: Vec<u8> = net.nodes[0]
        .received
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    assert_eq!(got, b"hello endpoint");
    for node in &net.nodes {
        let st = node.ep.stats();
        assert_eq!(st.spurious_timeouts, 0);
        assert_eq!(st.stale_timers, 0);
    }
}

#[test]
fn thousand_concurrent_clients_log_in() {
    // Every client comes from one address here: lift the per-address cap on
    // half-open sessions, as endpoint_config lifts the per-source rate limit.
    let mut net = pair_tuned(2, |c| c.max_half_open_per_address = 0);
    let mut handles = Vec::new();
    for i in 0..1000 {
        handles.push(connect(&mut net, 1, &format!("user{i}")));
    }
    assert!(net.run_until(Duration::from_secs(60), |n| {
        n.nodes[1].connected.len() == 1000 && n.nodes[0].connected.len() == 1000
    }));
    let server = net.nodes[0].ep.stats();
    assert_eq!(server.sessions_created, 1000);
    assert_eq!(server.connections, 1000);
    assert_eq!(server.half_open, 0);
    assert_eq!(server.spurious_timeouts, 0);
    let mut accounts: Vec<String> = net.nodes[0]
        .connected
        .iter()
        .map(|(_, a)| a.clone())
        .collect();
    accounts.sort();
    accounts.dedup();
    assert_eq!(accounts.len(), 1000, "every client logged in as itself");
    assert!(net.nodes[1].lost.is_empty());
}

#[test]
fn freed_slot_is_reused_without_stale_timers() {
    let mut net = pair(3);
    let first = connect(&mut net, 1, "alice");
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[0].connected.len() == 1));
    let now = net.now;
    net.nodes[1]
        .ep
        .connection(first)
        .unwrap()
        .close(now, 0, "bye");
    // Both sessions drain (closing / draining periods) and are freed.
    assert!(net.run_until(Duration::from_secs(30), |n| {
        n.nodes[0].ep.is_empty() && n.nodes[1].ep.is_empty()
    }));
    assert_eq!(net.nodes[0].lost.len(), 1);
    assert_eq!(net.nodes[1].lost.len(), 1);
    // A new connection takes the same slab slot on both sides.
    let second = connect(&mut net, 1, "bob");
    assert_eq!(first, second, "slot reused");
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[0].connected.len() == 2));
    assert_eq!(net.nodes[0].connected[1].0, net.nodes[0].connected[0].0);
    // Keep it alive through several timer firings, then check no stale entry fired.
    assert!(!net.run_until(Duration::from_secs(5), |_| false));
    for node in &net.nodes {
        let st = node.ep.stats();
        assert_eq!(st.stale_timers, 0, "{st:?}");
        assert_eq!(st.spurious_timeouts, 0, "{st:?}");
        assert!(st.timeouts_handled > 0);
        assert_eq!(st.sessions_freed, 1);
    }
}

#[test]
fn retry_always_completes_with_echoed_token() {
    let mut net = pair_tuned(4, |c| c.retry = RetryPolicy::Always);
    connect(&mut net, 1, "alice");
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.nodes[1].connected.len() == 1
    }));
    let st = net.nodes[0].ep.stats();
    assert!(st.retry_sent >= 1, "{st:?}");
    assert_eq!(st.sessions_created, 1);
    assert_eq!(st.dropped_invalid_token, 0);
}

/// The offset of the Initial's token within the datagram.
fn token_range(d: &[u8]) -> std::ops::Range<usize> {
    let h = parse_header(d, 8).unwrap();
    assert_eq!(h.kind, PacketKind::Long(LongType::Initial));
    let start = h.token.as_ptr() as usize - d.as_ptr() as usize;
    start..start + h.token.len()
}

/// Connects a client and holds back its Initials that carry a token, until the first
/// is held.
fn hold_token_initials(net: &mut Net) {
    net.hold = Some(Box::new(|(from, _, d): &Datagram| {
        from == &addr(CLIENT)
            && parse_header(d, 8)
                .is_ok_and(|h| h.kind == PacketKind::Long(LongType::Initial) && !h.token.is_empty())
    }));
    connect(net, 1, "alice");
    assert!(net.run_until(Duration::from_secs(1), |n| !n.held.is_empty()));
}

#[test]
fn bad_retry_tokens_are_dropped_without_answer() {
    let lifetime = Duration::from_secs(10);
    let mut net = pair_tuned(5, |c| {
        c.retry = RetryPolicy::Always;
        c.retry_token_lifetime = lifetime;
    });
    let t0 = net.now;
    hold_token_initials(&mut net);
    assert!(net.nodes[0].ep.stats().retry_sent >= 1);
    let (from, _, good) = net.held[0].clone();
    let now = net.now;
    let server = &mut net.nodes[0].ep;
    let mut buf = [0u8; 2048];

    let try_one = |server: &mut Endpoint, at: Instant, src: SocketAddr, mut d: Vec<u8>| {
        let before = server.stats();
        assert!(server.handle_datagram(at, src, &mut d).is_none());
        let after = server.stats();
        assert_eq!(after.connections, 0);
        (before, after)
    };

    // Tampered: one bit of the token flipped.
    let mut d = good.clone();
    let r = token_range(&d);
    d[r.start + 3] ^= 0x01;
    let (b, a) = try_one(server, now, from, d);
    assert_eq!(a.dropped_invalid_token, b.dropped_invalid_token + 1);
    // Forged: a token of the right length that we never sealed.
    let mut d = good.clone();
    for byte in &mut d[token_range(&good)] {
        *byte = 0x42;
    }
    let (b, a) = try_one(server, now, from, d);
    assert_eq!(a.dropped_invalid_token, b.dropped_invalid_token + 1);
    // From another address (same IP, other port; and another IP).
    for other in ["10.0.0.1:50001", "10.0.0.9:50000"] {
        let (b, a) = try_one(server, now, addr(other), good.clone());
        assert_eq!(a.dropped_invalid_token, b.dropped_invalid_token + 1);
    }
    // Expired.
    let late = t0 + lifetime + Duration::from_secs(1);
    let (b, a) = try_one(server, late, from, good.clone());
    assert_eq!(a.dropped_expired_token, b.dropped_expired_token + 1);
    // None of them got an answer (no amplification) ...
    assert!(server.poll_transmit(late, &mut buf).is_none());
    // ... and the untouched one, in time and from the right address, is accepted.
    let mut d = good;
    assert!(server.handle_datagram(now, from, &mut d).is_some());
    assert_eq!(server.stats().connections, 1);
}

#[test]
fn retry_tokens_carry_wall_clock_time_across_endpoints_sharing_the_retry_secret() {
    // Server A: the fleet's retry secret, its wall clock at creation `wall0`.
    let wall0 = Duration::from_secs(1_796_000_000);
    let shared = Zeroizing::new([0x33; 32]);
    let fleet = |c: &mut EndpointConfig, wall: Duration, secret: &Zeroizing<[u8; 32]>| {
        c.retry = RetryPolicy::Always;
        c.retry_token_lifetime = Duration::from_secs(10);
        c.retry_secret = Some(secret.clone());
        c.unix_time_at_start = Some(wall);
    };
    let mut net = pair_tuned(9, |c| fleet(c, wall0, &shared));
    let t0 = net.now;
    hold_token_initials(&mut net);
    let (from, _, token_initial) = net.held[0].clone();
    // The wall-clock time at which the token reaches server B.
    let wall_now = wall0 + (net.now - t0);

    // Server B was started an hour before (by its monotonic clock) with its own reset
    // secret: what counts is the wall clock, so A's token is good at B.
    let b_started = net.now;
    let b_checks = b_started + Duration::from_secs(3600);
    let b_config = |wall: Duration, secret: &Zeroizing<[u8; 32]>| {
        let mut c = endpoint_config(10);
        fleet(&mut c, wall, secret);
        c
    };
    let mut b = Endpoint::new(
        b_config(wall_now - Duration::from_secs(3600), &shared),
        Some(server_config()),
        b_started,
    )
    .unwrap();
    let mut d = token_initial.clone();
    assert!(b.handle_datagram(b_checks, from, &mut d).is_some());
    assert_eq!(b.stats().connections, 1);
    assert_eq!(b.stats().dropped_invalid_token, 0);

    // A server whose wall clock is past the token's expiry refuses it as expired ...
    let mut late = Endpoint::new(
        b_config(wall_now + Duration::from_secs(11), &shared),
        Some(server_config()),
        b_started,
    )
    .unwrap();
    let mut d = token_initial.clone();
    assert!(late.handle_datagram(b_started, from, &mut d).is_none());
    assert_eq!(late.stats().dropped_expired_token, 1);
    // ... and one with another retry secret as invalid.
    let mut other = Endpoint::new(
        b_config(wall_now, &Zeroizing::new([0x44; 32])),
        Some(server_config()),
        b_started,
    )
    .unwrap();
    let mut d = token_initial;
    assert!(other.handle_datagram(b_started, from, &mut d).is_none());
    assert_eq!(other.stats().dropped_invalid_token, 1);
}

#[test]
fn restarted_server_answers_with_stateless_reset() {
    let mut net = pair(6);
    let h = connect(&mut net, 1, "alice");
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[1].connected.len() == 1));
    // Let the handshake settle (HANDSHAKE_DONE acknowledged, ACKs flushed).
    net.run_until(Duration::from_millis(500), |_| false);
    // The server restarts: all state lost, same secret.
    let now = net.now;
    net.nodes[0].ep = server_endpoint(endpoint_config(6), now);
    net.flight.clear();
    // The client sends something in a short-header packet.
    let c = net.nodes[1].ep.connection(h).unwrap();
    let id = c.open_stream(Dir::Uni).unwrap();
    c.write(id, &[0x33; 100]).unwrap();
    let mut buf = [0u8; 2048];
    let t = net.nodes[1].ep.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(t.destination, addr(SERVER));
    let mut trigger = buf[..t.size].to_vec();
    assert_eq!(trigger[0] & 0x80, 0, "short header");
    let server_cid = trigger[1..9].to_vec();
    let trigger_len = trigger.len();

    let server = &mut net.nodes[0].ep;
    assert!(server
        .handle_datagram(now, addr(CLIENT), &mut trigger)
        .is_none());
    let reset = server.poll_transmit(now, &mut buf).expect("a reset");
    assert_eq!(reset.destination, addr(CLIENT));
    let reset = &buf[..reset.size];
    assert!(reset.len() < trigger_len, "smaller than the trigger");
    assert!(reset.len() >= 21);
    assert_eq!(reset[0] & 0xc0, 0x40, "looks like a short header");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[6; 32]);
    let expect = ring::hmac::sign(&key, &server_cid);
    assert_eq!(&reset[reset.len() - 16..], &expect.as_ref()[..16]);
    assert_eq!(server.stats().resets_sent, 1);

    // A trigger of 21 bytes gets nothing: the reset could not be smaller.
    let mut tiny = trigger[..21].to_vec();
    server.handle_datagram(now, addr(CLIENT), &mut tiny);
    assert!(server.poll_transmit(now, &mut buf).is_none());
    assert_eq!(server.stats().resets_sent, 1);
    // A server with another secret would send a different token.
    let other = server_endpoint(endpoint_config(7), now);
    let cid = quill_transport::wire::ConnectionId::from_slice(&server_cid).unwrap();
    assert_ne!(&other.reset_token(&cid)[..], &expect.as_ref()[..16]);
}

#[test]
fn version_negotiation_only_for_large_datagrams() {
    let t0 = Instant::now();
    let mut ep = server_endpoint(endpoint_config(8), t0);
    let mut buf = [0u8; 2048];
    let mut small = unknown_version_datagram(1199);
    assert!(ep.handle_datagram(t0, addr(CLIENT), &mut small).is_none());
    assert!(ep.poll_transmit(t0, &mut buf).is_none());
    assert_eq!(ep.stats().dropped_unsupported_version, 1);

    let mut big = unknown_version_datagram(1200);
    assert!(ep.handle_datagram(t0, addr(CLIENT), &mut big).is_none());
    let t = ep
        .poll_transmit(t0, &mut buf)
        .expect("a Version Negotiation packet");
    assert_eq!(t.destination, addr(CLIENT));
    assert!(t.size < 1200);
    let vn = parse_version_negotiation(&buf[..t.size]).unwrap();
    assert_eq!(vn.dcid, &[0x55; 5], "echoes the client's SCID");
    assert_eq!(vn.scid, &[0xdd; 8], "echoes the client's DCID");
    let versions: Vec<u32> = vn.versions().collect();
    assert!(versions.contains(&QUILL_VERSION));
    assert!(versions
        .iter()
        .any(|v| v & 0x0f0f_0f0f == 0x0a0a_0a0a && *v != QUILL_VERSION));
    assert_eq!(ep.stats().vn_sent, 1);
    assert!(ep.is_empty());

    // A client endpoint never answers.
    let mut client = client_endpoint(endpoint_config(9), t0);
    let mut big = unknown_version_datagram(1200);
    client.handle_datagram(t0, addr(SERVER), &mut big);
    assert!(client.poll_transmit(t0, &mut buf).is_none());
}

#[test]
fn max_connections_refuses_the_next_initial() {
    let mut net = pair_tuned(10, |c| c.max_connections = 1);
    connect(&mut net, 1, "alice");
    connect(&mut net, 1, "bob");
    net.run_until(Duration::from_secs(3), |_| false);
    let st = net.nodes[0].ep.stats();
    assert!(st.refused_limit >= 1, "{st:?}");
    assert_eq!(st.sessions_created, 1);
    assert_eq!(net.nodes[0].ep.len(), 1);
    assert_eq!(net.nodes[1].connected.len(), 1);
}

#[test]
fn half_open_limit_refuses_while_logins_pend() {
    let mut net = pair_tuned(11, |c| {
        c.max_half_open = 1;
        c.retry = RetryPolicy::Never;
    });
    net.nodes[0].accept_logins = false; // logins stay pending: sessions stay half-open
    connect(&mut net, 1, "alice");
    connect(&mut net, 1, "bob");
    net.run_until(Duration::from_secs(2), |_| false);
    let st = net.nodes[0].ep.stats();
    assert_eq!(st.half_open, 1);
    assert_eq!(st.sessions_created, 1);
    assert!(st.refused_half_open >= 1, "{st:?}");
}

/// A login that is never decided ends on both sides at the handshake timeout (10 s
/// by default), not at the idle timeout, and frees the server's half-open place.
#[test]
fn a_handshake_that_does_not_finish_in_time_ends_on_both_sides() {
    let mut net = pair(16);
    let t0 = net.now;
    net.nodes[0].accept_logins = false;
    connect(&mut net, 1, "alice");
    assert!(
        net.run_until(Duration::from_secs(2), |n| n.nodes[0].ep.stats().half_open
            == 1)
    );
    assert!(net.run_until(Duration::from_secs(60), |n| {
        !n.nodes[0].lost.is_empty() && !n.nodes[1].lost.is_empty()
    }));
    let took = net.now - t0;
    assert!(took <= Duration::from_secs(11), "{took:?}");
    assert_eq!(net.nodes[0].ep.stats().half_open, 0);
    for (side, node) in [("server", &net.nodes[0]), ("client", &net.nodes[1])] {
        assert!(
            matches!(
                node.lost[0].1,
                ConnectionError::HandshakeTimedOut {
                    stage: HandshakeStage::Login,
                    after,
                } if after == Duration::from_secs(10)
            ),
            "{side}: {:?}",
            node.lost
        );
    }
    assert!(net.nodes[1].connected.is_empty());
}

#[test]
fn per_source_rate_limit_defers_the_second_handshake() {
    let mut net = pair_tuned(12, |c| c.per_source_handshakes_per_sec = 1);
    connect(&mut net, 1, "alice");
    connect(&mut net, 1, "bob");
    // The second Initial is refused at first; the client's retransmission gets in
    // once the bucket has refilled.
    assert!(net.run_until(Duration::from_secs(20), |n| n.nodes[1].connected.len() == 2));
    let st = net.nodes[0].ep.stats();
    assert!(st.refused_rate >= 1, "{st:?}");
    assert_eq!(st.sessions_created, 2);
}

/// Handles and deadlines of client sessions that have not sent anything yet.
fn idle_clients(ep: &mut Endpoint, t0: Instant, n: usize) -> Vec<(ConnectionHandle, Instant)> {
    (0..n)
        .map(|_| {
            let h = ep.connect(t0, client_config("idle"), addr(SERVER)).unwrap();
            (h, ep.connection(h).unwrap().poll_timeout().unwrap())
        })
        .collect()
}

#[test]
fn handle_timeout_touches_only_sessions_whose_deadline_passed() {
    let t0 = Instant::now();
    let mut ep = client_endpoint(endpoint_config(13), t0);
    let (a, da) = idle_clients(&mut ep, t0, 1)[0];
    let t1 = t0 + Duration::from_secs(7);
    let b = ep.connect(t1, client_config("b"), addr(SERVER)).unwrap();
    let db = ep.connection(b).unwrap().poll_timeout().unwrap();
    assert!(da < db);
    // Early wake-ups (the wheel may cascade) touch nobody.
    let mut t = t0;
    while t < da {
        ep.handle_timeout(t);
        t += Duration::from_millis(250);
    }
    assert_eq!(ep.stats().timeouts_handled, 0);
    ep.handle_timeout(da + Duration::from_millis(1));
    assert_eq!(ep.stats().timeouts_handled, 1, "only a");
    assert!(ep.connection(a).unwrap().is_drained());
    assert!(!ep.connection(b).unwrap().is_closed());
    ep.handle_timeout(db - Duration::from_millis(2));
    assert_eq!(ep.stats().timeouts_handled, 1);
    ep.handle_timeout(db + Duration::from_millis(1));
    assert_eq!(ep.stats().timeouts_handled, 2);
    let mut lost = Vec::new();
    while let Some((h, e)) = ep.poll_event() {
        if let Event::ConnectionLost(err) = e {
            lost.push((h, err));
        }
    }
    // Nothing was ever heard: the handshake timeout (10 s) ends them.
    let timed_out = ConnectionError::HandshakeTimedOut {
        after: Duration::from_secs(10),
        stage: HandshakeStage::NoAnswer,
    };
    assert_eq!(lost, vec![(a, timed_out.clone()), (b, timed_out)]);
    assert!(
        ep.is_empty(),
        "drained sessions are freed once their events are read"
    );
    assert_eq!(ep.stats().spurious_timeouts, 0);
}

#[test]
fn ten_thousand_idle_sessions_cost_nothing_per_wakeup() {
    let t0 = Instant::now();
    let cfg = endpoint_config_tuned(14, |c| c.max_connections = 20_000);
    let mut ep = client_endpoint(cfg, t0);
    let sessions = idle_clients(&mut ep, t0, 10_000);
    let earliest = sessions.iter().map(|s| s.1).min().unwrap();
    assert_eq!(ep.len(), 10_000);
    // Many wake-ups before any deadline: no session is touched.
    let mut t = t0;
    let mut wakeups = 0;
    while t + Duration::from_secs(1) < earliest {
        ep.handle_timeout(t);
        wakeups += 1;
        t += Duration::from_millis(50);
    }
    assert!(wakeups > 100);
    let st = ep.stats();
    assert_eq!(st.timeouts_handled, 0);
    assert_eq!(st.spurious_timeouts, 0);
    assert!(ep.poll_timeout().unwrap() <= earliest);
    // At the deadline every session times out, once.
    let latest = sessions.iter().map(|s| s.1).max().unwrap();
    ep.handle_timeout(latest + Duration::from_millis(1));
    assert_eq!(ep.stats().timeouts_handled, 10_000);
    let mut lost = 0;
    while let Some((_, e)) = ep.poll_event() {
        if matches!(
            e,
            Event::ConnectionLost(ConnectionError::HandshakeTimedOut { .. })
        ) {
            lost += 1;
        }
    }
    assert_eq!(lost, 10_000);
    assert!(ep.is_empty());
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn close_all_drains_every_session() {
    let mut net = pair(15);
    for i in 0..5 {
        connect(&mut net, 1, &format!("u{i}"));
    }
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[0].connected.len() == 5));
    let now = net.now;
    net.nodes[0].ep.close_all(now, 7, "shutting down");
    assert!(net.run_until(Duration::from_secs(30), |n| {
        n.nodes[0].ep.is_empty() && n.nodes[1].ep.is_empty()
    }));
    assert!(net.nodes[1]
        .lost
        .iter()
        .all(|(_, e)| matches!(e, ConnectionError::ClosedByPeer { code: 7, .. })));
    assert_eq!(net.nodes[1].lost.len(), 5);
    // A closed endpoint refuses new connections.
    connect(&mut net, 1, "late");
    net.run_until(Duration::from_secs(2), |_| false);
    assert!(net.nodes[0].ep.is_empty());
    assert!(net.nodes[0].ep.stats().refused_limit >= 1);
}

/// A shutting-down server frees at once the sessions whose clients have already
/// closed (draining), instead of waiting out three PTOs of each; the others close.
#[test]
fn close_all_frees_sessions_the_peer_already_closed_at_once() {
    let mut net = pair(16);
    let hs: Vec<_> = (0..3)
        .map(|i| connect(&mut net, 1, &format!("u{i}")))
        .collect();
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[0].connected.len() == 3));
    let now = net.now;
    for h in &hs[..2] {
        net.nodes[1].ep.connection(*h).unwrap().close(now, 0, "bye");
    }
    assert!(net.run_until(Duration::from_secs(2), |n| n.nodes[0].lost.len() == 2));
    // Both are draining on the server: still held.
    assert_eq!(net.nodes[0].ep.stats().connections, 3);
    let now = net.now;
    net.nodes[0].ep.close_all(now, 7, "shutting down");
    assert_eq!(net.nodes[0].ep.stats().connections, 1);
    assert!(net.run_until(Duration::from_secs(30), |n| {
        n.nodes[0].ep.is_empty() && n.nodes[1].ep.is_empty()
    }));
    assert!(matches!(
        net.nodes[1].lost.last(),
        Some((h, ConnectionError::ClosedByPeer { code: 7, .. })) if *h == hs[2]
    ));
}

#[test]
fn round_robin_caps_one_busy_session_per_turn() {
    let t0 = Instant::now();
    let cfg = endpoint_config_tuned(16, |c| c.max_transmits_per_turn = 2);
    let mut net = Net::new(t0);
    let s1 = addr("10.0.0.2:4433");
    let s2 = addr("10.0.0.3:4433");
    net.add(s1, server_endpoint(endpoint_config(17), t0));
    net.add(s2, server_endpoint(endpoint_config(18), t0));
    let c = net.add(addr(CLIENT), client_endpoint(cfg, t0));
    let h1 = net.nodes[c].ep.connect(t0, client_config("a"), s1).unwrap();
    let h2 = net.nodes[c].ep.connect(t0, client_config("b"), s2).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[2].connected.len() == 2));
    net.run_until(Duration::from_millis(500), |_| false);
    // Both have plenty to send.
    for h in [h1, h2] {
        let conn = net.nodes[c].ep.connection(h).unwrap();
        let id = conn.open_stream(Dir::Uni).unwrap();
        conn.write(id, &[0u8; 60_000]).unwrap();
    }
    let now = net.now;
    let mut buf = [0u8; 2048];
    let mut dests = Vec::new();
    while let Some(t) = net.nodes[c].ep.poll_transmit(now, &mut buf) {
        dests.push(t.destination);
    }
    assert!(dests.len() >= 8, "{}", dests.len());
    // No run of more than 2 datagrams to one destination while the other had some.
    let last1 = dests.iter().rposition(|d| *d == s1).unwrap();
    let last2 = dests.iter().rposition(|d| *d == s2).unwrap();
    let both_until = last1.min(last2);
    for w in dests[..=both_until].windows(3) {
        assert!(!(w[0] == w[1] && w[1] == w[2]), "{dests:?}");
    }
}

#[test]
fn connection_ids_are_issued_rotated_and_retired() {
    let (mut net, h) = connected_pair(7, "alice");
    // Let the NEW_CONNECTION_ID frames arrive (the client allows 4 CIDs: 3 spares).
    net.run_until(Duration::from_millis(200), |_| false);
    let first = net.nodes[1].ep.connection(h).unwrap().remote_cid();

    for round in 0..6 {
        // The client moves to a spare CID and retires the old one (RFC 9000 §9.5).
        let c = net.nodes[1].ep.connection(h).unwrap();
        assert!(
            c.rotate_remote_cid(),
            "round {round}: the server keeps spares coming"
        );
        let now_cid = c.remote_cid();
        let id = c.open_stream(Dir::Bi).unwrap();
        c.write(id, b"via a new connection ID").unwrap();
        c.finish(id).unwrap();
        let before: usize = net.nodes[0].received.iter().map(|(_, d)| d.len()).sum();
        assert!(net.run_until(Duration::from_secs(5), |n| {
            n.nodes[0]
                .received
                .iter()
                .map(|(_, d)| d.len())
                .sum::<usize>()
                == before + 23
        }));
        assert_ne!(now_cid, first);
        net.run_until(Duration::from_millis(200), |_| false);
    }
    // The retired CIDs no longer route: a short-header packet to the first one is
    // unknown to the server (it answers with a stateless reset, not with data).
    let st = net.nodes[0].ep.stats();
    let mut probe = vec![0x40u8; 60];
    probe[1..1 + first.len()].copy_from_slice(first.as_ref());
    net.nodes[0]
        .ep
        .handle_datagram(net.now, addr("10.0.0.2:5000"), &mut probe);
    assert_eq!(net.nodes[0].ep.stats().resets_sent, st.resets_sent + 1);
    assert_eq!(net.nodes[0].ep.len(), 1);
}
