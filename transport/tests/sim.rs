//! Protocol behaviour in the deterministic simulated network (virtual time).
//!
//! Every test is seeded and reproducible; "24 hours" here take milliseconds.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::sync::Arc;
use std::time::Duration;

use quill_transport::proto::{ConnectionError, HostKeyPolicy, TransportConfig};
use quill_transport::sim::{ClientApp, LinkConfig, ServerApp, Sim};
use sim_setup::{
    alice_policy, assert_connects, host_key, password, rebind_and_finish, setup, sim_of, Setup, MB,
};

/// The default link with `change` made.
fn impaired(change: impl FnOnce(&mut LinkConfig)) -> LinkConfig {
    let mut link = LinkConfig::default();
    change(&mut link);
    link
}

/// An idle client logged in to `s`'s server over a clean link.
fn logged_in(seed: u64, s: Setup) -> Sim<ClientApp, ServerApp> {
    let mut sim = sim_of(
        seed,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        alice_policy(),
    );
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
    sim
}

fn sim(seed: u64, link: LinkConfig, app: ClientApp) -> Sim<ClientApp, ServerApp> {
    let s = setup(seed, TransportConfig::default());
    sim_of(seed, s, link, app, alice_policy())
}

#[test]
fn handshake_and_login_without_loss() {
    let mut sim = sim(1, LinkConfig::default(), ClientApp::new(0, 0));
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
    // One round trip for the handshake, one for the login: 2 RTTs of 20 ms each.
    assert!(
        sim.elapsed() < Duration::from_millis(100),
        "took {:?}",
        sim.elapsed()
    );
    let server = sim.server().unwrap();
    assert!(server.is_established());
    assert_eq!(server.account(), Some("alice"));
    assert_eq!(sim.client().account(), Some("alice"));
    assert!(sim.client().suite().is_some());
}

/// Issue 17: nothing in the handshake or the login waits on a timer. On a clean link
/// with a fixed one-way delay the server has the client's login after 1.5 round
/// trips and the client is logged in after exactly 2, to the virtual nanosecond: no
/// ACK delay, pacing or timer-wheel tick is added to any flight (Initial and
/// Handshake packets are acknowledged at once, RFC 9000 §13.2.1, and the first
/// flights are not paced).
#[test]
fn handshake_and_login_take_two_round_trips_and_no_more() {
    let link = LinkConfig {
        delay: Duration::from_micros(10_007), // off the 1 ms tick on purpose
        ..LinkConfig::default()
    };
    let rtt = 2 * link.delay;
    let mut sim = sim(1, link, ClientApp::new(0, 0));
    let (mut server_at, mut client_at) = (None, None);
    for _ in 0..1_000 {
        // The server app answers at the start of a step (before the clock moves);
        // the client is logged in as a datagram is delivered (when it has moved).
        let began = sim.elapsed();
        if client_at.is_some() || !sim.step() {
            break;
        }
        if server_at.is_none() && sim.server().is_some_and(|c| c.account().is_some()) {
            server_at = Some(began);
        }
        if client_at.is_none() && sim.client().account().is_some() {
            client_at = Some(sim.elapsed());
        }
    }
    // The server accepts as the login arrives (the app answers at once here).
    assert_eq!(server_at, Some(rtt + rtt / 2));
    assert_eq!(client_at, Some(2 * rtt));
    assert!(sim.client().is_established());
}

#[test]
fn handshake_and_login_under_30_percent_loss() {
    for seed in 0..20 {
        let link = impaired(|l| l.loss = 0.3);
        let mut sim = sim(100 + seed, link, ClientApp::new(0, 0));
        assert_connects(&mut sim, Duration::from_secs(60), seed);
    }
}

#[test]
fn wrong_host_key_is_refused_by_the_client() {
    let mut s = setup(3, TransportConfig::default());
    s.client.host_key = HostKeyPolicy::Pinned(vec![host_key(8).public().fingerprint()]);
    let mut sim = sim_of(
        3,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        alice_policy(),
    );
    sim.run_until(Duration::from_secs(5), |s| s.client_app.lost.is_some());
    match &sim.client_app.lost {
        Some(ConnectionError::HostKeyRejected { fingerprint, .. }) => {
            assert_eq!(fingerprint, &host_key(7).public().fingerprint())
        }
        other => panic!("expected host key rejection, got {other:?}"),
    }
    assert!(!sim.client_app.connected);
    // The server learns why, and no login was ever requested.
    sim.run_until(Duration::from_secs(5), |s| s.server().unwrap().is_closed());
    let server = sim.server().unwrap();
    assert!(
        matches!(server.error(), Some(ConnectionError::ClosedByPeer { code, .. }) if *code == quill_transport::wire::TransportErrorCode::HOST_KEY_REJECTED.0)
    );
    assert!(sim
        .server_app
        .events
        .iter()
        .all(|e| !e.starts_with("login requested")));
}

