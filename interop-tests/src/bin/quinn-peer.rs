//! `quinn-peer`: quinn (crates.io, rustls with the ring provider) as a reference QUIC
//! peer for quill's interop checks and the comparison harness. The command line and
//! the stream protocol are the shared ones of [`quill_interop::refpeers`].
//!
//! quinn runs on a current-thread tokio runtime; GSO and GRO come from quinn-udp (on by
//! default; `--gso off` disables segmentation offload in the transport config, `--gro
//! off` clears `UDP_GRO` on the socket after quinn-udp set it). Flow-control windows:
//! `--window` (32 MiB) for the connection and every stream, in both directions.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, Endpoint, EndpointConfig, TokioRuntime, TransportConfig, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::task::JoinSet;

use quill_interop::refpeers::{
    self, encode_header, hq, Cli, ClientArgs, ClientReport, Command, ConnTiming, HoldReport,
    ProbeArgs, ProbeOutcome, ProbeReport, ServerArgs, EXIT_FAILURE, HEADER_LEN, MAX_UDP_PAYLOAD,
    ZEROS,
};

const PROG: &str = "quinn-peer";
#[cfg(not(feature = "aws-lc-pq"))]
const STACK: &str = "quinn";
#[cfg(feature = "aws-lc-pq")]
const STACK: &str = "quinn-pq";

