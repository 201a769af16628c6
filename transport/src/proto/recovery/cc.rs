//! The congestion controller interface (RFC 9002 §7) and the choice of algorithm.

use std::fmt;
use std::time::Instant;

use super::{Cubic, NewReno, RttEstimator};

/// A congestion controller: owns the congestion window, nothing else.
///
/// Bytes in flight are tracked by the caller ([`SentPackets`](super::SentPackets));
/// the connection may send while `bytes_in_flight < window()`.
pub trait CongestionController: Send + fmt::Debug {
    /// A packet of `bytes` counted in flight was sent.
    fn on_sent(&mut self, now: Instant, bytes: u64);

    /// One call per newly acknowledged in-flight packet.
    ///
    /// `sent` is the packet's send time; `app_limited` says the sender was not
    /// using the window when it was sent. RFC 9002 §7.8: "When bytes in flight
    /// is smaller than the congestion window and sending is not pacing limited,
    /// the congestion window is underutilized. This can happen due to
    /// insufficient application data or flow control limits. When this occurs,
    /// the congestion window SHOULD NOT be increased in either slow start or
    /// congestion avoidance."
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    );

    /// One call per loss event (or ECN-CE increase): `sent` is the send time of
    /// the largest lost packet; `persistent` collapses the window to the minimum.
    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        lost_bytes: u64,
    );

    /// The maximum datagram size changed (PMTU discovery).
    fn on_mtu_update(&mut self, max_datagram_size: u16);

    /// The congestion window in bytes.
    fn window(&self) -> u64;

    /// The slow start threshold in bytes (`u64::MAX` until the first loss).
    fn ssthresh(&self) -> u64;

    /// Short name of the algorithm, for logs and qlog.
    fn name(&self) -> &'static str;

    /// Whether the controller is in slow start.
    ///
    /// RFC 9002 §7.3.1: "A NewReno sender is in slow start any time the
    /// congestion window is below the slow start threshold."
    fn in_slow_start(&self) -> bool {
        self.window() < self.ssthresh()
    }
}

/// A congestion-avoidance algorithm: its window, how the window grows once slow
/// start is over, and how it shrinks on a congestion event.
///
/// [`Controller`] wraps it in what RFC 9002 §7 fixes for every algorithm: the
/// recovery period, the app-limited rule, slow start, the slow start threshold,
/// the minimum window and persistent congestion.
pub trait Algorithm: Send + fmt::Debug {
    /// Short name of the algorithm, for logs and qlog.
    const NAME: &'static str;

    /// A fresh state with this initial window (bytes).
    fn new(initial_window: u64) -> Self;

    /// The congestion window in bytes.
    fn window(&self) -> u64;

    /// Slow start: the window grows by `bytes`.
    fn grow(&mut self, bytes: u64);

    /// One acknowledgement of `bytes` in congestion avoidance, outside recovery and
    /// not app-limited, on a path whose maximum datagram size is `mds`.
    fn congestion_avoidance(&mut self, now: Instant, bytes: u64, mds: u16, rtt: &RttEstimator);

    /// An app-limited acknowledgement (the window does not grow); `previous_ack`
    /// is when the acknowledgement before it arrived.
    fn app_limited_ack(&mut self, _now: Instant, _previous_ack: Option<Instant>) {}

    /// A congestion event starts a recovery period: reduce the window, to no less
    /// than `minimum`. The slow start threshold becomes the reduced window.
    fn reduce(&mut self, minimum: u64);

    /// Persistent congestion: the window drops to `minimum`.
    fn collapse(&mut self, minimum: u64);

    /// The maximum datagram size changed: the window is at least `minimum`.
    fn raise_to(&mut self, minimum: u64);
}

/// A congestion controller: an [`Algorithm`] inside the rules RFC 9002 §7 sets for
/// every algorithm (Appendix B's pseudocode, `OnPacketsAcked` and
/// `OnCongestionEvent`).
#[derive(Debug, Clone)]
pub struct Controller<A> {
    mds: u16,
    ssthresh: u64,
    /// RFC 9002 §7.3.2: the recovery period starts "at the time of the
    /// congestion event" and is keyed by send time.
    recovery_start: Option<Instant>,
    /// When the last acknowledgement arrived.
    last_ack: Option<Instant>,
    pub(super) alg: A,
}

impl<A: Algorithm> Controller<A> {
    /// A controller for a path with this maximum datagram size.
    pub fn new(max_datagram_size: u16) -> Self {
        Self {
            mds: max_datagram_size,
            ssthresh: u64::MAX,
            recovery_start: None,
            last_ack: None,
            alg: A::new(initial_window(max_datagram_size)),
        }
    }

