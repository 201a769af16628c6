//! `quill-interop-peer hq server|client`: quill over QUIC v1 (RFC 9000/9001, TLS 1.3
//! through `rustls::quic`, X25519MLKEM768 preferred) speaking the interop runner's
//! HTTP/0.9 (`hq-interop`), with the reference peers' command line and JSON reports
//! (`crate::refpeers::hq`), so that `quill-interop run --suite quic-v1` drives quill
//! like any other stack.
//!
//! - server: the same event loop and stream server as `quill-interop-peer server`,
//!   with QUIC v1 accepted and the file service's path guard
//!   ([`quill_transport::service::Files`]) on every request; a refused request has its
//!   stream reset with [`REFUSED`] (hq-interop has no error answer).
//! - client: the blocking API ([`blocking::connect`] with [`Version::QuicV1`]); like
//!   the interop runner's clients it does not authenticate the server's run-time
//!   certificate ([`CertificateCheck::Unverified`]).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quill_crypto::packet::Suite;
use quill_transport::driver::blocking::{self, BlockingConnection};
use quill_transport::proto::{
    CertificateCheck, ClientConfig, HostKeyPolicy, Login, QuicV1Server, ServerConfig,
    ServerPreferredAddress, Sessions, StreamsConfig, TransportConfig, Version,
};
use quill_transport::service::Files;
use zeroize::Zeroizing;

use super::{
    error_kind, peer_host_key, relay_endpoint, App, Fault, PeerError, PeerServer, ServerReport,
};
use crate::refpeers::hq::{
    self, HqClientArgs, HqClientTally, HqCommand, HqServerArgs, HqServerTally, Negotiated, Profile,
    ALPN_HQ, EXIT_UNSUPPORTED,
};
use crate::refpeers::{self, SERVER_NAME};

/// The stack's name in reports.
const STACK: &str = "quill";

/// Stream error code of a refused request (RESET_STREAM).
pub(super) const REFUSED: u64 = 1;

/// Requests a client keeps in flight on one connection (each waits on its own thread;
/// the server's MAX_STREAMS bounds them too).
const IN_FLIGHT: usize = 32;

/// zerortt: requests written at once, so that all of them go in 0-RTT (the runner
/// asks for 39 on the second connection).
const IN_FLIGHT_0RTT: usize = 64;

/// Runs `hq server` or `hq client`; returns the exit code.
pub(super) fn run(cmd: HqCommand) -> i32 {
    let testcase = match &cmd {
        HqCommand::Server(a) => &a.testcase,
        HqCommand::Client(a) => &a.testcase,
    };
    let Some(profile) = Profile::for_testcase(testcase) else {
        hq::print_unsupported(&format!("quill has no support for test case {testcase}"));
        return EXIT_UNSUPPORTED.into();
    };
    match cmd {
        HqCommand::Server(a) => match serve(&a, &profile) {
            Ok(()) => 0,
            Err(e) => {
                refpeers::print_error("quill-interop-peer hq server", &e);
                e.code()
            }
        },
        HqCommand::Client(a) => fetch_all(&a, &profile),
    }
}

/// What a connection negotiated, for the reports.
pub(super) fn negotiated(
    alpn: Option<&[u8]>,
    group: Option<rustls::NamedGroup>,
    suite: Option<Suite>,
) -> Negotiated {
    Negotiated {
        version: Some(1),
        alpn: alpn.map(|a| String::from_utf8_lossy(a).into_owned()),
        group: group.map(|g| hq::group_name(u16::from(g))),
        cipher: suite
            .map(|s| hq::cipher_name(u16::from(quill_crypto::tls::tls13_suite(s).suite()))),
    }
}