/// The entry point (also of `quinn-pq-peer`, which includes this file as a module).
pub fn main() -> ExitCode {
    refpeers::process_start();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            refpeers::print_error(PROG, format!("cannot start the runtime: {e}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = match cli.command {
        Command::Server(a) => rt.block_on(server(a)).map(|()| 0),
        Command::Client(a) => rt.block_on(client(a)).map(|()| 0),
        Command::Probe(a) => Ok(rt.block_on(probe(a))),
        Command::Hq { role } => rt.block_on(hq_main(role)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            refpeers::print_error(PROG, e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The transport settings both sides use.
fn transport(window: u64, gso: bool) -> Result<TransportConfig, String> {
    let w = VarInt::from_u64(window).map_err(|_| format!("window {window} is too large"))?;
    let mut t = TransportConfig::default();
    t.stream_receive_window(w)
        .receive_window(w)
        .send_window(window)
        .max_concurrent_bidi_streams(VarInt::from_u32(1024))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .initial_mtu(MAX_UDP_PAYLOAD as u16)
        .max_idle_timeout(Some(VarInt::from_u32(30_000).into()))
        .enable_segmentation_offload(gso);
    Ok(t)
}

/// A quinn endpoint on a socket with large buffers; GRO cleared if asked.
fn endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
    gro: bool,
) -> Result<Endpoint, String> {
    let sock = refpeers::bind_udp(bind).map_err(|e| format!("cannot bind {bind}: {e}"))?;
    let keep = sock
        .try_clone()
        .map_err(|e| format!("cannot duplicate the socket: {e}"))?;
    let ep = Endpoint::new(
        EndpointConfig::default(),
        server,
        sock,
        Arc::new(TokioRuntime),
    )
    .map_err(|e| format!("cannot create the endpoint on {bind}: {e}"))?;
    if !gro {
        use std::os::fd::AsFd;
        refpeers::disable_gro(keep.as_fd()).map_err(|e| format!("cannot turn GRO off: {e}"))?;
    }
    Ok(ep)
}

async fn server(a: ServerArgs) -> Result<(), String> {
    let files = refpeers::ensure_certificate(&a.cert_dir).map_err(|e| {
        format!(
            "cannot write the certificate into {}: {e}",
            a.cert_dir.display()
        )
    })?;
    let tls = server_tls(&files, provider(), refpeers::ALPN)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(Arc::new(transport(a.net.window, a.net.gso.on())?));
    let ep = endpoint(a.listen, Some(sc), a.net.gro.on())?;
    let addr = ep.local_addr().map_err(|e| e.to_string())?;

    let stop = Arc::new(tokio::sync::Notify::new());
    if !a.ignore_stdin {
        let s = stop.clone();
        refpeers::watch_stdin(move || s.notify_one());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    refpeers::print_listening(addr);

    loop {
        tokio::select! {
            incoming = ep.accept() => match incoming {
                Some(incoming) => {
                    tokio::spawn(async move {
                        if let Ok(conn) = incoming.await {
                            serve_connection(conn).await;
                        }
                    });
                }
                None => break,
            },
            _ = stop.notified() => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    ep.close(VarInt::from_u32(0), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    Ok(())
}

async fn serve_connection(conn: quinn::Connection) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(send, recv));
    }
}

/// One stream of the bench protocol: header D, discard to FIN, answer D bytes + FIN.
async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut header = [0u8; HEADER_LEN];
    if recv.read_exact(&mut header).await.is_err() {
        return;
    }
    let d = u64::from_be_bytes(header);
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return,
        }
    }
    if send_zeros(&mut send, d).await.is_err() {
        return;
    }
    let _ = send.finish();
    // Keep the stream until the peer has everything (or the connection ends).
    let _ = send.stopped().await;
}

/// Writes `n` zero bytes without copying (chunks of a static buffer).
async fn send_zeros(send: &mut quinn::SendStream, mut n: u64) -> Result<(), quinn::WriteError> {
    while n > 0 {
        let len = n.min(ZEROS.len() as u64) as usize;
        send.write_chunk(bytes_static(&ZEROS[..len])).await?;
        n -= len as u64;
    }
    Ok(())
}

fn bytes_static(s: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(s)
}

/// The TLS 1.3 server configuration with the certificate in `files`, offering `alpn`.
fn server_tls(
    files: &refpeers::CertFiles,
    provider: Arc<rustls::crypto::CryptoProvider>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, String> {
    // The whole chain in cert.pem (leaf first; more than one in amplificationlimit).
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_pem)
        .map_err(|e| format!("cannot read {}: {e}", files.cert_pem.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", files.cert_pem.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_pem)
        .map_err(|e| format!("cannot read {}: {e}", files.key_pem.display()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("bad certificate or key: {e}"))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

fn client_tls(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", ca.display()));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("unusable certificate in {}: {e}", ca.display()))?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![refpeers::ALPN.to_vec()];
    Ok(tls)
}

async fn client(a: ClientArgs) -> Result<(), String> {
    let tls = client_tls(&a.ca)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = transport(a.net.window, a.net.gso.on())?;
    if a.hold().is_some() {
        t.keep_alive_interval(Some(a.keep_alive()));
    }
    cc.transport_config(Arc::new(t));
    let mut ep = endpoint(refpeers::local_bind_for(a.connect), None, a.net.gro.on())?;
    ep.set_default_client_config(cc);

    let limit = Duration::from_secs(a.timeout_secs);
    let wall_start = Instant::now();
    let run = run_connections(&ep, &a);
    let (timings, held) = match tokio::time::timeout(limit, run).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("timed out after {} s", a.timeout_secs)),
    };
    let wall = wall_start.elapsed();
    let hold = match a.hold() {
        Some(hold) => Some(hold_connections(&held, hold, &a).await),
        None => None,
    };
    ep.close(VarInt::from_u32(0), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    let report = ClientReport::from_timings(STACK, a.upload, a.download, &timings, wall)
        .ok_or("no connection completed")?;
    let json = report.to_json();
    refpeers::print_json_line(&match hold {
        Some(h) => h.add_to(json),
        None => json,
    });
    Ok(())
}

/// Idle mode: `ready K`, then the connections stay open for `hold` (quinn sends their
/// keep-alives); how many were lost meanwhile and how many PINGs went out.
async fn hold_connections(
    held: &[quinn::Connection],
    hold: Duration,
    a: &ClientArgs,
) -> HoldReport {
    refpeers::print_ready(held.len());
    tokio::time::sleep(hold).await;
    let lost = held.iter().filter(|c| c.close_reason().is_some()).count();
    HoldReport {
        held: held.len() as u32,
        lost_while_held: lost as u32,
        keep_alives_sent: held.iter().map(|c| c.stats().frame_tx.ping).sum(),
        keep_alive_ms: a.keep_alive_ms,
        hold_secs: a.hold_secs,
    }
}

/// Runs `a.connections` connections, at most `a.concurrency` at once; returns their
/// timings in start order and, in idle mode (`--hold-secs`), the open connections.
async fn run_connections(
    ep: &Endpoint,
    a: &ClientArgs,
) -> Result<(Vec<ConnTiming>, Vec<quinn::Connection>), String> {
    let total = a.connections as usize;
    let hold = a.hold().is_some();
    let mut results: Vec<Option<ConnTiming>> = vec![None; total];
    let mut held = Vec::new();
    let mut set = JoinSet::new();
    let mut next = 0usize;
    let mut done = 0usize;
    while done < total {
        while next < total && set.len() < a.concurrency as usize {
            let ep = ep.clone();
            let (addr, up, down) = (a.connect, a.upload, a.download);
            let i = next;
            set.spawn(async move { (i, one_connection(&ep, addr, up, down, hold).await) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, Ok((t, conn))))) => {
                results[i] = Some(t);
                held.extend(conn);
                done += 1;
            }
            Some(Ok((i, Err(e)))) => return Err(format!("connection {}: {e}", i + 1)),
            Some(Err(e)) => return Err(format!("a connection task failed: {e}")),
            None => break,
        }
    }
    let timings = results
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "a connection did not finish".to_string())?;
    Ok((timings, held))
}

/// One connection and its stream; closed when done, or returned open for `hold`.
async fn one_connection(
    ep: &Endpoint,
    addr: SocketAddr,
    upload: u64,
    download: u64,
    hold: bool,
) -> Result<(ConnTiming, Option<quinn::Connection>), String> {
    let connect_start = Instant::now();
    let conn = ep
        .connect(addr, refpeers::SERVER_NAME)
        .map_err(|e| format!("cannot connect: {e}"))?
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    let established = Instant::now();
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| format!("cannot open a stream: {e}"))?;
    let transfer_start = Instant::now();
    let header = encode_header(download);
    send.write_all(&header)
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    // Upload and download run concurrently, as the server only answers after our FIN.
    let uploader = async {
        send_zeros(&mut send, upload)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        send.finish().map_err(|e| format!("finish failed: {e}"))
    };
    let downloader = async {
        let mut got = 0u64;
        let mut first = None;
        loop {
            match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => {
                    first.get_or_insert_with(Instant::now);
                    got += chunk.bytes.len() as u64;
                }
                Ok(None) => break,
                Err(e) => return Err(format!("receive failed: {e}")),
            }
        }
        let end = Instant::now();
        Ok((got, first.unwrap_or(end), end))
    };
    let (up, down) = tokio::join!(uploader, downloader);
    up?;
    let (downloaded, first_byte, transfer_end) = down?;
    if downloaded != download {
        return Err(format!("received {downloaded} bytes, expected {download}"));
    }
    let timing = ConnTiming {
        connect_start,
        established,
        transfer_start,
        first_byte,
        transfer_end,
        downloaded,
    };
    if hold {
        return Ok((timing, Some(conn)));
    }
    conn.close(VarInt::from_u32(0), b"done");
    Ok((timing, None))
}

/// A verifier that accepts every certificate (`accept`: the hq-interop client, as the
/// interop runner's clients do not verify the run-time certificate either) or refuses
/// every one (the probe, which must never complete a handshake, only learn how the
/// server answers its first flight). Signatures are checked either way.
#[derive(Debug)]
struct Verifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    accept: bool,
}

