//! NewReno congestion control as specified by RFC 9002 §7 and Appendix B.

use std::time::Instant;

use super::cc::{initial_window, minimum_window};
use super::{CongestionController, RttEstimator};

/// RFC 9002 §7.3.2: "The RECOMMENDED value [of kLossReductionFactor] is 0.5."
const LOSS_REDUCTION_NUM: u64 = 1;
const LOSS_REDUCTION_DEN: u64 = 2;

/// NewReno: slow start, congestion avoidance, one reduction per recovery period.
#[derive(Debug, Clone)]
pub struct NewReno {
    mds: u64,
    window: u64,
    ssthresh: u64,
    /// RFC 9002 §7.3.2: the recovery period starts "at the time of the
    /// congestion event" and is keyed by send time.
    recovery_start: Option<Instant>,
    /// Bytes acknowledged in congestion avoidance since the last increase.
    bytes_acked: u64,
}

impl NewReno {
    /// A controller for a path with this maximum datagram size.
    pub fn new(max_datagram_size: u16) -> Self {
        Self {
            mds: u64::from(max_datagram_size),
            window: initial_window(max_datagram_size),
            ssthresh: u64::MAX,
            recovery_start: None,
            bytes_acked: 0,
        }
    }

    /// RFC 9002 Appendix B.5: "InCongestionRecovery(sent_time): return
    /// sent_time <= congestion_recovery_start_time".
    fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }

    fn minimum(&self) -> u64 {
        2 * self.mds
    }
}

impl CongestionController for NewReno {
    fn on_sent(&mut self, _now: Instant, _bytes: u64) {}

    fn on_ack(
        &mut self,
        _now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &RttEstimator,
    ) {
        // RFC 9002 §7.3.2: "The recovery period aims to limit congestion window
        // reduction to once per round trip. [...] A recovery period ends and the
        // sender enters congestion avoidance when a packet sent during the
        // recovery period is acknowledged." Appendix B.5: "Do not increase
        // congestion_window in recovery period."
        if self.in_recovery(sent) || app_limited {
            return;
        }
        if self.window < self.ssthresh {
            // RFC 9002 §7.3.1: "While a sender is in slow start, the congestion
            // window increases by the number of bytes acknowledged when each
            // acknowledgment is processed."
            self.window += bytes;
        } else {
            // RFC 9002 §7.3.3: "the congestion window [...] SHOULD increase by
            // at most one maximum datagram size for each congestion window that
            // is acknowledged."
            self.bytes_acked += bytes;
            if self.bytes_acked >= self.window {
                self.bytes_acked -= self.window;
                self.window += self.mds;
            }
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        _lost_bytes: u64,
    ) {
        // RFC 9002 Appendix B.6: "No reaction if already in a recovery period."
        if !self.in_recovery(sent) {
            // RFC 9002 §7.3.2: "On entering a recovery period, a sender MUST
            // set the slow start threshold to half the value of the congestion
            // window when loss is detected. The congestion window MUST be set
            // to the reduced value of the slow start threshold before exiting
            // the recovery period."
            self.recovery_start = Some(now);
            self.window =
                (self.window * LOSS_REDUCTION_NUM / LOSS_REDUCTION_DEN).max(self.minimum());
            self.ssthresh = self.window;
            self.bytes_acked = 0;
        }
        if persistent {
            // RFC 9002 §7.6.2: "When persistent congestion is declared, the
            // sender's congestion window MUST be reduced to the minimum
            // congestion window". Appendix B.8 also clears the recovery start.
            self.window = self.minimum();
            self.recovery_start = None;
            self.bytes_acked = 0;
        }
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.mds = u64::from(max_datagram_size);
        self.window = self.window.max(minimum_window(max_datagram_size));
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    fn name(&self) -> &'static str {
        "newreno"
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