#[test]
fn refused_login_is_reported_on_both_sides() {
    let mut s = setup(4, TransportConfig::default());
    s.client.login = password("alice", "wrong");
    let mut sim = sim_of(
        4,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        alice_policy(),
    );
    sim.run_until(Duration::from_secs(5), |s| s.client_app.lost.is_some());
    assert_eq!(
        sim.client_app.lost,
        Some(ConnectionError::LoginRefused {
            reason: "login refused".into()
        })
    );
    assert!(!sim.client_app.connected);
    assert!(matches!(
        sim.server().unwrap().error(),
        Some(ConnectionError::LoginRefused { .. })
    ));
}

#[test]
fn slow_login_verdict_does_not_stall_the_connection() {
    let mut s = setup(5, TransportConfig::default());
    let t = TransportConfig {
        keep_alive_interval: Some(Duration::from_millis(200)),
        ..TransportConfig::default()
    };
    s.client.transport = Arc::new(t);
    let mut server_app = alice_policy();
    server_app.verdict_delay = Duration::from_millis(1500);
    let mut sim = sim_of(
        5,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        server_app,
    );
    assert!(sim.run_until(Duration::from_secs(10), |s| s.client_app.connected));
    assert!(sim.elapsed() >= Duration::from_millis(1500));
    assert!(sim.client_app.lost.is_none());
}

fn transfer(
    seed: u64,
    link: LinkConfig,
    bytes: u64,
    transport: TransportConfig,
) -> Sim<ClientApp, ServerApp> {
    let s = setup(seed, transport);
    let mut sim = sim_of(seed, s, link, ClientApp::new(bytes, 1), alice_policy());
    let done = sim.run_until(Duration::from_secs(3600), |s| {
        s.server_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
    });
    assert!(
        done,
        "transfer did not finish in an hour of virtual time: {:?}",
        sim.client_app.events
    );
    assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
    let (_, n, hash) = sim.server_app.sink.finished[0];
    assert_eq!(n, bytes);
    assert_eq!(sim.client_app.sent.len(), 1);
    assert_eq!(
        sim.client_app.sent[0].2, hash,
        "SHA-256 of received data differs"
    );
    sim
}

#[test]
fn transfer_50mb_clean() {
    let mut sim = transfer(
        10,
        LinkConfig::default(),
        50 * MB,
        TransportConfig::default(),
    );
    assert_eq!(sim.client().stats().packets_lost, 0);
}

#[test]
fn transfer_50mb_5_percent_loss() {
    let link = impaired(|l| l.loss = 0.05);
    let mut sim = transfer(11, link, 50 * MB, TransportConfig::default());
    assert!(sim.client().stats().packets_lost > 0);
}

#[test]
fn transfer_50mb_10_percent_loss() {
    let link = impaired(|l| l.loss = 0.10);
    transfer(12, link, 50 * MB, TransportConfig::default());
}

#[test]
fn transfer_50mb_2_percent_corruption() {
    let link = impaired(|l| l.corrupt = 0.02);
    let mut sim = transfer(13, link, 50 * MB, TransportConfig::default());
    let dropped =
        sim.client().stats().packets_dropped + sim.server().unwrap().stats().packets_dropped;
    assert!(
        dropped > 0,
        "corrupted packets must have been dropped, not accepted"
    );
}

#[test]
fn transfer_50mb_reordering_and_duplication() {
    let link = impaired(|l| {
        l.reorder = 0.05;
        l.reorder_delay = Duration::from_millis(3);
        l.jitter = Duration::from_millis(2);
        l.duplicate = 0.05;
    });
    transfer(14, link, 50 * MB, TransportConfig::default());
}

#[test]
fn transfer_with_burst_loss_and_a_bottleneck() {
    let link = impaired(|l| {
        l.burst_loss = Some((0.01, 0.3));
        l.bandwidth_bps = Some(100_000_000);
        l.queue_bytes = 64 * 1024;
    });
    transfer(15, link, 10 * MB, TransportConfig::default());
}

