//! quill's rustls `X25519MLKEM768` group (quill-crypto, feature `tls`) against an
//! implementation nobody here wrote: BoringSSL, through the `boring` crate.
//!
//! TLS 1.3 over a loopback TCP connection, in both roles, with BoringSSL restricted to
//! X25519MLKEM768 so that nothing else can be negotiated. Both sides must report the
//! group (0x11EC) and application data must cross both ways: a wrong byte order of the
//! shares or of the shared secret (draft-ietf-tls-ecdhe-mlkem: ML-KEM first) fails the
//! handshake. The server's certificate is quill's host-key certificate either way, so
//! BoringSSL also parses it and signs or checks its Ed25519 CertificateVerify.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use boring::pkey::PKey;
use boring::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslSignatureAlgorithm, SslVerifyMode, SslVersion,
};
use boring::x509::X509;
use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::tls;
use rustls::NamedGroup;

/// Bounds every read and write on the sockets (a hang guard, not a timing check).
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const CODEPOINT: u16 = 0x11ec;
const SEED: [u8; 32] = [0x42; 32];
const FROM_CLIENT: &[u8] = b"client -> server over X25519MLKEM768\n";
const FROM_SERVER: &[u8] = b"server -> client over X25519MLKEM768\n";

/// RFC 8410 §7: the PKCS #8 (v1) form of an Ed25519 private key from its seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let prefix = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    [&prefix[..], seed].concat()
}

/// A TLS 1.3-only BoringSSL context whose only group is X25519MLKEM768.
fn boring_context(server_key: Option<&HostKeyPair>) -> SslContext {
    let mut ctx = SslContextBuilder::new(SslMethod::tls()).unwrap();
    ctx.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    ctx.set_max_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    ctx.set_curves_list("X25519MLKEM768").unwrap();
    match server_key {
        Some(key) => {
            let cert = tls::host_key_certificate(key).unwrap();
            ctx.set_certificate(&X509::from_der(cert.as_ref()).unwrap())
                .unwrap();
            let pkey = PKey::private_key_from_pkcs8(&ed25519_pkcs8(&SEED)).unwrap();
            ctx.set_private_key(&pkey).unwrap();
        }
        None => {
            // No PKI: the test compares the certificate itself after the handshake;
            // BoringSSL still checks the CertificateVerify signature with its key,
            // which it only accepts as Ed25519 when asked to.
            ctx.set_verify(SslVerifyMode::NONE);
            ctx.set_verify_algorithm_prefs(&[SslSignatureAlgorithm::ED25519])
                .unwrap();
        }
    }
    ctx.build()
}

fn with_timeouts(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A listener on 127.0.0.1 and a client already connected to it.
fn loopback_pair() -> (TcpListener, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener, with_timeouts(client))
}

fn accepted(listener: &TcpListener) -> TcpStream {
    // The client connected before this runs, so accept returns at once.
    with_timeouts(listener.accept().unwrap().0)
}

fn pinned(key: PublicKey) -> Arc<tls::HostKeyCheck> {
    Arc::new(move |k: &PublicKey| {
        if *k == key {
            Ok(())
        } else {
            Err(format!("unexpected host key {}", k.fingerprint()))
        }
    })
}

/// What the BoringSSL side saw: its negotiated group and the bytes it received.
struct BoringSide {
    group: Option<u16>,
    group_name: Option<&'static str>,
    received: Vec<u8>,
    peer_certificate: Option<Vec<u8>>,
}

