//! QUIC v2 (RFC 9369) by compatible version negotiation (RFC 9368) between two
//! quills, in the deterministic simulated network: a client that starts in QUIC v1
//! and lists v2 in its version_information is moved to v2 by a server with v2
//! enabled, and both ends then speak v2 (v2 keys from TLS's secrets, key updates
//! with "quicv2 ku").

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::time::Duration;

use quill_crypto::packet::Suite;
use quill_transport::proto::{EndpointConfig, QuicV1Server, RetryPolicy, TransportConfig, Version};
use quill_transport::sim::{endpoint_config, ClientApp, LinkConfig, Net, ServerApp, Sim};
use quill_transport::wire::{QUIC_V1, QUIC_V2};
use sim_setup::{host_key, setup, Setup, MB};

const ALPN: &[u8] = b"hq-interop";

/// QUIC v1 with ALPN `hq-interop`; the client offers v2 if `offer`, the server
/// upgrades if `enable`.
fn v2_setup(seed: u64, offer: bool, enable: bool) -> Setup {
    let alpn = vec![ALPN.to_vec()];
    let mut s = setup(seed, TransportConfig::default());
    let mut v1 = QuicV1Server::with_host_key(host_key(7), alpn.clone()).unwrap();
    v1.quic_v2 = enable;
    (s.client.offer_quic_v2, s.server.quic_v1) = (offer, Some(v1));
    s.client.version = Version::QuicV1 { alpn };
    s
}

/// `bytes` each way on one stream over `link`; returns the finished simulation.
fn echo(
    seed: u64,
    s: Setup,
    link: LinkConfig,
    endpoint: EndpointConfig,
    bytes: u64,
) -> Sim<ClientApp, ServerApp> {
    let net = Net::new(seed, endpoint, s.server, link.clone(), link).unwrap();
    // No login on QUIC v1/v2: the server's policy refuses any; both ends echo.
    let mut server_app = ServerApp::new(Box::new(|_| Err("no login here".into())));
    let mut client_app = ClientApp::new(bytes, 1);
    (server_app.echo, client_app.echo) = (true, true);
    let mut sim = Sim::on(net, s.client, client_app, server_app);
    let echoed = |s: &mut Sim<ClientApp, ServerApp>| s.client_app.sink.finished.len() == 1;
    if !sim.run_until(Duration::from_secs(120), echoed) {
        let (c, srv) = (&sim.client_app, &sim.server_app);
        panic!(
            "seed {seed}: no echo: {:?} {:?} / {:?}",
            c.lost, c.events, srv.events
        );
    }
    let app = &sim.client_app;
    assert_eq!(app.sent, app.sink.finished, "seed {seed}: echo differs");
    sim
}

fn versions(sim: &mut Sim<ClientApp, ServerApp>) -> (u32, u32) {
    let c = sim.client().version();
    let s = sim.server().unwrap().version();
    (c, s)
}

/// The upgrade, with the client's default suites (AES-256-GCM with SHA-384 first,
/// so the v2 keys come from 48-byte secrets) and with AES-128-GCM and ChaCha20.
#[test]
fn v1_client_offering_v2_is_upgraded_and_echoes_1mb() {
    for (seed, suites) in [
        (1, None),
        (2, Some(vec![Suite::Aes128Gcm])),
        (3, Some(vec![Suite::ChaCha20Poly1305])),
    ] {
        let mut s = v2_setup(seed, true, true);
        if let Some(suites) = suites {
            s.client.suites = suites;
        }
        let mut sim = echo(seed, s, LinkConfig::default(), endpoint_config(seed), MB);
        assert_eq!(versions(&mut sim), (QUIC_V2, QUIC_V2), "seed {seed}");
        assert_eq!(
            sim.client().key_exchange_group(),
            Some(rustls::NamedGroup::X25519MLKEM768)
        );
    }
}

/// Loss and reordering: the ClientHello spans two v1 Initials, either may be lost
/// and retransmitted after the server has moved to v2 (it keeps the v1 Initial keys
/// to open them), and the client moves only on a v2 packet that opens.
#[test]
fn upgrade_under_loss_and_reordering() {
    let mut link = LinkConfig::default();
    (link.loss, link.reorder, link.jitter) = (0.1, 0.05, Duration::from_millis(2));
    for seed in 4..8 {
        let mut sim = echo(
            seed,
            v2_setup(seed, true, true),
            link.clone(),
            endpoint_config(seed),
            200_000,
        );
        assert_eq!(versions(&mut sim), (QUIC_V2, QUIC_V2), "seed {seed}");
    }
}

/// 1-RTT key updates under v2's "quicv2 ku" label, both ways (every 1000 packets).
#[test]
fn v2_key_updates_mid_transfer() {
    let mut s = v2_setup(8, true, true);
    let t = std::sync::Arc::new(TransportConfig {
        key_update_interval: 1000,
        ..TransportConfig::default()
    });
    (s.client.transport, s.server.transport) = (t.clone(), t);
    let mut sim = echo(8, s, LinkConfig::default(), endpoint_config(8), 3 * MB);
    assert_eq!(versions(&mut sim), (QUIC_V2, QUIC_V2));
    let client = sim.client().stats().key_updates;
    let updates = [client, sim.server().unwrap().stats().key_updates];
    assert!(updates.iter().all(|&n| n >= 2), "key updates {updates:?}");
}

/// RFC 9369 §4.1: a Retry is sent in the original version (v1); the client's next
/// Initial, still v1, carries the token, and the server then upgrades.
#[test]
fn upgrade_after_a_retry() {
    let mut endpoint = endpoint_config(9);
    endpoint.retry = RetryPolicy::Always;
    let s = v2_setup(9, true, true);
    let mut sim = echo(9, s, LinkConfig::default(), endpoint, 100_000);
    assert_eq!(sim.client().stats().retries, 1);
    assert_eq!(versions(&mut sim), (QUIC_V2, QUIC_V2));
}

/// Either side without v2: the connection stays in QUIC v1.
#[test]
fn without_v2_on_either_side_the_connection_stays_v1() {
    for (seed, offer, enable) in [(10, false, true), (11, true, false)] {
        let mut sim = echo(
            seed,
            v2_setup(seed, offer, enable),
            LinkConfig::default(),
            endpoint_config(seed),
            10_000,
        );
        assert_eq!(versions(&mut sim), (QUIC_V1, QUIC_V1), "seed {seed}");
    }
}
