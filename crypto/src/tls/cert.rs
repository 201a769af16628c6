//! Certificates without a PKI: a self-signed X.509 certificate over the server's
//! Ed25519 host key, and a client-side verifier that trusts the key, not the
//! certificate.
//!
//! The certificate is only an envelope for the host key, which is what quill's own
//! handshake authenticates: the client's policy (`known_hosts`, `--accept-new-host`,
//! `--host-key` pinning) sees the same [`PublicKey`] and so the same fingerprint over
//! QUIC v1 as over quill's version. Proof of possession is TLS 1.3's CertificateVerify
//! (RFC 8446 §4.4.3), an Ed25519 signature over the handshake transcript, checked by
//! webpki through rustls. The certificate's own self-signature, names and dates carry
//! no trust and are not checked, as with an SSH host key.
//!
//! The certificate is a pure function of the key (Ed25519 signatures are
//! deterministic, and every field is fixed or derived from the key), so a server
//! presents the same bytes after every restart.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    CertificateError, DigitallySignedStruct, OtherError, PeerMisbehaved, SignatureAlgorithm,
    SignatureScheme,
};

use crate::hostkey::{Algorithm, HostKeyPair, PublicKey};
use crate::Error;

/// RFC 8410 §4: the DER of an Ed25519 SubjectPublicKeyInfo up to the key:
/// `SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (0 unused bits) key }`.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const ED25519_KEY_LEN: usize = 32;

fn ed25519_spki(key: &[u8]) -> Vec<u8> {
    [&ED25519_SPKI_PREFIX[..], key].concat()
}

/// The host key inside an Ed25519 SubjectPublicKeyInfo, or `None` for any other.
fn ed25519_key_of(spki: &[u8]) -> Option<PublicKey> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    if key.len() != ED25519_KEY_LEN {
        return None;
    }
    PublicKey::from_raw(Algorithm::Ed25519, key).ok()
}

/// The host key as rcgen sees it, to sign the certificate.
struct CertSigner<'a> {
    key: &'a HostKeyPair,
    public: Vec<u8>,
}

impl rcgen::PublicKeyData for CertSigner<'_> {
    /// For Ed25519, the raw key (RFC 8410 §4: the BIT STRING's contents).
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.key.algorithm() {
            Algorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl rcgen::SigningKey for CertSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(msg).as_bytes().to_vec())
    }
}

/// The self-signed X.509 v3 certificate over `key` that a QUIC v1 server presents.
///
/// Subject and issuer `CN=quill host key SHA256:…` (the key's fingerprint), serial
/// number from SHA-256 of the key, valid from 1975-01-01 to 9999-12-31 23:59:59 (RFC
/// 5280 §4.1.2.5: "no well-defined expiration date"), key usage digitalSignature,
/// extended key usage serverAuth; no subject alternative names (host names are the
/// client's `known_hosts` business, not the certificate's).
pub fn host_key_certificate(key: &HostKeyPair) -> Result<CertificateDer<'static>, Error> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
        SerialNumber,
    };
    let public = key.public();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("quill host key {}", public.fingerprint()),
    );
    params.distinguished_name = name;
    params.not_before = rcgen::date_time_ymd(1975, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31) + std::time::Duration::from_secs(86_399);
    // RFC 5280 §4.1.2.2: a positive integer of at most 20 octets. Bit 7 clear keeps it
    // positive, bit 6 set keeps its DER encoding exactly 16 octets.
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&crate::schedule::sha256(&public.to_bytes())[..16]);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let signer = CertSigner {
        key,
        public: public.key_bytes().to_vec(),
    };
    let cert = params
        .self_signed(&signer)
        .map_err(|e| Error::Tls(format!("self-signed certificate: {e}")))?;
    Ok(cert.der().clone())
}

/// The certificate from [`host_key_certificate`] with `key` as its TLS signing key,
/// ready for a rustls server (`ServerConfig::with_cert_resolver` through
/// [`rustls::sign::SingleCertAndKey`], or [`super::server_config`]).
pub fn certified_host_key(key: Arc<HostKeyPair>) -> Result<Arc<CertifiedKey>, Error> {
    let cert = host_key_certificate(&key)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert],
        Arc::new(HostKeySigningKey(key)),
    )))
}

