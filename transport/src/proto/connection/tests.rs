//! A misbehaving peer: frames that break the rules are injected straight into an
//! established connection's frame handler (as if they had arrived in a valid packet),
//! and both sides must end up reporting the right transport error.

use std::sync::Arc;
use std::time::Duration;

use quill_crypto::hostkey::HostKeyPair;
use zeroize::Zeroizing;

use super::*;
use crate::proto::config::{HostKeyPolicy, Login};
use crate::sim::{ClientApp, LinkConfig, ServerApp, Sim};
use crate::wire::Frame;

fn established() -> Sim<ClientApp, ServerApp> {
    let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
    let client = ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new("pw".into()),
        },
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    );
    let server = ServerConfig::new(key);
    let mut sim = Sim::new(
        9,
        client,
        server,
        LinkConfig::default(),
        LinkConfig::default(),
        ClientApp::new(0, 0),
        ServerApp::accept_all(),
    );
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.client_app.connected && s.server.as_ref().is_some_and(|c| c.is_established())
    }));
    sim
}

/// Feeds `frame` to the server as if the client had sent it; returns the code the
/// server closed with, after checking the client heard the same code.
fn server_rejects(frame: Frame<'_>) -> u64 {
    let mut sim = established();
    let now = sim.now;
    let server = sim.server.as_mut().unwrap();
    let err = server
        .handle_frame(now, Space::Data, frame)
        .expect_err("the frame must be rejected");
    server.close_for(err);
    let code = match server.error() {
        Some(ConnectionError::Transport(t)) => t.code,
        other => panic!("unexpected server error {other:?}"),
    };
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.lost.is_some()));
    match &sim.client_app.lost {
        Some(ConnectionError::ClosedByPeer {
            code: c,
            app: false,
            ..
        }) => assert_eq!(*c, code),
        other => panic!("client saw {other:?}"),
    }
    code
}

#[test]
fn opening_beyond_the_stream_limit_is_stream_limit_error() {
    // Client-initiated bidirectional stream number 1000 (limit is 100).
    let id = StreamId::new(Side::Client, Dir::Bi, 1000).0;
    let frame = Frame::Stream {
        id,
        offset: 0,
        data: b"x",
        fin: false,
    };
    assert_eq!(server_rejects(frame), code::STREAM_LIMIT_ERROR);
}

#[test]
fn data_beyond_the_window_is_flow_control_error() {
    let id = StreamId::new(Side::Client, Dir::Uni, 0).0;
    let frame = Frame::Stream {
        id,
        offset: 64 << 20,
        data: b"x",
        fin: false,
    };
    assert_eq!(server_rejects(frame), code::FLOW_CONTROL_ERROR);
}

#[test]
fn sending_on_the_servers_unidirectional_stream_is_stream_state_error() {
    let id = StreamId::new(Side::Server, Dir::Uni, 0).0;
    let frame = Frame::Stream {
        id,
        offset: 0,
        data: b"x",
        fin: false,
    };
    assert_eq!(server_rejects(frame), 0x5);
}

#[test]
fn handshake_done_from_a_client_is_a_protocol_violation() {
    assert_eq!(
        server_rejects(Frame::HandshakeDone),
        code::PROTOCOL_VIOLATION
    );
}

#[test]
fn crypto_data_far_ahead_is_crypto_buffer_exceeded() {
    let frame = Frame::Crypto {
        offset: 1 << 20,
        data: b"x",
    };
    assert_eq!(server_rejects(frame), code::CRYPTO_BUFFER_EXCEEDED);
}

#[test]
fn oversized_datagram_is_a_protocol_violation() {
    let big = vec![0u8; 4000];
    assert_eq!(
        server_rejects(Frame::Datagram { data: &big }),
        code::PROTOCOL_VIOLATION
    );
}

