//! The sans-IO protocol core: never touches a socket, a thread or a clock.
//!
//! Every entry point takes `now: Instant`; outputs are datagrams to send
//! ([`Connection::poll_transmit`]), the next deadline ([`Connection::poll_timeout`]) and
//! events ([`Connection::poll_event`]). That makes every behaviour testable in the
//! deterministic simulated network of [`crate::sim`].

pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod handshake;
pub(crate) mod range_set;
pub(crate) mod recovery;
pub(crate) mod streams;
pub(crate) mod timer_wheel;

pub use config::{
    CertificateCheck, ClientConfig, ConfigError, HostKeyPolicy, HostKeyVerifier, Login,
    QuicV1Server, ServerConfig, ServerPreferredAddress, Sessions, TransportConfig, Version,
};
pub use connection::{
    ping_timeout, BufferSizes, Connection, ConnectionStats, DatagramError, EcnCodepoint, Event,
    MigrateError, PingError, PingId, QlogSink, QlogStream, Transmit, MAX_OUTSTANDING_PINGS,
    PING_TIMEOUT_FLOOR,
};
pub use endpoint::{
    parse_server_id, AddressLimits, CidLayout, ConnectionHandle, Endpoint, EndpointConfig,
    EndpointStats, RetryPolicy, DEFAULT_SERVER_ID_LEN, RESET_SECRET_LABEL,
};
pub use error::{ConnectionError, HandshakeStage, TransportError, Unreachable};
pub use handshake::tls::ALPN_QUILL;
pub use handshake::{LoginMethod, LoginRequest};
pub use recovery::CongestionAlgorithm;
pub use streams::{
    Dir, ReadError, ReadOutcome, Side, StreamEvent, StreamId, StreamsConfig, WriteError,
};
