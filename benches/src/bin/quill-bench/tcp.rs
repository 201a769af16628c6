//! `quill-bench tcp-server` / `tcp-client [--tls]`: the TCP ceilings of `compare`.
//!
//! Protocol (the same for plain TCP and TLS): the client sends an 8-byte big-endian
//! length N, then N bytes; the server reads exactly N bytes and answers with the count
//! it read (8 bytes, big-endian). The client's clock runs from the first byte it writes
//! (after the TLS handshake) until the count arrives, like quill's bulk client.
//!
//! TLS is TLS 1.3 only, rustls with the *ring* provider, restricted to
//! TLS13_AES_256_GCM_SHA384 (the suite of quill's default configuration), key exchange
//! X25519 (ring's default). The server's certificate is a fresh self-signed one for
//! "localhost" (rcgen), written to `--cert-dir` as `cert.pem`, `cert.der` and `key.pem`
//! (key 0600); the client verifies the server against exactly that certificate.
//! Reads and writes use 256 KiB buffers, so that the per-call overhead is small and the
//! ceiling is the stack's, not the benchmark's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common;

/// Size of every read and write.
const IO_BUF: usize = 256 * 1024;
/// Plaintext sealed and flushed at a time by the TLS client.
const TLS_BATCH: usize = 64 * 1024;

/// The crypto provider: ring, TLS13_AES_256_GCM_SHA384 only.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384];
    Arc::new(p)
}

/// Writes a fresh self-signed certificate for "localhost" into `dir` unless it already
/// holds one; returns the certificate and key.
pub(crate) fn certificate(
    dir: &Path,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let cert_pem = dir.join("cert.pem");
    let key_pem = dir.join("key.pem");
    if !cert_pem.exists() || !key_pem.exists() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(|e| format!("rcgen: {e}"))?;
        write_file(&cert_pem, ck.cert.pem().as_bytes(), 0o644)?;
        write_file(&dir.join("cert.der"), ck.cert.der(), 0o644)?;
        write_file(&key_pem, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
    }
    let cert = CertificateDer::from_pem_file(&cert_pem)
        .map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_pem)
        .map_err(|e| format!("{}: {e}", key_pem.display()))?;
    Ok((cert, key))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a trust anchor: PEM, or raw DER when the name ends in `.der`.
fn load_ca(path: &Path) -> Result<CertificateDer<'static>, String> {
    if path.extension().is_some_and(|e| e == "der") {
        std::fs::read(path)
            .map(CertificateDer::from)
            .map_err(|e| format!("{}: {e}", path.display()))
    } else {
        CertificateDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `quill-bench tcp-server`: prints `listening ADDR`, serves every connection in a
/// thread of its own, and exits when stdin closes (or on SIGINT/SIGTERM).
pub fn server(listen: SocketAddr, cert_dir: Option<PathBuf>) -> Result<(), String> {
    common::require_loopback(listen)?;
    let tls = match cert_dir {
        Some(dir) => {
            let (cert, key) = certificate(&dir)?;
            let config = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| format!("TLS config: {e}"))?
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .map_err(|e| format!("TLS config: {e}"))?;
            Some(Arc::new(config))
        }
        None => None,
    };
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {addr}");
        let _ = out.flush();
    }
    std::thread::spawn(|| {
        let mut buf = [0u8; 256];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let tls = tls.clone();
        std::thread::spawn(move || {
            let result = match tls {
                Some(config) => rustls::ServerConnection::new(config)
                    .map_err(|e| e.to_string())
                    .and_then(|conn| serve_tls(conn, stream)),
                None => serve(&mut { stream }),
            };
            if let Err(e) = result {
                eprintln!("tcp-server: connection: {e}");
            }
        });
    }
    Ok(())
}

/// Reads the length and that many bytes, answers with the count. A connection that
/// closes early is an error (reported, not fatal to the server).
fn serve<S: Read + Write>(s: &mut S) -> Result<(), String> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len).map_err(|e| format!("length: {e}"))?;
    let total = u64::from_be_bytes(len);
    let mut buf = vec![0u8; IO_BUF];
    let mut got = 0u64;
    while got < total {
        let want = (total - got).min(IO_BUF as u64) as usize;
        match s.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("closed after {got} of {total} bytes")),
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    s.write_all(&got.to_be_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("reply: {e}"))
}

