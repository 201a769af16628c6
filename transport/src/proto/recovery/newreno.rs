//! NewReno congestion control as specified by RFC 9002 §7 and Appendix B.

use std::time::Instant;

use super::cc::{Algorithm, Controller};
use super::RttEstimator;
// The tests drive the controller through its trait.
#[cfg(test)]
use super::CongestionController;

/// RFC 9002 §7.3.2: "The RECOMMENDED value [of kLossReductionFactor] is 0.5."
const LOSS_REDUCTION_NUM: u64 = 1;
const LOSS_REDUCTION_DEN: u64 = 2;

/// NewReno: slow start, congestion avoidance, one reduction per recovery period.
pub type NewReno = Controller<RenoWindow>;

/// NewReno's window: one maximum datagram size more per window acknowledged,
/// halved on a congestion event.
#[derive(Debug, Clone)]
pub struct RenoWindow {
    window: u64,
    /// Bytes acknowledged in congestion avoidance since the last increase.
    bytes_acked: u64,
}

impl Algorithm for RenoWindow {
    const NAME: &'static str = "newreno";

    fn new(initial_window: u64) -> Self {
        Self {
            window: initial_window,
            bytes_acked: 0,
        }
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn grow(&mut self, bytes: u64) {
        self.window += bytes;
    }

    fn congestion_avoidance(&mut self, _now: Instant, bytes: u64, mds: u16, _rtt: &RttEstimator) {
        // RFC 9002 §7.3.3: "the congestion window [...] SHOULD increase by
        // at most one maximum datagram size for each congestion window that
        // is acknowledged."
        self.bytes_acked += bytes;
        if self.bytes_acked >= self.window {
            self.bytes_acked -= self.window;
            self.window += u64::from(mds);
        }
    }

    fn reduce(&mut self, minimum: u64) {
        self.window = (self.window * LOSS_REDUCTION_NUM / LOSS_REDUCTION_DEN).max(minimum);
        self.bytes_acked = 0;
    }

    fn collapse(&mut self, minimum: u64) {
        self.window = minimum;
        self.bytes_acked = 0;
    }

    fn raise_to(&mut self, minimum: u64) {
        self.window = self.window.max(minimum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MDS: u16 = 1200;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A start time, a default RTT estimate and a new controller.
    fn fresh() -> (Instant, RttEstimator, NewReno) {
        (Instant::now(), RttEstimator::default(), NewReno::new(MDS))
    }

    #[test]
    fn slow_start_grows_by_bytes_acked() {
        let (t0, rtt, mut cc) = fresh();
        assert_eq!(cc.window(), 12_000);
        for i in 0..10 {
            cc.on_ack(t0 + ms(100), t0 + ms(i), 1200, false, &rtt);
        }
        assert_eq!(cc.window(), 24_000);
        assert!(cc.in_slow_start());
    }

    #[test]
    fn app_limited_acks_do_not_grow() {
        let (t0, rtt, mut cc) = fresh();
        cc.on_ack(t0 + ms(100), t0, 1200, true, &rtt);
        assert_eq!(cc.window(), 12_000);
    }

    #[test]
    fn loss_halves_and_enters_recovery_once() {
        let (t0, rtt, mut cc) = fresh();
        for i in 0..10 {
            cc.on_ack(t0 + ms(100), t0 + ms(i), 1200, false, &rtt);
        }
        assert_eq!(cc.window(), 24_000);
        // Loss of a packet sent at t0+20, detected at t0+200.
        cc.on_congestion_event(t0 + ms(200), t0 + ms(20), false, 1200);
        assert_eq!(cc.window(), 12_000);
        assert_eq!(cc.ssthresh(), 12_000);
        // Another loss of a packet sent before the recovery start: no second reduction.
        cc.on_congestion_event(t0 + ms(210), t0 + ms(150), false, 1200);
        assert_eq!(cc.window(), 12_000);
        // Acks of packets sent before recovery start do not grow the window.
        cc.on_ack(t0 + ms(220), t0 + ms(190), 1200, false, &rtt);
        assert_eq!(cc.window(), 12_000);
        // A loss of a packet sent after the recovery start is a new event.
        cc.on_congestion_event(t0 + ms(400), t0 + ms(250), false, 1200);
        assert_eq!(cc.window(), 6_000);
    }

    #[test]
    fn congestion_avoidance_adds_one_mds_per_window() {
        let (t0, rtt, mut cc) = fresh();
        cc.on_congestion_event(t0 + ms(10), t0, false, 1200);
        assert_eq!(cc.window(), 6_000);
        assert!(!cc.in_slow_start());
        // One full window (5 packets) after recovery: +1 mds.
        for i in 0..4 {
            cc.on_ack(t0 + ms(100), t0 + ms(20 + i), 1200, false, &rtt);
        }
        assert_eq!(cc.window(), 6_000);
        cc.on_ack(t0 + ms(100), t0 + ms(30), 1200, false, &rtt);
        assert_eq!(cc.window(), 7_200);
    }

    #[test]
    fn window_never_below_minimum_and_persistent_collapses() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MDS);
        for i in 0..10u64 {
            cc.on_congestion_event(t0 + ms(10 * i + 5), t0 + ms(10 * i + 1), false, 1200);
        }
        assert_eq!(cc.window(), 2400);
        let mut cc = NewReno::new(MDS);
        cc.on_congestion_event(t0 + ms(10), t0 + ms(5), true, 12_000);
        assert_eq!(cc.window(), 2400);
        assert_eq!(cc.ssthresh(), 6000);
        // Recovery cleared: a later ack of an older packet grows (slow start, below ssthresh).
        cc.on_ack(
            t0 + ms(20),
            t0 + ms(1),
            1200,
            false,
            &RttEstimator::default(),
        );
        assert_eq!(cc.window(), 3600);
    }

    #[test]
    fn mtu_update_raises_window_to_minimum() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MDS);
        cc.on_congestion_event(t0 + ms(10), t0 + ms(5), true, 0);
        assert_eq!(cc.window(), 2400);
        cc.on_mtu_update(1452);
        assert_eq!(cc.window(), 2904);
    }
}
