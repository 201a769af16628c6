//! Connection configuration, validated before use.
//!
//! Every check here produces a [`ConfigError`] whose message says what is wrong and
//! what to change, because these values come straight from command-line flags and
//! configuration files.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::packet::Suite;
use quill_crypto::random::{OsRandom, Random};
use zeroize::Zeroizing;

pub use super::handshake::sessions::Sessions;
use super::handshake::tls::ALPN_QUILL;
use super::recovery::{CongestionAlgorithm, CongestionController};
use super::streams::StreamsConfig;

/// Smallest datagram size every quill path must carry (RFC 9000 §14).
pub const MIN_UDP_PAYLOAD: u16 = 1200;

/// Transport behaviour shared by clients and servers.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Our idle timeout; the effective one is the minimum of both sides' (RFC 9000 §10.1).
    pub idle_timeout: Duration,
    /// The handshake and login must complete within this long from the start, or the
    /// connection ends with `ConnectionError::HandshakeTimedOut` (silently: nothing
    /// is sent). On a client it is the connect timeout; on a server it bounds how long
    /// a half-open session holds its place.
    pub handshake_timeout: Duration,
    /// Send a PING after this long without sending anything ack-eliciting. Must be less
    /// than half of `idle_timeout` so that a lost keep-alive can be repeated in time.
    pub keep_alive_interval: Option<Duration>,
    /// Stream and flow-control limits.
    pub streams: StreamsConfig,
    /// Congestion controller.
    pub congestion: CongestionAlgorithm,
    /// Start the congestion controller with HyStart++ (RFC 9406, on by default): slow
    /// start ends when the RTT rises, before the bottleneck queue overflows, instead
    /// of at the first loss.
    pub hystart: bool,
    /// Largest UDP payload we send and accept (1200..=65527). 1452 fits Ethernet.
    pub max_udp_payload_size: u16,
    /// Largest DATAGRAM frame payload we accept; `None` disables datagrams.
    pub max_datagram_frame_size: Option<u16>,
    /// Received datagrams kept for the application before the oldest is dropped.
    pub datagram_receive_queue: usize,
    /// Datagrams queued for sending before `send_datagram` refuses more.
    pub datagram_send_queue: usize,
    /// How long we may delay an ACK (advertised as max_ack_delay).
    pub max_ack_delay: Duration,
    /// Send an ACK after this many ack-eliciting packets even before `max_ack_delay`.
    pub ack_eliciting_threshold: u32,
    /// Use the ACK frequency extension (draft-ietf-quic-ack-frequency, on by default):
    /// advertise `min_ack_delay`, follow the peer's ACK_FREQUENCY and IMMEDIATE_ACK,
    /// and ask a peer that advertised it for fewer ACKs.
    pub ack_frequency: bool,
    /// Initiate a key update after this many packets sealed under one key phase.
    pub key_update_interval: u64,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Pace packets over the RTT instead of sending whole windows in bursts.
    pub pacing: bool,
    /// Mark the packets we send ECT(0), report the ECN codepoints of received packets
    /// in ACK frames and react to CE (RFC 9000 §13.4, RFC 9002 §7.1). Marking stops on
    /// its own on a path that does not carry the marks (§13.4.2).
    pub ecn: bool,
    /// Fault injection for the interop suite (never set it otherwise): drop every
    /// PATH_CHALLENGE without answering, so the peer can never validate a new path.
    #[doc(hidden)]
    pub ignore_path_challenge: bool,
    /// Client: move to the server's preferred address (RFC 9000 §9.6) once the
    /// handshake is confirmed, after validating the path to it (on by default).
    pub follow_preferred_address: bool,
    /// Where qlog traces go (`--qlog-dir`); `None` (the default) logs nothing and
    /// costs nothing. See `driver::qlog::QlogDir`.
    pub qlog: Option<Arc<dyn super::connection::QlogSink>>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            keep_alive_interval: None,
            streams: StreamsConfig::default(),
            congestion: CongestionAlgorithm::Cubic,
            hystart: true,
            max_udp_payload_size: 1452,
            max_datagram_frame_size: Some(1400),
            datagram_receive_queue: 256,
            datagram_send_queue: 256,
            max_ack_delay: Duration::from_millis(25),
            ack_eliciting_threshold: 10,
            ack_frequency: true,
            key_update_interval: 1 << 22,
            initial_rtt: Duration::from_millis(333),
            pacing: true,
            ecn: true,
            ignore_path_challenge: false,
            follow_preferred_address: true,
            qlog: None,
        }
    }
}

