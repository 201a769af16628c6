//! One quill connection as a sans-IO state machine.
//!
//! # Calling order
//!
//! The owner (the endpoint, the driver, or a test's simulated network) drives a
//! [`Connection`] with the current time, which it reads once per turn:
//!
//! 1. Feed every datagram that arrived with [`Connection::handle_datagram`].
//! 2. When the deadline from [`Connection::poll_timeout`] has passed, call
//!    [`Connection::handle_timeout`]. Calling it early is harmless (a no-op).
//! 3. Drain [`Connection::poll_event`] until `None` and act on the events (answer a
//!    [`Event::LoginRequested`] with [`Connection::accept_login`] or
//!    [`Connection::refuse_login`], read streams, ...). Application calls (`write`,
//!    `open_stream`, `close`, ...) may happen at any time in between.
//! 4. Call [`Connection::poll_transmit`] until it returns `None`, sending each datagram.
//! 5. Re-arm the timer with [`Connection::poll_timeout`] (it changes after 1–4).
//!
//! Nothing here reads a clock, touches a socket or blocks: a login waits for the
//! application's verdict while the connection keeps acknowledging and keeping alive.

mod ack_frequency;
mod cids;
mod ecn;
mod keys;
mod migrate;
mod ping;
mod preferred;
mod qlog;
mod recv;
mod send;
mod spaces;
mod stream_login;
mod upgrade;
mod zero_rtt;

pub use ecn::EcnCodepoint;
pub use migrate::MigrateError;
pub use ping::{ping_timeout, PingError, PingId, MAX_OUTSTANDING_PINGS, PING_TIMEOUT_FLOOR};
pub use qlog::{QlogSink, QlogStream};
pub(crate) use recv::Header as RecvHeader;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quill_crypto::hostkey::PublicKey;
use quill_crypto::packet::Suite;
use quill_crypto::schedule;

use self::keys::Keys;
use self::spaces::{OneRtt, PacketSpace, SpaceKeys};
use super::config::{
    ClientConfig, ConfigError, QuicV1Server, ServerConfig, TransportConfig, Version,
};
use super::error::{ConnectionError, HandshakeStage, TransportError, Unreachable};
use super::handshake::compat::{is_tls_version, rustls_version};
use super::handshake::tls::TlsHandshake;
use super::handshake::{Handshake, LoginRequest, Methods};
use super::recovery::{CongestionController, Pacer, RttEstimator};
use super::streams::{
    Dir, ReadError, ReadOutcome, Side, StreamEvent, StreamId, Streams, WriteError,
};
use crate::wire::{
    ConnectionId, PreferredAddress, Space, TransportErrorCode, TransportParameters, QUIC_V1,
    QUIC_V2, QUILL_VERSION,
};

use std::sync::Arc;

/// Something the application should know about.
#[derive(Debug)]
pub enum Event {
    /// Client: the server's host key was accepted under
    /// [`HostKeyPolicy::AcceptAndReport`](super::config::HostKeyPolicy::AcceptAndReport);
    /// record it (trust on first use).
    HostKeyAccepted(PublicKey),
    /// Server: a client asks to log in; answer with [`Connection::accept_login`] or
    /// [`Connection::refuse_login`]. Verify off the event loop: the connection waits.
    LoginRequested(LoginRequest),
    /// The login succeeded; streams and datagrams may be used.
    Connected {
        /// The account the server logged us into (client) or accepted (server).
        account: String,
        /// The server's welcome message (client side; empty on the server).
        message: String,
    },
    /// QUIC v1: the TLS handshake is complete (RFC 9001 §4.1.1; on the server also
    /// confirmed, §4.1.2) and streams and datagrams may be used (a client's first
    /// stream data goes out with its Finished). QUIC v1 has no login: there is **no
    /// account**
    /// ([`Connection::account`] stays `None`); what the peer may do is the
    /// application's decision (by ALPN, for instance).
    HandshakeConfirmed {
        /// The negotiated ALPN protocol, if any.
        alpn: Option<Vec<u8>>,
        /// The negotiated TLS key-exchange group (`X25519MLKEM768` between quills).
        key_exchange_group: Option<rustls::NamedGroup>,
    },
    /// Something happened on a stream.
    Stream(StreamEvent),
    /// A datagram arrived (read it with [`Connection::recv_datagram`]); raised when the
    /// receive queue becomes non-empty.
    DatagramReceived,
    /// A [`Connection::ping`] was acknowledged: the packet that carried it (the
    /// first, or one sent after a loss) got through.
    PingAcknowledged {
        /// Which ping.
        id: PingId,
        /// The packet's round trip less the peer's ACK delay (`ack_delay`), as RFC
        /// 9002 §5.3 adjusts `latest_rtt`.
        rtt: Duration,
        /// The ACK delay taken off: the peer's report in full (not capped at its
        /// `max_ack_delay`, unlike for the RTT estimator).
        ack_delay: Duration,
    },
    /// No packet carrying a [`Connection::ping`] was acknowledged within `after`
    /// ([`ping_timeout`]).
    PingLost {
        /// Which ping.
        id: PingId,
        /// How long it waited.
        after: Duration,
    },
    /// The connection ended; this is the last event.
    ConnectionLost(ConnectionError),
}

/// A datagram to send, written at the start of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Bytes written into the buffer.
    pub size: usize,
    /// The ECN codepoint to send it with (RFC 9000 §13.4): ECT(0) while the path is
    /// ECN-capable or being tested, `None` (Not-ECT) otherwise.
    pub ecn: Option<EcnCodepoint>,
}

/// Counters, for tools like `quill perf` and for tests.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received and decrypted.
    pub packets_received: u64,
    /// Datagram bytes sent.
    pub bytes_sent: u64,
    /// Datagram bytes received.
    pub bytes_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Packets dropped because they did not parse or decrypt.
    pub packets_dropped: u64,
    /// Keep-alive PINGs sent.
    pub keep_alives_sent: u64,
    /// When the last keep-alive PING was sent.
    pub last_keep_alive: Option<Instant>,
    /// Key updates completed (either side initiated).
    pub key_updates: u64,
    /// Key updates this side initiated (RFC 9001 §6.1), not counting the ones it only
    /// answered.
    pub key_updates_initiated: u64,
    /// Client: Retry packets accepted (0 or 1, RFC 9000 §17.2.5.2).
    pub retries: u64,
    /// Congestion events.
    pub congestion_events: u64,
    /// Probe timeouts.
    pub ptos: u64,
    /// Times the peer moved to a new address (NAT rebinding or migration).
    pub migrations: u64,
    /// New peer addresses validated with PATH_CHALLENGE/PATH_RESPONSE (and, on a
    /// client, its own new paths after [`Connection::migrate`]).
    pub paths_validated: u64,
    /// Times we moved to a new local address ourselves ([`Connection::migrate`]).
    pub local_migrations: u64,
    /// ACK frames whose ECN-CE count grew (each a congestion event, RFC 9002 §7.1).
    pub ecn_ce_events: u64,
    /// Whether we still mark packets ECT(0): ECN validation (RFC 9000 §13.4.2) has not
    /// failed on the current path.
    pub ecn_marking: bool,
    /// Whether a peer report confirmed our ECT(0) marks on the current path.
    pub ecn_validated: bool,
    /// Packets received with ECT(0), ECT(1) and CE, all spaces.
    pub ecn_received: crate::wire::EcnCounts,
    /// QUIC v1: 0-RTT packets sent (client) or received and decrypted (server).
    pub zero_rtt_packets: u64,
    /// ACK frames sent, all spaces.
    pub ack_frames_sent: u64,
    /// ACK_FREQUENCY frames sent (draft-ietf-quic-ack-frequency).
    pub ack_frequency_frames_sent: u64,
}

