//! The sans-IO endpoint: many [`Connection`]s behind one UDP socket.
//!
//! The endpoint demultiplexes datagrams by Destination Connection ID into a slab of
//! sessions, answers what needs no session statelessly (Version Negotiation, Retry,
//! stateless reset), enforces admission limits, and drives every session's timer from
//! one [`TimerWheel`]. Like the rest of `proto` it never touches a socket, a thread or
//! a clock: `now` comes in with every call.
//!
//! # Calling order
//!
//! The driver, once per turn, with the time it read once:
//!
//! 1. [`Endpoint::handle_datagram`] for every datagram received (it returns the handle
//!    of a new server session, if the datagram created one).
//! 2. [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] has passed. It
//!    expires the wheel: only sessions whose deadline passed are touched.
//! 3. [`Endpoint::poll_event`] until `None`; act through [`Endpoint::connection`]
//!    (accept a login, read, write). Touching a connection through
//!    [`Endpoint::connection`] marks it for re-arming; [`Endpoint::touch`] does it at
//!    once. Drained sessions are freed once their last event was polled, so drain the
//!    events.
//! 4. [`Endpoint::poll_transmit`] until `None`: stateless answers first, then sessions
//!    round-robin, at most [`EndpointConfig::max_transmits_per_turn`] datagrams from
//!    one session before the next gets a turn.
//! 5. Sleep until [`Endpoint::poll_timeout`].
//!
//! # Cost model
//!
//! Nothing here scans all sessions except [`Endpoint::close_all`]. The endpoint keeps
//! a list of sessions that may have something to send and one of sessions that may
//! have events; a session joins them when it is touched (datagram, timer, app). Each
//! session's deadline is mirrored in the wheel, keyed by (slab key, generation), and
//! re-armed only when [`Connection::poll_timeout`] changed. The generation is unique
//! per session, so an entry left by a freed session never fires on the session that
//! reuses its slot (the entry is also cancelled when the session is freed).

mod address_limits;
mod cid_layout;
mod half_open;
mod stateless;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::random::{OsRandom, Random};
use slab::Slab;
use zeroize::Zeroizing;

pub use self::address_limits::AddressLimits;
use self::address_limits::Refusal;
pub use self::cid_layout::{parse_server_id, CidLayout, DEFAULT_SERVER_ID_LEN};
use self::half_open::{Admission, HalfOpen, Ticket};
use self::stateless::{Keys, TokenError, MAX_RESET_LEN, MIN_RESET_LEN};
use super::config::{ClientConfig, ConfigError, ServerConfig, MIN_UDP_PAYLOAD};
use super::connection::{Connection, EcnCodepoint, Event, RecvHeader, ServerCids, Transmit};
use super::error::Unreachable;
use super::timer_wheel::TimerWheel;
use crate::wire::{parse_header, parse_invariant, ConnectionId, DecodeError, LongType, PacketKind};
use crate::wire::{QUIC_V1, QUIC_V2, QUILL_VERSION};

/// The label under which a server derives [`EndpointConfig::secret`] from its host key,
/// so that a restarted server recognises (and resets) its predecessor's connections.
pub const RESET_SECRET_LABEL: &[u8] = b"quill stateless reset secret v1";

/// RFC 9000 §7.2: "This Destination Connection ID MUST be at least 8 bytes in length."
const MIN_INITIAL_DCID_LEN: usize = 8;

/// When a server asks clients to prove their address with a Retry (RFC 9000 §8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Every new connection must echo a Retry token.
    Always,
    /// Send Retry while at least `half_open_threshold` handshakes are in progress
    /// (`Auto { half_open_threshold: 0 }` behaves like `Always`).
    Auto {
        /// Half-open handshakes from which on new clients are asked to retry.
        half_open_threshold: usize,
    },
    /// Never send Retry (tokens that arrive anyway are still checked).
    Never,
}

/// Endpoint-wide limits and secrets.
#[derive(Clone)]
pub struct EndpointConfig {
    /// Most sessions at once (client and server); further Initials are dropped.
    pub max_connections: usize,
    /// Most server handshakes in progress (not yet logged in and not closed) at once.
    /// When reached, a new client evicts the oldest half-open session of the source
    /// address with the most of them, if that address has more than the newcomer's;
    /// otherwise it is refused. Logged-in sessions are never evicted. 0: no limit.
    pub max_half_open: usize,
    /// Most server handshakes in progress from one source IP address; 0 disables the
    /// limit. Further Initials from it are dropped until one completes or ends.
    pub max_half_open_per_address: usize,
    /// New server sessions per second per source IP address (burst of the same
    /// size); 0 disables the limit.
    pub per_source_handshakes_per_sec: u32,
    /// Source addresses the rate limiter remembers; the oldest is evicted when full.
    pub rate_limit_sources: usize,
    /// The per-address limits (`max_half_open_per_address`,
    /// `per_source_handshakes_per_sec`) shared with other endpoints, such as the other
    /// loops of one server (`driver::Workers` sets it): their settings apply to the
    /// address's sessions on all those endpoints together (this endpoint's own share
    /// also stays within `max_half_open_per_address`). `None`: this endpoint's own,
    /// from the three settings above.
    pub address_limits: Option<Arc<AddressLimits>>,
    /// When to send Retry.
    pub retry: RetryPolicy,
    /// Length of the connection IDs this endpoint issues, 8..=20 (with
    /// [`EndpointConfig::cid_layout`], the layout's length instead).
    pub cid_len: usize,
    /// The QUIC-LB layout of the connection IDs this endpoint issues (server ID and
    /// worker index inside); `None`: random IDs of `cid_len` bytes.
    pub cid_layout: Option<CidLayout>,
    /// Key material for stateless reset tokens. Keep it across restarts so that a
    /// restarted server can reset its old connections at once, and share it across a
    /// fleet so that any server resets another's: `quill server` reads it from
    /// `--reset-key`, or derives it from its host key
    /// ([`HostKeyPair::derive_secret`](quill_crypto::hostkey::HostKeyPair::derive_secret)
    /// with [`RESET_SECRET_LABEL`]).
    pub secret: [u8; 32],
    /// Key material for Retry tokens. Servers of a fleet given the same one (and the
    /// same [`EndpointConfig::unix_time_at_start`] clock source) accept each other's
    /// tokens, and so does a restarted server: `quill server --retry-key`. `None`: a
    /// random one per endpoint, so tokens die with it.
    pub retry_secret: Option<Zeroizing<[u8; 32]>>,
    /// The wall-clock time (since the Unix epoch) at the `now` given to
    /// [`Endpoint::new`]. Retry-token expiries are Unix milliseconds: this plus the
    /// monotonic time since. `None` counts from zero at creation (the sans-IO core
    /// never reads a wall clock), which is only right for one endpoint alone.
    pub unix_time_at_start: Option<Duration>,
    /// How long a Retry token stays valid.
    pub retry_token_lifetime: Duration,
    /// Datagrams one session may send per turn of the round-robin in
    /// [`Endpoint::poll_transmit`].
    pub max_transmits_per_turn: usize,
    /// Stateless answers (Retry, Version Negotiation, reset) queued at most; more are
    /// dropped and counted.
    pub max_stateless_queue: usize,
    /// Randomness for connection IDs, tokens and resets.
    pub rng: Arc<dyn Random>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("max_connections", &self.max_connections)
            .field("max_half_open", &self.max_half_open)
            .field("max_half_open_per_address", &self.max_half_open_per_address)
            .field(
                "per_source_handshakes_per_sec",
                &self.per_source_handshakes_per_sec,
            )
            .field("rate_limit_sources", &self.rate_limit_sources)
            .field("retry", &self.retry)
            .field("cid_len", &self.cid_len)
            .field("cid_layout", &self.cid_layout)
            .field("secret", &"[redacted]")
            .field(
                "retry_secret",
                &self.retry_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("unix_time_at_start", &self.unix_time_at_start)
            .field("retry_token_lifetime", &self.retry_token_lifetime)
            .field("max_transmits_per_turn", &self.max_transmits_per_turn)
            .field("max_stateless_queue", &self.max_stateless_queue)
            .finish_non_exhaustive()
    }
}

