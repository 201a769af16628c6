//! TLS 1.3 for QUIC v1 (feature `tls`): what quill's second handshake (issue 14,
//! `docs/QUIC-V1.md`) builds on.
//!
//! - [`X25519MLKEM768`]: the hybrid post-quantum key-exchange group for rustls, from
//!   the same ML-KEM-768 and X25519 as quill's own handshake ([`crate::kex`]).
//! - [`provider`]: rustls's ring provider with that group preferred.
//! - [`host_key_certificate`], [`certified_host_key`], [`HostKeyVerifier`]: a
//!   self-signed certificate over the server's Ed25519 host key and the client-side
//!   verifier that trusts the key through the caller's policy, not a PKI.
//! - [`server_config`], [`client_config`]: TLS 1.3-only rustls configurations joining
//!   the two; QUIC code adds its ALPN and transport parameters.

mod cert;
mod kx;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

use crate::hostkey::HostKeyPair;
use crate::Error;

pub use cert::{
    certified_host_key, host_key_certificate, HostKeyCertError, HostKeyCheck, HostKeyVerifier,
};
pub use kx::X25519MLKEM768;

/// rustls's ring provider with the key-exchange groups `X25519MLKEM768, X25519,
/// secp256r1, secp384r1`: post-quantum preferred in both roles, the classical groups
/// still there for a peer without it.
///
/// As a client, the first ClientHello carries an X25519MLKEM768 share and its X25519
/// half again as an X25519 share (one X25519 key, see [`X25519MLKEM768`]); a server
/// that knows neither group asks for a secp256r1/secp384r1 share with a
/// HelloRetryRequest. As a server, rustls (0.23) takes the first group of the client's
/// `supported_groups` that is in this list, and asks for a share of it with a
/// HelloRetryRequest only if the client sent none: a classical client that lists the
/// group of its share first (aioquic: secp256r1) is answered at once, which is why the
/// NIST curves stay in the list.
pub fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{self, kx_group};
    CryptoProvider {
        kx_groups: vec![
            X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ],
        ..ring::default_provider()
    }
}

/// A TLS 1.3-only server configuration with [`provider`], presenting
/// [`host_key_certificate`] over `key` and signing with it; no client certificates.
pub fn server_config(key: Arc<HostKeyPair>) -> Result<rustls::ServerConfig, Error> {
    let certified = certified_host_key(key)?;
    Ok(
        rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))),
    )
}

/// A TLS 1.3-only client configuration with [`provider`] that accepts a server whose
/// host-key certificate carries a key `check` accepts ([`HostKeyVerifier`]).
pub fn client_config(check: Arc<HostKeyCheck>) -> Result<rustls::ClientConfig, Error> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(HostKeyVerifier::new(check)))
            .with_no_client_auth(),
    )
}