/// Sizes of the internal buffers a peer can influence; they stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    /// Sent packets awaiting acknowledgement, all spaces.
    pub sent_packets: usize,
    /// ACK ranges remembered, all spaces.
    pub ack_ranges: usize,
    /// Pending connection-level events.
    pub events: usize,
    /// Datagrams queued in either direction.
    pub datagrams: usize,
    /// Open streams.
    pub streams: usize,
    /// Bytes written on streams and not yet acknowledged (unsent and in flight),
    /// bounded by `StreamsConfig::max_connection_send_buffer`.
    pub send_buffered: u64,
}

/// Why `send_datagram` refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramError {
    /// The peer does not accept datagrams, or the connection is not up.
    Unsupported,
    /// Larger than the peer accepts or than fits in a packet.
    TooLarge,
    /// The send queue is full; try again after some are sent.
    Blocked,
}

impl std::fmt::Display for DatagramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatagramError::Unsupported => "datagrams are not available on this connection",
            DatagramError::TooLarge => "datagram larger than the peer accepts",
            DatagramError::Blocked => "datagram send queue is full",
        })
    }
}

impl std::error::Error for DatagramError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Handshake and login in progress.
    Handshaking,
    /// Logged in: streams and datagrams flow.
    Established,
    /// We sent CONNECTION_CLOSE; answering stray packets with it until the deadline.
    Closing,
    /// The peer closed; sending nothing until the deadline.
    Draining,
    /// Finished: the owner may free the connection.
    Drained,
}

/// The per-connection timers (a small fixed table; `poll_timeout` is the minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    LossDetection = 0,
    Ack = 1,
    Idle = 2,
    KeepAlive = 3,
    Close = 4,
    KeyDiscard = 5,
    Pacing = 6,
    Handshake = 7,
    /// Server: a login refusal held back until then ([`Connection::refuse_login_at`]).
    LoginAnswer = 8,
    /// Client: the next probe of the server's preferred address is due.
    PreferredProbe = 9,
    /// The earliest deadline of an outstanding [`Connection::ping`].
    Ping = 10,
}

/// 1-RTT packets a QUIC v1 server keeps while its TLS handshake is not complete
/// (RFC 9001 §5.7): enough for a client's first flight of requests, little memory per
/// half-open connection (at most this many datagrams' worth).
const MAX_EARLY_ONE_RTT: usize = 4;

const TIMER_COUNT: usize = 11;
const ALL_TIMERS: [Timer; TIMER_COUNT] = [
    Timer::LossDetection,
    Timer::Ack,
    Timer::Idle,
    Timer::KeepAlive,
    Timer::Close,
    Timer::KeyDiscard,
    Timer::Pacing,
    Timer::Handshake,
    Timer::LoginAnswer,
    Timer::PreferredProbe,
    Timer::Ping,
];

/// A new server connection's connection IDs ([`Connection::server_offering`]).
pub(crate) struct ServerCids {
    /// The server's new CID.
    pub local: ConnectionId,
    /// The Destination CID the client chose.
    pub original_dcid: ConnectionId,
    /// The client's Source CID.
    pub client: ConnectionId,
    /// A Retry's CIDs: `(original_dcid_before_retry, retry_scid)`.
    pub retry: Option<(ConnectionId, ConnectionId)>,
    /// The stateless reset token of `local`.
    pub reset_token: Option<[u8; 16]>,
    /// The preferred address's CID (sequence number 1) and its reset token.
    pub preferred: Option<(ConnectionId, [u8; 16])>,
}

/// One quill connection. See the module documentation for the calling order.
pub struct Connection {
    side: Side,
    /// The version on the wire: [`QUILL_VERSION`], [`QUIC_V1`] or [`QUIC_V2`].
    version: u32,
    /// The client Destination CID the Initial keys come from (upgrade.rs).
    initial_keys_dcid: ConnectionId,
    /// QUIC v2 by compatible negotiation, server: the original version's (v1)
    /// Initial keys, still opening the client's v1 Initials (upgrade.rs).
    other_initial: Option<Box<SpaceKeys>>,
    /// QUIC v1: the negotiated ALPN protocol and key-exchange group.
    alpn: Option<Vec<u8>>,
    kx_group: Option<rustls::NamedGroup>,
    config: Arc<TransportConfig>,
    state: State,
    hs: Handshake,
    spaces: [PacketSpace; 3],
    one_rtt: Option<Box<OneRtt>>,
    suite: Option<Suite>,

    local_cid: ConnectionId,
    remote_cid: ConnectionId,
    /// Connection IDs issued by either side after the handshake (RFC 9000 §5.1).
    cids: cids::CidState,
    /// The Destination CID of the client's first Initial (both sides remember it).
    original_dcid: ConnectionId,
    /// Client: the CID a Retry told us to use, for transport-parameter checks.
    retry_scid: Option<ConnectionId>,
    /// Client: the token from a Retry, echoed in every Initial.
    retry_token: Vec<u8>,
    /// Client: whether the first server packet has arrived (remote CID fixed).
    remote_cid_set: bool,
    remote: SocketAddr,

    /// Server: whether the client's address is validated (anti-amplification).
    address_validated: bool,
    /// Server: datagram bytes received from the unvalidated address.
    amp_received: u64,
    /// Server: datagram bytes sent to the unvalidated address.
    amp_sent: u64,

    handshake_confirmed: bool,
    /// The key exchange is done and the login is under way (client: Finished and
    /// login sent; server: the client's Finished checked out).
    key_exchange_done: bool,
    /// Client: an ACK for one of our Handshake packets arrived, so the server has
    /// validated our address (RFC 9002 §6.2.2.1 anti-deadlock no longer needed).
    handshake_acked: bool,
    /// Server: HANDSHAKE_DONE owed.
    handshake_done_pending: bool,
    /// QUIC v1, server: 1-RTT packets that arrived before the TLS handshake completed
    /// (the client's Finished lost or reordered), processed once it has; at most
    /// [`MAX_EARLY_ONE_RTT`].
    early_one_rtt: Vec<(SocketAddr, Vec<u8>)>,
    /// QUIC v1: session resumption and 0-RTT.
    early: zero_rtt::EarlyData,
    /// Server: LoginAccepted bytes written to the application CRYPTO stream.
    peer_params: Option<TransportParameters>,
    peer_host_key: Option<PublicKey>,
    account: Option<String>,

