//! ACK frequency (draft-ietf-quic-ack-frequency) and the RTT estimate of quiet
//! connections, in the deterministic simulated network (virtual time).

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::time::Duration;

use quill_transport::proto::TransportConfig;
use quill_transport::sim::{ClientApp, LinkConfig, Sim};
use sim_setup::{alice_policy, setup, MB};

/// A link with a fixed one-way `delay`.
fn link(delay: Duration) -> LinkConfig {
    LinkConfig {
        delay,
        ..LinkConfig::default()
    }
}

/// The smoothed RTTs of client and server after a minute of keep-alives only, over a
/// path whose first flights take `handshake_delay` one way (as the peer's handshake
/// processing lengthens the first RTT samples, and with them min_rtt) and then
/// `delay`, with the ACK frequency extension on both sides or on neither.
fn quiet_rtt(
    handshake_delay: Duration,
    delay: Duration,
    ack_frequency: bool,
) -> (Duration, Duration) {
    let transport = TransportConfig {
        keep_alive_interval: Some(Duration::from_secs(2)),
        ack_frequency,
        ..TransportConfig::default()
    };
    let s = setup(71, transport);
    let mut sim = Sim::new(
        71,
        s.client,
        s.server,
        link(handshake_delay),
        link(handshake_delay),
        ClientApp::new(0, 0),
        alice_policy(),
    );
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.server().is_some()
            && s.client().is_established()),
        "handshake did not finish"
    );
    sim.net.c2s = quill_transport::sim::Link::new(link(delay), 1);
    sim.net.s2c = quill_transport::sim::Link::new(link(delay), 2);
    let end = sim.elapsed() + Duration::from_secs(60);
    sim.run_until(Duration::from_secs(70), |s| s.elapsed() >= end);
    let c = sim.client().rtt();
    let srv = sim.server().expect("server connection").rtt();
    (c, srv)
}

/// Issue 17: on a quiet connection the keep-alive's ACK waits out the peer's
/// max_ack_delay (25 ms). With IMMEDIATE_ACK it does not, and the smoothed RTT is the
/// path's (a 0.2 ms round trip here) to within the 1 ms timer tick.
#[test]
fn keep_alive_rtt_tracks_the_path_with_immediate_ack() {
    let delay = Duration::from_micros(100);
    let (c, s) = quiet_rtt(Duration::from_millis(3), delay, true);
    let bound = delay * 2 + Duration::from_millis(1);
    assert!(c <= bound, "client smoothed RTT {c:?} > {bound:?}");
    assert!(s <= bound, "server smoothed RTT {s:?} > {bound:?}");
}

/// Without the extension the ACK delay is taken off by RFC 9002 §5.3, whose guard
/// kept all of it in whenever min_rtt (from the handshake, 6 ms here) was above the
/// path's round trip plus the ACK timer's lateness: the smoothed RTT then crept up to
/// max_ack_delay. It must stay at most min_rtt plus the timer tick.
#[test]
fn keep_alive_rtt_stays_near_min_rtt_without_the_extension() {
    let (c, s) = quiet_rtt(Duration::from_millis(3), Duration::from_micros(100), false);
    let bound = Duration::from_millis(6 + 2);
    assert!(c <= bound, "client smoothed RTT {c:?} > {bound:?}");
    assert!(s <= bound, "server smoothed RTT {s:?} > {bound:?}");
}

/// What a bulk transfer of `bytes` from client to server over `link` (both ways)
/// cost, with the ACK frequency extension on both sides or off on both.
struct Bulk {
    /// ACK frames the receiver (server) sent.
    acks: u64,
    /// ACK_FREQUENCY frames the sender (client) sent.
    ack_frequency_frames: u64,
    /// Packets the sender declared lost.
    lost: u64,
    /// Probe timeouts at the sender.
    ptos: u64,
    /// Virtual time the transfer took.
    took: Duration,
}

fn bulk(seed: u64, link: LinkConfig, bytes: u64, ack_frequency: bool) -> Bulk {
    let transport = TransportConfig {
        ack_frequency,
        ..TransportConfig::default()
    };
    let s = setup(seed, transport);
    let mut sim = Sim::new(
        seed,
        s.client,
        s.server,
        link.clone(),
        link,
        ClientApp::new(bytes, 1),
        alice_policy(),
    );
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
    let start = sim.elapsed();
    let done = sim.run_until(Duration::from_secs(600), |s| {
        s.server_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
    });
    assert!(
        done,
        "transfer did not finish in 10 minutes of virtual time"
    );
    assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
    let (_, n, hash) = sim.server_app.sink.finished[0];
    assert_eq!(n, bytes);
    assert_eq!(sim.client_app.sent[0].2, hash, "received data differs");
    let took = sim.elapsed() - start;
    let c = sim.client().stats().clone();
    let srv = sim.server().expect("server connection").stats().clone();
    Bulk {
        acks: srv.ack_frames_sent,
        ack_frequency_frames: c.ack_frequency_frames_sent,
        lost: c.packets_lost,
        ptos: c.ptos,
        took,
    }
}

