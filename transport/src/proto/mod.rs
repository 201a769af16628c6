//! The sans-IO protocol core: never touches a socket, a thread or a clock.
//!
//! Every entry point takes `now: Instant`; outputs are datagrams to send
//! ([`Connection::poll_transmit`]), the next deadline ([`Connection::poll_timeout`]) and
//! events ([`Connection::poll_event`]). That makes every behaviour testable in the
//! deterministic simulated network of [`crate::sim`].

pub mod config;
pub mod connection;
pub mod endpoint;
pub mod error;
pub mod handshake;
pub mod range_set;
pub mod recovery;
pub mod streams;
pub mod timer_wheel;

pub use config::{
    ClientConfig, ConfigError, HostKeyPolicy, HostKeyVerifier, Login, ServerConfig, TransportConfig,
};
pub use connection::{BufferSizes, Connection, ConnectionStats, DatagramError, Event, Transmit};
pub use error::{ConnectionError, HandshakeStage, TransportError, Unreachable};
pub use handshake::{LoginMethod, LoginRequest};
pub use streams::{
    Dir, ReadError, ReadOutcome, Side, StreamEvent, StreamId, StreamsConfig, WriteError,
};
