//! A misbehaving peer: frames that break the rules are injected straight into an
//! established connection's frame handler (as if they had arrived in a valid packet),
//! and both sides must end up reporting the right transport error.

use std::sync::Arc;
use std::time::Duration;

use quill_crypto::hostkey::HostKeyPair;
use zeroize::Zeroizing;

use super::*;
use crate::proto::config::{HostKeyPolicy, Login};
use crate::proto::recovery::{minimum_window, persistent_congestion_threshold, RttEstimator};
use crate::sim::{ClientApp, ServerApp, Sim};
use crate::wire::{Frame, TransportErrorCode};

fn established() -> Sim<ClientApp, ServerApp> {
    run_until_established(new_sim())
}

/// Runs `sim` until both sides report the connection established.
fn run_until_established(mut sim: Sim<ClientApp, ServerApp>) -> Sim<ClientApp, ServerApp> {
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.client_app.connected && s.server().is_some_and(|c| c.is_established())
    }));
    sim
}

/// Runs `f` on the server side of a freshly established connection, at the
/// simulation's current time.
fn with_established_server<R>(f: impl FnOnce(Instant, &mut Connection) -> R) -> R {
    let mut sim = established();
    let now = sim.now();
    f(now, sim.server().unwrap())
}

/// A client and server that have exchanged nothing yet.
fn new_sim() -> Sim<ClientApp, ServerApp> {
    new_sim_tuned(|_| {})
}

/// [`new_sim`] with the server's transport config adjusted by `tune`.
fn new_sim_tuned(tune: impl FnOnce(&mut TransportConfig)) -> Sim<ClientApp, ServerApp> {
    let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
    let client = ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new("pw".into()),
        },
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    );
    let mut server = ServerConfig::new(key);
    let mut transport = (*server.transport).clone();
    tune(&mut transport);
    server.transport = Arc::new(transport);
    Sim::over_default_links(
        9,
        client,
        server,
        ClientApp::new(0, 0),
        ServerApp::accept_all(),
    )
}

/// Feeds `frame` to the server as if the client had sent it; returns the code the
/// server closed with, after checking the client heard the same code.
fn server_rejects(frame: Frame<'_>) -> TransportErrorCode {
    let mut sim = established();
    let now = sim.now();
    let server = sim.server().unwrap();
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
        }) => assert_eq!(*c, code.0),
        other => panic!("client saw {other:?}"),
    }
    code
}

/// The transport error code `result` failed with.
fn error_code<T: std::fmt::Debug>(result: Result<T, ConnectionError>) -> TransportErrorCode {
    match result {
        Err(ConnectionError::Transport(t)) => t.code,
        other => panic!("expected a transport error, got {other:?}"),
    }
}

/// A STREAM frame with one byte at `offset` on stream number `n` of `(side, dir)`.
fn one_byte(side: Side, dir: Dir, n: u64, offset: u64) -> Frame<'static> {
    Frame::Stream {
        id: StreamId::new(side, dir, n).0,
        offset,
        data: b"x",
        fin: false,
    }
}

#[test]
fn opening_beyond_the_stream_limit_is_stream_limit_error() {
    // Client-initiated bidirectional stream number 1000 (limit is 100).
    assert_eq!(
        server_rejects(one_byte(Side::Client, Dir::Bi, 1000, 0)),
        TransportErrorCode::STREAM_LIMIT_ERROR
    );
}

