//! The one error type of quill-crypto.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in quill-crypto.
///
/// No variant ever carries secret material: messages name what failed and,
/// for files, which file, never key bytes or passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The random number source failed.
    Random,
    /// An input had the wrong length.
    InvalidLength {
        /// What the input was.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The ML-KEM-768 encapsulation key failed the FIPS 203 §7.2 input check.
    InvalidEncapsulationKey,
    /// The X25519 exchange failed: the peer's point is of low order, so the
    /// shared secret would be all zero (RFC 7748 §6.1).
    InvalidX25519Share,
    /// AEAD authentication failed: the ciphertext, tag, header or key is wrong.
    Decrypt,
    /// Sealing failed (the payload is too long for the AEAD).
    Encrypt,
    /// The header-protection sample is not 16 bytes.
    InvalidSample,
    /// A signature did not verify.
    BadSignature,
    /// A host key or signature names an algorithm this build does not know.
    UnknownAlgorithm(u16),
    /// The signature's algorithm differs from the key's.
    AlgorithmMismatch,
    /// A key, signature or key file is malformed.
    Malformed(&'static str),
    /// A PHC password-hash string is malformed or uses parameters we refuse.
    PasswordHash(&'static str),
    /// A file operation failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The kind of I/O failure.
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// Building a TLS certificate or configuration failed (feature `tls`).
    Tls(String),
    /// A private key file is readable or writable by users other than its owner.
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A path given as a private key file is something else: a directory, or the
    /// public half (`.pub`) of a key.
    NotAPrivateKey {
        /// The path.
        path: PathBuf,
        /// What it is instead, and what to pass.
        why: &'static str,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, err: &std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Random => f.write_str("random number generator failed"),
            Error::InvalidLength {
                what,
                expected,
                actual,
            } => write!(f, "{what}: expected {expected} bytes, got {actual}"),
            Error::InvalidEncapsulationKey => {
                f.write_str("ML-KEM-768 encapsulation key failed the FIPS 203 modulus check")
            }
            Error::InvalidX25519Share => {
                f.write_str("X25519 share is a low-order point (all-zero shared secret)")
            }
            Error::Decrypt => f.write_str("packet authentication failed"),
            Error::Encrypt => f.write_str("packet sealing failed"),
            Error::InvalidSample => f.write_str("header protection sample must be 16 bytes"),
            Error::BadSignature => f.write_str("signature verification failed"),
            Error::UnknownAlgorithm(id) => write!(f, "unknown host key algorithm 0x{id:04x}"),
            Error::AlgorithmMismatch => {
                f.write_str("signature algorithm does not match the key's algorithm")
            }
            Error::Malformed(what) => write!(f, "malformed {what}"),
            Error::PasswordHash(what) => write!(f, "password hash: {what}"),
            Error::Io { path, message, .. } => write!(f, "{}: {message}", path.display()),
            Error::Tls(what) => write!(f, "TLS: {what}"),
            Error::InsecurePermissions { path, mode } => write!(
                f,
                "permissions {:04o} for '{}' are too open: a private key file must not be \
                 accessible by others; run `chmod 600 {}`",
                mode & 0o7777,
                path.display(),
                path.display()
            ),
            Error::NotAPrivateKey { path, why } => write!(f, "{}: {why}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// `Ok` when `input` is `expected` bytes long, else [`Error::InvalidLength`]
    /// naming `what`.
    pub(crate) fn check_len(
        what: &'static str,
        expected: usize,
        input: &[u8],
    ) -> Result<(), Error> {
        if input.len() == expected {
            Ok(())
        } else {
            Err(Error::InvalidLength {
                what,
                expected,
                actual: input.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_permissions_message_names_file_and_fix() {
        let e = Error::InsecurePermissions {
            path: PathBuf::from("/tmp/host_key"),
            mode: 0o100644,
        };
        let s = e.to_string();
        assert!(s.contains("0644"), "{s}");
        assert!(s.contains("/tmp/host_key"), "{s}");
        assert!(s.contains("chmod 600 /tmp/host_key"), "{s}");
    }

    #[test]
    fn length_error_reports_both_lengths() {
        let e = Error::InvalidLength {
            what: "client share",
            expected: 1216,
            actual: 3,
        };
        assert_eq!(e.to_string(), "client share: expected 1216 bytes, got 3");
    }
}