/// What the rustls side received, and the BoringSSL side's report. If the rustls side
/// failed, its socket is shut down first so the peer does not wait for bytes that will
/// not come.
fn join_peer(
    rustls_side: std::io::Result<Vec<u8>>,
    sock: &TcpStream,
    peer: thread::JoinHandle<Result<BoringSide, String>>,
) -> (Vec<u8>, BoringSide) {
    if rustls_side.is_err() {
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
    let boring = peer.join().unwrap();
    (
        rustls_side.expect("rustls side"),
        boring.expect("BoringSSL side"),
    )
}

/// Both ends report X25519MLKEM768: rustls by name, BoringSSL by codepoint and name.
fn assert_both_used_the_group(rustls_side: &rustls::CommonState, boring: &BoringSide) {
    assert_eq!(
        rustls_side
            .negotiated_key_exchange_group()
            .map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768)
    );
    assert_eq!(boring.group, Some(CODEPOINT));
    assert_eq!(boring.group_name, Some("X25519MLKEM768"));
}

#[test]
fn rustls_client_with_quill_group_to_boringssl_server() {
    let key = HostKeyPair::from_seed(&SEED).unwrap();
    let ctx = boring_context(Some(&key));
    let (listener, tcp) = loopback_pair();
    let server = thread::spawn(move || {
        let ssl = Ssl::new(&ctx).unwrap();
        let mut stream = ssl.accept(accepted(&listener)).map_err(|e| e.to_string())?;
        let mut received = vec![0u8; FROM_CLIENT.len()];
        stream
            .read_exact(&mut received)
            .map_err(|e| e.to_string())?;
        stream.write_all(FROM_SERVER).map_err(|e| e.to_string())?;
        stream.flush().map_err(|e| e.to_string())?;
        Ok::<_, String>(BoringSide {
            group: stream.ssl().curve(),
            group_name: stream.ssl().curve_name(),
            received,
            peer_certificate: None,
        })
    });

    let config = tls::client_config(pinned(key.public())).unwrap();
    let name = "quill.invalid".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls_stream = rustls::StreamOwned::new(conn, tcp);
    let client_result = tls_stream
        .write_all(FROM_CLIENT)
        .and_then(|()| tls_stream.flush())
        .and_then(|()| {
            let mut got = vec![0u8; FROM_SERVER.len()];
            tls_stream.read_exact(&mut got).map(|()| got)
        });
    let (received, boring) = join_peer(client_result, &tls_stream.sock, server);
    assert_eq!(received, FROM_SERVER);
    assert_both_used_the_group(&tls_stream.conn, &boring);
    assert_eq!(boring.received, FROM_CLIENT);
}

#[test]
fn boringssl_client_to_rustls_server_with_quill_group() {
    let key = Arc::new(HostKeyPair::from_seed(&SEED).unwrap());
    let ctx = boring_context(None);
    let (listener, tcp) = loopback_pair();
    let config = Arc::new(tls::server_config(key.clone()).unwrap());
    let client = thread::spawn(move || {
        let ssl = Ssl::new(&ctx).unwrap();
        let mut stream = ssl.connect(tcp).map_err(|e| e.to_string())?;
        stream.write_all(FROM_CLIENT).map_err(|e| e.to_string())?;
        stream.flush().map_err(|e| e.to_string())?;
        let mut received = vec![0u8; FROM_SERVER.len()];
        stream
            .read_exact(&mut received)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(BoringSide {
            group: stream.ssl().curve(),
            group_name: stream.ssl().curve_name(),
            received,
            peer_certificate: stream.ssl().peer_certificate().map(|c| c.to_der().unwrap()),
        })
    });

    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls_stream = rustls::StreamOwned::new(conn, accepted(&listener));
    let server_result = (|| {
        let mut got = vec![0u8; FROM_CLIENT.len()];
        tls_stream.read_exact(&mut got)?;
        tls_stream.write_all(FROM_SERVER)?;
        tls_stream.flush()?;
        Ok::<_, std::io::Error>(got)
    })();
    let (received, boring) = join_peer(server_result, &tls_stream.sock, client);
    assert_eq!(received, FROM_CLIENT);
    assert_both_used_the_group(&tls_stream.conn, &boring);
    assert_eq!(boring.received, FROM_SERVER);
    let expected = tls::host_key_certificate(&key).unwrap();
    assert_eq!(boring.peer_certificate.as_deref(), Some(expected.as_ref()));
}