/// Prints both runs (see them with `-- --nocapture`).
/// With the extension the transfer takes at most 10 % longer (virtual time, so
/// deterministic).
fn assert_not_slower(off: &Bulk, on: &Bulk) {
    assert!(
        on.took <= off.took + off.took / 10,
        "took {:?} vs {:?}",
        on.took,
        off.took
    );
}

fn show(label: &str, off: &Bulk, on: &Bulk) {
    for (name, b) in [("off", off), ("on", on)] {
        eprintln!(
            "{label}, ack frequency {name}: {} ACKs, {} ACK_FREQUENCY, {} lost, {} PTOs, {:?}",
            b.acks, b.ack_frequency_frames, b.lost, b.ptos, b.took
        );
    }
}

/// A 100 Mbit/s bottleneck with a 20 ms round trip and a queue of about one BDP.
fn bottleneck() -> LinkConfig {
    LinkConfig {
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 256 * 1024,
        ..LinkConfig::default()
    }
}

#[test]
fn bulk_transfer_sends_far_fewer_acks_with_ack_frequency() {
    let off = bulk(31, bottleneck(), 30 * MB, false);
    let on = bulk(31, bottleneck(), 30 * MB, true);
    show("clean", &off, &on);
    assert_eq!(off.ack_frequency_frames, 0);
    assert!(on.ack_frequency_frames > 0);
    // Without the extension quill acknowledges every 10th packet; with it the sender
    // asks for one ACK per eighth of a window, up to every 32nd packet.
    assert!(
        on.acks * 2 < off.acks,
        "ACKs with the extension {} vs without {}",
        on.acks,
        off.acks
    );
    // No more loss or stalls, and no slower (virtual time, so deterministic).
    assert!(
        on.lost <= off.lost + off.lost / 10 + 5,
        "lost {} vs {}",
        on.lost,
        off.lost
    );
    assert!(on.ptos <= off.ptos + 2, "PTOs {} vs {}", on.ptos, off.ptos);
    assert_not_slower(&off, &on);
}

#[test]
fn bulk_transfer_with_ack_frequency_survives_loss_and_reordering() {
    let link = LinkConfig {
        loss: 0.02,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(3),
        ..bottleneck()
    };
    let on = bulk(32, link.clone(), 10 * MB, true);
    let off = bulk(32, link, 10 * MB, false);
    show("lossy", &off, &on);
    assert!(on.lost > 0 && on.ack_frequency_frames > 0);
    // A small window under heavy loss: the ACKs are mostly timer-driven, and the
    // quarter-RTT delay asks for more of them (ack_frequency.rs), bounded here; no
    // more probe timeouts and no slower.
    assert!(on.acks <= off.acks * 2, "ACKs {} vs {}", on.acks, off.acks);
    assert!(on.ptos <= off.ptos, "PTOs {} vs {}", on.ptos, off.ptos);
    assert_not_slower(&off, &on);
}

/// Without the extension on one side, nothing of it is sent: the peer that did not
/// advertise min_ack_delay never sees ACK_FREQUENCY or IMMEDIATE_ACK (it would close
/// the connection with PROTOCOL_VIOLATION, which the transfer checks).
#[test]
fn a_peer_without_the_extension_gets_none_of_its_frames() {
    let transport = TransportConfig::default();
    let mut s = setup(33, transport.clone());
    s.server.transport = std::sync::Arc::new(TransportConfig {
        ack_frequency: false,
        ..transport
    });
    let mut sim = Sim::new(
        33,
        s.client,
        s.server,
        bottleneck(),
        bottleneck(),
        ClientApp::new(5 * MB, 1),
        alice_policy(),
    );
    let done = sim.run_until(Duration::from_secs(600), |s| {
        s.server_app.sink.finished.len() == 1 || s.client_app.lost.is_some()
    });
    assert!(
        done && sim.client_app.lost.is_none(),
        "{:?}",
        sim.client_app.lost
    );
    assert_eq!(sim.client().stats().ack_frequency_frames_sent, 0);
}