impl Default for EndpointConfig {
    /// Sensible server defaults with a fresh random secret.
    ///
    /// # Panics
    ///
    /// If the operating system's random generator fails.
    fn default() -> Self {
        let rng: Arc<dyn Random> = Arc::new(OsRandom::new());
        let mut secret = [0u8; 32];
        rng.fill(&mut secret)
            .expect("the operating system's random generator failed");
        EndpointConfig {
            max_connections: 100_000,
            max_half_open: 4096,
            max_half_open_per_address: 32,
            per_source_handshakes_per_sec: 50,
            rate_limit_sources: 16_384,
            address_limits: None,
            retry: RetryPolicy::Auto {
                half_open_threshold: 1024,
            },
            cid_len: 8,
            cid_layout: None,
            secret,
            retry_secret: None,
            unix_time_at_start: None,
            retry_token_lifetime: Duration::from_secs(10),
            max_transmits_per_turn: 16,
            max_stateless_queue: 256,
            rng,
        }
    }
}

impl EndpointConfig {
    /// Checks the values; the message says what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_INITIAL_DCID_LEN..=ConnectionId::MAX_LEN).contains(&self.cid_len) {
            return Err(ConfigError(format!(
                "connection ID length {} is out of range; use 8..=20",
                self.cid_len
            )));
        }
        if self.max_transmits_per_turn == 0 {
            return Err(ConfigError(
                "max_transmits_per_turn must be at least 1".into(),
            ));
        }
        if self.retry_token_lifetime.is_zero() {
            return Err(ConfigError("retry_token_lifetime must be positive".into()));
        }
        Ok(())
    }
}

/// A session's slab key: how the application names a connection of this endpoint.
/// A handle is valid until its session's last event ([`Event::ConnectionLost`]) has
/// been polled; after that the key may name a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub usize);

/// Counters of what the endpoint did, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams passed to [`Endpoint::handle_datagram`].
    pub datagrams_received: u64,
    /// Datagrams whose header did not parse.
    pub dropped_unparseable: u64,
    /// Datagrams for no session that got no answer (too small for a reset, not a
    /// server, a long header other than Initial, ...).
    pub dropped_unknown_cid: u64,
    /// Initials that created no session because they did not decrypt.
    pub dropped_undecryptable: u64,
    /// Initials in datagrams under 1200 bytes, or with a Destination CID under 8 bytes.
    pub dropped_bad_initial: u64,
    /// Initials with a Retry token that was forged, tampered or for another address.
    pub dropped_invalid_token: u64,
    /// Initials with an expired Retry token.
    pub dropped_expired_token: u64,
    /// Unknown-version packets too small to answer (RFC 8999 / RFC 9000 §6.1), or
    /// arriving at a client endpoint.
    pub dropped_unsupported_version: u64,
    /// Stateless answers dropped because the queue was full (or one did not fit the
    /// buffer given to [`Endpoint::poll_transmit`]).
    pub dropped_stateless_queue_full: u64,
    /// Version Negotiation packets sent.
    pub vn_sent: u64,
    /// Retry packets sent.
    pub retry_sent: u64,
    /// Stateless resets sent.
    pub resets_sent: u64,
    /// Initials refused because of `max_connections` (or because the endpoint is
    /// shutting down).
    pub refused_limit: u64,
    /// Initials refused because of `max_half_open` (with no session to evict).
    pub refused_half_open: u64,
    /// Initials refused because of `max_half_open_per_address`.
    pub refused_half_open_per_address: u64,
    /// Half-open sessions closed to make room for a client from an address with
    /// fewer half-open sessions (see `max_half_open`).
    pub evicted_half_open: u64,
    /// Initials refused by the per-source rate limit.
    pub refused_rate: u64,
    /// Sessions created (client and server).
    pub sessions_created: u64,
    /// Sessions freed.
    pub sessions_freed: u64,
    /// Sessions whose [`Connection::handle_timeout`] ran because their deadline passed.
    pub timeouts_handled: u64,
    /// Wheel entries that fired for a session whose deadline had not passed (should
    /// stay 0: deadlines are re-armed whenever they change).
    pub spurious_timeouts: u64,
    /// Wheel entries whose (key, generation) named no live session (should stay 0:
    /// freeing a session cancels its entry).
    pub stale_timers: u64,
    /// Server handshakes in progress now.
    pub half_open: usize,
    /// Sessions now (including drained ones whose last events are unread).
    pub connections: usize,
}

struct Session {
    conn: Connection,
    /// Unique per session (wrapping counter): tells this session from a later one
    /// in the same slab slot.
    generation: u32,
    /// The deadline the wheel holds for this session.
    armed: Option<Instant>,
    local_cid: ConnectionId,
    /// Server: the Destination CID of the client's Initials, mapped for the
    /// session's life (retransmitted or late copies of Initials still carry it).
    initial_dcid: Option<ConnectionId>,
    /// Server: counted among the half-open sessions (until established or closed).
    half_open: Option<Ticket>,
    /// Client: the server address, while nothing has been heard from it (the session
    /// is listed in `unanswered` under it).
    unanswered: Option<SocketAddr>,
    /// Queued in `send_ready`.
    in_send: bool,
    /// Queued in `event_ready`.
    in_events: bool,
    /// Queued in `dirty` (the application borrowed the connection).
    dirty: bool,
    /// Drained: unrouted and unarmed, kept only until its events are read.
    retired: bool,
    /// The peer's stateless reset token, once known and registered in `reset_tokens`.
    reset_token: Option<[u8; 16]>,
    /// Connection IDs issued after the handshake with NEW_CONNECTION_ID, all routed here.
    extra_cids: Vec<ConnectionId>,
    /// An event taken from the connection to see whether any remain.
    peeked: Option<Event>,
}

