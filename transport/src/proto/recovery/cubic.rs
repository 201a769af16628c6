//! CUBIC congestion control (RFC 9438), in bytes, with QUIC's recovery period
//! (RFC 9002 §7.3.2) and persistent congestion (§7.6).
//!
//! The window is kept as `f64` bytes; the RFC's formulas are in segments, so
//! they are evaluated in segments and scaled by the maximum datagram size.

use std::time::Instant;

use super::cc::{Algorithm, Controller};
use super::RttEstimator;
// The tests drive the controller through its trait.
#[cfg(test)]
use super::CongestionController;

/// RFC 9438 §5: "C SHOULD be set to 0.4."
pub(crate) const C: f64 = 0.4;
/// RFC 9438 §4.6: "β_cubic SHOULD be set to 0.7".
pub(crate) const BETA: f64 = 0.7;
/// RFC 9438 §4.3: "α_cubic = 3 * (1 - β_cubic) / (1 + β_cubic)".
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// CUBIC: W_cubic(t) = C * (t - K)^3 + W_max, with a Reno-friendly region and
/// fast convergence.
pub type Cubic = Controller<CubicWindow>;

/// CUBIC's window and the state of its curve.
#[derive(Debug, Clone)]
pub struct CubicWindow {
    cwnd: f64,
    /// Window (bytes) just before the last reduction, after fast convergence.
    w_max: f64,
    /// RFC 9438 §4.6 `cwnd_prior`: the window just before the last reduction.
    cwnd_prior: f64,
    /// Seconds the curve takes to reach `w_max` from the epoch start.
    k: f64,
    /// Start of the current congestion avoidance epoch (`t_epoch`).
    epoch_start: Option<Instant>,
    /// RFC 9438 §4.3 `W_est`, bytes.
    w_est: f64,
}

#[cfg(test)]
impl Cubic {
    /// `K` of the current epoch, in seconds (for tests and qlog).
    pub fn k(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.alg.k)
    }

    /// `W_max` in bytes (for tests and qlog).
    pub fn w_max(&self) -> u64 {
        self.alg.w_max as u64
    }
}

impl CubicWindow {
    /// RFC 9438 §4.2, Figure 1: "W_cubic(t) = C * (t - K)^3 + W_max", in bytes,
    /// for segments of `mds` bytes.
    fn w_cubic(&self, t: f64, mds: f64) -> f64 {
        mds * C * (t - self.k).powi(3) + self.w_max
    }

    fn start_epoch(&mut self, now: Instant, mds: f64) {
        self.epoch_start = Some(now);
        // RFC 9438 §4.2: "K = cubic_root((W_max - cwnd_epoch) / C)" where
        // "cwnd_epoch is the cwnd at the beginning of the current congestion
        // avoidance stage". When the window is already above W_max (slow start
        // ended without loss, or W_max was lowered), the plateau is here: K = 0.
        if self.w_max <= self.cwnd {
            self.w_max = self.cwnd;
            self.k = 0.0;
        } else {
            self.k = ((self.w_max - self.cwnd) / mds / C).cbrt();
        }
        // RFC 9438 §4.3: "W_est is set equal to cwnd_epoch at the start of the
        // congestion avoidance stage."
        self.w_est = self.cwnd;
    }
}

impl Algorithm for CubicWindow {
    const NAME: &'static str = "cubic";

    fn new(initial_window: u64) -> Self {
        Self {
            cwnd: initial_window as f64,
            w_max: 0.0,
            cwnd_prior: 0.0,
            k: 0.0,
            epoch_start: None,
            w_est: 0.0,
        }
    }

    fn window(&self) -> u64 {
        self.cwnd as u64
    }

    fn grow(&mut self, bytes: u64) {
        self.cwnd += bytes as f64;
    }

    fn app_limited_ack(&mut self, now: Instant, previous_ack: Option<Instant>) {
        // Time spent app-limited is kept off the cubic clock (shift t_epoch), so
        // the curve resumes where it paused instead of jumping ahead after an
        // idle period.
        if let (Some(epoch), Some(prev)) = (self.epoch_start, previous_ack) {
            self.epoch_start = Some(epoch + now.saturating_duration_since(prev));
        }
    }

