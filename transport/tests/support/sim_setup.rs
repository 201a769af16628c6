//! Shared by the simulator test binaries (`sim.rs`, `sim_endpoint.rs`): seeded client
//! and server configurations and the login policy. Sans-IO only: no driver, no auth.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::SeededRandom;
use quill_transport::proto::{
    ClientConfig, HostKeyPolicy, Login, LoginMethod, QuicV1Server, ServerConfig, TransportConfig,
    Version,
};
use quill_transport::sim::{ClientApp, LinkConfig, ServerApp, Sim};
use zeroize::Zeroizing;

pub const MB: u64 = 1_000_000;

pub fn host_key(seed: u8) -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[seed; 32]).unwrap())
}

pub fn password(user: &str, pw: &str) -> Login {
    Login::Password {
        user: user.into(),
        password: Zeroizing::new(pw.into()),
    }
}

pub struct Setup {
    pub client: ClientConfig,
    pub server: ServerConfig,
}

/// alice with the right password, pinning host key 7; both sides seeded from `seed`.
pub fn setup(seed: u64, transport: TransportConfig) -> Setup {
    let key = host_key(7);
    let pin = key.public().fingerprint();
    let mut client = ClientConfig::new(
        password("alice", "correct horse"),
        HostKeyPolicy::Pinned(vec![pin]),
    );
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    client.rng = Arc::new(SeededRandom::new(s));
    client.transport = Arc::new(transport.clone());
    let mut server = ServerConfig::new(key);
    s[31] = 1;
    server.rng = Arc::new(SeededRandom::new(s));
    server.transport = Arc::new(transport);
    Setup { client, server }
}

/// `s` switched to QUIC v1 with ALPN `alpn`: the client pins host key 7, whose
/// certificate the server presents.
pub fn quic_v1(mut s: Setup, alpn: &[u8]) -> Setup {
    s.client.version = Version::QuicV1 {
        alpn: vec![alpn.to_vec()],
    };
    s.server.quic_v1 = Some(QuicV1Server::with_host_key(host_key(7), vec![alpn.to_vec()]).unwrap());
    s
}

/// A server app that echoes bidirectional streams and must never be asked for a
/// login (QUIC v1 has none): its policy refuses and records the attempt.
pub fn v1_echo_server() -> ServerApp {
    let mut app = ServerApp::new(Box::new(|_| Err("QUIC v1 has no login".into())));
    app.echo = true;
    app
}

/// Accepts alice with the right password, refuses everything else.
pub fn alice_policy() -> ServerApp {
    ServerApp::new(Box::new(|req| match (&req.method, req.user.as_str()) {
        (LoginMethod::Password(pw), "alice") if pw.as_slice() == b"correct horse" => {
            Ok("alice".into())
        }
        _ => Err("login refused".into()),
    }))
}

/// Runs `sim` until the client is logged in and the server connection established,
/// for at most `limit` of virtual time; panics with the client's events if not.
pub fn assert_connects(sim: &mut Sim<ClientApp, ServerApp>, limit: Duration, seed: u64) {
    let ok = sim.run_until(limit, |s| {
        s.client_app.connected && s.server().is_some_and(|c| c.is_established())
    });
    assert!(
        ok,
        "seed {seed}: not connected after {:?}: {:?}",
        sim.elapsed(),
        sim.client_app.events
    );
}

/// NAT rebinding: from now on the server sees the client's datagrams come from
/// `addr`. Runs until the server received the whole stream (at most 600 s of virtual
/// time) and checks the connection was not lost.
pub fn rebind_and_finish(sim: &mut Sim<ClientApp, ServerApp>, addr: &str) {
    sim.net.client_addr = addr.parse().unwrap();
    assert!(sim.run_until(Duration::from_secs(600), |s| {
        !s.server_app.sink.finished.is_empty() || s.client_app.lost.is_some()
    }));
    assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
}

/// A simulation of `s` with `link` both ways.
pub fn sim_of(
    seed: u64,
    s: Setup,
    link: LinkConfig,
    app: ClientApp,
    server_app: ServerApp,
) -> Sim<ClientApp, ServerApp> {
    Sim::new(
        seed,
        s.client,
        s.server,
        link.clone(),
        link,
        app,
        server_app,
    )
}
