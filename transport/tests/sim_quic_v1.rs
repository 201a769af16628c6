//! QUIC v1 (RFC 9000/9001, TLS 1.3 through rustls) on the same connection and
//! endpoint core as quill's own version, in the deterministic simulated network.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::time::Duration;

use quill_transport::proto::{
    ConnectionError, EndpointConfig, HostKeyPolicy, QuicV1Server, RetryPolicy,
    ServerPreferredAddress, TransportConfig, Version,
};
use quill_transport::sim::{endpoint_config, ClientApp, LinkConfig, Net, ServerApp, Sim};
use quill_transport::wire::{QUIC_V1, QUILL_VERSION};
use sim_setup::{alice_policy, assert_connects, host_key, password, setup, sim_of, Setup, MB};

const ALPN: &[u8] = b"hq-interop";

/// `setup`'s configurations switched to QUIC v1 with ALPN `hq-interop`: the client
/// pins host key 7, whose certificate the server presents.
fn v1_setup(seed: u64) -> Setup {
    sim_setup::quic_v1(setup(seed, TransportConfig::default()), ALPN)
}

/// A server app that echoes bidirectional streams and must never be asked for a
/// login (QUIC v1 has none): its policy refuses and records the attempt.
fn echo_server() -> ServerApp {
    sim_setup::v1_echo_server()
}

fn v1_sim(
    seed: u64,
    link: LinkConfig,
    endpoint: EndpointConfig,
    app: ClientApp,
) -> Sim<ClientApp, ServerApp> {
    let s = v1_setup(seed);
    let net = Net::new(seed, endpoint, s.server, link.clone(), link).unwrap();
    Sim::on(net, s.client, app, echo_server())
}

/// How the client's connection to `s`'s server over a clean link ends (it must not
/// come up).
fn lost(seed: u64, s: Setup) -> ConnectionError {
    let mut sim = sim_of(
        seed,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        echo_server(),
    );
    assert!(sim.run_until(Duration::from_secs(10), |s| s.client_app.lost.is_some()));
    assert!(!sim.client_app.connected);
    sim.client_app.lost.take().unwrap()
}

/// 1 MB each way on one bidirectional stream (the server echoes it back).
fn echo_1mb(seed: u64, link: LinkConfig) -> Sim<ClientApp, ServerApp> {
    let mut app = ClientApp::new(MB, 1);
    app.echo = true;
    let mut sim = v1_sim(seed, link, endpoint_config(seed), app);
    let done = sim.run_until(Duration::from_secs(120), |s| {
        s.client_app.sink.finished.len() == 1
    });
    assert!(
        done,
        "seed {seed}: echo not back after {:?}: client {:?}, server {:?}",
        sim.elapsed(),
        sim.client_app.events,
        sim.server_app.events
    );
    assert_eq!(
        sim.client_app.sent, sim.client_app.sink.finished,
        "seed {seed}"
    );
    assert_eq!(sim.client_app.sent[0].1, MB);
    assert_eq!(sim.server_app.sink.bytes, MB, "seed {seed}");
    sim
}

#[test]
fn v1_handshake_negotiates_x25519mlkem768_and_echoes_1mb() {
    let mut sim = echo_1mb(1, LinkConfig::default());
    let group = rustls::NamedGroup::X25519MLKEM768;
    let server = sim.server_handle().unwrap();
    let client = sim.client_handle();
    for (ep, h) in [(&mut sim.net.client, client), (&mut sim.net.server, server)] {
        let conn = ep.connection(h).unwrap();
        assert_eq!(conn.version(), QUIC_V1);
        assert_eq!(conn.key_exchange_group(), Some(group));
        assert_eq!(conn.alpn(), Some(ALPN));
        // No login on QUIC v1: no account on either side.
        assert_eq!(conn.account(), None);
        assert!(conn.is_established());
    }
    // The server application was told there is no account, and never asked for a login.
    let server_events = &sim.server_app.events;
    assert!(
        server_events
            .iter()
            .any(|e| e.starts_with("HandshakeConfirmed")),
        "{server_events:?}"
    );
    assert!(
        !server_events.iter().any(|e| e.contains("login")),
        "{server_events:?}"
    );
    assert_eq!(sim.client().peer_host_key(), Some(&host_key(7).public()));
}

