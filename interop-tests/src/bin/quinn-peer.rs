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
    self, encode_header, Cli, ClientArgs, ClientReport, Command, ConnTiming, ProbeArgs,
    ProbeOutcome, ProbeReport, ServerArgs, EXIT_FAILURE, HEADER_LEN, MAX_UDP_PAYLOAD, ZEROS,
};

const PROG: &str = "quinn-peer";
const STACK: &str = "quinn";

fn main() -> ExitCode {
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
    let cert = std::fs::read(&files.cert_der).map_err(|e| format!("cannot read cert.der: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_pem)
        .map_err(|e| format!("cannot read {}: {e}", files.key_pem.display()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert)], key)
        .map_err(|e| format!("bad certificate or key: {e}"))?;
    tls.alpn_protocols = vec![refpeers::ALPN.to_vec()];
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
    cc.transport_config(Arc::new(transport(a.net.window, a.net.gso.on())?));
    let mut ep = endpoint(refpeers::local_bind_for(a.connect), None, a.net.gro.on())?;
    ep.set_default_client_config(cc);

    let limit = Duration::from_secs(a.timeout_secs);
    let wall_start = Instant::now();
    let run = run_connections(&ep, &a);
    let timings = match tokio::time::timeout(limit, run).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("timed out after {} s", a.timeout_secs)),
    };
    let wall = wall_start.elapsed();
    ep.close(VarInt::from_u32(0), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    let report = ClientReport::from_timings(STACK, a.upload, a.download, &timings, wall)
        .ok_or("no connection completed")?;
    refpeers::print_json_line(&report.to_json());
    Ok(())
}

/// Runs `a.connections` connections, at most `a.concurrency` at once; returns their
/// timings in start order.
async fn run_connections(ep: &Endpoint, a: &ClientArgs) -> Result<Vec<ConnTiming>, String> {
    let total = a.connections as usize;
    let mut results: Vec<Option<ConnTiming>> = vec![None; total];
    let mut set = JoinSet::new();
    let mut next = 0usize;
    let mut done = 0usize;
    while done < total {
        while next < total && set.len() < a.concurrency as usize {
            let ep = ep.clone();
            let (addr, up, down) = (a.connect, a.upload, a.download);
            let i = next;
            set.spawn(async move { (i, one_connection(&ep, addr, up, down).await) });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, Ok(t)))) => {
                results[i] = Some(t);
                done += 1;
            }
            Some(Ok((i, Err(e)))) => return Err(format!("connection {}: {e}", i + 1)),
            Some(Err(e)) => return Err(format!("a connection task failed: {e}")),
            None => break,
        }
    }
    results
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "a connection did not finish".to_string())
}

async fn one_connection(
    ep: &Endpoint,
    addr: SocketAddr,
    upload: u64,
    download: u64,
) -> Result<ConnTiming, String> {
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
    conn.close(VarInt::from_u32(0), b"done");
    Ok(ConnTiming {
        connect_start,
        established,
        transfer_start,
        first_byte,
        transfer_end,
        downloaded,
    })
}

/// A verifier that refuses every certificate: the probe must never complete a
/// handshake, only learn how the server answers its first flight.
#[derive(Debug)]
struct RefuseAll(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for RefuseAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
    let p = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RefuseAll(p)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![refpeers::ALPN.to_vec()];
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
