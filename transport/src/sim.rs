//! A deterministic simulated network for driving a client [`Endpoint`] and a server
//! [`Endpoint`] through loss, burst loss, delay, jitter, reordering, duplication,
//! corruption, an MTU, and a rate limit with a bounded queue — in virtual time.
//!
//! Every datagram goes through the endpoints, so connection-ID routing, Retry,
//! stateless reset, migration and the endpoints' timer wheels all run under the
//! impairments. [`Net`] is the network: two endpoints, two [`Link`]s and a virtual
//! clock. [`Sim`] is a thin layer over it for the common case of one client
//! connection and one server connection played by two [`App`]s.
//!
//! The clock jumps straight to the next deadline (a timer, a delivery, an
//! application wake-up), so 24 hours of keep-alives take milliseconds. The same seed
//! always produces the same run. Nothing here is used by the protocol itself: it is
//! the harness for tests and benchmarks, and a tool for applications that want to
//! test themselves against quill under bad networks. It uses the sans-IO core only.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::random::SeededRandom;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::proto::endpoint::{ConnectionHandle, Endpoint, EndpointConfig};
use crate::proto::{
    ClientConfig, ConfigError, Connection, EcnCodepoint, Event, LoginRequest, ServerConfig,
};

/// Impairments of one direction of a simulated path.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `0..jitter` (reorders packets when larger than their spacing).
    pub jitter: Duration,
    /// Independent loss probability per datagram.
    pub loss: f64,
    /// Gilbert-Elliott burst loss: (probability of entering the bad state per datagram,
    /// probability of leaving it). In the bad state every datagram is lost.
    pub burst_loss: Option<(f64, f64)>,
    /// Probability that a datagram is held back by `reorder_delay` (reordering).
    pub reorder: f64,
    /// Extra delay for reordered datagrams.
    pub reorder_delay: Duration,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that one byte of a datagram is flipped.
    pub corrupt: f64,
    /// Datagrams larger than this are dropped.
    pub mtu: usize,
    /// Bottleneck rate in bits per second (`None`: unlimited).
    pub bandwidth_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops (tail drop).
    pub queue_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            burst_loss: None,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            duplicate: 0.0,
            corrupt: 0.0,
            mtu: 1500,
            bandwidth_bps: None,
            queue_bytes: 256 * 1024,
        }
    }
}

/// Counters of what a link did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered to the link.
    pub sent: u64,
    /// Datagrams delivered (duplicates included).
    pub delivered: u64,
    /// Datagrams lost (random, burst, MTU, queue overflow, black hole).
    pub dropped: u64,
    /// Datagrams corrupted.
    pub corrupted: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
}

/// A datagram on a link. Ordered by arrival time, then by sending order (`seq` is
/// unique, so `data` never decides).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    ecn: Option<EcnCodepoint>,
}

/// What a [`Link`] does with the ECN codepoint of the datagrams it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EcnPath {
    /// Delivers the codepoint the sender set.
    #[default]
    Pass,
    /// Clears it to Not-ECT (a path that "bleaches" ECN, RFC 9000 §13.4.2).
    Bleach,
    /// Marks every ECT datagram CE, as a congested ECN-capable router would.
    MarkCe,
}

/// One direction of a simulated path.
pub struct Link {
    /// The impairments (may be changed between steps).
    pub config: LinkConfig,
    /// While true, every datagram is dropped.
    pub black_hole: bool,
    /// What happens to the datagrams' ECN codepoints (may be changed between steps).
    pub ecn: EcnPath,
    rng: SmallRng,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    busy_until: Option<Instant>,
    in_bad_state: bool,
    stats: LinkStats,
}