/// The answer to an hq-interop request (`GET /path`, CRLF): the file's bytes, read
/// through the file service's path guard under `root` (canonical).
pub(super) fn answer(root: &Path, fault: Option<Fault>, request: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(request).map_err(|_| "the request is not UTF-8")?;
    let line = text.trim_end_matches(['\r', '\n']);
    let path = line.strip_prefix("GET /").ok_or_else(|| {
        format!(
            "not an hq-interop GET: {:?}",
            line.chars().take(40).collect::<String>()
        )
    })?;
    let files = Files {
        root: Some(root),
        max_upload_size: None,
    };
    let full = files.get(path)?;
    let meta = std::fs::metadata(&full).map_err(|e| format!("{path}: {e}"))?;
    if meta.len() > hq::MAX_FILE {
        return Err(format!("{path} is larger than {} bytes", hq::MAX_FILE));
    }
    let mut data = std::fs::read(&full).map_err(|e| format!("{path}: {e}"))?;
    if fault == Some(Fault::TruncateFile) {
        data.pop();
    }
    Ok(data)
}

/// The transport configuration a test case asks for.
fn transport(p: &Profile) -> Result<TransportConfig, PeerError> {
    let (stream, conn) = p.windows();
    let mut t = TransportConfig::default();
    t.streams = StreamsConfig {
        max_concurrent_bidi: p.max_streams_bidi,
        max_concurrent_uni: 0,
        stream_receive_window: stream,
        max_stream_receive_window: stream,
        receive_window: conn,
        max_receive_window: conn,
        ..StreamsConfig::default()
    };
    // handshakeloss and handshakecorruption lose 30% of the handshake's datagrams;
    // like the reference peers, give a handshake as long as the idle timeout.
    t.handshake_timeout = t.handshake_timeout.max(t.idle_timeout);
    t.validate().map_err(|e| PeerError::usage(e.to_string()))?;
    Ok(t)
}

/// `hq server`.
fn serve(a: &HqServerArgs, p: &Profile) -> Result<(), PeerError> {
    // The runner's clients do not verify the certificate, but they must be able to
    // check its signature: BoringSSL (quiche) offers no Ed25519 signature scheme, so
    // the host-key certificate will not do. A run-time ECDSA P-256 certificate for
    // localhost (rcgen), as every reference peer here serves, through
    // `QuicV1Server::with_certificate` (what `quill server --cert/--cert-key` uses).
    let (root, dir, _tmp) = super::root_and_state(&a.root, a.state_dir.as_deref())?;
    let files = refpeers::ensure_certificate_chain(&dir, p.cert_chain_len).map_err(|e| {
        PeerError::other(format!(
            "cannot make a certificate in {}: {e}",
            dir.display()
        ))
    })?;
    let pem_err = |e: quill_crypto::Error| PeerError::other(e.to_string());
    let chain = quill_crypto::tls::load_pem_chain(&files.cert_pem).map_err(pem_err)?;
    let key = quill_crypto::tls::load_pem_key(&files.key_pem).map_err(pem_err)?;
    // quill's own version needs a host key too; a fixed one, as in
    // `quill-interop-peer server`.
    let mut config = ServerConfig::new(peer_host_key()?);
    config.transport = Arc::new(transport(p)?);
    config.preferred_address = a.preferred_address.map(ServerPreferredAddress::of);
    let mut v1 = QuicV1Server::with_certificate(chain, key, vec![ALPN_HQ.to_vec()])
        .map_err(|e| PeerError::other(e.to_string()))?;
    // `v2`: upgrade a v1 client that lists QUIC v2 (RFC 9368 compatible negotiation).
    v1.quic_v2 = p.v2;
    // Session tickets are always issued (rustls's stateful store); zerortt also
    // accepts early data (hq-interop GETs are idempotent).
    if p.zero_rtt {
        v1 = v1
            .with_early_data()
            .map_err(|e| PeerError::other(e.to_string()))?;
    }
    config.quic_v1 = Some(v1);
    let endpoint = relay_endpoint(p.retry);
    let handler = PeerServer {
        verifier: None,
        app: App::Hq,
        negotiated: Negotiated::default(),
        refused: 0,
        root,
        fault: None,
        streams: Default::default(),
        live: Default::default(),
        report: ServerReport::default(),
        buf: vec![0u8; 64 * 1024],
    };
    let server = super::run_loop(a.listen, endpoint, config, handler)?;
    let tally = HqServerTally {
        connections: server.report.connections,
        files_served: server.report.files_served,
        refused: server.refused,
        retry_sent: server.report.retry_sent,
    };
    hq::print_server_report(STACK, &tally, &server.negotiated);
    Ok(())
}