/// The host key as rustls's signing key for CertificateVerify.
#[derive(Debug)]
struct HostKeySigningKey(Arc<HostKeyPair>);

impl SigningKey for HostKeySigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = match self.0.algorithm() {
            Algorithm::Ed25519 => SignatureScheme::ED25519,
        };
        if !offered.contains(&scheme) {
            return None;
        }
        Some(Box::new(HostKeySigner(self.0.clone())))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        match self.0.algorithm() {
            Algorithm::Ed25519 => Some(ed25519_spki(self.0.public().key_bytes()).into()),
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.algorithm() {
            Algorithm::Ed25519 => SignatureAlgorithm::ED25519,
        }
    }
}

#[derive(Debug)]
struct HostKeySigner(Arc<HostKeyPair>);

impl Signer for HostKeySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.0.sign(message).as_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        match self.0.algorithm() {
            Algorithm::Ed25519 => SignatureScheme::ED25519,
        }
    }
}

/// The client's decision on the server's host key: `Err(reason)` refuses it. Same
/// shape as quill-transport's `HostKeyVerifier`, so a `known_hosts` lookup or a pinned
/// fingerprint plugs in unchanged.
pub type HostKeyCheck = dyn Fn(&PublicKey) -> Result<(), String> + Send + Sync;

/// Why [`HostKeyVerifier`] refused a server's certificate. It reaches the caller
/// inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))` and can be
/// downcast from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCertError {
    /// The server sent a chain; a host-key certificate stands alone.
    NotSelfStanding,
    /// The certificate's key is not an Ed25519 key.
    NotEd25519,
    /// The client's [`HostKeyCheck`] refused the key, for this reason.
    Refused(String),
}

impl std::fmt::Display for HostKeyCertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKeyCertError::NotSelfStanding => {
                f.write_str("the server sent a certificate chain, not a host-key certificate")
            }
            HostKeyCertError::NotEd25519 => {
                f.write_str("the server's certificate does not carry an Ed25519 host key")
            }
            HostKeyCertError::Refused(reason) => write!(f, "host key refused: {reason}"),
        }
    }
}

impl std::error::Error for HostKeyCertError {}

impl From<HostKeyCertError> for rustls::Error {
    fn from(e: HostKeyCertError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// A rustls [`ServerCertVerifier`] for host-key certificates: accepts a lone
/// certificate carrying an Ed25519 key, checks the TLS 1.3 CertificateVerify signature
/// with that key, and then asks the caller's [`HostKeyCheck`] about the key. TLS 1.3
/// and Ed25519 only.
///
/// The order is quill's own handshake's (docs/SPEC.md §4.5: "The client checks the
/// signature, then its host-key policy"): the check only ever sees a key the server
/// has proven it holds, so a trust-on-first-use policy that records new keys
/// (`--accept-new-host`) cannot be made to record a key by someone who merely sends
/// its certificate.
pub struct HostKeyVerifier {
    check: Arc<HostKeyCheck>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for HostKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKeyVerifier(..)")
    }
}

impl HostKeyVerifier {
    /// A verifier asking `check` about each server's host key.
    pub fn new(check: Arc<HostKeyCheck>) -> Self {
        HostKeyVerifier {
            check,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The host key in `cert`.
    fn host_key(cert: &CertificateDer<'_>) -> Result<PublicKey, rustls::Error> {
        let parsed = ParsedCertificate::try_from(cert)?;
        ed25519_key_of(parsed.subject_public_key_info().as_ref())
            .ok_or_else(|| HostKeyCertError::NotEd25519.into())
    }
}

impl ServerCertVerifier for HostKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(HostKeyCertError::NotSelfStanding.into());
        }
        // Only the shape here; the key is judged once its signature has verified.
        Self::host_key(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configurations in this module offer TLS 1.3 only.
        Err(rustls::Error::General(
            "host-key certificates are used with TLS 1.3 only".into(),
        ))
    }

    /// RFC 8446 §4.4.3: "The receiver of a CertificateVerify message MUST verify the
    /// signature field."
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        let key = Self::host_key(cert)?;
        let valid = rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)?;
        (self.check)(&key).map_err(HostKeyCertError::Refused)?;
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_host_key_and_is_stable() {
        let key = HostKeyPair::from_seed(&[7; 32]).unwrap();
        let cert = host_key_certificate(&key).unwrap();
        assert_eq!(HostKeyVerifier::host_key(&cert).unwrap(), key.public());
        // A pure function of the key.
        assert_eq!(cert, host_key_certificate(&key).unwrap());
        let other = HostKeyPair::from_seed(&[8; 32]).unwrap();
        assert_ne!(cert, host_key_certificate(&other).unwrap());
    }