#[test]
fn transfer_with_tiny_flow_control_windows() {
    let mut t = TransportConfig::default();
    t.streams.stream_receive_window = 4096;
    t.streams.max_stream_receive_window = 4096;
    t.streams.receive_window = 8192;
    t.streams.max_receive_window = 8192;
    let sim = transfer(16, LinkConfig::default(), 2 * MB, t);
    // With 4 KB windows the transfer needs hundreds of window updates.
    assert!(
        sim.elapsed() > Duration::from_secs(2),
        "{:?}",
        sim.elapsed()
    );
}

#[test]
fn key_update_mid_transfer() {
    let t = TransportConfig {
        key_update_interval: 2000,
        ..TransportConfig::default()
    };
    let link = impaired(|l| {
        l.loss = 0.01;
        l.reorder = 0.01;
    });
    let mut sim = transfer(17, link, 20 * MB, t);
    assert!(
        sim.client().stats().key_updates >= 3,
        "client saw {} key updates",
        sim.client().stats().key_updates
    );
    assert!(sim.server().unwrap().stats().key_updates >= 3);
}

#[test]
fn a_thousand_small_streams() {
    let mut sim = sim(18, LinkConfig::default(), ClientApp::new(1000, 1200));
    let done = sim.run_until(Duration::from_secs(600), |s| {
        s.server_app.sink.finished.len() == 1200
    });
    assert!(
        done,
        "only {} streams finished",
        sim.server_app.sink.finished.len()
    );
    let mut sent = sim.client_app.sent.clone();
    let mut got = sim.server_app.sink.finished.clone();
    sent.sort();
    got.sort();
    assert_eq!(sent, got);
    // Closed streams are freed.
    sim.run_until(Duration::from_secs(5), |_| false);
    assert!(sim.server().unwrap().buffer_sizes().streams < 10);
}

#[test]
fn echo_on_a_bidirectional_stream() {
    let s = setup(19, TransportConfig::default());
    let mut app = ClientApp::new(300_000, 3);
    app.echo = true;
    let mut server_app = alice_policy();
    server_app.echo = true;
    let mut sim = sim_of(19, s, LinkConfig::default(), app, server_app);
    assert!(sim.run_until(Duration::from_secs(60), |s| s
        .client_app
        .sink
        .finished
        .len()
        == 3));
    let mut sent = sim.client_app.sent.clone();
    let mut back = sim.client_app.sink.finished.clone();
    sent.sort();
    back.sort();
    assert_eq!(sent, back);
}

#[test]
fn keep_alive_holds_an_idle_connection_for_24_virtual_hours() {
    let t = TransportConfig {
        idle_timeout: Duration::from_secs(30),
        ..TransportConfig::default()
    };
    let interval = Duration::from_secs(10);
    let mut client_t = t.clone();
    client_t.keep_alive_interval = Some(interval);
    let mut s = setup(20, t);
    s.client.transport = Arc::new(client_t);
    let mut sim = logged_in(20, s);
    let baseline = sim.client().buffer_sizes();
    let server_baseline = sim.server().unwrap().buffer_sizes();
    let day = Duration::from_secs(24 * 3600);
    let mut last_count = sim.client().stats().keep_alives_sent;
    let mut last_at = sim.now();
    let mut max_gap = Duration::ZERO;
    let mut max_sizes = baseline;
    let end = sim.now() + day;
    while sim.now() < end {
        assert!(sim.step(), "simulation ran dry");
        let st = sim.client().stats();
        if st.keep_alives_sent != last_count {
            let at = st.last_keep_alive.unwrap();
            max_gap = max_gap.max(at - last_at);
            last_at = at;
            last_count = st.keep_alives_sent;
        }
        let b = sim.client().buffer_sizes();
        max_sizes.sent_packets = max_sizes.sent_packets.max(b.sent_packets);
        max_sizes.ack_ranges = max_sizes.ack_ranges.max(b.ack_ranges);
        max_sizes.events = max_sizes.events.max(b.events);
        assert!(
            sim.client_app.lost.is_none(),
            "lost after {:?}: {:?}",
            sim.elapsed(),
            sim.client_app.lost
        );
    }
    let sent = sim.client().stats().keep_alives_sent;
    // One keep-alive per interval: 8640 in a day, each exactly on schedule.
    assert!(sent >= 8600, "only {sent} keep-alives in 24 h");
    assert!(
        max_gap <= interval + Duration::from_millis(1),
        "a keep-alive was late: gap {max_gap:?}"
    );
    assert!(sim.server().unwrap().is_established());
    // Memory stays flat: nothing accumulates over a day.
    assert!(max_sizes.sent_packets <= 4, "{max_sizes:?}");
    assert!(max_sizes.ack_ranges <= 4, "{max_sizes:?}");
    assert!(max_sizes.events <= 2, "{max_sizes:?}");
    let end_sizes = sim.server().unwrap().buffer_sizes();
    assert!(
        end_sizes.sent_packets <= server_baseline.sent_packets + 2,
        "{end_sizes:?}"
    );
    assert!(end_sizes.ack_ranges <= 4, "{end_sizes:?}");
}

