//! HyStart++ (RFC 9406): slow start that ends on a rise in delay, before the
//! bottleneck queue overflows, instead of on the first loss.
//!
//! It is a change to slow start only, so [`Controller`](super::cc::Controller)
//! applies it for every [`Algorithm`](super::cc::Algorithm) (NewReno and CUBIC):
//! while slow start lasts, [`HyStart::on_ack`] says how much each acknowledgement
//! grows the window and when slow start is over.
//!
//! Rounds. RFC 9406 §4.2 ends a round when the packet that was next to be sent as
//! the round began (`windowEnd = SND.NXT`) is acknowledged. The controller sees send
//! times, not packet numbers (which restart in each packet number space), and send
//! times order the packets of all spaces: `windowEnd` is kept as the time the round
//! began, and the round ends with the acknowledgement of a packet sent at or after it.
//!
//! ACKs. The RFC counts per arriving ACK; the controller is told about one
//! acknowledged packet at a time. The packets acknowledged at one instant are one
//! ACK here: it contributes one RTT sample (the estimator's latest, RFC 9002 §5.1,
//! taken once the ACK frame is processed) and its bytes share one `L * SMSS` cap.

use std::time::{Duration, Instant};

/// RFC 9406 §4.3: "MIN_RTT_THRESH = 4 msec".
pub const MIN_RTT_THRESH: Duration = Duration::from_millis(4);
/// RFC 9406 §4.3: "MAX_RTT_THRESH = 16 msec".
pub const MAX_RTT_THRESH: Duration = Duration::from_millis(16);
/// RFC 9406 §4.3: "MIN_RTT_DIVISOR = 8".
pub const MIN_RTT_DIVISOR: u32 = 8;
/// RFC 9406 §4.3: "N_RTT_SAMPLE = 8".
pub const N_RTT_SAMPLE: u32 = 8;
/// RFC 9406 §4.3: "CSS_GROWTH_DIVISOR = 4".
pub const CSS_GROWTH_DIVISOR: u64 = 4;
/// RFC 9406 §4.3: "CSS_ROUNDS = 5".
pub const CSS_ROUNDS: u32 = 5;
/// RFC 9406 §4.3: "L = infinity if paced, L = 8 if non-paced".
pub const NON_PACED_L: u64 = 8;

/// What one acknowledgement does to a window in slow start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowStartAck {
    /// Still in (standard or conservative) slow start: grow the window by this many bytes.
    Grow(u64),
    /// Slow start is over: set `ssthresh = cwnd` and treat this acknowledgement as
    /// congestion avoidance (RFC 9406 §4.2, after `CSS_ROUNDS` rounds of CSS).
    Exit,
}

/// The HyStart++ state of one path's initial slow start.
///
/// `None` RTTs stand for the RFC's "infinity".
#[derive(Debug, Clone)]
pub struct HyStart {
    /// `L` in segments; `None` is infinity (a paced sender).
    limit_segments: Option<u64>,
    last_round_min_rtt: Option<Duration>,
    current_round_min_rtt: Option<Duration>,
    rtt_sample_count: u32,
    /// `windowEnd`, as a send time: `None` until the first acknowledgement.
    window_end: Option<Instant>,
    /// `cssBaselineMinRtt`: `Some` while in Conservative Slow Start.
    css_baseline_min_rtt: Option<Duration>,
    /// CSS rounds begun, the partial round of the entry included.
    css_rounds: u32,
    /// When the acknowledgement being processed arrived, and the bytes of it already
    /// applied to the window (the `L * SMSS` cap is per ACK).
    ack_at: Option<Instant>,
    ack_bytes: u64,
    /// Bytes acknowledged in CSS not yet turned into growth (the division by
    /// `CSS_GROWTH_DIVISOR` keeps its remainder).
    css_remainder: u64,
}

