//! quill-interop: the interop suite.
//!
//! [`relay`] is a userspace UDP relay with seeded, reproducible impairments, placed
//! between one client and one server on loopback; [`capture`] is what it saw.
//! [`peer`] is the quill interop peer (`quill-interop-peer server|client`) and
//! [`runner`] the scenario runner (`quill-interop run`) that puts a server peer, the
//! relay and a client peer together and judges each scenario by its written pass
//! rule (docs/INTEROP.md).
//! [`refpeers`] is the shared code of the reference peers `quinn-peer` and `quiche-peer`
//! (QUIC stacks nobody on this team wrote), and [`reference`](mod@reference) the checks that quill
//! coexists with them (RFC 8999 version negotiation, issue 7).
#![warn(missing_docs)]

pub mod capture;
pub mod child;
pub mod peer;
pub mod reference;
pub mod refpeers;
pub mod relay;
pub mod runner;

pub use capture::{Action, Capture, Direction, DropReason, HeaderInfo, Record, VnList};
pub use relay::{GilbertElliott, Impairments, Rebind, RebindKind, Relay, RelayConfig};

/// Tested here, not in `child.rs`, which the CLI's tests include too.
#[cfg(test)]
mod child_tests {
    use crate::child::*;
    use std::process::Command;
    use std::time::Duration;

    #[test]
    fn a_child_is_stopped_gracefully_or_killed() {
        let mut graceful = Command::new("sleep").arg("30").spawn().unwrap();
        let status = stop(&mut graceful, Duration::from_secs(10)).expect("exits on SIGTERM");
        assert!(!status.success());
        // A child that ignores SIGTERM is killed after the bound.
        let mut stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(stop(&mut stubborn, Duration::from_millis(300)), None);
        assert!(stubborn.try_wait().unwrap().is_some(), "killed and reaped");
        let mut quick = Command::new("true").spawn().unwrap();
        assert!(wait_or_kill(&mut quick, Duration::from_secs(10))
            .unwrap()
            .success());
    }
}