#[test]
fn too_many_max_streams_is_an_error() {
    let frame = Frame::MaxStreams {
        bidi: true,
        max: (1 << 60) + 1,
    };
    let mut sim = established();
    let now = sim.now;
    let server = sim.server.as_mut().unwrap();
    assert!(server.handle_frame(now, Space::Data, frame).is_err());
}

#[test]
fn ack_of_an_unsent_packet_is_a_protocol_violation() {
    let mut sim = established();
    let now = sim.now;
    let server = sim.server.as_mut().unwrap();
    let err = server
        .on_ack_frame(
            now,
            Space::Data,
            std::iter::once(1_000_000..=1_000_000),
            Duration::ZERO,
        )
        .unwrap_err();
    assert!(matches!(err, ConnectionError::Transport(t) if t.code == code::PROTOCOL_VIOLATION));
}

#[test]
fn spurious_timeouts_are_no_ops() {
    let mut sim = established();
    let before = sim.client.stats().clone();
    let now = sim.now;
    for _ in 0..100 {
        sim.client.handle_timeout(now);
    }
    assert_eq!(sim.client.stats().packets_sent, before.packets_sent);
    assert!(sim.client.is_established());
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let mut sim = established();
    let now = sim.now;
    let from = sim.client_addr;
    let server = sim.server.as_mut().unwrap();
    let mut seed = 0x1234_5678_u64;
    for len in [0usize, 1, 5, 21, 40, 1200, 1500] {
        let mut junk = vec![0u8; len];
        for b in junk.iter_mut() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 56) as u8;
        }
        server.handle_datagram(now, from, &mut junk);
    }
    assert!(
        server.is_established(),
        "junk must not close the connection"
    );
    assert!(server.stats().packets_dropped > 0);
}

#[test]
fn local_config_errors_say_what_to_do() {
    let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
    let mut client = ClientConfig::new(
        Login::Password {
            user: "a".into(),
            password: Zeroizing::new("b".into()),
        },
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    );
    let t = TransportConfig {
        keep_alive_interval: Some(Duration::from_secs(60)),
        ..TransportConfig::default()
    };
    client.transport = Arc::new(t);
    let addr = "127.0.0.1:1".parse().unwrap();
    let cid = ConnectionId::from_slice(&[1; 8]).unwrap();
    let err = Connection::client(client, Instant::now(), addr, cid, cid)
        .err()
        .unwrap();
    assert!(err.to_string().contains("keep-alive"), "{err}");
}

fn ncid(seq: u64, retire_prior_to: u64) -> Frame<'static> {
    Frame::NewConnectionId {
        seq,
        retire_prior_to,
        cid: ConnectionId::from_slice(&[seq as u8 + 0x60; 8]).unwrap(),
        reset_token: [seq as u8; 16],
    }
}

#[test]
fn more_connection_ids_than_the_limit_is_an_error() {
    // We advertise active_connection_id_limit = 4: the handshake CID plus 3 more.
    let mut sim = established();
    let now = sim.now;
    let server = sim.server.as_mut().unwrap();
    for seq in 1..=3 {
        server.handle_frame(now, Space::Data, ncid(seq, 0)).unwrap();
    }
    // A repeat of a known one is fine; a different CID under a known number is not.
    server.handle_frame(now, Space::Data, ncid(2, 0)).unwrap();
    let mut bad = ncid(2, 0);
    if let Frame::NewConnectionId { reset_token, .. } = &mut bad {
        reset_token[0] ^= 1;
    }
    assert!(server.handle_frame(now, Space::Data, bad).is_err());
    let err = server
        .handle_frame(now, Space::Data, ncid(4, 0))
        .unwrap_err();
    assert!(matches!(err, ConnectionError::Transport(t) if t.code == 0x09));
}