    /// The certificate for the seed 32 × 0x07 (SPEC.md §9's example host key), byte for
    /// byte; `openssl x509 -text` reads it and `openssl verify -partial_chain` accepts
    /// its self-signature.
    #[test]
    fn certificate_vector() {
        let key = HostKeyPair::from_seed(&[7; 32]).unwrap();
        let expected = [
            "3082017f30820131a00302010202104ccbc331535ab0f5785753c806f48519300506032b6570304c",
            "314a304806035504030c417175696c6c20686f7374206b6579205348413235363a7a4d76444d564e",
            "617350563456315049427653464752646e6567525570754a57366c50696d77656b6c35493020170d",
            "3735303130313030303030305a180f39393939313233313233353935395a304c314a304806035504",
            "030c417175696c6c20686f7374206b6579205348413235363a7a4d76444d564e6173505634563150",
            "49427653464752646e6567525570754a57366c50696d77656b6c3549302a300506032b6570032100",
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22ca3273025300e0603",
            "551d0f0101ff04040302078030130603551d25040c300a06082b06010505070301300506032b6570",
            "0341005d2f8044cee80dfc17391af24772d1840a61e028be92a0c8dd23a4a7326cceb3f6e436d1c7",
            "e569ed87018d5f71eee37ec141ab3bd059c57ab161db98f4cad108",
        ]
        .concat();
        let cert = host_key_certificate(&key).unwrap();
        assert_eq!(hex::encode(cert.as_ref()), expected);
    }

    #[test]
    fn certificate_self_signature_verifies() {
        // webpki checks the certificate's signature with the certificate's own key:
        // the certificate names itself as a trust anchor and as the end entity.
        let key = HostKeyPair::from_seed(&[7; 32]).unwrap();
        let cert = host_key_certificate(&key).unwrap();
        let parsed = ParsedCertificate::try_from(&cert).unwrap();
        let spki = parsed.subject_public_key_info();
        assert_eq!(spki.as_ref(), &ed25519_spki(key.public().key_bytes())[..]);
        // Find the signature: the last 64 bytes of the DER (BIT STRING at the end).
        let der = cert.as_ref();
        let sig = &der[der.len() - 64..];
        assert_eq!(&der[der.len() - 67..der.len() - 64], &[0x03, 0x41, 0x00]);
        // The signed TBSCertificate is the first element of the outer SEQUENCE.
        let tbs_start = 4; // 30 82 LL LL
        let tbs_len = usize::from(u16::from_be_bytes([der[6], der[7]])) + 4;
        let tbs = &der[tbs_start..tbs_start + tbs_len];
        let s = crate::hostkey::Signature::from_raw(Algorithm::Ed25519, sig).unwrap();
        key.public().verify(tbs, &s).unwrap();
    }

    #[test]
    fn non_ed25519_spki_is_not_a_host_key() {
        let key = [3u8; 32];
        assert!(ed25519_key_of(&ed25519_spki(&key)).is_some());
        assert!(ed25519_key_of(&ed25519_spki(&key[..31])).is_none());
        assert!(ed25519_key_of(&[ed25519_spki(&key), vec![0]].concat()).is_none());
        let mut x25519 = ed25519_spki(&key);
        x25519[8] = 0x6e; // OID 1.3.101.110 (X25519)
        assert!(ed25519_key_of(&x25519).is_none());
        assert!(ed25519_key_of(&[]).is_none());
    }

    #[test]
    fn signing_key_offers_ed25519_only() {
        let key = Arc::new(HostKeyPair::from_seed(&[7; 32]).unwrap());
        let ck = certified_host_key(key.clone()).unwrap();
        ck.keys_match().unwrap();
        assert!(ck
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .is_none());
        let signer = ck
            .key
            .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256, SignatureScheme::ED25519])
            .unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::ED25519);
        let sig = signer.sign(b"m").unwrap();
        assert_eq!(sig, key.sign(b"m").as_bytes());
    }
}