/// `hq client`: fetches every file, prints the report; returns the exit code.
fn fetch_all(a: &HqClientArgs, p: &Profile) -> i32 {
    let mut tally = HqClientTally::default();
    let mut neg = Negotiated::default();
    let start = Instant::now();
    // The watchdog: a report whatever happens, within --timeout-secs.
    let timeout = a.timeout();
    let printed = Arc::new(Mutex::new(false));
    let guard = printed.clone();
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let mut done = guard.lock().unwrap_or_else(|e| e.into_inner());
        if !*done {
            *done = true;
            hq::print_client_report(
                STACK,
                &HqClientTally::default(),
                &Negotiated::default(),
                Some((
                    "timeout",
                    format!("no result within {} s", timeout.as_secs()),
                )),
            );
            std::process::exit(1);
        }
    });
    let result = fetch_run(a, p, &mut tally, &mut neg);
    tally.seconds = start.elapsed().as_secs_f64();
    let mut done = printed.lock().unwrap_or_else(|e| e.into_inner());
    *done = true;
    let code = i32::from(result.is_err());
    hq::print_client_report(STACK, &tally, &neg, result.err());
    code
}

fn fetch_run(
    a: &HqClientArgs,
    p: &Profile,
    tally: &mut HqClientTally,
    neg: &mut Negotiated,
) -> Result<(), (&'static str, String)> {
    let files = a.all_files().map_err(|e| ("usage", e))?;
    std::fs::create_dir_all(&a.download)
        .map_err(|e| ("io", format!("--download {}: {e}", a.download.display())))?;
    let transport = Arc::new(transport(p).map_err(|e| ("usage", e.to_string()))?);
    let mut config = ClientConfig::new(
        // QUIC v1 has no login; the field is not used.
        Login::Password {
            user: String::new(),
            password: Zeroizing::new(String::new()),
        },
        HostKeyPolicy::AcceptAndReport,
    );
    config.version = Version::QuicV1 {
        alpn: vec![ALPN_HQ.to_vec()],
    };
    config.certificate = CertificateCheck::Unverified;
    config.server_name = SERVER_NAME.into();
    config.transport = transport;
    if p.chacha20 {
        config.suites = vec![Suite::ChaCha20Poly1305];
    }
    config.offer_quic_v2 = p.v2;
    if p.resume {
        // One ticket store for both connections (clones of this configuration).
        config.sessions = Some(Sessions::in_memory(4));
        config.early_data = p.zero_rtt;
        tally.resumed = Some(0);
        tally.zero_rtt_accepted = Some(0);
    }
    for group in p.groups(files) {
        // zerortt: the second connection's requests go out in 0-RTT.
        let connect = if p.zero_rtt {
            blocking::connect_early
        } else {
            blocking::connect
        };
        let conn = connect(a.connect, config.clone()).map_err(|e| match e {
            blocking::ConnectError::Connection(ce) => (
                "handshake",
                format!("handshake failed ({}): {ce}", error_kind(&ce)),
            ),
            other => ("io", format!("cannot connect: {other}")),
        })?;
        tally.handshakes += 1;
        let group_name = conn.key_exchange_group();
        *neg = negotiated(conn.alpn().as_deref(), group_name, conn.suite());
        neg.version = Some(conn.version());
        if p.key_update {
            conn.initiate_key_update();
            tally.key_updates_initiated += 1;
        }
        let threads = if p.zero_rtt {
            IN_FLIGHT_0RTT
        } else {
            IN_FLIGHT
        };
        let result = if p.active_migration {
            std::thread::scope(|s| {
                s.spawn(|| migrate_mid_transfer(&conn));
                fetch_group(&conn, &group, &a.download, threads)
            })
        } else {
            fetch_group(&conn, &group, &a.download, threads)
        };
        tally.retries += conn.stats().retries;
        if p.resume {
            *neg = negotiated(
                conn.alpn().as_deref(),
                conn.key_exchange_group(),
                conn.suite(),
            );
            for (count, yes) in [
                (&mut tally.resumed, conn.resumed()),
                (&mut tally.zero_rtt_accepted, conn.zero_rtt_accepted()),
            ] {
                *count = count.map(|n| n + u64::from(yes));
            }
        }
        match result {
            Ok((n, bytes)) => {
                tally.files += n;
                tally.bytes += bytes;
                conn.close(0, "done");
            }
            Err(e) => {
                conn.close(0, "failed");
                return Err(("stream", e));
            }
        }
    }
    Ok(())
}