impl HyStart {
    /// HyStart++ for a sender that paces (`L` = infinity) or not (`L` = 8).
    ///
    /// RFC 9406 §4.3: "A paced TCP implementation SHOULD use L = infinity."
    pub fn new(paced: bool) -> Self {
        Self {
            limit_segments: (!paced).then_some(NON_PACED_L),
            last_round_min_rtt: None,
            current_round_min_rtt: None,
            rtt_sample_count: 0,
            window_end: None,
            css_baseline_min_rtt: None,
            css_rounds: 0,
            ack_at: None,
            ack_bytes: 0,
            css_remainder: 0,
        }
    }

    /// Whether the sender is in Conservative Slow Start.
    pub fn in_css(&self) -> bool {
        self.css_baseline_min_rtt.is_some()
    }

    /// One acknowledged packet of `bytes`, sent at `sent`, acknowledged at `now`, on
    /// a path whose latest RTT sample is `latest_rtt` and maximum datagram size `mds`.
    pub fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        latest_rtt: Duration,
        mds: u16,
    ) -> SlowStartAck {
        // RFC 9406 §4.2, at the start of each round of standard slow start and of
        // CSS: "lastRoundMinRTT = currentRoundMinRTT", "currentRoundMinRTT =
        // infinity", "rttSampleCount = 0".
        if self.window_end.is_none_or(|end| sent >= end) {
            if self.window_end.is_some() && self.in_css() {
                // "CSS lasts at most CSS_ROUNDS rounds. If the transition into CSS
                // happens in the middle of a round, that partial round counts
                // towards the limit." The entry's round was number 1.
                if self.css_rounds >= CSS_ROUNDS {
                    return SlowStartAck::Exit;
                }
                self.css_rounds += 1;
            }
            self.window_end = Some(now);
            self.last_round_min_rtt = self.current_round_min_rtt;
            self.current_round_min_rtt = None;
            self.rtt_sample_count = 0;
        }
        if self.ack_at != Some(now) {
            // A new ACK: its RTT sample. "currentRoundMinRTT =
            // min(currentRoundMinRTT, currentRTT); rttSampleCount += 1".
            self.ack_at = Some(now);
            self.ack_bytes = 0;
            self.current_round_min_rtt = Some(
                self.current_round_min_rtt
                    .map_or(latest_rtt, |m| m.min(latest_rtt)),
            );
            self.rtt_sample_count += 1;
        }
        // "cwnd = cwnd + min(N, L * SMSS)": the bytes of this ACK past L * SMSS
        // do not count.
        let cap = self.limit_segments.map_or(u64::MAX, |l| l * u64::from(mds));
        let counted = bytes.min(cap.saturating_sub(self.ack_bytes));
        self.ack_bytes += bytes;

        let Some(baseline) = self.css_baseline_min_rtt else {
            self.check_delay_increase();
            return SlowStartAck::Grow(counted);
        };
        // RFC 9406 §4.2, in CSS: "cwnd = cwnd + (min(N, L * SMSS) /
        // CSS_GROWTH_DIVISOR)".
        let total = counted + self.css_remainder;
        self.css_remainder = total % CSS_GROWTH_DIVISOR;
        let growth = total / CSS_GROWTH_DIVISOR;
        // "For CSS rounds where at least N_RTT_SAMPLE RTT samples have been
        // obtained, check to see if the current round's minRTT drops below
        // baseline (cssBaselineMinRtt) indicating that slow start exit was
        // spurious: if (currentRoundMinRTT < cssBaselineMinRtt)
        // cssBaselineMinRtt = infinity; resume slow start including HyStart++".
        if self.rtt_sample_count >= N_RTT_SAMPLE
            && self.current_round_min_rtt.is_some_and(|m| m < baseline)
        {
            self.css_baseline_min_rtt = None;
            self.css_rounds = 0;
            self.css_remainder = 0;
        }
        SlowStartAck::Grow(growth)
    }

    /// RFC 9406 §4.2: "For rounds where at least N_RTT_SAMPLE RTT samples have
    /// been obtained and currentRoundMinRTT and lastRoundMinRTT are valid, check
    /// to see if delay increase triggers slow start exit".
    fn check_delay_increase(&mut self) {
        if self.rtt_sample_count < N_RTT_SAMPLE {
            return;
        }
        let (Some(current), Some(last)) = (self.current_round_min_rtt, self.last_round_min_rtt)
        else {
            return;
        };
        // "RttThresh = max(MIN_RTT_THRESH, min(lastRoundMinRTT /
        // MIN_RTT_DIVISOR, MAX_RTT_THRESH))"
        let thresh = (last / MIN_RTT_DIVISOR)
            .min(MAX_RTT_THRESH)
            .max(MIN_RTT_THRESH);
        // "if (currentRoundMinRTT >= (lastRoundMinRTT + RttThresh))
        // cssBaselineMinRtt = currentRoundMinRTT; exit slow start and enter CSS"
        if current >= last + thresh {
            self.css_baseline_min_rtt = Some(current);
            self.css_rounds = 1;
            self.css_remainder = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDS: u16 = 1200;
    const PKT: u64 = MDS as u64;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Drives a [`HyStart`] round by round: each round sends `packets` packets at
    /// the round's start and acknowledges them one per ACK, one `rtt` later.
    struct Rounds {
        h: HyStart,
        now: Instant,
        /// Growth applied so far (the window is not modelled here).
        grown: u64,
        exited: bool,
    }

    impl Rounds {
        fn new() -> Self {
            Self {
                h: HyStart::new(true),
                now: Instant::now(),
                grown: 0,
                exited: false,
            }
        }

        /// One round of `packets` acknowledgements, each with RTT sample `rtt`.
        fn round(&mut self, packets: u64, rtt: Duration) {
            let sent = self.now;
            for i in 0..packets {
                let at = sent + rtt + Duration::from_micros(i);
                match self.h.on_ack(at, sent, PKT, rtt, MDS) {
                    SlowStartAck::Grow(n) => self.grown += n,
                    SlowStartAck::Exit => self.exited = true,
                }
            }
            self.now = sent + rtt + Duration::from_micros(packets);
        }
    }

    /// A round of 16 packets at `first_ms`, then `packets` at `second_ms`.
    fn two_rounds(first_ms: u64, second_ms: u64, packets: u64) -> Rounds {
        let mut r = Rounds::new();
        r.round(16, ms(first_ms));
        r.round(packets, ms(second_ms));
        r
    }

    #[test]
    fn rounds_end_with_the_first_packet_sent_after_they_began() {
        let t0 = Instant::now();
        let mut h = HyStart::new(true);
        // The first acknowledgement starts round 1 at t0+100.
        h.on_ack(t0 + ms(100), t0, PKT, ms(100), MDS);
        assert_eq!(h.window_end, Some(t0 + ms(100)));
        // Packets sent before t0+100 belong to round 1, whatever their order.
        for i in 1..10 {
            h.on_ack(t0 + ms(100 + i), t0 + ms(i), PKT, ms(90 + i), MDS);
        }
        assert_eq!(h.window_end, Some(t0 + ms(100)));
        assert_eq!(h.rtt_sample_count, 10);
        assert_eq!(h.current_round_min_rtt, Some(ms(91)));
        assert_eq!(h.last_round_min_rtt, None);
        // The acknowledgement of a packet sent at t0+100 ends it: round 2 starts and
        // round 1's minimum becomes the last round's.
        h.on_ack(t0 + ms(200), t0 + ms(100), PKT, ms(100), MDS);
        assert_eq!(h.window_end, Some(t0 + ms(200)));
        assert_eq!(h.last_round_min_rtt, Some(ms(91)));
        assert_eq!(h.current_round_min_rtt, Some(ms(100)));
        assert_eq!(h.rtt_sample_count, 1);
    }

    #[test]
    fn packets_acknowledged_at_one_instant_are_one_sample_and_share_the_cap() {
        let t0 = Instant::now();
        // Not paced: L = 8 segments per ACK.
        let mut h = HyStart::new(false);
        let mut grown = 0;
        for i in 0..10 {
            match h.on_ack(t0 + ms(100), t0 + ms(i), PKT, ms(100), MDS) {
                SlowStartAck::Grow(n) => grown += n,
                SlowStartAck::Exit => unreachable!(),
            }
        }
        assert_eq!(h.rtt_sample_count, 1);
        assert_eq!(grown, 8 * PKT);
        // Paced: L is infinite.
        let mut h = HyStart::new(true);
        let grown: u64 = (0..10)
            .map(
                |i| match h.on_ack(t0 + ms(100), t0 + ms(i), PKT, ms(100), MDS) {
                    SlowStartAck::Grow(n) => n,
                    SlowStartAck::Exit => unreachable!(),
                },
            )
            .sum();
        assert_eq!(grown, 10 * PKT);
    }

    #[test]
    fn a_steady_rtt_stays_in_slow_start() {
        let mut r = Rounds::new();
        for _ in 0..10 {
            r.round(16, ms(100));
        }
        assert!(!r.h.in_css());
        assert!(!r.exited);
        assert_eq!(r.grown, 160 * PKT);
    }

    #[test]
    fn an_rtt_rise_of_the_threshold_enters_css() {
        // Last round 100 ms: RttThresh = max(4, min(100/8, 16)) = 12.5 ms.
        let mut r = Rounds::new();
        r.round(16, ms(100));
        r.round(16, ms(112));
        assert!(!r.h.in_css(), "12 ms is below the 12.5 ms threshold");
        // 112 -> 126: threshold 14 ms, reached.
        r.round(16, ms(126));
        assert!(r.h.in_css());
        assert_eq!(r.h.css_baseline_min_rtt, Some(ms(126)));
        assert_eq!(r.h.css_rounds, 1);
        // In CSS the window grows by a quarter of what is acknowledged.
        let before = r.grown;
        r.round(16, ms(126));
        assert_eq!(r.grown - before, 16 * PKT / 4);
    }

    #[test]
    fn the_threshold_is_clamped_to_4_and_16_ms() {
        // 10 ms RTT: 10/8 = 1.25 ms, clamped up to 4 ms.
        let mut r = Rounds::new();
        r.round(16, ms(10));
        r.round(16, ms(13));
        assert!(!r.h.in_css());
        r.round(16, ms(17));
        assert!(r.h.in_css());
        // 400 ms RTT: 400/8 = 50 ms, clamped down to 16 ms.
        assert!(two_rounds(400, 416, 16).h.in_css());
    }

    #[test]
    fn fewer_than_n_rtt_sample_samples_decide_nothing() {
        assert!(!two_rounds(100, 200, N_RTT_SAMPLE as u64 - 1).h.in_css());
        // The eighth sample of the same round decides.
        assert!(two_rounds(100, 200, N_RTT_SAMPLE as u64).h.in_css());
    }

    /// A round at 100 ms, then one at 120 ms, which enters CSS in its middle.
    fn in_css_at_120_ms() -> Rounds {
        let r = two_rounds(100, 120, 16);
        assert!(r.h.in_css());
        r
    }

    #[test]
    fn an_rtt_below_the_baseline_returns_to_slow_start() {
        let mut r = in_css_at_120_ms();
        // The next round's minimum falls below the 120 ms baseline: the exit was
        // spurious, slow start (with HyStart++) resumes at full growth.
        r.round(16, ms(110));
        assert!(!r.h.in_css());
        assert_eq!(r.h.css_rounds, 0);
        let before = r.grown;
        r.round(16, ms(110));
        assert_eq!(r.grown - before, 16 * PKT);
        // And a later rise enters CSS again.
        r.round(16, ms(130));
        assert!(r.h.in_css());
    }

    #[test]
    fn css_rounds_end_slow_start() {
        // CSS starts in the middle of the second round: it is CSS round 1.
        let mut r = in_css_at_120_ms();
        assert_eq!(r.h.css_rounds, 1);
        // Rounds 2..=5 of CSS (RTT stays up).
        for round in 2..=CSS_ROUNDS {
            r.round(16, ms(120));
            assert!(!r.exited, "exited in CSS round {round}");
            assert_eq!(r.h.css_rounds, round);
        }
        // The acknowledgement that ends round 5 ends slow start.
        r.round(1, ms(120));
        assert!(r.exited);
    }
}
