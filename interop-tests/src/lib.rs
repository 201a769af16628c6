//! quill-interop: the interop suite.
//!
//! [`relay`] is a userspace UDP relay with seeded, reproducible impairments, placed
//! between one client and one server on loopback; [`capture`] is what it saw.
//! [`refpeers`] is the shared code of the reference peers `quinn-peer` and `quiche-peer`
//! (QUIC stacks nobody on this team wrote), and [`reference`](mod@reference) the checks that quill
//! coexists with them (RFC 8999 version negotiation, issue 7).
#![warn(missing_docs)]

pub mod capture;
pub mod reference;
pub mod refpeers;
pub mod relay;

pub use capture::{Action, Capture, Direction, DropReason, HeaderInfo, Record, VnList};
pub use relay::{GilbertElliott, Impairments, Rebind, RebindKind, Relay, RelayConfig};
