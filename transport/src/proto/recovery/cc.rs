//! The congestion controller interface (RFC 9002 §7) and the choice of algorithm.

use std::fmt;
use std::time::Instant;

use super::hystart::{HyStart, SlowStartAck};
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
    /// HyStart++ while the initial slow start lasts (`None` without it or after it).
    hystart: Option<HyStart>,
    pub(super) alg: A,
}

impl<A: Algorithm> Controller<A> {
    /// A controller for a path with this maximum datagram size, with standard slow
    /// start (RFC 9002 §7.3.1).
    pub fn new(max_datagram_size: u16) -> Self {
        Self {
            mds: max_datagram_size,
            ssthresh: u64::MAX,
            recovery_start: None,
            last_ack: None,
            hystart: None,
            alg: A::new(initial_window(max_datagram_size)),
        }
    }

    /// A controller whose initial slow start is HyStart++ (RFC 9406), for a sender
    /// that paces (`paced`) or not.
    ///
    /// RFC 9406 §4.2 recommends HyStart++ for the initial slow start only: a later
    /// slow start (after persistent congestion) is standard, up to the ssthresh the
    /// first one found.
    pub fn with_hystart(max_datagram_size: u16, paced: bool) -> Self {
        Self {
            hystart: Some(HyStart::new(paced)),
            ..Self::new(max_datagram_size)
        }
    }

    /// Whether the sender is in HyStart++'s Conservative Slow Start.
    #[cfg(test)]
    pub fn in_css(&self) -> bool {
        self.hystart.as_ref().is_some_and(HyStart::in_css)
    }