/// connectionmigration: once [`MIGRATE_AFTER`] bytes have arrived, the client moves
/// to a new local port on its own initiative (RFC 9000 §9.2). Gives up when the
/// connection ends first, or after [`MIGRATE_WAIT`].
fn migrate_mid_transfer(conn: &BlockingConnection) {
    let deadline = std::time::Instant::now() + MIGRATE_WAIT;
    while std::time::Instant::now() < deadline {
        if conn.wait_closed(Duration::ZERO).is_some() {
            return;
        }
        if conn.stats().bytes_received >= MIGRATE_AFTER {
            conn.migrate();
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// connectionmigration: bytes received before the client migrates (a fifth of the
/// scenario's 2 MB file).
const MIGRATE_AFTER: u64 = 400_000;

/// connectionmigration: the longest wait for [`MIGRATE_AFTER`] bytes.
const MIGRATE_WAIT: Duration = Duration::from_secs(30);

/// Fetches `files` over `conn`, `threads` at a time; returns `(files, bytes)`.
fn fetch_group(
    conn: &BlockingConnection,
    files: &[String],
    dir: &Path,
    threads: usize,
) -> Result<(u64, u64), String> {
    super::fetch_each(files, threads, |name| fetch_one(conn, name, dir))
}

/// One request: `GET /name\r\n`, FIN; the answer is the file, up to FIN.
fn fetch_one(conn: &BlockingConnection, name: &str, dir: &Path) -> Result<u64, String> {
    let explain = |what: &str, e: std::io::Error| match conn.wait_closed(Duration::from_millis(200))
    {
        Some(ce) => format!("{name}: {what}: {ce}"),
        None => format!("{name}: {what}: {e}"),
    };
    let mut stream = loop {
        match conn.open_bi() {
            Ok(s) => break s,
            // Out of stream credit: the server raises it as earlier streams end.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(explain("cannot open a stream", e)),
        }
    };
    stream
        .write_all(&hq::request(name))
        .and_then(|_| stream.finish())
        .map_err(|e| explain("request", e))?;
    let mut data = Vec::new();
    (&mut stream)
        .take(hq::MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| explain("response", e))?;
    hq::save(dir, name, &data).map_err(|e| format!("{name}: cannot save: {e}"))?;
    Ok(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_pass_the_file_services_guard() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.bin"), b"abc").unwrap();
        assert_eq!(answer(&root, None, b"GET /a.bin\r\n").unwrap(), b"abc");
        assert_eq!(
            answer(&root, Some(Fault::TruncateFile), b"GET /a.bin\r\n").unwrap(),
            b"ab"
        );
        for bad in [
            &b"GET /../a.bin\r\n"[..],
            b"GET //etc/passwd\r\n",
            b"GET a.bin\r\n",
            b"PUT /a.bin\r\n",
            b"GET /missing\r\n",
            b"\xff\r\n",
        ] {
            assert!(answer(&root, None, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_test_cases_are_unsupported() {
        let cmd = HqCommand::Server(HqServerArgs {
            testcase: "versionnegotiation".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            root: ".".into(),
            state_dir: None,
            preferred_address: None,
        });
        assert_eq!(run(cmd), i32::from(EXIT_UNSUPPORTED));
    }

    #[test]
    fn windows_and_stream_limits_follow_the_test_case() {
        let t = transport(&Profile::for_testcase("transfer").unwrap()).unwrap();
        assert_eq!(t.streams.max_stream_receive_window, hq::SMALL_STREAM_WINDOW);
        assert_eq!(t.streams.max_receive_window, hq::SMALL_CONN_WINDOW);
        let m = transport(&Profile::for_testcase("multiplexing").unwrap()).unwrap();
        assert!(m.streams.max_concurrent_bidi <= 1000);
    }
}
