//! `quill perf ADDR [--duration D | --bytes N] [--streams N] [--reverse] [--json]`:
//! iperf-like goodput against the server's SINK (upload) or SOURCE (`--reverse`,
//! download) service on N parallel streams of one connection.
//!
//! Upload with `--bytes` ends when the server's `OK <bytes>` confirms every stream (the
//! count is checked); with `--duration` each stream stops writing at the deadline and
//! then waits for the same confirmation. Download with `--bytes` asks the server for
//! exactly that many; with `--duration` it asks for an unbounded amount, counts what
//! arrives before the deadline and then closes the connection.
//!
//! Interval lines (one per second) go to standard output, or to standard error with
//! `--json`, where standard output carries one JSON object. `lost_packets` and
//! `retransmits`-style figures come from this (the client's) side of the connection:
//! packets it declared lost.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::PerfArgs;
use crate::client::{net_err, open_session, read_line};
use crate::exit::{CliError, CliResult, INTEGRITY};
use crate::output::{note, say};
use quill_transport::service::Request;

/// Default test length.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// SOURCE request size for a timed download: more than any test moves.
const UNBOUNDED: u64 = 1 << 50;
const CHUNK: usize = 64 * 1024;

/// CPU time (user + system) of this process, from getrusage(2).
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Splits `total` bytes over `n` streams (the first ones take the remainder).
pub fn split(total: u64, n: u32) -> Vec<u64> {
    let n = u64::from(n.max(1));
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

/// `12.34 Mbit/s`.
fn mbits(bytes: u64, secs: f64) -> String {
    format!("{:.2} Mbit/s", bytes as f64 * 8.0 / secs.max(1e-6) / 1e6)
}

/// What one stream is asked to do.
#[derive(Clone, Copy)]
enum Plan {
    Bytes(u64),
    Until(Instant),
}

fn upload(
    mut s: quill_transport::driver::blocking::BlockingStream,
    plan: Plan,
    counter: Arc<AtomicU64>,
) -> Result<u64, CliError> {
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
    mut s: quill_transport::driver::blocking::BlockingStream,
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
        if let Plan::Until(t) = plan {
            if Instant::now() >= t || stop.load(Ordering::Relaxed) {
                return Ok(got);
            }
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got += n as u64;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            // A timed download ends by closing the connection under our readers.
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

/// `quill perf`.
pub fn run(a: &PerfArgs) -> CliResult {
    if a.streams == 0 || a.streams > 64 {
        return Err(CliError::usage("--streams must be 1..=64"));
    }
    let cpu0 = cpu_seconds();
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
    say(format!(
        "connected to {} as {} in {:.3} ms; {} {} stream(s)",
        session.target.display(),
        session.conn.account(),
        handshake.as_secs_f64() * 1e3,
        if a.reverse {
            "download from"
        } else {
            "upload to"
        },
        a.streams
    ))?;
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let plans: Vec<Plan> = match a.bytes {
        Some(b) => split(b, a.streams).into_iter().map(Plan::Bytes).collect(),
        None => {
            let until = start + a.duration.unwrap_or(DEFAULT_DURATION);
            (0..a.streams).map(|_| Plan::Until(until)).collect()
        }
    };
    let mut workers = Vec::new();
    for plan in plans {
        let s = session
            .conn
            .open_bi()
            .map_err(|e| net_err("cannot open a stream", e))?;
        let (c, st) = (counter.clone(), stop.clone());
        let reverse = a.reverse;
        workers.push(std::thread::spawn(move || {
            if reverse {
                download(s, plan, c, st)
            } else {
                upload(s, plan, c)
            }
        }));
    }
    // Interval reports until every worker is done.
    let mut last = (start, 0u64);
    let mut next = start + Duration::from_secs(1);
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now >= next {
            let total = counter.load(Ordering::Relaxed);
            let from = last.0.duration_since(start).as_secs_f64();
            let to = now.duration_since(start).as_secs_f64();
            say(format!(
                "[{from:5.1}-{to:5.1} s] {:>12} bytes  {}",
                total - last.1,
                mbits(total - last.1, to - from)
            ))?;
            last = (now, total);
            next += Duration::from_secs(1);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut bytes = 0u64;
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(n)) => bytes += n,
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some(CliError::connection("a stream thread failed"))),
        }
    }
    let rtt = session.conn.rtt();
    let stats = session.conn.stats();
    stop.store(true, Ordering::Relaxed);
    session.conn.close(0, "done");
    if let Some(e) = failure {
        return Err(e);
    }
    let goodput_bps = bytes as f64 * 8.0 / seconds.max(1e-6);
    let cpu = cpu_seconds() - cpu0;
    if a.json {
        let obj = serde_json::json!({
            "bytes": bytes,
            "seconds": seconds,
            "goodput_bps": goodput_bps,
            "handshake_ms": handshake.as_secs_f64() * 1e3,
            "rtt_ms": rtt.as_secs_f64() * 1e3,
            "lost_packets": stats.packets_lost,
            "packets_sent": stats.packets_sent,
            "congestion_events": stats.congestion_events,
            "cpu_seconds": cpu,
            "streams": a.streams,
            "reverse": a.reverse,
        });
        say!("{obj}")?;
    } else {
        say!(
            "total: {bytes} bytes in {seconds:.2} s = {}; rtt {:.3} ms; lost packets {}; cpu {cpu:.2} s",
            mbits(bytes, seconds),
            rtt.as_secs_f64() * 1e3,
            stats.packets_lost
        )?;
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
    fn cpu_time_is_monotonic() {
        let a = cpu_seconds();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() >= a);
    }
}
