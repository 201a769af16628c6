//! TLS 1.3 handshakes in memory between rustls clients and servers using
//! `quill_crypto::tls`: the X25519MLKEM768 group (negotiation, HelloRetryRequest,
//! classical fallback, malformed shares on the wire) and host-key certificates (the
//! client's policy decides; the CertificateVerify signature is checked).
//!
//! Interoperability with an implementation nobody here wrote (BoringSSL) is in
//! `interop-tests/tests/tls_group.rs`.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::tls::{self, HostKeyCertError, HostKeyCheck, X25519MLKEM768};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::{ring::kx_group, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, Connection, HandshakeKind, NamedGroup,
    PeerMisbehaved, ServerConfig, ServerConnection,
};

/// A handshake never needs more than a handful of flights.
const MAX_FLIGHTS: usize = 10;

fn host_key(seed: u8) -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[seed; 32]).unwrap())
}

/// A check that accepts exactly `key` and records every key it was asked about.
fn pinned(key: PublicKey) -> (Arc<HostKeyCheck>, Arc<Mutex<Vec<PublicKey>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let check = move |k: &PublicKey| {
        log.lock().unwrap().push(k.clone());
        if *k == key {
            Ok(())
        } else {
            Err(format!("{} is not the pinned key", k.fingerprint()))
        }
    };
    (Arc::new(check), seen)
}

fn with_groups(groups: &[&'static dyn SupportedKxGroup]) -> CryptoProvider {
    CryptoProvider {
        kx_groups: groups.to_vec(),
        ..tls::provider()
    }
}

fn server_config_with(key: Arc<HostKeyPair>, provider: CryptoProvider) -> ServerConfig {
    ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            tls::certified_host_key(key).unwrap(),
        )))
}

fn client_config_with(check: Arc<HostKeyCheck>, provider: CryptoProvider) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::HostKeyVerifier::new(check)))
        .with_no_client_auth()
}

fn connect(client: ClientConfig, server: ServerConfig) -> (Connection, Connection) {
    let name = ServerName::try_from("quill.invalid").unwrap();
    let c = ClientConnection::new(Arc::new(client), name).unwrap();
    let s = ServerConnection::new(Arc::new(server)).unwrap();
    (c.into(), s.into())
}

/// Which side refused the handshake, and why.
#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Moves everything `from` has to send into `to`, letting `tamper` edit the bytes
/// on the way; returns the bytes moved and what `to` made of them.
fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    tamper: &mut dyn FnMut(&mut Vec<u8>),
) -> (Vec<u8>, Result<(), rustls::Error>) {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    tamper(&mut bytes);
    let mut rd = &bytes[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        if let Err(e) = to.process_new_packets() {
            return (bytes, Err(e));
        }
    }
    (bytes, Ok(()))
}

/// Runs the handshake; `tamper_c2s` / `tamper_s2c` see each client / server flight.
/// Returns the client's first flight (the ClientHello) and the server's first flight.
fn handshake_tampered(
    client: &mut Connection,
    server: &mut Connection,
    tamper_c2s: &mut dyn FnMut(&mut Vec<u8>),
    tamper_s2c: &mut dyn FnMut(&mut Vec<u8>),
) -> Result<(Vec<u8>, Vec<u8>), Failed> {
    let mut firsts: (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    for _ in 0..MAX_FLIGHTS {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok((firsts.0.unwrap(), firsts.1.unwrap()));
        }
        let (sent, r) = transfer(client, server, tamper_c2s);
        firsts.0.get_or_insert(sent);
        r.map_err(Failed::Server)?;
        let (sent, r) = transfer(server, client, tamper_s2c);
        firsts.1.get_or_insert(sent);
        r.map_err(Failed::Client)?;
    }
    panic!("handshake did not finish in {MAX_FLIGHTS} flights each way");
}

fn handshake(client: &mut Connection, server: &mut Connection) -> Result<(), Failed> {
    handshake_tampered(client, server, &mut |_| {}, &mut |_| {}).map(|_| ())
}

fn group(conn: &Connection) -> NamedGroup {
    conn.negotiated_key_exchange_group().unwrap().name()
}

