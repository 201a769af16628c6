//! Loss recovery and congestion control (RFC 9002), sans-IO.
//!
//! Contract: nothing here reads a clock; every time-dependent function takes
//! `now: Instant`. The pieces are independent and the connection composes them
//! per path / per packet number space:
//!
//! - [`RttEstimator`] (§5): smoothed RTT, variation, PTO base, loss delay.
//! - [`SentPackets`] (§6.1): one per packet number space; ACK processing and
//!   packet/time threshold loss detection, with the numbers the congestion
//!   controller and the persistent congestion check (§7.6) need.
//! - [`CongestionController`] (§7) with [`NewReno`] and [`Cubic`] (RFC 9438),
//!   chosen through [`CongestionAlgorithm`].
//! - [`Pacer`] (§7.7): a token bucket that spreads a window over an RTT.

mod cc;
mod cubic;
mod newreno;
mod pacer;
mod rtt;
mod sent;

pub use cc::{initial_window, minimum_window, CongestionAlgorithm, CongestionController};
pub use cubic::Cubic;
pub use newreno::NewReno;
pub use pacer::Pacer;
pub use rtt::{RttEstimator, GRANULARITY, INITIAL_RTT};
pub use sent::{AckError, AckSummary, LossReport, SentPacket, SentPackets, PACKET_THRESHOLD};

use std::time::{Duration, Instant};

/// RFC 9002 §7.6.1: "The RECOMMENDED value for kPersistentCongestionThreshold is 3".
pub const PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// The persistent congestion duration.
///
/// RFC 9002 §7.6.1: "(smoothed_rtt + max(4*rttvar, kGranularity) +
/// max_ack_delay) * kPersistentCongestionThreshold".
pub fn persistent_congestion_threshold(rtt: &RttEstimator, max_ack_delay: Duration) -> Duration {
    rtt.pto_base()
        .saturating_add(max_ack_delay)
        .checked_mul(PERSISTENT_CONGESTION_THRESHOLD)
        .unwrap_or(Duration::MAX)
}

/// Decides persistent congestion from the send times of lost ack-eliciting
/// packets between which no packet was acknowledged (the caller guarantees
/// that; [`SentPackets::detect_lost_report`] computes it itself).
///
/// RFC 9002 §7.6.2: "A sender establishes persistent congestion after the
/// receipt of an acknowledgment if two packets that are ack-eliciting are
/// declared lost, and: across all packet number spaces, none of the packets
/// sent between the send times of these two packets are acknowledged; the
/// duration between the send times of these two packets exceeds the persistent
/// congestion duration; a prior RTT sample existed when these two packets were
/// sent." Packets sent before `first_rtt_sample` are ignored; without a sample
/// there is no persistent congestion.
pub fn is_persistent_congestion(
    lost_ack_eliciting_sent: impl IntoIterator<Item = Instant>,
    first_rtt_sample: Option<Instant>,
    threshold: Duration,
) -> bool {
    let Some(sample) = first_rtt_sample else {
        return false;
    };
    let mut span: Option<(Instant, Instant)> = None;
    for t in lost_ack_eliciting_sent.into_iter().filter(|&t| t >= sample) {
        span = Some(match span {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }
    span.is_some_and(|(lo, hi)| hi - lo > threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn threshold_is_three_ptos_with_max_ack_delay() {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(ms(100), ms(0), ms(0), true);
        // (100 + 4*50 + 25) * 3 = 975 ms
        assert_eq!(persistent_congestion_threshold(&rtt, ms(25)), ms(975));
    }

    #[test]
    fn persistent_congestion_needs_span_beyond_threshold_after_first_sample() {
        let t0 = std::time::Instant::now();
        let threshold = ms(975);
        let times = [t0 + ms(100), t0 + ms(500), t0 + ms(1076)];
        assert!(is_persistent_congestion(times, Some(t0), threshold));
        // Exactly the threshold is not enough ("exceeds").
        assert!(!is_persistent_congestion(
            [t0 + ms(100), t0 + ms(1075)],
            Some(t0),
            threshold
        ));
        // Without an RTT sample: never.
        assert!(!is_persistent_congestion(times, None, threshold));
        // Packets sent before the first sample do not count.
        assert!(!is_persistent_congestion(
            times,
            Some(t0 + ms(200)),
            threshold
        ));
        // A single packet is not a span.
        assert!(!is_persistent_congestion(
            [t0 + ms(100)],
            Some(t0),
            threshold
        ));
    }
}