/// Many connections behind one socket; see the module documentation.
pub struct Endpoint {
    config: EndpointConfig,
    server: Option<ServerConfig>,
    keys: Keys,
    /// Time base for Retry-token expiry.
    start: Instant,
    /// The latest `now` seen, for [`Endpoint::poll_timeout`]'s "at once".
    last_now: Instant,
    sessions: Slab<Session>,
    /// Connection ID → session. std's `RandomState` (SipHash with a random key)
    /// resists hash flooding with peer-chosen IDs.
    cids: HashMap<ConnectionId, (ConnectionHandle, u32)>,
    /// The last connection ID [`Endpoint::handle_datagram`] found in `cids`, and its
    /// entry. A bulk transfer's datagrams carry the same DCID one after another, and
    /// comparing it with this one is much cheaper than hashing it (SipHash was ≈ 200
    /// instructions per datagram). Every change to `cids` clears it, so a hit always
    /// gives what `cids` would. It leaves `cids`'s keyed hash, and with it the
    /// resistance to hash flooding, as it was: a peer can at most make it miss, which
    /// costs one comparison more than the map alone.
    last_route: Option<(ConnectionId, (ConnectionHandle, u32))>,
    /// The ECN codepoint of the datagram [`Endpoint::handle_datagram_ecn`] is handing in.
    rx_ecn: Option<EcnCodepoint>,
    /// Peers' stateless reset tokens → session, so that a reset (whose DCID is random,
    /// RFC 9000 §10.3) still reaches the connection it ends.
    reset_tokens: HashMap<[u8; 16], (ConnectionHandle, u32)>,
    wheel: TimerWheel,
    /// Client sessions that have heard nothing from their server yet, by server
    /// address: where [`Endpoint::handle_unreachable`] looks. Small lists (the
    /// sessions connecting to one server at once).
    unanswered: HashMap<SocketAddr, Vec<(usize, u32)>>,
    next_generation: u32,
    half_open: HalfOpen,
    /// Sessions that may have datagrams to send; the front one is being served.
    send_ready: VecDeque<(usize, u32)>,
    /// Datagrams the front of `send_ready` sent in its current turn.
    sent_this_turn: usize,
    /// The datagram being handled came to the server's preferred address's socket.
    arriving_via_preferred: bool,
    /// The last transmit returned goes out from the preferred address's socket.
    last_via_preferred: bool,
    /// Live sessions in `send_ready` (it may also hold entries of freed sessions).
    queued_send: usize,
    /// The session at the front of `send_ready` whose [`Endpoint::sync`] is deferred
    /// to the end of its send turn: re-arming its wheel entry after every datagram
    /// would recompute its deadline (the loss-detection timer moves with every
    /// packet) once per packet instead of once per flush. Until then the wheel may
    /// hold its earlier deadline; that is never read unsynced: `poll_timeout` answers
    /// "at once" while the session is queued for sending, and `handle_timeout` and
    /// `poll_event` sync it first. A session that received datagrams is deferred the
    /// same way until the next datagram for another session (`received`).
    unsynced: Option<usize>,
    /// Sessions that may have events.
    event_ready: VecDeque<(usize, u32)>,
    /// Retired sessions whose last events [`Endpoint::poll_event`] has not read yet.
    retired_unread: usize,
    /// Sessions the application borrowed, to re-arm before the next step.
    dirty: Vec<(usize, u32)>,
    /// Live sessions in `dirty`.
    queued_dirty: usize,
    /// Stateless answers: (destination, datagram).
    stateless: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Per-source-address admission limits (perhaps shared with other endpoints).
    limits: Arc<AddressLimits>,
    /// Scratch for wheel expiry.
    fired: Vec<(usize, u32)>,
    shutting_down: bool,
    stats: EndpointStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("server", &self.server.is_some())
            .field("sessions", &self.sessions.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint. With `server` it accepts connections; without, it only makes
    /// them ([`Endpoint::connect`]).
    pub fn new(
        config: EndpointConfig,
        server: Option<ServerConfig>,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let mut config = config;
        if let Some(layout) = &config.cid_layout {
            config.cid_len = layout.len();
        }
        config.validate()?;
        if let Some(s) = server.as_ref() {
            s.transport.validate()?;
        }
        let limits = config.address_limits.clone().unwrap_or_else(|| {
            Arc::new(AddressLimits::new(
                config.max_half_open_per_address,
                config.per_source_handshakes_per_sec,
                config.rate_limit_sources,
            ))
        });
        let half_open = HalfOpen::new(config.max_half_open, config.max_half_open_per_address)
            .releasing_to(limits.clone());
        let retry_secret = match &config.retry_secret {
            Some(shared) => shared.clone(),
            None => {
                let mut own = Zeroizing::new([0u8; 32]);
                config
                    .rng
                    .fill(&mut *own)
                    .map_err(|_| ConfigError("the random generator failed".into()))?;
                own
            }
        };
        Ok(Endpoint {
            keys: Keys::new(&config.secret, &retry_secret),
            limits,
            config,
            server,
            start: now,
            last_now: now,
            sessions: Slab::new(),
            cids: HashMap::new(),
            last_route: None,
            rx_ecn: None,
            reset_tokens: HashMap::new(),
            wheel: TimerWheel::new(now),
            unanswered: HashMap::new(),
            next_generation: 0,
            half_open,
            send_ready: VecDeque::new(),
            sent_this_turn: 0,
            arriving_via_preferred: false,
            last_via_preferred: false,
            queued_send: 0,
            unsynced: None,
            event_ready: VecDeque::new(),
            retired_unread: 0,
            dirty: Vec::new(),
            queued_dirty: 0,
            stateless: VecDeque::new(),
            fired: Vec::new(),
            shutting_down: false,
            stats: EndpointStats::default(),
        })
    }

    // ------------------------------------------------------------------ input

    /// [`Endpoint::handle_datagram`] for a datagram that came to the server's
    /// preferred address (RFC 9000 §9.6) on a socket of its own: a connection whose
    /// client moved there answers from that socket (see
    /// [`Endpoint::last_transmit_via_preferred`]).
    pub fn handle_datagram_via_preferred(&mut self, now: Instant, from: SocketAddr, d: &mut [u8]) {
        self.arriving_via_preferred = true;
        self.handle_datagram(now, from, d);
        self.arriving_via_preferred = false;
    }

    /// Server: offers `addr` as the preferred address (RFC 9000 §9.6) to connections
    /// made from now on, unless the configuration already names one.
    pub fn offer_preferred_address(&mut self, addr: SocketAddr) {
        if let Some(s) = self.server.as_mut() {
            s.preferred_address
                .get_or_insert(crate::proto::ServerPreferredAddress::of(addr));
        }
    }

    /// Whether the [`Transmit`] that [`Endpoint::poll_transmit`] returned last goes out
    /// from the preferred address's socket rather than the main one.
    pub fn last_transmit_via_preferred(&self) -> bool {
        self.last_via_preferred
    }

    /// A datagram arrived from `remote`. Routes it by Destination CID to a session,
    /// or creates a server session for a valid Initial of at least 1200 bytes
    /// (subject to the limits; returns its handle), or answers statelessly (Version
    /// Negotiation, Retry, stateless reset), or drops and counts it. The buffer is
    /// decrypted in place. Never panics, whatever the bytes.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &mut [u8],
    ) -> Option<ConnectionHandle> {
        self.handle_datagram_ecn(now, remote, None, data)
    }