impl TransportConfig {
    /// A fresh congestion controller for a path with this maximum datagram size:
    /// `congestion`, started with HyStart++ when `hystart` (paced or not as `pacing`).
    pub fn congestion_controller(&self, max_datagram_size: u16) -> Box<dyn CongestionController> {
        self.congestion
            .build_with(max_datagram_size, self.hystart, self.pacing)
    }

    /// Checks the configuration; the error says what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_timeout < Duration::from_millis(100) {
            return Err(ConfigError(format!(
                "idle timeout {:?} is too short; use at least 100ms",
                self.idle_timeout
            )));
        }
        if self.idle_timeout > Duration::from_secs(3600 * 24) {
            return Err(ConfigError(format!(
                "idle timeout {:?} is longer than a day; use keep-alives instead",
                self.idle_timeout
            )));
        }
        if self.handshake_timeout < Duration::from_millis(100)
            || self.handshake_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError(format!(
                "handshake timeout {:?} is out of range; use 100ms to 1h",
                self.handshake_timeout
            )));
        }
        if let Some(ka) = self.keep_alive_interval {
            if ka.is_zero() {
                return Err(ConfigError(
                    "keep-alive interval must be positive (omit it to disable keep-alives)".into(),
                ));
            }
            // A keep-alive must fire well before the peer gives up on us: at most half
            // the idle timeout, so one lost PING can still be repeated in time.
            if ka * 2 > self.idle_timeout {
                return Err(ConfigError(format!(
                    "keep-alive interval {:?} must be at most half the idle timeout {:?}; \
                     lower the keep-alive interval or raise the idle timeout",
                    ka, self.idle_timeout
                )));
            }
        }
        if self.max_udp_payload_size < MIN_UDP_PAYLOAD || self.max_udp_payload_size > 65527 {
            return Err(ConfigError(format!(
                "max UDP payload size {} is out of range; use 1200..=65527",
                self.max_udp_payload_size
            )));
        }
        if self.max_ack_delay >= Duration::from_millis(1 << 14) {
            return Err(ConfigError("max ack delay must be below 16384ms".into()));
        }
        if self.ack_eliciting_threshold == 0 {
            return Err(ConfigError(
                "ack-eliciting threshold must be at least 1".into(),
            ));
        }
        if self.key_update_interval < 1000 {
            return Err(ConfigError(
                "key update interval must be at least 1000 packets".into(),
            ));
        }
        Ok(())
    }
}

/// A configuration value that cannot work, with what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// How the client logs in (sent in its second flight, under handshake keys).
#[derive(Clone)]
pub enum Login {
    /// Account name and password.
    Password {
        /// Account name.
        user: String,
        /// Password (zeroized on drop).
        password: Zeroizing<String>,
    },
    /// Account name and an identity key; the client signs the transcript hash.
    PublicKey {
        /// Account name.
        user: String,
        /// The identity key pair.
        key: Arc<HostKeyPair>,
    },
    /// Create an account (where the server allows it), then be logged in to it.
    Register {
        /// Requested account name.
        user: String,
        /// Password (zeroized on drop).
        password: Zeroizing<String>,
        /// Optional identity key to authorise for later public-key logins.
        key: Option<Arc<HostKeyPair>>,
    },
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Password { user, .. } => write!(f, "Login::Password({user})"),
            Login::PublicKey { user, .. } => write!(f, "Login::PublicKey({user})"),
            Login::Register { user, .. } => write!(f, "Login::Register({user})"),
        }
    }
}