/// [`serve`] over TLS. Socket reads are [`IO_BUF`] large; rustls then takes the
/// records from that buffer (`read_tls` from a slice) and decrypts them. (Through
/// `rustls::Stream`, every socket read would be at most one 16 KiB record.)
fn serve_tls(mut conn: rustls::ServerConnection, mut sock: TcpStream) -> Result<(), String> {
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    flush_tls(&mut conn, &mut sock)?;
    let mut net = vec![0u8; IO_BUF];
    let mut plain = vec![0u8; IO_BUF];
    let mut header = Vec::with_capacity(8);
    let mut total = None;
    let mut got = 0u64;
    while total != Some(got) {
        let n = match sock.read(&mut net) {
            Ok(0) => return Err(format!("closed after {got} bytes")),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        let mut rd = &net[..n];
        while !rd.is_empty() {
            conn.read_tls(&mut rd)
                .map_err(|e| format!("TLS read: {e}"))?;
            conn.process_new_packets()
                .map_err(|e| format!("TLS: {e}"))?;
            loop {
                let k = match conn.reader().read(&mut plain) {
                    Ok(0) => return Err(format!("TLS closed after {got} bytes")),
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS read: {e}")),
                };
                let mut data = &plain[..k];
                if total.is_none() {
                    let take = (8 - header.len()).min(data.len());
                    header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if header.len() == 8 {
                        total = Some(u64::from_be_bytes(header[..].try_into().expect("8 bytes")));
                    }
                }
                got += data.len() as u64;
            }
        }
        if total.is_some_and(|t| got > t) {
            return Err(format!("received {got} bytes, more than announced"));
        }
    }
    conn.writer()
        .write_all(&got.to_be_bytes())
        .map_err(|e| format!("reply: {e}"))?;
    conn.send_close_notify();
    flush_tls(&mut conn, &mut sock)
}

/// Writes everything rustls has queued.
fn flush_tls<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut TcpStream,
) -> Result<(), String> {
    while conn.wants_write() {
        conn.write_tls(sock)
            .map_err(|e| format!("TLS write: {e}"))?;
    }
    Ok(())
}

/// `quill-bench tcp-client`: one connection (TLS when `ca` is given), `bytes` bytes,
/// one JSON line.
pub fn client(
    addr: SocketAddr,
    bytes: u64,
    ca: Option<PathBuf>,
    timeout: Duration,
) -> Result<(), String> {
    common::require_loopback(addr)?;
    let tcp =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let (out, suite) = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(load_ca(&ca)?)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| format!("TLS config: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from("localhost").expect("a valid DNS name");
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
                .map_err(|e| format!("TLS: {e}"))?;
            let mut sock = tcp;
            while conn.is_handshaking() {
                conn.complete_io(&mut sock)
                    .map_err(|e| format!("TLS handshake: {e}"))?;
            }
            let suite = conn
                .negotiated_cipher_suite()
                .map(|cs| format!("{:?}", cs.suite()));
            // Each 256 KiB write is sealed into records and flushed before the next.
            conn.set_buffer_limit(None);
            let tls = TlsStream { conn, sock };
            (transfer(tls, bytes)?, suite)
        }
        None => (transfer(tcp, bytes)?, None),
    };
    let (handshake_ms, seconds) = out;
    let json = serde_json::json!({
        "stack": if suite.is_some() { "tcp-tls" } else { "tcp" },
        "cipher_suite": suite,
        "bytes": bytes,
        "handshake_ms": handshake_ms,
        "seconds": seconds,
        "goodput_bps": bytes as f64 * 8.0 / seconds,
    });
    println!("{json}");
    Ok(())
}

/// A TLS client connection whose writes are sealed and flushed to the socket at once
/// (large writes: one `writev` of many records) and whose reads go through rustls.
struct TlsStream {
    conn: rustls::ClientConnection,
    sock: TcpStream,
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // 64 KiB at a time: four records per `writev`. Larger batches free (and the
        // allocator returns to the kernel) more than its trim threshold every time,
        // which costs a page fault per page on the next batch.
        let n = self.conn.writer().write(&buf[..buf.len().min(TLS_BATCH)])?;
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        self.sock.flush()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        rustls::Stream::new(&mut self.conn, &mut self.sock).read(buf)
    }
}

/// Sends the length and `bytes` bytes, waits for the count; returns (ms from process
/// start to the first byte written, transfer seconds).
fn transfer<S: Read + Write>(mut s: S, bytes: u64) -> Result<(f64, f64), String> {
    let chunk: Vec<u8> = (0..IO_BUF).map(|i| (i * 7 + i / 251) as u8).collect();
    let start = Instant::now();
    let ready_ms = (start - common::process_start()).as_secs_f64() * 1e3;
    s.write_all(&bytes.to_be_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(IO_BUF as u64) as usize;
        s.write_all(&chunk[..n])
            .map_err(|e| format!("write: {e}"))?;
        sent += n as u64;
    }
    s.flush().map_err(|e| format!("flush: {e}"))?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .map_err(|e| format!("reading the server's count: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let count = u64::from_be_bytes(count);
    if count != bytes {
        return Err(format!("server received {count} bytes, we sent {bytes}"));
    }
    Ok((ready_ms, seconds))
}
