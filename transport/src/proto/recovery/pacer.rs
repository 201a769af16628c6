//! Token-bucket pacing (RFC 9002 §7.7).
//!
//! RFC 9002 §7.7: "A sender SHOULD pace sending of all in-flight packets based
//! on input from the congestion controller. [...] a sender can implement
//! pacing [...] using a token bucket [...] rate = N * congestion_window /
//! smoothed_rtt [...] Using a value for N that is small, but at least 1 (for
//! example, 1.25) ensures that variations in RTT do not result in
//! underutilization of the congestion window."
//!
//! # Burst capacity
//!
//! The bucket holds `clamp(rate * BURST_INTERVAL, MIN_BURST_PACKETS * mds,
//! max(cwnd, MIN_BURST_PACKETS * mds))` bytes, with `BURST_INTERVAL = 2 ms`:
//!
//! - The pacer's wake-ups go through the timer wheel, whose tick is 1 ms and
//!   which rounds deadlines up; a wake-up can therefore come up to ~2 ms after
//!   the previous send. If the bucket held less than 2 ms of rate, the timer
//!   granularity, not the congestion controller, would cap throughput (e.g. a
//!   64 KiB bucket refilled once per ms is only ~520 Mbit/s). Two ticks worth of
//!   tokens keeps the achievable rate at the computed rate.
//! - At least `10 * mds` (the initial window): small windows still send in
//!   batches that fill a GSO super-datagram of 10 segments, and the first
//!   flight is not paced at all.
//! - Never more than the window: a larger bucket would never be usable, since
//!   the congestion window already bounds every burst. On short RTTs (below
//!   ~2.5 ms, e.g. loopback) this makes pacing a no-op, which is what we want:
//!   there the CPU, not the queue, is the bottleneck.

use std::time::{Duration, Instant};

/// RFC 9002 §7.7's N: the rate is `5/4 * cwnd / srtt`.
const RATE_NUM: u128 = 5;
const RATE_DEN: u128 = 4;
/// Time's worth of tokens the bucket can hold (two timer-wheel ticks).
pub const BURST_INTERVAL: Duration = Duration::from_millis(2);
/// Lower bound of the bucket, in datagrams.
pub const MIN_BURST_PACKETS: u64 = 10;

/// A token bucket refilled at `1.25 * window / smoothed_rtt`.
#[derive(Debug, Clone)]
pub struct Pacer {
    tokens: u64,
    capacity: u64,
    last_refill: Instant,
    /// Inputs the capacity was computed from.
    window: u64,
    mds: u16,
    srtt: Duration,
}

impl Pacer {
    /// A full bucket of `10 * mds` bytes.
    pub fn new(now: Instant, mds: u16) -> Self {
        let capacity = MIN_BURST_PACKETS * u64::from(mds);
        Self {
            tokens: capacity,
            capacity,
            last_refill: now,
            window: 0,
            mds,
            srtt: Duration::ZERO,
        }
    }

    /// Whether `bytes` may be sent now: `None` if so, `Some(t)` to wait until `t`.
    ///
    /// A datagram larger than the bucket may be sent once the bucket is full.
    pub fn delay(
        &mut self,
        now: Instant,
        bytes: u64,
        mds: u16,
        window: u64,
        smoothed_rtt: Duration,
    ) -> Option<Instant> {
        let srtt = smoothed_rtt.max(Duration::from_micros(1));
        if window != self.window || mds != self.mds || srtt != self.srtt {
            self.window = window;
            self.mds = mds;
            self.srtt = srtt;
            self.capacity = capacity(window, mds, srtt);
            self.tokens = self.tokens.min(self.capacity);
        }
        let window = window.max(1);
        let srtt_ns = srtt.as_nanos();
        // Refill: elapsed * rate, rate = 5/4 * window / srtt (bytes per ns).
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        // No time elapsed (every packet of one flush after the first: the driver reads
        // the clock once per turn): nothing to refill, and `tokens <= capacity`
        // already holds, so the 128-bit divisions below would change nothing.
        if elapsed > 0 {
            let refill = elapsed * RATE_NUM * u128::from(window) / (RATE_DEN * srtt_ns);
            self.tokens = u128::from(self.tokens)
                .saturating_add(refill)
                .min(u128::from(self.capacity)) as u64;
            // Keep the remainder of the division: advance the refill time only by
            // the time that produced whole tokens, so that frequent calls at a low
            // rate still accumulate. A full bucket forgets the remainder.
            if self.tokens == self.capacity {
                self.last_refill = self.last_refill.max(now);
            } else if refill > 0 {
                let used_ns = refill * RATE_DEN * srtt_ns / (RATE_NUM * u128::from(window));
                self.last_refill += Duration::from_nanos(used_ns.min(u128::from(u64::MAX)) as u64);
            }
        }
        let needed = bytes.min(self.capacity);
        if self.tokens >= needed {
            return None;
        }
        // Time, from the last refill, until the missing tokens accumulate
        // (rounded up, so that a wake-up at the returned time may send).
        let missing = u128::from(needed - self.tokens);
        let wait_ns = (missing * RATE_DEN * srtt_ns).div_ceil(RATE_NUM * u128::from(window));
        let wait = Duration::from_nanos(wait_ns.min(u128::from(u64::MAX)) as u64);
        Some(self.last_refill.checked_add(wait).unwrap_or(now))
    }

