//! Transport error codes carried in CONNECTION_CLOSE frames of type 0x1c
//! (RFC 9000 §20.1), and quill's own (docs/SPEC.md §7).
//!
//! This is the one definition of every transport error code: the wire layer maps
//! decode errors to it ([`DecodeError::transport_error_code`](super::DecodeError::transport_error_code)),
//! and the protocol layer's `TransportError` and `StreamsError` carry it.

use core::fmt;

/// A QUIC transport error code (RFC 9000 §20.1). Codes not named here are
/// still representable; [`Display`](fmt::Display) shows them in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportErrorCode(pub u64);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl TransportErrorCode {
            $($(#[$doc])* pub const $name: TransportErrorCode = TransportErrorCode($value);)*

            /// The RFC 9000 name of this code, if it is one of the fixed ones.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// "An endpoint uses this with CONNECTION_CLOSE to signal that the connection is
    /// being closed abruptly in the absence of any error."
    NO_ERROR = 0x00;
    /// "The endpoint encountered an internal error and cannot continue with the connection."
    INTERNAL_ERROR = 0x01;
    /// "The server refused to accept a new connection."
    CONNECTION_REFUSED = 0x02;
    /// "An endpoint received more data than it permitted in its advertised data limits."
    FLOW_CONTROL_ERROR = 0x03;
    /// "An endpoint received a frame for a stream identifier that exceeded its advertised
    /// stream limit for the corresponding stream type."
    STREAM_LIMIT_ERROR = 0x04;
    /// "An endpoint received a frame for a stream that was not in a state that permitted that frame."
    STREAM_STATE_ERROR = 0x05;
    /// Final size of a stream changed or was exceeded (RFC 9000 §4.5).
    FINAL_SIZE_ERROR = 0x06;
    /// "An endpoint received a frame that was badly formatted."
    FRAME_ENCODING_ERROR = 0x07;
    /// Malformed, invalid or missing transport parameters (RFC 9000 §7.4).
    TRANSPORT_PARAMETER_ERROR = 0x08;
    /// More connection IDs than the advertised active_connection_id_limit.
    CONNECTION_ID_LIMIT_ERROR = 0x09;
    /// "An endpoint detected an error with protocol compliance that was not covered by
    /// more specific error codes."
    PROTOCOL_VIOLATION = 0x0a;
    /// "A server received a client Initial that contained an invalid Token field."
    INVALID_TOKEN = 0x0b;
    /// "The application or application protocol caused the connection to be closed."
    APPLICATION_ERROR = 0x0c;
    /// "An endpoint has received more data in CRYPTO frames than it can buffer."
    CRYPTO_BUFFER_EXCEEDED = 0x0d;
    /// "An endpoint detected errors in performing key updates."
    KEY_UPDATE_ERROR = 0x0e;
    /// "An endpoint has reached the confidentiality or integrity limit for the AEAD algorithm."
    AEAD_LIMIT_REACHED = 0x0f;
    /// "An endpoint has determined that the network path is incapable of supporting QUIC."
    NO_VIABLE_PATH = 0x10;
    /// quill (docs/SPEC.md §7): every kind of failed login (unknown user, wrong
    /// password, locked account, refused registration) closes with this one code.
    LOGIN_REFUSED = 0x5100;
    /// quill (docs/SPEC.md §7): the client refused the server's host key.
    HOST_KEY_REJECTED = 0x5101;
}

impl TransportErrorCode {
    /// Base of the CRYPTO_ERROR range 0x0100-0x01ff: "The cryptographic handshake
    /// failed. A range of 256 values is reserved for carrying error codes specific
    /// to the cryptographic handshake that is used."
    pub const CRYPTO_ERROR: TransportErrorCode = TransportErrorCode(0x100);

    /// The CRYPTO_ERROR code carrying handshake-specific code `alert`.
    pub const fn crypto(alert: u8) -> Self {
        TransportErrorCode(0x100 | alert as u64)
    }

    /// CRYPTO_ERROR carrying TLS alert 40 (handshake_failure): what a failed quill
    /// handshake closes with.
    pub const HANDSHAKE_FAILURE: TransportErrorCode = TransportErrorCode::crypto(40);

    /// The handshake-specific code if this is in the CRYPTO_ERROR range.
    pub const fn crypto_alert(self) -> Option<u8> {
        if self.0 >= 0x100 && self.0 <= 0x1ff {
            Some((self.0 & 0xff) as u8)
        } else {
            None
        }
    }
}

impl fmt::Display for TransportErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.name() {
            f.write_str(name)
        } else if let Some(alert) = self.crypto_alert() {
            write!(f, "CRYPTO_ERROR({alert:#04x})")
        } else {
            write!(f, "UNKNOWN_ERROR({:#x})", self.0)
        }
    }
}

impl From<u64> for TransportErrorCode {
    fn from(v: u64) -> Self {
        TransportErrorCode(v)
    }
}

impl From<TransportErrorCode> for u64 {
    fn from(c: TransportErrorCode) -> Self {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_rfc_table() {
        // RFC 9000 §20.1, in order.
        let table = [
            TransportErrorCode::NO_ERROR,
            TransportErrorCode::INTERNAL_ERROR,
            TransportErrorCode::CONNECTION_REFUSED,
            TransportErrorCode::FLOW_CONTROL_ERROR,
            TransportErrorCode::STREAM_LIMIT_ERROR,
            TransportErrorCode::STREAM_STATE_ERROR,
            TransportErrorCode::FINAL_SIZE_ERROR,
            TransportErrorCode::FRAME_ENCODING_ERROR,
            TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
            TransportErrorCode::CONNECTION_ID_LIMIT_ERROR,
            TransportErrorCode::PROTOCOL_VIOLATION,
            TransportErrorCode::INVALID_TOKEN,
            TransportErrorCode::APPLICATION_ERROR,
            TransportErrorCode::CRYPTO_BUFFER_EXCEEDED,
            TransportErrorCode::KEY_UPDATE_ERROR,
            TransportErrorCode::AEAD_LIMIT_REACHED,
            TransportErrorCode::NO_VIABLE_PATH,
        ];
        for (i, code) in table.iter().enumerate() {
            assert_eq!(code.0, i as u64);
        }
    }

    #[test]
    fn display() {
        assert_eq!(TransportErrorCode::NO_ERROR.to_string(), "NO_ERROR");
        assert_eq!(
            TransportErrorCode::NO_VIABLE_PATH.to_string(),
            "NO_VIABLE_PATH"
        );
        assert_eq!(
            TransportErrorCode::PROTOCOL_VIOLATION.to_string(),
            "PROTOCOL_VIOLATION"
        );
        assert_eq!(
            TransportErrorCode::crypto(0x28).to_string(),
            "CRYPTO_ERROR(0x28)"
        );
        assert_eq!(
            TransportErrorCode::CRYPTO_ERROR.to_string(),
            "CRYPTO_ERROR(0x00)"
        );
        assert_eq!(
            TransportErrorCode(0x200).to_string(),
            "UNKNOWN_ERROR(0x200)"
        );
        assert_eq!(
            TransportErrorCode::LOGIN_REFUSED.to_string(),
            "LOGIN_REFUSED"
        );
        assert_eq!(TransportErrorCode::HOST_KEY_REJECTED.0, 0x5101);
        assert_eq!(TransportErrorCode::HANDSHAKE_FAILURE.0, 0x128);
        assert_eq!(TransportErrorCode(0x11).crypto_alert(), None);
        assert_eq!(TransportErrorCode(0x1ff).crypto_alert(), Some(0xff));
    }
}