    fn congestion_avoidance(&mut self, now: Instant, bytes: u64, mds: u16, rtt: &RttEstimator) {
        let bytes = bytes as f64;
        let mds = f64::from(mds);
        if self.epoch_start.is_none() {
            self.start_epoch(now, mds);
        }
        let epoch = self.epoch_start.unwrap_or(now);
        let t = now.saturating_duration_since(epoch).as_secs_f64();
        let srtt = rtt.smoothed().as_secs_f64();

        // RFC 9438 §4.3: "W_est = W_est + α_cubic * segments_acked / cwnd" and
        // "Once W_est has grown to reach the cwnd at the time of most recently
        // setting ssthresh -- that is, W_est >= cwnd_prior -- the sender SHOULD
        // set α_cubic to 1 to ensure that it can achieve the same congestion
        // window increment rate as Reno".
        let alpha = if self.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA
        };
        self.w_est += alpha * mds * bytes / self.cwnd;

        // RFC 9438 §4.3: "If W_cubic(t) is less than W_est, then CUBIC is in
        // the Reno-friendly region and cwnd SHOULD be set to W_est at each
        // reception of a new ACK."
        if self.w_cubic(t, mds) < self.w_est {
            self.cwnd = self.cwnd.max(self.w_est);
            return;
        }
        // RFC 9438 §4.4/§4.5: target = W_cubic(t + RTT) clamped to
        // [cwnd, 1.5 * cwnd]; "cwnd MUST be incremented by
        // (target - cwnd) / cwnd for each received new ACK" (per segment).
        let target = self
            .w_cubic(t + srtt, mds)
            .clamp(self.cwnd, 1.5 * self.cwnd);
        self.cwnd += (target - self.cwnd) / self.cwnd * bytes;
    }

    fn reduce(&mut self, minimum: u64) {
        // RFC 9438 §4.7 fast convergence: "if (cwnd < W_max and
        // fast_convergence_enabled) W_max = cwnd * (1 + β_cubic) / 2
        // else W_max = cwnd".
        self.w_max = if self.cwnd < self.w_max {
            self.cwnd * (1.0 + BETA) / 2.0
        } else {
            self.cwnd
        };
        // RFC 9438 §4.6: "ssthresh = cwnd * β_cubic; cwnd_prior = cwnd;
        // cwnd = max(ssthresh, 2)" (2 segments: the minimum window).
        self.cwnd_prior = self.cwnd;
        self.cwnd = (self.cwnd * BETA).max(minimum as f64);
        self.epoch_start = None;
    }

    fn collapse(&mut self, minimum: u64) {
        // The next epoch restarts the curve from slow start.
        self.cwnd = minimum as f64;
        self.epoch_start = None;
    }

    fn raise_to(&mut self, minimum: u64) {
        self.cwnd = self.cwnd.max(minimum as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MDS: u16 = 1000;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn rtt_of(d: Duration) -> RttEstimator {
        let mut rtt = RttEstimator::default();
        rtt.update(d, Duration::ZERO, Duration::ZERO, true);
        rtt
    }

    /// Acks one window of full-size packets per RTT, evenly spread, each
    /// sent one RTT before its ack. Returns the time after `rounds` rounds.
    fn run_rounds(cc: &mut Cubic, rtt: &RttEstimator, mut now: Instant, rounds: usize) -> Instant {
        let r = rtt.smoothed();
        for _ in 0..rounds {
            let n = (cc.window() / u64::from(MDS)).max(1);
            let step = r / n as u32;
            for _ in 0..n {
                now += step;
                cc.on_ack(now, now - r, u64::from(MDS), false, rtt);
            }
        }
        now
    }

    /// Slow start up to `segments`, then one loss detected at `now`.
    /// The congestion window in segments.
    fn window_segments(cc: &Cubic) -> f64 {
        cc.window() as f64 / f64::from(MDS)
    }

    fn cubic_after_loss_at(segments: u64, rtt: &RttEstimator) -> (Cubic, Instant) {
        let t0 = Instant::now();
        let mut cc = Cubic::new(MDS);
        while cc.window() < segments * u64::from(MDS) {
            cc.on_ack(t0, t0, u64::from(MDS), false, rtt);
        }
        assert_eq!(cc.window(), segments * u64::from(MDS));
        let now = t0 + ms(1000);
        cc.on_congestion_event(now, now - ms(1), false, u64::from(MDS));
        (cc, now)
    }

    /// An RTT estimate of `rtt` and [`cubic_after_loss_at`] 100 segments.
    fn after_loss_at_100(rtt: Duration) -> (RttEstimator, Cubic, Instant) {
        let rtt = rtt_of(rtt);
        let (cc, loss) = cubic_after_loss_at(100, &rtt);
        (rtt, cc, loss)
    }

    fn formula_segments(t: f64, k: f64, w_max: f64) -> f64 {
        C * (t - k).powi(3) + w_max
    }

    /// W_cubic(t) in segments after a loss at W_max = 100 segments:
    /// K = ∛(100 × (1 − 0.7) / 0.4) = ∛75.
    fn w_cubic_from_100(t: f64) -> f64 {
        formula_segments(t, (75.0f64).cbrt(), 100.0)
    }

    #[test]
    fn reduction_is_beta_and_k_matches_formula() {
        let (rtt, mut cc, now) = after_loss_at_100(ms(100));
        assert_eq!(cc.window(), 70_000);
        assert_eq!(cc.ssthresh(), 70_000);
        assert_eq!(cc.w_max(), 100_000);
        // First ack in congestion avoidance starts the epoch.
        cc.on_ack(now + ms(100), now + ms(1), u64::from(MDS), false, &rtt);
        // K = cbrt(W_max * (1 - β) / C) = cbrt(100 * 0.3 / 0.4) = cbrt(75) s.
        let expected = (100.0f64 * (1.0 - BETA) / C).cbrt();
        assert!(
            (cc.k().as_secs_f64() - expected).abs() < 1e-6,
            "{:?}",
            cc.k()
        );
    }

    #[test]
    fn window_follows_the_cubic_curve() {
        // W_max = 1000 segments, RTT 100 ms: K = cbrt(750) ≈ 9.09 s, and W_est
        // (≈ 700 + 0.53 per round) stays far below the curve, so the window is
        // the cubic function through the concave, plateau and convex regions.
        let r = ms(100);
        let rtt = rtt_of(r);
        let (mut cc, loss) = cubic_after_loss_at(1000, &rtt);
        let k = (750.0f64).cbrt();
        let mut now = loss;
        // The epoch starts at the first ack, one step into the first round.
        let epoch = loss + r / 700;
        for round in 0..130 {
            now = run_rounds(&mut cc, &rtt, now, 1);
            let t = now.duration_since(epoch).as_secs_f64();
            let w = window_segments(&cc);
            // Within a round the window moves towards W_cubic(t + RTT); after
            // it, it sits between the curve one RTT back and one RTT ahead.
            let lo = formula_segments(t - r.as_secs_f64(), k, 1000.0);
            let hi = formula_segments(t + r.as_secs_f64(), k, 1000.0);
            assert!(
                w >= lo - 1.0 && w <= hi + 1.0,
                "round {round}: t={t:.3} window {w:.2} outside [{lo:.2}, {hi:.2}]"
            );
        }
        // Concave, plateau, then convex: at 13 s the window is well past W_max.
        assert!(cc.window() > 1_015_000, "{}", cc.window());
    }

    #[test]
    fn reno_friendly_takes_over_in_the_early_convex_region() {
        // W_max = 100: after W_est reaches cwnd_prior it grows 1 segment per
        // round and overtakes the flat part of the cubic curve.
        let (rtt, mut cc, loss) = after_loss_at_100(ms(100));
        let now = run_rounds(&mut cc, &rtt, loss, 64);
        let t = now.duration_since(loss).as_secs_f64();
        let cubic = w_cubic_from_100(t);
        let w = window_segments(&cc);
        assert!(w > cubic + 1.0, "window {w} vs W_cubic {cubic}");
    }

    #[test]
    fn plateau_is_reached_near_k() {
        let (rtt, mut cc, loss) = after_loss_at_100(ms(100));
        // K ≈ 4.217 s ≈ 42 rounds. Around K the window is close to W_max.
        let now = run_rounds(&mut cc, &rtt, loss, 42);
        let w = window_segments(&cc);
        assert!((w - 100.0).abs() < 1.5, "window {w} at t={:?}", now - loss);
        // And it was below W_max well before K (concave region).
        let (mut early, loss2) = cubic_after_loss_at(100, &rtt);
        run_rounds(&mut early, &rtt, loss2, 10);
        let we = window_segments(&early);
        let expected = w_cubic_from_100(1.0);
        assert!(
            (we - expected).abs() < 2.0,
            "window {we} vs formula {expected}"
        );
    }

    #[test]
    fn reno_friendly_region_on_short_rtt() {
        // With a 1 ms RTT Reno would grow by α per millisecond, far faster than
        // the cubic curve near its plateau: CUBIC must follow W_est.
        let (rtt, mut cc, loss) = after_loss_at_100(ms(1));
        let now = run_rounds(&mut cc, &rtt, loss, 20);
        let w = window_segments(&cc);
        let t = now.duration_since(loss).as_secs_f64();
        let cubic_now = w_cubic_from_100(t);
        assert!(
            w > cubic_now + 5.0,
            "window {w} should exceed W_cubic {cubic_now}"
        );
        // 20 rounds of α ≈ 0.529 segments each on top of 70 (±1 for the per-ack approximation).
        let reno = 70.0 + 20.0 * ALPHA;
        assert!((w - reno).abs() < 1.0, "window {w} vs W_est {reno}");
        // Once W_est passes cwnd_prior (100), α becomes 1: 57 rounds reach it,
        // then growth is one segment per round.
        let now = run_rounds(&mut cc, &rtt, now, 60);
        let before = window_segments(&cc);
        run_rounds(&mut cc, &rtt, now, 10);
        let gained = window_segments(&cc) - before;
        assert!(
            (gained - 10.0).abs() < 1.0,
            "gained {gained} segments in 10 rounds"
        );
    }

    #[test]
    fn fast_convergence_lowers_w_max() {
        let (rtt, mut cc, loss) = after_loss_at_100(ms(100));
        // Second loss before regaining W_max: cwnd (≈70+) < W_max (100).
        let now = run_rounds(&mut cc, &rtt, loss, 2);
        let cwnd = cc.window() as f64;
        cc.on_congestion_event(now, now - ms(1), false, u64::from(MDS));
        let expected = cwnd * (1.0 + BETA) / 2.0;
        assert!(
            (cc.w_max() as f64 - expected).abs() <= 1.0,
            "{} vs {expected}",
            cc.w_max()
        );
        assert!((cc.window() as f64 - cwnd * BETA).abs() <= 1.0);
    }

    #[test]
    fn one_reduction_per_recovery_period_and_no_growth_in_it() {
        let (rtt, mut cc, loss) = after_loss_at_100(ms(100));
        cc.on_congestion_event(loss + ms(5), loss - ms(50), false, 1000);
        assert_eq!(cc.window(), 70_000);
        cc.on_ack(loss + ms(10), loss - ms(10), 1000, false, &rtt);
        assert_eq!(cc.window(), 70_000);
    }

    #[test]
    fn persistent_congestion_collapses_and_slow_start_resumes() {
        let (rtt, mut cc, loss) = after_loss_at_100(ms(100));
        cc.on_congestion_event(loss + ms(500), loss + ms(300), true, 10_000);
        assert_eq!(cc.window(), 2000);
        assert!(cc.in_slow_start());
        cc.on_ack(loss + ms(600), loss + ms(550), 1000, false, &rtt);
        assert_eq!(cc.window(), 3000);
    }

    #[test]
    fn app_limited_acks_do_not_grow_or_advance_the_curve() {
        let (rtt, mut cc, loss) = after_loss_at_100(ms(100));
        let now = run_rounds(&mut cc, &rtt, loss, 1);
        let w = cc.window();
        // Ten seconds of app-limited acks.
        let mut t = now;
        for _ in 0..100 {
            t += ms(100);
            cc.on_ack(t, t - ms(100), 1000, true, &rtt);
        }
        assert_eq!(cc.window(), w);
        // The next round grows like the second round after the loss, not like
        // a round ten seconds into the epoch (which would hit the 1.5x cap).
        let (mut reference, loss2) = cubic_after_loss_at(100, &rtt);
        let now2 = run_rounds(&mut reference, &rtt, loss2, 1);
        run_rounds(&mut reference, &rtt, now2, 1);
        run_rounds(&mut cc, &rtt, t, 1);
        let diff = (cc.window() as f64 - reference.window() as f64).abs();
        assert!(diff < 2000.0, "{} vs {}", cc.window(), reference.window());
    }
}
