//! `quill perf ADDR [-t TIME | -n BYTES] [-P STREAMS] [-R] [-i INTERVAL] [--json]`:
//! iperf3-like goodput against the server's SINK (upload) or SOURCE (`-R`, download)
//! service on N parallel streams of one connection, then the server's own figures
//! from a `STATS` request (docs/SPEC.md §10).
//!
//! Upload with `-n` ends when the server's `OK <bytes>` confirms every stream (the
//! count is checked); with `-t` each stream stops writing at the deadline and then
//! waits for the same confirmation. Download with `-n` asks the server for exactly
//! that many; with `-t` it asks for an unbounded amount, counts what arrives before
//! the deadline and then abandons the streams (STOP_SENDING, RESET_STREAM), so the
//! server's count of what it sent is final before `STATS` asks for it.
//!
//! Every figure says whose it is: the sender's bytes and lost packets come from the
//! sender (the server under `-R`), CPU from each end. A server that does not answer
//! `STATS` (older than this client), or not within [`STATS_WAIT`], leaves its figures
//! out: the test still succeeds and the report says "server figures unavailable".
//!
//! Interval lines go to standard output, or to standard error with `--json`, where
//! standard output carries one JSON object ([`report::json`]).

mod counters;
mod report;

pub use counters::PerfCounters;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::args::{parse_size, PerfArgs};
use crate::client::{net_err, open_session, read_line};
use crate::exit::{CliError, CliResult, INTEGRITY};
use crate::output::{note, say};
use quill_transport::driver::blocking::{BlockingConnection, BlockingStream};
use quill_transport::service::{Request, ServerStats};
use report::{End, Interval, Summary, Total};

/// Default test length.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// SOURCE request size for a timed download: more than any test moves.
const UNBOUNDED: u64 = 1 << 50;
const CHUNK: usize = 64 * 1024;
/// Most parallel streams.
const MAX_STREAMS: u32 = 64;
/// Longest wait for the server's `STATS` answer once the transfer is over.
const STATS_WAIT: Duration = Duration::from_secs(5);
/// Application error code with which a timed download abandons its streams (SPEC §10:
/// "the stream is abandoned").
const STREAM_ABANDONED: u64 = 1;

/// CPU time of this process (all threads), from getrusage(2).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User seconds.
    pub user: f64,
    /// System seconds.
    pub system: f64,
}

impl CpuTimes {
    /// This process's CPU time so far.
    pub fn now() -> CpuTimes {
        // SAFETY: getrusage fills the zeroed struct we own.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        CpuTimes {
            user: tv(ru.ru_utime),
            system: tv(ru.ru_stime),
        }
    }

    /// The CPU time used since `earlier`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: (self.user - earlier.user).max(0.0),
            system: (self.system - earlier.system).max(0.0),
        }
    }
}

/// Splits `total` bytes over `n` streams (the first ones take the remainder).
pub fn split(total: u64, n: u32) -> Vec<u64> {
    let n = u64::from(n.max(1));
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

/// `-n`: a byte count, plain or with K, M, G or T (powers of 1024, as iperf3 reads
/// them: 10M = 10 × 1024 × 1024); at least 1.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let n = parse_size(s).map_err(|_| {
        format!(
            "'{}' is not a byte count; use a number of bytes, or one with K, M, G or T \
             (powers of 1024: 10M = 10485760)",
            s.trim()
        )
    })?;
    if n == 0 {
        return Err("0 bytes moves nothing; give at least 1 (or -t for a timed test)".into());
    }
    Ok(n)
}

/// What one stream is asked to do.
#[derive(Clone, Copy)]
enum Plan {
    Bytes(u64),
    Until(Instant),
}

fn upload(mut s: BlockingStream, plan: Plan, counter: Arc<AtomicU64>) -> Result<u64, CliError> {
    s.write_all(Request::Sink.line().as_bytes())
        .map_err(|e| net_err("sending the request failed", e))?;
    let buf = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    loop {
        let n = match plan {
            Plan::Bytes(total) => (total - sent).min(CHUNK as u64) as usize,
            Plan::Until(t) if Instant::now() < t => CHUNK,
            Plan::Until(_) => 0,
        };
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])
            .map_err(|e| net_err("sending failed", e))?;
        sent += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    s.finish().map_err(|e| net_err("sending failed", e))?;
    let answer = read_line(&mut s).map_err(|e| net_err("waiting for the server", e))?;
    let confirmed: Option<u64> = answer.strip_prefix("OK ").and_then(|n| n.parse().ok());
    match confirmed {
        Some(n) if n == sent => Ok(sent),
        Some(n) => Err(CliError::new(
            INTEGRITY,
            format!("the server counted {n} bytes but {sent} were sent"),
        )),
        None => Err(CliError::connection(format!(
            "unexpected answer from the server's sink: '{answer}'"
        ))),
    }
}