    rtt: RttEstimator,
    /// When this path's first RTT sample was taken: packets sent before it do not
    /// count towards persistent congestion (RFC 9002 §7.6.2).
    first_rtt_sample: Option<Instant>,
    cc: Box<dyn CongestionController>,
    pacer: Pacer,
    bytes_in_flight: u64,
    pto_count: u32,
    /// Send time of the first packet sent after the last RTT sample, for persistent congestion.
    mtu: u16,
    mtu_probe_pending: bool,
    mtu_probed: bool,

    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    /// Last time we sent an ack-eliciting packet (keep-alive is measured from it).
    last_eliciting_sent: Instant,
    /// When the connection was created (for the duration in a server's log).
    started: Instant,
    /// Whether an ack-eliciting packet was sent since the last packet was received
    /// (RFC 9000 §10.1: only the first one restarts the idle timer).
    eliciting_since_receive: bool,
    ping_pending: bool,
    /// Pings the application asked for, until acknowledged or lost (ping.rs).
    pings: ping::Pings,
    /// ACK_FREQUENCY and IMMEDIATE_ACK, both directions (ack_frequency.rs).
    ack_freq: ack_frequency::AckFrequencyState,
    keep_alive_due: bool,
    /// Server: the reason of a refusal held back until the LoginAnswer timer.
    held_refusal: Option<String>,
    /// What the application attached ([`Connection::attach`]); dropped with us.
    attachments: Vec<Box<dyn std::any::Any + Send>>,

    timers: [Option<Instant>; TIMER_COUNT],
    /// The loss-detection timer in `timers` is out of date: ack-eliciting packets
    /// were sent since it was set. RFC 9002 Appendix A re-arms it on every such
    /// packet, and its deadline depends only on the state after the last one, so the
    /// send path only marks it here; [`Connection::poll_timeout`] computes it (as of
    /// `last_eliciting_sent`, the last packet's send time) and every other reader
    /// brings it up to date first. Once per flush instead of once per packet.
    loss_timer_stale: bool,
    streams: Streams,
    events: VecDeque<Event>,
    datagrams_in: VecDeque<Vec<u8>>,
    datagrams_out: VecDeque<Vec<u8>>,
    path_responses: VecDeque<[u8; 8]>,
    /// Server: the PATH_CHALLENGE data we sent to a new client address, until answered.
    path_challenge: Option<[u8; 8]>,
    /// A PATH_CHALLENGE frame is owed (first send, or retransmission after loss).
    path_challenge_pending: bool,
    /// Client: the server's preferred address being probed (RFC 9000 §9.6.1).
    preferred: Option<preferred::PreferredPath>,
    /// Server: the datagram being processed came to our preferred address's socket.
    arriving_via_preferred: bool,
    /// Server: send from our preferred address's socket (the client's latest packet
    /// came there).
    via_preferred: bool,
    /// Size of the datagram being processed (for anti-amplification on a new path).
    datagram_len: u64,
    rng: Arc<dyn quill_crypto::random::Random>,

    /// The CONNECTION_CLOSE we send while closing.
    close: Option<PendingClose>,
    close_pending: bool,
    error: Option<ConnectionError>,
    stats: ConnectionStats,
    /// Scratch space reused by every ACK (no allocation per ACK).
    acked_buf: Vec<(u64, super::recovery::SentPacket<spaces::SentFrames>)>,
    /// Scratch space reused by loss detection.
    lost_buf: Vec<(u64, super::recovery::SentPacket<spaces::SentFrames>)>,
    /// Closes sent while closing (RFC 9000 §10.2.1 asks us to limit them).
    closes_sent: u32,
    /// ECN: counts of what arrived, marking and validation of what we send.
    ecn: ecn::Ecn,
    /// The qlog trace, when the configuration has a sink (qlog.rs).
    qlog: Option<Box<qlog::QlogTrace>>,
}

/// The CONNECTION_CLOSE a closing connection sends (and repeats).
#[derive(Clone)]
pub(super) struct PendingClose {
    pub(super) code: u64,
    /// The frame that triggered a transport error (0 if none or unknown); `None` for
    /// an application close (frame type 0x1d, which has no such field).
    pub(super) frame_type: Option<u64>,
    pub(super) reason: String,
}

impl Connection {
    /// Starts a client connection to `remote`. `local_cid` is our connection ID and
    /// `initial_dcid` the random Destination CID of our first Initial (≥ 8 bytes).
    pub fn client(
        config: ClientConfig,
        now: Instant,
        remote: SocketAddr,
        local_cid: ConnectionId,
        initial_dcid: ConnectionId,
    ) -> Result<Connection, ConfigError> {
        config.transport.validate()?;
        if config.suites.is_empty() {
            return Err(ConfigError("offer at least one AEAD suite".into()));
        }
        let transport = config.transport.clone();
        let rng = config.rng.clone();
        let streams = Streams::new(Side::Client, &transport.streams);
        let params = local_params(&transport, &streams, local_cid, None, None);
        let started = match &config.version {
            Version::Quill => Handshake::client(config, &params).map(|h| (h, QUILL_VERSION)),
            Version::QuicV1 { alpn } => TlsHandshake::client(&config, alpn, &params)
                .map(|(hs, hello)| ((Handshake::Tls(Box::new(hs)), hello), QUIC_V1)),
        };
        let ((hs, client_hello), version) =
            started.map_err(|e| ConfigError(format!("cannot start the handshake: {e}")))?;
        let mut conn = Connection::new(
            version,
            rng,
            Side::Client,
            transport,
            hs,
            streams,
            now,
            remote,
            local_cid,
            initial_dcid,
            initial_dcid,
        );
        conn.install_initial_keys(initial_dcid);
        conn.qlog_start(now, &params);
        conn.start_zero_rtt();
        conn.address_validated = true;
        conn.spaces[Space::Initial as usize]
            .crypto_mut()
            .send
            .write(&client_hello);
        conn.reset_idle_timer(now);
        conn.arm_handshake_timer(now);
        tracing::info!(
            "waiting for the server's handshake (Initial sent to {remote}, handshake timeout {:?})",
            conn.config.handshake_timeout
        );
        Ok(conn)
    }

