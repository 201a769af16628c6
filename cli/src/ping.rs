//! `quill ping ADDR [-c N] [-i DUR] [--echo]`: handshake + login time, then round
//! trips, printed like ping(8).
//!
//! By default each ping is a transport PING frame ([`BlockingConnection::ping`]): one
//! is sent every `-i`, without waiting for the last one's answer, and each line gives
//! the round trip the transport measured for the packet that carried it, less the ACK
//! delay the server reported (as RFC 9002 §5.3 adjusts `latest_rtt`: a server may hold
//! an ACK back for up to its max_ack_delay). A ping whose packet is lost is sent again
//! in a new packet by the transport; one that nothing acknowledged within
//! `max(3 × PTO, 1 s)` is printed as lost. With `--echo`, each ping is a 32-byte ECHO
//! round trip on one stream instead, timed by the application: both ends' stream
//! handling included.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use quill_crypto::packet::Suite;
use quill_transport::driver::blocking::{BlockingConnection, PingOutcome};
use quill_transport::proto::PingId;

use crate::args::PingArgs;
use crate::client::{net_err, open_request, open_session, Session};
use crate::exit::{CliError, CliResult};
use crate::output::say;
use quill_transport::service::Request;

/// Size of one ECHO probe.
const PROBE: usize = 32;

/// Longest the last pings' answers are awaited after the last one was sent. The
/// transport reports each within `max(3 × PTO, 1 s)`; this only bounds the wait
/// should it not.
const LAST_ANSWER_GUARD: Duration = Duration::from_secs(60);

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Counts and round-trip statistics, kept as running sums (no per-ping memory).
#[derive(Debug, Default)]
pub struct Tally {
    /// Pings sent.
    pub sent: u32,
    /// Pings answered.
    pub answered: u32,
    min: Duration,
    max: Duration,
    /// Sum of the times and of their squares, in seconds.
    sum: f64,
    sum_sq: f64,
}

impl Tally {
    /// One answer that took `rtt`.
    pub fn answer(&mut self, rtt: Duration) {
        if self.answered == 0 || rtt < self.min {
            self.min = rtt;
        }
        self.max = self.max.max(rtt);
        self.answered += 1;
        let s = rtt.as_secs_f64();
        self.sum += s;
        self.sum_sq += s * s;
    }

    /// Percentage of pings not answered, rounded down as ping(8) does.
    pub fn lost_percent(&self) -> u32 {
        if self.sent == 0 {
            return 0;
        }
        let lost = u64::from(self.sent - self.answered.min(self.sent));
        (lost * 100 / u64::from(self.sent)) as u32
    }

    /// `(min, avg, max, mdev)` of the answers, `None` before the first. mdev as
    /// ping(8) computes it: `sqrt(mean(t²) − mean(t)²)`.
    pub fn rtt(&self) -> Option<(Duration, Duration, Duration, Duration)> {
        if self.answered == 0 {
            return None;
        }
        let n = f64::from(self.answered);
        let avg = self.sum / n;
        let mdev = (self.sum_sq / n - avg * avg).max(0.0).sqrt();
        Some((
            self.min,
            Duration::from_secs_f64(avg),
            self.max,
            Duration::from_secs_f64(mdev),
        ))
    }

    /// The statistics block printed at the end; `answered` names what an answer is.
    fn print(&self, target: &str, answered: &str) -> CliResult {
        say!("--- {target} ping statistics ---")?;
        say!(
            "{} sent, {} {answered}, {}% lost",
            self.sent,
            self.answered,
            self.lost_percent()
        )?;
        if let Some((min, avg, max, mdev)) = self.rtt() {
            say!(
                "rtt min/avg/max/mdev = {}/{}/{}/{} ms",
                ms(min),
                ms(avg),
                ms(max),
                ms(mdev)
            )?;
        }
        Ok(())
    }
}

/// `quill ping`.
pub fn run(a: &PingArgs) -> CliResult {
    if a.count == 0 {
        return Err(CliError::usage("-c must be at least 1"));
    }
    let session = open_session(&a.addr, &a.login, None)?;
    say!(
        "connected to {} as {} in {} ms ({}, {})",
        session.target.display(),
        session.conn.account(),
        ms(session.handshake),
        session.conn.suite().map_or("unknown suite", Suite::name),
        session.key_exchange(),
    )?;
    let target = session.target.display();
    let (tally, failure) = if a.echo {
        echo(a, &session)?
    } else {
        frames(a, &session.conn)?
    };
    tally.print(&target, if a.echo { "received" } else { "acknowledged" })?;
    say!("transport smoothed rtt = {} ms", ms(session.conn.rtt()))?;
    if let Some(e) = failure {
        return Err(e);
    }
    session.conn.close(0, "done");
    verdict(&tally, &target)
}

/// As ping(8): success if any ping was answered.
fn verdict(tally: &Tally, target: &str) -> CliResult {
    if tally.answered == 0 {
        return Err(CliError::connection(format!(
            "no ping was answered by {target}: the server or the path is down"
        )));
    }
    Ok(())
}