impl Link {
    /// A link with `config`, seeded.
    pub fn new(config: LinkConfig, seed: u64) -> Link {
        Link {
            config,
            black_hole: false,
            ecn: EcnPath::Pass,
            rng: SmallRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            busy_until: None,
            in_bad_state: false,
            stats: LinkStats::default(),
        }
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Offers a datagram to the link at `now`.
    pub fn send(&mut self, now: Instant, data: &[u8]) {
        self.send_ecn(now, data, None);
    }

    /// Offers a datagram sent with the ECN codepoint `ecn` to the link at `now`.
    pub fn send_ecn(&mut self, now: Instant, data: &[u8], ecn: Option<EcnCodepoint>) {
        let ecn = match (self.ecn, ecn) {
            (EcnPath::Pass, e) => e,
            (EcnPath::Bleach, _) => None,
            (EcnPath::MarkCe, Some(_)) => Some(EcnCodepoint::Ce),
            (EcnPath::MarkCe, None) => None,
        };
        self.stats.sent += 1;
        let c = &self.config;
        if self.black_hole || data.len() > c.mtu {
            self.stats.dropped += 1;
            return;
        }
        if let Some((enter, exit)) = c.burst_loss {
            if self.in_bad_state {
                if self.rng.random::<f64>() < exit {
                    self.in_bad_state = false;
                }
            } else if self.rng.random::<f64>() < enter {
                self.in_bad_state = true;
            }
            if self.in_bad_state {
                self.stats.dropped += 1;
                return;
            }
        }
        if c.loss > 0.0 && self.rng.random::<f64>() < c.loss {
            self.stats.dropped += 1;
            return;
        }
        // Serialisation at the bottleneck, with a bounded queue.
        let mut depart = now;
        if let Some(bps) = c.bandwidth_bps {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let queued = start.saturating_duration_since(now);
            let queue_limit = Duration::from_secs_f64(c.queue_bytes as f64 * 8.0 / bps as f64);
            if queued > queue_limit {
                self.stats.dropped += 1;
                return;
            }
            depart = start + Duration::from_secs_f64(data.len() as f64 * 8.0 / bps as f64);
            self.busy_until = Some(depart);
        }
        let mut at = depart + c.delay;
        if !c.jitter.is_zero() {
            at += c.jitter.mul_f64(self.rng.random::<f64>());
        }
        if c.reorder > 0.0 && self.rng.random::<f64>() < c.reorder {
            at += c.reorder_delay;
        }
        let mut copy = data.to_vec();
        if c.corrupt > 0.0 && self.rng.random::<f64>() < c.corrupt && !copy.is_empty() {
            let i = self.rng.random_range(0..copy.len());
            copy[i] ^= 1 << self.rng.random_range(0..8);
            self.stats.corrupted += 1;
        }
        if c.duplicate > 0.0 && self.rng.random::<f64>() < c.duplicate {
            self.stats.duplicated += 1;
            self.push(at + Duration::from_micros(100), copy.clone(), ecn);
        }
        self.push(at, copy, ecn);
    }

    fn push(&mut self, at: Instant, data: Vec<u8>, ecn: Option<EcnCodepoint>) {
        self.seq += 1;
        self.queue.push(Reverse(InFlight {
            at,
            seq: self.seq,
            data,
            ecn,
        }));
    }

    /// When the next datagram arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|r| r.0.at)
    }

    /// Takes the next datagram due by `now`.
    pub fn deliver(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.deliver_ecn(now).map(|(d, _)| d)
    }

    /// Takes the next datagram due by `now`, with the ECN codepoint it arrives with.
    pub fn deliver_ecn(&mut self, now: Instant) -> Option<(Vec<u8>, Option<EcnCodepoint>)> {
        if self.queue.peek()?.0.at > now {
            return None;
        }
        self.stats.delivered += 1;
        self.queue.pop().map(|r| (r.0.data, r.0.ecn))
    }

    /// Datagrams currently in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

/// The client's address as the server sees it at the start of a simulation.
pub const CLIENT_ADDR: &str = "10.0.0.1:40000";
/// The server's address in a simulation.
pub const SERVER_ADDR: &str = "10.0.0.2:4433";

/// A deterministic [`EndpointConfig`] for simulations: secret and randomness derived
/// from `seed` (so neither is secret: never use it outside a simulation), the default
/// limits otherwise.
pub fn endpoint_config(seed: u64) -> EndpointConfig {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(b"sim-endp");
    EndpointConfig {
        secret: s,
        rng: Arc::new(SeededRandom::new(s)),
        ..EndpointConfig::default()
    }
}

/// Counters of what a [`Net`] did besides its links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams an endpoint addressed to somewhere other than its peer's current
    /// address (e.g. the client's address before a NAT rebinding); they are dropped.
    pub misaddressed: u64,
    /// Client datagrams to [`Net::preferred_addr`] (carried to the server like the rest).
    pub to_preferred: u64,
}