    /// [`Endpoint::handle_datagram`] for a datagram that arrived with the ECN codepoint
    /// `ecn` in its IP header (`None`: Not-ECT or unknown); the connection counts it
    /// and reports it in its ACK frames (RFC 9000 §13.4.1).
    pub fn handle_datagram_ecn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        ecn: Option<EcnCodepoint>,
        data: &mut [u8],
    ) -> Option<ConnectionHandle> {
        self.rx_ecn = ecn;
        let handle = self.route_datagram(now, remote, data);
        self.rx_ecn = None;
        handle
    }

    fn route_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &mut [u8],
    ) -> Option<ConnectionHandle> {
        self.note_now(now);
        self.flush_dirty();
        self.stats.datagrams_received += 1;
        let h = match parse_header(data, self.config.cid_len) {
            Ok(h) => h,
            Err(DecodeError::UnsupportedVersion(_)) => {
                self.version_negotiation(remote, data);
                return None;
            }
            Err(_) => {
                self.stats.dropped_unparseable += 1;
                return None;
            }
        };
        let route = match self.last_route {
            Some((cid, route)) if cid == h.dcid => Some(route),
            _ => {
                let route = self.cids.get(&h.dcid).copied();
                if let Some(route) = route {
                    self.last_route = Some((h.dcid, route));
                }
                route
            }
        };
        if let Some((handle, generation)) = route {
            // RFC 9000 §12.2: coalesced packets share the first packet's DCID; the
            // connection drops any that do not.
            match self.sessions.get_mut(handle.0) {
                Some(s) if s.generation == generation && !s.retired => {
                    // The connection reuses this parse instead of parsing again.
                    let first = RecvHeader::new(&h, self.config.cid_len);
                    s.conn.note_arrival(self.arriving_via_preferred);
                    s.conn.set_rx_ecn(self.rx_ecn);
                    s.conn
                        .handle_datagram_parsed(now, remote, data, Some(&first));
                    self.sync_reset_token(handle.0);
                    self.received(handle.0);
                }
                _ => self.stats.dropped_unknown_cid += 1,
            }
            return None;
        }
        match h.kind {
            PacketKind::Long(LongType::Initial) => {
                let (version, dcid, scid) = (h.version, h.dcid, h.scid.unwrap_or_default());
                let token = if h.token.is_empty() {
                    None
                } else {
                    Some(
                        self.keys
                            .open_retry_token(h.token, remote, self.token_time(now)),
                    )
                };
                self.new_session(now, remote, data, version, dcid, scid, token)
            }
            PacketKind::Short => {
                // RFC 9000 §10.3.1: a datagram for no known CID may be a stateless
                // reset for one of our connections; its last 16 bytes say which. The
                // connection itself compares the token in constant time.
                if data.len() >= 21 {
                    let mut tail = [0u8; 16];
                    tail.copy_from_slice(&data[data.len() - 16..]);
                    if let Some(&(handle, generation)) = self.reset_tokens.get(&tail) {
                        if let Some(s) = self.sessions.get_mut(handle.0) {
                            if s.generation == generation && !s.retired {
                                s.conn.set_rx_ecn(self.rx_ecn);
                                s.conn.handle_datagram(now, remote, data);
                                self.touched(handle.0);
                                return None;
                            }
                        }
                    }
                }
                self.stateless_reset(remote, data.len(), &h.dcid);
                None
            }
            _ => {
                self.stats.dropped_unknown_cid += 1;
                None
            }
        }
    }

    /// Decides what to do with an Initial for no known session.
    #[allow(clippy::too_many_arguments)]
    fn new_session(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &mut [u8],
        version: u32,
        dcid: ConnectionId,
        scid: ConnectionId,
        token: Option<Result<(ConnectionId, ConnectionId), TokenError>>,
    ) -> Option<ConnectionHandle> {
        let Some(server) = self.server.as_ref() else {
            self.stats.dropped_unknown_cid += 1;
            return None;
        };
        // RFC 9000 §14.1: "A server MUST discard an Initial packet that is carried in a
        // UDP datagram with a payload that is smaller than the smallest allowed maximum
        // datagram size of 1200 bytes."
        if data.len() < usize::from(MIN_UDP_PAYLOAD) || dcid.len() < MIN_INITIAL_DCID_LEN {
            self.stats.dropped_bad_initial += 1;
            return None;
        }
        // The version of the client's first Initial picks the handshake: quill's own,
        // or QUIC v1 (TLS 1.3) where the server accepts it. A client of a version we
        // do not accept is told which ones we do speak (RFC 9000 §6.1).
        let accepted = version == QUILL_VERSION
            || (version == QUIC_V1 && server.quic_v1.is_some())
            || (version == QUIC_V2 && server.quic_v1.as_ref().is_some_and(|v| v.quic_v2));
        if !accepted {
            self.version_negotiation(remote, data);
            return None;
        }
        // Refusals are silent drops (RFC 9000 §5.2.2 lets a server either drop or
        // close): no state, no bytes towards an address that may be spoofed, and a
        // real client simply retransmits its Initial later.
        if self.shutting_down || self.sessions.len() >= self.config.max_connections {
            self.stats.refused_limit += 1;
            return None;
        }
        let retry = match token {
            Some(Ok((odcid, rscid))) if rscid == dcid => Some((odcid, rscid)),
            // RFC 9000 §8.1.2 lets a server close with INVALID_TOKEN instead; dropping
            // keeps the answer from amplifying anything an attacker sends.
            Some(Ok(_)) | Some(Err(TokenError::Invalid)) => {
                self.stats.dropped_invalid_token += 1;
                return None;
            }
            Some(Err(TokenError::Expired)) => {
                self.stats.dropped_expired_token += 1;
                return None;
            }
            None => {
                let ask = match self.config.retry {
                    RetryPolicy::Always => true,
                    RetryPolicy::Auto {
                        half_open_threshold,
                    } => self.half_open.len() >= half_open_threshold,
                    RetryPolicy::Never => false,
                };
                if ask {
                    self.send_retry(now, remote, version, &dcid, &scid);
                    return None;
                }
                None
            }
        };
        let admission = self.half_open.admit(remote.ip());
        match admission {
            Admission::AddressFull => {
                self.stats.refused_half_open_per_address += 1;
                return None;
            }
            Admission::Full => {
                self.stats.refused_half_open += 1;
                return None;
            }
            Admission::Admit | Admission::Evict(_) => {}
        }
        // Taken together for every loop of a server: dropped (given back) on any
        // return before the session exists.
        let place = match self.limits.reserve(remote.ip(), now) {
            Ok(place) => place,
            Err(Refusal::HalfOpen) => {
                self.stats.refused_half_open_per_address += 1;
                return None;
            }
            Err(Refusal::Rate) => {
                self.stats.refused_rate += 1;
                return None;
            }
        };
        let local = self.new_cid()?;
        let reset_token = self.keys.reset_token(&local);
        // RFC 9000 §9.6: the preferred address's connection ID (sequence number 1).
        let preferred = match server.preferred_address {
            Some(_) => {
                let cid = self.new_cid()?;
                Some((cid, self.keys.reset_token(&cid)))
            }
            None => None,
        };
        // With a valid token the address counts as validated (RFC 9000 §8.1.2).
        let cids = ServerCids {
            local,
            original_dcid: dcid,
            client: scid,
            retry,
            reset_token: Some(reset_token),
            preferred,
        };
        let conn = match Connection::server_offering(version, server.clone(), now, remote, cids) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot create a server connection: {e}");
                return None;
            }
        };
        if let Admission::Evict((key, generation)) = admission {
            self.evict_half_open(now, key, generation);
        }
        let key = self.insert(conn, local, Some(dcid), Some(remote));
        // The half-open session holds the place now and gives it back when it is removed.
        if let Some(place) = place {
            place.keep();
        }
        if let Some((cid, _)) = preferred {
            let generation = self.sessions[key].generation;
            self.cids.insert(cid, (ConnectionHandle(key), generation));
            self.sessions[key].extra_cids.push(cid);
        }
        let s = &mut self.sessions[key];
        s.conn.set_rx_ecn(self.rx_ecn);
        s.conn.handle_datagram(now, remote, data);
        if s.conn.stats().packets_received == 0 {
            // Nothing decrypted: do not keep a session (and a half-open slot) for
            // bytes that merely look like an Initial.
            self.stats.dropped_undecryptable += 1;
            self.discard(key);
            return None;
        }
        self.touched(key);
        Some(ConnectionHandle(key))
    }

    /// Closes a half-open session to make room for a new one (see
    /// [`EndpointConfig::max_half_open`]). The client is told with CONNECTION_REFUSED;
    /// the application sees the session's `ConnectionLost` as usual.
    fn evict_half_open(&mut self, now: Instant, key: usize, generation: u32) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.generation != generation || s.retired || s.half_open.is_none() {
            return;
        }
        s.conn
            .refuse(now, "server busy: too many handshakes in progress");
        self.stats.evicted_half_open += 1;
        self.touched(key);
    }

    /// Starts a client connection to `remote`.
    pub fn connect(
        &mut self,
        now: Instant,
        config: ClientConfig,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, ConfigError> {
        self.note_now(now);
        self.flush_dirty();
        if self.shutting_down {
            return Err(ConfigError("the endpoint is shutting down".into()));
        }
        if self.sessions.len() >= self.config.max_connections {
            return Err(ConfigError(format!(
                "the endpoint already has {} connections (max_connections)",
                self.sessions.len()
            )));
        }
        let local = self
            .new_cid()
            .ok_or_else(|| ConfigError("the random generator failed".into()))?;
        // RFC 9000 §7.2: the first Destination CID is unpredictable and ≥ 8 bytes.
        let initial_dcid = self
            .random_cid()
            .ok_or_else(|| ConfigError("the random generator failed".into()))?;
        let conn = Connection::client(config, now, remote, local, initial_dcid)?;
        let key = self.insert(conn, local, None, None);
        let generation = self.sessions[key].generation;
        self.sessions[key].unanswered = Some(remote);
        self.unanswered
            .entry(remote)
            .or_default()
            .push((key, generation));
        self.touched(key);
        Ok(ConnectionHandle(key))
    }

    /// The network reported `destination` unreachable (an ICMP error for a datagram
    /// sent there; the driver reads them from the socket). Client sessions to that
    /// address that have heard nothing from it yet end with
    /// `ConnectionError::Unreachable` (see [`Connection::handle_unreachable`]);
    /// everything else ignores it.
    pub fn handle_unreachable(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        reason: Unreachable,
    ) {
        self.note_now(now);
        self.flush_dirty();
        let Some(list) = self.unanswered.get(&destination) else {
            return;
        };
        for (key, generation) in list.clone() {
            match self.sessions.get_mut(key) {
                Some(s) if s.generation == generation && !s.retired => {
                    s.conn.handle_unreachable(reason);
                    self.touched(key);
                }
                _ => {}
            }
        }
    }

    /// Expires the wheel: calls [`Connection::handle_timeout`] on exactly the sessions
    /// whose deadline has passed, never on the others.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_observed(now, |_| {});
    }

    /// [`Endpoint::handle_timeout`], also calling `fired_at(deadline)` with the deadline
    /// the wheel held for each live session whose timer it expired (before that
    /// session's timeout runs), so that the caller can measure how late timers fire.
    pub(crate) fn handle_timeout_observed(
        &mut self,
        now: Instant,
        mut fired_at: impl FnMut(Instant),
    ) {
        self.note_now(now);
        self.flush_dirty();
        self.sync_deferred();
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel
            .expire(now, |key, generation| fired.push((key, generation)));
        for &(key, generation) in &fired {
            match self.sessions.get_mut(key) {
                Some(s) if s.generation == generation && !s.retired => {
                    if let Some(deadline) = s.armed.take() {
                        fired_at(deadline);
                    }
                    if s.conn.poll_timeout().is_some_and(|t| t <= now) {
                        s.conn.handle_timeout(now);
                        self.stats.timeouts_handled += 1;
                    } else {
                        self.stats.spurious_timeouts += 1;
                    }
                    self.touched(key);
                }
                _ => self.stats.stale_timers += 1,
            }
        }
        fired.clear();
        self.fired = fired;
    }

    /// After the application acted on a connection (wrote, accepted a login,
    /// closed), re-arms its timer and queues it for sending. Borrowing it through
    /// [`Endpoint::connection`] already schedules this for the next endpoint call;
    /// `touch` does it at once.
    pub fn touch(&mut self, h: ConnectionHandle) {
        if let Some(s) = self.sessions.get_mut(h.0) {
            if !s.retired {
                self.touched(h.0);
            }
        }
    }

    /// The slab keys of every session not yet retired (for the calls that visit all).
    fn live_keys(&self) -> Vec<usize> {
        self.sessions
            .iter()
            .filter(|(_, s)| !s.retired)
            .map(|(k, _)| k)
            .collect()
    }

    /// Client: this endpoint now sends from a new local address; every connection
    /// migrates to it ([`Connection::migrate`]). Returns how many did.
    pub fn migrate_all(&mut self, now: Instant) -> usize {
        self.note_now(now);
        let keys = self.live_keys();
        let mut moved = 0;
        for key in keys {
            match self.sessions[key].conn.migrate() {
                Ok(_) => moved += 1,
                Err(e) => tracing::debug!("connection {key} stays: {e}"),
            }
            self.sync_reset_token(key);
            self.touched(key);
        }
        moved
    }

    /// Closes every connection with an application `code` and `reason`
    /// (CONNECTION_CLOSE everywhere) and refuses new ones. Sessions the peer has
    /// already closed are freed at once, the others when their closing period ends;
    /// the endpoint is done when [`Endpoint::is_empty`] (after the last
    /// events were polled). Besides [`Endpoint::migrate_all`], the one call that visits
    /// every session.
    pub fn close_all(&mut self, now: Instant, code: u64, reason: &str) {
        self.note_now(now);
        self.flush_dirty();
        self.shutting_down = true;
        let keys = self.live_keys();
        for key in keys {
            let conn = &mut self.sessions[key].conn;
            // Sessions the peer already closed need no draining period on a
            // closing socket: without this a server whose 100,000 clients had just
            // left waited out three PTOs of each (seconds, with burst-inflated RTTs).
            if !conn.finish_draining() {
                conn.close(now, code, reason);
            }
            self.touched(key);
        }
    }

    // ----------------------------------------------------------------- output

    /// The next datagram to send, written to the start of `buf` (give it at least
    /// the path MTU; 1452 bytes suffice): stateless answers first, then sessions
    /// round-robin.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.note_now(now);
        self.flush_dirty();
        self.last_via_preferred = false;
        while let Some((destination, bytes)) = self.stateless.pop_front() {
            if let Some(out) = buf.get_mut(..bytes.len()) {
                out.copy_from_slice(&bytes);
                return Some(Transmit {
                    destination,
                    size: bytes.len(),
                    ecn: None,
                });
            }
            self.stats.dropped_stateless_queue_full += 1;
        }
        while let Some(&(key, generation)) = self.send_ready.front() {
            let s = match self.sessions.get_mut(key) {
                Some(s) if s.generation == generation => s,
                _ => {
                    self.send_ready.pop_front();
                    self.sent_this_turn = 0;
                    continue;
                }
            };
            match s.conn.poll_transmit(now, buf) {
                Some(t) => {
                    self.last_via_preferred = s.conn.sends_via_preferred();
                    self.sent_this_turn += 1;
                    if self.sent_this_turn >= self.config.max_transmits_per_turn {
                        // Its turn is over: to the back of the line.
                        self.send_ready.pop_front();
                        self.send_ready.push_back((key, generation));
                        self.sent_this_turn = 0;
                        self.unsynced = None;
                        self.sync(key);
                    } else {
                        // Synced when its turn ends (below) or before anything reads
                        // its deadline; see `unsynced`.
                        self.unsynced = Some(key);
                    }
                    return Some(t);
                }
                None => {
                    s.in_send = false;
                    self.queued_send -= 1;
                    self.send_ready.pop_front();
                    self.sent_this_turn = 0;
                    self.sync_deferred();
                    self.sync(key);
                }
            }
        }
        None
    }

    /// When to call [`Endpoint::handle_timeout`] next: the wheel's next deadline, or
    /// the latest `now` seen if datagrams are waiting in [`Endpoint::poll_transmit`],
    /// the last events of an ended session in [`Endpoint::poll_event`], or a borrowed connection still needs
    /// re-arming.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A session retired after the caller last drained the events (while
        // transmitting) is freed only once its last events are read: that needs a
        // turn too, or a loop waiting for it (graceful shutdown) sleeps with no
        // deadline.
        if !self.stateless.is_empty()
            || self.queued_send > 0
            || self.queued_dirty > 0
            || self.retired_unread > 0
        {
            return Some(self.last_now);
        }
        self.wheel.next_deadline()
    }

    /// The next event of any session, with its handle. Only sessions that were
    /// touched since their events were last drained are asked.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.flush_dirty();
        self.sync_deferred();
        while let Some(&(key, generation)) = self.event_ready.front() {
            let s = match self.sessions.get_mut(key) {
                Some(s) if s.generation == generation => s,
                _ => {
                    self.event_ready.pop_front();
                    continue;
                }
            };
            if let Some(e) = s.peeked.take().or_else(|| s.conn.poll_event()) {
                return Some((ConnectionHandle(key), e));
            }
            s.in_events = false;
            self.event_ready.pop_front();
            if s.retired {
                self.retired_unread = self.retired_unread.saturating_sub(1);
                self.free(key);
            }
        }
        None
    }

    // ------------------------------------------------------------ app access

    /// The connection behind a handle, for the application (read, write, accept a
    /// login). It is re-armed and queued for sending before the endpoint's next step.
    pub fn connection(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        let s = self.sessions.get_mut(h.0)?;
        if !s.dirty && !s.retired {
            s.dirty = true;
            self.queued_dirty += 1;
            self.dirty.push((h.0, s.generation));
        }
        Some(&mut s.conn)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            half_open: self.half_open.len(),
            connections: self.sessions.len(),
            ..self.stats.clone()
        }
    }

    /// Sessions held, including drained ones whose last events are unread.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The secret-derived stateless reset token for one of this endpoint's
    /// connection IDs (what a server advertises in its transport parameters).
    pub fn reset_token(&self, cid: &ConnectionId) -> [u8; 16] {
        self.keys.reset_token(cid)
    }

    // -------------------------------------------------------------- internals

    fn note_now(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// The Retry-token clock, in Unix milliseconds: the wall-clock time at the
    /// endpoint's start plus the monotonic time since
    /// ([`EndpointConfig::unix_time_at_start`]).
    fn token_time(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start);
        let unix = self.config.unix_time_at_start.unwrap_or_default() + since;
        u64::try_from(unix.as_millis()).unwrap_or(u64::MAX)
    }

    fn random_cid(&self) -> Option<ConnectionId> {
        let mut b = [0u8; ConnectionId::MAX_LEN];
        let b = &mut b[..self.config.cid_len];
        self.config.rng.fill(b).ok()?;
        ConnectionId::from_slice(b).ok()
    }

    /// A new connection ID that routes nowhere yet: of the QUIC-LB layout if the
    /// endpoint has one (server ID and worker index, then random bytes), otherwise
    /// random of `cid_len` bytes. Never derived from the slab key, so IDs reveal
    /// nothing of it.
    fn new_cid(&self) -> Option<ConnectionId> {
        for _ in 0..8 {
            let cid = match &self.config.cid_layout {
                Some(layout) => layout.generate(&*self.config.rng)?,
                None => self.random_cid()?,
            };
            if !self.cids.contains_key(&cid) {
                return Some(cid);
            }
        }
        None
    }

    fn insert(
        &mut self,
        conn: Connection,
        local_cid: ConnectionId,
        initial_dcid: Option<ConnectionId>,
        half_open_from: Option<SocketAddr>,
    ) -> usize {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let key = self.sessions.insert(Session {
            conn,
            generation,
            armed: None,
            local_cid,
            initial_dcid,
            half_open: None,
            unanswered: None,
            in_send: false,
            in_events: false,
            dirty: false,
            retired: false,
            peeked: None,
            reset_token: None,
            extra_cids: Vec::new(),
        });
        let handle = (ConnectionHandle(key), generation);
        self.last_route = None;
        self.cids.insert(local_cid, handle);
        if let Some(d) = initial_dcid {
            self.cids.insert(d, handle);
        }
        if let Some(from) = half_open_from {
            let ticket = self.half_open.insert(from.ip(), (key, generation));
            self.sessions[key].half_open = Some(ticket);
        }
        self.stats.sessions_created += 1;
        key
    }

    /// Bookkeeping after anything touched a session: handshake progress, draining,
    /// and re-arming the wheel if the deadline changed.
    /// Keeps `reset_tokens` on the token of the peer connection ID the session sends
    /// to now: it changes when the peer's parameters arrive and when the connection
    /// moves to a spare connection ID (RFC 9000 §10.3.1).
    fn sync_reset_token(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let current = s.conn.peer_reset_token();
        if current == s.reset_token {
            return;
        }
        if let Some(old) = s.reset_token.take() {
            self.reset_tokens.remove(&old);
        }
        if let Some(t) = current {
            self.reset_tokens
                .insert(t, (ConnectionHandle(key), s.generation));
        }
        s.reset_token = current;
    }

    fn sync(&mut self, key: usize) {
        if self.sync_routes(key) {
            self.rearm(key);
        }
    }

    /// [`Self::sync`] but for re-arming the wheel; false if the session is gone or
    /// retired (nothing to re-arm).
    fn sync_routes(&mut self, key: usize) -> bool {
        let Some(s) = self.sessions.get_mut(key) else {
            return false;
        };
        if s.retired {
            return false;
        }
        self.sync_reset_token(key);
        let s = &mut self.sessions[key];
        if s.conn.is_established() || s.conn.is_closed() {
            if let Some(ticket) = s.half_open.take() {
                self.half_open.remove(ticket);
            }
        }
        if s.conn.stats().packets_received > 0 || s.conn.is_closed() {
            if let Some(remote) = s.unanswered.take() {
                forget_unanswered(&mut self.unanswered, remote, key);
            }
        }
        let s = &mut self.sessions[key];
        if s.conn.is_established() {
            // The client's original connection ID (`initial_dcid`) stays routed until
            // the session ends, although the client sends no new Initials: a late copy
            // of its first flight (duplicated on the way, or waiting in a loop's
            // forwarding channel) must reach this session, which drops it, rather than
            // start a second one. One map entry per session.
            //
            // RFC 9000 §5.1.1: keep the peer supplied with spare connection IDs, and
            // stop routing the ones it retired.
            while let Some(cid) = s.conn.poll_retired_cid() {
                self.last_route = None;
                self.cids.remove(&cid);
                s.extra_cids.retain(|c| *c != cid);
            }
            let wanted = s.conn.cids_wanted();
            let generation = s.generation;
            for _ in 0..wanted {
                let Some(cid) = self.new_cid() else {
                    break;
                };
                let token = self.keys.reset_token(&cid);
                self.last_route = None;
                self.cids.insert(cid, (ConnectionHandle(key), generation));
                let s = &mut self.sessions[key];
                s.extra_cids.push(cid);
                s.conn.issue_cid(cid, token);
            }
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return false;
        };
        if s.conn.is_drained() {
            self.retire(key);
            return false;
        }
        true
    }

    /// Re-arms the session's wheel entry if its deadline changed.
    fn rearm(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let deadline = s.conn.poll_timeout();
        if deadline != s.armed {
            match deadline {
                Some(t) => self.wheel.set(key, s.generation, t),
                None => self.wheel.cancel(key),
            }
            s.armed = deadline;
        }
    }

    /// The [`Self::sync`] that [`Endpoint::poll_transmit`] deferred, if any.
    fn sync_deferred(&mut self) {
        if let Some(key) = self.unsynced.take() {
            self.sync(key);
        }
    }

    /// [`Self::sync`], and queue the session for sending and events.
    fn touched(&mut self, key: usize) {
        self.sync(key);
        self.queue(key);
    }

    /// [`Self::touched`] for a session that received a datagram, with the wheel
    /// re-arm deferred like [`Endpoint::poll_transmit`]'s (see `unsynced`): a burst
    /// of datagrams for one session re-arms it once. The session is queued for
    /// sending, which the deferral needs.
    fn received(&mut self, key: usize) {
        if self.unsynced.is_some_and(|k| k != key) {
            self.sync_deferred();
        }
        if self.sync_routes(key) {
            self.unsynced = Some(key);
            self.queue(key);
        }
    }

    /// Queues a live session for sending and events.
    fn queue(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.retired {
            return;
        }
        if !s.in_send {
            s.in_send = true;
            self.queued_send += 1;
            self.send_ready.push_back((key, s.generation));
        }
        if !s.in_events {
            s.in_events = true;
            self.event_ready.push_back((key, s.generation));
        }
    }

    fn flush_dirty(&mut self) {
        while let Some((key, generation)) = self.dirty.pop() {
            if let Some(s) = self.sessions.get_mut(key) {
                if s.generation == generation && s.dirty {
                    s.dirty = false;
                    self.queued_dirty -= 1;
                    if !s.retired {
                        self.touched(key);
                    }
                }
            }
        }
    }

    /// Unroutes and disarms a drained session; frees it once its events are read.
    fn retire(&mut self, key: usize) {
        self.unroute(key);
        let s = &mut self.sessions[key];
        let counted = s.retired;
        s.retired = true;
        if s.peeked.is_none() {
            s.peeked = s.conn.poll_event();
        }
        if s.peeked.is_none() {
            if counted {
                self.retired_unread = self.retired_unread.saturating_sub(1);
            }
            self.free(key);
            return;
        }
        if !counted {
            self.retired_unread += 1;
        }
        if !s.in_events {
            s.in_events = true;
            self.event_ready.push_back((key, s.generation));
        }
    }

    /// Removes a session's routes, timer and half-open count.
    fn unroute(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        self.last_route = None;
        self.cids.remove(&s.local_cid);
        for cid in s.extra_cids.drain(..) {
            self.cids.remove(&cid);
        }
        if let Some(t) = s.reset_token.take() {
            self.reset_tokens.remove(&t);
        }
        if let Some(d) = s.initial_dcid.take() {
            self.cids.remove(&d);
        }
        if s.armed.take().is_some() {
            self.wheel.cancel(key);
        }
        if let Some(ticket) = s.half_open.take() {
            self.half_open.remove(ticket);
        }
        if let Some(remote) = s.unanswered.take() {
            forget_unanswered(&mut self.unanswered, remote, key);
        }
    }

    /// Frees a session that the application never heard of.
    fn discard(&mut self, key: usize) {
        self.unroute(key);
        self.free(key);
    }

    fn free(&mut self, key: usize) {
        let s = self.sessions.remove(key);
        if s.in_send {
            self.queued_send -= 1;
        }
        if s.dirty {
            self.queued_dirty -= 1;
        }
        self.stats.sessions_freed += 1;
        // Queue entries for this key carry its generation and are skipped later.
    }

    fn queue_stateless(&mut self, to: SocketAddr, datagram: Vec<u8>) -> bool {
        if self.stateless.len() >= self.config.max_stateless_queue {
            self.stats.dropped_stateless_queue_full += 1;
            return false;
        }
        self.stateless.push_back((to, datagram));
        true
    }

    /// Answers an unknown version with Version Negotiation (server, ≥ 1200 bytes).
    fn version_negotiation(&mut self, remote: SocketAddr, data: &[u8]) {
        // RFC 9000 §6.1: "A server sends a Version Negotiation packet in response to
        // each packet that might initiate a new connection" and §14.1: "A server MUST
        // discard an Initial packet that is carried in a UDP datagram with a payload
        // that is smaller than [1200 bytes]" -- a server "MAY send a Version
        // Negotiation packet" only for datagrams of at least that size (RFC 9000
        // §5.2.2), so a VN never amplifies.
        if self.server.is_none() || data.len() < usize::from(MIN_UDP_PAYLOAD) {
            self.stats.dropped_unsupported_version += 1;
            return;
        }
        let Ok(inv) = parse_invariant(data) else {
            self.stats.dropped_unparseable += 1;
            return;
        };
        let v1 = self.server.as_ref().and_then(|s| s.quic_v1.as_ref());
        let (quic_v1, quic_v2) = (v1.is_some(), v1.is_some_and(|v| v.quic_v2));
        let Some(vn) =
            stateless::version_negotiation(&*self.config.rng, inv.dcid, inv.scid, quic_v1, quic_v2)
        else {
            return;
        };
        if self.queue_stateless(remote, vn) {
            self.stats.vn_sent += 1;
        }
    }

    /// Asks a client to prove its address (RFC 9000 §8.1.2).
    fn send_retry(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        version: u32,
        dcid: &ConnectionId,
        scid: &ConnectionId,
    ) {
        // The Retry's Source CID becomes the client's Destination CID: it must route
        // nowhere yet, so the echoed Initial creates a session.
        let Some(rscid) = self.new_cid() else {
            return;
        };
        let expiry = self.token_time(now).saturating_add(
            u64::try_from(self.config.retry_token_lifetime.as_millis()).unwrap_or(u64::MAX),
        );
        let Some(token) =
            self.keys
                .seal_retry_token(&*self.config.rng, remote, dcid, &rscid, expiry)
        else {
            return;
        };
        let packet = stateless::retry_packet(version, scid, &rscid, dcid, &token);
        if self.queue_stateless(remote, packet) {
            self.stats.retry_sent += 1;
        }
    }

    /// Answers a short-header packet for an unknown CID with a stateless reset.
    fn stateless_reset(&mut self, remote: SocketAddr, trigger_len: usize, dcid: &ConnectionId) {
        // Only servers advertise reset tokens (a client cannot: RFC 9000 §18.2), so
        // only a server endpoint's resets can be recognised.
        //
        // RFC 9000 §10.3: "An endpoint MUST NOT send a Stateless Reset that is three
        // times or more larger than the packet it receives to avoid being used for
        // amplification." §10.3.3: "An endpoint MUST ensure that every Stateless Reset
        // that it sends is smaller than the packet that triggered it, unless it
        // maintains other means to prevent looping." A reset is at least 21 bytes, so
        // a trigger of 21 bytes or fewer gets none.
        if self.server.is_none() || trigger_len <= MIN_RESET_LEN {
            self.stats.dropped_unknown_cid += 1;
            return;
        }
        let len = (trigger_len - 1).min(MAX_RESET_LEN);
        let token = self.keys.reset_token(dcid);
        let Some(packet) = stateless::reset_packet(&*self.config.rng, len, &token) else {
            return;
        };
        if self.queue_stateless(remote, packet) {
            self.stats.resets_sent += 1;
        }
    }
}