#[test]
fn silent_peer_times_out_within_the_bound() {
    let t = TransportConfig {
        idle_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    };
    let s = setup(21, t);
    let mut sim = logged_in(21, s);
    // The server vanishes: everything it would send is lost, and it hears nothing.
    sim.net.s2c.black_hole = true;
    sim.net.c2s.black_hole = true;
    let went_silent = sim.now();
    assert!(sim.run_until(Duration::from_secs(60), |s| s.client_app.lost.is_some()));
    assert_eq!(sim.client_app.lost, Some(ConnectionError::TimedOut));
    let took = sim.now() - went_silent;
    assert!(
        took >= Duration::from_secs(5) - Duration::from_millis(100),
        "{took:?}"
    );
    assert!(
        took <= Duration::from_secs(5) + Duration::from_secs(1),
        "{took:?}"
    );
}

#[test]
fn version_and_suite_negotiation_use_the_server_preference() {
    let mut s = setup(22, TransportConfig::default());
    s.client.suites = vec![quill_crypto::packet::Suite::ChaCha20Poly1305];
    let mut sim = sim_of(
        22,
        s,
        LinkConfig::default(),
        ClientApp::new(100_000, 1),
        alice_policy(),
    );
    assert!(sim.run_until(Duration::from_secs(30), |s| s
        .server_app
        .sink
        .finished
        .len()
        == 1));
    assert_eq!(
        sim.client().suite(),
        Some(quill_crypto::packet::Suite::ChaCha20Poly1305)
    );
}

#[test]
fn datagrams_are_delivered_and_bounded() {
    let mut sim = sim(23, LinkConfig::default(), ClientApp::new(0, 0));
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.client_app.connected
            && s.server().unwrap().is_established())
    );
    let max = sim.client().max_datagram_size().unwrap();
    assert!(sim.client().send_datagram(&vec![1u8; max + 1]).is_err());
    for i in 0..1000u32 {
        let _ = sim.client().send_datagram(&i.to_le_bytes());
        if i % 50 == 0 {
            sim.step();
        }
    }
    sim.run_until(Duration::from_secs(1), |_| false);
    let server = sim.server().unwrap();
    assert!(server.buffer_sizes().datagrams <= 256);
    let mut got = 0;
    while server.recv_datagram().is_some() {
        got += 1;
    }
    assert!(got > 0);
}

#[test]
fn path_mtu_probe_finds_the_larger_size_or_keeps_1200() {
    // A link that carries 1500-byte datagrams: the probe succeeds.
    let mut sim = transfer(24, LinkConfig::default(), MB, TransportConfig::default());
    assert_eq!(sim.client().mtu(), 1452);
    // A link that drops anything over 1280 bytes: the probe is lost, 1200 stays,
    // and the loss is not taken as congestion.
    let link = impaired(|l| l.mtu = 1280);
    let mut sim = transfer(25, link, MB, TransportConfig::default());
    assert_eq!(sim.client().mtu(), 1200);
    assert_eq!(sim.client().stats().congestion_events, 0);
}

