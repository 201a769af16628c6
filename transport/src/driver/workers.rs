//! A server on several cores: N event loops, each a thread with its own UDP socket on
//! the same address (`SO_REUSEPORT`), its own [`Endpoint`](crate::proto::Endpoint)
//! and handler.
//!
//! Which loop owns a connection is written in its connection IDs: every loop issues
//! QUIC-LB IDs ([`CidLayout`]) carrying its index. The kernel is asked to deliver each
//! datagram to that loop's socket by a classic BPF program ([`super::steering`]).
//! Where the program cannot be attached (no permission, an old kernel, or
//! [`WorkersConfig::bpf`] off) or a datagram still reaches the wrong loop, that loop
//! hands it to the right one through a bounded channel and wakes it; such datagrams
//! are counted ([`WorkerStats::forwarded_out`]). Nothing on the per-packet path takes
//! a lock: a loop owns its endpoint, the channels are lock-free, and the counters are
//! relaxed atomics written once per turn.
//!
//! What every loop shares: the stateless-reset secret and the Retry-token key and
//! clock (one per server process, in [`EndpointConfig`]: `secret`, `retry_secret`, and
//! one creation instant), so a reset token or a Retry token is valid on every loop;
//! the per-address admission limits ([`AddressLimits`]: handshakes in progress and
//! handshakes per second per source address), so an address spread over the loops by
//! its connection IDs gets one allowance, not one per loop; and one [`WorkerPool`] for
//! slow work, with one bound on its jobs: each loop holds a handle on it
//! ([`WorkerPool::share`]), and a job's result goes back to the loop that submitted it,
//! through that loop's waker. Anything the handlers share (account store, login
//! limiter, session caps) they hold in `Arc`s. What stays per loop: its connections,
//! and the endpoint-wide limits (`max_connections`, `max_half_open`, the Retry
//! threshold), which bound one loop's memory and work.
//!
//! Socket indexes in a reuseport group are the order in which the sockets joined it,
//! so the sockets are bound one after the other, worker 0 first, before any loop runs.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Poll, Waker};

use super::event_loop::{EventLoop, Handler, LoopHandle, SOCKET, WAKER};
use super::pool::WorkerPool;
use super::socket::{UdpConfig, UdpIo};
use super::steering;
use crate::proto::{AddressLimits, CidLayout, EcnCodepoint, EndpointConfig, ServerConfig};

/// Datagrams one loop's inbox holds for it; more are dropped (and counted), as a
/// full socket buffer would.
pub const FORWARD_QUEUE: usize = 1024;

/// How the server spreads over loops.
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// Number of event loops (threads), at least 1.
    pub workers: usize,
    /// Attach the steering BPF program (turn off to test the forwarding path).
    pub bpf: bool,
    /// The layout of the connection IDs (server ID); each loop sets its index in it.
    pub layout: CidLayout,
    /// Threads of the one worker pool all loops share (slow work: password checks,
    /// file commits), at least 1.
    pub pool_threads: usize,
    /// Most jobs in that pool at once (queued, running or not yet collected), over
    /// all loops; beyond it a loop's `Context::spawn` fails at once. 0: the default,
    /// `workers × max(max_half_open, 256)`, so that every half-open handshake of every
    /// loop can wait for its login verdict.
    pub pool_capacity: usize,
}

/// Whether the kernel steers datagrams to their loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteeringMode {
    /// One loop: nothing to steer.
    Single,
    /// The BPF program is attached.
    Bpf,
    /// No program (the reason given); datagrams that reach the wrong loop are forwarded.
    Forwarding(String),
}

/// Counters one loop publishes once per turn, readable from any thread.
#[derive(Debug, Default)]
struct Counters {
    datagrams_in: AtomicU64,
    forwarded_out: AtomicU64,
    forwarded_in: AtomicU64,
    forward_dropped: AtomicU64,
    sessions_created: AtomicU64,
    connections: AtomicU64,
    pool: AtomicU64,
}