/// A client endpoint and a server endpoint joined by two [`Link`]s, in virtual time.
///
/// One turn is [`Net::transmit`] (after the application acted on the endpoints'
/// events), then [`Net::advance`] to [`Net::next_event`] (or to an application
/// wake-up, whichever is sooner): datagrams due are delivered and the endpoints'
/// timers that passed fire. The server sessions that delivered datagrams created are
/// listed in [`Net::accepted`].
pub struct Net {
    /// Virtual now.
    pub now: Instant,
    /// Virtual start.
    pub start: Instant,
    /// The client endpoint (makes connections).
    pub client: Endpoint,
    /// The server endpoint (accepts them).
    pub server: Endpoint,
    /// Client to server.
    pub c2s: Link,
    /// Server to client.
    pub s2c: Link,
    /// Where the server sees the client's datagrams come from (change it to rebind:
    /// datagrams the server still sends to the old address are lost, as behind a NAT
    /// whose binding changed).
    pub client_addr: SocketAddr,
    /// The server's address.
    pub server_addr: SocketAddr,
    /// A second address the server receives on (its preferred address, RFC 9000 §9.6),
    /// if any: client datagrams to it reach the server over the same link.
    pub preferred_addr: Option<SocketAddr>,
    /// Server sessions created by delivered datagrams, oldest first (drain it).
    pub accepted: Vec<ConnectionHandle>,
    stats: NetStats,
    buf: Vec<u8>,
}

