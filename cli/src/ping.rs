//! `quill ping ADDR [-c N] [-i DUR]`: handshake + login time, then round-trip times.
//!
//! The blocking API has no PING-frame probe, so each "ping" is a small ECHO round trip
//! on one stream: 32 bytes written, the same 32 bytes read back, timed at the
//! application. That includes both endpoints' stream handling and the server's ACK
//! delay only when it holds data back, so it is an upper bound on the network RTT;
//! the transport's own smoothed RTT is printed at the end.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use quill_crypto::packet::Suite;

use crate::args::PingArgs;
use crate::client::{net_err, open_request, open_session};
use crate::exit::{CliError, CliResult};
use crate::output::say;
use quill_transport::service::Request;

/// Size of one probe.
const PROBE: usize = 32;

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// `min/avg/max` of samples, `None` when empty.
pub fn summary(samples: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let min = *samples.iter().min()?;
    let max = *samples.iter().max()?;
    let avg = samples.iter().sum::<Duration>() / samples.len() as u32;
    Some((min, avg, max))
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
    let mut stream = open_request(&session.conn, &Request::Echo)?;
    let mut samples = Vec::new();
    let mut sent = 0u32;
    let mut failure = None;
    for seq in 1..=a.count {
        if seq > 1 {
            std::thread::sleep(a.interval);
        }
        let mut probe = [0u8; PROBE];
        probe[..4].copy_from_slice(&seq.to_be_bytes());
        let start = Instant::now();
        sent += 1;
        let mut back = [0u8; PROBE];
        let r = stream
            .write_all(&probe)
            .and_then(|_| stream.read_exact(&mut back));
        let rtt = start.elapsed();
        match r {
            Ok(()) if back == probe => {
                say!("seq={seq} time={} ms", ms(rtt))?;
                samples.push(rtt);
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
    let received = samples.len();
    match summary(&samples) {
        Some((min, avg, max)) => say!(
            "{sent} sent, {received} received, min/avg/max = {}/{}/{} ms (transport srtt {} ms)",
            ms(min),
            ms(avg),
            ms(max),
            ms(session.conn.rtt())
        )?,
        None => say!("{sent} sent, 0 received")?,
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let _ = stream.finish();
    session.conn.close(0, "done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert!(summary(&[]).is_none());
        let s = [
            Duration::from_millis(1),
            Duration::from_millis(3),
            Duration::from_millis(2),
        ];
        assert_eq!(
            summary(&s).unwrap(),
            (
                Duration::from_millis(1),
                Duration::from_millis(2),
                Duration::from_millis(3)
            )
        );
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
    }
}
