//! Half-open sessions over real sockets on loopback: clients that follow the Retry
//! and then never finish their handshake cannot lock real users out.
//!
//! On Linux every 127.0.0.x address is loopback, so the attackers come from several
//! source addresses, as in the attack this reproduces (issue 12: 300 fake clients/s
//! from 100 addresses filled the 4,096 half-open places in ≈ 7 s). The limits are
//! small here so that the test is quick; every wait is bounded.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::driver::blocking;
use quill_transport::driver::event_loop::{Context, Handler};
use quill_transport::proto::endpoint::{ConnectionHandle, EndpointConfig, RetryPolicy};
use quill_transport::proto::{
    ClientConfig, Connection, Event, HostKeyPolicy, Login, ServerConfig, TransportConfig,
};
use quill_transport::wire::ConnectionId;
use support::bind_loop;
use zeroize::Zeroizing;

fn host_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[12; 32]).unwrap())
}

fn client_config(user: &str) -> ClientConfig {
    ClientConfig::new(
        Login::Password {
            user: user.into(),
            password: Zeroizing::new("pw".into()),
        },
        HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
    )
}

/// Accepts every login at once.
struct AcceptAll;

impl Handler for AcceptAll {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        if let Event::LoginRequested(req) = event {
            let now = ctx.now();
            if let Some(c) = ctx.connection(h) {
                c.accept_login(now, &req.user, "welcome");
            }
        }
    }
}

/// A client that sends its Initial, answers the server's Retry with a second Initial
/// carrying the token, and then never reads again: the server holds a half-open
/// session for it.
struct FakeClient {
    socket: UdpSocket,
    conn: Connection,
}

impl FakeClient {
    fn start(from: &str, server: SocketAddr, n: u8) -> FakeClient {
        let socket = UdpSocket::bind(from).expect("bind a loopback address");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let local = ConnectionId::from_slice(&[n, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        let dcid = ConnectionId::from_slice(&[n, 9, 8, 7, 6, 5, 4, 3]).unwrap();
        let conn = Connection::client(
            client_config("mallory"),
            Instant::now(),
            server,
            local,
            dcid,
        )
        .unwrap();
        let mut fake = FakeClient { socket, conn };
        fake.flush(server);
        fake
    }

    fn flush(&mut self, server: SocketAddr) {
        let mut buf = [0u8; 1500];
        for _ in 0..16 {
            let Some(t) = self.conn.poll_transmit(Instant::now(), &mut buf) else {
                return;
            };
            self.socket.send_to(&buf[..t.size], server).unwrap();
        }
    }

    /// Reads the Retry and sends the Initial again, with the token.
    fn follow_retry(&mut self, server: SocketAddr) {
        let mut buf = [0u8; 1500];
        let (n, from) = self.socket.recv_from(&mut buf).expect("the server's Retry");
        self.conn
            .handle_datagram(Instant::now(), from, &mut buf[..n]);
        assert_eq!(self.conn.stats().retries, 1, "the first answer is a Retry");
        self.flush(server);
    }
}

#[test]
fn clients_that_never_finish_cannot_lock_out_a_real_client() {
    const MAX_HALF_OPEN: usize = 8;
    const PER_ADDRESS: usize = 3;
    // The attackers' sessions would outlive the test without the endpoint's limits.
    let transport = TransportConfig {
        handshake_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let mut server_config = ServerConfig::new(host_key());
    server_config.transport = Arc::new(transport);
    let endpoint = EndpointConfig {
        retry: RetryPolicy::Always,
        max_half_open: MAX_HALF_OPEN,
        max_half_open_per_address: PER_ADDRESS,
        per_source_handshakes_per_sec: 0,
        ..EndpointConfig::default()
    };
    let mut ev = bind_loop("127.0.0.1:0", endpoint, Some(server_config), 2, AcceptAll);
    let server = ev.local_addr();

    // 4 attacker addresses × 4 clients, one address after the other: more than both
    // limits allow. Each address gets 3 places and its 4th client is refused; the
    // third address's clients evict the first two's oldest, and the fourth's take
    // places until every address holds 2.
    let mut fakes: Vec<FakeClient> = (0..16u8)
        .map(|i| FakeClient::start(&format!("127.0.0.{}:0", 2 + i / 4), server, i))
        .collect();
    assert!(ev
        .run_until(Duration::from_secs(10), |_, ep| ep.stats().retry_sent >= 32)
        .unwrap());
    for f in &mut fakes {
        f.follow_retry(server);
    }
    let full = ev
        .run_until(Duration::from_secs(10), |_, ep| {
            // Two Initial datagrams per flight (the ClientHello's ML-KEM key share
            // fills two), before and after the Retry.
            ep.stats().datagrams_received >= 16 * 4
        })
        .unwrap();
    let st = ev.endpoint().stats();
    assert!(
        full,
        "the fake clients' Initials were not all handled: {st:?}"
    );
    assert_eq!(st.half_open, MAX_HALF_OPEN, "{st:?}");
    // Each refused client is refused twice (both datagrams of its flight).
    assert_eq!(st.refused_half_open_per_address, 3 * 2, "{st:?}");
    assert_eq!(st.refused_half_open, 2 * 2, "{st:?}");
    assert_eq!(st.evicted_half_open, 3, "{st:?}");

    // A real client from another address still gets in, and logs in.
    let client = std::thread::spawn(move || {
        let mut config = client_config("alice");
        config.transport = Arc::new(TransportConfig {
            handshake_timeout: Duration::from_secs(10),
            ..TransportConfig::default()
        });
        blocking::connect(server, config)
    });
    let ok = ev
        .run_until(Duration::from_secs(20), |_, _| client.is_finished())
        .unwrap();
    assert!(ok, "the real client did not finish in 20 s");
    let conn = client
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the real client was locked out: {e}"));
    assert_eq!(conn.account(), "alice");
    let st = ev.endpoint().stats();
    assert_eq!(
        st.evicted_half_open, 4,
        "the real client took an attacker's place: {st:?}"
    );
    assert!(st.half_open < MAX_HALF_OPEN, "{st:?}");
    conn.close(0, "done");
    // Let the close go out; then the server stops with everything drained.
    let _ = ev.run_until(Duration::from_millis(200), |_, _| false);
}