/// A host-key check supplied by the application (for example a `known_hosts` lookup).
pub type HostKeyVerifier = dyn Fn(&PublicKey) -> Result<(), String> + Send + Sync;

/// How the client decides whether the server's host key is the right one.
#[derive(Clone)]
pub enum HostKeyPolicy {
    /// Accept only keys with one of these fingerprints (`SHA256:...`).
    Pinned(Vec<String>),
    /// Accept any key and report it with [`super::Event::HostKeyAccepted`] (trust on
    /// first use: the application records it).
    AcceptAndReport,
    /// Ask the application; `Err(reason)` refuses the key.
    Verify(Arc<HostKeyVerifier>),
}

impl HostKeyPolicy {
    /// The policy's verdict on `key` (either version's handshake asks it once the key
    /// has signed the handshake): `Err(reason)` refuses it.
    pub(crate) fn check(&self, key: &PublicKey) -> Result<(), String> {
        match self {
            HostKeyPolicy::Pinned(pins) => {
                let fingerprint = key.fingerprint();
                if pins
                    .iter()
                    .any(|p| quill_crypto::ct_eq(p.as_bytes(), fingerprint.as_bytes()))
                {
                    Ok(())
                } else {
                    Err("it does not match the pinned fingerprint".to_string())
                }
            }
            HostKeyPolicy::AcceptAndReport => Ok(()),
            HostKeyPolicy::Verify(f) => f(key),
        }
    }
}

impl fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPolicy::Pinned(p) => write!(f, "Pinned({p:?})"),
            HostKeyPolicy::AcceptAndReport => f.write_str("AcceptAndReport"),
            HostKeyPolicy::Verify(_) => f.write_str("Verify(..)"),
        }
    }
}

/// The protocol version a client speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Version {
    /// quill's own version (docs/SPEC.md): quill's handshake with login.
    #[default]
    Quill,
    /// QUIC v1 (RFC 9000/9001) with TLS 1.3 (docs/QUIC-V1.md), offering these ALPN
    /// protocols. There is no login: [`Login`] is not used, and the connection is up
    /// with [`super::Event::HandshakeConfirmed`] (no account).
    QuicV1 {
        /// ALPN protocols offered, most preferred first (e.g. `b"hq-interop"`).
        alpn: Vec<Vec<u8>>,
    },
}

/// What a server needs to accept QUIC v1 (RFC 9000/9001) besides quill's own version.
#[derive(Clone)]
pub struct QuicV1Server {
    /// The TLS 1.3 configuration: certificate, key-exchange groups, ALPN protocols.
    pub tls: Arc<rustls::ServerConfig>,
    /// Also speak QUIC v2 (RFC 9369; off by default): accept clients that start in
    /// v2, upgrade a v1 client that lists v2 in its version_information (compatible
    /// version negotiation, RFC 9368), and list v2 in Version Negotiation.
    pub quic_v2: bool,
}

impl fmt::Debug for QuicV1Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicV1Server")
            .field("alpn", &self.tls.alpn_protocols)
            .field("quic_v2", &self.quic_v2)
            .finish()
    }
}

impl QuicV1Server {
    /// QUIC v1 with the self-signed certificate over `host_key`
    /// (`quill_crypto::tls::server_config`: X25519MLKEM768 preferred, the same
    /// fingerprint as on quill's own version), accepting these ALPN protocols.
    pub fn with_host_key(
        host_key: Arc<HostKeyPair>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let mut tls = quill_crypto::tls::server_config(host_key)
            .map_err(|e| ConfigError(format!("cannot build the TLS configuration: {e}")))?;
        tls.alpn_protocols = alpn;
        Ok(QuicV1Server {
            tls: Arc::new(tls),
            quic_v2: false,
        })
    }

