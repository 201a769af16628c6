//! ECN (RFC 9000 §13.4, RFC 9002 §7.1) and the QUIC v1 server's anti-amplification
//! limit (RFC 9000 §8.1) in the deterministic simulated network: the links carry an
//! ECN codepoint per datagram and can bleach it or mark it CE.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::sync::Arc;
use std::time::Duration;

use quill_transport::proto::{CertificateCheck, ConnectionStats, QuicV1Server, TransportConfig};
use quill_transport::sim::{ClientApp, EcnPath, LinkConfig, ServerApp, Sim};
use sim_setup::{alice_policy, host_key, quic_v1, setup, sim_of, v1_echo_server, MB};

const ALPN: &[u8] = b"hq-interop";

/// `bytes` from the client to the server over a 20 Mbit/s link, with `ecn` on both
/// links; QUIC v1 when `v1`. Returns the finished simulation.
fn transfer(seed: u64, v1: bool, ecn: EcnPath, bytes: u64) -> Sim<ClientApp, ServerApp> {
    let mut s = setup(seed, TransportConfig::default());
    let server_app = if v1 {
        s = quic_v1(s, ALPN);
        v1_echo_server()
    } else {
        alice_policy()
    };
    let link = LinkConfig {
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 1 << 20,
        ..LinkConfig::default()
    };
    let mut sim = sim_of(seed, s, link, ClientApp::new(bytes, 1), server_app);
    sim.net.c2s.ecn = ecn;
    sim.net.s2c.ecn = ecn;
    let done = sim.run_until(Duration::from_secs(120), |s| {
        s.server_app.sink.bytes >= bytes || s.client_app.lost.is_some()
    });
    assert!(
        done,
        "seed {seed}: transfer not done: {:?}",
        sim.client_app.events
    );
    assert_eq!(sim.server_app.sink.bytes, bytes);
    sim
}