/// A snapshot of one loop's counters ([`Workers::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Datagrams this loop's socket received.
    pub datagrams_in: u64,
    /// Datagrams it received for another loop and handed over (0 when the BPF program
    /// steers correctly).
    pub forwarded_out: u64,
    /// Datagrams other loops handed to it.
    pub forwarded_in: u64,
    /// Datagrams it could not hand over (the other loop's inbox was full).
    pub forward_dropped: u64,
    /// Server sessions it created.
    pub sessions_created: u64,
    /// Its live connections.
    pub connections: u64,
    /// The id of the worker pool its slow work runs on: the same for every loop of a
    /// [`Workers`], since they share one.
    pub pool: u64,
}

/// A datagram handed from one loop to another.
pub(crate) struct Forwarded {
    pub(crate) from: SocketAddr,
    pub(crate) ecn: Option<EcnCodepoint>,
    pub(crate) data: Vec<u8>,
}

struct Peer {
    tx: SyncSender<Forwarded>,
    waker: Arc<Waker>,
}

/// One loop's part of the steering: its index, the others' inboxes, its own.
pub(crate) struct Steering {
    layout: CidLayout,
    me: usize,
    peers: Arc<[Peer]>,
    inbox: Receiver<Forwarded>,
    /// Peers handed something since they were last woken.
    to_wake: Vec<bool>,
    counters: Arc<Counters>,
    forwarded_out: u64,
    forwarded_in: u64,
    forward_dropped: u64,
}

impl Steering {
    /// Hands `data` to the loop that owns it if that is not this one; returns whether
    /// it did (or dropped it for a full inbox).
    pub(crate) fn divert(
        &mut self,
        from: SocketAddr,
        ecn: Option<EcnCodepoint>,
        data: &[u8],
    ) -> bool {
        let owner = match self.layout.steer(data, self.peers.len()) {
            Some(w) if w != self.me => w,
            _ => return false,
        };
        let fwd = Forwarded {
            from,
            ecn,
            data: data.to_vec(),
        };
        match self.peers[owner].tx.try_send(fwd) {
            Ok(()) => {
                self.forwarded_out += 1;
                self.to_wake[owner] = true;
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.forward_dropped += 1;
            }
        }
        true
    }

