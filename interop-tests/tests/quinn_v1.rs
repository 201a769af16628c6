//! QUIC v1 between quill and quinn (crates.io; rustls with the ring provider), both
//! ways, over loopback: a stack nobody here wrote. ALPN `hq-interop` (the interop
//! runner's HTTP/0.9): the client sends `GET /name\r\n` on a bidirectional stream and
//! finishes it; the server answers the file's bytes and finishes.
//!
//! quill's side runs in its mio event loop (`quill_transport::driver::EventLoop`),
//! quinn's on a tokio runtime in another thread. quinn's ring provider offers only
//! classical groups, so X25519 is what is negotiated (the classical fallback of
//! quill's `X25519MLKEM768`-first provider).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_transport::driver::{Context, EventLoop, Handler, UdpConfig};
use quill_transport::proto::{
    ClientConfig, ConnectionError, ConnectionHandle, Dir, EndpointConfig, Event, HostKeyPolicy,
    Login, QuicV1Server, ReadOutcome, RetryPolicy, ServerConfig, StreamEvent, StreamId,
    TransportConfig, Version,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::NamedGroup;
use zeroize::Zeroizing;

const ALPN: &[u8] = b"hq-interop";
/// Size of every file served.
const FILE_LEN: usize = 1 << 20;
/// Bound on every run (a hang guard, not a timing assertion).
const LIMIT: Duration = Duration::from_secs(30);

/// The content of file `name`: deterministic bytes that differ per name and offset.
fn file(name: &str) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    (0..FILE_LEN as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// The file name of an hq-interop request, `None` if it is not one.
fn parse_request(req: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(req).ok()?.strip_suffix("\r\n")?;
    let path = line.strip_prefix("GET /")?;
    (!path.is_empty() && !path.contains(['/', ' '])).then(|| path.to_owned())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn quill_loop<H: Handler>(
    server: Option<ServerConfig>,
    retry: RetryPolicy,
    handler: H,
) -> EventLoop<H> {
    EventLoop::bind(
        "127.0.0.1:0".parse().unwrap(),
        &UdpConfig::default(),
        EndpointConfig {
            retry,
            ..EndpointConfig::default()
        },
        server,
        1,
        handler,
    )
    .unwrap()
}

/// What `Event::HandshakeConfirmed` reports: the ALPN and the key-exchange group.
fn negotiated(event: Event) -> Option<(Option<Vec<u8>>, Option<NamedGroup>)> {
    match event {
        Event::HandshakeConfirmed {
            alpn,
            key_exchange_group,
        } => Some((alpn, key_exchange_group)),
        _ => None,
    }
}

// ------------------------------------------------ quill client, quinn server

/// quill's hq-interop client: one request, the whole answer.
#[derive(Default)]
struct HqClient {
    name: String,
    stream: Option<StreamId>,
    got: Vec<u8>,
    done: bool,
    confirmed: Option<(Option<Vec<u8>>, Option<NamedGroup>)>,
    lost: Option<ConnectionError>,
    /// Retries the connection followed.
    retries: u64,
    /// Key updates when the answer was complete.
    key_updates: u64,
}

impl Handler for HqClient {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        let Some(conn) = ctx.connection(h) else {
            return;
        };
        match event {
            Event::HandshakeConfirmed { .. } => {
                self.confirmed = negotiated(event);
                self.retries = conn.stats().retries;
                let id = conn.open_stream(Dir::Bi).expect("a stream");
                let req = format!("GET /{}\r\n", self.name);
                assert_eq!(conn.write(id, req.as_bytes()), Ok(req.len()));
                conn.finish(id).unwrap();
                self.stream = Some(id);
            }
            Event::Stream(StreamEvent::Readable(id)) if Some(id) == self.stream => {
                let mut buf = [0u8; 16384];
                loop {
                    match conn.read(id, &mut buf) {
                        Ok(ReadOutcome::Data(n)) => self.got.extend_from_slice(&buf[..n]),
                        Ok(ReadOutcome::Finished) => {
                            self.done = true;
                            self.key_updates = conn.stats().key_updates;
                            conn.close(ctx_now(), 0, "done");
                            break;
                        }
                        _ => break,
                    }
                }
            }
            Event::ConnectionLost(e) => self.lost = Some(e),
            _ => {}
        }
    }
}

fn ctx_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// An hq-interop server on quinn with an Ed25519 certificate made by rcgen, which
/// asks every new client to prove its address with a Retry if `retry`; returns its
/// address and the certificate's public key.
fn quinn_server(rt: &tokio::runtime::Runtime, retry: bool) -> (SocketAddr, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = rt.block_on(async {
        quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
    });
    let addr = endpoint.local_addr().unwrap();
    rt.spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            if retry && !incoming.remote_address_validated() {
                let _ = incoming.retry();
                continue;
            }
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(req) = recv.read_to_end(1024).await else {
                        return;
                    };
                    let Some(name) = parse_request(&req) else {
                        let _ = send.reset(1u8.into());
                        continue;
                    };
                    // quinn starts a key update (RFC 9001 §6) that quill must follow.
                    conn.force_key_update();
                    if send.write_all(&file(&name)).await.is_err() {
                        return;
                    }
                    let _ = send.finish();
                }
            });
        }
    });
    (addr, key.public_key_raw().to_vec())
}