    /// Creates the server side of a connection for a client's first Initial, which
    /// carried `version`: [`QUILL_VERSION`], or [`QUIC_V1`] if `config.quic_v1` accepts
    /// it (the version picks the handshake). `original_dcid` is the Destination CID the
    /// client chose, `client_cid` its Source CID, `local_cid` the server's new CID.
    /// `retry` carries the CIDs of a Retry that validated the address
    /// (`Some((original_dcid_before_retry, retry_scid))`), in which case the address
    /// counts as validated.
    #[allow(clippy::too_many_arguments)]
    pub fn server(
        version: u32,
        config: ServerConfig,
        now: Instant,
        remote: SocketAddr,
        local_cid: ConnectionId,
        original_dcid: ConnectionId,
        client_cid: ConnectionId,
        retry: Option<(ConnectionId, ConnectionId)>,
        reset_token: Option<[u8; 16]>,
    ) -> Result<Connection, ConfigError> {
        let cids = ServerCids {
            local: local_cid,
            original_dcid,
            client: client_cid,
            retry,
            reset_token,
            preferred: None,
        };
        Connection::server_offering(version, config, now, remote, cids)
    }

    /// [`Connection::server`] with its connection IDs in `cids`, which may also hold
    /// the one the endpoint routes for `config.preferred_address` (RFC 9000 §9.6).
    pub(crate) fn server_offering(
        version: u32,
        config: ServerConfig,
        now: Instant,
        remote: SocketAddr,
        cids: ServerCids,
    ) -> Result<Connection, ConfigError> {
        let ServerCids {
            local: local_cid,
            original_dcid,
            client: client_cid,
            retry,
            reset_token,
            preferred: preferred_cid,
        } = cids;
        config.transport.validate()?;
        let transport = config.transport.clone();
        let rng = config.rng.clone();
        let streams = Streams::new(Side::Server, &transport.streams);
        let (odcid, retry_scid) = match retry {
            Some((odcid, rscid)) => (odcid, Some(rscid)),
            None => (original_dcid, None),
        };
        let mut params = local_params(&transport, &streams, local_cid, Some(odcid), retry_scid);
        params.stateless_reset_token = reset_token;
        // RFC 9000 §9.6: the preferred address and its connection ID (sequence 1).
        let preferred = config
            .preferred_address
            .zip(preferred_cid)
            .filter(|_| !local_cid.is_empty());
        params.preferred_address = preferred.map(|(pa, (cid, token))| PreferredAddress {
            ipv4: pa.ipv4,
            ipv6: pa.ipv6,
            connection_id: cid,
            stateless_reset_token: token,
        });
        let hs = match (version, &config.quic_v1) {
            (QUILL_VERSION, _) => Handshake::server(config, &params),
            (QUIC_V1, Some(v1)) | (QUIC_V2, Some(v1 @ QuicV1Server { quic_v2: true, .. })) => {
                TlsHandshake::server(
                    v1.tls.clone(),
                    &params,
                    Methods::of(&config),
                    version,
                    v1.quic_v2,
                )
                .map(|h| Handshake::Tls(Box::new(h)))
                .map_err(|e| ConfigError(format!("cannot start the handshake: {e}")))?
            }
            _ => {
                return Err(ConfigError(format!(
                    "version {version:#x} is not accepted by this server"
                )))
            }
        };
        let mut conn = Connection::new(
            version,
            rng,
            Side::Server,
            transport,
            hs,
            streams,
            now,
            remote,
            local_cid,
            client_cid,
            odcid,
        );
        // Initial keys come from the DCID of the Initial being answered (after a Retry,
        // the Retry's SCID, which the client now uses as DCID).
        conn.install_initial_keys(original_dcid);
        conn.qlog_start(now, &params);
        if let Some(t) = reset_token {
            conn.cids.local.insert(0, (local_cid, t));
        }
        if let Some((_, (cid, token))) = preferred {
            conn.cids.local.insert(1, (cid, token));
            conn.cids.next_local_seq = 2;
        }
        conn.remote_cid_set = true;
        conn.address_validated = retry.is_some();
        conn.reset_idle_timer(now);
        conn.arm_handshake_timer(now);
        Ok(conn)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        version: u32,
        rng: Arc<dyn quill_crypto::random::Random>,
        side: Side,
        config: Arc<TransportConfig>,
        hs: Handshake,
        streams: Streams,
        now: Instant,
        remote: SocketAddr,
        local_cid: ConnectionId,
        remote_cid: ConnectionId,
        original_dcid: ConnectionId,
    ) -> Connection {
        let mtu = super::config::MIN_UDP_PAYLOAD;
        Connection {
            side,
            version,
            initial_keys_dcid: original_dcid,
            other_initial: None,
            alpn: None,
            kx_group: None,
            state: State::Handshaking,
            hs,
            spaces: [PacketSpace::new(), PacketSpace::new(), PacketSpace::new()],
            one_rtt: None,
            suite: None,
            local_cid,
            remote_cid,
            cids: cids::CidState::new(local_cid, [0; 16], remote_cid),
            original_dcid,
            retry_scid: None,
            retry_token: Vec::new(),
            remote_cid_set: false,
            remote,
            address_validated: false,
            amp_received: 0,
            amp_sent: 0,
            handshake_confirmed: false,
            key_exchange_done: false,
            handshake_acked: false,
            handshake_done_pending: false,
            early_one_rtt: Vec::new(),
            early: zero_rtt::EarlyData::default(),
            peer_params: None,
            peer_host_key: None,
            account: None,
            rtt: RttEstimator::new(config.initial_rtt),
            first_rtt_sample: None,
            cc: config.congestion_controller(mtu),
            pacer: Pacer::new(now, mtu),
            bytes_in_flight: 0,
            pto_count: 0,
            mtu,
            mtu_probe_pending: false,
            mtu_probed: false,
            idle_timeout: config.idle_timeout,
            keep_alive: config.keep_alive_interval,
            last_eliciting_sent: now,
            started: now,
            eliciting_since_receive: false,
            ping_pending: false,
            pings: ping::Pings::default(),
            ack_freq: Default::default(),
            keep_alive_due: false,
            held_refusal: None,
            attachments: Vec::new(),
            timers: [None; TIMER_COUNT],
            loss_timer_stale: false,
            streams,
            events: VecDeque::new(),
            datagrams_in: VecDeque::new(),
            datagrams_out: VecDeque::new(),
            path_responses: VecDeque::new(),
            path_challenge: None,
            path_challenge_pending: false,
            preferred: None,
            arriving_via_preferred: false,
            via_preferred: false,
            datagram_len: 0,
            rng,
            close: None,
            close_pending: false,
            error: None,
            stats: ConnectionStats::default(),
            acked_buf: Vec::new(),
            lost_buf: Vec::new(),
            closes_sent: 0,
            ecn: ecn::Ecn::new(config.ecn),
            qlog: None,
            config,
        }
    }

    fn install_initial_keys(&mut self, dcid: ConnectionId) {
        self.initial_keys_dcid = dcid;
        self.spaces[Space::Initial as usize].keys = Some(self.initial_keys(self.version, dcid));
    }