    /// Wakes the loops handed something this turn (one wake-up per loop and turn).
    pub(crate) fn wake_peers(&mut self) {
        for (i, w) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                let _ = self.peers[i].waker.wake();
            }
        }
    }

    /// Takes up to [`FORWARD_QUEUE`] datagrams other loops handed over; returns
    /// whether more may be waiting.
    pub(crate) fn drain_inbox(
        &mut self,
        mut f: impl FnMut(SocketAddr, Option<EcnCodepoint>, &mut [u8]),
    ) -> bool {
        for _ in 0..FORWARD_QUEUE {
            match self.inbox.try_recv() {
                Ok(mut d) => {
                    self.forwarded_in += 1;
                    f(d.from, d.ecn, &mut d.data);
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Publishes this loop's counters (once per turn).
    pub(crate) fn publish(&self, datagrams_in: u64, sessions_created: u64, connections: usize) {
        let c = &self.counters;
        c.datagrams_in.store(datagrams_in, Ordering::Relaxed);
        c.forwarded_out.store(self.forwarded_out, Ordering::Relaxed);
        c.forwarded_in.store(self.forwarded_in, Ordering::Relaxed);
        c.forward_dropped
            .store(self.forward_dropped, Ordering::Relaxed);
        c.sessions_created
            .store(sessions_created, Ordering::Relaxed);
        c.connections.store(connections as u64, Ordering::Relaxed);
    }
}

/// N event loops serving one address, each on its own thread. Dropping it shuts every
/// loop down gracefully and waits for them.
pub struct Workers {
    addr: SocketAddr,
    handles: Vec<LoopHandle>,
    threads: Vec<Option<JoinHandle<io::Result<()>>>>,
    counters: Vec<Arc<Counters>>,
    mode: SteeringMode,
    pool_threads: usize,
    pool_capacity: usize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("addr", &self.addr)
            .field("workers", &self.handles.len())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// Binds `config.workers` sockets to `addr` (port 0: one free port for all), builds
    /// one loop per socket with `make(index, handle)` as its handler, attaches the
    /// steering program, and starts every loop on its own thread. Every loop's endpoint
    /// gets `endpoint` with the layout for its index, and shares its secrets and
    /// Retry-token clock.
    ///
    /// Fails if the address is taken (also by another process's reuseport group: the
    /// address is first bound alone), or a socket or thread cannot be made.
    pub fn spawn<H, F>(
        addr: SocketAddr,
        config: &WorkersConfig,
        udp: &UdpConfig,
        endpoint: EndpointConfig,
        server: ServerConfig,
        mut make: F,
    ) -> io::Result<Workers>
    where
        H: Handler + Send,
        F: FnMut(usize, LoopHandle) -> H,
    {
        let n = config.workers.max(1);
        if n > usize::from(u8::MAX) + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most 256 workers, not {n}"),
            ));
        }
        let mut endpoint = endpoint;
        if endpoint.retry_secret.is_none() {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            endpoint
                .rng
                .fill(&mut *secret)
                .map_err(|_| io::Error::other("the random generator failed"))?;
            endpoint.retry_secret = Some(secret);
        }
        // One allowance per source address for the whole server, not one per loop.
        if endpoint.address_limits.is_none() {
            endpoint.address_limits = Some(AddressLimits::shared(
                endpoint.max_half_open_per_address,
                endpoint.per_source_handshakes_per_sec,
                endpoint.rate_limit_sources,
            ));
        }
        let mut udp = udp.clone();
        udp.reuse_port = n > 1;
        let addr = if n > 1 { claim(addr)? } else { addr };
        // Bind in worker order: a socket's index in the group is its worker index.
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let socket = UdpIo::bind(addr, &udp, poll.registry(), SOCKET)?;
            parts.push((poll, waker, socket));
        }
        let addr = parts[0].2.local_addr();
        let mode = if n == 1 {
            SteeringMode::Single
        } else if !config.bpf {
            SteeringMode::Forwarding("turned off".into())
        } else {
            let program = steering::reuseport_program(&config.layout, n);
            match steering::attach(&parts[0].2, &program) {
                Ok(()) => SteeringMode::Bpf,
                Err(e) => SteeringMode::Forwarding(format!("SO_ATTACH_REUSEPORT_CBPF: {e}")),
            }
        };
        if let SteeringMode::Forwarding(why) = &mode {
            tracing::warn!(
                "{n} workers without kernel steering ({why}): datagrams that reach the \
                 wrong loop are forwarded"
            );
        }
        let mut inboxes = Vec::with_capacity(n);
        let mut peers = Vec::with_capacity(n);
        for (_, waker, _) in &parts {
            let (tx, rx) = mpsc::sync_channel(FORWARD_QUEUE);
            inboxes.push(rx);
            peers.push(Peer {
                tx,
                waker: waker.clone(),
            });
        }
        let peers: Arc<[Peer]> = peers.into();
        // One pool for every loop; each loop's handle delivers to its own waker.
        let pool_capacity = match config.pool_capacity {
            0 => n * endpoint.max_half_open.max(256),
            c => c,
        };
        let pool =
            WorkerPool::with_capacity(config.pool_threads, pool_capacity, parts[0].1.clone())?;
        let (pool_id, pool_threads) = (pool.id(), pool.threads());
        let mut pools = Vec::with_capacity(n);
        for (_, waker, _) in parts.iter().skip(1) {
            pools.push(pool.share(waker.clone()));
        }
        pools.insert(0, pool);
        let start = Instant::now();
        let mut loops = Vec::with_capacity(n);
        let mut counters = Vec::with_capacity(n);
        let each = parts.into_iter().zip(inboxes).zip(pools);
        for (i, (((poll, waker, socket), inbox), pool)) in each.enumerate() {
            let layout = config.layout.clone().for_worker(i as u8);
            let ep = EndpointConfig {
                cid_layout: Some(layout.clone()),
                ..endpoint.clone()
            };
            let handle = LoopHandle::new(waker);
            let handler = make(i, handle.clone());
            let mut ev = EventLoop::assemble(
                poll,
                handle,
                socket,
                &udp,
                ep,
                Some(server.clone()),
                pool,
                handler,
                start,
            )?;
            let c = Arc::new(Counters::default());
            c.pool.store(pool_id, Ordering::Relaxed);
            if n > 1 {
                ev.steer(Steering {
                    layout,
                    me: i,
                    peers: peers.clone(),
                    inbox,
                    to_wake: vec![false; n],
                    counters: c.clone(),
                    forwarded_out: 0,
                    forwarded_in: 0,
                    forward_dropped: 0,
                });
            }
            counters.push(c);
            loops.push(ev);
        }
        let mut workers = Workers {
            addr,
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            counters,
            mode,
            pool_threads,
            pool_capacity,
        };
        for (i, mut ev) in loops.into_iter().enumerate() {
            workers.handles.push(ev.handle());
            let c = workers.counters[i].clone();
            let spawned = std::thread::Builder::new()
                .name(format!("quill-loop-{i}"))
                .spawn(move || {
                    let r = ev.run();
                    let s = ev.stats();
                    let e = ev.endpoint().stats();
                    c.datagrams_in.store(s.datagrams_in, Ordering::Relaxed);
                    c.sessions_created
                        .store(e.sessions_created, Ordering::Relaxed);
                    tracing::info!(
                        "loop {i}: {} datagrams in, {} out, {} forwarded to other loops, \
                         {} received from them, {} sessions",
                        s.datagrams_in,
                        s.datagrams_out,
                        c.forwarded_out.load(Ordering::Relaxed),
                        c.forwarded_in.load(Ordering::Relaxed),
                        e.sessions_created
                    );
                    r
                });
            // On an error `workers` is dropped, which stops and joins the loops
            // already running.
            workers.threads.push(Some(spawned?));
        }
        Ok(workers)
    }

    /// The bound address (every loop's).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of loops.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one loop.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Whether the kernel steers datagrams (and why not, if it does not).
    pub fn steering(&self) -> &SteeringMode {
        &self.mode
    }

    /// Each loop's handle (wake, shut down, abort).
    pub fn handles(&self) -> &[LoopHandle] {
        &self.handles
    }

    /// Every loop's counters as last published (each loop publishes once per turn).
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.counters
            .iter()
            .map(|c| WorkerStats {
                datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
                forwarded_out: c.forwarded_out.load(Ordering::Relaxed),
                forwarded_in: c.forwarded_in.load(Ordering::Relaxed),
                forward_dropped: c.forward_dropped.load(Ordering::Relaxed),
                sessions_created: c.sessions_created.load(Ordering::Relaxed),
                connections: c.connections.load(Ordering::Relaxed),
                pool: c.pool.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Threads of the worker pool the loops share.
    pub fn pool_threads(&self) -> usize {
        self.pool_threads
    }

    /// The bound on jobs in that pool, over all loops.
    pub fn pool_capacity(&self) -> usize {
        self.pool_capacity
    }

    /// Asks every loop to close its connections and return.
    pub fn shutdown(&self) {
        for h in &self.handles {
            h.shutdown();
        }
    }

    /// Waits for every loop to return. If one fails, the others are shut down; the
    /// first failure is returned.
    pub fn join(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for t in &mut self.threads {
            let Some(t) = t.take() else { continue };
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(io::Error::other("an event loop panicked")),
            };
            if let Err(e) = r {
                self.handles.iter().for_each(LoopHandle::shutdown);
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if self.threads.iter().any(Option::is_some) {
            self.shutdown();
            let _ = self.join();
        }
    }
}

/// Checks that `addr` is free by binding it alone (no `SO_REUSEPORT`), so that the
/// group never joins another process's group on the same port; with port 0 this picks
/// the port. Returns the address to bind the group to.
fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = UdpSocket::bind(addr)?;
    let mut at = addr;
    at.set_port(probe.local_addr()?.port());
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claiming_a_taken_address_fails() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert!(claim(addr).is_err());
        let free = claim("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(free.port(), 0);
    }
}
