//! Application pings ([`Connection::ping`]) in the deterministic simulated network
//! (virtual time): a ping is acknowledged with the path's round trip, the peer's ACK
//! delay taken off; a ping whose packet is dropped is sent again in a new packet and
//! acknowledged, or reported lost when nothing gets through — never left waiting.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::time::{Duration, Instant};

use quill_transport::proto::{
    ping_timeout, Connection, Event, PingError, PingId, TransportConfig, MAX_OUTSTANDING_PINGS,
    PING_TIMEOUT_FLOOR,
};
use quill_transport::sim::{App, LinkConfig, ServerApp, Sim};
use sim_setup::{alice_policy, setup, Setup};

/// One-way delay of both links.
const DELAY: Duration = Duration::from_millis(20);
/// The timer granularity (RFC 9002 §6.1.2, the endpoints' timer wheel tick): the
/// RTT a ping reports is exact to within it in virtual time.
const GRANULARITY: Duration = Duration::from_millis(1);

/// A client that records what became of its pings, and when it learned it.
#[derive(Default)]
struct Pinger {
    connected: bool,
    acked: Vec<(PingId, Duration, Duration)>,
    lost: Vec<(PingId, Duration, Instant)>,
    closed: Option<String>,
    /// Stop the virtual clock here ([`wait`]).
    wake: Option<Instant>,
    /// The last step's time: the clock stops every [`TICK`] after it, so that
    /// `run_until` sees an event before the next far-away timer (the idle timeout).
    now: Option<Instant>,
}

/// Most virtual time between two steps.
const TICK: Duration = Duration::from_millis(10);

impl App for Pinger {
    fn on_event(&mut self, now: Instant, _conn: &mut Connection, event: Event) {
        match event {
            Event::Connected { .. } | Event::HandshakeConfirmed { .. } => self.connected = true,
            Event::PingAcknowledged { id, rtt, ack_delay } => self.acked.push((id, rtt, ack_delay)),
            Event::PingLost { id, after } => self.lost.push((id, after, now)),
            Event::ConnectionLost(e) => self.closed = Some(e.to_string()),
            _ => {}
        }
    }

    fn poll(&mut self, now: Instant, _conn: &mut Connection) {
        self.now = Some(now);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let tick = self.now.map(|n| n + TICK);
        self.wake.into_iter().chain(tick).min()
    }
}

/// Lets `d` of virtual time pass.
fn wait(sim: &mut Sim<Pinger, ServerApp>, d: Duration) {
    let at = sim.now() + d;
    sim.client_app.wake = Some(at);
    sim.run_until(d + Duration::from_secs(1), |s| s.now() >= at);
    sim.client_app.wake = None;
    assert_eq!(sim.client_app.closed, None, "at {:?}", sim.elapsed());
}

fn link() -> LinkConfig {
    LinkConfig {
        delay: DELAY,
        ..LinkConfig::default()
    }
}

/// Connected over [`link`] both ways, both ends up.
fn connected(seed: u64, s: Setup, server: ServerApp) -> Sim<Pinger, ServerApp> {
    let mut sim = Sim::new(
        seed,
        s.client,
        s.server,
        link(),
        link(),
        Pinger::default(),
        server,
    );
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.client_app.connected
            && s.server().is_some_and(|c| c.is_established())),
        "seed {seed}: not connected"
    );
    sim
}

fn quill(seed: u64) -> Sim<Pinger, ServerApp> {
    quill_with(seed, TransportConfig::default())
}

fn quill_with(seed: u64, transport: TransportConfig) -> Sim<Pinger, ServerApp> {
    connected(seed, setup(seed, transport), alice_policy())
}

fn quic_v1(seed: u64) -> Sim<Pinger, ServerApp> {
    let s = sim_setup::quic_v1(setup(seed, TransportConfig::default()), b"hq-interop");
    connected(seed, s, sim_setup::v1_echo_server())
}

/// Three pings 300 ms apart are each acknowledged with an RTT of 2 × the one-way
/// delay (the peer's ACK delay taken off), and the connection's own estimate agrees.
/// `delayed`: whether the peer may delay its ACK (it lacks the ACK-frequency
/// extension); with it, pings carry IMMEDIATE_ACK and are acknowledged at once.
fn acknowledged_with_the_path_rtt(mut sim: Sim<Pinger, ServerApp>, delayed: bool) {
    let mut ids = Vec::new();
    for n in 1..=3 {
        // After the handshake's last packets: a ping whose packet is not the largest
        // one an ACK acknowledges has its time measured against that one's ACK delay
        // (an upper bound, ping.rs), which is not what this test is about.
        wait(&mut sim, Duration::from_millis(300));
        let now = sim.now();
        ids.push(sim.client().ping(now).expect("connected"));
        assert!(
            sim.run_until(Duration::from_secs(5), |s| s.client_app.acked.len() == n),
            "ping {n} not acknowledged: lost {:?}",
            sim.client_app.lost
        );
    }
    let acked = &sim.client_app.acked;
    assert_eq!(acked.iter().map(|a| a.0).collect::<Vec<_>>(), ids);
    for &(id, rtt, ack_delay) in acked {
        assert!(
            rtt.abs_diff(2 * DELAY) <= GRANULARITY,
            "{id}: rtt {rtt:?} (ack delay {ack_delay:?}), path {:?}",
            2 * DELAY
        );
    }
    if delayed {
        // A lone PING is not acknowledged at once (RFC 9000 §13.2.1 lets the peer wait
        // up to max_ack_delay): without the ACK delay taken off, the times would be
        // longer.
        assert!(
            acked.iter().any(|a| a.2 > GRANULARITY),
            "the peer never delayed an ACK: {acked:?}"
        );
    } else {
        assert!(
            acked.iter().all(|a| a.2.is_zero()),
            "IMMEDIATE_ACK was not acknowledged at once: {acked:?}"
        );
    }
    assert!(sim.client_app.lost.is_empty());
    assert!(sim.client().rtt().abs_diff(2 * DELAY) <= GRANULARITY);
}

