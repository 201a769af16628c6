//! The event loop over real UDP sockets on 127.0.0.1 and ::1: server and clients in
//! this process, each loop on its own thread. Every wait is bounded.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::driver::blocking::{self, ConnectError};
use quill_transport::driver::{Context, Handler, LoopHandle};
use quill_transport::proto::{
    ClientConfig, ConnectionError, Dir, Event, HostKeyPolicy, Login, LoginMethod, ReadOutcome,
    ServerConfig, StreamEvent, StreamId, TransportConfig,
};
use quill_transport::proto::{ConnectionHandle, EndpointConfig, RetryPolicy};
use support::datagrams::unknown_version_datagram;
use support::echo::echo_round_trip;
use support::{bind_loop, Tally};
use zeroize::Zeroizing;

fn host_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[42; 32]).unwrap())
}

fn client_config(password: &str) -> ClientConfig {
    ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new(password.into()),
        },
        HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
    )
}

/// The test server: logins are checked on the worker pool after `verify_delay`
/// (standing in for Argon2id); bidirectional streams are echoed, except those that
/// start with one of these lines:
/// - `STALL`: never read again, until a stream starting with `UNSTALL` on the same
///   connection makes the server answer `NO` on it, finish it and stop it
///   (STOP_SENDING code 7), as a refusing server does;
/// - `QUIET`: answered `NO` and finished at once, then never read (nor stopped).
struct TestServer {
    verify_delay: Duration,
    /// Logins waiting for room on the worker pool (a burst can exceed its queue).
    waiting: std::collections::VecDeque<(ConnectionHandle, quill_transport::proto::LoginRequest)>,
    echo: HashMap<(ConnectionHandle, StreamId), (Vec<u8>, bool)>,
    stalled: Vec<(ConnectionHandle, StreamId)>,
    logins: Arc<AtomicUsize>,
    /// Most peer addresses validated on any one connection (path validation).
    paths_validated: Arc<AtomicUsize>,
}

impl Handler for TestServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::LoginRequested(req) => self.waiting.push_back((h, req)),
            Event::Stream(StreamEvent::Opened { .. }) => {
                let c = ctx.connection(h).unwrap();
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    self.echo.insert((h, id), (Vec::new(), false));
                }
                while c.accept_stream(Dir::Uni).is_some() {}
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        while ctx.pool_has_room() {
            let Some((h, req)) = self.waiting.pop_front() else {
                break;
            };
            let delay = self.verify_delay;
            let job = move || -> quill_transport::driver::Completion<TestServer> {
                std::thread::sleep(delay);
                let ok = matches!(&req.method, LoginMethod::Password(p) if p.as_slice() == b"correct horse");
                let user = req.user.clone();
                Box::new(
                    move |server: &mut TestServer, ctx: &mut Context<'_, TestServer>| {
                        let now = ctx.now();
                        if let Some(c) = ctx.connection(h) {
                            if ok {
                                server.logins.fetch_add(1, Ordering::SeqCst);
                                c.accept_login(now, &user, "welcome");
                            } else {
                                c.refuse_login(now, "login refused");
                            }
                        }
                    },
                )
            };
            ctx.spawn(job).expect("room was checked");
        }
        let mut buf = vec![0u8; 65536];
        let stalled = &mut self.stalled;
        self.echo.retain(|&(h, id), (pending, fin)| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            let validated = c.stats().paths_validated as usize;
            self.paths_validated.fetch_max(validated, Ordering::SeqCst);
            while pending.len() < 1 << 20 && !*fin {
                match c.read(id, &mut buf) {
                    Ok(ReadOutcome::Data(n)) => pending.extend_from_slice(&buf[..n]),
                    Ok(ReadOutcome::Finished) => *fin = true,
                    _ => break,
                }
            }
            if pending.starts_with(b"STALL\n") {
                stalled.push((h, id));
                return false;
            }
            if pending.starts_with(b"QUIET\n") {
                let _ = c.write(id, b"NO\n");
                let _ = c.finish(id);
                return false;
            }
            if pending.starts_with(b"UNSTALL\n") {
                for &(_, sid) in stalled.iter().filter(|s| s.0 == h) {
                    let _ = c.write(sid, b"NO\n");
                    let _ = c.finish(sid);
                    let _ = c.stop_sending(sid, 7);
                }
                stalled.retain(|s| s.0 != h);
                let _ = c.finish(id);
                return false;
            }
            while !pending.is_empty() {
                match c.write(id, pending) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.drain(..n);
                    }
                }
            }
            if *fin && pending.is_empty() {
                let _ = c.finish(id);
                return false;
            }
            true
        });
    }
}