#[test]
fn retire_prior_to_moves_us_to_a_newer_connection_id() {
    let mut sim = established();
    let now = sim.now;
    let client = &mut sim.client;
    let before = client.remote_cid();
    client.handle_frame(now, Space::Data, ncid(1, 0)).unwrap();
    client.handle_frame(now, Space::Data, ncid(2, 2)).unwrap();
    assert_eq!(client.remote_cid().as_ref(), &[0x62; 8]);
    assert_ne!(client.remote_cid(), before);
    // Both older IDs are retired (the injected IDs were never really issued by the
    // simulated server, so the frames are not sent on; the endpoint test covers the
    // full exchange).
    assert_eq!(
        client
            .cids
            .retire_pending
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[test]
fn retiring_a_connection_id_never_issued_is_a_protocol_violation() {
    assert_eq!(
        server_rejects(Frame::RetireConnectionId { seq: 99 }),
        code::PROTOCOL_VIOLATION
    );
}

#[test]
fn an_idle_logged_in_server_keeps_no_crypto_streams() {
    let mut sim = established();
    // Until LoginAccepted is acknowledged and the handshake spaces are discarded.
    let freed = |s: &Sim<ClientApp, ServerApp>| {
        s.server
            .as_ref()
            .is_some_and(|c| c.spaces.iter().all(|sp| sp.crypto.is_none()))
    };
    sim.run_until(Duration::from_secs(1), |s| freed(s));
    let server = sim.server.as_ref().unwrap();
    assert!(server.is_established(), "{:?}", server.error());
    for space in [Space::Initial, Space::Handshake, Space::Data] {
        assert!(
            server.spaces[space as usize].crypto.is_none(),
            "{space:?} still holds a CRYPTO stream"
        );
    }
    // A stray application-space CRYPTO frame afterwards still fails the handshake.
    assert_eq!(
        server_rejects(Frame::Crypto {
            offset: 0,
            data: &[1, 0, 0, 1, 0]
        }),
        code::PROTOCOL_VIOLATION
    );
}

/// A refusal held back with `refuse_login_at` leaves when its timer fires, not before,
/// and in time for the client: never later than half the idle timeout.
#[test]
fn a_held_refusal_is_answered_when_its_timer_fires() {
    let (lost, after) = held_refusal(Duration::from_secs(30), Duration::from_secs(4));
    assert!(after >= Duration::from_secs(4), "answered after {after:?}");
    assert!(
        matches!(lost, Some(ConnectionError::LoginRefused { ref reason }) if reason == "login refused"),
        "{lost:?}"
    );
    // With a 1 s idle timeout a 4 s hold would lose the client: it is cut to 0.5 s.
    let (lost, after) = held_refusal(Duration::from_secs(1), Duration::from_secs(4));
    assert!(
        matches!(lost, Some(ConnectionError::LoginRefused { .. })),
        "{lost:?} after {after:?}"
    );
    assert!(
        after >= Duration::from_millis(500),
        "answered after {after:?}"
    );
}

/// A client logging in to a server that refuses and holds the refusal for `hold`;
/// how the client's connection ended, and when (virtual time).
fn held_refusal(idle: Duration, hold: Duration) -> (Option<ConnectionError>, Duration) {
    let key = Arc::new(HostKeyPair::from_seed(&[4; 32]).unwrap());
    let transport = Arc::new(TransportConfig {
        idle_timeout: idle,
        ..TransportConfig::default()
    });
    let mut client = ClientConfig::new(
        Login::Password {
            user: "mallory".into(),
            password: Zeroizing::new("guess".into()),
        },
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    );
    client.transport = transport.clone();
    let mut server = ServerConfig::new(key);
    server.transport = transport;
    let mut server_app = ServerApp::new(Box::new(|_: &crate::proto::LoginRequest| {
        Err("login refused".to_owned())
    }));
    server_app.refusal_hold = hold;
    let mut sim = Sim::new(
        11,
        client,
        server,
        LinkConfig::default(),
        LinkConfig::default(),
        ClientApp::new(0, 0),
        server_app,
    );
    let start = sim.now;
    assert!(sim.run_until(Duration::from_secs(20), |s| s.client_app.lost.is_some()));
    assert!(!sim.client_app.connected);
    (sim.client_app.lost.take(), sim.now - start)
}
