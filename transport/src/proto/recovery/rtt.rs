//! Round-trip time estimation (RFC 9002 §5).
//!
//! The estimator is pure arithmetic: the caller measures `latest_rtt` (ACK
//! receive time minus the send time of the largest newly acknowledged packet)
//! and passes the peer's reported ACK delay.

use std::time::Duration;

/// RFC 9002 §6.1.2: "kGranularity: The timer granularity. [...] The RECOMMENDED
/// value is 1 millisecond."
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// RFC 9002 §6.2.2: "When no previous RTT is available, the initial RTT SHOULD
/// be set to 333 milliseconds."
pub const INITIAL_RTT: Duration = Duration::from_millis(333);

/// The longest PTO period that backoff reaches; see [`RttEstimator::pto_period`].
pub const MAX_PTO_PERIOD: Duration = Duration::from_secs(2);

/// RFC 9002 §6.1.2: "The RECOMMENDED time threshold (kTimeThreshold), expressed
/// as an RTT multiplier, is 9/8." Kept as numerator / denominator.
const TIME_THRESHOLD_NUM: u32 = 9;
const TIME_THRESHOLD_DEN: u32 = 8;

/// Smoothed RTT, RTT variation, minimum and latest RTT of one path.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Duration,
    rttvar: Duration,
    min: Duration,
    has_sample: bool,
}

impl RttEstimator {
    /// A fresh estimator.
    ///
    /// RFC 9002 §5.3: "Before any RTT samples are available for a new path or
    /// when the estimator is reset, the estimator is initialized using the
    /// initial RTT [...] smoothed_rtt = kInitialRtt, rttvar = kInitialRtt / 2".
    pub fn new(initial_rtt: Duration) -> Self {
        Self {
            latest: initial_rtt,
            smoothed: initial_rtt,
            rttvar: initial_rtt / 2,
            min: initial_rtt,
            has_sample: false,
        }
    }

    /// Feeds one RTT sample.
    ///
    /// `max_ack_delay` is applied only when `handshake_confirmed` (§5.3):
    /// "MAY ignore the acknowledgment delay for Initial packets [...] SHOULD
    /// ignore the peer's max_ack_delay until the handshake is confirmed [...]
    /// MUST use the lesser of the acknowledgment delay and the peer's
    /// max_ack_delay after the handshake is confirmed". Pass `ack_delay = 0`
    /// for Initial packets.
    pub fn update(
        &mut self,
        latest: Duration,
        ack_delay: Duration,
        max_ack_delay: Duration,
        handshake_confirmed: bool,
    ) {
        self.latest = latest;
        // RFC 9002 §5.3: "On the first RTT sample after initialization, the
        // estimator is initialized using that sample. [...]
        //   smoothed_rtt = latest_rtt
        //   rttvar = latest_rtt / 2
        //   min_rtt = latest_rtt"
        if !self.has_sample {
            self.has_sample = true;
            self.smoothed = latest;
            self.rttvar = latest / 2;
            self.min = latest;
            return;
        }
        // RFC 9002 §5.2: "min_rtt [...] set to the lesser of min_rtt and
        // latest_rtt on all other samples." (Without ack-delay adjustment.)
        self.min = self.min.min(latest);
        // RFC 9002 §5.3:
        //   ack_delay = decoded acknowledgment delay from ACK frame
        //   if (handshake confirmed):
        //     ack_delay = min(ack_delay, max_ack_delay)
        //   adjusted_rtt = latest_rtt
        //   if (latest_rtt >= min_rtt + ack_delay):
        //     adjusted_rtt = latest_rtt - ack_delay
        //   smoothed_rtt = 7/8 * smoothed_rtt + 1/8 * adjusted_rtt
        //   rttvar_sample = abs(smoothed_rtt - adjusted_rtt)
        //   rttvar = 3/4 * rttvar + 1/4 * rttvar_sample
        // (Appendix A.7 computes rttvar from the previous smoothed_rtt, as here.)
        let ack_delay = if handshake_confirmed {
            ack_delay.min(max_ack_delay)
        } else {
            ack_delay
        };
        // A departure: where the RFC keeps all of the delay in (latest_rtt below
        // min_rtt + ack_delay), only what would take the sample below min_rtt stays.
        // The RFC's rule has the same floor, but a min_rtt from the handshake (which
        // includes the peer's processing) above the path's round trip then kept the
        // whole max_ack_delay in every delayed ACK of a quiet connection, and
        // smoothed_rtt crept up to it (25 ms on a loopback path, issue 17).
        let adjusted = latest.saturating_sub(ack_delay).max(self.min);
        let var_sample = self.smoothed.abs_diff(adjusted);
        self.rttvar = (self.rttvar * 3 + var_sample) / 4;
        self.smoothed = (self.smoothed * 7 + adjusted) / 8;
    }

