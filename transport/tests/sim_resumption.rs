//! QUIC v1 session resumption and 0-RTT (RFC 9001 §4.6, RFC 9000 §7.4.1) in the
//! deterministic simulated network: a first connection gets a session ticket, a
//! second one made with a clone of the same client configuration resumes it, and
//! sends its stream data in 0-RTT packets when the ticket allows early data.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::sync::Arc;
use std::time::Duration;

use quill_transport::proto::{
    ConnectionError, QuicV1Server, ServerConfig, Sessions, TransportConfig, Version,
};
use quill_transport::sim::{ClientApp, LinkConfig, ServerApp, Sim};
use sim_setup::{host_key, setup, sim_of, Setup};

const ALPN: &[u8] = b"hq-interop";

/// QUIC v1 with ALPN `hq-interop`, the client keeping session tickets in memory;
/// the server accepts 0-RTT if `early`.
fn resumption_setup(seed: u64, early: bool) -> Setup {
    let mut s = setup(seed, TransportConfig::default());
    s.client.version = Version::QuicV1 {
        alpn: vec![ALPN.to_vec()],
    };
    s.client.sessions = Some(Sessions::in_memory(8));
    s.client.early_data = true;
    let v1 = QuicV1Server::with_host_key(host_key(7), vec![ALPN.to_vec()]).unwrap();
    s.server.quic_v1 = Some(if early {
        v1.with_early_data().unwrap()
    } else {
        v1
    });
    s
}

fn echo_server() -> ServerApp {
    let mut app = ServerApp::new(Box::new(|_| Err("QUIC v1 has no login".into())));
    app.echo = true;
    app
}

/// One connection of `client` to a server of `server` that echoes 20 kB on a
/// bidirectional stream, written before the handshake completes if `early`.
fn echo(seed: u64, client: &Setup, server: ServerConfig, early: bool) -> Sim<ClientApp, ServerApp> {
    echo_on(seed, client, server, early, LinkConfig::default())
}

/// [`echo`] over `link` both ways.
fn echo_on(
    seed: u64,
    client: &Setup,
    server: ServerConfig,
    early: bool,
    link: LinkConfig,
) -> Sim<ClientApp, ServerApp> {
    let s = Setup {
        client: client.client.clone(),
        server,
    };
    let mut app = ClientApp::new(20_000, 1);
    app.echo = true;
    app.early = early;
    let mut sim = sim_of(seed, s, link, app, echo_server());
    let done = sim.run_until(Duration::from_secs(60), |s| {
        s.client_app.sink.finished.len() == 1
    });
    assert!(
        done,
        "seed {seed}: echo not back: client {:?}, server {:?}",
        sim.client_app.events, sim.server_app.events
    );
    assert_eq!(sim.client_app.sent, sim.client_app.sink.finished);
    assert_eq!(sim.server_app.sink.bytes, 20_000);
    // Let the NewSessionTicket and the last acknowledgements arrive.
    sim.run_until(Duration::from_millis(300), |_| false);
    sim
}

/// The first connection is a full handshake and leaves a ticket; the second, with a
/// clone of the same client configuration, resumes it (both sides say so).
#[test]
fn v1_second_connection_resumes_the_session() {
    let s = resumption_setup(40, false);
    let mut first = echo(40, &s, s.server.clone(), false);
    assert!(!first.client().resumed());
    assert!(!first.server().unwrap().resumed());
    assert!(first.client().peer_host_key().is_some());

    let mut second = echo(41, &s, s.server.clone(), false);
    assert!(second.client().resumed());
    assert!(second.server().unwrap().resumed());
    // The ticket's server allows no early data: nothing went in 0-RTT.
    assert_eq!(second.client().stats().zero_rtt_packets, 0);
    assert!(!second.client().zero_rtt_accepted());

    // Without a session store, nothing is resumed.
    let mut fresh = resumption_setup(42, false);
    fresh.client.sessions = None;
    let _ = echo(42, &fresh, fresh.server.clone(), false);
    assert!(!echo(43, &fresh, fresh.server.clone(), false)
        .client()
        .resumed());
}

/// A server that accepts early data: the second connection sends its request in
/// 0-RTT packets, the server decrypts them and answers; the data is intact.
#[test]
fn v1_zero_rtt_accepted_carries_stream_data() {
    let s = resumption_setup(44, true);
    let first = echo(44, &s, s.server.clone(), false);
    drop(first);
    let mut second = echo(45, &s, s.server.clone(), true);
    let client = second.client();
    assert!(client.resumed());
    assert!(client.zero_rtt_accepted());
    assert!(client.stats().zero_rtt_packets > 0);
    let server = second.server().unwrap();
    assert!(server.zero_rtt_accepted());
    assert!(
        server.stats().zero_rtt_packets > 0,
        "the server decrypted no 0-RTT packet"
    );
}