struct Server {
    addr: SocketAddr,
    handle: LoopHandle,
    thread: Option<JoinHandle<()>>,
    logins: Arc<AtomicUsize>,
    paths_validated: Arc<AtomicUsize>,
    /// The second socket's address, if the server has a preferred address.
    preferred: Option<SocketAddr>,
    /// The loop's statistics, once it returned.
    loop_stats: Arc<std::sync::Mutex<Option<quill_transport::driver::LoopStats>>>,
}

/// A server with the default configurations and an immediate login verdict.
fn plain_server(bind: &str) -> Server {
    Server::start(
        bind,
        endpoint_config(),
        TransportConfig::default(),
        Duration::ZERO,
    )
}

/// A server with the default transport configuration adjusted by `tune` and with
/// `verify_delay`, and alice's client configuration with the same transport and
/// keep-alives every `keep_alive`.
fn keep_alive_setup(
    tune: impl FnOnce(&mut TransportConfig),
    verify_delay: Duration,
    keep_alive: Duration,
) -> (Server, ClientConfig) {
    let mut transport = TransportConfig::default();
    tune(&mut transport);
    let server = Server::start(
        "127.0.0.1:0",
        endpoint_config(),
        transport.clone(),
        verify_delay,
    );
    let mut config = client_config("correct horse");
    config.transport = Arc::new(TransportConfig {
        keep_alive_interval: Some(keep_alive),
        ..transport
    });
    (server, config)
}

/// A [`plain_server`] and a client logged in to it as alice.
fn server_and_client(bind: &str) -> (Server, blocking::BlockingConnection) {
    let server = plain_server(bind);
    let conn = blocking::connect(server.addr, client_config("correct horse")).expect("connect");
    (server, conn)
}

/// The common end of a test: one last echo of `len` bytes over `conn`, then the
/// connection is dropped (no explicit close) and the server stopped.
fn echo_then_stop(server: Server, conn: blocking::BlockingConnection, len: usize) {
    echo_round_trip(&conn, len);
    drop(conn);
    server.stop();
}

/// Runs `test` over [`server_and_client`], then closes the connection (code 0,
/// "done") and stops the server.
fn with_client(bind: &str, test: impl FnOnce(&blocking::BlockingConnection)) {
    let (server, conn) = server_and_client(bind);
    test(&conn);
    conn.close(0, "done");
    server.stop();
}

impl Server {
    fn start(
        bind: &str,
        endpoint: EndpointConfig,
        transport: TransportConfig,
        verify_delay: Duration,
    ) -> Server {
        Server::start_on(bind, None, endpoint, transport, verify_delay)
    }

    /// [`Server::start`], also listening on `preferred` as its preferred address.
    fn start_on(
        bind: &str,
        preferred: Option<&str>,
        endpoint: EndpointConfig,
        transport: TransportConfig,
        verify_delay: Duration,
    ) -> Server {
        let mut config = ServerConfig::new(host_key());
        config.transport = Arc::new(transport);
        let logins = Arc::new(AtomicUsize::new(0));
        let paths_validated = Arc::new(AtomicUsize::new(0));
        let handler = TestServer {
            paths_validated: paths_validated.clone(),
            verify_delay,
            waiting: Default::default(),
            echo: HashMap::new(),
            stalled: Vec::new(),
            logins: logins.clone(),
        };
        let mut ev = bind_loop(bind, endpoint, Some(config), 2, handler);
        let addr = ev.local_addr();
        let preferred = preferred.map(|p| {
            let udp = quill_transport::driver::UdpConfig::default();
            ev.bind_preferred(p.parse().unwrap(), &udp).unwrap()
        });
        let handle = ev.handle();
        let loop_stats = Arc::new(std::sync::Mutex::new(None));
        let slot = loop_stats.clone();
        let thread = std::thread::spawn(move || {
            ev.run().expect("server loop");
            *slot.lock().unwrap() = Some(ev.stats());
        });
        Server {
            addr,
            handle,
            thread: Some(thread),
            logins,
            paths_validated,
            preferred,
            loop_stats,
        }
    }

    /// Stops as a crash would: no CONNECTION_CLOSE.
    fn crash(mut self) {
        self.handle.abort();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        per_source_handshakes_per_sec: 0,
        max_half_open_per_address: 0,
        ..EndpointConfig::default()
    }
}

#[test]
fn handshake_login_and_transfer_over_ipv4() {
    with_client("127.0.0.1:0", |conn| {
        assert_eq!(conn.account(), "alice");
        assert_eq!(conn.message(), "welcome");
        echo_round_trip(conn, 8 << 20);
    });
}