#[test]
fn version_negotiation_reports_the_peers_versions() {
    use quill_transport::proto::{Connection, Event};
    use quill_transport::wire::{encode_version_negotiation, ConnectionId, Writer};
    let s = setup(26, TransportConfig::default());
    let now = std::time::Instant::now();
    let server: std::net::SocketAddr = "127.0.0.1:4433".parse().unwrap();
    let local = ConnectionId::from_slice(&[0xc1; 8]).unwrap();
    let dcid = ConnectionId::from_slice(&[0xd1; 8]).unwrap();
    let mut client = Connection::client(s.client, now, server, local, dcid).unwrap();
    let mut buf = [0u8; 1500];
    assert!(client.poll_transmit(now, &mut buf).is_some());
    // What a QUIC v1 server answers (RFC 9000 §6): VN listing version 1 and a grease value.
    let mut vn = [0u8; 64];
    let mut w = Writer::new(&mut vn);
    encode_version_negotiation(
        &mut w,
        0x15,
        local.as_ref(),
        dcid.as_ref(),
        &[0x0000_0001, 0x1a2a_3a4a],
    );
    let n = w.len();
    client.handle_datagram(now, server, &mut vn[..n]);
    let mut lost = None;
    while let Some(ev) = client.poll_event() {
        if let Event::ConnectionLost(e) = ev {
            lost = Some(e);
        }
    }
    let e = lost.expect("the client gives up");
    assert_eq!(
        e,
        ConnectionError::VersionMismatch {
            peer_versions: vec![1, 0x1a2a_3a4a]
        }
    );
    assert!(
        e.to_string()
            .contains("peer speaks QUIC versions 0x00000001 (QUIC v1)"),
        "{e}"
    );
    assert!(client.is_drained());
    assert!(client.poll_transmit(now, &mut buf).is_none());
}

fn rebind_mid_transfer(seed: u64, new_addr: &str) -> Sim<ClientApp, ServerApp> {
    let s = setup(seed, TransportConfig::default());
    let link = impaired(|l| l.loss = 0.01);
    let mut sim = sim_of(seed, s, link, ClientApp::new(10 * MB, 1), alice_policy());
    assert!(
        sim.run_until(Duration::from_secs(60), |s| s.server_app.sink.bytes
            > 2 * MB)
    );
    rebind_and_finish(&mut sim, new_addr);
    assert_eq!(sim.server_app.sink.finished[0].2, sim.client_app.sent[0].2);
    let client_addr = sim.net.client_addr;
    let server = sim.server().unwrap();
    assert_eq!(server.remote_address(), client_addr);
    assert_eq!(server.stats().migrations, 1);
    assert_eq!(
        server.stats().paths_validated,
        1,
        "the new path must be validated"
    );
    sim
}

#[test]
fn rebinding_to_a_new_port_keeps_the_transfer_going() {
    rebind_mid_transfer(27, "10.0.0.1:40001");
}

#[test]
fn rebinding_to_a_new_address_keeps_the_transfer_going() {
    rebind_mid_transfer(28, "10.0.0.9:50000");
}

#[test]
fn stateless_reset_ends_the_connection_at_once() {
    let mut sim = sim(29, LinkConfig::default(), ClientApp::new(0, 0));
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
    let server_cid = sim.server().unwrap().local_cid();
    let token = sim.net.server.reset_token(&server_cid);
    // What a restarted server sends for a CID it no longer knows: random-looking
    // short-header bytes ending in the token (RFC 9000 §10.3). They reach the
    // connection through the client endpoint's table of reset tokens.
    let mut reset = vec![0x4bu8; 43];
    reset[27..].copy_from_slice(&token);
    let now = sim.now();
    let from = sim.net.server_addr;
    // A datagram of the same shape with a wrong token is just dropped.
    let mut wrong = reset.clone();
    wrong[42] ^= 1;
    sim.net.client.handle_datagram(now, from, &mut wrong);
    assert!(sim.client().is_established());
    sim.net.client.handle_datagram(now, from, &mut reset);
    assert!(sim.client().is_drained());
    sim.step();
    assert_eq!(sim.client_app.lost, Some(ConnectionError::Reset));
}

/// A lost PATH_RESPONSE is never retransmitted, so the server must challenge again
/// (RFC 9000 §8.2.1): with heavy loss on the client's new path right after the
/// rebinding, the path is still validated before the transfer ends.
#[test]
fn rebinding_under_heavy_loss_still_validates_the_new_path() {
    for seed in 40..52 {
        let s = setup(seed, TransportConfig::default());
        let mut sim = sim_of(
            seed,
            s,
            LinkConfig::default(),
            ClientApp::new(4 * MB, 1),
            alice_policy(),
        );
        assert!(sim.run_until(Duration::from_secs(60), |s| s.server_app.sink.bytes > MB));
        sim.net.c2s.config.loss = 0.5;
        rebind_and_finish(&mut sim, "10.0.0.1:40001");
        let server = sim.server().unwrap();
        assert_eq!(server.stats().migrations, 1, "seed {seed}");
        assert_eq!(
            server.stats().paths_validated,
            1,
            "seed {seed}: the new path must be validated"
        );
    }
}

