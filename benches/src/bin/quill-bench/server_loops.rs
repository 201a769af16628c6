//! `quill-bench server --loops N`: the benchmark server on N event loops, through the
//! same [`Workers`] as `quill server --workers N` (one `SO_REUSEPORT` socket per loop,
//! datagrams steered to their loop by connection ID with the reuseport BPF program,
//! forwarded between loops where the kernel put one on the wrong loop). Each loop has
//! its own [`BenchServer`]; the login verifier (with `--accounts`) is shared.
//!
//! Output: `listening ADDR`, `fingerprint FP` and `steering MODE` first. Control on
//! stdin, one command per line: `stats` prints `stats {JSON}` with every loop's counters
//! as last published ([`stats_json`]); end of input shuts the server down gracefully,
//! and the same JSON (after the loops have returned) is printed as the last line.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc;

use quill_transport::driver::{SteeringMode, TerminationSignals, UdpConfig};
use quill_transport::driver::{Workers, WorkersConfig};
use quill_transport::proto::CidLayout;
use serde_json::{json, Value};

use crate::common;
use crate::server::{BenchServer, Setup};

/// Most loops (a worker index is one byte of the connection ID).
pub const MAX_LOOPS: usize = 256;

/// What the control threads ask of the main thread.
enum Control {
    Stats,
    Stop,
}

/// Runs the server of `setup` on `loops` event loops (sharing one worker pool of
/// `pool_threads` threads) until SIGINT/SIGTERM or (unless `ignore_stdin`) until stdin
/// closes.
pub fn run(
    listen: SocketAddr,
    loops: usize,
    pool_threads: usize,
    ignore_stdin: bool,
    setup: Setup,
) -> Result<(), String> {
    common::require_loopback(listen)?;
    if !(1..=MAX_LOOPS).contains(&loops) {
        return Err(format!("--loops is 1 to {MAX_LOOPS}, not {loops}"));
    }
    let signals = TerminationSignals::block();
    let config = WorkersConfig {
        workers: loops,
        bpf: true,
        layout: CidLayout::default(),
        pool_threads: pool_threads.max(1),
        pool_capacity: 0,
    };
    let verifier = setup.verifier;
    let mut workers = Workers::spawn(
        listen,
        &config,
        &UdpConfig::default(),
        setup.endpoint,
        setup.config,
        |_, _| BenchServer::new(verifier.clone()),
    )
    .map_err(|e| format!("bind {listen}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let to_main = tx.clone();
    signals.on_signal(move |_| {
        let _ = to_main.send(Control::Stop);
    });
    if !ignore_stdin {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "stats" && tx.send(Control::Stats).is_err() {
                    return;
                }
            }
            let _ = tx.send(Control::Stop);
        });
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening {}", workers.local_addr());
        let _ = writeln!(out, "fingerprint {}", setup.fingerprint);
        let _ = writeln!(out, "steering {}", steering_name(workers.steering()));
        let _ = out.flush();
    }
    // Until a signal or the end of stdin (with --ignore-stdin, the signal thread keeps
    // the channel open).
    while let Ok(Control::Stats) = rx.recv() {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "stats {}", stats_json(&workers));
        let _ = out.flush();
    }
    workers.shutdown();
    let joined = workers.join();
    println!("{}", stats_json(&workers));
    joined.map_err(|e| format!("server loop: {e}"))
}

/// `single`, `bpf`, or `forwarding (WHY)`.
fn steering_name(mode: &SteeringMode) -> String {
    match mode {
        SteeringMode::Single => "single".into(),
        SteeringMode::Bpf => "bpf".into(),
        SteeringMode::Forwarding(why) => format!("forwarding ({why})"),
    }
}

/// The loops' counters: `steering`, `forwarded` (datagrams handed from the loop that
/// received them to the loop that owns them, all loops), `forward_dropped`, and per
/// loop (`loops`) `datagrams_in`, `forwarded_out`, `forwarded_in`, `forward_dropped`,
/// `sessions_created` and live `connections`. With one loop nothing is steered and
/// the counters are written when it returns (the live `connections` stay 0).
pub fn stats_json(workers: &Workers) -> Value {
    let stats = workers.stats();
    json!({
        "steering": steering_name(workers.steering()),
        "forwarded": stats.iter().map(|s| s.forwarded_out).sum::<u64>(),
        "forward_dropped": stats.iter().map(|s| s.forward_dropped).sum::<u64>(),
        "loops": stats.iter().map(|s| json!({
            "datagrams_in": s.datagrams_in,
            "forwarded_out": s.forwarded_out,
            "forwarded_in": s.forwarded_in,
            "forward_dropped": s.forward_dropped,
            "sessions_created": s.sessions_created,
            "connections": s.connections,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_loops_and_non_loopback_addresses() {
        let setup = || Setup::new(None, None, None).unwrap();
        let local = "127.0.0.1:0".parse().unwrap();
        let err = run(local, 0, 1, true, setup()).unwrap_err();
        assert!(err.contains("--loops is 1 to 256"), "{err}");
        let err = run(local, MAX_LOOPS + 1, 1, true, setup()).unwrap_err();
        assert!(err.contains("--loops"), "{err}");
        let far = "192.0.2.1:4433".parse().unwrap();
        let err = run(far, 2, 1, true, setup()).unwrap_err();
        assert!(err.contains("not a loopback"), "{err}");
    }

    #[test]
    fn stats_name_every_loop() {
        let config = WorkersConfig {
            workers: 2,
            bpf: false,
            layout: CidLayout::default(),
            pool_threads: 1,
            pool_capacity: 0,
        };
        let setup = Setup::new(None, None, None).unwrap();
        let mut workers = Workers::spawn(
            "127.0.0.1:0".parse().unwrap(),
            &config,
            &UdpConfig::default(),
            setup.endpoint,
            setup.config,
            |_, _| BenchServer::new(None),
        )
        .unwrap();
        workers.shutdown();
        workers.join().unwrap();
        let v = stats_json(&workers);
        assert_eq!(v["loops"].as_array().unwrap().len(), 2);
        assert_eq!(v["steering"], "forwarding (turned off)");
        assert_eq!(v["forwarded"], 0);
    }
}
