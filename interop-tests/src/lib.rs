//! quill-interop: the interop suite.
//!
//! [`relay`] is a userspace UDP relay with seeded, reproducible impairments, placed
//! between one client and one server on loopback; [`capture`] is what it saw. The
//! scenario runner and the reference-peer adapters arrive later (issue 7).
#![warn(missing_docs)]

pub mod capture;
pub mod relay;

pub use capture::{Action, Capture, Direction, DropReason, HeaderInfo, Record};
pub use relay::{GilbertElliott, Impairments, Rebind, RebindKind, Relay, RelayConfig};