    /// RFC 9002 Appendix B.5: "InCongestionRecovery(sent_time): return
    /// sent_time <= congestion_recovery_start_time".
    fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }
}

impl<A: Algorithm> CongestionController for Controller<A> {
    fn on_sent(&mut self, _now: Instant, _bytes: u64) {}

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        let previous_ack = self.last_ack.replace(now);
        // RFC 9002 §7.3.2: "The recovery period aims to limit congestion window
        // reduction to once per round trip. [...] A recovery period ends and the
        // sender enters congestion avoidance when a packet sent during the
        // recovery period is acknowledged." Appendix B.5: "Do not increase
        // congestion_window in recovery period."
        if self.in_recovery(sent) {
            return;
        }
        if app_limited {
            // RFC 9002 §7.8: the window "SHOULD NOT be increased" while underutilized.
            self.alg.app_limited_ack(now, previous_ack);
            return;
        }
        if self.in_slow_start() {
            // RFC 9002 §7.3.1: "While a sender is in slow start, the congestion
            // window increases by the number of bytes acknowledged when each
            // acknowledgment is processed." (RFC 9438 §4.10: CUBIC uses the same.)
            self.alg.grow(bytes);
        } else {
            self.alg.congestion_avoidance(now, bytes, self.mds, rtt);
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        _lost_bytes: u64,
    ) {
        let minimum = minimum_window(self.mds);
        // RFC 9002 Appendix B.6: "No reaction if already in a recovery period."
        if !self.in_recovery(sent) {
            // RFC 9002 §7.3.2: "On entering a recovery period, a sender MUST
            // set the slow start threshold to half the value of the congestion
            // window when loss is detected. The congestion window MUST be set
            // to the reduced value of the slow start threshold before exiting
            // the recovery period." (The algorithm picks the factor.)
            self.recovery_start = Some(now);
            self.alg.reduce(minimum);
            self.ssthresh = self.alg.window();
        }
        if persistent {
            // RFC 9002 §7.6.2: "When persistent congestion is declared, the
            // sender's congestion window MUST be reduced to the minimum
            // congestion window". Appendix B.8 also clears the recovery start.
            self.alg.collapse(minimum);
            self.recovery_start = None;
        }
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.mds = max_datagram_size;
        self.alg.raise_to(minimum_window(max_datagram_size));
    }

    fn window(&self) -> u64 {
        self.alg.window()
    }

    fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    fn name(&self) -> &'static str {
        A::NAME
    }
}

/// Which congestion controller a connection uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CongestionAlgorithm {
    /// RFC 9002 §7 NewReno.
    NewReno,
    /// RFC 9438 CUBIC (the default).
    #[default]
    Cubic,
}

impl CongestionAlgorithm {
    /// A fresh controller for a path with this maximum datagram size.
    pub fn build(self, max_datagram_size: u16) -> Box<dyn CongestionController> {
        match self {
            CongestionAlgorithm::NewReno => Box::new(NewReno::new(max_datagram_size)),
            CongestionAlgorithm::Cubic => Box::new(Cubic::new(max_datagram_size)),
        }
    }
}

/// The initial congestion window.
///
/// RFC 9002 §7.2: "Endpoints SHOULD use an initial congestion window of ten
/// times the maximum datagram size (max_datagram_size), while limiting the
/// window to the larger of 14,720 bytes or twice the maximum datagram size."
pub fn initial_window(max_datagram_size: u16) -> u64 {
    let mds = u64::from(max_datagram_size);
    (10 * mds).min(14_720.max(2 * mds))
}

/// The minimum congestion window.
///
/// RFC 9002 §7.2: "The RECOMMENDED value is 2 * max_datagram_size."
pub fn minimum_window(max_datagram_size: u16) -> u64 {
    2 * u64::from(max_datagram_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_and_minimum_windows() {
        assert_eq!(initial_window(1200), 12_000);
        assert_eq!(initial_window(1452), 14_520);
        assert_eq!(initial_window(1500), 14_720);
        assert_eq!(initial_window(9000), 18_000);
        assert_eq!(minimum_window(1200), 2400);
    }

    #[test]
    fn build_picks_the_algorithm() {
        assert_eq!(CongestionAlgorithm::default(), CongestionAlgorithm::Cubic);
        let c = CongestionAlgorithm::Cubic.build(1200);
        assert_eq!(c.name(), "cubic");
        assert_eq!(c.window(), 12_000);
        assert!(c.in_slow_start());
        let r = CongestionAlgorithm::NewReno.build(1200);
        assert_eq!(r.name(), "newreno");
        assert_eq!(r.ssthresh(), u64::MAX);
    }
}