#[test]
fn v1_echo_under_loss_and_reordering() {
    for seed in 2..5 {
        let link = LinkConfig {
            loss: 0.05,
            reorder: 0.05,
            jitter: Duration::from_millis(2),
            ..LinkConfig::default()
        };
        let mut sim = echo_1mb(seed, link);
        assert!(
            sim.client().stats().packets_lost > 0,
            "seed {seed}: nothing was lost"
        );
    }
}

/// RFC 9001 §5.7, found by quinn in the interop runner's handshakeloss case: the
/// client's Finished is lost and its first request (1-RTT, sent as soon as its
/// handshake is complete) arrives alone. The server keeps the packet until the
/// retransmitted Finished completes the handshake, instead of closing the connection
/// for stream data before the handshake.
#[test]
fn v1_request_overtaking_a_lost_finished_waits_for_the_handshake() {
    let mut app = ClientApp::new(4096, 1);
    app.echo = true;
    let mut sim = v1_sim(5, LinkConfig::default(), endpoint_config(5), app);
    // The client has just processed the server's flight: its Finished is queued.
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client().alpn().is_some()));
    let sent_before = sim.net.c2s.stats().sent;
    sim.net.c2s.black_hole = true;
    sim.net.transmit();
    sim.net.c2s.black_hole = false;
    assert!(
        sim.net.c2s.stats().sent > sent_before,
        "the Finished was not sent"
    );
    let done = sim.run_until(Duration::from_secs(30), |s| {
        s.client_app.sink.finished.len() == 1
    });
    assert!(
        done,
        "no echo: client {:?} {:?}, server {:?}",
        sim.client_app.lost, sim.client_app.events, sim.server_app.events
    );
    assert_eq!(
        sim.client_app.sent, sim.client_app.sink.finished,
        "the echo differs from what was sent"
    );
}

#[test]
fn v1_key_updates_mid_transfer() {
    let mut s = v1_setup(6);
    let t = TransportConfig {
        key_update_interval: 1000,
        ..TransportConfig::default()
    };
    s.client.transport = t.clone().into();
    s.server.transport = t.into();
    let mut app = ClientApp::new(3 * MB, 1);
    app.echo = true;
    let mut sim = sim_of(6, s, LinkConfig::default(), app, echo_server());
    assert!(sim.run_until(Duration::from_secs(120), |s| s
        .client_app
        .sink
        .finished
        .len()
        == 1));
    assert_eq!(sim.client_app.sent, sim.client_app.sink.finished);
    assert!(
        sim.client().stats().key_updates >= 2,
        "{:?}",
        sim.client().stats()
    );
    assert!(sim.server().unwrap().stats().key_updates >= 2);
}

#[test]
fn v1_retry_completes_with_a_validated_token() {
    for seed in 7..10 {
        let endpoint = EndpointConfig {
            retry: RetryPolicy::Always,
            ..endpoint_config(seed)
        };
        let mut app = ClientApp::new(100_000, 1);
        app.echo = true;
        let mut sim = v1_sim(seed, LinkConfig::default(), endpoint, app);
        assert!(sim.run_until(Duration::from_secs(30), |s| s
            .client_app
            .sink
            .finished
            .len()
            == 1));
        assert_eq!(sim.client().stats().retries, 1, "seed {seed}");
        let st = sim.net.server.stats();
        // The ClientHello (with its 1216-byte X25519MLKEM768 share) fills two Initial
        // datagrams, each answered with a Retry; the client follows only one.
        assert!(st.retry_sent >= 1, "seed {seed}: {st:?}");
        assert_eq!(st.sessions_created, 1, "seed {seed}: {st:?}");
        assert_eq!(st.dropped_invalid_token, 0, "seed {seed}: {st:?}");
        assert_eq!(sim.client().version(), QUIC_V1);
    }
}

#[test]
fn v1_wrong_host_key_is_refused_by_the_client() {
    let mut s = v1_setup(11);
    s.client.host_key = HostKeyPolicy::Pinned(vec![host_key(8).public().fingerprint()]);
    match lost(11, s) {
        ConnectionError::HostKeyRejected { fingerprint, .. } => {
            assert_eq!(fingerprint, host_key(7).public().fingerprint())
        }
        e => panic!("{e:?}"),
    }
}