/// PING frames, one every `-i`; answers printed as the transport reports them.
/// Returns the tally and the error that ended the run early, if one did.
fn frames(a: &PingArgs, conn: &BlockingConnection) -> Result<(Tally, Option<CliError>), CliError> {
    let mut tally = Tally::default();
    // Pings sent and not yet answered: at most the transport's cap of outstanding ones.
    let mut waiting: VecDeque<(PingId, u32)> = VecDeque::new();
    let mut next_send = Instant::now();
    let mut last_sent = Instant::now();
    loop {
        let now = Instant::now();
        if tally.sent < a.count && now >= next_send {
            match conn.ping() {
                Ok(id) => {
                    tally.sent += 1;
                    waiting.push_back((id, tally.sent));
                    last_sent = now;
                    next_send = now + a.interval;
                    continue;
                }
                // As many outstanding as the transport keeps: wait for an answer.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    next_send = now + a.interval.min(Duration::from_millis(100));
                }
                Err(e) => return Ok((tally, Some(net_err("ping failed", e)))),
            }
        }
        if tally.sent >= a.count && waiting.is_empty() {
            return Ok((tally, None));
        }
        let until = if tally.sent < a.count {
            next_send
        } else {
            last_sent + LAST_ANSWER_GUARD
        };
        if now >= until && tally.sent >= a.count {
            for (_, seq) in waiting.drain(..) {
                say!(
                    "seq={seq} lost (no answer from the transport within {} s)",
                    LAST_ANSWER_GUARD.as_secs()
                )?;
            }
            return Ok((tally, None));
        }
        let (id, outcome) = match conn.wait_ping(until.saturating_duration_since(now)) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => return Ok((tally, Some(net_err("ping failed", e)))),
        };
        let Some(at) = waiting.iter().position(|w| w.0 == id) else {
            continue;
        };
        let (_, seq) = waiting.remove(at).expect("found");
        match outcome {
            PingOutcome::Acknowledged { rtt, .. } => {
                say!("seq={seq} time={} ms", ms(rtt))?;
                tally.answer(rtt);
            }
            PingOutcome::Lost { after } => {
                say!("seq={seq} lost (no ACK within {} ms)", after.as_millis())?;
            }
        }
    }
}

/// ECHO round trips on one stream, one after the other, `-i` apart.
fn echo(a: &PingArgs, session: &Session) -> Result<(Tally, Option<CliError>), CliError> {
    let mut stream = open_request(&session.conn, &Request::Echo)?;
    let mut tally = Tally::default();
    let mut failure = None;
    for seq in 1..=a.count {
        if seq > 1 {
            std::thread::sleep(a.interval);
        }
        let mut probe = [0u8; PROBE];
        probe[..4].copy_from_slice(&seq.to_be_bytes());
        let start = Instant::now();
        tally.sent += 1;
        let mut back = [0u8; PROBE];
        let r = stream
            .write_all(&probe)
            .and_then(|_| stream.read_exact(&mut back));
        let rtt = start.elapsed();
        match r {
            Ok(()) if back == probe => {
                say!("seq={seq} time={} ms", ms(rtt))?;
                tally.answer(rtt);
            }
            Ok(()) => {
                failure = Some(CliError::connection(
                    "the echo came back different; the server is not a quill echo service",
                ));
                break;
            }
            Err(e) => {
                failure = Some(net_err("ping failed", e));
                break;
            }
        }
    }
    if failure.is_none() {
        let _ = stream.finish();
    }
    Ok((tally, failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies() {
        let mut t = Tally::default();
        assert!(t.rtt().is_none());
        assert_eq!(t.lost_percent(), 0);
        t.sent = 4;
        for v in [1, 3, 2] {
            t.answer(Duration::from_millis(v));
        }
        let (min, avg, max, mdev) = t.rtt().unwrap();
        assert_eq!(
            (min, max),
            (Duration::from_millis(1), Duration::from_millis(3))
        );
        assert_eq!(ms(avg), "2.000");
        // sqrt((1 + 9 + 4) / 3 - 4) = sqrt(2/3)
        assert_eq!(ms(mdev), "0.816");
        assert_eq!(t.lost_percent(), 25);
        t.sent = 3;
        assert_eq!(t.lost_percent(), 0);
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
    }

    #[test]
    fn every_ping_lost_is_a_failure() {
        let mut t = Tally {
            sent: 3,
            ..Tally::default()
        };
        let e = verdict(&t, "h:1").unwrap_err();
        assert_eq!(e.code, crate::exit::CONNECTION);
        assert!(e.message.contains("no ping was answered by h:1"), "{e}");
        assert_eq!(t.lost_percent(), 100);
        t.answer(Duration::from_millis(1));
        assert!(verdict(&t, "h:1").is_ok());
        assert_eq!(t.lost_percent(), 66);
    }
}