/// Short periodic black holes (the interop suite's 'blackhole' scenario): the path is
/// open for 1.5 s, then drops everything in both directions for 2 s, over and over.
/// The receiving side sends nothing ack-eliciting, so it hears from the sender only
/// when a probe lands in an open window. Without a bound on the PTO backoff the
/// sender's probes drift to 8, 16, 32 s apart and the receiver idles out; with it
/// the transfer goes on for many idle timeouts and completes.
#[test]
fn a_receive_only_peer_survives_periodic_black_holes() {
    const OPEN: Duration = Duration::from_millis(1500);
    const CLOSED: Duration = Duration::from_millis(2000);
    let idle = Duration::from_secs(10);
    for seed in 60..66 {
        let t = TransportConfig {
            idle_timeout: idle,
            ..TransportConfig::default()
        };
        let s = setup(seed, t);
        // 2 Mbit/s: 8 MB take over a minute of open path, so the transfer spans
        // dozens of outages and several idle timeouts.
        let link = impaired(|l| l.bandwidth_bps = Some(2_000_000));
        let mut sim = sim_of(seed, s, link, ClientApp::new(8 * MB, 1), alice_policy());
        assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
        // Each seed starts its first outage at a different phase of the transfer.
        let start = sim.now() + Duration::from_millis(137 * (seed - 60));
        let cycle = OPEN + CLOSED;
        let deadline = sim.now() + Duration::from_secs(3600);
        let mut outages = 0u32;
        let mut was_closed = false;
        while sim.server_app.sink.finished.is_empty() && sim.client_app.lost.is_none() {
            assert!(sim.now() < deadline, "seed {seed}: no end after an hour");
            let phase = sim.now().saturating_duration_since(start).as_nanos() % cycle.as_nanos();
            let closed = sim.now() >= start && phase >= OPEN.as_nanos();
            sim.net.c2s.black_hole = closed;
            sim.net.s2c.black_hole = closed;
            if closed && !was_closed {
                outages += 1;
            }
            was_closed = closed;
            if !sim.step() {
                break;
            }
        }
        assert!(
            sim.client_app.lost.is_none(),
            "seed {seed}: lost after {outages} outages at {:?}: {:?}",
            sim.elapsed(),
            sim.client_app.lost
        );
        assert_eq!(
            sim.server_app.sink.finished.len(),
            1,
            "seed {seed}: ran dry"
        );
        let (_, n, hash) = sim.server_app.sink.finished[0];
        assert_eq!(n, 8 * MB);
        assert_eq!(hash, sim.client_app.sent[0].2, "seed {seed}");
        assert!(
            sim.elapsed() > 4 * idle && outages > 10,
            "seed {seed}: the transfer did not span the outages ({outages}, {:?})",
            sim.elapsed()
        );
        let ptos = sim.client().stats().ptos;
        eprintln!(
            "seed {seed}: 8 MB through {outages} outages in {:?}, {ptos} PTOs",
            sim.elapsed()
        );
        assert!(ptos > u64::from(outages), "seed {seed}: {ptos} PTOs");
    }
}

/// An ICMP unreachable ends a connection attempt that has heard nothing, and is
/// ignored once the server has answered (a forged one must not end a connection).
#[test]
fn icmp_unreachable_counts_only_before_the_server_answers() {
    use quill_transport::proto::Unreachable;
    let mut sim = sim(31, LinkConfig::default(), ClientApp::new(0, 0));
    let (now, server) = (sim.now(), sim.net.server_addr);
    sim.net
        .client
        .handle_unreachable(now, server, Unreachable::Refused);
    assert!(sim.client().is_drained());
    assert_eq!(
        sim.client().error(),
        Some(&ConnectionError::Unreachable(Unreachable::Refused))
    );
    let mut sim = self::sim(32, LinkConfig::default(), ClientApp::new(0, 0));
    assert!(sim.run_until(Duration::from_millis(20), |s| s
        .client()
        .stats()
        .packets_received
        > 0));
    let (now, server) = (sim.now(), sim.net.server_addr);
    sim.net
        .client
        .handle_unreachable(now, server, Unreachable::Refused);
    assert!(!sim.client().is_closed());
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
    let (now, server) = (sim.now(), sim.net.server_addr);
    sim.net
        .client
        .handle_unreachable(now, server, Unreachable::Host);
    assert!(sim.client().is_established());
}