/// A server that does not accept QUIC v1 answers a v1 client with Version
/// Negotiation listing only quill's version (and grease), and the client gives up;
/// quill clients on the same server are unaffected by its accepting v1.
#[test]
fn v1_client_to_a_quill_only_server_gets_version_negotiation() {
    let mut s = v1_setup(12);
    s.server.quic_v1 = None;
    match lost(12, s) {
        ConnectionError::VersionMismatch { peer_versions } => {
            assert_eq!(peer_versions[0], QUILL_VERSION);
            assert!(!peer_versions.contains(&QUIC_V1));
        }
        e => panic!("{e:?}"),
    }
}

/// quill's own version still works against a server that also accepts v1.
#[test]
fn quill_client_to_a_server_accepting_both() {
    let mut s = v1_setup(13);
    s.client.version = Version::Quill;
    let mut sim = sim_of(
        13,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        alice_policy(),
    );
    sim_setup::assert_connects(&mut sim, Duration::from_secs(5), 13);
    assert_eq!(sim.client().version(), QUILL_VERSION);
    assert_eq!(sim.client().key_exchange_group(), None);
    assert_eq!(sim.server().unwrap().account(), Some("alice"));
}

/// `setup`'s configurations on QUIC v1 with ALPN `quill`: quill's login on stream 0.
fn quill_alpn_setup(seed: u64) -> Setup {
    let mut s = setup(seed, TransportConfig::default());
    s.client.version = Version::QuicV1 {
        alpn: vec![b"quill".to_vec()],
    };
    s.server.quic_v1 = Some(
        QuicV1Server::with_host_key(host_key(7), vec![b"quill".to_vec(), ALPN.to_vec()]).unwrap(),
    );
    s
}

/// ALPN `quill`: the password login rides on stream 0, the server's application
/// decides as on quill's own version, and the application's streams start at 4.
#[test]
fn v1_quill_alpn_logs_in_on_stream_zero_and_echoes() {
    let mut app = ClientApp::new(200_000, 2);
    app.echo = true;
    let mut server = alice_policy();
    server.echo = true;
    // The verdict takes a while (a worker pool, Argon2): HANDSHAKE_DONE reaches the
    // client first, and must not make it think it is logged in.
    server.verdict_delay = Duration::from_millis(200);
    let mut sim = sim_of(11, quill_alpn_setup(11), LinkConfig::default(), app, server);
    assert_connects(&mut sim, Duration::from_secs(10), 11);
    assert_eq!(sim.client().account(), Some("alice"));
    assert_eq!(sim.server().unwrap().account(), Some("alice"));
    assert_eq!(sim.client().alpn(), Some(&b"quill"[..]));
    assert!(sim.run_until(Duration::from_secs(60), |s| s
        .client_app
        .sink
        .finished
        .len()
        == 2));
    let mut echoed = sim.client_app.sink.finished.clone();
    echoed.sort();
    assert_eq!(sim.client_app.sent, echoed);
    let ids: Vec<u64> = sim.client_app.sent.iter().map(|s| s.0).collect();
    assert_eq!(ids, vec![4, 8], "stream 0 is the login's");
    assert_eq!(
        sim.server_app
            .events
            .iter()
            .filter(|e| e.contains("login requested"))
            .count(),
        1
    );
}

/// ALPN `quill`: a wrong password is refused with LOGIN_REFUSED, as on quill's version,
/// and the client never gets a stream.
#[test]
fn v1_quill_alpn_refusal_is_login_refused() {
    let mut s = quill_alpn_setup(12);
    s.client.login = password("alice", "wrong");
    let mut sim = sim_of(
        12,
        s,
        LinkConfig::default(),
        ClientApp::new(1000, 1),
        alice_policy(),
    );
    assert!(sim.run_until(Duration::from_secs(10), |s| s.client_app.lost.is_some()));
    assert!(!sim.client_app.connected);
    assert!(
        matches!(
            sim.client_app.lost,
            Some(ConnectionError::LoginRefused { .. })
        ),
        "{:?}",
        sim.client_app.lost
    );
}

