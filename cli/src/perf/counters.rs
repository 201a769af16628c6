//! The server's side of `quill perf`: what a connection's `SINK` and `SOURCE` streams
//! moved, and the process CPU time since the first of them, answered to `STATS`
//! (docs/SPEC.md §10).

use std::time::Instant;

use quill_transport::proto::Connection;
use quill_transport::service::ServerStats;

use super::CpuTimes;

/// One connection's perf figures on the server, kept by the event loop beside its
/// streams and dropped with the connection.
#[derive(Debug, Default)]
pub struct PerfCounters {
    /// When the first `SINK` or `SOURCE` started, and the process CPU time then.
    since: Option<(Instant, CpuTimes)>,
    /// Bytes the `SINK` streams counted.
    pub bytes_in: u64,
    /// Bytes the `SOURCE` streams handed to the connection.
    pub bytes_out: u64,
}

impl PerfCounters {
    /// A `SINK` or `SOURCE` starts: the first one starts the clock.
    pub fn start(&mut self) {
        if self.since.is_none() {
            self.since = Some((Instant::now(), CpuTimes::now()));
        }
    }

    /// The `STATS` answer: these counters and the connection's own figures.
    pub fn stats(&self, c: &Connection) -> ServerStats {
        let (seconds, cpu) = match self.since {
            Some((t0, cpu0)) => (t0.elapsed().as_secs_f64(), CpuTimes::now().since(cpu0)),
            None => (0.0, CpuTimes::default()),
        };
        let s = c.stats();
        ServerStats {
            seconds,
            cpu_user: cpu.user,
            cpu_system: cpu.system,
            bytes_received: self.bytes_in,
            bytes_sent: self.bytes_out,
            packets_sent: s.packets_sent,
            packets_lost: s.packets_lost,
            congestion_events: s.congestion_events,
            rtt_us: u64::try_from(c.rtt().as_micros()).unwrap_or(u64::MAX),
        }
    }
}
