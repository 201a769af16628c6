//! HyStart++ (RFC 9406) in the deterministic simulated network (virtual time): on a
//! path with a deep bottleneck queue, slow start ends on the rise in RTT, before the
//! queue overflows, so the first seconds of a bulk transfer lose (almost) nothing,
//! where standard slow start doubles the window into a burst of losses.

#[path = "support/sim_setup.rs"]
mod sim_setup;

use std::time::Duration;

use quill_transport::proto::{CongestionAlgorithm, TransportConfig};
use quill_transport::sim::{ClientApp, LinkConfig};
use sim_setup::{alice_policy, setup, sim_of, MB};

/// 20 Mbit/s, 40 ms round trip (a bandwidth-delay product of 100 KB) and a 2 MiB
/// drop-tail queue in front of the bottleneck (about 840 ms of queueing, a bloated
/// buffer). With a shallower queue (512 KiB, 1 MiB) the five rounds of Conservative
/// Slow Start (each × 1.25) still overflow it, later and with fewer losses than
/// standard slow start (docs/BENCHMARKS.md).
fn deep_queue() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(20),
        bandwidth_bps: Some(20_000_000),
        queue_bytes: 2 * 1024 * 1024,
        ..LinkConfig::default()
    }
}

/// What one upload over [`deep_queue`] did.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Packets the client declared lost in the first `EARLY` of virtual time.
    lost_early: u64,
    /// Virtual time of the first loss the client declared, if any.
    first_loss: Option<Duration>,
    /// Packets lost over the whole transfer.
    lost: u64,
    /// Virtual time from the start until the server had every byte.
    done: Duration,
}

/// The first seconds, where slow start ends.
const EARLY: Duration = Duration::from_secs(4);
/// The upload: 12 MB, about 5 s at 20 Mbit/s.
const BYTES: u64 = 12 * MB;

fn upload(seed: u64, congestion: CongestionAlgorithm, hystart: bool) -> Run {
    let transport = TransportConfig {
        congestion,
        hystart,
        ..TransportConfig::default()
    };
    let s = setup(seed, transport);
    let mut sim = sim_of(
        seed,
        s,
        deep_queue(),
        ClientApp::new(BYTES, 1),
        alice_policy(),
    );
    let mut run = Run {
        lost_early: 0,
        first_loss: None,
        lost: 0,
        done: Duration::ZERO,
    };
    // Ten minutes of virtual time bound the loop; the transfer needs seconds.
    let finished = sim.run_until(Duration::from_secs(600), |s| {
        let lost = s.client().stats().packets_lost;
        if lost > 0 && run.first_loss.is_none() {
            run.first_loss = Some(s.elapsed());
        }
        if s.elapsed() <= EARLY {
            run.lost_early = lost;
        }
        run.lost = lost;
        s.server_app.sink.bytes >= BYTES || s.client_app.lost.is_some()
    });
    assert!(finished, "seed {seed}: the upload did not finish");
    assert!(sim.client_app.lost.is_none(), "{:?}", sim.client_app.lost);
    assert_eq!(sim.server_app.sink.bytes, BYTES);
    run.done = sim.elapsed();
    run
}

/// Both controllers, with and without HyStart++: HyStart++ loses fewer packets in
/// the first seconds and has its first loss later (or never), and the upload takes no
/// longer. The comparison fails if HyStart++ does not change slow start (standard
/// slow start overflows this queue within the first second).
#[test]
fn hystart_leaves_slow_start_before_the_deep_queue_overflows() {
    for congestion in [CongestionAlgorithm::Cubic, CongestionAlgorithm::NewReno] {
        let standard = upload(1, congestion, false);
        let hystart = upload(1, congestion, true);
        eprintln!("{congestion:?}: standard {standard:?}");
        eprintln!("{congestion:?}: hystart  {hystart:?}");
        assert!(
            standard.lost_early > 0,
            "{congestion:?}: standard slow start should overflow the queue: {standard:?}"
        );
        assert!(
            hystart.lost_early < standard.lost_early,
            "{congestion:?}: {hystart:?} vs {standard:?}"
        );
        let first = |r: &Run| r.first_loss.unwrap_or(Duration::MAX);
        assert!(
            first(&hystart) > first(&standard),
            "{congestion:?}: {hystart:?} vs {standard:?}"
        );
        // Goodput not worse: the same bytes in at most 2% more virtual time.
        assert!(
            hystart.done <= standard.done + standard.done / 50,
            "{congestion:?}: {hystart:?} vs {standard:?}"
        );
    }
}