#[test]
fn quill_v1_client_fetches_from_a_quinn_server() {
    fetch_from_quinn(false);
}

/// quinn's Retry carries RFC 9001 §5.8's integrity tag, which the quill client checks.
#[test]
fn quill_v1_client_follows_a_quinn_retry() {
    fetch_from_quinn(true);
}

fn fetch_from_quinn(retry: bool) {
    let rt = runtime();
    let (addr, server_key) = quinn_server(&rt, retry);
    let rt_thread =
        std::thread::spawn(move || rt.block_on(async { tokio::time::sleep(LIMIT).await }));
    let checked = Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
    let seen = checked.clone();
    // The client's host-key policy sees the key of quinn's (rcgen's) certificate.
    let policy = HostKeyPolicy::Verify(Arc::new(move |k: &PublicKey| {
        *seen.lock().unwrap() = Some(k.key_bytes().to_vec());
        Ok(())
    }));
    let mut config = ClientConfig::new(
        Login::Password {
            user: "unused on QUIC v1".into(),
            password: Zeroizing::new(String::new()),
        },
        policy,
    );
    config.version = Version::QuicV1 {
        alpn: vec![ALPN.to_vec()],
    };
    config.server_name = "localhost".into();
    let mut ev = quill_loop(
        None,
        RetryPolicy::Never,
        HqClient {
            name: "index.html".into(),
            ..HqClient::default()
        },
    );
    ev.with_context(|_, ctx| ctx.connect(config, addr)).unwrap();
    let ok = ev
        .run_until(LIMIT, |c, _| c.done || c.lost.is_some())
        .unwrap();
    let client = ev.handler();
    assert!(ok && client.done, "not done: lost {:?}", client.lost);
    assert!(
        client.got == file("index.html"),
        "wrong bytes ({} received)",
        client.got.len()
    );
    let (alpn, group) = client.confirmed.clone().unwrap();
    assert_eq!(alpn.as_deref(), Some(ALPN));
    // quinn's ring provider knows no X25519MLKEM768: the classical fallback.
    assert_eq!(group, Some(NamedGroup::X25519));
    eprintln!("quill client ↔ quinn server: key exchange {group:?}");
    assert_eq!(checked.lock().unwrap().as_deref(), Some(&server_key[..]));
    assert_eq!(client.retries, u64::from(retry));
    assert!(
        client.key_updates >= 1,
        "quinn's key update was not followed"
    );
    drop(rt_thread);
}

// ------------------------------------------------ quinn client, quill server

/// What `Event::HandshakeConfirmed` said on the server (ALPN, group) and the
/// connection's account then.
type Confirmed = (Option<Vec<u8>>, Option<NamedGroup>, Option<String>);

/// quill's hq-interop server: answers each request with the file and finishes.
#[derive(Default)]
struct HqServer {
    requests: Vec<(StreamId, Vec<u8>)>,
    /// Answers being written: stream, bytes, position.
    answers: Vec<(ConnectionHandle, StreamId, Vec<u8>, usize)>,
    confirmed: Vec<Confirmed>,
    served: usize,
    /// Key updates the connections went through (quill initiates them, quinn follows).
    key_updates: u64,
    connections: Vec<ConnectionHandle>,
}

impl HqServer {
    fn pump(&mut self, ctx: &mut Context<'_, Self>) {
        self.answers.retain_mut(|(h, id, data, pos)| {
            let Some(conn) = ctx.connection(*h) else {
                return false;
            };
            while *pos < data.len() {
                match conn.write(*id, &data[*pos..]) {
                    Ok(0) => return true,
                    Ok(n) => *pos += n,
                    Err(_) => return false,
                }
            }
            conn.finish(*id).is_err()
        });
    }
}

impl Handler for HqServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        let Some(conn) = ctx.connection(h) else {
            return;
        };
        match event {
            Event::HandshakeConfirmed { .. } => {
                let account = conn.account().map(str::to_owned);
                let (alpn, group) = negotiated(event).expect("matched above");
                self.confirmed.push((alpn, group, account));
                self.connections.push(h);
            }
            Event::Stream(StreamEvent::Opened { .. }) => {
                while let Some(id) = conn.accept_stream(Dir::Bi) {
                    self.requests.push((id, Vec::new()));
                }
                self.read_requests(ctx, h);
            }
            Event::Stream(StreamEvent::Readable(_)) => self.read_requests(ctx, h),
            Event::Stream(StreamEvent::Writable(_)) => self.pump(ctx),
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        self.pump(ctx);
        for h in &self.connections {
            if let Some(conn) = ctx.connection(*h) {
                self.key_updates = self.key_updates.max(conn.stats().key_updates);
            }
        }
    }
}