    /// The Initial keys of `version` for a client's Destination CID `dcid`.
    fn initial_keys(&self, version: u32, dcid: ConnectionId) -> Box<SpaceKeys> {
        if is_tls_version(version) {
            // RFC 9001 §5.2 (RFC 9369 §3.3.1 for v2's salt and labels): the Initial
            // secrets of QUIC v1 or v2, through rustls.
            let side = match self.side {
                Side::Client => rustls::Side::Client,
                Side::Server => rustls::Side::Server,
            };
            let k = quic_v1_initial_suite().keys(dcid.as_ref(), side, rustls_version(version));
            SpaceKeys::new(Keys::tls(k.local), Keys::tls(k.remote))
        } else {
            let (client, server) = schedule::initial_secrets(dcid.as_ref());
            let (local, remote) = self.local_remote(client, server);
            // RFC 9001 §5.2: Initial packets use AES-128-GCM (obfuscation, not secrecy).
            let suite = Suite::Aes128Gcm;
            SpaceKeys::new(Keys::quill(suite, &local), Keys::quill(suite, &remote))
        }
    }

    /// The version on the wire ([`QUILL_VERSION`], [`QUIC_V1`] or [`QUIC_V2`]; a
    /// QUIC v1 connection may move to v2 during its handshake).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// QUIC v1: the negotiated ALPN protocol (once the handshake is complete).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// QUIC v1: the negotiated TLS key-exchange group (once the handshake is
    /// complete). `None` on quill's own version, whose key exchange is always the
    /// hybrid X25519 + ML-KEM-768 (docs/SPEC.md §4).
    pub fn key_exchange_group(&self) -> Option<rustls::NamedGroup> {
        self.kx_group
    }

    /// `(ours, the peer's)` of a pair given as `(the client's, the server's)`.
    fn local_remote<T>(&self, client: T, server: T) -> (T, T) {
        match self.side {
            Side::Client => (client, server),
            Side::Server => (server, client),
        }
    }

    // ---------------------------------------------------------------- timers

