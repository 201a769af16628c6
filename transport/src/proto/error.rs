//! Why a connection ended, and the transport errors that go on the wire.
//!
//! Two layers, as the style guide asks: [`TransportError`] is what one side puts in a
//! CONNECTION_CLOSE frame (code, offending frame type, reason); [`ConnectionError`] is
//! what the application is told when a connection ends, and says who ended it and why.

use std::fmt;
use std::time::Duration;

use crate::wire::TransportErrorCode;

/// An error that closes the connection with a CONNECTION_CLOSE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// Error code (RFC 9000 §20.1, or quill's own from docs/SPEC.md §7).
    pub code: TransportErrorCode,
    /// The frame type that triggered it, if any.
    pub frame_type: Option<u64>,
    /// Human-readable reason (sent to the peer; never contains secrets).
    pub reason: String,
}

impl TransportError {
    /// A new error with `code` and `reason`.
    pub fn new(code: TransportErrorCode, reason: impl Into<String>) -> Self {
        TransportError {
            code,
            frame_type: None,
            reason: reason.into(),
        }
    }

    /// PROTOCOL_VIOLATION with `reason`.
    pub fn protocol(reason: impl Into<String>) -> Self {
        Self::new(TransportErrorCode::PROTOCOL_VIOLATION, reason)
    }
}

impl From<crate::proto::streams::StreamsError> for TransportError {
    fn from(e: crate::proto::streams::StreamsError) -> Self {
        TransportError::new(e.code, e.reason)
    }
}

impl From<TransportError> for ConnectionError {
    fn from(e: TransportError) -> Self {
        ConnectionError::Transport(e)
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {:#x})", self.reason, self.code.0)
    }
}

impl std::error::Error for TransportError {}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionError {
    /// Nothing was heard from the peer for the idle timeout.
    TimedOut,
    /// The peer closed the connection.
    ClosedByPeer {
        /// Error code from the peer's CONNECTION_CLOSE.
        code: u64,
        /// Whether it was an application-level close.
        app: bool,
        /// The peer's reason phrase.
        reason: String,
    },
    /// We closed it (the application asked, or the endpoint shut down).
    ClosedLocally {
        /// The code we sent.
        code: u64,
        /// The reason we sent.
        reason: String,
    },
    /// The server refused the login (one answer for every kind of failure).
    LoginRefused {
        /// The server's reason, shown to the user (may be generic by design).
        reason: String,
    },
    /// The client did not accept the server's host key.
    HostKeyRejected {
        /// Fingerprint of the key the server presented.
        fingerprint: String,
        /// Why it was refused.
        reason: String,
    },
    /// We detected a protocol error and closed the connection.
    Transport(TransportError),
    /// The peer answered with Version Negotiation: it speaks other versions.
    VersionMismatch {
        /// The versions the peer offered.
        peer_versions: Vec<u32>,
    },
    /// The peer no longer has state for this connection (stateless reset).
    Reset,
    /// The handshake and login did not complete within the handshake timeout
    /// (`TransportConfig::handshake_timeout`).
    HandshakeTimedOut {
        /// The timeout.
        after: Duration,
        /// Where the handshake stood when time ran out.
        stage: HandshakeStage,
    },
    /// The network said the peer cannot be reached (an ICMP error such as port
    /// unreachable) before anything was heard from it.
    Unreachable(Unreachable),
}

/// How far a handshake got (for [`ConnectionError::HandshakeTimedOut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStage {
    /// Nothing was heard from the peer.
    NoAnswer,
    /// The key exchange was under way.
    KeyExchange,
    /// Client: the login was sent and the server's verdict had not come. Server: the
    /// login's verdict (or the client's login) had not come.
    Login,
}

/// What the network reported about an unreachable peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// ICMP port unreachable: the host is there, but nothing listens on the port.
    Refused,
    /// ICMP host unreachable (or no route to the host).
    Host,
    /// ICMP network unreachable.
    Network,
    /// Another ICMP error, with the errno the kernel mapped it to.
    Other(i32),
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Refused => f.write_str("connection refused: nothing listens there"),
            Unreachable::Host => f.write_str("host unreachable"),
            Unreachable::Network => f.write_str("network unreachable"),
            Unreachable::Other(errno) => write!(f, "unreachable (ICMP error, errno {errno})"),
        }
    }
}

impl fmt::Display for HandshakeStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeStage::NoAnswer => "the peer never answered",
            HandshakeStage::KeyExchange => "the key exchange did not finish",
            HandshakeStage::Login => "the login was not verified in time",
        })
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::TimedOut => f.write_str("connection timed out: the peer went silent"),
            ConnectionError::ClosedByPeer { code, app, reason } => write!(
                f,
                "closed by peer ({} code {code:#x}): {reason}",
                if *app { "application" } else { "transport" }
            ),
            ConnectionError::ClosedLocally { code, reason } => {
                write!(f, "closed locally (code {code:#x}): {reason}")
            }
            ConnectionError::LoginRefused { reason } => write!(f, "login refused: {reason}"),
            ConnectionError::HostKeyRejected {
                fingerprint,
                reason,
            } => write!(f, "server host key {fingerprint} rejected: {reason}"),
            ConnectionError::Transport(e) => write!(f, "protocol error: {e}"),
            // RFC 8999 §6: the list is what the peer supports; name the ones we know,
            // e.g. "peer speaks QUIC versions 0x00000001 (QUIC v1), 0x6b3343cf (QUIC v2)".
            ConnectionError::VersionMismatch { peer_versions } => {
                f.write_str("version mismatch: peer speaks QUIC versions")?;
                for (i, v) in peer_versions.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{v:#010x} ({})", crate::wire::version_name(*v))?;
                }
                if peer_versions.is_empty() {
                    f.write_str(" (none listed)")?;
                }
                Ok(())
            }
            ConnectionError::Reset => f.write_str("connection reset by peer (stateless reset)"),
            ConnectionError::HandshakeTimedOut { after, stage } => {
                write!(f, "handshake not complete within {after:?}: {stage}")
            }
            ConnectionError::Unreachable(u) => write!(f, "{u}"),
        }
    }
}

impl std::error::Error for ConnectionError {}