    /// Smoothed RTT (`smoothed_rtt`).
    pub fn smoothed(&self) -> Duration {
        self.smoothed
    }

    /// RTT variation (`rttvar`).
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Minimum RTT seen (`min_rtt`); the initial RTT before the first sample.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The most recent sample (`latest_rtt`); the initial RTT before the first sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Whether at least one RTT sample was taken.
    pub fn has_sample(&self) -> bool {
        self.has_sample
    }

    /// The PTO period without `max_ack_delay` and without backoff.
    ///
    /// RFC 9002 §6.2.1: "PTO = smoothed_rtt + max(4*rttvar, kGranularity) + max_ack_delay".
    pub fn pto_base(&self) -> Duration {
        self.smoothed
            .saturating_add((self.rttvar * 4).max(GRANULARITY))
    }

    /// The full PTO period for a packet number space, after `pto_count` backoffs, capped.
    ///
    /// RFC 9002 §6.2.1: "When the PTO is armed for Initial or Handshake packet
    /// number spaces, the max_ack_delay in the PTO period computation is set to
    /// 0" — pass `Duration::ZERO` there. "When a PTO timer expires, the PTO
    /// backoff MUST be increased, resulting in the PTO period being set to
    /// twice its current value." `pto_count` is that exponent (saturating).
    ///
    /// The doubled period is capped at [`MAX_PTO_PERIOD`] (a period without backoff
    /// that is longer already, on a path with an RTT of about 700 ms or more, stays as
    /// it is): a deliberate departure from §6.2.1, which names no upper bound. Its
    /// reason for the doubling: "This exponential reduction in the sender's rate is
    /// important because consecutive PTOs might be caused by loss of packets or
    /// acknowledgments due to severe congestion." Above 2 s a probe (one or two
    /// packets) is no load worth reducing further. TCP, whose RTO backoff PTO
    /// follows, bounds the doubling the same way (RFC 6298 §5 (5.5): "The maximum
    /// value discussed in (2.5) above may be used to provide an upper bound to this
    /// doubling operation"), and picoquic caps its retransmit timer at 2 s. Without
    /// a bound a path with short outages starves a connection: after a few probes
    /// lost in outages of 2 s the period is 8, 16, 32 s, and a peer that only
    /// receives idles out while the path is open again.
    pub fn pto_period(&self, max_ack_delay: Duration, pto_count: u32) -> Duration {
        let base = self.pto_base().saturating_add(max_ack_delay);
        let backed_off = match 1u32.checked_shl(pto_count) {
            Some(factor) => base.checked_mul(factor).unwrap_or(Duration::MAX),
            None => Duration::MAX,
        };
        backed_off.min(MAX_PTO_PERIOD.max(base))
    }

