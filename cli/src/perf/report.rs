//! What `quill perf` prints: iperf3's lines and units for people, iperf3's JSON shape
//! (`start`, `intervals`, `end`) plus quill's own fields for scripts.

use std::time::Duration;

use quill_transport::service::ServerStats;

use super::CpuTimes;

/// One report interval: each stream's bytes in `[start, end)` seconds of the test.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Seconds since the test started.
    pub start: f64,
    /// Seconds since the test started.
    pub end: f64,
    /// `(stream ID, bytes)` of each stream, in the order the streams were opened.
    pub streams: Vec<(u64, u64)>,
}

/// Which end of the connection a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// This process.
    Client,
    /// The server, from its `STATS` answer.
    Server,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Client => "client",
            End::Server => "server",
        }
    }
}

/// One direction's total, as the end that measured it saw it.
#[derive(Debug, Clone, Copy)]
pub struct Total {
    /// Who measured it.
    pub end: End,
    /// Bytes; `None` where that end's figures are unavailable.
    pub bytes: Option<u64>,
    /// Seconds that end measured.
    pub seconds: f64,
}

/// Everything the final report says.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `-R`: the server sends.
    pub reverse: bool,
    /// Parallel streams.
    pub streams: usize,
    /// The sender's total.
    pub sent: Total,
    /// The receiver's total.
    pub received: Total,
    /// Packets the sender declared lost; `None` when the sender is a server that did
    /// not answer `STATS`.
    pub lost_packets: Option<u64>,
    /// This process's CPU time during the test.
    pub client_cpu: CpuTimes,
    /// Wall-clock seconds of the client's CPU figure.
    pub client_seconds: f64,
    /// The client's connection figures: packets sent, lost, congestion events.
    pub client_packets: (u64, u64, u64),
    /// The client's smoothed RTT.
    pub client_rtt: Duration,
    /// Handshake + login.
    pub handshake: Duration,
    /// The server's `STATS` answer, or why there is none.
    pub server: Result<ServerStats, String>,
}

impl Summary {
    /// The receiver's bytes (always known: counted by the client, or confirmed by the
    /// server's `OK <bytes>`).
    pub fn received_bytes(&self) -> u64 {
        self.received.bytes.unwrap_or(0)
    }
}

/// A byte count as iperf3 writes it: powers of 1024, three significant digits
/// (`112 MBytes`, `1.10 GBytes`).
pub fn bytes_human(n: u64) -> String {
    scaled(n as f64, 1024.0, "Bytes")
}

/// A bit rate as iperf3 writes it: powers of 1000 (`941 Mbits/sec`).
pub fn bits_human(bits_per_second: f64) -> String {
    scaled(bits_per_second, 1000.0, "bits/sec")
}

fn scaled(mut v: f64, base: f64, unit: &str) -> String {
    let mut prefix = 0;
    while v >= base && prefix < 4 {
        v /= base;
        prefix += 1;
    }
    let p = ["", "K", "M", "G", "T"][prefix];
    if v < 9.995 {
        format!("{v:4.2} {p}{unit}")
    } else if v < 99.95 {
        format!("{v:4.1} {p}{unit}")
    } else {
        format!("{v:4.0} {p}{unit}")
    }
}

/// Bits per second of `bytes` in `seconds`.
pub fn rate(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds
    } else {
        0.0
    }
}

/// The header above the interval lines.
pub const HEADER: &str = "[ ID] Interval           Transfer     Bitrate";

/// `[  4]   0.00-1.00   sec   112 MBytes   941 Mbits/sec` (`id` `None`: `[SUM]`).
pub fn line(id: Option<u64>, start: f64, end: f64, bytes: u64) -> String {
    let label = id.map_or("SUM".to_owned(), |id| format!("{id:>3}"));
    format!(
        "[{label}] {start:6.2}-{end:<6.2} sec  {:>11}  {:>14}",
        bytes_human(bytes),
        bits_human(rate(bytes, end - start))
    )
}

/// The lines of one interval: each stream, and `[SUM]` when there are several.
pub fn interval_lines(i: &Interval) -> Vec<String> {
    let mut out: Vec<String> = i
        .streams
        .iter()
        .map(|&(id, b)| line(Some(id), i.start, i.end, b))
        .collect();
    if i.streams.len() > 1 {
        let sum = i.streams.iter().map(|s| s.1).sum();
        out.push(line(None, i.start, i.end, sum));
    }
    out
}