#[test]
fn quill_ping_is_acknowledged_at_once_with_the_path_rtt() {
    acknowledged_with_the_path_rtt(quill(80), false);
}

#[test]
fn v1_ping_is_acknowledged_at_once_with_the_path_rtt() {
    acknowledged_with_the_path_rtt(quic_v1(81), false);
}

/// Without the ACK-frequency extension the peer delays its ACK of a lone PING; the
/// reported ACK delay is taken off.
#[test]
fn ping_to_a_peer_that_delays_its_ack_has_the_delay_taken_off() {
    let transport = TransportConfig {
        ack_frequency: false,
        ..TransportConfig::default()
    };
    acknowledged_with_the_path_rtt(quill_with(82, transport), true);
}

/// The packet carrying the ping is dropped: the ping rides a new packet with a new
/// PING frame and is acknowledged under the same identity, once, with the new
/// packet's round trip.
#[test]
fn dropped_ping_is_sent_again_and_acknowledged() {
    for (mut sim, what) in [(quill(82), "quill"), (quic_v1(83), "QUIC v1")] {
        let lost_before = sim.client().stats().packets_lost;
        sim.net.c2s.black_hole = true;
        let now = sim.now();
        let id = sim.client().ping(now).unwrap();
        // Let the first packet go (into the hole), then open the path again.
        wait(&mut sim, Duration::from_millis(5));
        sim.net.c2s.black_hole = false;
        assert!(
            sim.run_until(Duration::from_secs(5), |s| !s.client_app.acked.is_empty()
                || !s.client_app.lost.is_empty()),
            "{what}: the ping was left waiting"
        );
        assert_eq!(sim.client_app.lost, vec![], "{what}");
        let (acked, rtt, _) = sim.client_app.acked[0];
        assert_eq!(acked, id, "{what}");
        assert!(rtt.abs_diff(2 * DELAY) <= GRANULARITY, "{what}: {rtt:?}");
        assert!(
            sim.client().stats().packets_lost > lost_before,
            "{what}: the first packet was never declared lost"
        );
        // Nothing more comes for it.
        wait(&mut sim, 2 * PING_TIMEOUT_FLOOR);
        assert_eq!(sim.client_app.acked.len(), 1, "{what}");
        assert!(sim.client_app.lost.is_empty(), "{what}");
    }
}

/// Nothing gets through: the ping is reported lost after `max(3 × PTO, 1 s)`, and the
/// connection keeps no record of it.
#[test]
fn ping_into_a_black_hole_is_reported_lost() {
    let mut sim = quill(84);
    let pto_bound = ping_timeout(Duration::from_secs(1));
    sim.net.c2s.black_hole = true;
    let start = sim.now();
    let id = sim.client().ping(start).unwrap();
    assert!(
        sim.run_until(Duration::from_secs(10), |s| !s.client_app.lost.is_empty()),
        "the ping was left waiting"
    );
    let (lost, after, at) = sim.client_app.lost[0];
    assert_eq!(lost, id);
    assert!(
        after >= PING_TIMEOUT_FLOOR && after <= pto_bound,
        "{after:?}"
    );
    let took = at - start;
    assert!(
        took >= after && took <= after + GRANULARITY,
        "reported after {took:?}, timeout {after:?}"
    );
    assert!(sim.client_app.acked.is_empty());
    // Its slot is free again: the cap counts only outstanding pings.
    sim.net.c2s.black_hole = false;
    let now = sim.now();
    for _ in 0..MAX_OUTSTANDING_PINGS {
        sim.client().ping(now).unwrap();
    }
    assert_eq!(sim.client().ping(now), Err(PingError::TooMany));
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.client_app.acked.len()
            == MAX_OUTSTANDING_PINGS)
    );
    assert_eq!(sim.client_app.lost.len(), 1);
    let now = sim.now();
    assert!(
        sim.client().ping(now).is_ok(),
        "the cap is not a lifetime limit"
    );
}

/// A ping needs a connection that is up, and none is taken after the close.
#[test]
fn ping_before_the_handshake_and_after_the_close_is_refused() {
    let s = setup(85, TransportConfig::default());
    let mut sim = Sim::new(
        85,
        s.client,
        s.server,
        link(),
        link(),
        Pinger::default(),
        alice_policy(),
    );
    let now = sim.now();
    assert_eq!(sim.client().ping(now), Err(PingError::NotConnected));
    assert!(sim.run_until(Duration::from_secs(10), |s| s.client_app.connected));
    let now = sim.now();
    sim.client().close(now, 0, "done");
    assert_eq!(sim.client().ping(now), Err(PingError::Closed));
}