    /// `bytes` were sent.
    pub fn on_sent(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }

    #[cfg(test)]
    /// Current burst capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// See the module documentation.
fn capacity(window: u64, mds: u16, srtt: Duration) -> u64 {
    let min = MIN_BURST_PACKETS * u64::from(mds);
    let max = window.max(min);
    let burst = u128::from(window) * RATE_NUM * BURST_INTERVAL.as_nanos()
        / (RATE_DEN * srtt.as_nanos().max(1));
    (burst.min(u128::from(u64::MAX)) as u64).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDS: u16 = 1000;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn initial_burst_is_ten_datagrams() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, MDS);
        // 100 ms RTT, 10 kB window: rate 125 kB/s → 2 ms burst = 250 B → min 10 kB.
        for _ in 0..10 {
            assert_eq!(p.delay(t0, 1000, MDS, 10_000, ms(100)), None);
            p.on_sent(1000);
        }
        assert_eq!(p.capacity(), 10_000);
        assert!(p.delay(t0, 1000, MDS, 10_000, ms(100)).is_some());
    }

    #[test]
    fn spacing_matches_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, MDS);
        // window 100 kB, srtt 100 ms → rate = 1.25 MB/s = 1250 B/ms; 1000 B takes 0.8 ms.
        let window = 100_000;
        let mut now = t0;
        while p.delay(now, 1000, MDS, window, ms(100)).is_none() {
            p.on_sent(1000);
        }
        let mut sent = 0u64;
        let start = now;
        for _ in 0..1000 {
            match p.delay(now, 1000, MDS, window, ms(100)) {
                None => {
                    p.on_sent(1000);
                    sent += 1000;
                }
                Some(t) => {
                    assert!(t > now, "wait time must be in the future");
                    // Waking up exactly at t must allow the send.
                    now = t;
                    assert_eq!(p.delay(now, 1000, MDS, window, ms(100)), None);
                }
            }
        }
        let elapsed = now.duration_since(start).as_secs_f64();
        let rate = sent as f64 / elapsed;
        assert!(
            (rate - 1_250_000.0).abs() / 1_250_000.0 < 0.01,
            "rate {rate}"
        );
        // Gap between sends is 0.8 ms.
        let d = p.delay(now, 1000, MDS, window, ms(100)).unwrap();
        assert!(d - now <= Duration::from_micros(800) && d - now > Duration::from_micros(700));
    }

    #[test]
    fn frequent_polls_at_low_rate_still_refill() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, MDS);
        // rate = 1.25 * 10 kB / 1 s = 12.5 B/ms: each 10 µs poll refills < 1 byte.
        let window = 10_000;
        while p.delay(t0, 1000, MDS, window, ms(1000)).is_none() {
            p.on_sent(1000);
        }
        let mut now = t0;
        let mut polls = 0;
        while p.delay(now, 1000, MDS, window, ms(1000)).is_some() {
            now += Duration::from_micros(10);
            polls += 1;
            assert!(polls < 10_000, "never refilled");
        }
        // 1000 B at 12.5 B/ms = 80 ms.
        assert!(now - t0 >= ms(80) && now - t0 <= ms(81), "{:?}", now - t0);
    }

    #[test]
    fn burst_capacity_scales_with_rate_and_is_capped_by_window() {
        // 100 ms RTT, 10 MB window: 2 ms of 125 MB/s = 250 kB.
        assert_eq!(capacity(10_000_000, 1200, ms(100)), 250_000);
        // Tiny RTT: capped at the window.
        assert_eq!(
            capacity(1_000_000, 1200, Duration::from_micros(50)),
            1_000_000
        );
        // Small window, long RTT: the 10-datagram floor.
        assert_eq!(capacity(20_000, 1200, ms(300)), 12_000);
    }

    #[test]
    fn oversized_send_waits_for_a_full_bucket_only() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, MDS);
        // A 64 kB GSO batch with a 10 kB bucket: allowed when the bucket is full.
        assert_eq!(p.delay(t0, 64_000, MDS, 10_000, ms(100)), None);
        p.on_sent(64_000);
        let t = p.delay(t0, 64_000, MDS, 10_000, ms(100)).unwrap();
        // 10 kB at 125 B/ms = 80 ms.
        assert_eq!(t - t0, ms(80));
        assert_eq!(p.delay(t, 64_000, MDS, 10_000, ms(100)), None);
    }

    #[test]
    fn idle_time_does_not_overfill() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, MDS);
        let later = t0 + Duration::from_secs(3600);
        let mut n = 0;
        while p.delay(later, 1000, MDS, 10_000, ms(100)).is_none() {
            p.on_sent(1000);
            n += 1;
        }
        assert_eq!(n, 10);
    }
}