#[test]
fn data_beyond_the_window_is_flow_control_error() {
    assert_eq!(
        server_rejects(one_byte(Side::Client, Dir::Uni, 0, 64 << 20)),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
}

#[test]
fn sending_on_the_servers_unidirectional_stream_is_stream_state_error() {
    assert_eq!(
        server_rejects(one_byte(Side::Server, Dir::Uni, 0, 0)),
        TransportErrorCode::STREAM_STATE_ERROR
    );
}

#[test]
fn handshake_done_from_a_client_is_a_protocol_violation() {
    assert_eq!(
        server_rejects(Frame::HandshakeDone),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn crypto_data_far_ahead_is_crypto_buffer_exceeded() {
    let frame = Frame::Crypto {
        offset: 1 << 20,
        data: b"x",
    };
    assert_eq!(
        server_rejects(frame),
        TransportErrorCode::CRYPTO_BUFFER_EXCEEDED
    );
}

#[test]
fn oversized_datagram_is_a_protocol_violation() {
    let big = vec![0u8; 4000];
    assert_eq!(
        server_rejects(Frame::Datagram { data: &big }),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn ack_of_an_unsent_packet_is_a_protocol_violation() {
    let result = with_established_server(|now, server| {
        server.on_ack_frame(
            now,
            Space::Data,
            std::iter::once(1_000_000..=1_000_000),
            Duration::ZERO,
        )
    });
    assert_eq!(error_code(result), TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn spurious_timeouts_are_no_ops() {
    let mut sim = established();
    let before = sim.client().stats().clone();
    let now = sim.now();
    for _ in 0..100 {
        sim.client().handle_timeout(now);
    }
    assert_eq!(sim.client().stats().packets_sent, before.packets_sent);
    assert!(sim.client().is_established());
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let mut sim = established();
    let now = sim.now();
    let from = sim.net.client_addr;
    let server = sim.server().unwrap();
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

/// Forgets the connection IDs the peer's endpoint issued after the handshake (as if
/// its NEW_CONNECTION_ID frames had not arrived yet), so that a test can inject its
/// own under the same sequence numbers.
fn forget_spare_peer_cids(c: &mut Connection) {
    assert_eq!(
        c.cids.remote_seq, 0,
        "still on the handshake's connection ID"
    );
    c.cids.remote.retain(|&seq, _| seq == 0);
}

#[test]
fn more_connection_ids_than_the_limit_is_an_error() {
    // We advertise active_connection_id_limit = 4: the handshake CID plus 3 more.
    with_established_server(|now, server| {
        forget_spare_peer_cids(server);
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
        let result = server.handle_frame(now, Space::Data, ncid(4, 0));
        assert_eq!(
            error_code(result),
            TransportErrorCode::CONNECTION_ID_LIMIT_ERROR
        );
    });
}

#[test]
fn retire_prior_to_moves_us_to_a_newer_connection_id() {
    let mut sim = established();
    let now = sim.now();
    let client = sim.client();
    forget_spare_peer_cids(client);
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
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn an_idle_logged_in_server_keeps_no_crypto_streams() {
    let mut sim = established();
    // Until LoginAccepted is acknowledged and the handshake spaces are discarded.
    let freed = |s: &mut Sim<ClientApp, ServerApp>| {
        s.server()
            .is_some_and(|c| c.spaces.iter().all(|sp| sp.crypto.is_none()))
    };
    sim.run_until(Duration::from_secs(1), |s| freed(s));
    let server = sim.server().unwrap();
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
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn stream_data_blocked_for_a_send_only_stream_is_stream_state_error() {
    // RFC 9000 §19.13: "An endpoint that receives a STREAM_DATA_BLOCKED frame for a
    // send-only stream MUST terminate the connection with error STREAM_STATE_ERROR."
    // The server's own unidirectional stream is send-only for the server.
    let frame = Frame::StreamDataBlocked {
        id: StreamId::new(Side::Server, Dir::Uni, 0).0,
        limit: 0,
    };
    assert_eq!(
        server_rejects(frame),
        TransportErrorCode::STREAM_STATE_ERROR
    );
}

#[test]
fn blocked_frames_within_the_rules_are_accepted() {
    let frames = [
        Frame::DataBlocked(0),
        Frame::StreamDataBlocked {
            id: StreamId::new(Side::Client, Dir::Bi, 0).0,
            limit: 0,
        },
        Frame::StreamsBlocked {
            bidi: false,
            limit: 0,
        },
    ];
    with_established_server(|now, server| {
        for frame in frames {
            server.handle_frame(now, Space::Data, frame).unwrap();
        }
        assert!(server.is_established());
    });
}

/// Seals raw frame bytes in the client's next packet of `space`, hands it to the
/// server endpoint (an Initial padded to 1200 bytes: it may create the server
/// session) and returns the transport error code the server closed with.
fn server_closes_on(
    sim: &mut Sim<ClientApp, ServerApp>,
    space: Space,
    payload: &[u8],
) -> TransportErrorCode {
    let now = sim.now();
    let from = sim.net.client_addr;
    let mut buf = vec![0u8; 1500];
    let min_len = if space == Space::Initial { 1200 } else { 0 };
    let n = sim
        .client()
        .seal_raw(space, payload, &mut buf, min_len)
        .expect("the client has keys for the space");
    let created = sim.net.server.handle_datagram(now, from, &mut buf[..n]);
    let handle = created.or(sim.server_handle()).expect("a server session");
    let server = sim.net.server.connection(handle).expect("a server session");
    match server.error() {
        Some(ConnectionError::Transport(t)) => t.code,
        other => panic!("the server did not close with a transport error: {other:?}"),
    }
}

#[test]
fn each_frame_decode_error_closes_with_the_wire_layers_code() {
    // RFC 9000 §12.4 and §20.1. Payloads are at least 4 bytes so that no PADDING
    // is appended to complete a truncated frame.
    let cases: [(&[u8], TransportErrorCode); 5] = [
        // "An endpoint MUST treat the receipt of a frame of unknown type as a
        // connection error of type FRAME_ENCODING_ERROR."
        (
            &[0x01, 0x01, 0x01, 0x21],
            TransportErrorCode::FRAME_ENCODING_ERROR,
        ),
        // PING (0x01) as a two-byte varint: "a frame type that uses a longer
        // encoding than necessary" is a PROTOCOL_VIOLATION.
        (
            &[0x01, 0x01, 0x40, 0x01],
            TransportErrorCode::PROTOCOL_VIOLATION,
        ),
        // MAX_DATA cut off before its value: badly formatted.
        (
            &[0x01, 0x01, 0x01, 0x10],
            TransportErrorCode::FRAME_ENCODING_ERROR,
        ),
        // STREAMS_BLOCKED above 2^60 (§19.14).
        (
            &[0x16, 0xd0, 0, 0, 0, 0, 0, 0, 1],
            TransportErrorCode::FRAME_ENCODING_ERROR,
        ),
        // MAX_STREAMS above 2^60 (§19.11).
        (
            &[0x12, 0xd0, 0, 0, 0, 0, 0, 0, 1],
            TransportErrorCode::FRAME_ENCODING_ERROR,
        ),
    ];
    for (payload, want) in cases {
        let mut sim = established();
        assert_eq!(
            server_closes_on(&mut sim, Space::Data, payload),
            want,
            "payload {payload:02x?}"
        );
    }
}

#[test]
fn a_packet_without_frames_is_a_protocol_violation() {
    // RFC 9000 §12.4: "An endpoint MUST treat receipt of a packet containing no
    // frames as a connection error of type PROTOCOL_VIOLATION." Only a four-byte
    // packet number leaves room for the header-protection sample without padding:
    // jump far ahead of what the server acknowledged to get one.
    let mut sim = established();
    sim.client().spaces[Space::Data as usize].next_pn += 1 << 24;
    assert_eq!(
        server_closes_on(&mut sim, Space::Data, &[]),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn the_close_names_the_frame_that_triggered_the_error() {
    // RFC 9000 §19.19: Frame Type is "the type of frame that triggered the error".
    // STREAM_DATA_BLOCKED (0x15) for the server's own send-only stream 3.
    let mut sim = established();
    assert_eq!(
        server_closes_on(&mut sim, Space::Data, &[0x15, 0x03, 0x00, 0x01]),
        TransportErrorCode::STREAM_STATE_ERROR
    );
    let handle = sim.server_handle().expect("a server session");
    let server = sim.net.server.connection(handle).expect("a server session");
    let close = server.close.as_ref().expect("a CONNECTION_CLOSE to send");
    assert_eq!(close.frame_type, Some(0x15));
}

#[test]
fn a_frame_not_allowed_in_its_packet_type_is_a_protocol_violation() {
    // RFC 9000 §12.4: "An endpoint MUST treat receipt of a frame in a packet type
    // that is not permitted as a connection error of type PROTOCOL_VIOLATION."
    let mut sim = new_sim();
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.client().spaces[Space::Handshake as usize].keys.is_some()
    }));
    // MAX_DATA in a Handshake packet.
    assert_eq!(
        server_closes_on(&mut sim, Space::Handshake, &[0x10, 0x05, 0x01, 0x01]),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn bad_client_transport_parameters_are_transport_parameter_error() {
    use crate::proto::handshake::messages::{ClientHello, Message};
    use crate::wire::{Writer, QUILL_VERSION};
    // RFC 9000 §7.4 and §20.1 TRANSPORT_PARAMETER_ERROR: "An endpoint received
    // transport parameters that were badly formatted, included an invalid value, ...".
    let bad_params: [&[u8]; 2] = [
        // initial_max_data whose length runs past the end.
        &[0x04, 0x05, 0x01],
        // initial_max_data twice (RFC 9000 §7.4: duplicates are an error).
        &[0x04, 0x01, 0x05, 0x04, 0x01, 0x06],
    ];
    for params in bad_params {
        let mut sim = new_sim();
        let config = ServerConfig::new(Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap()));
        let hello = Message::ClientHello(ClientHello {
            version: QUILL_VERSION,
            random: [7; 32],
            suites: vec![config.suites[0].codepoint()],
            key_share: vec![0; 32],
            transport_params: params.to_vec(),
            server_name: Vec::new(),
        });
        let mut msg = Vec::new();
        hello.encode(&mut msg);
        let mut payload = vec![0u8; msg.len() + 16];
        let mut w = Writer::new(&mut payload);
        Frame::Crypto {
            offset: 0,
            data: &msg,
        }
        .encode(&mut w);
        let len = w.len();
        payload.truncate(len);
        // Nothing has been sent yet: this Initial creates the server session.
        assert_eq!(
            server_closes_on(&mut sim, Space::Initial, &payload),
            TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
            "params {params:02x?}"
        );
    }
}

// ------------------------------------------------ persistent congestion

/// An established connection with nothing in flight.
fn quiet() -> Sim<ClientApp, ServerApp> {
    let mut sim = established();
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.client().bytes_in_flight == 0 && !s.client().mtu_probe_pending
    }));
    sim
}

/// Has the client send a PING at `at` (never delivered); returns its packet number.
fn ping_at(c: &mut Connection, at: Instant) -> u64 {
    c.ping(at).expect("connected");
    let mut buf = vec![0u8; 1500];
    for _ in 0..8 {
        if c.poll_transmit(at, &mut buf).is_none() {
            break;
        }
    }
    assert!(!c.pings.waiting(), "the PING was sent");
    c.spaces[Space::Data as usize].sent.largest_sent().unwrap()
}

/// The client sends PINGs at `t1`, `t1 + 1 ms`, `t1 + span` and `t1 + span + 300 ms`
/// (span well beyond the persistent congestion duration); then an ACK for the last
/// one and, if `ack_second`, for the second. Returns the congestion window after,
/// and the minimum window it would collapse to.
fn window_after_losses(sim: &mut Sim<ClientApp, ServerApp>, ack_second: bool) -> (u64, u64) {
    let t1 = sim.now() + Duration::from_millis(10);
    let c = sim.client();
    let threshold = persistent_congestion_threshold(&c.rtt, c.peer_max_ack_delay());
    let span = threshold * 2 + Duration::from_millis(100);
    let p1 = ping_at(c, t1);
    let p2 = ping_at(c, t1 + Duration::from_millis(1));
    let p3 = ping_at(c, t1 + span);
    let p4 = ping_at(c, t1 + span + Duration::from_millis(300));
    assert!(p1 < p2 && p2 < p3 && p3 < p4);
    let events = c.stats.congestion_events;
    let ack_at = t1 + span + Duration::from_millis(301);
    let mut ranges = vec![p4..=p4];
    if ack_second {
        ranges.push(p2..=p2);
    }
    c.on_ack_frame(ack_at, Space::Data, ranges.into_iter(), Duration::ZERO)
        .unwrap();
    assert_eq!(
        c.stats.congestion_events,
        events + 1,
        "the losses were seen"
    );
    assert!(
        persistent_congestion_threshold(&c.rtt, c.peer_max_ack_delay()) < span,
        "the lost packets span more than the persistent congestion duration"
    );
    (c.congestion_window(), minimum_window(c.mtu))
}

#[test]
fn losses_spanning_the_duration_are_persistent_congestion() {
    // RFC 9002 §7.6.2: the window "MUST be reduced to the minimum congestion window".
    let (window, minimum) = window_after_losses(&mut quiet(), false);
    assert_eq!(window, minimum);
}

#[test]
fn an_acknowledgement_between_the_losses_is_no_persistent_congestion() {
    // RFC 9002 §7.6.2: "across all packet number spaces, none of the packets sent
    // between the send times of these two packets are acknowledged".
    let (window, minimum) = window_after_losses(&mut quiet(), true);
    assert!(window > minimum, "window {window} collapsed");
}

#[test]
fn losses_before_the_first_rtt_sample_are_no_persistent_congestion() {
    // RFC 9002 §7.6.2: "a prior RTT sample existed when these two packets were
    // sent". As after a path change, the estimator starts over.
    let mut sim = quiet();
    let c = sim.client();
    c.rtt = RttEstimator::new(c.config.initial_rtt);
    c.first_rtt_sample = None;
    let (window, minimum) = window_after_losses(&mut sim, false);
    assert!(window > minimum, "window {window} collapsed");
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
    let mut sim = Sim::over_default_links(11, client, server, ClientApp::new(0, 0), server_app);
    let start = sim.now();
    assert!(sim.run_until(Duration::from_secs(20), |s| s.client_app.lost.is_some()));
    assert!(!sim.client_app.connected);
    (sim.client_app.lost.take(), sim.now() - start)
}

/// A server that grants huge windows and never acknowledges anything (nothing it
/// sends reaches the client once the connection is up): the client accepts writes
/// only up to its connection-wide send cap, however many streams it writes on,
/// and in-flight bytes count until acknowledged.
#[test]
fn a_peer_that_never_acknowledges_cannot_make_us_buffer_beyond_the_send_cap() {
    const TIB: u64 = 1 << 40;
    let mut sim = run_until_established(new_sim_tuned(|t| {
        t.streams.stream_receive_window = TIB;
        t.streams.max_stream_receive_window = TIB;
        t.streams.receive_window = TIB;
        t.streams.max_receive_window = TIB;
    }));
    let cfg = crate::proto::StreamsConfig::default();
    let ids: Vec<StreamId> = std::iter::from_fn(|| sim.client().open_stream(Dir::Uni))
        .take(100)
        .collect();
    assert_eq!(ids.len(), 100);
    // Shared storage: without the cap this would take 100 × 16 MiB by reference.
    let data = Bytes::from(vec![7u8; cfg.send_buffer as usize]);
    let mut now = sim.now();
    let mut buf = vec![0u8; 65536];
    let mut accepted = 0u64;
    for _round in 0..3 {
        for &id in &ids {
            match sim.client().write_bytes(id, data.clone()) {
                Ok(n) => accepted += n as u64,
                Err(WriteError::Blocked) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        // Everything the client sends is dropped; its probe timer fires.
        let mut sent = 0;
        while sim.client().poll_transmit(now, &mut buf).is_some() {
            sent += 1;
            assert!(sent < 100_000, "client never stopped transmitting");
        }
        if let Some(t) = sim.client().poll_timeout() {
            now = now.max(t);
            sim.client().handle_timeout(now);
        }
        assert!(sim.client().buffer_sizes().send_buffered <= cfg.max_connection_send_buffer);
    }
    assert!(sim.client().error().is_none(), "{:?}", sim.client().error());
    assert_eq!(accepted, cfg.max_connection_send_buffer);
    assert_eq!(
        sim.client().buffer_sizes().send_buffered,
        cfg.max_connection_send_buffer
    );
}

/// RFC 9001 §5.7: a QUIC v1 server keeps 1-RTT packets that arrive before its TLS
/// handshake is complete, at most [`MAX_EARLY_ONE_RTT`] of them (memory per half-open
/// connection stays bounded); the rest are dropped and the client sends them again.
/// A QUIC v1 (ALPN `hq-interop`) client and server with `app` on the client.
fn v1_sim(app: ClientApp) -> Sim<ClientApp, ServerApp> {
    let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
    let alpn = vec![b"hq-interop".to_vec()];
    let mut client = ClientConfig::new(
        Login::Password {
            user: "unused".into(),
            password: Zeroizing::new(String::new()),
        },
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    );
    client.version = Version::QuicV1 { alpn: alpn.clone() };
    let mut server = ServerConfig::new(key.clone());
    server.quic_v1 = Some(crate::proto::QuicV1Server::with_host_key(key, alpn).unwrap());
    Sim::over_default_links(9, client, server, app, ServerApp::accept_all())
}

/// ALPN `quill`: a client that resets stream 0 before its whole login message
/// arrived gets a PROTOCOL_VIOLATION naming it at once, not a wait until the
/// handshake timeout. (The client's first flight, with the login, is lost; the
/// client then resets the stream, so the server sees only RESET_STREAM there.)
#[test]
fn a_login_stream_reset_before_the_login_is_a_protocol_violation() {
    let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
    let alpn = vec![b"quill".to_vec()];
    let mut client = ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new("pw".into()),
        },
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    );
    client.version = Version::QuicV1 { alpn: alpn.clone() };
    let mut server = ServerConfig::new(key.clone());
    server.quic_v1 = Some(crate::proto::QuicV1Server::with_host_key(key, alpn).unwrap());
    let mut sim = Sim::over_default_links(
        9,
        client,
        server,
        ClientApp::new(0, 0),
        ServerApp::accept_all(),
    );
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client().alpn().is_some()));
    sim.net.c2s.black_hole = true;
    sim.net.transmit();
    sim.net.c2s.black_hole = false;
    sim.client().streams.reset(StreamId(0), 7).unwrap();
    let start = sim.now();
    assert!(sim.run_until(Duration::from_secs(60), |s| s.client_app.lost.is_some()));
    match sim.client_app.lost.clone().unwrap() {
        ConnectionError::ClosedByPeer { code, app, reason } => {
            assert!(!app);
            assert_eq!(
                TransportErrorCode(code),
                TransportErrorCode::PROTOCOL_VIOLATION
            );
            assert!(reason.contains("login stream was reset"), "{reason}");
        }
        other => panic!("expected the server's PROTOCOL_VIOLATION, got {other}"),
    }
    // Well before the handshake timeout: the server did not wait it out.
    let waited = sim.now() - start;
    let timeout = TransportConfig::default().handshake_timeout;
    assert!(waited < timeout / 2, "closed after {waited:?}");
}

#[test]
fn a_v1_server_keeps_a_bounded_number_of_early_one_rtt_packets() {
    let mut sim = v1_sim(ClientApp::new(200_000, 1));
    // The client has just processed the server's flight; its Finished is lost.
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client().alpn().is_some()));
    sim.net.c2s.black_hole = true;
    sim.net.transmit();
    sim.net.c2s.black_hole = false;
    let mut most = 0;
    for _ in 0..40 {
        sim.step();
        if let Some(s) = sim.server() {
            assert!(s.early_one_rtt.len() <= MAX_EARLY_ONE_RTT);
            most = most.max(s.early_one_rtt.len());
        }
    }
    assert_eq!(
        most, MAX_EARLY_ONE_RTT,
        "the first request flight was not kept"
    );
    assert!(sim.run_until(Duration::from_secs(60), |s| {
        s.client_app.done_sending() && s.server().is_some_and(|c| c.is_established())
    }));
    assert!(sim.server().unwrap().early_one_rtt.is_empty());
}

/// Found by quinn in the interop runner's handshakeloss case: its retransmitted
/// Finished came with an ACK after the CRYPTO frame, in the same Handshake packet. The
/// Finished completes a QUIC v1 server's handshake, which discards the Handshake space
/// at once; the ACK that follows must be ignored, not judged against an empty record
/// ("ACK for a packet number never sent"). The same holds for quill's own version once
/// the login is accepted.
#[test]
fn frames_after_the_one_that_discarded_their_space_are_ignored() {
    // An ACK of Handshake packets 0..=3 once the server discarded that space.
    let ack_in_discarded_space = |sim: &mut Sim<ClientApp, ServerApp>| {
        let now = sim.now();
        let server = sim.server().unwrap();
        assert!(server.spaces[Space::Handshake as usize].discarded);
        server.on_ack_frame(
            now,
            Space::Handshake,
            std::iter::once(0..=3),
            Duration::ZERO,
        )
    };
    let mut v1 = v1_sim(ClientApp::new(0, 0));
    assert!(v1.run_until(Duration::from_secs(5), |s| {
        s.server().is_some_and(|c| c.is_established())
    }));
    ack_in_discarded_space(&mut v1).unwrap();
    let now = v1.now();
    let crypto = Frame::Crypto {
        offset: 0,
        data: &[20, 0, 0, 1, 0],
    };
    v1.server()
        .unwrap()
        .handle_frame(now, Space::Handshake, crypto)
        .unwrap();
    // quill's own version, once the login is accepted.
    ack_in_discarded_space(&mut established()).unwrap();
}

/// Found by quiche in the interop suite's connectionmigration: it validates a path
/// only on datagrams of at least 1200 bytes. RFC 9000 §8.2.1 and §8.2.2 ask for that
/// expansion of every datagram carrying PATH_CHALLENGE or PATH_RESPONSE: a migrating
/// client's challenge, and an answer to a challenge.
#[test]
fn path_challenge_and_response_datagrams_are_expanded_to_1200_bytes() {
    let mut sim = v1_sim(ClientApp::new(0, 0));
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.server().is_some_and(|c| c.is_established())
    }));
    // HANDSHAKE_DONE arrives, the handshake is confirmed, spare CIDs are issued.
    sim.run_until(Duration::from_millis(500), |_| false);
    let now = sim.now();
    let mut buf = vec![0u8; 2048];
    assert_eq!(sim.client().migrate(), Ok(true));
    let t = sim
        .client()
        .poll_transmit(now, &mut buf)
        .expect("the challenge goes out");
    assert!(t.size >= 1200, "PATH_CHALLENGE in {} bytes", t.size);
    let server = sim.server().unwrap();
    server
        .handle_frame(now, Space::Data, Frame::PathChallenge([7; 8]))
        .unwrap();
    let t = server
        .poll_transmit(now, &mut buf)
        .expect("the response goes out");
    assert!(t.size >= 1200, "PATH_RESPONSE in {} bytes", t.size);
}

