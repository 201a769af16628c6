//! quill-interop: the interop suite.
//!
//! [`relay`] is a userspace UDP relay with seeded, reproducible impairments, placed
//! between one client and one server on loopback; [`capture`] is what it saw.
//! [`peer`] is the quill interop peer (`quill-interop-peer server|client`) and
//! [`runner`] the scenario runner (`quill-interop run`) that puts a server peer, the
//! relay and a client peer together and judges each scenario by its written pass
//! rule (docs/INTEROP.md).
#![warn(missing_docs)]

pub mod capture;
pub mod peer;
pub mod relay;
pub mod runner;

pub use capture::{Action, Capture, Direction, DropReason, HeaderInfo, Record};
pub use relay::{GilbertElliott, Impairments, Rebind, RebindKind, Relay, RelayConfig};