#[test]
fn handshake_login_and_transfer_over_ipv6() {
    let (server, conn) = server_and_client("[::1]:0");
    echo_then_stop(server, conn, 1 << 20);
}

#[test]
fn wrong_password_is_refused() {
    let server = plain_server("127.0.0.1:0");
    match blocking::connect(server.addr, client_config("wrong")) {
        Err(ConnectError::Connection(ConnectionError::LoginRefused { .. })) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("login must be refused"),
    }
    server.stop();
}

#[test]
fn retry_path_completes() {
    let endpoint = EndpointConfig {
        retry: RetryPolicy::Always,
        ..endpoint_config()
    };
    let server = Server::start(
        "127.0.0.1:0",
        endpoint,
        TransportConfig::default(),
        Duration::ZERO,
    );
    let conn = blocking::connect(server.addr, client_config("correct horse"))
        .expect("connect through Retry");
    echo_then_stop(server, conn, 100_000);
}

#[test]
fn version_negotiation_answers_an_unknown_version() {
    let server = plain_server("127.0.0.1:0");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let pkt = unknown_version_datagram(1200);
    // A small datagram gets nothing back; a full-size one gets Version Negotiation.
    sock.send_to(&pkt[..100], server.addr).unwrap();
    sock.send_to(&pkt, server.addr).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("a Version Negotiation packet");
    assert_eq!(
        &buf[1..5],
        &[0, 0, 0, 0],
        "version 0 marks Version Negotiation"
    );
    assert_eq!(buf[5], 5);
    assert_eq!(&buf[6..11], &[0x55; 5], "DCID echoes our SCID");
    let versions: Vec<u32> = buf[20..n]
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert!(
        versions.contains(&quill_transport::wire::QUILL_VERSION),
        "{versions:x?}"
    );
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "only one answer, for the big datagram"
    );
    server.stop();
}

#[test]
fn keep_alive_holds_an_idle_connection_past_several_idle_timeouts() {
    let (server, config) = keep_alive_setup(
        |t| t.idle_timeout = Duration::from_millis(600),
        Duration::ZERO,
        Duration::from_millis(200),
    );
    let conn = blocking::connect(server.addr, config).expect("connect");
    std::thread::sleep(Duration::from_millis(3000)); // five idle timeouts, no traffic
    echo_then_stop(server, conn, 1000);
}

#[test]
fn a_thousand_connections_through_one_server_loop() {
    let server = plain_server("127.0.0.1:0");
    let mut client = bind_loop("127.0.0.1:0", endpoint_config(), None, 1, Tally::default());
    let addr = server.addr;
    client.with_context(|_, ctx| {
        for _ in 0..1000 {
            ctx.connect(client_config("correct horse"), addr).unwrap();
        }
    });
    let ok = client
        .run_until(Duration::from_secs(60), |h, _| h.connected + h.lost == 1000)
        .unwrap();
    assert!(ok, "only {} connected", client.handler().connected);
    assert_eq!(client.handler().connected, 1000);
    assert_eq!(server.logins.load(Ordering::SeqCst), 1000);
    server.stop();
}

#[test]
fn keep_alives_stay_on_time_while_a_slow_login_is_verified() {
    // The server verifies every login for 1 s on its worker pool. While a new
    // client's login is being verified, the server's other sessions must keep
    // answering keep-alives: if the loop blocked for the verification, the echo of a
    // keep-alive PING would be late by ~1 s and the idle connections would see it.
    // (The margin is wide on purpose: this is a property of the loop, not a benchmark;
    // `quill-bench compare --what sessions` measures keep-alive lateness.)
    // 20 logins of 1 s each queue up on the server's workers for longer than the
    // default 10 s handshake timeout: allow a minute.
    let (server, config) = keep_alive_setup(
        |t| t.handshake_timeout = Duration::from_secs(60),
        Duration::from_secs(1),
        Duration::from_millis(50),
    );
    let mut watcher = bind_loop("127.0.0.1:0", endpoint_config(), None, 1, Tally::default());
    let addr = server.addr;
    let handles: Vec<ConnectionHandle> = watcher.with_context(|_, ctx| {
        (0..20)
            .map(|_| ctx.connect(config.clone(), addr).unwrap())
            .collect()
    });
    assert!(watcher
        .run_until(Duration::from_secs(30), |h, _| h.connected == 20)
        .unwrap());
    // Now 3 more clients log in, one after another, each holding the server's worker
    // busy for 1 s, while we watch RTT samples of the idle connections.
    let logins = std::thread::spawn(move || {
        for _ in 0..3 {
            let c = blocking::connect(addr, client_config("correct horse")).unwrap();
            drop(c);
        }
    });
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut samples = 0;
    let mut seen: HashMap<usize, u64> = HashMap::new();
    while !logins.is_finished() && start.elapsed() < Duration::from_secs(20) {
        watcher
            .turn(Some(Instant::now() + Duration::from_millis(5)))
            .unwrap();
        for h in &handles {
            if let Some(c) = watcher.endpoint().connection(*h) {
                let n = c.stats().keep_alives_sent;
                if seen.insert(h.0, n) != Some(n) {
                    samples += 1;
                }
                worst = worst.max(c.latest_rtt());
            }
        }
    }
    logins.join().unwrap();
    assert_eq!(watcher.handler().lost, 0);
    assert!(samples > 200, "only {samples} keep-alives observed");
    // Each keep-alive PING is acknowledged within the server's ACK delay (25 ms) plus
    // loopback time; a loop blocked by a 1 s verification would show ≥ 1 s.
    assert!(
        worst < Duration::from_millis(500),
        "a keep-alive round trip took {worst:?}"
    );
    server.stop();
}