/// Takes session `key` off the `unanswered` list of `remote`.
fn forget_unanswered(
    unanswered: &mut HashMap<SocketAddr, Vec<(usize, u32)>>,
    remote: SocketAddr,
    key: usize,
) {
    if let Some(list) = unanswered.get_mut(&remote) {
        list.retain(|&(k, _)| k != key);
        if list.is_empty() {
            unanswered.remove(&remote);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_crypto::hostkey::HostKeyPair;
    use quill_crypto::random::SeededRandom;

    fn config(seed: u8) -> EndpointConfig {
        EndpointConfig {
            secret: [seed; 32],
            rng: Arc::new(SeededRandom::new([seed; 32])),
            ..EndpointConfig::default()
        }
    }

    fn server_config() -> ServerConfig {
        ServerConfig::new(Arc::new(HostKeyPair::from_seed(&[7; 32]).unwrap()))
    }

    /// A client connection from `ep` to a documentation address.
    fn connect(ep: &mut Endpoint, now: Instant) -> ConnectionHandle {
        ep.connect(now, client_config(), "192.0.2.1:4433".parse().unwrap())
            .unwrap()
    }

    fn client_config() -> ClientConfig {
        ClientConfig::new(
            crate::proto::Login::Password {
                user: "alice".into(),
                password: zeroize::Zeroizing::new("pw".into()),
            },
            crate::proto::HostKeyPolicy::AcceptAndReport,
        )
    }

    #[test]
    fn issued_ids_follow_the_cid_layout() {
        let t0 = Instant::now();
        let layout = CidLayout::new(&[0xab, 0xcd], 9).unwrap().for_worker(3);
        let config = EndpointConfig {
            cid_layout: Some(layout.clone()),
            ..config(5)
        };
        let mut ep = Endpoint::new(config, None, t0).unwrap();
        assert_eq!(ep.config.cid_len, 12, "the layout sets the length");
        let h = connect(&mut ep, t0);
        let cid = ep.sessions[h.0].local_cid;
        assert_eq!(layout.decode(cid.as_ref()), Some((&[0xab, 0xcd][..], 3)));
        assert!(ep.cids.contains_key(&cid));
    }

    #[test]
    fn config_validation() {
        let mut c = config(1);
        c.validate().unwrap();
        c.cid_len = 7;
        assert!(c.validate().unwrap_err().0.contains("8..=20"));
        c.cid_len = 21;
        assert!(c.validate().is_err());
        c.cid_len = 20;
        c.max_transmits_per_turn = 0;
        assert!(c.validate().is_err());
        assert!(Endpoint::new(c, None, Instant::now()).is_err());
        assert!(
            !format!("{:?}", config(1)).contains("[1, 1"),
            "secret redacted"
        );
    }

    /// The generation check itself: a wheel entry left with an old generation for a
    /// slot that a new session now occupies must not touch that session.
    #[test]
    fn stale_wheel_entry_for_reused_slot_is_ignored() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(config(2), None, t0).unwrap();
        let a = connect(&mut ep, t0);
        let old_generation = ep.sessions[a.0].generation;
        // Free it as if it had drained with no events left.
        ep.discard(a.0);
        let b = connect(&mut ep, t0);
        assert_eq!(a, b, "the slab reuses the slot");
        assert_ne!(ep.sessions[b.0].generation, old_generation);
        // Plant an entry with the old generation, due now, where the new session's is.
        let new_deadline = ep.sessions[b.0].armed.unwrap();
        ep.wheel.set(b.0, old_generation, t0);
        ep.sessions[b.0].armed = Some(t0);
        ep.handle_timeout(t0 + Duration::from_millis(2));
        let st = ep.stats();
        assert_eq!(st.stale_timers, 1);
        assert_eq!(st.timeouts_handled, 0);
        assert!(!ep.sessions[b.0].conn.is_closed());
        assert!(new_deadline > t0 + Duration::from_millis(2));
    }

    #[test]
    fn observed_timeout_reports_the_deadline_that_fired() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(config(5), None, t0).unwrap();
        let a = connect(&mut ep, t0);
        let deadline = ep.sessions[a.0]
            .armed
            .expect("a new connection has a timer");
        let mut seen = Vec::new();
        ep.handle_timeout_observed(deadline - Duration::from_millis(1), |d| seen.push(d));
        assert!(seen.is_empty(), "nothing is due before the deadline");
        ep.handle_timeout_observed(deadline + Duration::from_millis(3), |d| seen.push(d));
        assert_eq!(seen, vec![deadline]);
        assert_eq!(ep.stats().timeouts_handled, 1);
    }

    #[test]
    fn discard_frees_routes_and_timer() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(config(3), None, t0).unwrap();
        let a = connect(&mut ep, t0);
        assert_eq!(ep.cids.len(), 1);
        assert_eq!(ep.wheel.len(), 1);
        ep.discard(a.0);
        assert!(ep.cids.is_empty());
        assert!(ep.wheel.is_empty());
        assert!(ep.is_empty());
        assert!(ep.poll_event().is_none());
    }

    #[test]
    fn the_last_route_is_forgotten_with_the_route() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(config(5), None, t0).unwrap();
        let from: SocketAddr = "192.0.2.1:4433".parse().unwrap();
        let a = ep.connect(t0, client_config(), from).unwrap();
        let cid = ep.sessions[a.0].local_cid;
        let generation = ep.sessions[a.0].generation;
        // A short-header datagram for the session (undecryptable: the connection
        // drops it, but the endpoint routes it).
        let datagram = |cid: &ConnectionId| {
            let mut d = vec![0x40];
            d.extend_from_slice(cid.as_ref());
            d.extend_from_slice(&[0x5a; 40]);
            d
        };
        assert!(ep.handle_datagram(t0, from, &mut datagram(&cid)).is_none());
        assert!(ep.last_route == Some((cid, (a, generation))));
        let unknown = ep.stats().dropped_unknown_cid;
        ep.discard(a.0);
        assert!(ep.last_route.is_none());
        // The same ID again finds no route, and none is remembered.
        assert!(ep.handle_datagram(t0, from, &mut datagram(&cid)).is_none());
        assert!(ep.last_route.is_none());
        assert_eq!(ep.stats().dropped_unknown_cid, unknown + 1);
        assert!(ep.is_empty());
    }

    #[test]
    fn garbage_datagrams_never_panic_and_are_counted() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(config(4), Some(server_config()), t0).unwrap();
        let from: SocketAddr = "192.0.2.9:1000".parse().unwrap();
        let mut n = 0u64;
        for len in [0usize, 1, 5, 20, 22, 100, 1200, 1500] {
            for first in [0x00u8, 0x40, 0x80, 0xc0, 0xff] {
                let mut d: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37)).collect();
                if let Some(b) = d.first_mut() {
                    *b = first;
                }
                assert!(ep.handle_datagram(t0, from, &mut d).is_none());
                n += 1;
            }
        }
        assert_eq!(ep.stats().datagrams_received, n);
        assert!(ep.is_empty());
        let mut buf = [0u8; 1500];
        while let Some(t) = ep.poll_transmit(t0, &mut buf) {
            // Whatever answers went out (resets, VN), none amplifies.
            assert!(t.size < 1200);
        }
    }
}
