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
//!   chosen through [`CongestionAlgorithm`]; both start with HyStart++ (RFC 9406,
//!   `hystart.rs`) unless it is turned off.
//! - [`Pacer`] (§7.7): a token bucket that spreads a window over an RTT.

mod cc;
mod cubic;
mod hystart;
mod newreno;
mod pacer;
mod rtt;
mod sent;

pub use cc::{CongestionAlgorithm, CongestionController};
pub use cubic::Cubic;
pub use newreno::NewReno;
pub use pacer::Pacer;
pub use rtt::RttEstimator;
pub use sent::{SentPacket, SentPackets};
#[cfg(test)]
pub(crate) use {cc::minimum_window, rtt::INITIAL_RTT};

use std::time::Duration;

/// RFC 9002 §7.6.1: "The RECOMMENDED value for kPersistentCongestionThreshold is 3".
pub const PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// The persistent congestion duration.
///
/// Whether a loss establishes persistent congestion is decided in one place,
/// [`SentPackets::detect_lost_report`] (RFC 9002 §7.6.2), against this duration.
///
/// RFC 9002 §7.6.1: "(smoothed_rtt + max(4*rttvar, kGranularity) +
/// max_ack_delay) * kPersistentCongestionThreshold".
pub fn persistent_congestion_threshold(rtt: &RttEstimator, max_ack_delay: Duration) -> Duration {
    rtt.pto_base()
        .saturating_add(max_ack_delay)
        .checked_mul(PERSISTENT_CONGESTION_THRESHOLD)
        .unwrap_or(Duration::MAX)
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
}
