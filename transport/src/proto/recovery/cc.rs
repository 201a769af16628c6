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