/// Application data both ways over the established connections.
fn exchange_data(client: &mut Connection, server: &mut Connection) {
    client.writer().write_all(b"ping from client").unwrap();
    transfer(client, server, &mut |_| {}).1.unwrap();
    let mut got = [0u8; 16];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping from client");
    server.writer().write_all(b"pong from server").unwrap();
    transfer(server, client, &mut |_| {}).1.unwrap();
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong from server");
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A KeyShareEntry header (RFC 8446 §4.2.8): group (u16) || key_exchange length (u16).
fn key_share_header(group: u16, len: usize) -> [u8; 4] {
    let len = u16::try_from(len).unwrap().to_be_bytes();
    let g = group.to_be_bytes();
    [g[0], g[1], len[0], len[1]]
}

const CLIENT_SHARE: [u8; 4] = [0x11, 0xec, 0x04, 0xc0]; // 0x11EC, 1216 bytes
const SERVER_SHARE: [u8; 4] = [0x11, 0xec, 0x04, 0x60]; // 0x11EC, 1120 bytes

#[test]
fn default_provider_negotiates_x25519mlkem768_and_moves_data() {
    let key = host_key(1);
    let (check, seen) = pinned(key.public());
    let (mut c, mut s) = connect(
        tls::client_config(check).unwrap(),
        tls::server_config(key.clone()).unwrap(),
    );
    let (client_hello, server_hello) =
        handshake_tampered(&mut c, &mut s, &mut |_| {}, &mut |_| {}).unwrap();
    assert_eq!(group(&c), NamedGroup::X25519MLKEM768);
    assert_eq!(group(&s), NamedGroup::X25519MLKEM768);
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(s.handshake_kind(), Some(HandshakeKind::Full));
    // On the wire: the client's 1216-byte hybrid share, then its X25519 half again as
    // an X25519 share; the server's 1120-byte share.
    assert_eq!(CLIENT_SHARE, key_share_header(0x11ec, 1184 + 32));
    assert_eq!(SERVER_SHARE, key_share_header(0x11ec, 1088 + 32));
    let at = find(&client_hello, &CLIENT_SHARE).expect("hybrid key share in ClientHello");
    let x25519_half = &client_hello[at + 4 + 1184..at + 4 + 1216];
    let mut x25519_share = key_share_header(0x001d, 32).to_vec();
    x25519_share.extend_from_slice(x25519_half);
    assert_eq!(
        find(&client_hello, &x25519_share),
        Some(at + 4 + 1216),
        "the X25519 share repeats the hybrid share's X25519 half"
    );
    assert!(find(&server_hello, &SERVER_SHARE).is_some());
    // The policy saw the server's host key, once.
    assert_eq!(*seen.lock().unwrap(), vec![key.public()]);
    exchange_data(&mut c, &mut s);
}

/// The handshake kind and group both sides report after a handshake (with data
/// exchanged) between a client and a server offering these groups.
fn negotiate(
    client_groups: &[&'static dyn SupportedKxGroup],
    server_groups: &[&'static dyn SupportedKxGroup],
) -> (HandshakeKind, NamedGroup) {
    let key = host_key(2);
    let (check, _) = pinned(key.public());
    let (mut c, mut s) = connect(
        client_config_with(check, with_groups(client_groups)),
        server_config_with(key, with_groups(server_groups)),
    );
    handshake(&mut c, &mut s).unwrap();
    exchange_data(&mut c, &mut s);
    assert_eq!(c.handshake_kind(), s.handshake_kind());
    assert_eq!(group(&c), group(&s));
    (c.handshake_kind().unwrap(), group(&c))
}

#[test]
fn groups_negotiated_with_and_without_hello_retry_request() {
    use HandshakeKind::{Full, FullWithHelloRetryRequest as Retry};
    use NamedGroup::{secp256r1, X25519};
    let quill = tls::provider().kx_groups;
    let hybrid = NamedGroup::X25519MLKEM768;
    type Groups<'a> = &'a [&'static dyn SupportedKxGroup];
    let cases: [(&str, Groups, Groups, _); 6] = [
        // The client's first share is X25519; the server takes X25519MLKEM768 only and
        // asks for it.
        (
            "classical share, hybrid-only server",
            &[kx_group::X25519, X25519MLKEM768],
            &[X25519MLKEM768],
            (Retry, hybrid),
        ),
        // A server with X25519 only answers the X25519 share that repeats the hybrid's
        // X25519 half (the client's complete_hybrid_component path).
        (
            "quill client, X25519-only server",
            &quill,
            &[kx_group::X25519],
            (Full, X25519),
        ),
        // A server knowing neither asks for secp256r1.
        (
            "quill client, P-256-only server",
            &quill,
            &[kx_group::SECP256R1],
            (Retry, secp256r1),
        ),
        (
            "X25519-only client, quill server",
            &[kx_group::X25519],
            &quill,
            (Full, X25519),
        ),
        // Like aioquic, which lists secp256r1 first, sends its share, and cannot follow
        // a HelloRetryRequest: the server takes the client's first group it supports.
        (
            "P-256-first client, quill server",
            &[kx_group::SECP256R1, kx_group::X25519, X25519MLKEM768],
            &quill,
            (Full, secp256r1),
        ),
        ("quill client, quill server", &quill, &quill, (Full, hybrid)),
    ];
    for (name, client, server, expected) in cases {
        assert_eq!(negotiate(client, server), expected, "{name}");
    }
}

/// Runs a default handshake with `edit` applied to the hybrid key share found after
/// `header` in the client's (`to_server`) or the server's flight.
fn handshake_with_edited_share(to_server: bool, header: [u8; 4], edit: fn(&mut [u8])) -> Failed {
    let key = host_key(6);
    let (check, _) = pinned(key.public());
    let (mut c, mut s) = connect(
        tls::client_config(check).unwrap(),
        tls::server_config(key).unwrap(),
    );
    let mut edited = false;
    let mut tamper = |bytes: &mut Vec<u8>| {
        if !edited {
            let at = find(bytes, &header).expect("key share") + 4;
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            edit(&mut bytes[at..at + len]);
            edited = true;
        }
    };
    let r = if to_server {
        handshake_tampered(&mut c, &mut s, &mut tamper, &mut |_| {})
    } else {
        handshake_tampered(&mut c, &mut s, &mut |_| {}, &mut tamper)
    };
    r.expect_err("a tampered key share must fail the handshake")
}

#[test]
fn malformed_shares_on_the_wire_are_refused() {
    type Edit = fn(&mut [u8]);
    let cases: [(&str, bool, [u8; 4], Edit); 3] = [
        (
            "client: low-order X25519 point (u = 0)",
            true,
            CLIENT_SHARE,
            |share| share[1184..].fill(0),
        ),
        // Coefficients ≥ q: the FIPS 203 §7.2 modulus check fails.
        ("client: invalid ML-KEM key", true, CLIENT_SHARE, |share| {
            share[..3].fill(0xff)
        }),
        (
            "server: low-order X25519 point",
            false,
            SERVER_SHARE,
            |share| share[1088..].fill(0),
        ),
    ];
    for (name, to_server, header, edit) in cases {
        let f = handshake_with_edited_share(to_server, header, edit);
        let (Failed::Server(e) | Failed::Client(e)) = &f;
        assert_eq!(matches!(f, Failed::Server(_)), to_server, "{name}: {f:?}");
        assert!(
            matches!(
                e,
                rustls::Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare)
            ),
            "{name}: {f:?}"
        );
    }
}

#[test]
fn tampered_ciphertext_fails_the_handshake() {
    // A flipped ciphertext bit is well-formed: ML-KEM's implicit rejection gives the
    // client another secret, and the server's encrypted flight does not decrypt.
    let f = handshake_with_edited_share(false, SERVER_SHARE, |share| share[0] ^= 1);
    assert!(
        matches!(&f, Failed::Client(rustls::Error::DecryptError)),
        "{f:?}"
    );
}

#[test]
fn host_key_policy_decides() {
    let key = host_key(7);
    let other = host_key(8);
    let (check, seen) = pinned(other.public());
    let (mut c, mut s) = connect(
        tls::client_config(check).unwrap(),
        tls::server_config(key.clone()).unwrap(),
    );
    let f = handshake(&mut c, &mut s).expect_err("a key the policy refuses");
    let Failed::Client(rustls::Error::InvalidCertificate(CertificateError::Other(other_err))) = &f
    else {
        panic!("{f:?}");
    };
    let why = other_err.0.downcast_ref::<HostKeyCertError>().unwrap();
    let expected = format!("{} is not the pinned key", key.public().fingerprint());
    assert_eq!(why, &HostKeyCertError::Refused(expected));
    // The policy was given the server's key, with the fingerprint quill uses today.
    assert_eq!(*seen.lock().unwrap(), vec![key.public()]);
}

/// A server signing key that signs with `signer` whatever the certificate says, and
/// can corrupt its signatures.
#[derive(Debug)]
struct WrongSigner {
    signer: Arc<dyn SigningKey>,
    flip_bit: bool,
}

#[derive(Debug)]
struct FlippingSigner(Box<dyn rustls::sign::Signer>, bool);

impl rustls::sign::Signer for FlippingSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut sig = self.0.sign(message)?;
        if self.1 {
            sig[5] ^= 0x10;
        }
        Ok(sig)
    }
    fn scheme(&self) -> rustls::SignatureScheme {
        self.0.scheme()
    }
}

impl SigningKey for WrongSigner {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        let inner = self.signer.choose_scheme(offered)?;
        Some(Box::new(FlippingSigner(inner, self.flip_bit)))
    }
    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.signer.algorithm()
    }
}