#[test]
fn a_restarted_server_resets_old_connections_promptly() {
    let endpoint = EndpointConfig {
        secret: [9; 32],
        ..endpoint_config()
    };
    let server = Server::start(
        "127.0.0.1:0",
        endpoint.clone(),
        TransportConfig::default(),
        Duration::ZERO,
    );
    let addr = server.addr;
    let conn = blocking::connect(addr, client_config("correct horse")).expect("connect");
    echo_round_trip(&conn, 1000);
    server.crash();
    // Same port, same secret, no memory of the connection.
    let server = Server::start(
        &addr.to_string(),
        endpoint,
        TransportConfig::default(),
        Duration::ZERO,
    );
    let started = Instant::now();
    let mut stream = conn.open_bi().unwrap();
    let _ = stream.write_all(b"are you there?");
    let _ = stream.finish();
    let mut buf = Vec::new();
    let err = stream
        .read_to_end(&mut buf)
        .expect_err("the connection must end");
    assert!(err.to_string().contains("stateless reset"), "{err}");
    // Far sooner than the 30 s idle timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.stop();
}

#[test]
fn rebinding_mid_transfer_keeps_the_connection() {
    let server = plain_server("127.0.0.1:0");
    let (relay, stop) = support::relay::rebinding(server.addr, 2, 300);
    let conn = blocking::connect(relay, client_config("correct horse"))
        .expect("connect through the relay");
    echo_round_trip(&conn, 4 << 20);
    assert_eq!(
        server.paths_validated.load(Ordering::SeqCst),
        1,
        "the new path is validated"
    );
    drop(conn);
    stop.store(true, Ordering::SeqCst);
    server.stop();
}

#[test]
fn graceful_shutdown_closes_every_connection() {
    let server = plain_server("127.0.0.1:0");
    let conns: Vec<_> = (0..5)
        .map(|_| blocking::connect(server.addr, client_config("correct horse")).expect("connect"))
        .collect();
    let started = Instant::now();
    server.stop(); // returns once every connection has drained
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for conn in &conns {
        let err = match conn.open_bi() {
            Err(e) => e,
            Ok(mut s) => {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).expect_err("closed")
            }
        };
        assert!(err.to_string().contains("closed by peer"), "{err}");
    }
}

/// Writes 1 MiB chunks (256 MiB at most: more than every window and buffer) on a
/// thread; the channel gets the first error.
fn write_until_error(
    mut w: blocking::BlockingStream,
) -> (
    JoinHandle<()>,
    std::sync::mpsc::Receiver<std::io::Result<()>>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        let mut result = Ok(());
        for _ in 0..256 {
            if let Err(e) = w.write_all(&chunk) {
                result = Err(e);
                break;
            }
        }
        let _ = tx.send(result);
    });
    (writer, rx)
}