    /// The earliest time at which [`Connection::handle_timeout`] should be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.loss_timer_stale {
            return self.timers.iter().flatten().min().copied();
        }
        let loss = self.loss_detection_deadline(self.last_eliciting_sent);
        self.timers
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != Timer::LossDetection as usize)
            .filter_map(|(_, t)| *t)
            .chain(loss)
            .min()
    }

    fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        if t == Timer::LossDetection {
            self.loss_timer_stale = false;
        }
        self.timers[t as usize] = at;
    }

    /// Disarms every timer.
    fn clear_timers(&mut self) {
        self.timers = [None; TIMER_COUNT];
        self.loss_timer_stale = false;
    }

    /// Brings a loss-detection timer marked out of date up to date (see
    /// `loss_timer_stale`).
    fn update_loss_timer(&mut self) {
        if self.loss_timer_stale {
            self.set_loss_detection_timer(self.last_eliciting_sent);
        }
    }

    fn timer(&self, t: Timer) -> Option<Instant> {
        self.timers[t as usize]
    }

    /// Handles every timer that has expired by `now`; a spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.qlog_now(now);
        self.update_loss_timer();
        for t in ALL_TIMERS {
            let Some(at) = self.timers[t as usize] else {
                continue;
            };
            if at > now {
                continue;
            }
            self.timers[t as usize] = None;
            match t {
                Timer::Close => {
                    self.state = State::Drained;
                    self.clear_timers();
                    return;
                }
                Timer::Idle => {
                    self.lost(ConnectionError::TimedOut);
                    self.state = State::Drained;
                    self.clear_timers();
                    return;
                }
                Timer::Handshake => {
                    if self.state == State::Handshaking {
                        self.lost(ConnectionError::HandshakeTimedOut {
                            after: self.config.handshake_timeout,
                            stage: self.handshake_stage(),
                        });
                        self.state = State::Drained;
                        self.clear_timers();
                        return;
                    }
                }
                Timer::LossDetection => self.on_loss_detection_timeout(now),
                Timer::Ack => {} // poll_transmit sees the expired ACK deadline
                Timer::KeepAlive => {
                    if self.state == State::Established {
                        self.keep_alive_due = true;
                    }
                }
                Timer::KeyDiscard => {
                    if let Some(k) = self.one_rtt.as_mut() {
                        k.prev_remote = None;
                    }
                }
                Timer::Pacing => {}
                Timer::PreferredProbe => {} // poll_transmit sends the probe that is due
                Timer::Ping => self.on_ping_timeout(now),
                Timer::LoginAnswer => {
                    if let Some(reason) = self.held_refusal.take() {
                        self.refuse_login(now, &reason);
                    }
                }
            }
        }
    }

    fn reset_idle_timer(&mut self, now: Instant) {
        // RFC 9000 §10.1: the effective timeout is at least three PTOs so that a
        // lossy but live path is not mistaken for a dead one.
        let timeout = self.idle_timeout.max(3 * self.pto_duration(Space::Data));
        self.set_timer(Timer::Idle, Some(now + timeout));
    }

    /// The handshake and login must be done by `now + handshake_timeout`; reaching
    /// [`State::Established`] disarms it (the timer does nothing in other states).
    fn arm_handshake_timer(&mut self, now: Instant) {
        self.set_timer(Timer::Handshake, Some(now + self.config.handshake_timeout));
    }

    /// How far the handshake got, for [`ConnectionError::HandshakeTimedOut`].
    fn handshake_stage(&self) -> HandshakeStage {
        if self.stats.packets_received == 0 {
            HandshakeStage::NoAnswer
        } else if self.key_exchange_done
            && (!matches!(self.hs, Handshake::Tls(_)) || self.login_on_stream())
        {
            // QUIC v1 has a login only with ALPN `quill`, once TLS is complete.
            HandshakeStage::Login
        } else {
            HandshakeStage::KeyExchange
        }
    }

    fn arm_keep_alive(&mut self) {
        let at = match (self.state, self.keep_alive) {
            (State::Established, Some(ka)) => Some(self.last_eliciting_sent + ka),
            _ => None,
        };
        self.set_timer(Timer::KeepAlive, at);
    }

    /// PTO duration for `space` without backoff (RFC 9002 §6.2.1).
    fn pto_duration(&self, space: Space) -> Duration {
        self.rtt.pto_period(self.pto_ack_delay(space), 0)
    }

    /// PTO duration for `space` with the current backoff (RFC 9002 §6.2.1), capped
    /// (see [`RttEstimator::pto_period`]).
    fn pto_backed_off(&self, space: Space) -> Duration {
        self.rtt
            .pto_period(self.pto_ack_delay(space), self.pto_count)
    }

    /// RFC 9002 §6.2.1: max_ack_delay counts in the application space's PTO once the
    /// handshake is confirmed, and is 0 for Initial and Handshake.
    fn pto_ack_delay(&self, space: Space) -> Duration {
        if space == Space::Data && self.handshake_confirmed {
            self.peer_max_ack_delay()
        } else {
            Duration::ZERO
        }
    }

    fn peer_max_ack_delay(&self) -> Duration {
        self.peer_params
            .as_ref()
            .map_or(Duration::from_millis(25), |p| {
                Duration::from_millis(p.max_ack_delay_ms)
            })
    }

    // ------------------------------------------------------------ app-facing

    /// Pops the next event, if any. Stream events come after connection events.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            if self.events.is_empty() {
                // Events come in rare bursts; an idle connection keeps no queue.
                self.events = VecDeque::new();
            }
            return Some(e);
        }
        if matches!(self.state, State::Established | State::Handshaking) {
            while let Some(e) = self.streams.poll_event() {
                if !self.is_login_event(&e) {
                    return Some(Event::Stream(e));
                }
            }
        }
        None
    }

    /// Server: accepts the pending login as `account` and sends `message` to the client.
    /// Does nothing if no login is pending.
    pub fn accept_login(&mut self, now: Instant, account: &str, message: &str) {
        if self.side != Side::Server || self.state != State::Handshaking {
            return;
        }
        let Some(bytes) = self.hs.accept_login(account, message) else {
            return;
        };
        if matches!(self.hs, Handshake::Tls(_)) {
            // QUIC v1 with ALPN `quill`: the handshake was confirmed at TLS
            // completion; the answer goes on stream 0.
            self.answer_stream_login(&bytes, account);
            return;
        }
        self.spaces[Space::Data as usize]
            .crypto_mut()
            .send
            .write(&bytes);
        self.handshake_done_pending = true;
        self.logged_in(account.to_owned(), String::new());
        // The server's handshake is confirmed once it accepts the login; it sends
        // HANDSHAKE_DONE and drops the Handshake keys (RFC 9001 §4.1.2, §4.9.2).
        self.handshake_confirmed = true;
        self.discard_space(now, Space::Handshake);
        self.start_mtu_probe();
        self.set_loss_detection_timer(now);
    }

    /// QUIC v1: the TLS handshake is complete. Server: the client's Finished is
    /// verified, which confirms it (RFC 9001 §4.1.2): send HANDSHAKE_DONE and drop
    /// the Handshake keys (§4.9.2). Client: the connection is up; the handshake is
    /// confirmed by HANDSHAKE_DONE, not here.
    fn on_tls_complete(&mut self, now: Instant) {
        if let Handshake::Tls(t) = &self.hs {
            self.alpn = t.alpn().map(<[u8]>::to_vec);
            self.kx_group = t.key_exchange_group();
            self.suite = t.suite();
        }
        if let (Some(q), Some(alpn)) = (self.qlog.as_mut(), &self.alpn) {
            q.alpn_information(now, alpn);
        }
        self.on_early_data_outcome();
        if self.state != State::Handshaking {
            return;
        }
        if self.side == Side::Server {
            self.handshake_done_pending = true;
            self.handshake_confirmed = true;
            self.discard_space(now, Space::Handshake);
            self.start_mtu_probe();
            self.set_loss_detection_timer(now);
        }
        // Client: RFC 9001 §4.1.1, complete, so 1-RTT data may go out with the
        // Finished; confirmed only by HANDSHAKE_DONE (§4.1.2), which also drops the
        // Handshake keys and allows key updates. ALPN `quill` logs in first.
        match self.start_stream_login() {
            Ok(true) => {}
            Ok(false) => self.established_without_login(),
            Err(e) => self.close_for(e),
        }
    }

    /// QUIC v1: the connection is up with no login and no account
    /// ([`Event::HandshakeConfirmed`]).
    fn established_without_login(&mut self) {
        // ALPN `quill` is up only once its login on stream 0 is accepted (a client's
        // HANDSHAKE_DONE may come first).
        if self.state != State::Handshaking || self.login_on_stream() {
            return;
        }
        self.state = State::Established;
        self.set_timer(Timer::Handshake, None);
        self.events.push_back(Event::HandshakeConfirmed {
            alpn: self.alpn.clone(),
            key_exchange_group: self.kx_group,
        });
        self.arm_keep_alive();
    }

    /// Server: refuses the pending login. Every kind of failure should pass the same
    /// `reason` so that the answer reveals nothing (docs/SPEC.md §4.8).
    pub fn refuse_login(&mut self, now: Instant, reason: &str) {
        if self.side != Side::Server || !self.hs.awaiting_verdict() {
            return;
        }
        self.hs.fail();
        self.close_with(
            TransportError::new(TransportErrorCode::LOGIN_REFUSED, reason),
            ConnectionError::LoginRefused {
                reason: reason.to_owned(),
            },
        );
        let pto = self.pto_duration(Space::Data);
        self.set_timer(Timer::Close, Some(now + 3 * pto));
    }

    /// Server: ends a handshake that has not completed with CONNECTION_REFUSED (RFC
    /// 9000 §20.1), for example to make room for other clients. Does nothing once
    /// the login was accepted or the connection is closing.
    pub fn refuse(&mut self, now: Instant, reason: &str) {
        if self.side != Side::Server || self.state != State::Handshaking {
            return;
        }
        self.hs.fail();
        let err = TransportError::new(TransportErrorCode::CONNECTION_REFUSED, reason);
        self.close_with(err.clone(), ConnectionError::Transport(err));
        let pto = self.pto_duration(Space::Data);
        self.set_timer(Timer::Close, Some(now + 3 * pto));
    }

    /// Client: the network reported the server unreachable (an ICMP error for a
    /// datagram we sent to it). Ends the connection at once if nothing has been heard
    /// from the server yet; ignored afterwards, since a forged ICMP error must not
    /// end a working connection (RFC 8085 §5.2 asks applications to act on ICMP
    /// errors; like TCP, which aborts a connection attempt on a hard ICMP error but
    /// not an established connection, RFC 5461 §4, quill only trusts it while
    /// connecting).
    pub fn handle_unreachable(&mut self, reason: Unreachable) {
        if self.side != Side::Client
            || self.state != State::Handshaking
            || self.stats.packets_received > 0
        {
            return;
        }
        self.lost(ConnectionError::Unreachable(reason));
        self.state = State::Drained;
        self.clear_timers();
    }

    /// Server: refuses the pending login with `reason`, answering at `at` (at once if
    /// `at` has passed), but no later than half the effective idle timeout from now, so
    /// that the client, which hears nothing meanwhile, is still waiting for it. Until
    /// then the connection keeps acknowledging; the refusal leaves when the timer
    /// fires. This is how a server slows guessing down without holding a thread
    /// (docs/SPEC.md §4.8).
    pub(crate) fn refuse_login_at(&mut self, now: Instant, reason: &str, at: Instant) {
        let at = at.min(now + self.idle_timeout / 2);
        if at <= now {
            return self.refuse_login(now, reason);
        }
        if self.side != Side::Server || !self.hs.awaiting_verdict() || self.held_refusal.is_some() {
            return;
        }
        self.held_refusal = Some(reason.to_owned());
        self.set_timer(Timer::LoginAnswer, Some(at));
    }

    /// Keeps `data` until the connection is dropped: RAII bookkeeping that must live
    /// exactly as long as the connection (for example a slot in a per-account count
    /// of sessions, released when the endpoint frees the connection).
    pub fn attach(&mut self, data: Box<dyn std::any::Any + Send>) {
        self.attachments.push(data);
    }

    /// Opens a stream; `None` if the peer's stream limit is reached (or not yet connected).
    pub fn open_stream(&mut self, dir: Dir) -> Option<StreamId> {
        if self.state != State::Established && !self.early_streams() {
            return None;
        }
        self.streams.open(dir)
    }

    /// Accepts a stream the peer opened.
    pub fn accept_stream(&mut self, dir: Dir) -> Option<StreamId> {
        self.streams.accept(dir)
    }

    /// Writes to a stream; returns how much was accepted (flow control and the send
    /// buffer bound it).
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        if self.state != State::Established && !self.early_streams() {
            return Err(WriteError::ClosedStream);
        }
        self.streams.write(id, data)
    }

    /// Like [`Connection::write`], but without copying: the first bytes of `data`
    /// that flow control and the send buffer allow are kept by reference until the
    /// peer acknowledges them. Returns how many were taken.
    pub fn write_bytes(&mut self, id: StreamId, data: Bytes) -> Result<usize, WriteError> {
        if self.state != State::Established && !self.early_streams() {
            return Err(WriteError::ClosedStream);
        }
        self.streams.write_bytes(id, data)
    }

    /// Marks the end of a stream's data.
    pub fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        self.streams.finish(id)
    }

    /// Abandons sending on a stream (RESET_STREAM).
    pub fn reset_stream(&mut self, id: StreamId, code: u64) -> Result<(), WriteError> {
        self.streams.reset(id, code)
    }

    /// Reads from a stream.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<ReadOutcome, ReadError> {
        self.streams.read(id, buf)
    }

    /// Reads without copying: hands at most `max` contiguous bytes of the stream to
    /// `f` where they lie in the reassembly buffer (in up to two calls, in order) and
    /// consumes them. Outcomes as for [`Connection::read`] (`Data(n)`: `n` bytes went
    /// to `f`).
    pub fn read_in_place(
        &mut self,
        id: StreamId,
        max: usize,
        f: impl FnMut(&[u8]),
    ) -> Result<ReadOutcome, ReadError> {
        self.streams.read_in_place(id, max, f)
    }

    /// Asks the peer to stop sending on a stream (STOP_SENDING).
    pub fn stop_sending(&mut self, id: StreamId, code: u64) -> Result<(), ReadError> {
        self.streams.stop_sending(id, code)
    }

    /// Queues an unreliable datagram (RFC 9221).
    pub fn send_datagram(&mut self, data: &[u8]) -> Result<(), DatagramError> {
        if self.state != State::Established {
            return Err(DatagramError::Unsupported);
        }
        let Some(max) = self.max_datagram_size() else {
            return Err(DatagramError::Unsupported);
        };
        if data.len() > max {
            return Err(DatagramError::TooLarge);
        }
        if self.datagrams_out.len() >= self.config.datagram_send_queue {
            return Err(DatagramError::Blocked);
        }
        self.datagrams_out.push_back(data.to_vec());
        Ok(())
    }

    /// Largest datagram payload that can be sent now, if the peer accepts datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let peer = self.peer_params.as_ref()?.max_datagram_frame_size?;
        // Short header (1 + CID + 4-byte PN), frame type + length, AEAD tag.
        let overhead = 1 + self.remote_cid.len() + 4 + 1 + 2 + quill_crypto::packet::TAG_LEN;
        let fits = (self.mtu as usize).saturating_sub(overhead);
        Some(fits.min(peer as usize))
    }

    /// Takes the oldest received datagram.
    pub fn recv_datagram(&mut self) -> Option<Vec<u8>> {
        self.datagrams_in.pop_front()
    }

    /// Starts a key update (RFC 9001 §6). Ignored if the previous one is not yet
    /// acknowledged or 1-RTT keys are not ready.
    pub fn initiate_key_update(&mut self) {
        if !self.handshake_confirmed {
            return;
        }
        let next_pn = self.spaces[Space::Data as usize].next_pn;
        if let Some(k) = self.one_rtt.as_mut() {
            if k.update_acked && k.local_phase == k.remote_phase {
                k.update_local(next_pn);
                self.stats.key_updates_initiated += 1;
                let now = self.qlog.as_ref().map(|q| q.now);
                if let Some(now) = now {
                    self.qlog_keys(now, qlog::KeyKind::OneRtt, qlog::KeyTrigger::LocalUpdate);
                }
            }
        }
    }

    /// Closes the connection with an application error code and reason.
    pub fn close(&mut self, now: Instant, error_code: u64, reason: &str) {
        if matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        ) {
            return;
        }
        self.close = Some(PendingClose {
            code: error_code,
            frame_type: None,
            reason: reason.to_owned(),
        });
        self.close_pending = true;
        self.enter_closing(ConnectionError::ClosedLocally {
            code: error_code,
            reason: reason.to_owned(),
        });
        let pto = self.pto_duration(Space::Data);
        self.set_timer(Timer::Close, Some(now + 3 * pto));
    }

    /// The endpoint is shutting down: a connection that the peer has already closed
    /// (draining, RFC 9000 §10.2.2) sends nothing more, and the draining period only
    /// keeps its connection IDs from being mistaken for new connections on a socket
    /// that is about to close, so it is finished at once. Returns whether it was.
    pub fn finish_draining(&mut self) -> bool {
        if self.state != State::Draining {
            return false;
        }
        self.state = State::Drained;
        self.clear_timers();
        true
    }

    /// Closes because of a transport error we detected.
    fn close_with(&mut self, err: TransportError, report: ConnectionError) {
        if matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        ) {
            return;
        }
        // RFC 9000 §19.19: the Frame Type field is "the type of frame that triggered
        // the error. A value of 0 (equivalent to the mention of the PADDING frame) is
        // used when the frame type is unknown."
        self.close = Some(PendingClose {
            code: err.code.0,
            frame_type: Some(err.frame_type.unwrap_or(0)),
            reason: err.reason.clone(),
        });
        self.close_pending = true;
        self.enter_closing(report);
    }

    fn enter_closing(&mut self, report: ConnectionError) {
        self.state = State::Closing;
        self.lost(report);
        // RFC 9000 §10.2: the closing period (three PTOs) starts when poll_transmit
        // sends the CONNECTION_CLOSE; it arms the Close timer then.
        self.clear_timers();
    }

    fn lost(&mut self, err: ConnectionError) {
        if self.error.is_none() {
            tracing::debug!(cid = %self.local_cid, "connection lost: {err}");
            if let Some(q) = self.qlog.as_mut() {
                q.connection_closed(q.now, &err);
            }
            self.error = Some(err.clone());
            self.events.push_back(Event::ConnectionLost(err));
        }
    }

    /// Whether the login succeeded and the connection carries application data.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the connection is closing, draining or finished.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        )
    }

    /// Whether all state can be freed.
    pub fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// When the connection was created (its first packet sent or received).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Sizes of the peer-influenced buffers (they must stay bounded).
    pub fn buffer_sizes(&self) -> BufferSizes {
        BufferSizes {
            sent_packets: self.spaces.iter().map(|s| s.sent.len()).sum(),
            ack_ranges: self.spaces.iter().map(|s| s.ack.received.len()).sum(),
            events: self.events.len(),
            datagrams: self.datagrams_in.len() + self.datagrams_out.len(),
            streams: self.streams.open_count(),
            send_buffered: self.streams.send_buffered(),
        }
    }

    /// Test support for the stateful fuzz targets (`crate::fuzzing`), not part of the
    /// API: the lengths of the internal queues and tables a peer can make grow, by name.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub(crate) fn fuzz_queue_lens(&self) -> Vec<(&'static str, usize)> {
        let mut lens = vec![
            ("path_responses", self.path_responses.len()),
            ("cids.local", self.cids.local.len()),
            ("cids.new_pending", self.cids.new_pending.len()),
            ("cids.retired_local", self.cids.retired_local.len()),
            ("cids.remote", self.cids.remote.len()),
            ("cids.retire_pending", self.cids.retire_pending.len()),
            ("datagrams_in", self.datagrams_in.len()),
            ("datagrams_out", self.datagrams_out.len()),
            ("events", self.events.len()),
        ];
        lens.extend(self.streams.fuzz_queue_lens());
        lens
    }

    /// The current RTT estimate.
    pub fn rtt(&self) -> Duration {
        self.rtt.smoothed()
    }

    /// How many more connection IDs the endpoint should supply with
    /// [`Connection::issue_cid`] (the peer's `active_connection_id_limit`, up to 8,
    /// minus those it holds). Zero until the connection is established.
    pub(crate) fn cids_wanted(&self) -> usize {
        if self.state != State::Established {
            return 0;
        }
        let limit = self
            .peer_params
            .as_ref()
            .map_or(2, |p| p.active_connection_id_limit)
            .min(8) as usize;
        limit.saturating_sub(self.cids.local.len())
    }

    /// Gives the peer a new connection ID (sent in a NEW_CONNECTION_ID frame). The
    /// endpoint routes `cid` to this connection and derived `reset_token` from it.
    pub(crate) fn issue_cid(&mut self, cid: ConnectionId, reset_token: [u8; 16]) {
        let seq = self.cids.next_local_seq;
        self.cids.next_local_seq += 1;
        self.cids.local.insert(seq, (cid, reset_token));
        self.cids.new_pending.push_back(seq);
    }

    /// A connection ID of ours that the peer retired: the endpoint stops routing it.
    pub(crate) fn poll_retired_cid(&mut self) -> Option<ConnectionId> {
        self.cids.retired_local.pop_front()
    }

    /// Switches to a fresh connection ID from the peer and retires the current one
    /// (RFC 9000 §9.5: do this when moving to a new network so the paths cannot be
    /// linked). Returns false if the peer has not given us a spare one yet.
    pub fn rotate_remote_cid(&mut self) -> bool {
        let current = self.cids.remote_seq;
        let Some((&seq, r)) = self.cids.remote.range(current + 1..).next() else {
            return false;
        };
        let cid = r.cid;
        self.cids.remote.remove(&current);
        self.cids.retire_pending.push_back(current);
        self.cids.remote_seq = seq;
        self.remote_cid = cid;
        true
    }

    /// The connection ID we currently send to.
    pub fn remote_cid(&self) -> ConnectionId {
        self.remote_cid
    }

    /// The stateless reset token of the peer connection ID we send to now (RFC 9000
    /// §10.3.1: "all stateless reset tokens associated with connection IDs that the
    /// endpoint recently used"): the transport parameter's for the first one, the
    /// NEW_CONNECTION_ID frame's after [`Connection::rotate_remote_cid`].
    pub(crate) fn peer_reset_token(&self) -> Option<[u8; 16]> {
        if self.cids.remote_seq == 0 {
            return self.peer_params.as_ref()?.stateless_reset_token;
        }
        self.cids
            .remote
            .get(&self.cids.remote_seq)
            .map(|r| r.reset_token)
    }

    /// The most recent RTT sample (not smoothed).
    pub fn latest_rtt(&self) -> Duration {
        self.rtt.latest()
    }

    /// The current congestion window in bytes.
    pub fn congestion_window(&self) -> u64 {
        self.cc.window()
    }

    /// The negotiated AEAD suite, once known.
    pub fn suite(&self) -> Option<Suite> {
        self.suite
    }

    /// The server's host key (client side, once verified).
    pub fn peer_host_key(&self) -> Option<&PublicKey> {
        self.peer_host_key.as_ref()
    }

    /// The logged-in account, once accepted.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// Our connection ID.
    pub fn local_cid(&self) -> ConnectionId {
        self.local_cid
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The negotiated idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The current maximum datagram size on the path.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }
}