/// A handshake with a server presenting `cert_key`'s certificate but signing
/// CertificateVerify with `sign_key` (its signature bit-flipped if `flip_bit`), to a
/// client pinning `cert_key`.
fn handshake_with_signer(
    cert_key: Arc<HostKeyPair>,
    sign_key: Arc<HostKeyPair>,
    flip_bit: bool,
) -> Result<(), Failed> {
    let cert = tls::host_key_certificate(&cert_key).unwrap();
    let signer = tls::certified_host_key(sign_key).unwrap().key.clone();
    let certified = CertifiedKey::new(vec![cert], Arc::new(WrongSigner { signer, flip_bit }));
    let server = ServerConfig::builder_with_provider(Arc::new(tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    let (check, seen) = pinned(cert_key.public());
    let (mut c, mut s) = connect(tls::client_config(check).unwrap(), server);
    let r = handshake(&mut c, &mut s);
    // The policy is asked only about a key whose signature verified.
    let asked = seen.lock().unwrap().len();
    assert_eq!(asked, usize::from(r.is_ok()), "{r:?}");
    r
}

#[test]
fn certificate_verify_signature_is_checked() {
    let key = host_key(9);
    // The control: the same wrapper, signing honestly, connects.
    handshake_with_signer(key.clone(), key.clone(), false).unwrap();
    // A tampered signature.
    let f = handshake_with_signer(key.clone(), key.clone(), true).unwrap_err();
    assert!(
        matches!(
            f,
            Failed::Client(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature
            ))
        ),
        "{f:?}"
    );
    // A replayed certificate: the pinned key's certificate, signed by another key.
    let f = handshake_with_signer(key, host_key(10), false).unwrap_err();
    assert!(
        matches!(
            f,
            Failed::Client(rustls::Error::InvalidCertificate(
                CertificateError::BadSignature
            ))
        ),
        "{f:?}"
    );
}

#[test]
fn verifier_refuses_chains_and_other_key_types() {
    let key = host_key(11);
    let (check, seen) = pinned(key.public());
    let verifier = tls::HostKeyVerifier::new(check);
    let name = ServerName::try_from("quill.invalid").unwrap();
    let now = UnixTime::now();
    let cert = tls::host_key_certificate(&key).unwrap();
    verifier
        .verify_server_cert(&cert, &[], &name, &[], now)
        .unwrap();
    // The certificate's shape only: the policy waits for the signature.
    assert!(seen.lock().unwrap().is_empty());
    let refused = |r: Result<_, rustls::Error>| match r {
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(e))) => {
            e.0.downcast_ref::<HostKeyCertError>().unwrap().clone()
        }
        other => panic!("{other:?}"),
    };
    // A chain, even of the right certificate.
    assert_eq!(
        refused(verifier.verify_server_cert(&cert, std::slice::from_ref(&cert), &name, &[], now)),
        HostKeyCertError::NotSelfStanding
    );
    // An ECDSA P-256 certificate.
    let ecdsa = rcgen::generate_simple_self_signed(vec!["quill.invalid".into()]).unwrap();
    assert_eq!(
        refused(verifier.verify_server_cert(ecdsa.cert.der(), &[], &name, &[], now)),
        HostKeyCertError::NotEd25519
    );
    // Not a certificate at all.
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(verifier
        .verify_server_cert(&garbage, &[], &name, &[], now)
        .is_err());
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(
        verifier.supported_verify_schemes(),
        vec![rustls::SignatureScheme::ED25519]
    );
}