/// An ACK_FREQUENCY frame as the client would send it.
fn ack_frequency(seq: u64, threshold: u64, delay_us: u64, reorder: u64) -> Frame<'static> {
    Frame::AckFrequency(crate::wire::AckFrequency {
        seq,
        ack_eliciting_threshold: threshold,
        request_max_ack_delay_us: delay_us,
        reordering_threshold: reorder,
    })
}

#[test]
fn ack_frequency_below_our_min_ack_delay_is_a_protocol_violation() {
    // We advertise min_ack_delay = 1000 µs (draft-ietf-quic-ack-frequency §4).
    assert_eq!(
        server_rejects(ack_frequency(0, 9, 999, 1)),
        TransportErrorCode::PROTOCOL_VIOLATION
    );
}

#[test]
fn ack_frequency_frames_without_min_ack_delay_are_a_protocol_violation() {
    for frame in [ack_frequency(0, 9, 5000, 1), Frame::ImmediateAck] {
        let mut sim = run_until_established(new_sim_tuned(|t| t.ack_frequency = false));
        let now = sim.now();
        let server = sim.server().unwrap();
        let err = server.handle_frame(now, Space::Data, frame).unwrap_err();
        assert_eq!(
            error_code::<()>(Err(err)),
            TransportErrorCode::PROTOCOL_VIOLATION
        );
    }
}