    /// Accepts 0-RTT (RFC 9001 §4.6) from clients resuming a session of this server:
    /// its session tickets allow early data and rustls accepts it
    /// (`max_early_data_size` 0xffffffff, as RFC 9001 §4.6.1 asks). Early data can be
    /// replayed by an attacker, so only idempotent requests belong in it (`hq-interop`
    /// GETs): refused if ALPN `quill` is offered, whose login must not be replayable.
    /// The stateful ticket store (rustls's default) hands each ticket out once for
    /// early data, which bounds replays to other server instances.
    pub fn with_early_data(self) -> Result<Self, ConfigError> {
        if self.tls.alpn_protocols.iter().any(|a| a == ALPN_QUILL) {
            return Err(ConfigError(
                "0-RTT is not accepted with ALPN quill (its login would be replayable)".into(),
            ));
        }
        let mut tls = (*self.tls).clone();
        tls.max_early_data_size = u32::MAX;
        Ok(QuicV1Server {
            tls: Arc::new(tls),
            ..self
        })
    }

    /// QUIC v1 with a CA-issued certificate chain (leaf first) and its private key
    /// (`quill server --cert/--cert-key`), accepting these ALPN protocols.
    pub fn with_certificate(
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let mut tls = quill_crypto::tls::server_config_with_certificate(chain, key)
            .map_err(|e| ConfigError(e.to_string()))?;
        tls.alpn_protocols = alpn;
        Ok(QuicV1Server {
            tls: Arc::new(tls),
            quic_v2: false,
        })
    }
}

/// A server's preferred addresses (RFC 9000 §9.6, §18.2): one per address family at
/// most; a client follows the one of the family it uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerPreferredAddress {
    /// The IPv4 address clients should move to.
    pub ipv4: Option<std::net::SocketAddrV4>,
    /// The IPv6 address clients should move to.
    pub ipv6: Option<std::net::SocketAddrV6>,
}

impl ServerPreferredAddress {
    /// The preferred address `addr`, in the field of its family.
    pub fn of(addr: std::net::SocketAddr) -> Self {
        match addr {
            std::net::SocketAddr::V4(a) => ServerPreferredAddress {
                ipv4: Some(a),
                ipv6: None,
            },
            std::net::SocketAddr::V6(a) => ServerPreferredAddress {
                ipv4: None,
                ipv6: Some(a),
            },
        }
    }
}

/// Client-side configuration.
#[derive(Clone)]
pub struct ClientConfig {
    /// The version to speak (quill's own by default).
    pub version: Version,
    /// Transport behaviour.
    pub transport: Arc<TransportConfig>,
    /// AEAD suites offered, most preferred first.
    pub suites: Vec<Suite>,
    /// Server name sent in the ClientHello (may be empty).
    pub server_name: String,
    /// How to log in.
    pub login: Login,
    /// How to check the server's host key.
    pub host_key: HostKeyPolicy,
    /// QUIC v1: how the server's certificate is checked (by default as a host-key
    /// certificate, through [`ClientConfig::host_key`]).
    pub certificate: CertificateCheck,
    /// QUIC v1: where TLS session tickets are kept for resumption (RFC 8446 §2.2).
    /// `None` (the default) keeps none; [`Sessions::in_memory`] keeps them in
    /// memory, shared by every connection made with clones of this configuration,
    /// so a later connection to the same server name resumes (no certificate, so no
    /// host-key check and no `peer_host_key()`: the ticket stands for the server
    /// checked when it was issued).
    pub sessions: Option<Sessions>,
    /// QUIC v1: send stream data in 0-RTT packets when a kept session allows it
    /// (RFC 9001 §4.6; needs [`ClientConfig::resumption`]). Early data can be
    /// replayed: use it for idempotent requests only. Never used with ALPN `quill`.
    pub early_data: bool,
    /// Randomness (the OS by default; seeded in deterministic tests).
    pub rng: Arc<dyn Random>,
    /// QUIC v1: also offer QUIC v2 (RFC 9369) by compatible version negotiation
    /// (RFC 9368): the first Initial is v1 and lists v2 in version_information; the
    /// connection follows a server that answers in v2. Off by default.
    pub offer_quic_v2: bool,
}