impl Net {
    /// A network whose server endpoint uses `endpoint` and `server`; the client
    /// endpoint uses [`endpoint_config`]. Links are seeded from `seed`.
    pub fn new(
        seed: u64,
        endpoint: EndpointConfig,
        server: ServerConfig,
        c2s: LinkConfig,
        s2c: LinkConfig,
    ) -> Result<Net, ConfigError> {
        let start = Instant::now();
        Ok(Net {
            now: start,
            start,
            client: Endpoint::new(endpoint_config(seed ^ 0xc11e), None, start)?,
            server: Endpoint::new(endpoint, Some(server), start)?,
            c2s: Link::new(c2s, seed ^ 0x5151),
            s2c: Link::new(s2c, seed ^ 0xa5a5),
            client_addr: CLIENT_ADDR.parse().expect("literal"),
            server_addr: SERVER_ADDR.parse().expect("literal"),
            preferred_addr: None,
            accepted: Vec::new(),
            stats: NetStats::default(),
            buf: vec![0u8; 65536],
        })
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// What the network did besides its links.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Starts a client connection to the server.
    pub fn connect(&mut self, config: ClientConfig) -> Result<ConnectionHandle, ConfigError> {
        self.client.connect(self.now, config, self.server_addr)
    }

    /// Replaces the server endpoint with a new one at the same address, as a server
    /// process that restarted: every session is gone; datagrams in flight arrive at
    /// the new endpoint.
    pub fn restart_server(
        &mut self,
        endpoint: EndpointConfig,
        server: ServerConfig,
    ) -> Result<(), ConfigError> {
        self.server = Endpoint::new(endpoint, Some(server), self.now)?;
        self.accepted.clear();
        Ok(())
    }

    /// Offers everything both endpoints have to send to the links.
    pub fn transmit(&mut self) {
        let now = self.now;
        let client = (
            &mut self.client,
            &mut self.c2s,
            self.server_addr,
            self.preferred_addr,
        );
        let server = (&mut self.server, &mut self.s2c, self.client_addr, None);
        for (endpoint, link, peer, also) in [client, server] {
            let mut n = 0;
            while let Some(t) = endpoint.poll_transmit(now, &mut self.buf) {
                if t.destination == peer {
                    link.send_ecn(now, &self.buf[..t.size], t.ecn);
                } else if Some(t.destination) == also {
                    self.stats.to_preferred += 1;
                    link.send_ecn(now, &self.buf[..t.size], t.ecn);
                } else {
                    self.stats.misaddressed += 1;
                }
                n += 1;
                assert!(n < 10_000_000, "an endpoint never stopped transmitting");
            }
        }
    }

    /// When something next happens on the network: a delivery or an endpoint timer.
    pub fn next_event(&self) -> Option<Instant> {
        [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            self.c2s.next_delivery(),
            self.s2c.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves virtual time to `to` (never backwards), delivers the datagrams due and
    /// fires the endpoints' timers that passed.
    pub fn advance(&mut self, to: Instant) {
        self.now = self.now.max(to);
        let now = self.now;
        while let Some((mut d, ecn)) = self.c2s.deliver_ecn(now) {
            let accepted = self
                .server
                .handle_datagram_ecn(now, self.client_addr, ecn, &mut d);
            if let Some(h) = accepted {
                self.accepted.push(h);
            }
        }
        while let Some((mut d, ecn)) = self.s2c.deliver_ecn(now) {
            self.client
                .handle_datagram_ecn(now, self.server_addr, ecn, &mut d);
        }
        for ep in [&mut self.client, &mut self.server] {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
    }
}

/// Application behaviour on one side of a [`Sim`].
pub trait App {
    /// An event from the connection.
    fn on_event(&mut self, now: Instant, conn: &mut Connection, event: Event);
    /// Called every step after events: write more data, give verdicts, ...
    fn poll(&mut self, _now: Instant, _conn: &mut Connection) {}
    /// When [`App::poll`] next has something to do (for delayed work).
    fn next_wakeup(&self) -> Option<Instant> {
        None
    }
}

/// One client connection and the server connection it creates, played by two
/// [`App`]s over a [`Net`].
pub struct Sim<C: App, S: App> {
    /// The network and its endpoints.
    pub net: Net,
    /// Client application.
    pub client_app: C,
    /// Server application.
    pub server_app: S,
    client: ConnectionHandle,
    server: Option<ConnectionHandle>,
}

impl<C: App, S: App> Sim<C, S> {
    /// Builds a simulation with a default server endpoint ([`endpoint_config`]); the
    /// client's first flight is ready to go.
    ///
    /// # Panics
    ///
    /// If a configuration is invalid.
    pub fn new(
        seed: u64,
        client_config: ClientConfig,
        server_config: ServerConfig,
        c2s: LinkConfig,
        s2c: LinkConfig,
        client_app: C,
        server_app: S,
    ) -> Self {
        let net = Net::new(seed, endpoint_config(seed), server_config, c2s, s2c)
            .expect("valid server configuration");
        Sim::on(net, client_config, client_app, server_app)
    }

    /// [`Sim::new`] over default links both ways.
    ///
    /// # Panics
    ///
    /// If a configuration is invalid.
    pub fn over_default_links(
        seed: u64,
        client_config: ClientConfig,
        server_config: ServerConfig,
        client_app: C,
        server_app: S,
    ) -> Self {
        Sim::new(
            seed,
            client_config,
            server_config,
            LinkConfig::default(),
            LinkConfig::default(),
            client_app,
            server_app,
        )
    }

    /// Builds a simulation on `net` (for a server endpoint configured otherwise);
    /// the client connects at once.
    ///
    /// # Panics
    ///
    /// If the client configuration is invalid.
    pub fn on(mut net: Net, client_config: ClientConfig, client_app: C, server_app: S) -> Self {
        let client = net
            .connect(client_config)
            .expect("valid client configuration");
        Sim {
            net,
            client_app,
            server_app,
            client,
            server: None,
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.net.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// The client connection.
    ///
    /// # Panics
    ///
    /// Once the connection has ended and its last event was handled (the endpoint
    /// freed it).
    pub fn client(&mut self) -> &mut Connection {
        self.net
            .client
            .connection(self.client)
            .expect("the client connection ended and was freed")
    }

    /// The client connection's handle in [`Net::client`].
    pub fn client_handle(&self) -> ConnectionHandle {
        self.client
    }

    /// The server connection, once the client's first Initial created it (and until
    /// it ended and was freed).
    pub fn server(&mut self) -> Option<&mut Connection> {
        self.net.server.connection(self.server?)
    }

    /// The server connection's handle in [`Net::server`], once there is one.
    pub fn server_handle(&self) -> Option<ConnectionHandle> {
        self.server
    }

    /// [`Net::restart_server`], forgetting the server connection.
    pub fn restart_server(
        &mut self,
        endpoint: EndpointConfig,
        server: ServerConfig,
    ) -> Result<(), ConfigError> {
        self.server = None;
        self.net.restart_server(endpoint, server)
    }

    /// Hands the endpoints' events to the applications and lets them act. Events of
    /// other sessions (there are none unless a test makes them) are dropped.
    fn pump(&mut self) {
        let now = self.net.now;
        if self.server.is_none() {
            self.server = self.net.accepted.first().copied();
        }
        self.net.accepted.clear();
        while let Some((h, ev)) = self.net.client.poll_event() {
            if h == self.client {
                if let Some(conn) = self.net.client.connection(h) {
                    self.client_app.on_event(now, conn, ev);
                }
            }
        }
        if let Some(conn) = self.net.client.connection(self.client) {
            self.client_app.poll(now, conn);
        }
        while let Some((h, ev)) = self.net.server.poll_event() {
            if Some(h) == self.server {
                if let Some(conn) = self.net.server.connection(h) {
                    self.server_app.on_event(now, conn, ev);
                }
            }
        }
        if let Some(conn) = self.server.and_then(|h| self.net.server.connection(h)) {
            self.server_app.poll(now, conn);
        }
    }

    /// One turn: applications act, both endpoints transmit, virtual time jumps to the
    /// next event, datagrams are delivered and timers fire. Returns false when
    /// nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.pump();
        self.net.transmit();
        let next = [
            self.net.next_event(),
            self.client_app.next_wakeup(),
            self.server_app.next_wakeup(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return false;
        };
        self.net.advance(next);
        true
    }

    /// Steps until `done` holds or `limit` of virtual time has passed (or nothing is
    /// left to happen). Returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = self.net.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.net.now > deadline || !self.step() {
                return done(self);
            }
        }
    }
}

/// A login policy for [`ServerApp`]: `Ok(account)` accepts, `Err(reason)` refuses.
pub type LoginPolicy = Box<dyn FnMut(&LoginRequest) -> Result<String, String>>;

/// A server application for simulations: decides logins (optionally after a virtual
/// delay, as a worker pool would), echoes bidirectional streams, and sinks
/// unidirectional ones while hashing what arrived.
pub struct ServerApp {
    policy: LoginPolicy,
    /// Virtual time a login verdict takes.
    pub verdict_delay: Duration,
    /// How long a refusal is held back after its verdict (`refuse_login_at`).
    pub refusal_hold: Duration,
    pending: Option<(Instant, Result<String, String>)>,
    /// Every event seen, in order (stream events excluded).
    pub events: Vec<String>,
    /// Received bytes per stream, hashed.
    pub sink: Sink,
    /// Echo bidirectional streams back.
    pub echo: bool,
    echo_buf: Vec<(crate::proto::StreamId, Vec<u8>, bool)>,
}

impl ServerApp {
    /// A server app with `policy`.
    pub fn new(policy: LoginPolicy) -> Self {
        ServerApp {
            policy,
            verdict_delay: Duration::ZERO,
            refusal_hold: Duration::ZERO,
            pending: None,
            events: Vec::new(),
            sink: Sink::default(),
            echo: false,
            echo_buf: Vec::new(),
        }
    }

    /// A server app that accepts every login as the user name.
    pub fn accept_all() -> Self {
        Self::new(Box::new(|r: &LoginRequest| Ok(r.user.clone())))
    }
}

impl App for ServerApp {
    fn on_event(&mut self, now: Instant, conn: &mut Connection, event: Event) {
        match event {
            Event::LoginRequested(req) => {
                self.events.push(format!("login requested: {}", req.user));
                let verdict = (self.policy)(&req);
                self.pending = Some((now + self.verdict_delay, verdict));
            }
            Event::Stream(crate::proto::StreamEvent::Readable(id)) => {
                let echo = self.echo && id.dir() == crate::proto::Dir::Bi;
                self.sink
                    .read(conn, id, if echo { Some(&mut self.echo_buf) } else { None });
            }
            Event::Stream(crate::proto::StreamEvent::Opened { .. }) => {
                while let Some(id) = conn.accept_stream(crate::proto::Dir::Bi) {
                    self.sink.read(
                        conn,
                        id,
                        if self.echo {
                            Some(&mut self.echo_buf)
                        } else {
                            None
                        },
                    );
                }
                while let Some(id) = conn.accept_stream(crate::proto::Dir::Uni) {
                    self.sink.read(conn, id, None);
                }
            }
            Event::Stream(_) => {}
            other => self.events.push(format!("{other:?}")),
        }
    }

    fn poll(&mut self, now: Instant, conn: &mut Connection) {
        if let Some((at, _)) = &self.pending {
            if *at <= now {
                let (_, verdict) = self.pending.take().expect("checked");
                match verdict {
                    Ok(account) => conn.accept_login(now, &account, "welcome"),
                    Err(reason) => conn.refuse_login_at(now, &reason, now + self.refusal_hold),
                }
            }
        }
        // Echo what is buffered, as far as flow control allows.
        self.echo_buf.retain_mut(|(id, data, fin)| {
            if !data.is_empty() {
                match conn.write(*id, data) {
                    Ok(n) => {
                        data.drain(..n);
                    }
                    // Out of send buffer or flow-control credit: try again next turn.
                    Err(crate::proto::WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            if data.is_empty() && *fin {
                let _ = conn.finish(*id);
                return false;
            }
            true
        });
    }

    fn next_wakeup(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(t, _)| *t)
    }
}

/// Reads streams to the end, keeping a SHA-256 per stream.
#[derive(Default)]
pub struct Sink {
    streams: std::collections::HashMap<u64, (ring::digest::Context, u64)>,
    /// Finished streams: (stream id, bytes, SHA-256).
    pub finished: Vec<(u64, u64, [u8; 32])>,
    /// Total bytes read.
    pub bytes: u64,
}

impl Sink {
    /// Reads everything available on `id`; optionally copies it for echoing.
    pub fn read(
        &mut self,
        conn: &mut Connection,
        id: crate::proto::StreamId,
        mut echo: Option<&mut Vec<(crate::proto::StreamId, Vec<u8>, bool)>>,
    ) {
        let mut buf = [0u8; 16384];
        loop {
            match conn.read(id, &mut buf) {
                Ok(crate::proto::ReadOutcome::Data(n)) => {
                    let e = self
                        .streams
                        .entry(id.0)
                        .or_insert_with(|| (ring::digest::Context::new(&ring::digest::SHA256), 0));
                    e.0.update(&buf[..n]);
                    e.1 += n as u64;
                    self.bytes += n as u64;
                    if let Some(echo) = echo.as_deref_mut() {
                        match echo.iter_mut().find(|(s, _, _)| *s == id) {
                            Some((_, d, _)) => d.extend_from_slice(&buf[..n]),
                            None => echo.push((id, buf[..n].to_vec(), false)),
                        }
                    }
                }
                Ok(crate::proto::ReadOutcome::Finished) => {
                    let (ctx, n) = self
                        .streams
                        .remove(&id.0)
                        .unwrap_or_else(|| (ring::digest::Context::new(&ring::digest::SHA256), 0));
                    let mut h = [0u8; 32];
                    h.copy_from_slice(ctx.finish().as_ref());
                    self.finished.push((id.0, n, h));
                    if let Some(echo) = echo.as_deref_mut() {
                        match echo.iter_mut().find(|(s, _, _)| *s == id) {
                            Some((_, _, fin)) => *fin = true,
                            None => echo.push((id, Vec::new(), true)),
                        }
                    }
                    return;
                }
                Ok(crate::proto::ReadOutcome::Blocked) | Err(_) => return,
            }
        }
    }
}

/// Deterministic pseudo-random bytes for transfers (so senders need not hold them).
pub struct Pattern {
    state: u64,
}

impl Pattern {
    /// A pattern from `seed`.
    pub fn new(seed: u64) -> Self {
        Pattern { state: seed | 1 }
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            // xorshift64*
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A client application for simulations: after login, sends `total` bytes of a
/// [`Pattern`] on each of `streams` unidirectional streams (or one bidirectional
/// stream when `echo` is set, reading the echo back), hashing what it sent.
pub struct ClientApp {
    /// Bytes to send per stream.
    pub total: u64,
    /// Streams to send on.
    pub streams: usize,
    /// Use bidirectional streams and collect the echo.
    pub echo: bool,
    /// Every event seen, in order (stream events excluded).
    pub events: Vec<String>,
    /// Whether the login succeeded.
    pub connected: bool,
    /// Why the connection ended, if it did.
    pub lost: Option<crate::proto::ConnectionError>,
    /// SHA-256 of what was sent, per stream id, once finished.
    pub sent: Vec<(u64, u64, [u8; 32])>,
    /// What came back on echoed streams.
    pub sink: Sink,
    /// Start writing before the handshake completes (QUIC v1 0-RTT, where the
    /// connection lets streams open early).
    pub early: bool,
    active: Vec<Outgoing>,
    opened: usize,
}

impl ClientApp {
    /// Sends `total` bytes on each of `streams` streams after login.
    pub fn new(total: u64, streams: usize) -> Self {
        ClientApp {
            total,
            streams,
            echo: false,
            events: Vec::new(),
            connected: false,
            lost: None,
            sent: Vec::new(),
            sink: Sink::default(),
            early: false,
            active: Vec::new(),
            opened: 0,
        }
    }

    /// Whether every stream has been fully written and finished.
    pub fn done_sending(&self) -> bool {
        self.opened == self.streams && self.active.is_empty()
    }
}

impl App for ClientApp {
    fn on_event(&mut self, _now: Instant, conn: &mut Connection, event: Event) {
        match event {
            // QUIC v1 has no login: its connections are up without an account.
            Event::Connected { .. } | Event::HandshakeConfirmed { .. } => {
                self.connected = true;
                self.events.push("connected".into());
            }
            Event::ConnectionLost(e) => {
                self.events.push(format!("lost: {e}"));
                self.lost = Some(e);
            }
            Event::Stream(crate::proto::StreamEvent::Readable(id)) => {
                self.sink.read(conn, id, None);
            }
            Event::Stream(_) => {}
            other => self.events.push(format!("{other:?}")),
        }
    }

    fn poll(&mut self, _now: Instant, conn: &mut Connection) {
        if !(self.connected || self.early) || self.lost.is_some() {
            return;
        }
        let dir = if self.echo {
            crate::proto::Dir::Bi
        } else {
            crate::proto::Dir::Uni
        };
        while self.opened < self.streams {
            let Some(id) = conn.open_stream(dir) else {
                break;
            };
            self.opened += 1;
            self.active.push(Outgoing {
                id,
                generated: 0,
                pattern: Pattern::new(id.0 + 1),
                hash: ring::digest::Context::new(&ring::digest::SHA256),
                pending: Vec::new(),
                pos: 0,
            });
        }
        let total = self.total;
        let sent = &mut self.sent;
        self.active.retain_mut(|o| {
            loop {
                if o.pos == o.pending.len() {
                    if o.generated == total {
                        break;
                    }
                    let n = ((total - o.generated) as usize).min(16384);
                    o.pending.resize(n, 0);
                    o.pattern.fill(&mut o.pending);
                    o.generated += n as u64;
                    o.pos = 0;
                }
                match conn.write(o.id, &o.pending[o.pos..]) {
                    Ok(0) | Err(_) => return true,
                    Ok(k) => {
                        o.hash.update(&o.pending[o.pos..o.pos + k]);
                        o.pos += k;
                    }
                }
            }
            if conn.finish(o.id).is_ok() {
                let mut h = [0u8; 32];
                h.copy_from_slice(o.hash.clone().finish().as_ref());
                sent.push((o.id.0, total, h));
                return false;
            }
            true
        });
    }
}

/// One stream a [`ClientApp`] is still writing.
struct Outgoing {
    id: crate::proto::StreamId,
    generated: u64,
    pattern: Pattern,
    hash: ring::digest::Context,
    pending: Vec<u8>,
    pos: usize,
}
