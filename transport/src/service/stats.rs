//! The answer to `STATS` (docs/SPEC.md §10): the server's side of a perf test on this
//! connection, as one `OK key=value ...` line.
//!
//! Keys a client does not know are skipped, so a server may add some; a line that
//! lacks a key below is not a STATS answer ([`ServerStats::parse`] gives `None`).

use std::fmt::Write;

/// The server's figures for one connection, from its first `SINK` or `SOURCE` request
/// until the `STATS` request.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServerStats {
    /// Seconds since the connection's first `SINK` or `SOURCE` request (0 without one).
    pub seconds: f64,
    /// User CPU seconds the server process used in that time (all its threads).
    pub cpu_user: f64,
    /// System CPU seconds the server process used in that time.
    pub cpu_system: f64,
    /// Bytes the connection's `SINK` streams counted.
    pub bytes_received: u64,
    /// Bytes the connection's `SOURCE` streams handed to the connection.
    pub bytes_sent: u64,
    /// Packets the server sent on the connection.
    pub packets_sent: u64,
    /// Packets the server declared lost on the connection (their frames are sent again).
    pub packets_lost: u64,
    /// Congestion events of the server's sending side.
    pub congestion_events: u64,
    /// The server's smoothed RTT estimate, in microseconds.
    pub rtt_us: u64,
}

impl ServerStats {
    /// The answer line (with its `\n`).
    pub fn line(&self) -> String {
        let mut s = String::from("OK");
        let _ = write!(
            s,
            " seconds={:.6} cpu_user={:.6} cpu_system={:.6}",
            self.seconds, self.cpu_user, self.cpu_system
        );
        for (key, v) in [
            ("bytes_received", self.bytes_received),
            ("bytes_sent", self.bytes_sent),
            ("packets_sent", self.packets_sent),
            ("packets_lost", self.packets_lost),
            ("congestion_events", self.congestion_events),
            ("rtt_us", self.rtt_us),
        ] {
            let _ = write!(s, " {key}={v}");
        }
        s.push('\n');
        s
    }

    /// Parses an answer line (without its `\n`); `None` for anything else (an `ERR`
    /// from a server that predates `STATS`, a missing key, a malformed value).
    pub fn parse(line: &str) -> Option<ServerStats> {
        let mut rest = line.strip_prefix("OK ")?.split(' ');
        let mut out = ServerStats::default();
        // Each key must appear: bit i of `seen` is key i below.
        let mut seen = 0u16;
        rest.try_for_each(|pair| {
            let (key, value) = pair.split_once('=')?;
            let seconds = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
            let (bit, ok) = match key {
                "seconds" => (0, seconds(value).map(|v| out.seconds = v)),
                "cpu_user" => (1, seconds(value).map(|v| out.cpu_user = v)),
                "cpu_system" => (2, seconds(value).map(|v| out.cpu_system = v)),
                "bytes_received" => (3, value.parse().ok().map(|v| out.bytes_received = v)),
                "bytes_sent" => (4, value.parse().ok().map(|v| out.bytes_sent = v)),
                "packets_sent" => (5, value.parse().ok().map(|v| out.packets_sent = v)),
                "packets_lost" => (6, value.parse().ok().map(|v| out.packets_lost = v)),
                "congestion_events" => (7, value.parse().ok().map(|v| out.congestion_events = v)),
                "rtt_us" => (8, value.parse().ok().map(|v| out.rtt_us = v)),
                _ => return Some(()),
            };
            ok?;
            seen |= 1 << bit;
            Some(())
        })?;
        (seen == 0x1ff).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_byte_exact() {
        let s = ServerStats {
            seconds: 2.5,
            cpu_user: 0.25,
            cpu_system: 1.0,
            bytes_received: 10 << 20,
            bytes_sent: 7,
            packets_sent: 9000,
            packets_lost: 3,
            congestion_events: 1,
            rtt_us: 250,
        };
        let line = s.line();
        assert_eq!(
            line,
            "OK seconds=2.500000 cpu_user=0.250000 cpu_system=1.000000 bytes_received=10485760 \
             bytes_sent=7 packets_sent=9000 packets_lost=3 congestion_events=1 rtt_us=250\n"
        );
        assert_eq!(ServerStats::parse(line.trim_end()), Some(s));
    }

    #[test]
    fn unknown_keys_are_skipped_and_missing_or_bad_ones_refused() {
        let full = ServerStats::default().line();
        let full = full.trim_end();
        assert!(ServerStats::parse(&format!("{full} future_key=x")).is_some());
        for bad in [
            "ERR unknown request 'STATS'",
            "OK",
            "OK 12",
            &full.replace(" rtt_us=0", ""),
            &full.replace("seconds=0.000000", "seconds=-1"),
            &full.replace("seconds=0.000000", "seconds=NaN"),
            &full.replace("packets_lost=0", "packets_lost=x"),
            &full.replace("packets_lost=0", "packets_lost"),
        ] {
            assert_eq!(ServerStats::parse(bad), None, "{bad}");
        }
    }
}