/// How a QUIC v1 client authenticates the server's TLS certificate.
#[derive(Clone, Debug, Default)]
pub enum CertificateCheck {
    /// The server presents a host-key certificate (a self-signed certificate over its
    /// Ed25519 host key, as `quill server` does by default), and
    /// [`ClientConfig::host_key`] judges the key: pinning and `known_hosts` work as on
    /// quill's own version.
    #[default]
    HostKey,
    /// The server presents a CA-issued chain that verifies (webpki) against these
    /// roots for [`ClientConfig::server_name`] (a DNS name or an IP address).
    Roots(Arc<rustls::RootCertStore>),
    /// No authentication of the server: only the handshake signature is checked. The
    /// QUIC interop runner's endpoints work this way (their servers make a certificate
    /// at run time); never use it for anything else.
    Unverified,
}

impl ClientConfig {
    /// A client configuration with defaults for everything but the login and host-key policy.
    pub fn new(login: Login, host_key: HostKeyPolicy) -> Self {
        ClientConfig {
            version: Version::Quill,
            transport: Arc::new(TransportConfig::default()),
            suites: vec![Suite::Aes256Gcm, Suite::Aes128Gcm, Suite::ChaCha20Poly1305],
            server_name: String::new(),
            login,
            host_key,
            certificate: CertificateCheck::HostKey,
            sessions: None,
            early_data: false,
            rng: Arc::new(OsRandom::new()),
            offer_quic_v2: false,
        }
    }
}

/// Server-side configuration.
#[derive(Clone)]
pub struct ServerConfig {
    /// Transport behaviour.
    pub transport: Arc<TransportConfig>,
    /// The server's host key.
    pub host_key: Arc<HostKeyPair>,
    /// AEAD suites accepted, in the server's order of preference.
    pub suites: Vec<Suite>,
    /// Accept password logins.
    pub allow_password: bool,
    /// Accept public-key logins.
    pub allow_publickey: bool,
    /// Accept `register` (open registration; off by default).
    pub allow_register: bool,
    /// Addresses to offer clients in the `preferred_address` transport parameter
    /// (RFC 9000 §9.6; none by default). The server must receive the datagrams sent
    /// there on the same endpoint (they are routed by connection ID): a second socket
    /// (`EventLoop::bind_preferred`), or a NAT that forwards to the first.
    pub preferred_address: Option<ServerPreferredAddress>,
    /// Also accept QUIC v1 clients (off by default): their connections come up with
    /// [`super::Event::HandshakeConfirmed`] and no account, since QUIC v1 has no login.
    pub quic_v1: Option<QuicV1Server>,
    /// Randomness (the OS by default; seeded in deterministic tests).
    pub rng: Arc<dyn Random>,
}

impl ServerConfig {
    /// A server configuration with defaults for everything but the host key.
    pub fn new(host_key: Arc<HostKeyPair>) -> Self {
        ServerConfig {
            transport: Arc::new(TransportConfig::default()),
            host_key,
            suites: vec![Suite::Aes256Gcm, Suite::Aes128Gcm, Suite::ChaCha20Poly1305],
            allow_password: true,
            allow_publickey: true,
            allow_register: false,
            preferred_address: None,
            quic_v1: None,
            rng: Arc::new(OsRandom::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        TransportConfig::default().validate().unwrap();
    }

    #[test]
    fn keep_alive_must_fit_in_idle_timeout() {
        let mut c = TransportConfig {
            keep_alive_interval: Some(Duration::from_secs(20)),
            ..TransportConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.0.contains("at most half the idle timeout"), "{err}");
        c.keep_alive_interval = Some(Duration::from_secs(15));
        c.validate().unwrap();
        c.keep_alive_interval = Some(Duration::ZERO);
        assert!(c.validate().is_err());
    }

    #[test]
    fn payload_size_bounds() {
        let c = TransportConfig {
            max_udp_payload_size: 1000,
            ..TransportConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