/// The client's and the server's statistics at the end of `sim`.
fn end_stats(sim: &mut Sim<ClientApp, ServerApp>) -> [(&'static str, ConnectionStats); 2] {
    let client = sim.client().stats().clone();
    let server = sim.server().unwrap().stats().clone();
    [("client", client), ("server", server)]
}

#[test]
fn ecn_counts_are_reported_and_the_marks_validated_on_both_versions() {
    for v1 in [false, true] {
        let mut sim = transfer(1, v1, EcnPath::Pass, MB);
        for (side, st) in end_stats(&mut sim) {
            // Every packet went out ECT(0), the peer's ACK_ECN counts confirmed it.
            assert!(st.ecn_marking, "v1 {v1}: {side}: {st:?}");
            assert!(st.ecn_validated, "v1 {v1}: {side}: {st:?}");
            assert_eq!(st.ecn_received.ect0, st.packets_received, "v1 {v1}: {side}");
            assert_eq!((st.ecn_received.ect1, st.ecn_received.ce), (0, 0));
            assert_eq!(st.ecn_ce_events, 0, "v1 {v1}: {side}");
        }
    }
}

#[test]
fn ce_marks_are_congestion_events_that_shrink_the_window() {
    for v1 in [false, true] {
        let mut clean = transfer(2, v1, EcnPath::Pass, 2 * MB);
        let mut marked = transfer(2, v1, EcnPath::MarkCe, 2 * MB);
        let (c, m) = (
            clean.client().stats().clone(),
            marked.client().stats().clone(),
        );
        assert_eq!(c.congestion_events, 0, "v1 {v1}: {c:?}");
        // No datagram was lost: the only congestion signal was CE.
        assert_eq!(m.packets_lost, 0, "v1 {v1}: {m:?}");
        assert!(m.ecn_ce_events > 0, "v1 {v1}: {m:?}");
        assert!(m.congestion_events > 0, "v1 {v1}: {m:?}");
        // CE reports confirm the marks too: the path stays ECN-capable.
        assert!(m.ecn_marking && m.ecn_validated, "v1 {v1}: {m:?}");
        let (cw, mw) = (
            clean.client().congestion_window(),
            marked.client().congestion_window(),
        );
        assert!(mw < cw, "v1 {v1}: window {mw} with CE, {cw} without");
    }
}

#[test]
fn a_bleaching_path_stops_the_marking_and_the_ack_ecn_frames() {
    for v1 in [false, true] {
        let mut sim = transfer(3, v1, EcnPath::Bleach, MB);
        for (side, st) in end_stats(&mut sim) {
            // The first ACK of a marked packet came without ECN counts (RFC 9000
            // §13.4.2.1): validation failed and marking stopped; nothing arrived
            // marked, so no ACK frame carried counts either.
            assert!(!st.ecn_marking, "v1 {v1}: {side}: {st:?}");
            assert!(!st.ecn_validated, "v1 {v1}: {side}: {st:?}");
            assert_eq!(st.ecn_received, Default::default(), "v1 {v1}: {side}");
        }
    }
}

/// Serves the host-key certificate followed by `extra` copies of itself: a chain of
/// any size (the client checks the leaf only).
#[derive(Debug)]
struct LongChain(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for LongChain {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[test]
fn a_quic_v1_server_with_a_long_chain_sends_at_most_three_times_what_it_received() {
    let mut s = quic_v1(setup(4, TransportConfig::default()), ALPN);
    let key = quill_crypto::tls::certified_host_key(host_key(7)).unwrap();
    let mut long = (*key).clone();
    let leaf = long.cert[0].clone();
    long.cert.extend(std::iter::repeat_n(leaf, 40));
    let chain_len: usize = long.cert.iter().map(|c| c.len()).sum();
    assert!(chain_len > 12_000, "chain of {chain_len} bytes");
    let mut tls = (*s.server.quic_v1.take().unwrap().tls).clone();
    tls.cert_resolver = Arc::new(LongChain(Arc::new(long)));
    s.server.quic_v1 = Some(QuicV1Server {
        tls: Arc::new(tls),
        quic_v2: false,
    });
    // As the interop runner's clients: the chain is not verified (its handshake
    // signature still is).
    s.client.certificate = CertificateCheck::Unverified;
    let mut sim = sim_of(
        4,
        s,
        LinkConfig::default(),
        ClientApp::new(0, 0),
        v1_echo_server(),
    );
    // The client's first flight gets through, then nothing from the client for 3 s:
    // the server cannot validate the address and must stop at 3× what it received.
    assert!(sim.run_until(Duration::from_secs(1), |s| s.server_handle().is_some()));
    sim.net.c2s.black_hole = true;
    sim.run_until(Duration::from_secs(3), |_| false);
    let st = sim.server().unwrap().stats().clone();
    assert!(st.bytes_received >= 1200, "{st:?}");
    assert!(
        st.bytes_sent <= 3 * st.bytes_received,
        "sent {} for {} received",
        st.bytes_sent,
        st.bytes_received
    );
    // The limit, not the chain, is what stopped it: it used most of its budget.
    assert!(st.bytes_sent * 3 >= 2 * 3 * st.bytes_received, "{st:?}");
    assert!(!sim.client_app.connected);
    // Once the client is heard again, the handshake completes.
    sim.net.c2s.black_hole = false;
    let up = sim.run_until(Duration::from_secs(30), |s| s.client_app.connected);
    assert!(up, "{:?} {:?}", sim.client_app.events, sim.client_app.lost);
}

/// RFC 9000 §9.4: a server whose client moves to a new IP address (the interop
/// runner's rebind-addr) starts congestion control and the RTT estimate afresh there;
/// a new port on the same address (NAT rebinding, rebind-port) keeps them. ECN is
/// tested again on either new path and the transfer completes marked.
#[test]
fn a_new_client_address_resets_congestion_control_a_new_port_does_not() {
    for (new_addr, resets) in [("10.0.0.1:40001", false), ("10.0.0.9:40000", true)] {
        let s = quic_v1(setup(5, TransportConfig::default()), ALPN);
        let mut app = ClientApp::new(2 * MB, 1);
        app.echo = true;
        let mut sim = sim_of(5, s, LinkConfig::default(), app, v1_echo_server());
        assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
        let initial = sim.server().unwrap().congestion_window();
        // The server echoes: its window grows well past the initial one.
        assert!(sim.run_until(Duration::from_secs(60), |s| {
            s.client_app.sink.bytes > MB / 2
        }));
        let before = sim.server().unwrap().congestion_window();
        assert!(before > 2 * initial, "{before} vs initial {initial}");
        sim.net.client_addr = new_addr.parse().unwrap();
        assert!(sim.run_until(Duration::from_secs(5), |s| {
            s.server().unwrap().stats().migrations == 1
        }));
        let after = sim.server().unwrap().congestion_window();
        if resets {
            assert!(
                after <= initial + 2 * 1452,
                "{new_addr}: {after} vs initial {initial}"
            );
        } else {
            assert!(
                after >= before,
                "{new_addr}: {after} after, {before} before"
            );
        }
        assert!(sim.run_until(Duration::from_secs(120), |s| {
            s.client_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
        }));
        assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
        let st = sim.server().unwrap().stats().clone();
        assert_eq!(st.paths_validated, 1, "{new_addr}: {st:?}");
        assert!(st.ecn_marking && st.ecn_validated, "{new_addr}: {st:?}");
    }
}