/// The final lines: sender and receiver totals, then whose CPU and RTT.
pub fn summary_lines(s: &Summary, single_id: Option<u64>) -> Vec<String> {
    let id = if s.streams > 1 { None } else { single_id };
    let mut out = vec![
        "- - - - - - - - - - - - - - - - - - - - - - - - -".to_owned(),
        format!("{HEADER}         Lost"),
    ];
    let total = |t: &Total, lost: String, role: &str| match t.bytes {
        Some(b) => format!(
            "{}  {lost:>5}   {role} ({})",
            line(id, 0.0, t.seconds, b),
            t.end.name()
        ),
        None => format!(
            "[{}] unknown: server figures unavailable   {role} ({})",
            id.map_or("SUM".to_owned(), |id| format!("{id:>3}")),
            t.end.name()
        ),
    };
    let lost = s.lost_packets.map_or("-".to_owned(), |n| n.to_string());
    out.push(total(&s.sent, lost, "sender"));
    out.push(total(&s.received, String::new(), "receiver"));
    out.push(cpu_line(s));
    let server_rtt = match &s.server {
        Ok(st) => format!(", server {:.3} ms", st.rtt_us as f64 / 1e3),
        Err(_) => String::new(),
    };
    out.push(format!(
        "RTT client {:.3} ms{server_rtt}; handshake + login {:.3} ms",
        s.client_rtt.as_secs_f64() * 1e3,
        s.handshake.as_secs_f64() * 1e3
    ));
    out
}

/// `CPU client 12.3% (3.1% user, 9.2% sys), server 20.1% (5.0% user, 15.1% sys)`.
pub fn cpu_line(s: &Summary) -> String {
    let pct = |cpu: f64, secs: f64| if secs > 0.0 { cpu / secs * 100.0 } else { 0.0 };
    let side = |name: &str, user: f64, sys: f64, secs: f64| {
        format!(
            "{name} {:.1}% ({:.1}% user, {:.1}% sys)",
            pct(user + sys, secs),
            pct(user, secs),
            pct(sys, secs)
        )
    };
    let c = s.client_cpu;
    let client = side("client", c.user, c.system, s.client_seconds);
    match &s.server {
        Ok(st) => format!(
            "CPU {client}, {}",
            side("server", st.cpu_user, st.cpu_system, st.seconds)
        ),
        Err(why) => format!("CPU {client}; server figures unavailable ({why})"),
    }
}

/// What `start` says about the test.
#[derive(Debug, Clone)]
pub struct Start {
    /// The server's host as typed.
    pub host: String,
    /// The server's UDP port.
    pub port: u16,
    /// The account logged in.
    pub user: String,
    /// `quill` or `QUIC v1`.
    pub protocol: &'static str,
    /// Seconds of a timed test (0 for a byte-count test).
    pub duration: f64,
    /// Bytes of a byte-count test (0 for a timed test).
    pub bytes: u64,
    /// Seconds between interval reports (0: none).
    pub interval: f64,
}