/// ALPN `quill`, public-key login: the key signs this connection's TLS exporter;
/// the server verifies it before the application sees the login.
#[test]
fn v1_quill_alpn_public_key_login_signs_the_exporter() {
    let mut s = quill_alpn_setup(13);
    let identity = host_key(9);
    s.client.login = quill_transport::proto::Login::PublicKey {
        user: "bob".into(),
        key: identity.clone(),
    };
    s.server.allow_publickey = true;
    let expected = identity.public();
    let server = ServerApp::new(Box::new(move |req| match &req.method {
        quill_transport::proto::LoginMethod::PublicKey(k) if *k == expected => Ok("bob".into()),
        _ => Err("login refused".into()),
    }));
    let mut sim = sim_of(13, s, LinkConfig::default(), ClientApp::new(0, 0), server);
    assert_connects(&mut sim, Duration::from_secs(10), 13);
    assert_eq!(sim.client().account(), Some("bob"));
}

/// 1 MB each way with the server offering `preferred` (RFC 9000 §9.6); `reachable`
/// says whether the network carries datagrams sent there to the server.
fn echo_with_preferred_address(
    seed: u64,
    preferred: std::net::SocketAddr,
    reachable: bool,
) -> Sim<ClientApp, ServerApp> {
    let mut s = v1_setup(seed);
    s.server.preferred_address = Some(ServerPreferredAddress::of(preferred));
    let link = LinkConfig::default();
    let mut net = Net::new(seed, endpoint_config(seed), s.server, link.clone(), link).unwrap();
    net.preferred_addr = reachable.then_some(preferred);
    let mut app = ClientApp::new(MB, 1);
    app.echo = true;
    let mut sim = Sim::on(net, s.client, app, echo_server());
    let done = sim.run_until(Duration::from_secs(120), |s| {
        s.client_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
    });
    assert!(
        done && sim.client_app.lost.is_none(),
        "seed {seed}: {:?} after {:?}: {:?}",
        sim.client_app.lost,
        sim.elapsed(),
        sim.client_app.events
    );
    assert_eq!(sim.client_app.sent, sim.client_app.sink.finished);
    sim
}

/// RFC 9000 §9.6.1: once the handshake is confirmed the client probes the server's
/// preferred address with PATH_CHALLENGE under the parameter's connection ID, and on
/// the PATH_RESPONSE sends everything there, under that connection ID.
#[test]
fn v1_client_moves_to_the_servers_preferred_address() {
    let preferred: std::net::SocketAddr = "10.0.0.9:4434".parse().unwrap();
    for seed in [1, 2] {
        let mut sim = echo_with_preferred_address(seed, preferred, true);
        let handshake_cid = sim.server().unwrap().local_cid();
        let net = sim.net.stats();
        let c = sim.client();
        assert_eq!(c.remote_address(), preferred, "seed {seed}");
        assert_eq!(c.stats().migrations, 1);
        assert_eq!(c.stats().paths_validated, 1);
        assert_eq!(c.probing_preferred_address(), None);
        assert_ne!(
            c.remote_cid(),
            handshake_cid,
            "the preferred address's own CID"
        );
        assert_eq!(net.misaddressed, 0);
        // The echo (1 MB) went to the preferred address, not just the probe.
        assert!(net.to_preferred > 500, "seed {seed}: {net:?}");
    }
}

/// RFC 9000 §9.6.1: "If path validation fails, the client MUST continue sending all
/// future packets to the server's original IP address." Three probes, then it stays.
#[test]
fn v1_client_stays_when_the_preferred_address_does_not_answer() {
    let preferred: std::net::SocketAddr = "10.0.0.9:4434".parse().unwrap();
    let mut sim = echo_with_preferred_address(3, preferred, false);
    // The verdict comes a PTO after the third probe, maybe after the echo.
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.client().probing_preferred_address().is_none()
    }));
    let server_addr = sim.net.server_addr;
    let net = sim.net.stats();
    let c = sim.client();
    assert_eq!(c.remote_address(), server_addr);
    assert_eq!(c.stats().migrations, 0);
    assert_eq!(c.probing_preferred_address(), None);
    assert_eq!(net.misaddressed, 3, "three probes, each lost: {net:?}");
    assert_eq!(net.to_preferred, 0);
}