impl Verifier {
    /// A TLS 1.3 client configuration offering `alpn` that trusts every certificate
    /// (`accept`) or none.
    fn client_tls(
        provider: Arc<rustls::crypto::CryptoProvider>,
        accept: bool,
        alpn: &[u8],
    ) -> Result<rustls::ClientConfig, String> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier { provider, accept }))
            .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.to_vec()];
        Ok(tls)
    }
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.accept {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(
            "the probe trusts no certificate".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn probe(a: ProbeArgs) -> u8 {
    let report = |outcome, detail: String| ProbeReport {
        stack: STACK,
        outcome,
        detail,
    };
    let r = probe_inner(&a).await;
    let rep = match r {
        Ok(rep) => rep,
        Err(e) => report(ProbeOutcome::Error, e),
    };
    rep.emit()
}

async fn probe_inner(a: &ProbeArgs) -> Result<ProbeReport, String> {
    let tls = Verifier::client_tls(provider(), false, refpeers::ALPN)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    // QUIC v1 only: what the probe tells is how a non-v1 server answers a v1 client.
    cc.version(1);
    let mut ep = endpoint(refpeers::local_bind_for(a.connect), None, true)?;
    ep.set_default_client_config(cc);
    let connecting = ep
        .connect(a.connect, refpeers::SERVER_NAME)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let limit = Duration::from_secs(a.timeout_secs);
    let (outcome, detail) = match tokio::time::timeout(limit, connecting).await {
        Ok(Err(ConnectionError::VersionMismatch)) => (
            ProbeOutcome::VersionMismatch,
            "quinn: ConnectionError::VersionMismatch (the server's Version Negotiation \
             lists no version quinn offered: QUIC v1)"
                .to_string(),
        ),
        Ok(Err(e)) => (ProbeOutcome::Error, format!("quinn: {e}")),
        Ok(Ok(conn)) => {
            conn.close(VarInt::from_u32(0), b"probe");
            (
                ProbeOutcome::Connected,
                "quinn: the handshake completed".to_string(),
            )
        }
        Err(_) => (
            ProbeOutcome::Timeout,
            format!("quinn: no answer within {} s", a.timeout_secs),
        ),
    };
    ep.close(VarInt::from_u32(0), b"probe done");
    Ok(ProbeReport {
        stack: STACK,
        outcome,
        detail,
    })
}

// ---------------------------------------------------------------------------------
// hq-interop (the QUIC interop runner's HTTP/0.9) for `quill-interop run --suite quic-v1`

/// The TLS provider of a test case: ring, ChaCha20-Poly1305 only for `chacha20`.
fn hq_provider(p: &hq::Profile) -> Arc<rustls::crypto::CryptoProvider> {
    let mut prov = hq_base_provider();
    if p.chacha20 {
        prov.cipher_suites
            .retain(|s| s.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    Arc::new(prov)
}

/// quinn-peer: rustls's ring provider (X25519 first, no post-quantum group).
#[cfg(not(feature = "aws-lc-pq"))]
fn hq_base_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// quinn-pq-peer: rustls's aws-lc-rs provider built with `prefer-post-quantum`, whose
/// groups are X25519MLKEM768, X25519, secp256r1, secp384r1 in that order.
#[cfg(feature = "aws-lc-pq")]
fn hq_base_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The Initial packets' suite (RFC 9001 §5.2: always AES-128-GCM), also when the
/// test case offers only ChaCha20-Poly1305 for the rest.
fn initial_suite() -> Result<rustls::quic::Suite, String> {
    #[cfg(not(feature = "aws-lc-pq"))]
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    #[cfg(feature = "aws-lc-pq")]
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    suite
        .tls13()
        .and_then(|s| s.quic_suite())
        .ok_or_else(|| "the provider has no QUIC initial suite".to_string())
}

fn hq_transport(p: &hq::Profile) -> Result<TransportConfig, String> {
    let (stream, conn) = p.windows();
    let var = |v: u64| VarInt::from_u64(v).map_err(|_| format!("window {v} is too large"));
    let mut t = TransportConfig::default();
    t.stream_receive_window(var(stream)?)
        .receive_window(var(conn)?)
        .send_window(conn.max(stream))
        .max_concurrent_bidi_streams(var(p.max_streams_bidi)?)
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    Ok(t)
}

fn hq_negotiated(conn: &quinn::Connection, cipher: Option<&str>) -> hq::Negotiated {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .map(|p| String::from_utf8_lossy(&p).into_owned());
    hq::Negotiated {
        version: Some(1),
        alpn,
        // quinn does not expose the key-exchange group; the runner reads it off the
        // server's Initial (ServerHello) instead.
        group: None,
        cipher: cipher.map(String::from),
    }
}

async fn hq_main(role: hq::HqCommand) -> Result<u8, String> {
    let Some(profile) = refpeers::hq_profile(&role, PROG) else {
        return Ok(hq::EXIT_UNSUPPORTED);
    };
    match role {
        hq::HqCommand::Server(a) => hq_server(a, profile).await.map(|()| 0),
        hq::HqCommand::Client(_) if profile.preferred_address => {
            // quinn-proto 0.11 stores the preferred address's connection ID and never
            // probes the address.
            hq::print_unsupported("quinn's client does not move to a server's preferred address");
            Ok(hq::EXIT_UNSUPPORTED)
        }
        hq::HqCommand::Client(a) => Ok(hq_client(a, profile).await),
    }
}

async fn hq_server(a: hq::HqServerArgs, p: hq::Profile) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let files = refpeers::ensure_certificate_chain(dir.path(), p.cert_chain_len)
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let mut tls = server_tls(&files, hq_provider(&p), hq::ALPN_HQ)?;
    // Tickets come from rustls's default session store; zerortt accepts early data
    // (QUIC asks for 0xffffffff, RFC 9001 §4.6.1).
    if p.zero_rtt {
        tls.max_early_data_size = u32::MAX;
    }
    let crypto = QuicServerConfig::with_initial(Arc::new(tls), initial_suite()?)
        .map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(Arc::new(hq_transport(&p)?));
    match a.preferred_address {
        Some(SocketAddr::V4(v4)) => {
            sc.preferred_address_v4(Some(v4));
        }
        Some(SocketAddr::V6(v6)) => {
            sc.preferred_address_v6(Some(v6));
        }
        None => {}
    }
    let sock =
        refpeers::bind_udp(a.listen).map_err(|e| format!("cannot bind {}: {e}", a.listen))?;
    let ep = Endpoint::new(
        EndpointConfig::default(),
        Some(sc),
        sock,
        Arc::new(TokioRuntime),
    )
    .map_err(|e| format!("cannot create the endpoint: {e}"))?;
    let addr = ep.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let s = stop.clone();
    refpeers::watch_stdin(move || s.notify_one());
    let tally = Arc::new(std::sync::Mutex::new((
        hq::HqServerTally::default(),
        hq::Negotiated::default(),
    )));
    let root = Arc::new(a.root.clone());
    refpeers::print_listening(addr);
    let cipher = p.chacha20.then_some("TLS_CHACHA20_POLY1305_SHA256");
    loop {
        tokio::select! {
            incoming = ep.accept() => match incoming {
                Some(incoming) => {
                    if p.retry && !incoming.remote_address_validated() {
                        if incoming.retry().is_ok() {
                            if let Ok(mut t) = tally.lock() { t.0.retry_sent += 1; }
                        }
                        continue;
                    }
                    let (tally, root) = (tally.clone(), root.clone());
                    tokio::spawn(async move {
                        let Ok(conn) = incoming.await else { return };
                        if let Ok(mut t) = tally.lock() {
                            t.0.connections += 1;
                            t.1 = hq_negotiated(&conn, cipher);
                        }
                        while let Ok((send, recv)) = conn.accept_bi().await {
                            let (tally, root) = (tally.clone(), root.clone());
                            tokio::spawn(async move {
                                let served = hq_serve_stream(&root, send, recv).await;
                                if let Ok(mut t) = tally.lock() {
                                    match served {
                                        Ok(()) => t.0.files_served += 1,
                                        Err(_) => t.0.refused += 1,
                                    }
                                }
                            });
                        }
                    });
                }
                None => break,
            },
            _ = stop.notified() => break,
        }
    }
    ep.close(VarInt::from_u32(0), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    let (t, n) = tally.lock().map(|t| t.clone()).unwrap_or_default();
    hq::print_server_report(STACK, &t, &n);
    Ok(())
}

/// One hq-interop request: read `GET /path` to FIN, answer the file and FIN.
async fn hq_serve_stream(
    root: &std::path::Path,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), String> {
    let req = recv
        .read_to_end(hq::MAX_REQUEST)
        .await
        .map_err(|e| format!("request: {e}"))?;
    match hq::read_requested(root, &req) {
        Ok(data) => {
            send.write_all(&data)
                .await
                .map_err(|e| format!("send: {e}"))?;
            send.finish().map_err(|e| format!("finish: {e}"))?;
            let _ = send.stopped().await;
            Ok(())
        }
        Err(e) => {
            let _ = send.reset(VarInt::from_u32(0x10));
            Err(e)
        }
    }
}

async fn hq_client(a: hq::HqClientArgs, p: hq::Profile) -> u8 {
    let mut tally = hq::HqClientTally::default();
    let mut neg = hq::Negotiated::default();
    let start = Instant::now();
    let run = hq_client_run(&a, &p, &mut tally, &mut neg);
    let result = match tokio::time::timeout(a.timeout(), run).await {
        Ok(r) => r,
        Err(_) => Err(("timeout", format!("no result within {} s", a.timeout_secs))),
    };
    tally.seconds = start.elapsed().as_secs_f64();
    let code = if result.is_ok() { 0 } else { EXIT_FAILURE };
    hq::print_client_report(STACK, &tally, &neg, result.err());
    code
}

async fn hq_client_run(
    a: &hq::HqClientArgs,
    p: &hq::Profile,
    tally: &mut hq::HqClientTally,
    neg: &mut hq::Negotiated,
) -> Result<(), (&'static str, String)> {
    let io = |e: String| ("io", e);
    let files = a.all_files().map_err(io)?;
    let mut tls = Verifier::client_tls(hq_provider(p), true, hq::ALPN_HQ).map_err(io)?;
    // One rustls configuration (and its in-memory session store) for every
    // connection, so the second one resumes; zerortt sends early data.
    tls.enable_early_data = p.zero_rtt;
    let crypto = QuicClientConfig::with_initial(Arc::new(tls), initial_suite().map_err(io)?)
        .map_err(|e| io(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(Arc::new(hq_transport(p).map_err(io)?));
    let mut ep = endpoint(refpeers::local_bind_for(a.connect), None, true).map_err(io)?;
    ep.set_default_client_config(cc);
    let cipher = p.chacha20.then_some("TLS_CHACHA20_POLY1305_SHA256");
    for group in p.groups(files) {
        let connecting = ep
            .connect(a.connect, refpeers::SERVER_NAME)
            .map_err(|e| ("io", format!("cannot connect: {e}")))?;
        // zerortt: with a resumable session, the requests go out in 0-RTT at once.
        let conn = match p.zero_rtt {
            true => match connecting.into_0rtt() {
                Ok((conn, _accepted)) => conn,
                Err(connecting) => connecting
                    .await
                    .map_err(|e| ("handshake", format!("handshake failed: {e}")))?,
            },
            false => connecting
                .await
                .map_err(|e| ("handshake", format!("handshake failed: {e}")))?,
        };
        tally.handshakes += 1;
        *neg = hq_negotiated(&conn, cipher);
        if p.key_update {
            conn.force_key_update();
            tally.key_updates_initiated += 1;
        }
        if p.active_migration {
            spawn_migration(
                conn.clone(),
                ep.clone(),
                refpeers::local_bind_for(a.connect),
            );
        }
        let mut set = JoinSet::new();
        let mut names = group.into_iter();
        loop {
            // At most 100 requests in flight; quinn's open_bi also waits for the
            // server's stream credit (MAX_STREAMS).
            while set.len() < 100 {
                let Some(name) = names.next() else { break };
                let (conn, dir) = (conn.clone(), a.download.clone());
                set.spawn(async move { hq_fetch(&conn, &dir, &name).await });
            }
            match set.join_next().await {
                Some(Ok(Ok(n))) => {
                    tally.files += 1;
                    tally.bytes += n;
                }
                Some(Ok(Err(e))) => return Err(("stream", e)),
                Some(Err(e)) => return Err(("io", format!("a request task failed: {e}"))),
                None => break,
            }
        }
        conn.close(VarInt::from_u32(0), b"done");
    }
    ep.close(VarInt::from_u32(0), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    Ok(())
}

/// connectionmigration: once 400 kB have arrived, the client's endpoint moves to a
/// new UDP socket (`Endpoint::rebind`), which quinn treats as an active migration
/// (a new connection ID and a PING on the new path). Gives up after 30 s or when the
/// connection ends.
fn spawn_migration(conn: quinn::Connection, ep: quinn::Endpoint, bind: std::net::SocketAddr) {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && conn.close_reason().is_none() {
            if conn.stats().udp_rx.bytes >= 400_000 {
                match std::net::UdpSocket::bind(bind).map(|s| ep.rebind(s)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => eprintln!("quinn-peer: cannot migrate: {e}"),
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

async fn hq_fetch(
    conn: &quinn::Connection,
    dir: &std::path::Path,
    name: &str,
) -> Result<u64, String> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| format!("{name}: cannot open a stream: {e}"))?;
    send.write_all(&hq::request(name))
        .await
        .map_err(|e| format!("{name}: request: {e}"))?;
    send.finish().map_err(|e| format!("{name}: finish: {e}"))?;
    let data = recv
        .read_to_end(hq::MAX_FILE as usize)
        .await
        .map_err(|e| format!("{name}: response: {e:?}"))?;
    hq::save(dir, name, &data).map_err(|e| format!("{name}: cannot save: {e}"))?;
    Ok(data.len() as u64)
}