fn local_params(
    config: &TransportConfig,
    streams: &Streams,
    local_cid: ConnectionId,
    original_dcid: Option<ConnectionId>,
    retry_scid: Option<ConnectionId>,
) -> TransportParameters {
    TransportParameters {
        original_destination_connection_id: original_dcid,
        max_idle_timeout_ms: config.idle_timeout.as_millis() as u64,
        max_udp_payload_size: config.max_udp_payload_size as u64,
        max_ack_delay_ms: config.max_ack_delay.as_millis() as u64,
        active_connection_id_limit: cids::ACTIVE_CID_LIMIT,
        initial_source_connection_id: Some(local_cid),
        retry_source_connection_id: retry_scid,
        max_datagram_frame_size: config.max_datagram_frame_size.map(u64::from),
        min_ack_delay_us: config
            .ack_frequency
            .then(|| ack_frequency::local_min_ack_delay_us(config)),
        ..streams.local_limits()
    }
}

/// The Retry integrity key of `version` (RFC 9001 §5.8 for QUIC v1; quill's own,
/// docs/SPEC.md §2.4).
pub(crate) fn retry_key(version: u32) -> &'static quill_crypto::packet::RetryKey {
    if version == QUIC_V1 {
        &quill_crypto::packet::RetryKey::QUIC_V1
    } else if version == QUIC_V2 {
        &quill_crypto::packet::RetryKey::QUIC_V2
    } else {
        &quill_crypto::packet::RetryKey::QUILL
    }
}

/// RFC 9001 §5.2: "Initial packets apply the packet protection process, but use a
/// secret derived from the Destination Connection ID field from the client's first
/// Initial packet" with AEAD_AES_128_GCM and SHA-256.
fn quic_v1_initial_suite() -> rustls::quic::Suite {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|s| s.quic_suite())
        .expect("rustls's ring TLS13_AES_128_GCM_SHA256 supports QUIC")
}

#[cfg(test)]
mod tests;
