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
//! - [`server_config_with_certificate`], [`client_config_for`] with
//!   [`ServerTrust::Roots`]: the same over a CA-issued certificate (`quill server
//!   --cert/--cert-key`, a client's `--ca`), verified with webpki; [`load_pem_chain`],
//!   [`load_pem_key`] read the PEM files.

mod cert;
mod kx;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::hostkey::HostKeyPair;
use crate::packet::Suite;
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
    client_config_for(ServerTrust::HostKey(check), &Suite::ALL)
}

/// How a TLS client authenticates the server.
#[derive(Clone)]
pub enum ServerTrust {
    /// A host-key certificate whose key the check accepts ([`HostKeyVerifier`]).
    HostKey(Arc<HostKeyCheck>),
    /// A certificate chain that verifies (webpki) against these roots for the server
    /// name the client connects to.
    Roots(Arc<rustls::RootCertStore>),
    /// Any certificate, as long as its key signed the handshake: no authentication of
    /// the server at all. Only for the QUIC interop runner's test cases, whose servers
    /// make a certificate at run time that nobody could verify; never for real use.
    Unverified,
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerTrust::HostKey(_) => "HostKey",
            ServerTrust::Roots(_) => "Roots",
            ServerTrust::Unverified => "Unverified",
        })
    }
}

/// The TLS 1.3 cipher suite carrying the same AEAD as quill's `suite`.
pub fn tls13_suite(suite: Suite) -> rustls::SupportedCipherSuite {
    use rustls::crypto::ring::cipher_suite;
    match suite {
        Suite::Aes256Gcm => cipher_suite::TLS13_AES_256_GCM_SHA384,
        Suite::Aes128Gcm => cipher_suite::TLS13_AES_128_GCM_SHA256,
        Suite::ChaCha20Poly1305 => cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    }
}

/// [`provider`] offering only these AEADs, in this order (TLS 1.3 cipher suites).
pub fn provider_for(suites: &[Suite]) -> Result<CryptoProvider, Error> {
    if suites.is_empty() {
        return Err(Error::Tls("no cipher suite to offer".into()));
    }
    let mut p = provider();
    p.cipher_suites = suites.iter().map(|s| tls13_suite(*s)).collect();
    Ok(p)
}

/// A TLS 1.3-only client configuration with [`provider`], offering the cipher suites
/// of `suites` (in that order) and authenticating the server by `trust`.
pub fn client_config_for(
    trust: ServerTrust,
    suites: &[Suite],
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(provider_for(suites)?);
    let verifier = server_cert_verifier(trust, &provider)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The rustls verifier that authenticates the server by `trust`, with the signature
/// algorithms of `provider`.
pub fn server_cert_verifier(
    trust: ServerTrust,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    Ok(match trust {
        ServerTrust::HostKey(check) => Arc::new(HostKeyVerifier::new(check)),
        ServerTrust::Roots(roots) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Tls(format!("cannot verify against these roots: {e}")))?
        }
        ServerTrust::Unverified => Arc::new(Unverified {
            algorithms: provider.signature_verification_algorithms,
        }),
    })
}

/// A TLS 1.3-only server configuration with [`provider`] presenting a CA-issued
/// certificate chain (leaf first) and its private key (ECDSA, Ed25519 or RSA).
pub fn server_config_with_certificate(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, Error> {
    rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("unusable certificate or key: {e}")))
}

/// Reads every certificate of a PEM file (a chain, leaf first, or a CA bundle).
pub fn load_pem_chain(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_pem_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        Error::Tls(format!(
            "{}: no usable private key ({e}); give a PEM file with a PRIVATE KEY block",
            path.display()
        ))
    })
}

/// Roots for [`ServerTrust::Roots`] from a PEM file of CA certificates.
pub fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_pem_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{}: unusable CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

/// [`ServerTrust::Unverified`]: checks the handshake signature, nothing else.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