    /// How much an acknowledgement of `bytes` in slow start grows the window, or
    /// `None` when HyStart++ ends slow start with it (`ssthresh = cwnd`).
    fn slow_start_growth(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        rtt: &RttEstimator,
    ) -> Option<u64> {
        let Some(h) = self.hystart.as_mut() else {
            return Some(bytes);
        };
        match h.on_ack(now, sent, bytes, rtt.latest(), self.mds) {
            SlowStartAck::Grow(n) => Some(n),
            SlowStartAck::Exit => {
                // RFC 9406 §4.2: after CSS_ROUNDS rounds of CSS, "enter congestion
                // avoidance by setting the ssthresh to the current cwnd".
                self.hystart = None;
                self.ssthresh = self.alg.window();
                None
            }
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
        // RFC 9002 §7.3.1: "While a sender is in slow start, the congestion
        // window increases by the number of bytes acknowledged when each
        // acknowledgment is processed." (RFC 9438 §4.10: CUBIC uses the same.)
        // HyStart++ grows it less in CSS and may end slow start.
        let growth = if self.in_slow_start() {
            self.slow_start_growth(now, sent, bytes, rtt)
        } else {
            None
        };
        match growth {
            Some(n) => self.alg.grow(n),
            None => self.alg.congestion_avoidance(now, bytes, self.mds, rtt),
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
        // A loss or CE mark in slow start or CSS ends HyStart++: the reduction below
        // is the algorithm's usual one, and the slow start threshold it sets ends
        // slow start (RFC 9406 §4.2; HyStart++ is for the initial slow start only).
        self.hystart = None;
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
///
/// Both start with HyStart++ (RFC 9406) unless the transport configuration turns it
/// off (`TransportConfig::hystart`); see [`CongestionAlgorithm::build_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CongestionAlgorithm {
    /// RFC 9002 §7 NewReno.
    NewReno,
    /// RFC 9438 CUBIC (the default).
    #[default]
    Cubic,
}

impl CongestionAlgorithm {
    /// A fresh controller with standard slow start for a path with this maximum
    /// datagram size.
    pub fn build(self, max_datagram_size: u16) -> Box<dyn CongestionController> {
        self.build_with(max_datagram_size, false, false)
    }

    /// A fresh controller for a path with this maximum datagram size; its initial
    /// slow start is HyStart++ when `hystart`, for a sender that paces (`paced`) or
    /// not (RFC 9406 §4.3: `L` depends on it).
    pub fn build_with(
        self,
        max_datagram_size: u16,
        hystart: bool,
        paced: bool,
    ) -> Box<dyn CongestionController> {
        match (self, hystart) {
            (CongestionAlgorithm::NewReno, false) => Box::new(NewReno::new(max_datagram_size)),
            (CongestionAlgorithm::NewReno, true) => {
                Box::new(NewReno::with_hystart(max_datagram_size, paced))
            }
            (CongestionAlgorithm::Cubic, false) => Box::new(Cubic::new(max_datagram_size)),
            (CongestionAlgorithm::Cubic, true) => {
                Box::new(Cubic::with_hystart(max_datagram_size, paced))
            }
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

    use super::super::hystart::CSS_ROUNDS;
    use super::super::{cubic::CubicWindow, newreno::RenoWindow};
    use std::time::Duration;

    const MDS: u16 = 1200;

    /// A controller with HyStart++ fed one round trip at a time: `packets`
    /// acknowledgements per round, one per ACK, all with the RTT sample `rtt`.
    struct Path<A> {
        cc: Controller<A>,
        rtt: RttEstimator,
        now: Instant,
    }

    impl<A: Algorithm> Path<A> {
        fn new() -> Self {
            Self {
                cc: Controller::with_hystart(MDS, true),
                rtt: RttEstimator::default(),
                now: Instant::now(),
            }
        }

        fn round(&mut self, packets: u32, rtt_ms: u64) {
            let sent = self.now;
            let rtt = Duration::from_millis(rtt_ms);
            for i in 0..packets {
                let at = sent + rtt + Duration::from_micros(u64::from(i));
                self.rtt.update(rtt, Duration::ZERO, Duration::ZERO, true);
                self.cc.on_ack(at, sent, u64::from(MDS), false, &self.rtt);
            }
            self.now = sent + rtt + Duration::from_micros(u64::from(packets));
        }
    }

    fn css_rounds_end_slow_start_at_the_window<A: Algorithm>() {
        let mut p = Path::<A>::new();
        p.round(16, 100);
        p.round(16, 120);
        assert!(p.cc.in_css(), "{}", A::NAME);
        assert!(p.cc.in_slow_start());
        for _ in 1..CSS_ROUNDS {
            p.round(16, 120);
        }
        assert!(p.cc.in_slow_start(), "{}", A::NAME);
        let window = p.cc.window();
        // The first acknowledgement of the next round ends slow start: ssthresh is the
        // window it had, and that acknowledgement is congestion avoidance.
        p.round(1, 120);
        assert_eq!(p.cc.ssthresh(), window, "{}", A::NAME);
        assert!(!p.cc.in_slow_start());
        assert!(!p.cc.in_css());
        assert!(p.cc.window() - window < u64::from(MDS));
    }

    #[test]
    fn hystart_css_ends_in_congestion_avoidance_for_both_algorithms() {
        css_rounds_end_slow_start_at_the_window::<RenoWindow>();
        css_rounds_end_slow_start_at_the_window::<CubicWindow>();
    }

    #[test]
    fn a_loss_in_css_is_the_usual_reduction_and_ends_hystart() {
        let mut p = Path::<RenoWindow>::new();
        p.round(16, 100);
        p.round(16, 120);
        assert!(p.cc.in_css());
        let window = p.cc.window();
        let now = p.now;
        p.cc.on_congestion_event(now, now - Duration::from_millis(1), false, 1200);
        // NewReno halves; the reduced window is the slow start threshold.
        assert_eq!(p.cc.window(), window / 2);
        assert_eq!(p.cc.ssthresh(), window / 2);
        assert!(!p.cc.in_css());
        assert!(p.cc.hystart.is_none());
        // After persistent congestion, slow start is the standard one: a rising RTT
        // does not slow it down.
        p.cc.on_congestion_event(now + Duration::from_secs(1), now, true, 0);
        let w = p.cc.window();
        p.now = now + Duration::from_secs(2);
        p.round(2, 100);
        p.round(9, 200);
        assert_eq!(p.cc.window(), w + 11 * u64::from(MDS));
    }

    #[test]
    fn without_hystart_slow_start_ignores_the_rtt() {
        let mut p = Path::<CubicWindow>::new();
        p.cc = Controller::new(MDS);
        p.round(16, 100);
        p.round(16, 200);
        p.round(16, 400);
        assert!(!p.cc.in_css());
        assert_eq!(p.cc.window(), initial_window(MDS) + 48 * u64::from(MDS));
        let c = CongestionAlgorithm::Cubic.build_with(MDS, false, true);
        assert_eq!(c.window(), initial_window(MDS));
    }
}