fn download(
    mut s: BlockingStream,
    plan: Plan,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<u64, CliError> {
    let want = match plan {
        Plan::Bytes(n) => n,
        Plan::Until(_) => UNBOUNDED,
    };
    s.write_all(Request::Source { bytes: want }.line().as_bytes())
        .and_then(|_| s.finish())
        .map_err(|e| net_err("sending the request failed", e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(got);
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got += n as u64;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            // A timed download ends by abandoning the streams under our readers.
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(got),
            Err(e) => return Err(net_err("receiving failed", e)),
        }
    }
    if got != want {
        return Err(CliError::connection(format!(
            "the server's source ended after {got} of {want} bytes"
        )));
    }
    Ok(got)
}

/// Asks the server for its figures on a fresh stream, waiting at most [`STATS_WAIT`];
/// the error says why there are none.
fn server_stats(conn: &BlockingConnection) -> Result<ServerStats, String> {
    let (tx, rx) = mpsc::channel();
    let opened = conn.open_bi();
    // The exchange runs on its own thread so that the wait is bounded even when the
    // server stays up but silent; closing the connection ends the thread.
    std::thread::spawn(move || {
        let answer = opened.and_then(|mut s| {
            s.write_all(Request::Stats.line().as_bytes())?;
            s.finish()?;
            read_line(&mut s)
        });
        let _ = tx.send(answer);
    });
    match rx.recv_timeout(STATS_WAIT) {
        Ok(Ok(line)) => ServerStats::parse(&line).ok_or_else(|| {
            if line.starts_with("ERR") {
                "the server does not answer STATS; it is older than this client".to_owned()
            } else {
                "the server's STATS answer did not parse".to_owned()
            }
        }),
        Ok(Err(e)) => Err(format!("asking for them failed: {e}")),
        Err(_) => Err(format!(
            "no answer to STATS within {} s",
            STATS_WAIT.as_secs()
        )),
    }
}

/// `quill perf`.
pub fn run(a: &PerfArgs) -> CliResult {
    if a.streams == 0 || a.streams > MAX_STREAMS {
        return Err(CliError::usage(format!(
            "-P/--parallel must be 1 to {MAX_STREAMS}"
        )));
    }
    if a.duration.is_some_and(|d| d.is_zero()) {
        return Err(CliError::usage(
            "-t/--time must be more than 0 (e.g. -t 10 or -t 500ms)",
        ));
    }
    if !a.interval.is_zero() && a.interval < Duration::from_millis(100) {
        return Err(CliError::usage(
            "-i/--interval must be 0 (no interval reports) or at least 100ms",
        ));
    }
    let session = open_session(&a.addr, &a.login, None)?;
    let handshake = session.handshake;
    // Progress lines: standard error under --json, where stdout carries the JSON.
    let say = |line: String| -> Result<(), CliError> {
        if a.json {
            note!("{line}");
            Ok(())
        } else {
            say!("{line}")
        }
    };
    let protocol = if session.conn.version() == quill_transport::wire::QUIC_V1 {
        "QUIC v1"
    } else {
        "quill"
    };
    let test = match (a.bytes, a.duration) {
        (Some(b), _) => format!("{b} bytes"),
        (None, d) => format!("{:.1} s", d.unwrap_or(DEFAULT_DURATION).as_secs_f64()),
    };
    say(format!(
        "connected to {} as {} in {:.3} ms ({protocol}); {} {test} on {} stream(s)",
        session.target.display(),
        session.conn.account(),
        handshake.as_secs_f64() * 1e3,
        if a.reverse {
            "reverse mode, the server sends"
        } else {
            "the client sends"
        },
        a.streams
    ))?;
    let cpu0 = CpuTimes::now();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let until = (a.bytes.is_none()).then(|| start + a.duration.unwrap_or(DEFAULT_DURATION));
    let plans: Vec<Plan> = match (a.bytes, until) {
        (Some(b), _) => split(b, a.streams).into_iter().map(Plan::Bytes).collect(),
        (None, until) => {
            let until = until.unwrap_or(start + DEFAULT_DURATION);
            (0..a.streams).map(|_| Plan::Until(until)).collect()
        }
    };
    let mut workers = Vec::new();
    let mut ids = Vec::new();
    let mut counters = Vec::new();
    let mut handles = Vec::new();
    for plan in plans {
        let s = session
            .conn
            .open_bi()
            .map_err(|e| net_err("cannot open a stream", e))?;
        ids.push(s.id().0);
        handles.push(s.try_clone());
        let counter = Arc::new(AtomicU64::new(0));
        counters.push(counter.clone());
        let st = stop.clone();
        let reverse = a.reverse;
        workers.push(std::thread::spawn(move || {
            if reverse {
                download(s, plan, counter, st)
            } else {
                upload(s, plan, counter)
            }
        }));
    }
    if !a.interval.is_zero() {
        say(report::HEADER.to_owned())?;
    }
    // Interval reports until every worker is done.
    let mut intervals: Vec<Interval> = Vec::new();
    let mut last = (0.0f64, vec![0u64; counters.len()]);
    let take = |now: f64, last: &mut (f64, Vec<u64>)| -> Interval {
        let totals: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let streams = ids
            .iter()
            .zip(totals.iter().zip(&last.1))
            .map(|(&id, (t, l))| (id, t - l))
            .collect();
        let i = Interval {
            start: last.0,
            end: now,
            streams,
        };
        *last = (now, totals);
        i
    };
    let mut next = start + a.interval;
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if a.reverse && until.is_some_and(|t| now >= t) && !stop.swap(true, Ordering::Relaxed) {
            // SPEC §10: abandoning a stream stops the server's SOURCE on it.
            for h in &mut handles {
                h.abandon(STREAM_ABANDONED);
            }
        }
        if !a.interval.is_zero() && now >= next {
            let i = take(now.duration_since(start).as_secs_f64(), &mut last);
            for l in report::interval_lines(&i) {
                say(l)?;
            }
            intervals.push(i);
            next += a.interval;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // The last, shorter interval, unless it is a sliver with nothing in it.
    let tail = take(seconds, &mut last);
    let moved: u64 = tail.streams.iter().map(|s| s.1).sum();
    if !a.interval.is_zero()
        && (moved > 0 || tail.end - tail.start >= a.interval.as_secs_f64() / 10.0)
    {
        for l in report::interval_lines(&tail) {
            say(l)?;
        }
        intervals.push(tail);
    }
    let mut bytes = 0u64;
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(n)) => bytes += n,
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some(CliError::connection("a stream thread failed"))),
        }
    }
    if let Some(e) = failure {
        session.conn.close(0, "done");
        return Err(e);
    }
    let client_cpu = CpuTimes::now().since(cpu0);
    let client_stats = session.conn.stats();
    let client_rtt = session.conn.rtt();
    let server = server_stats(&session.conn);
    let user = session.conn.account().to_owned();
    session.conn.close(0, "done");

    let srv = server.as_ref().ok();
    let summary = Summary {
        reverse: a.reverse,
        streams: a.streams as usize,
        sent: if a.reverse {
            Total {
                end: End::Server,
                // A byte-count download: the server sent exactly what was asked for.
                bytes: srv.map(|s| s.bytes_sent).or(a.bytes),
                seconds: srv.map_or(seconds, |s| s.seconds),
            }
        } else {
            Total {
                end: End::Client,
                bytes: Some(bytes),
                seconds,
            }
        },
        received: if a.reverse {
            Total {
                end: End::Client,
                bytes: Some(bytes),
                seconds,
            }
        } else {
            // Every stream's `OK <bytes>` confirmed the count.
            Total {
                end: End::Server,
                bytes: Some(bytes),
                seconds: srv.map_or(seconds, |s| s.seconds),
            }
        },
        lost_packets: if a.reverse {
            srv.map(|s| s.packets_lost)
        } else {
            Some(client_stats.packets_lost)
        },
        client_cpu,
        client_seconds: seconds,
        client_packets: (
            client_stats.packets_sent,
            client_stats.packets_lost,
            client_stats.congestion_events,
        ),
        client_rtt,
        handshake,
        server,
    };
    let single_id = ids.first().copied();
    for l in report::summary_lines(&summary, single_id) {
        say(l)?;
    }
    if a.json {
        let start = report::Start {
            host: session.target.host.clone(),
            port: session.target.port,
            user,
            protocol,
            duration: until.map_or(0.0, |_| {
                a.duration.unwrap_or(DEFAULT_DURATION).as_secs_f64()
            }),
            bytes: a.bytes.unwrap_or(0),
            interval: a.interval.as_secs_f64(),
        };
        say!("{}", report::json(&start, &summary, &intervals))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_total() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split(7, 1), vec![7]);
        assert_eq!(split(100, 7).iter().sum::<u64>(), 100);
    }

    #[test]
    fn byte_counts_as_iperf3_reads_them() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("10K"), Ok(10 * 1024));
        assert_eq!(parse_bytes("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        let e = parse_bytes("10Q").unwrap_err();
        assert!(
            e.contains("'10Q' is not a byte count") && e.contains("10M = 10485760"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(parse_bytes("0").unwrap_err().contains("at least 1"));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn cpu_time_is_monotonic() {
        let a = CpuTimes::now();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = CpuTimes::now().since(a);
        assert!(used.user >= 0.0 && used.system >= 0.0);
    }
}