#[test]
fn stop_sending_fails_a_blocked_write_and_the_answer_still_arrives() {
    with_client("127.0.0.1:0", |conn| {
        let mut stream = conn.open_bi().unwrap();
        stream.write_all(b"STALL\n").unwrap();
        let (writer, done) = write_until_error(stream.try_clone());
        // The server reads nothing more, so the writer soon waits for room that only a
        // STOP_SENDING can end (the pause makes the test cover a writer already waiting;
        // the assertions hold either way).
        std::thread::sleep(Duration::from_millis(500));
        assert!(done.try_recv().is_err(), "the writer cannot have finished");
        let mut other = conn.open_bi().unwrap();
        other.write_all(b"UNSTALL\n").unwrap();
        other.finish().unwrap();
        let err = done
            .recv_timeout(Duration::from_secs(10))
            .expect("the blocked write returns once the peer stopped the stream")
            .expect_err("the write fails");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
        assert!(
            err.to_string()
                .contains("stopped reading the stream (code 7)"),
            "{err}"
        );
        writer.join().unwrap();
        // Every later write, flush and finish fails at once.
        assert_eq!(
            stream.write(b"more").unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
        assert!(stream.flush().is_err());
        assert!(stream.finish().is_err());
        // What the server sent before stopping is still read, then the end.
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"NO\n");
        // The connection carries on.
        echo_round_trip(conn, 1 << 16);
    });
}

#[test]
fn fail_writes_on_answer_ends_a_write_the_peer_will_never_take() {
    with_client("127.0.0.1:0", |conn| {
        let mut stream = conn.open_bi().unwrap();
        stream.fail_writes_on_answer();
        stream.write_all(b"QUIET\n").unwrap();
        let (writer, done) = write_until_error(stream.try_clone());
        let err = done
            .recv_timeout(Duration::from_secs(10))
            .expect("the write returns once the peer has answered")
            .expect_err("the write fails");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
        assert!(err.to_string().contains("answered"), "{err}");
        writer.join().unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"NO\n");
    });
}

#[test]
fn a_closer_on_another_thread_ends_a_blocked_read() {
    let (server, conn) = server_and_client("127.0.0.1:0");
    let mut stream = conn.open_bi().expect("stream");
    // The echo server sends nothing until we write: this read blocks.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        stream.read(&mut buf)
    });
    std::thread::sleep(Duration::from_millis(50));
    let closer = conn.closer();
    assert!(
        closer.close(1, "interrupted", Duration::from_secs(10)),
        "the loop did not finish closing"
    );
    let err = reader
        .join()
        .expect("reader thread")
        .expect_err("the read ends with the close");
    assert!(err.to_string().contains("interrupted"), "{err}");
    // A second close, and dropping the connection, are no-ops.
    assert!(closer.close(1, "again", Duration::from_secs(1)));
    drop(conn);
    server.stop();
}

/// RFC 9000 §9.6 over real sockets: the server's loop also listens on a second socket
/// and offers it as its preferred address; the client validates it and moves there,
/// and the server answers from that socket.
#[test]
fn client_moves_to_the_preferred_address_socket() {
    let server = Server::start_on(
        "127.0.0.1:0",
        Some("127.0.0.1:0"),
        endpoint_config(),
        TransportConfig::default(),
        Duration::ZERO,
    );
    assert!(server.preferred.is_some_and(|p| p != server.addr));
    let conn = blocking::connect(server.addr, client_config("correct horse")).expect("connect");
    echo_round_trip(&conn, 1 << 20);
    let stats = conn.stats();
    assert_eq!(stats.migrations, 1, "{stats:?}");
    assert_eq!(stats.paths_validated, 1);
    conn.close(0, "done");
    let loop_stats = server.loop_stats.clone();
    server.stop();
    let sent_there = loop_stats
        .lock()
        .unwrap()
        .expect("the loop returned")
        .preferred_out;
    assert!(
        sent_there > 100,
        "the server answered from its preferred address: {sent_there}"
    );
}

/// Active migration on real sockets: mid-transfer the client's loop moves to a new
/// local port (`BlockingConnection::migrate`); the transfer completes, the server
/// follows the client to the new address and validates it, the client's own
/// PATH_CHALLENGE is answered, and the connection keeps working afterwards.
#[test]
fn client_migrates_to_a_new_port_mid_transfer() {
    let (server, conn) = server_and_client("127.0.0.1:0");
    std::thread::scope(|s| {
        let transfer = s.spawn(|| echo_round_trip(&conn, 4_000_000));
        std::thread::sleep(Duration::from_millis(20));
        conn.migrate();
        transfer.join().unwrap();
    });
    echo_round_trip(&conn, 100_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn.stats().paths_validated == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = conn.stats();
    assert_eq!(stats.local_migrations, 1);
    assert_eq!(
        stats.paths_validated, 1,
        "the client's new path was not validated"
    );
    assert!(
        server.paths_validated.load(Ordering::SeqCst) >= 1,
        "the server did not validate the client's new address"
    );
    echo_then_stop(server, conn, 1000);
}