/// The `--json` object.
pub fn json(start: &Start, s: &Summary, intervals: &[Interval]) -> serde_json::Value {
    use serde_json::json;
    let sender = !s.reverse;
    let span = |from: f64, to: f64, bytes: u64| {
        json!({
            "start": from,
            "end": to,
            "seconds": to - from,
            "bytes": bytes,
            "bits_per_second": rate(bytes, to - from),
            "sender": sender,
        })
    };
    let intervals: Vec<_> = intervals
        .iter()
        .map(|i| {
            let streams: Vec<_> = i
                .streams
                .iter()
                .map(|&(id, b)| {
                    let mut v = span(i.start, i.end, b);
                    v["id"] = json!(id);
                    v
                })
                .collect();
            let sum = i.streams.iter().map(|s| s.1).sum();
            json!({ "streams": streams, "sum": span(i.start, i.end, sum) })
        })
        .collect();
    let total = |t: &Total| {
        let mut v = span(0.0, t.seconds, t.bytes.unwrap_or(0));
        if t.bytes.is_none() {
            v["bytes"] = serde_json::Value::Null;
            v["bits_per_second"] = serde_json::Value::Null;
        }
        v["side"] = json!(t.end.name());
        v
    };
    let mut sum_sent = total(&s.sent);
    sum_sent["retransmits"] = json!(s.lost_packets);
    sum_sent["lost_packets"] = json!(s.lost_packets);
    let pct = |cpu: f64, secs: f64| if secs > 0.0 { cpu / secs * 100.0 } else { 0.0 };
    let c = s.client_cpu;
    let server = s.server.as_ref().ok();
    let remote = |f: fn(&ServerStats) -> f64| server.map(|st| pct(f(st), st.seconds));
    let sender_end = if s.reverse { End::Server } else { End::Client };
    let received = s.received_bytes();
    json!({
        "start": {
            "connected": [{
                "remote_host": start.host,
                "remote_port": start.port,
                "user": start.user,
            }],
            "version": concat!("quill ", env!("CARGO_PKG_VERSION")),
            "connecting_to": { "host": start.host, "port": start.port },
            "handshake_ms": s.handshake.as_secs_f64() * 1e3,
            "test_start": {
                "protocol": start.protocol,
                "num_streams": s.streams,
                "reverse": u8::from(s.reverse),
                "duration": start.duration,
                "bytes": start.bytes,
                "interval": start.interval,
            },
        },
        "intervals": intervals,
        "end": {
            "sum_sent": sum_sent,
            "sum_received": total(&s.received),
            "cpu_utilization_percent": {
                "host_total": pct(c.user + c.system, s.client_seconds),
                "host_user": pct(c.user, s.client_seconds),
                "host_system": pct(c.system, s.client_seconds),
                "remote_total": remote(|st| st.cpu_user + st.cpu_system),
                "remote_user": remote(|st| st.cpu_user),
                "remote_system": remote(|st| st.cpu_system),
            },
            "lost_packets": s.lost_packets,
            "lost_packets_side": sender_end.name(),
            "rtt_ms": s.client_rtt.as_secs_f64() * 1e3,
            "remote_rtt_ms": server.map(|st| st.rtt_us as f64 / 1e3),
            "server_figures": match &s.server {
                Ok(_) => "available".to_owned(),
                Err(why) => format!("unavailable: {why}"),
            },
            "client": {
                "packets_sent": s.client_packets.0,
                "packets_lost": s.client_packets.1,
                "congestion_events": s.client_packets.2,
                "rtt_ms": s.client_rtt.as_secs_f64() * 1e3,
                "cpu_user_seconds": c.user,
                "cpu_system_seconds": c.system,
            },
            "server": server.map(|st| json!({
                "seconds": st.seconds,
                "bytes_received": st.bytes_received,
                "bytes_sent": st.bytes_sent,
                "packets_sent": st.packets_sent,
                "packets_lost": st.packets_lost,
                "congestion_events": st.congestion_events,
                "rtt_ms": st.rtt_us as f64 / 1e3,
                "cpu_user_seconds": st.cpu_user,
                "cpu_system_seconds": st.cpu_system,
            })),
        },
        // quill's flat fields, as before iperf3's shape (scripts read them).
        "bytes": received,
        "seconds": s.received.seconds,
        "goodput_bps": rate(received, s.received.seconds),
        "handshake_ms": s.handshake.as_secs_f64() * 1e3,
        "rtt_ms": s.client_rtt.as_secs_f64() * 1e3,
        "lost_packets": s.lost_packets,
        "packets_sent": s.client_packets.0,
        "congestion_events": s.client_packets.2,
        "cpu_seconds": c.user + c.system,
        "streams": s.streams,
        "reverse": s.reverse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_iperf3_writes_them() {
        assert_eq!(bytes_human(0), "0.00 Bytes");
        assert_eq!(bytes_human(1023), "1023 Bytes");
        assert_eq!(bytes_human(1024), "1.00 KBytes");
        assert_eq!(bytes_human(10 << 20), "10.0 MBytes");
        assert_eq!(bytes_human(112 << 20), " 112 MBytes");
        assert_eq!(bytes_human(1_181_116_006), "1.10 GBytes");
        assert_eq!(bits_human(941e6), " 941 Mbits/sec");
        assert_eq!(bits_human(2.82e9), "2.82 Gbits/sec");
        assert_eq!(bits_human(999.0), " 999 bits/sec");
        assert_eq!(bits_human(12_345.0), "12.3 Kbits/sec");
        assert_eq!(rate(125, 1.0), 1000.0);
        assert_eq!(rate(125, 0.0), 0.0);
    }

    #[test]
    fn lines_as_iperf3_lays_them_out() {
        assert_eq!(
            line(Some(4), 0.0, 1.0, 112 << 20),
            "[  4]   0.00-1.00   sec   112 MBytes   940 Mbits/sec"
        );
        let i = Interval {
            start: 1.0,
            end: 2.0,
            streams: vec![(0, 1 << 20), (4, 1 << 20)],
        };
        let lines = interval_lines(&i);
        assert_eq!(lines.len(), 3);
        assert!(
            lines[2].starts_with("[SUM]   1.00-2.00   sec  2.00 MBytes"),
            "{}",
            lines[2]
        );
    }

    fn summary(server: Result<ServerStats, String>) -> Summary {
        Summary {
            reverse: true,
            streams: 1,
            sent: Total {
                end: End::Server,
                bytes: server.as_ref().ok().map(|s| s.bytes_sent),
                seconds: 2.0,
            },
            received: Total {
                end: End::Client,
                bytes: Some(1000),
                seconds: 2.0,
            },
            lost_packets: server.as_ref().ok().map(|s| s.packets_lost),
            client_cpu: CpuTimes {
                user: 0.5,
                system: 0.5,
            },
            client_seconds: 2.0,
            client_packets: (10, 0, 0),
            client_rtt: Duration::from_micros(200),
            handshake: Duration::from_millis(3),
            server,
        }
    }

    #[test]
    fn cpu_says_whose_and_the_sender_loses_the_packets() {
        let st = ServerStats {
            seconds: 2.0,
            cpu_user: 0.2,
            cpu_system: 0.6,
            bytes_sent: 1200,
            packets_lost: 7,
            rtt_us: 300,
            ..ServerStats::default()
        };
        let s = summary(Ok(st));
        assert_eq!(
            cpu_line(&s),
            "CPU client 50.0% (25.0% user, 25.0% sys), server 40.0% (10.0% user, 30.0% sys)"
        );
        let lines = summary_lines(&s, Some(0));
        assert!(lines[2].ends_with("7   sender (server)"), "{}", lines[2]);
        assert!(lines[3].ends_with("receiver (client)"), "{}", lines[3]);
        let start = Start {
            host: "h".into(),
            port: 4433,
            user: "alice".into(),
            protocol: "quill",
            duration: 2.0,
            bytes: 0,
            interval: 1.0,
        };
        let v = json(&start, &s, &[]);
        assert_eq!(v["end"]["lost_packets"], 7);
        assert_eq!(v["end"]["lost_packets_side"], "server");
        assert_eq!(v["end"]["sum_sent"]["bytes"], 1200);
        assert_eq!(v["end"]["sum_sent"]["side"], "server");
        let remote = v["end"]["cpu_utilization_percent"]["remote_total"].as_f64();
        assert!((remote.unwrap() - 40.0).abs() < 1e-9, "{v}");
    }

    #[test]
    fn without_server_figures_the_report_says_so() {
        let s = summary(Err("the server does not answer STATS".into()));
        assert!(cpu_line(&s)
            .ends_with("; server figures unavailable (the server does not answer STATS)"));
        let lines = summary_lines(&s, Some(0));
        assert!(
            lines[2].contains("unknown: server figures unavailable"),
            "{}",
            lines[2]
        );
        let v = json(
            &Start {
                host: "h".into(),
                port: 4433,
                user: "u".into(),
                protocol: "quill",
                duration: 0.0,
                bytes: 1000,
                interval: 1.0,
            },
            &s,
            &[],
        );
        assert!(v["end"]["cpu_utilization_percent"]["remote_total"].is_null());
        assert!(v["end"]["sum_sent"]["bytes"].is_null());
        assert_eq!(v["end"]["sum_received"]["bytes"], 1000);
    }
}
