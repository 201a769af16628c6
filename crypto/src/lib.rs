//! quill-crypto: primitives and the key schedule. No I/O, no protocol state.
//!
//! This crate is the only place in quill that touches cryptographic primitives.
//! Everything here is a pure function of its inputs (plus an injectable
//! [`random::Random`] source), so every primitive is checked against published
//! reference vectors in `tests/vectors.rs`.
//!
//! | module | what |
//! |---|---|
//! | [`kex`] | hybrid X25519 + ML-KEM-768 key exchange (`mlkem_ss ‖ x25519_ss`) |
//! | [`schedule`] | TLS 1.3-style HKDF-SHA256 key schedule with `"quill "` labels |
//! | [`packet`] | RFC 9001 §5 packet protection: AEAD, header protection, Retry tags |
//! | [`hostkey`] | host keys (Ed25519 today), fingerprints, key files |
//! | [`password`] | Argon2id password hashing in PHC strings |
//! | [`random`] | OS randomness and a seeded deterministic source for tests |
//! | `tls` | (feature `tls`) rustls pieces for QUIC v1: the `X25519MLKEM768` group, host-key certificates |
//!
//! Secrets are zeroized on drop and compared in constant time ([`ct_eq`]).
//! Decoding untrusted bytes never panics; every failure is an [`Error`].
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod hostkey;
pub mod kex;
pub mod packet;
pub mod password;
pub mod random;
pub mod schedule;
#[cfg(feature = "tls")]
pub mod tls;

pub use error::Error;

/// Compares two byte strings in constant time (for equal lengths).
///
/// Returns `false` when the lengths differ; the length itself is not secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
    }
}
