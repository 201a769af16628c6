//! A client's active migration (RFC 9000 §9.2, §9.5) in the deterministic simulated
//! network: mid-transfer the client moves to a new local address
//! ([`Connection::migrate`]); it uses a connection ID the server has not seen on the
//! old path, the server validates the new path (PATH_CHALLENGE both ways), and the
//! transfer completes intact — on QUIC v1 and on quill's own version.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::time::Duration;

use quill_transport::proto::{MigrateError, TransportConfig};
use quill_transport::sim::{ClientApp, LinkConfig, ServerApp, Sim};
use sim_setup::{alice_policy, assert_connects, setup, sim_of, Setup, MB};

/// Echoes 1 MB on one stream; once a quarter is back the client migrates to
/// `127.0.0.9:7000` and the transfer goes on from there.
fn migrate_mid_transfer(seed: u64, s: Setup, server: ServerApp) -> Sim<ClientApp, ServerApp> {
    let mut app = ClientApp::new(MB, 1);
    app.echo = true;
    let mut sim = sim_of(seed, s, LinkConfig::default(), app, server);
    assert_connects(&mut sim, Duration::from_secs(10), seed);
    assert!(
        sim.run_until(Duration::from_secs(60), |s| s.client_app.sink.bytes
            >= MB / 4)
    );
    let old_cid = sim.client().remote_cid();
    sim.net.client_addr = "127.0.0.9:7000".parse().unwrap();
    assert_eq!(sim.client().migrate(), Ok(true), "a spare connection ID");
    assert_ne!(
        sim.client().remote_cid(),
        old_cid,
        "the old path's CID reused"
    );
    assert!(
        sim.run_until(Duration::from_secs(120), |s| {
            s.client_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
        }),
        "seed {seed}: transfer stalled after the migration"
    );
    assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
    assert_eq!(sim.client_app.sent, sim.client_app.sink.finished);
    let client = sim.client().stats();
    assert_eq!(client.local_migrations, 1);
    assert_eq!(
        client.paths_validated, 1,
        "the client's new path was not validated"
    );
    let server = sim.server().unwrap().stats();
    assert_eq!(server.migrations, 1, "the server did not follow the client");
    assert!(server.paths_validated >= 1);
    sim
}

#[test]
fn v1_client_migrates_mid_transfer() {
    let s = sim_setup::quic_v1(setup(60, TransportConfig::default()), b"hq-interop");
    migrate_mid_transfer(60, s, sim_setup::v1_echo_server());
}

#[test]
fn quill_client_migrates_mid_transfer() {
    let mut server = alice_policy();
    server.echo = true;
    migrate_mid_transfer(61, setup(61, TransportConfig::default()), server);
}

/// Migration is refused where RFC 9000 §9 forbids it: on a server, and before the
/// handshake is confirmed.
#[test]
fn migration_is_refused_before_confirmation_and_on_a_server() {
    let s = sim_setup::quic_v1(setup(62, TransportConfig::default()), b"hq-interop");
    let mut sim = sim_of(
        62,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        sim_setup::v1_echo_server(),
    );
    assert_eq!(sim.client().migrate(), Err(MigrateError::NotConfirmed));
    assert_connects(&mut sim, Duration::from_secs(10), 62);
    assert!(sim.run_until(Duration::from_secs(5), |s| s
        .server()
        .is_some_and(|c| c.is_established())));
    assert_eq!(
        sim.server().unwrap().migrate(),
        Err(MigrateError::NotClient)
    );
}