#[test]
fn ack_frequency_applies_the_newest_and_ignores_stale_sequence_numbers() {
    with_established_server(|now, server| {
        server
            .handle_frame(now, Space::Data, ack_frequency(5, 19, 4000, 0))
            .unwrap();
        let ack = &server.spaces[Space::Data as usize].ack;
        assert_eq!(ack.eliciting_limit, Some(20));
        assert_eq!(ack.max_delay, Some(Duration::from_micros(4000)));
        assert_eq!(ack.reordering, Some(0));
        // Sequence numbers 5 (repeated) and 3 (reordered) are older: ignored.
        for seq in [5, 3] {
            server
                .handle_frame(now, Space::Data, ack_frequency(seq, 1, 2000, 1))
                .unwrap();
            assert_eq!(
                server.spaces[Space::Data as usize].ack.eliciting_limit,
                Some(20)
            );
        }
        server
            .handle_frame(now, Space::Data, ack_frequency(6, 0, 2000, 3))
            .unwrap();
        let ack = &server.spaces[Space::Data as usize].ack;
        assert_eq!(ack.eliciting_limit, Some(1));
        assert_eq!(ack.reordering, Some(3));
        // A huge threshold and delay are held within bounds, not a panic.
        server
            .handle_frame(
                now,
                Space::Data,
                ack_frequency(7, u64::MAX >> 2, u64::MAX >> 2, 9),
            )
            .unwrap();
        let ack = &server.spaces[Space::Data as usize].ack;
        assert_eq!(ack.eliciting_limit, Some(u32::MAX));
        assert!(ack.max_delay.unwrap() < Duration::from_millis(1 << 14));
    });
}

#[test]
fn immediate_ack_makes_the_next_packet_carry_an_ack() {
    with_established_server(|now, server| {
        server
            .handle_frame(now, Space::Data, Frame::ImmediateAck)
            .unwrap();
        server.on_eliciting_received(now, Space::Data);
        assert!(server.spaces[Space::Data as usize].ack.wants_ack(now));
    });
}

#[test]
fn immediate_ack_is_not_allowed_in_zero_rtt() {
    assert!(!super::zero_rtt::allowed_in_zero_rtt(&Frame::ImmediateAck));
    assert!(!Frame::ImmediateAck.allowed_in(Space::Handshake));
    assert!(!ack_frequency(0, 1, 1000, 1).allowed_in(Space::Initial));
}
