//! quill-transport: a QUIC-style transport over UDP with a post-quantum handshake and
//! built-in login.
//!
//! Layering, top to bottom (each layer only uses the ones below it):
//! - [`proto`]: the sans-IO protocol core (connections; later the endpoint and its
//!   timer wheel). It never touches a socket, a thread or a clock.
//! - [`wire`]: pure encode/decode of packets, frames and transport parameters.
//!
//! [`auth`] holds the server's account store, login verifier and brute-force limiter
//! (and the client's known_hosts and credentials).
//!
//! [`service`] is the file service of docs/SPEC.md §10 (requests, answers, the path
//! guard, uploads); like [`driver`] it does I/O and is no part of the sans-IO core.
//!
//! [`sim`] is a deterministic simulated network that drives a client and a server
//! endpoint through loss, delay, reordering, duplication and corruption in virtual time.
#![warn(missing_docs)]

pub mod auth;
pub mod driver;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
pub mod service;
pub mod sim;
pub mod wire;

pub use proto::{
    ClientConfig, Connection, ConnectionError, Event, HostKeyPolicy, Login, ServerConfig,
    TransportConfig,
};
