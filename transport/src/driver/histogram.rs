//! A fixed-size, allocation-free latency histogram (HdrHistogram-lite) for the event
//! loop's timer lateness.
//!
//! Contract: [`LatencyHistogram::record`] is O(1), never allocates and never fails;
//! values are kept in whole microseconds in log-linear buckets: exact below 64 µs, then
//! 32 buckets per power of two, so a reported percentile is at most 1/32 (≈ 3 %) above
//! the true sample (it is the upper edge of the sample's bucket, never below it).
//! Values from 2^36 µs (≈ 19 hours) up are counted in the last bucket. The exact
//! maximum is kept besides the buckets; a percentile never exceeds it.

use std::time::Duration;

/// Linear sub-buckets per power of two are `1 << (SUB_BITS - 1)`; values below
/// `1 << SUB_BITS` µs have a bucket each.
const SUB_BITS: u32 = 6;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB_COUNT / 2;
/// Values are clamped below `1 << MAX_BITS` µs.
const MAX_BITS: u32 = 36;
const MAX_US: u64 = (1 << MAX_BITS) - 1;
/// Buckets: the exact ones, then `HALF` per power of two up to `MAX_BITS`.
const BUCKETS: usize = ((MAX_BITS - SUB_BITS) as usize + 1) * HALF as usize + HALF as usize;

/// Bucket of a value in µs (at most [`MAX_US`]).
fn bucket_of(us: u64) -> usize {
    if us < SUB_COUNT {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    // `sub` keeps the top SUB_BITS bits: HALF..SUB_COUNT.
    let sub = us >> shift;
    (u64::from(shift) * HALF + sub) as usize
}

/// Largest value (µs) that falls into bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB_COUNT {
        return i;
    }
    let shift = i / HALF - 1;
    let sub = i % HALF + HALF;
    ((sub + 1) << shift) - 1
}

/// A percentile summary of a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Median (upper edge of its bucket; zero when empty).
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample, exact to the microsecond.
    pub max: Duration,
}

/// Fixed-size log-linear histogram of durations in microseconds; see the module docs.
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    max_us: u64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("summary", &self.summary())
            .finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (its only allocation: the bucket array, ≈ 8 KiB).
    pub fn new() -> Self {
        LatencyHistogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            max_us: 0,
        }
    }

    /// Records one sample (whole microseconds, rounded down). O(1), no allocation.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).min(MAX_US);
        self.counts[bucket_of(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Samples recorded since creation or the last [`reset`](Self::reset).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest bucket edge at or below which at least the fraction `q` (0..=1) of
    /// the samples lie, capped at the exact maximum; zero when empty. O(buckets).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        // Rank of the sample wanted, 1-based: ⌈q·n⌉, at least the first.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(bucket_high(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// Count, p50, p99, p99.9 and max.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            p50: self.quantile(0.5),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: Duration::from_micros(self.max_us),
        }
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.max_us = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut last = None;
        for v in (0..5_000u64).chain([MAX_US - 1, MAX_US]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v} → {b}");
            assert!(bucket_high(b) >= v, "{v} above its bucket's edge");
            if b > 0 {
                assert!(bucket_high(b - 1) < v, "{v} belongs to an earlier bucket");
            }
            if let Some((lv, lb)) = last {
                if v == lv + 1 {
                    assert!(b == lb || b == lb + 1, "gap between {lv} and {v}");
                }
            }
            last = Some((v, b));
        }
        assert_eq!(bucket_of(MAX_US), BUCKETS - 1);
        assert_eq!(bucket_high(BUCKETS - 1), MAX_US);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100u64 {
            h.record(us(v % 64));
        }
        // 0..=63 then 0..=36: sorted, the 50th sample is 49 - hence exact below 64 µs.
        let mut sorted: Vec<u64> = (1..=100u64).map(|v| v % 64).collect();
        sorted.sort_unstable();
        assert_eq!(h.quantile(0.5), us(sorted[49]));
        assert_eq!(h.quantile(0.99), us(sorted[98]));
        assert_eq!(h.quantile(0.0), us(0));
        assert_eq!(h.summary().max, us(63));
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn percentiles_of_known_inputs_within_bucket_precision() {
        let mut h = LatencyHistogram::new();
        // 1..=10_000 µs, each once: p50 = 5,000 µs, p99 = 9,900 µs, max 10,000 µs.
        for v in 1..=10_000u64 {
            h.record(us(v));
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.max, us(10_000));
        for (got, want) in [(s.p50, 5_000u64), (s.p99, 9_900), (s.p999, 9_990)] {
            let got = got.as_micros() as u64;
            assert!(
                got >= want && got <= want + want / 32,
                "{got} µs for {want} µs"
            );
        }
        assert_eq!(h.quantile(1.0), us(10_000));
    }

    #[test]
    fn tail_is_seen_and_capped_at_max() {
        let mut h = LatencyHistogram::new();
        for _ in 0..990 {
            h.record(us(1_000));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(40));
        }
        let s = h.summary();
        assert!(s.p50 >= us(1_000) && s.p50 < us(1_032), "{:?}", s.p50);
        // The 990th sample is the last 1 ms one; from the 991st on they are 40 ms.
        assert!(h.quantile(0.98) < us(1_032), "{:?}", h.quantile(0.98));
        assert_eq!(h.quantile(0.995), Duration::from_millis(40));
        assert_eq!(s.max, Duration::from_millis(40));
    }

    #[test]
    fn huge_values_clamp_and_reset_forgets() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_secs(u64::MAX));
        assert_eq!(h.summary().max, us(MAX_US));
        assert_eq!(h.quantile(0.5), us(MAX_US));
        h.reset();
        assert_eq!(h.summary(), LatencySummary::default());
        h.record(us(7));
        assert_eq!(h.quantile(0.5), us(7));
    }
}