impl HqServer {
    fn read_requests(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle) {
        let Some(conn) = ctx.connection(h) else {
            return;
        };
        let mut buf = [0u8; 1024];
        let mut complete = Vec::new();
        self.requests.retain_mut(|(id, req)| loop {
            match conn.read(*id, &mut buf) {
                Ok(ReadOutcome::Data(n)) if req.len() + n <= 1024 => {
                    req.extend_from_slice(&buf[..n])
                }
                Ok(ReadOutcome::Finished) => {
                    complete.push((*id, std::mem::take(req)));
                    return false;
                }
                Ok(ReadOutcome::Blocked) => return true,
                _ => return false,
            }
        });
        for (id, req) in complete {
            match parse_request(&req) {
                Some(name) => {
                    self.answers.push((h, id, file(&name), 0));
                    self.served += 1;
                }
                None => {
                    let _ = conn.finish(id);
                }
            }
        }
        self.pump(ctx);
    }
}

#[test]
fn quinn_client_fetches_from_a_quill_v1_server() {
    quinn_fetches(RetryPolicy::Never);
}

/// quill's v1 Retry (RFC 9001 §5.8 tag, token) is one quinn follows.
#[test]
fn quinn_client_follows_a_quill_v1_retry() {
    quinn_fetches(RetryPolicy::Always);
}

fn quinn_fetches(retry: RetryPolicy) {
    let key = Arc::new(HostKeyPair::from_seed(&[9; 32]).unwrap());
    let mut server = ServerConfig::new(key.clone());
    // Key updates every 1000 packets: the 2 MB served take several (RFC 9001 §6,
    // through rustls's next-generation secrets), which quinn must follow.
    server.transport = Arc::new(TransportConfig {
        key_update_interval: 1000,
        ..TransportConfig::default()
    });
    server.quic_v1 = Some(QuicV1Server::with_host_key(key.clone(), vec![ALPN.to_vec()]).unwrap());
    let mut ev = quill_loop(Some(server), retry, HqServer::default());
    let addr = ev.local_addr();
    let stop = ev.handle();

    // quinn's rustls checks the certificate's signature over the handshake with the
    // key in it, then that the key is the server's host key.
    let expected = key.public();
    let check = move |k: &PublicKey| {
        (*k == expected)
            .then_some(())
            .ok_or_else(|| "not the server's host key".to_string())
    };
    let verifier = quill_crypto::tls::HostKeyVerifier::new(Arc::new(check));
    let quinn_thread = std::thread::spawn(move || {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let rt = runtime();
        let result = rt.block_on(async {
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap())?;
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let fetch = async {
                let conn = endpoint.connect(addr, "localhost")?.await?;
                let mut got = Vec::new();
                for name in ["a.txt", "b.bin"] {
                    let (mut send, mut recv) = conn.open_bi().await?;
                    send.write_all(format!("GET /{name}\r\n").as_bytes())
                        .await?;
                    send.finish()?;
                    got.push((name, recv.read_to_end(2 * FILE_LEN).await?));
                }
                conn.close(0u8.into(), b"done");
                endpoint.wait_idle().await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(got)
            };
            tokio::time::timeout(LIMIT, fetch).await?
        });
        stop.shutdown();
        result.map_err(|e| e.to_string())
    });
    ev.run_until(LIMIT + Duration::from_secs(5), |_, _| {
        quinn_thread.is_finished()
    })
    .unwrap();
    let got = quinn_thread
        .join()
        .unwrap()
        .expect("quinn fetched both files");
    for (name, bytes) in &got {
        assert!(
            *bytes == file(name),
            "{name}: wrong bytes ({} received)",
            bytes.len()
        );
    }
    let server = ev.handler();
    assert_eq!(server.served, 2);
    let (alpn, group, account) = server.confirmed[0].clone();
    assert_eq!(alpn.as_deref(), Some(ALPN));
    assert_eq!(group, Some(NamedGroup::X25519));
    // QUIC v1 has no login: the server application sees no account.
    assert_eq!(account, None);
    assert!(server.key_updates >= 1, "no key update");
    let st = ev.endpoint().stats();
    assert_eq!(st.sessions_created, 1, "{st:?}");
    if retry == RetryPolicy::Always {
        assert!(st.retry_sent >= 1, "{st:?}");
    }
    eprintln!("quinn client ↔ quill server: key exchange {group:?}");
}
