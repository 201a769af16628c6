//! Receive-side flow-control windows with auto-tuning (stream and connection level).
//!
//! RFC 9000 §4.1: "A receiver MUST NOT wait for a STREAM_DATA_BLOCKED or
//! DATA_BLOCKED frame before sending a MAX_STREAM_DATA or MAX_DATA frame; doing so
//! could result in the sender being blocked for the rest of the connection."
//! RFC 9000 §4.2: "To avoid blocking a sender, a receiver MAY send a
//! MAX_STREAM_DATA or MAX_DATA frame multiple times within a round trip or send it
//! early enough to allow time for loss of the frame and subsequent recovery."
//!
//! Policy: a new limit (`consumed + window`) is advertised once the application has
//! consumed half a window since the last advertisement. If that happens less than
//! two smoothed RTTs after the previous advertisement, the window is the
//! bottleneck of the transfer and is doubled, up to its maximum (the scheme
//! quic-go and Chromium use). Without an RTT sample no tuning happens.

use std::time::{Duration, Instant};

/// The largest value flow-control limits can take (a varint).
pub const MAX_LIMIT: u64 = (1 << 62) - 1;

/// One receive window: the limit we advertised and how it moves.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    /// The limit the peer knows (last advertised, or the transport parameter).
    limit: u64,
    /// Current window size.
    window: u64,
    /// Auto-tuning cap.
    max_window: u64,
    /// When the last update was decided, if one was.
    last_update: Option<Instant>,
}

impl RecvWindow {
    /// A window of `window` bytes (the initial limit), growing up to `max_window`.
    pub fn new(window: u64, max_window: u64) -> Self {
        let window = window.min(MAX_LIMIT);
        Self {
            limit: window,
            window,
            max_window: max_window.max(window),
            last_update: None,
        }
    }

    /// The limit currently advertised to the peer.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The current window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Grows the window to at least `min` (bounded by the cap); never shrinks it.
    pub fn ensure_window(&mut self, min: u64) {
        self.window = self.window.max(min.min(self.max_window));
    }

    /// The application has consumed `consumed` bytes in total. Returns the new limit
    /// to advertise when half a window has been consumed since the last update.
    pub fn on_consumed(
        &mut self,
        consumed: u64,
        now: Option<Instant>,
        rtt: Option<Duration>,
    ) -> Option<u64> {
        if self.limit.saturating_sub(consumed) > self.window / 2 || self.limit >= MAX_LIMIT {
            return None;
        }
        if let (Some(now), Some(rtt), Some(last)) = (now, rtt, self.last_update) {
            if now.saturating_duration_since(last) < rtt.saturating_mul(2) {
                self.window = self.window.saturating_mul(2).min(self.max_window);
            }
        }
        if now.is_some() {
            self.last_update = now;
        }
        let new = consumed.saturating_add(self.window).min(MAX_LIMIT);
        if new <= self.limit {
            return None;
        }
        self.limit = new;
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_after_half_a_window() {
        let mut w = RecvWindow::new(100, 100);
        assert_eq!(w.on_consumed(49, None, None), None);
        assert_eq!(w.on_consumed(50, None, None), Some(150));
        assert_eq!(w.limit(), 150);
        assert_eq!(w.on_consumed(60, None, None), None);
        assert_eq!(w.on_consumed(100, None, None), Some(200));
    }

    #[test]
    fn fast_updates_double_the_window_up_to_the_cap() {
        let t0 = Instant::now();
        let rtt = Some(Duration::from_millis(10));
        let mut w = RecvWindow::new(100, 300);
        assert_eq!(w.on_consumed(50, Some(t0), rtt), Some(150));
        assert_eq!(w.window(), 100, "first update has no reference point");
        // Next half window consumed within 2 RTTs: doubling.
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(w.on_consumed(100, Some(t1), rtt), Some(300));
        assert_eq!(w.window(), 200);
        let t2 = t1 + Duration::from_millis(5);
        assert_eq!(w.on_consumed(200, Some(t2), rtt), Some(500));
        assert_eq!(w.window(), 300, "capped");
    }

    #[test]
    fn slow_updates_keep_the_window() {
        let t0 = Instant::now();
        let rtt = Some(Duration::from_millis(10));
        let mut w = RecvWindow::new(100, 1000);
        w.on_consumed(50, Some(t0), rtt);
        let t1 = t0 + Duration::from_millis(25);
        assert_eq!(w.on_consumed(100, Some(t1), rtt), Some(200));
        assert_eq!(w.window(), 100);
    }

    #[test]
    fn ensure_window_is_capped_and_monotonic() {
        let mut w = RecvWindow::new(100, 400);
        w.ensure_window(50);
        assert_eq!(w.window(), 100);
        w.ensure_window(1000);
        assert_eq!(w.window(), 400);
    }

    #[test]
    fn limit_never_exceeds_varint_range() {
        let mut w = RecvWindow::new(MAX_LIMIT, u64::MAX);
        assert_eq!(w.limit(), MAX_LIMIT);
        assert_eq!(w.on_consumed(MAX_LIMIT, None, None), None);
    }
}