    /// The time threshold for loss detection.
    ///
    /// RFC 9002 §6.1.2: "max(kTimeThreshold * max(smoothed_rtt, latest_rtt),
    /// kGranularity)".
    pub fn loss_delay(&self) -> Duration {
        let base = self.latest.max(self.smoothed);
        (base * TIME_THRESHOLD_NUM / TIME_THRESHOLD_DEN).max(GRANULARITY)
    }
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new(INITIAL_RTT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn initial_state_uses_initial_rtt() {
        let rtt = RttEstimator::new(INITIAL_RTT);
        assert!(!rtt.has_sample());
        assert_eq!(rtt.smoothed(), ms(333));
        assert_eq!(rtt.rttvar(), Duration::from_micros(166_500));
        // 333 + 4 * 166.5 = 999 ms: RFC 9002 §6.2.2 "resulting in a 1-second initial timeout" (approx).
        assert_eq!(rtt.pto_base(), ms(999));
    }

    #[test]
    fn first_sample_initialises_everything() {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        // ack_delay is ignored on the first sample.
        rtt.update(ms(100), ms(50), ms(25), true);
        assert!(rtt.has_sample());
        assert_eq!(rtt.smoothed(), ms(100));
        assert_eq!(rtt.rttvar(), ms(50));
        assert_eq!(rtt.min(), ms(100));
        assert_eq!(rtt.latest(), ms(100));
        assert_eq!(rtt.pto_base(), ms(300));
    }

    #[test]
    fn subsequent_samples_follow_ewma() {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(ms(100), ms(0), ms(25), true);
        rtt.update(ms(180), ms(0), ms(25), true);
        // rttvar = 3/4*50 + 1/4*|100-180| = 37.5 + 20 = 57.5
        assert_eq!(rtt.rttvar(), Duration::from_micros(57_500));
        // smoothed = 7/8*100 + 1/8*180 = 110
        assert_eq!(rtt.smoothed(), ms(110));
        assert_eq!(rtt.min(), ms(100));
        rtt.update(ms(60), ms(0), ms(25), true);
        assert_eq!(rtt.min(), ms(60));
    }

    /// The smoothed RTT after a first sample of 100 ms, then `latest` with `ack_delay`
    /// (max_ack_delay 25 ms), both with the handshake `confirmed` or not.
    fn smoothed_after(latest: u64, ack_delay: u64, confirmed: bool) -> Duration {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(ms(100), ms(0), ms(25), confirmed);
        rtt.update(ms(latest), ms(ack_delay), ms(25), confirmed);
        rtt.smoothed()
    }

    #[test]
    fn ack_delay_clamped_to_max_ack_delay_when_confirmed() {
        // latest 200, ack_delay 80 clamped to 25 → adjusted 175.
        assert_eq!(smoothed_after(200, 80, true), (ms(100) * 7 + ms(175)) / 8);
    }

    #[test]
    fn ack_delay_not_clamped_before_confirmation() {
        // adjusted = 200 - 80 = 120.
        assert_eq!(smoothed_after(200, 80, false), (ms(100) * 7 + ms(120)) / 8);
    }

    #[test]
    fn ack_delay_not_subtracted_below_min_rtt() {
        // latest 110 < min 100 + ack_delay 20 → adjusted is min_rtt, 100.
        assert_eq!(smoothed_after(110, 20, true), ms(100));
        // A delayed ACK of 25 ms on a 0.2 ms path after a 6 ms handshake sample: the
        // sample is min_rtt, not 25.2 ms (RFC 9002's rule kept all of the delay in).
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(ms(6), ms(0), ms(25), true);
        for _ in 0..50 {
            rtt.update(Duration::from_micros(25_200), ms(25), ms(25), true);
        }
        assert_eq!(rtt.smoothed(), ms(6));
    }

    #[test]
    fn loss_delay_is_nine_eighths_of_max_and_at_least_granularity() {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(ms(80), ms(0), ms(0), true);
        assert_eq!(rtt.loss_delay(), ms(90));
        rtt.update(ms(160), ms(0), ms(0), true);
        // latest (160) > smoothed (90) → 9/8*160 = 180
        assert_eq!(rtt.loss_delay(), ms(180));
        let mut tiny = RttEstimator::new(INITIAL_RTT);
        tiny.update(Duration::from_micros(100), ms(0), ms(0), true);
        assert_eq!(tiny.loss_delay(), GRANULARITY);
    }

    #[test]
    fn pto_base_uses_granularity_floor_and_backoff() {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(Duration::from_micros(200), ms(0), ms(0), true);
        for _ in 0..50 {
            rtt.update(Duration::from_micros(200), ms(0), ms(0), true);
        }
        // rttvar has decayed well below 250 µs, so 4*rttvar < 1 ms.
        assert_eq!(rtt.pto_base(), rtt.smoothed() + GRANULARITY);
        let base = rtt.pto_base() + ms(25);
        assert_eq!(rtt.pto_period(ms(25), 0), base);
        assert_eq!(rtt.pto_period(ms(25), 3), base * 8);
        // 2^7 × ≈ 26 ms passes the cap.
        assert_eq!(rtt.pto_period(ms(25), 7), MAX_PTO_PERIOD);
        assert_eq!(rtt.pto_period(ms(25), u32::MAX), MAX_PTO_PERIOD);
    }

    #[test]
    fn backoff_never_shortens_a_long_base_period() {
        let mut rtt = RttEstimator::new(INITIAL_RTT);
        rtt.update(ms(1500), ms(0), ms(0), true);
        // 1500 + 4 × 750 = 4500 ms, longer than the cap: it stays as it is.
        assert_eq!(rtt.pto_period(ms(0), 0), ms(4500));
        assert_eq!(rtt.pto_period(ms(0), 5), ms(4500));
        // Before any sample: 999 ms, 1998 ms, then the cap.
        let fresh = RttEstimator::new(INITIAL_RTT);
        assert_eq!(fresh.pto_period(ms(0), 1), ms(1998));
        assert_eq!(fresh.pto_period(ms(0), 2), MAX_PTO_PERIOD);
        assert_eq!(fresh.pto_period(ms(0), 9), MAX_PTO_PERIOD);
    }
}
