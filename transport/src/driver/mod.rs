//! The driver: the only layer with sockets, threads and the clock.
//!
//! It moves bytes between UDP sockets and the sans-IO [`proto`](crate::proto) layer and
//! holds no protocol logic. One thread runs a manual [`mio::Poll`] loop; each turn it
//! reads the clock once, drains the sockets (batched, bounded work per wake-up), feeds
//! the endpoint, expires timers and flushes. Anything slow (Argon2id, database writes)
//! runs on a [`WorkerPool`] and comes back through a [`mio::Waker`], so the loop never
//! blocks and every session keeps answering keep-alives.
//!
//! This module's building blocks:
//! - `socket`: [`UdpIo`], one non-blocking UDP socket with recvmmsg/GRO receive into
//!   buffers re-armed to full capacity before every receive, and GSO send where
//!   `WouldBlock` is back-pressure (a bounded queue), never a dropped datagram.
//! - `histogram`: [`LatencyHistogram`], the fixed-size, allocation-free histogram in
//!   which the event loop records how late each timer fired.
//! - `signals`: [`TerminationSignals`], SIGINT/SIGTERM collected by one thread so a
//!   server can drain its connections before it exits.
//! - `pool`: [`WorkerPool`], a bounded, non-blocking job queue on a few threads,
//!   with results delivered through the waker of the loop that submitted the job
//!   (one pool can serve several loops) and panics contained.
//! - `qlog`: [`qlog::QlogDir`], the `--qlog-dir` writer: one thread appending each
//!   connection's qlog batches to its `.sqlog` file, behind a queue bounded in bytes.
//! - `workers`: [`Workers`], N loops on one address (`SO_REUSEPORT`), datagrams
//!   steered to the loop named in their connection ID by the classic BPF program of
//!   [`steering`], or forwarded between loops where it cannot be attached.

pub mod blocking;
pub(crate) mod event_loop;
pub(crate) mod histogram;
pub(crate) mod login;
pub(crate) mod pool;
pub mod qlog;
pub(crate) mod signals;
pub(crate) mod socket;
pub mod steering;
pub(crate) mod workers;

pub use event_loop::{Completion, Context, EventLoop, Handler, LoopHandle, LoopStats};
pub use histogram::{LatencyHistogram, LatencySummary};
pub use login::{verify_on_pool, BUSY};
pub use pool::{JobId, JobPanicked, PoolFull, WorkerPool};
pub use signals::TerminationSignals;
pub use socket::{
    keep_ecn_in_control_messages, set_int_option, IcmpError, SendOutcome, SyscallError, UdpConfig,
    UdpIo, DEFAULT_RX_SLOT_SIZE, MAX_UDP_PAYLOAD,
};
pub use workers::{SteeringMode, WorkerStats, Workers, WorkersConfig, FORWARD_QUEUE};