/// The ticket allowed early data but the server now refuses it (the same session
/// store, early data off): the client's 0-RTT packets are dropped, it learns of the
/// refusal from the handshake, and sends the same stream data again in 1-RTT.
#[test]
fn v1_zero_rtt_rejected_is_sent_again_in_one_rtt() {
    let s = resumption_setup(46, true);
    let _ = echo(46, &s, s.server.clone(), false);
    let mut refusing = s.server.clone();
    let v1 = refusing.quic_v1.as_mut().unwrap();
    let mut tls = (*v1.tls).clone(); // shares the session store
    tls.max_early_data_size = 0;
    v1.tls = Arc::new(tls);
    let mut second = echo(47, &s, refusing, true);
    let client = second.client();
    assert!(client.resumed());
    assert!(!client.zero_rtt_accepted());
    assert!(client.stats().zero_rtt_packets > 0, "no 0-RTT was tried");
    let server = second.server().unwrap();
    assert!(!server.zero_rtt_accepted());
    assert_eq!(server.stats().zero_rtt_packets, 0);
}

/// The server refuses 0-RTT and now allows less per stream than the client wrote
/// early under the remembered limits (RFC 9000 §7.4.1 lets it lower them then). The
/// client cannot take the data back: it ends the connection itself with a reason
/// that says so, instead of sending beyond the new limit (which the server would
/// answer with FLOW_CONTROL_ERROR), and within a bounded time.
#[test]
fn v1_zero_rtt_rejected_with_lower_limits_ends_clearly() {
    let s = resumption_setup(48, true);
    let _ = echo(48, &s, s.server.clone(), false);
    let mut refusing = s.server.clone();
    let v1 = refusing.quic_v1.as_mut().unwrap();
    let mut tls = (*v1.tls).clone();
    tls.max_early_data_size = 0;
    v1.tls = Arc::new(tls);
    let mut transport = (*refusing.transport).clone();
    transport.streams.stream_receive_window = 4096;
    refusing.transport = Arc::new(transport);
    let setup = Setup {
        client: s.client.clone(),
        server: refusing,
    };
    let mut app = ClientApp::new(20_000, 1);
    app.echo = true;
    app.early = true;
    let mut sim = sim_of(49, setup, LinkConfig::default(), app, echo_server());
    let ended = sim.run_until(Duration::from_secs(10), |s| s.client_app.lost.is_some());
    assert!(ended, "client never ended: {:?}", sim.client_app.events);
    let lost = sim.client_app.lost.clone().unwrap();
    match &lost {
        ConnectionError::ClosedLocally { code: 0, reason } => assert!(
            reason.contains("0-RTT refused") && reason.contains("4096"),
            "unclear reason: {reason}"
        ),
        other => panic!("expected a local close naming the limit, got {other}"),
    }
    assert!(
        sim.client().stats().zero_rtt_packets > 0,
        "no 0-RTT was tried"
    );
    assert_eq!(
        sim.server_app.sink.bytes, 0,
        "data beyond the limit arrived"
    );
}

/// 0-RTT and the handshake under 20 % loss each way, several seeds: lost 0-RTT
/// packets are sent again (in 1-RTT once the client has its keys), the handshake
/// completes, and the data arrives intact. Seeds 52 and 57 stalled before the
/// handshake probes ignored application packets in flight (see below).
#[test]
fn v1_zero_rtt_survives_loss() {
    for seed in 50..70 {
        let s = resumption_setup(seed, true);
        let _ = echo(seed, &s, s.server.clone(), false);
        let link = LinkConfig {
            loss: 0.2,
            ..LinkConfig::default()
        };
        let mut second = echo_on(seed + 100, &s, s.server.clone(), true, link);
        let client = second.client();
        assert!(client.resumed(), "seed {seed}");
        assert!(client.stats().zero_rtt_packets > 0, "seed {seed}");
    }
}

/// Found by the test above, also without resumption: the client's Finished is lost
/// while its congestion window is full of 1-RTT packets that the server, still
/// handshaking, dropped (it keeps only four). Nothing acknowledges or declares
/// those lost before the handshake completes, application packets get no PTO
/// before confirmation (RFC 9002 §6.2.1), and the Finished's retransmission waited
/// for window that never came: the server timed out (seed 65 here). The client's
/// probes now ignore application packets in flight until the handshake is confirmed.
#[test]
fn v1_lost_finished_behind_a_full_window_is_probed() {
    for seed in 60..70 {
        let mut s = resumption_setup(seed, false);
        s.client.sessions = None;
        let _ = echo(seed, &s, s.server.clone(), false);
        let link = LinkConfig {
            loss: 0.2,
            ..LinkConfig::default()
        };
        let _ = echo_on(seed + 100, &s, s.server.clone(), false, link);
    }
}

/// Early data is replayable: a server offering ALPN `quill` (whose login must not
/// be replayed) refuses to accept it.
#[test]
fn v1_early_data_is_refused_for_alpn_quill() {
    let v1 = QuicV1Server::with_host_key(host_key(7), vec![b"quill".to_vec()]).unwrap();
    assert!(v1.with_early_data().is_err());
}
