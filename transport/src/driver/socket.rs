//! [`UdpIo`]: one non-blocking UDP socket registered with a [`mio::Poll`], with batched
//! receive (recvmmsg + GRO) and segmented send (GSO) through `quinn-udp`.
//!
//! Contract:
//! - **Receive buffers are re-armed to full capacity before every receive.** `UdpIo`
//!   owns a fixed pool of [`RX_SLOTS`] slots of [`UdpConfig::rx_slot_size`]
//!   bytes; every call into the kernel is handed every slot at its full size, built
//!   afresh from the fixed storage. Nothing a caller does with a received datagram can
//!   shrink the next receive. [`UdpIo::rx_capacity`] reports the smallest slot actually
//!   handed to the kernel on the last receive, so a test can prove it.
//! - **`WouldBlock` on send is back-pressure, never a drop.** Unsent datagrams go into a
//!   bounded queue owned by `UdpIo` and `WRITABLE` interest is registered; the event
//!   loop calls [`UdpIo::flush_queued`] when the socket turns writable. When the queue is
//!   full, [`UdpIo::send`] refuses the datagram ([`SendOutcome::Full`]) and the caller
//!   keeps it until the queue drains.
//! - **Bounded work per call.** [`UdpIo::recv`] drains until `WouldBlock` but stops after
//!   [`UdpConfig::max_recv_batches`] batches so that one busy socket cannot starve the
//!   loop; [`UdpIo::rx_pending`] then tells the loop to come back without waiting for a
//!   new readiness event (mio readiness is edge-triggered).
//! - **ICMP errors are read, not fatal.** With [`UdpConfig::icmp_errors`] (Linux:
//!   `IP_RECVERR` / `IPV6_RECVERR`) the kernel queues an error for every ICMP
//!   unreachable that answers a datagram we sent; [`UdpIo::recv_errors`] reads them
//!   from the socket's error queue with the address the datagram was sent to. An error
//!   the kernel also reports through `recvmmsg` ends that receive call early, without
//!   failing it.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV6};

use mio::{Interest, Registry, Token};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState, BATCH_SIZE};
use socket2::{Domain, Protocol, Socket, Type};

use crate::proto::{EcnCodepoint, Unreachable};

/// Largest UDP payload one `sendmsg` may carry, over IPv4 and IPv6 alike
/// (65,535 − 20-byte IPv4 header − 8-byte UDP header). A GSO batch is the payload of one
/// `sendmsg`, so it is bounded by this too.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Receive slots handed to one `recvmmsg`. With 64 KiB GRO slots, 8 slots (512 KiB,
/// up to ~350 packets per call) fit in a core's L2 cache, so what the kernel just
/// wrote is still there when it is decrypted; quinn-udp's 32 slots took 2 MiB.
pub const RX_SLOTS: usize = if BATCH_SIZE < 8 { BATCH_SIZE } else { 8 };

/// Default size of one receive slot: room for the largest UDP datagram and for the
/// largest GRO super-buffer the kernel builds (GRO aggregation stops at 64 KiB).
pub const DEFAULT_RX_SLOT_SIZE: usize = 64 * 1024;

/// How to open a [`UdpIo`].
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Requested `SO_RCVBUF` in bytes. The kernel may grant less (Linux caps it at
    /// `net.core.rmem_max`); [`UdpIo::recv_buffer_size`] reports what it gave.
    pub recv_buffer: usize,
    /// Requested `SO_SNDBUF` in bytes; [`UdpIo::send_buffer_size`] reports the result.
    pub send_buffer: usize,
    /// Set `SO_REUSEPORT` before binding (one event loop per core on one port).
    pub reuse_port: bool,
    /// Bytes in each receive slot handed to the kernel. Clamped to at least
    /// [`MAX_UDP_PAYLOAD`] so that no datagram and no GRO buffer is ever truncated.
    pub rx_slot_size: usize,
    /// Most `recvmmsg` batches one [`UdpIo::recv`] call performs before returning.
    /// The application reads only between calls, so this also bounds how much stream
    /// data piles up unread in one loop turn (8 batches: at most 4 MiB with 64 KiB
    /// GRO slots; 64 let one turn take in a whole 16 MiB stream window, which the
    /// stream's receive buffer then kept).
    pub max_recv_batches: usize,
    /// Bound, in bytes, of the queue of datagrams waiting for the socket to become
    /// writable again.
    pub send_queue_bytes: usize,
    /// Use GSO when the kernel supports it. With `false`, segmented sends are split into
    /// individual datagrams (the same path as on a kernel without GSO).
    pub gso: bool,
    /// Ask the kernel for ICMP errors (Linux `IP_RECVERR` / `IPV6_RECVERR`; elsewhere
    /// nothing is reported) and read them with [`UdpIo::recv_errors`]. Clients use it
    /// to learn at once that nothing listens at the server's address.
    pub icmp_errors: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            recv_buffer: 4 * 1024 * 1024,
            send_buffer: 4 * 1024 * 1024,
            reuse_port: false,
            rx_slot_size: DEFAULT_RX_SLOT_SIZE,
            max_recv_batches: 8,
            send_queue_bytes: 1024 * 1024,
            gso: true,
            icmp_errors: false,
        }
    }
}

/// What [`UdpIo::send`] did with a datagram (or GSO batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// Every byte was handed to the kernel.
    Sent,
    /// The kernel pushed back (`WouldBlock`); whatever it did not take is queued inside
    /// `UdpIo` and goes out from [`UdpIo::flush_queued`]. Stop producing datagrams until
    /// the socket is writable and the queue has drained.
    Queued,
    /// The send queue is full: nothing was sent or queued, the caller still owns the
    /// data. Stop producing datagrams until [`UdpIo::flush_queued`] reports drained.
    Full,
}

/// An ICMP error the kernel reported for a datagram this socket sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// Where the datagram that caused it was going.
    pub destination: SocketAddr,
    /// What the ICMP message said.
    pub reason: Unreachable,
}

/// A system call that failed, with the call's name (wrapped inside an [`io::Error`] of
/// the same [`io::ErrorKind`]; reach it through [`io::Error::get_ref`]).
#[derive(Debug)]
pub struct SyscallError {
    /// The failing call, e.g. `"recvmmsg"` or `"setsockopt(SO_RCVBUF)"`.
    pub call: &'static str,
    /// What the kernel said.
    pub source: io::Error,
}

impl fmt::Display for SyscallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.call, self.source)
    }
}

impl std::error::Error for SyscallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps `source` so that its message names `call`; keeps the [`io::ErrorKind`].
pub(crate) fn syscall(call: &'static str, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), SyscallError { call, source })
}

/// A datagram (or GSO batch) the kernel has not taken yet.
#[derive(Debug)]
struct QueuedTransmit {
    dest: SocketAddr,
    data: Vec<u8>,
    /// Bytes of `data` already sent (always a multiple of the segment size).
    sent: usize,
    segment_size: Option<usize>,
    ecn: Option<EcnCodepoint>,
}

/// The sending half's borrowed state, so a queued transmit can be sent while the queue
/// itself is borrowed.
struct Sender<'a> {
    socket: &'a mio::net::UdpSocket,
    state: &'a UdpSocketState,
    gso: bool,
    budget: &'a mut Option<usize>,
}

impl Sender<'_> {
    fn max_gso_segments(&self) -> usize {
        if self.gso {
            self.state.max_gso_segments().max(1)
        } else {
            1
        }
    }

    /// One `sendmsg`. Honours the simulated budget ([`UdpIo::throttle_sends`]).
    fn sendmsg(
        &mut self,
        dest: SocketAddr,
        data: &[u8],
        seg: Option<usize>,
        ecn: Option<EcnCodepoint>,
    ) -> io::Result<()> {
        if *self.budget == Some(0) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let transmit = Transmit {
            destination: dest,
            ecn: ecn.map(|e| match e {
                EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
                EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
                EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
            }),
            contents: data,
            segment_size: seg,
            src_ip: None,
        };
        self.state
            .try_send(UdpSockRef::from(self.socket), &transmit)?;
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        Ok(())
    }

    /// Sends `data` (split into `seg`-byte datagrams when `seg` is set) until done or
    /// until the kernel pushes back. Returns the bytes sent; when less than
    /// `data.len()`, the count is a multiple of the segment size, so the rest can be
    /// queued and sent later with the same segment boundaries.
    fn transmit(
        &mut self,
        dest: SocketAddr,
        data: &[u8],
        seg: Option<usize>,
        ecn: Option<EcnCodepoint>,
    ) -> io::Result<usize> {
        let seg = match seg {
            Some(s) if s < data.len() => s,
            _ => {
                return match self.sendmsg(dest, data, None, ecn) {
                    Ok(()) => Ok(data.len()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    Err(e) => Err(syscall("sendmsg", e)),
                };
            }
        };
        let mut sent = 0;
        while sent < data.len() {
            // Linux (udp(7), UDP_SEGMENT): a GSO send carries at most UDP_MAX_SEGMENTS
            // segments and one IP datagram's worth of payload.
            let per_batch = self.max_gso_segments().min((MAX_UDP_PAYLOAD / seg).max(1));
            let end = data.len().min(sent + per_batch * seg);
            let chunk = &data[sent..end];
            let result = if per_batch > 1 {
                match self.sendmsg(dest, chunk, Some(seg), ecn) {
                    // quinn-udp turns GSO off (max_gso_segments → 1) when the driver
                    // rejects it with EIO/EINVAL; resend this chunk segment by segment.
                    Err(e)
                        if e.kind() != io::ErrorKind::WouldBlock
                            && self.max_gso_segments() == 1 =>
                    {
                        continue;
                    }
                    r => r,
                }
            } else {
                self.sendmsg(dest, chunk, None, ecn)
            };
            match result {
                Ok(()) => sent = end,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
                Err(e) => return Err(syscall("sendmsg", e)),
            }
        }
        Ok(sent)
    }
}

/// One UDP socket of the event loop. See the [module documentation](self).
pub struct UdpIo {
    socket: mio::net::UdpSocket,
    state: UdpSocketState,
    registry: Registry,
    token: Token,
    local_addr: SocketAddr,
    is_ipv6: bool,
    recv_buffer_size: usize,
    send_buffer_size: usize,

    /// `RX_SLOTS` slots of `rx_slot` bytes each. Never resized after construction.
    rx: Box<[u8]>,
    rx_slot: usize,
    rx_meta: [RecvMeta; RX_SLOTS],
    rx_last_capacity: usize,
    rx_pending: bool,
    max_recv_batches: usize,

    queue: VecDeque<QueuedTransmit>,
    queued_bytes: usize,
    queue_limit: usize,
    writable_interest: bool,
    gso: bool,
    send_budget: Option<usize>,
    icmp_errors: bool,
    /// A receive call ended on an error the kernel reported for an ICMP message:
    /// the error queue has something to read.
    errors_pending: bool,
}

impl fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpIo")
            .field("local_addr", &self.local_addr)
            .field("token", &self.token)
            .field("rx_slot", &self.rx_slot)
            .field("queued_bytes", &self.queued_bytes)
            .finish_non_exhaustive()
    }
}

impl std::os::fd::AsRawFd for UdpIo {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl UdpIo {
    /// Opens a non-blocking UDP socket bound to `addr` and registers it with `registry`
    /// under `token` for `READABLE` events (`WRITABLE` is added only while datagrams are
    /// queued).
    ///
    /// An IPv6 socket bound to `[::]` is dual-stack: IPv4 peers appear as plain IPv4
    /// addresses in [`recv`](Self::recv) and may be passed as such to
    /// [`send`](Self::send).
    pub fn bind(
        addr: SocketAddr,
        config: &UdpConfig,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| syscall("socket", e))?;
        if let SocketAddr::V6(v6) = addr {
            // Dual-stack only for the wildcard; a specific v6 address is v6 only.
            socket
                .set_only_v6(!v6.ip().is_unspecified())
                .map_err(|e| syscall("setsockopt(IPV6_V6ONLY)", e))?;
        }
        if config.reuse_port {
            set_reuse_port(&socket)?;
        }
        // Ask for large buffers; the kernel silently caps them, so read back what it
        // granted instead of trusting the request.
        socket
            .set_recv_buffer_size(config.recv_buffer)
            .map_err(|e| syscall("setsockopt(SO_RCVBUF)", e))?;
        socket
            .set_send_buffer_size(config.send_buffer)
            .map_err(|e| syscall("setsockopt(SO_SNDBUF)", e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| syscall("fcntl(O_NONBLOCK)", e))?;
        socket.bind(&addr.into()).map_err(|e| syscall("bind", e))?;
        let recv_buffer_size = socket
            .recv_buffer_size()
            .map_err(|e| syscall("getsockopt(SO_RCVBUF)", e))?;
        let send_buffer_size = socket
            .send_buffer_size()
            .map_err(|e| syscall("getsockopt(SO_SNDBUF)", e))?;

        let std_socket: std::net::UdpSocket = socket.into();
        let mut socket = mio::net::UdpSocket::from_std(std_socket);
        let state = UdpSocketState::new(UdpSockRef::from(&socket))
            .map_err(|e| syscall("UdpSocketState::new (setsockopt)", e))?;
        keep_ecn_in_control_messages(&socket)?;
        if config.icmp_errors {
            state
                .enable_transport_errors(UdpSockRef::from(&socket))
                .map_err(|e| syscall("setsockopt(IP_RECVERR)", e))?;
        }
        let local_addr = socket.local_addr().map_err(|e| syscall("getsockname", e))?;
        let registry = registry
            .try_clone()
            .map_err(|e| syscall("dup(epoll fd)", e))?;
        registry
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|e| syscall("epoll_ctl(ADD)", e))?;

        let rx_slot = config.rx_slot_size.max(MAX_UDP_PAYLOAD);
        Ok(Self {
            socket,
            state,
            registry,
            token,
            local_addr,
            is_ipv6: addr.is_ipv6(),
            recv_buffer_size,
            send_buffer_size,
            rx: vec![0u8; rx_slot * RX_SLOTS].into_boxed_slice(),
            rx_slot,
            rx_meta: [RecvMeta::default(); RX_SLOTS],
            rx_last_capacity: rx_slot,
            rx_pending: false,
            max_recv_batches: config.max_recv_batches.max(1),
            queue: VecDeque::new(),
            queued_bytes: 0,
            queue_limit: config.send_queue_bytes,
            writable_interest: false,
            gso: config.gso,
            send_budget: None,
            icmp_errors: config.icmp_errors,
            errors_pending: false,
        })
    }

    /// Receives every datagram waiting on the socket (up to
    /// [`UdpConfig::max_recv_batches`] `recvmmsg` batches) and calls `f(from, datagram)`
    /// once per datagram, GRO super-buffers already split at their segment size.
    /// Returns the number of datagrams delivered.
    ///
    /// Every receive hands the kernel every slot at full capacity. If the call stopped
    /// at the batch cap rather than at `WouldBlock`, [`rx_pending`](Self::rx_pending)
    /// is true and the caller must call again on its next turn without waiting for a
    /// readiness event.
    pub fn recv(&mut self, mut f: impl FnMut(SocketAddr, &mut [u8])) -> io::Result<usize> {
        self.recv_ecn(|from, _, data| f(from, data))
    }

    /// [`UdpIo::recv`], also handing over each datagram's ECN codepoint (from the
    /// `IP_TOS` / `IPV6_TCLASS` control message quinn-udp asks the kernel for).
    pub fn recv_ecn(
        &mut self,
        mut f: impl FnMut(SocketAddr, Option<EcnCodepoint>, &mut [u8]),
    ) -> io::Result<usize> {
        let slot = self.rx_slot;
        let mut datagrams = 0;
        self.rx_pending = false;
        for _ in 0..self.max_recv_batches {
            let received = {
                // Re-arm: build every iovec afresh from the fixed storage, full size.
                let mut chunks = self.rx.chunks_exact_mut(slot);
                let mut iovs: [IoSliceMut<'_>; RX_SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
                self.rx_last_capacity = iovs.iter().map(|b| b.len()).min().unwrap_or(0);
                debug_assert_eq!(self.rx_last_capacity, slot);
                self.state
                    .recv(UdpSockRef::from(&self.socket), &mut iovs, &mut self.rx_meta)
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(datagrams),
                Err(e) if self.icmp_errors && is_icmp_errno(&e) => {
                    // The kernel handed back a pending ICMP error instead of data (it
                    // is also in the error queue); datagrams may still be waiting.
                    self.errors_pending = true;
                    continue;
                }
                Err(e) => return Err(syscall("recvmmsg", e)),
            };
            for (i, meta) in self.rx_meta.iter().take(n.min(RX_SLOTS)).enumerate() {
                let from = canonical_addr(meta.addr);
                let len = meta.len.min(slot);
                let buf = &mut self.rx[i * slot..i * slot + len];
                // An empty datagram yields no chunk and is skipped (it carries no packet).
                // GRO: datagrams sit back to back at `stride` intervals; the last may be
                // shorter. A zero stride cannot come from the kernel; treat it as one.
                let stride = if meta.stride == 0 {
                    len.max(1)
                } else {
                    meta.stride
                };
                let ecn = meta.ecn.map(|e| match e {
                    quinn_udp::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
                    quinn_udp::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
                    quinn_udp::EcnCodepoint::Ce => EcnCodepoint::Ce,
                });
                for datagram in buf.chunks_mut(stride) {
                    f(from, ecn, datagram);
                    datagrams += 1;
                }
            }
        }
        self.rx_pending = true;
        Ok(datagrams)
    }

    /// Reads the ICMP errors queued on the socket (at most 64 per call; call again on
    /// the next turn if [`errors_pending`](Self::errors_pending)) and calls
    /// `f(error)` for each unreachable report. Reports of other kinds (packet too big,
    /// local errors) are read and dropped. Does nothing unless
    /// [`UdpConfig::icmp_errors`] was set.
    pub(crate) fn recv_errors(&mut self, mut f: impl FnMut(IcmpError)) -> io::Result<()> {
        self.errors_pending = false;
        if !self.icmp_errors {
            return Ok(());
        }
        for _ in 0..64 {
            match recv_error_queue(&self.socket).map_err(|e| syscall("recvmsg(MSG_ERRQUEUE)", e))? {
                ErrQueue::Empty => return Ok(()),
                ErrQueue::Other => {}
                ErrQueue::Unreachable(e) => f(IcmpError {
                    destination: canonical_addr(e.destination),
                    reason: e.reason,
                }),
            }
        }
        self.errors_pending = true;
        Ok(())
    }

    /// True when a receive call met an ICMP error that [`recv_errors`](Self::recv_errors)
    /// has not read yet.
    pub(crate) fn errors_pending(&self) -> bool {
        self.errors_pending
    }

    /// True when the last [`recv`](Self::recv) stopped at its batch cap with data
    /// possibly still waiting: call `recv` again on the next turn.
    pub fn rx_pending(&self) -> bool {
        self.rx_pending
    }

    /// The smallest buffer capacity handed to the kernel by the last receive (equal to
    /// the configured slot size, always; exposed so tests can prove it).
    pub fn rx_capacity(&self) -> usize {
        self.rx_last_capacity
    }

    /// Sends `data` to `dest`. With `segment_size = Some(s)`, `data` is a batch of
    /// datagrams of `s` bytes each (the last may be shorter), sent with GSO where the
    /// kernel has it and as individual datagrams where it does not.
    ///
    /// `WouldBlock` is back-pressure: whatever the kernel did not take is queued and
    /// [`SendOutcome::Queued`] returned; datagrams submitted while the queue is not
    /// empty are queued behind it (order is kept). When the queue holds
    /// [`UdpConfig::send_queue_bytes`] or more, [`SendOutcome::Full`] is returned and
    /// nothing is taken. Other errors name the failing call; the datagram is then lost,
    /// as any UDP datagram may be.
    pub fn send(
        &mut self,
        dest: SocketAddr,
        data: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<SendOutcome> {
        self.send_ecn(dest, data, segment_size, None)
    }

    /// [`UdpIo::send`] with the ECN codepoint `ecn` in the IP header of every
    /// datagram (`None`: Not-ECT).
    pub fn send_ecn(
        &mut self,
        dest: SocketAddr,
        data: &[u8],
        segment_size: Option<usize>,
        ecn: Option<EcnCodepoint>,
    ) -> io::Result<SendOutcome> {
        if segment_size == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "GSO segment size must be positive",
            ));
        }
        let dest = self.wire_addr(dest);
        if !self.queue.is_empty() {
            if self.queued_bytes.saturating_add(data.len()) > self.queue_limit {
                return Ok(SendOutcome::Full);
            }
            self.enqueue(dest, data.to_vec(), 0, segment_size, ecn);
            return Ok(SendOutcome::Queued);
        }
        let sent = self.sender().transmit(dest, data, segment_size, ecn)?;
        if sent == data.len() {
            return Ok(SendOutcome::Sent);
        }
        // An empty queue always takes the rest of one send, so the queue holds at most
        // `send_queue_bytes` plus one GSO batch.
        self.enqueue(dest, data[sent..].to_vec(), 0, segment_size, ecn);
        self.set_writable_interest(true)?;
        Ok(SendOutcome::Queued)
    }

    /// Sends queued datagrams, in order, until the queue is empty (`Ok(true)`, and
    /// `WRITABLE` interest is dropped) or the kernel pushes back again (`Ok(false)`).
    /// Call it when the socket is reported writable.
    ///
    /// A queued datagram that fails with a hard error (not `WouldBlock`) is removed and
    /// the error returned, so that one unroutable destination cannot wedge the queue.
    pub fn flush_queued(&mut self) -> io::Result<bool> {
        while let Some(mut front) = self.queue.pop_front() {
            let remaining = front.data.len() - front.sent;
            let result = self.sender().transmit(
                front.dest,
                &front.data[front.sent..],
                front.segment_size,
                front.ecn,
            );
            match result {
                Ok(n) if n == remaining => self.queued_bytes -= remaining,
                Ok(n) => {
                    front.sent += n;
                    self.queued_bytes -= n;
                    self.queue.push_front(front);
                    self.set_writable_interest(true)?;
                    return Ok(false);
                }
                Err(e) => {
                    self.queued_bytes -= remaining;
                    if self.queue.is_empty() {
                        self.set_writable_interest(false)?;
                    }
                    return Err(e);
                }
            }
        }
        self.set_writable_interest(false)?;
        Ok(true)
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Back-pressure simulation for tests and impairment tools. With `Some(n)`, after
    /// `n` more `sendmsg` calls reach the kernel, sends behave exactly as if the kernel
    /// had returned `WouldBlock`, until the budget is raised or removed with `None` (the
    /// default). Needed because loopback never pushes back: Linux releases a UDP
    /// sender's buffer memory as soon as loopback delivers (or drops) the datagram, so
    /// `WouldBlock` cannot be provoked there even with a tiny `SO_SNDBUF`.
    ///
    /// When lifting the budget with datagrams queued, call
    /// [`flush_queued`](Self::flush_queued): the socket never stopped being writable,
    /// so no new edge-triggered event will come.
    pub fn throttle_sends(&mut self, budget: Option<usize>) {
        self.send_budget = budget;
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The mio token the socket is registered under.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Most datagrams one GSO send carries (1 without GSO, or with
    /// [`UdpConfig::gso`] off).
    pub fn max_gso_segments(&self) -> usize {
        if self.gso {
            self.state.max_gso_segments().max(1)
        } else {
            1
        }
    }

    /// Most datagrams the kernel coalesces into one GRO receive (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// `SO_RCVBUF` as granted by the kernel (Linux reports twice the usable size).
    pub fn recv_buffer_size(&self) -> usize {
        self.recv_buffer_size
    }

    /// `SO_SNDBUF` as granted by the kernel (Linux reports twice the usable size).
    pub fn send_buffer_size(&self) -> usize {
        self.send_buffer_size
    }

    fn sender(&mut self) -> Sender<'_> {
        Sender {
            socket: &self.socket,
            state: &self.state,
            gso: self.gso,
            budget: &mut self.send_budget,
        }
    }

    fn enqueue(
        &mut self,
        dest: SocketAddr,
        data: Vec<u8>,
        sent: usize,
        seg: Option<usize>,
        ecn: Option<EcnCodepoint>,
    ) {
        self.queued_bytes += data.len() - sent;
        self.queue.push_back(QueuedTransmit {
            dest,
            data,
            sent,
            segment_size: seg,
            ecn,
        });
    }

    fn set_writable_interest(&mut self, on: bool) -> io::Result<()> {
        if self.writable_interest == on {
            return Ok(());
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.registry
            .reregister(&mut self.socket, self.token, interest)
            .map_err(|e| syscall("epoll_ctl(MOD)", e))?;
        self.writable_interest = on;
        Ok(())
    }

    /// On a dual-stack IPv6 socket an IPv4 peer is addressed as `::ffff:a.b.c.d`.
    fn wire_addr(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(v4) if self.is_ipv6 => {
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into()
            }
            other => other,
        }
    }
}

impl Drop for UdpIo {
    fn drop(&mut self) {
        // Closing the fd removes it from epoll anyway; deregistering keeps mio's view
        // consistent. Nothing useful can be done with an error here.
        let _ = self.registry.deregister(&mut self.socket);
    }
}

/// Whether a receive error is a pending ICMP error the kernel reports in place of data.
fn is_icmp_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EACCES
                | libc::EPERM
                | libc::EMSGSIZE
                | libc::EPROTO
                | libc::ENOPROTOOPT
        )
    )
}

/// One entry of the socket's error queue.
enum ErrQueue {
    Empty,
    /// Not an unreachable report (packet too big, a local error, ...).
    Other,
    Unreachable(IcmpError),
}

/// Turns `SO_TIMESTAMPNS` off again after [`UdpSocketState::new`] turned it on.
///
/// quinn-udp 0.6 asks for receive timestamps on Linux but gives `recvmmsg` an 88-byte
/// control buffer: a GRO batch brings a timestamp (32 bytes), `UDP_GRO` (24),
/// `IP_PKTINFO` (32) and `IP_TOS` (24), the kernel truncates (`MSG_CTRUNC`) and the
/// TOS byte, with the ECN codepoint, is lost (seen with strace on the interop relay:
/// every GSO batch quill sent arrived Not-ECT). Nothing here reads the timestamps.
/// Call it on every socket that has a `UdpSocketState` and wants ECN on receive.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn keep_ecn_in_control_messages(socket: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0)
        .map_err(|e| syscall("setsockopt(SO_TIMESTAMPNS)", e))
}

/// `setsockopt(level, name)` with an `int` value.
pub fn set_int_option(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid descriptor, and `value` outlives the call with its size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere quinn-udp asks for no timestamps: nothing to undo.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn keep_ecn_in_control_messages(_socket: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    Ok(())
}

/// Reads one entry of the error queue (`recvmsg(MSG_ERRQUEUE)`): the address the
/// offending datagram was sent to comes in `msg_name` and the report in an
/// `IP_RECVERR` / `IPV6_RECVERR` control message (ip(7), ipv6(7)).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_error_queue(socket: &mio::net::UdpSocket) -> io::Result<ErrQueue> {
    use std::mem::{size_of, size_of_val, zeroed};
    use std::os::fd::AsRawFd;

    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 64];
    // The quoted payload of the offending datagram is not needed; Linux wants one iovec.
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: as above.
    let mut hdr: libc::msghdr = unsafe { zeroed() };
    hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = size_of_val(&control) as _;
    loop {
        // SAFETY: every pointer in `hdr` points into live locals of the right sizes.
        let n = unsafe {
            libc::recvmsg(
                socket.as_raw_fd(),
                &mut hdr,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(ErrQueue::Empty),
            _ => return Err(e),
        }
    }
    let Some(destination) = decode_sockaddr(&name, hdr.msg_namelen as usize) else {
        return Ok(ErrQueue::Other);
    };
    // SAFETY: `hdr` describes the control buffer the kernel filled in; the CMSG_*
    // macros stay within `msg_controllen`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: non-null and inside the control buffer (CMSG_FIRSTHDR/NXTHDR).
        let c = unsafe { &*cmsg };
        let is_err = (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR)
            || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
        // SAFETY: CMSG_LEN is arithmetic.
        let needed = unsafe { libc::CMSG_LEN(size_of::<libc::sock_extended_err>() as u32) };
        if is_err && c.cmsg_len as usize >= needed as usize {
            // SAFETY: the control message holds a sock_extended_err (length checked).
            let ee: libc::sock_extended_err =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            let from_icmp =
                ee.ee_origin == libc::SO_EE_ORIGIN_ICMP || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
            let errno = ee.ee_errno as i32;
            if !from_icmp || errno == libc::EMSGSIZE {
                return Ok(ErrQueue::Other);
            }
            let reason = match errno {
                libc::ECONNREFUSED => Unreachable::Refused,
                libc::EHOSTUNREACH | libc::EHOSTDOWN => Unreachable::Host,
                libc::ENETUNREACH | libc::ENETDOWN => Unreachable::Network,
                other => Unreachable::Other(other),
            };
            return Ok(ErrQueue::Unreachable(IcmpError {
                destination,
                reason,
            }));
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    Ok(ErrQueue::Other)
}

/// The IPv4 or IPv6 address the kernel wrote into `storage` (`len` bytes of it).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn decode_sockaddr(storage: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    use std::mem::size_of;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn recv_error_queue(_socket: &mio::net::UdpSocket) -> io::Result<ErrQueue> {
    Ok(ErrQueue::Empty)
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) become plain IPv4, so one peer
/// has one address whichever socket family received it.
fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// SO_REUSEPORT, where socket2 offers it (the targets listed are those it leaves out).
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    #[cfg(all(
        unix,
        not(any(
            target_os = "solaris",
            target_os = "illumos",
            target_os = "cygwin",
            target_os = "nuttx",
            target_os = "wasi"
        ))
    ))]
    return socket
        .set_reuse_port(true)
        .map_err(|e| syscall("setsockopt(SO_REUSEPORT)", e));
    #[allow(unreachable_code)]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not available on this platform",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::{Duration, Instant};

    fn bind(poll: &Poll, local: SocketAddr, config: &UdpConfig, token: usize) -> UdpIo {
        UdpIo::bind(local, config, poll.registry(), Token(token)).unwrap()
    }

    /// Receives exactly `n` datagrams (fails the test if more or fewer arrive).
    fn recv_n(poll: &mut Poll, io: &mut UdpIo, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        recv_n_ecn(poll, io, n)
            .into_iter()
            .map(|(from, _, d)| (from, d))
            .collect()
    }

    /// [`recv_n`] with each datagram's ECN codepoint.
    fn recv_n_ecn(
        poll: &mut Poll,
        io: &mut UdpIo,
        n: usize,
    ) -> Vec<(SocketAddr, Option<EcnCodepoint>, Vec<u8>)> {
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "datagrams never arrived");
            io.recv_ecn(|from, ecn, d| got.push((from, ecn, d.to_vec())))
                .unwrap();
            if got.len() < n {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
            }
        }
        assert_eq!(got.len(), n);
        got
    }

    fn recv_one(poll: &mut Poll, io: &mut UdpIo) -> (SocketAddr, Vec<u8>) {
        recv_n(poll, io, 1).remove(0)
    }

    #[test]
    fn canonical_addr_unmaps_ipv4_mapped() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4433".parse().unwrap();
        assert_eq!(canonical_addr(mapped), "127.0.0.1:4433".parse().unwrap());
        let v6: SocketAddr = "[::1]:4433".parse().unwrap();
        assert_eq!(canonical_addr(v6), v6);
        let v4: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert_eq!(canonical_addr(v4), v4);
    }

    #[test]
    fn syscall_error_names_the_call_and_keeps_the_kind() {
        let e = syscall(
            "recvmmsg",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().starts_with("recvmmsg failed"), "{e}");
        let inner = e.get_ref().unwrap().downcast_ref::<SyscallError>().unwrap();
        assert_eq!(inner.call, "recvmmsg");
    }

    #[test]
    fn one_recv_call_stops_after_max_recv_batches() {
        // The application reads between calls: a call that drained a full socket
        // (64 batches used to) lets a whole stream window pile up unread.
        let mut poll = Poll::new().unwrap();
        let config = UdpConfig::default();
        let mut io = bind(&poll, (Ipv4Addr::LOCALHOST, 0).into(), &config, 0);
        let sender = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        // Alternating sizes: GRO can put at most two of them in one slot.
        let sent = 400;
        for i in 0..sent {
            let len = if i % 2 == 0 { 200 } else { 100 };
            sender
                .send_to(&[i as u8; 200][..len], io.local_addr())
                .unwrap();
        }
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        let most = config.max_recv_batches * RX_SLOTS * 2;
        assert!(
            most < sent,
            "the test needs more datagrams than one call takes"
        );
        let first = io.recv(|_, _| {}).unwrap();
        assert!(
            first <= most,
            "one call took {first} datagrams (at most {most})"
        );
        assert!(io.rx_pending(), "a call cut short must say more is pending");
        assert_eq!(first + recv_n(&mut poll, &mut io, sent - first).len(), sent);
    }

    #[test]
    fn slot_size_is_clamped_to_a_full_datagram() {
        let poll = Poll::new().unwrap();
        let config = UdpConfig {
            rx_slot_size: 1500,
            ..UdpConfig::default()
        };
        let io = bind(&poll, (Ipv4Addr::LOCALHOST, 0).into(), &config, 0);
        assert_eq!(io.rx_capacity(), MAX_UDP_PAYLOAD);
        assert!(io.recv_buffer_size() > 0 && io.send_buffer_size() > 0);
        assert!(io.max_gso_segments() >= 1 && io.gro_segments() >= 1);
    }

    #[test]
    fn dual_stack_socket_speaks_plain_ipv4() {
        let mut poll = Poll::new().unwrap();
        let config = UdpConfig::default();
        let mut v6 = bind(&poll, (Ipv6Addr::UNSPECIFIED, 0).into(), &config, 0);
        let mut v4 = bind(&poll, (Ipv4Addr::LOCALHOST, 0).into(), &config, 1);
        let v6_port = v6.local_addr().port();
        let to_v6: SocketAddr = (Ipv4Addr::LOCALHOST, v6_port).into();
        assert_eq!(v4.send(to_v6, b"ping", None).unwrap(), SendOutcome::Sent);
        let (from, data) = recv_one(&mut poll, &mut v6);
        assert_eq!(data, b"ping");
        // The peer shows up as IPv4, not as ::ffff:127.0.0.1 ...
        assert_eq!(from, v4.local_addr());
        // ... and can be answered as IPv4.
        assert_eq!(v6.send(from, b"pong", None).unwrap(), SendOutcome::Sent);
        let (from, data) = recv_one(&mut poll, &mut v4);
        assert_eq!(data, b"pong");
        assert_eq!(from, to_v6);
    }

    #[test]
    fn reuse_port_lets_two_sockets_share_a_port() {
        let poll = Poll::new().unwrap();
        let config = UdpConfig {
            reuse_port: true,
            ..UdpConfig::default()
        };
        let a = bind(&poll, (Ipv4Addr::LOCALHOST, 0).into(), &config, 0);
        let b = bind(&poll, a.local_addr(), &config, 1);
        assert_eq!(a.local_addr(), b.local_addr());
        // Without the option the same bind is refused.
        let err = UdpIo::bind(
            a.local_addr(),
            &UdpConfig::default(),
            poll.registry(),
            Token(2),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// A datagram to a closed port comes back as ICMP port unreachable: the error
    /// queue names the port it was sent to, a pending error does not fail `recv`,
    /// and a datagram that arrived as well is still delivered.
    #[cfg(target_os = "linux")]
    #[test]
    fn icmp_port_unreachable_is_read_from_the_error_queue() {
        for local in [
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        ] {
            let closed = {
                let s = std::net::UdpSocket::bind(local).unwrap();
                s.local_addr().unwrap()
            };
            let mut poll = Poll::new().unwrap();
            let config = UdpConfig {
                icmp_errors: true,
                ..UdpConfig::default()
            };
            let mut io = bind(&poll, local, &config, 0);
            let peer = std::net::UdpSocket::bind(local).unwrap();
            io.send(closed, b"anyone there?", None).unwrap();
            let mut events = Events::with_capacity(8);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut errors = Vec::new();
            while errors.is_empty() {
                assert!(Instant::now() < deadline, "no ICMP error for {closed}");
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                io.recv(|_, _| panic!("nothing to receive")).unwrap();
                io.recv_errors(|e| errors.push(e)).unwrap();
            }
            assert_eq!(
                errors,
                vec![IcmpError {
                    destination: closed,
                    reason: Unreachable::Refused
                }]
            );
            // Another ICMP error is left pending in the socket, then a datagram
            // arrives: `recv` skips the pending error and delivers it.
            io.send(closed, b"again", None).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            peer.send_to(b"hello", io.local_addr()).unwrap();
            let (from, data) = recv_one(&mut poll, &mut io);
            assert_eq!(
                (from, data.as_slice()),
                (peer.local_addr().unwrap(), &b"hello"[..])
            );
            let mut more = Vec::new();
            io.recv_errors(|e| more.push(e)).unwrap();
            assert_eq!(more.len(), 1, "{more:?}");
            assert!(!io.errors_pending());
        }
    }

    #[test]
    fn zero_segment_size_is_rejected() {
        let poll = Poll::new().unwrap();
        let mut io = bind(
            &poll,
            (Ipv4Addr::LOCALHOST, 0).into(),
            &UdpConfig::default(),
            0,
        );
        let dest = io.local_addr();
        let err = io.send(dest, &[0; 10], Some(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn gso_batch_split_without_gso_keeps_boundaries() {
        let mut poll = Poll::new().unwrap();
        let config = UdpConfig {
            gso: false,
            ..UdpConfig::default()
        };
        let mut a = bind(&poll, (Ipv4Addr::LOCALHOST, 0).into(), &config, 0);
        let mut b = bind(&poll, (Ipv4Addr::LOCALHOST, 0).into(), &config, 1);
        assert_eq!(a.max_gso_segments(), 1);
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        assert_eq!(
            a.send(b.local_addr(), &data, Some(1000)).unwrap(),
            SendOutcome::Sent
        );
        let got: Vec<Vec<u8>> = recv_n(&mut poll, &mut b, 3)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert_eq!(got.concat(), data);
    }

    /// The ECN codepoint survives a GSO batch received as one GRO buffer: quinn-udp's
    /// receive timestamps no longer crowd the TOS byte out of the control buffer.
    #[test]
    fn ecn_codepoint_of_a_gso_batch_is_received() {
        let mut poll = Poll::new().unwrap();
        let local: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let [mut a, mut b] = [0, 1].map(|t| bind(&poll, local, &UdpConfig::default(), t));
        let data = vec![7u8; 3600];
        let sent = a.send_ecn(b.local_addr(), &data, Some(1200), Some(EcnCodepoint::Ect0));
        assert_eq!(sent.unwrap(), SendOutcome::Sent);
        let sent = a.send_ecn(b.local_addr(), &data[..1000], None, Some(EcnCodepoint::Ce));
        assert_eq!(sent.unwrap(), SendOutcome::Sent);
        let got: Vec<(usize, Option<EcnCodepoint>)> = recv_n_ecn(&mut poll, &mut b, 4)
            .into_iter()
            .map(|(_, ecn, d)| (d.len(), ecn))
            .collect();
        let e = Some(EcnCodepoint::Ect0);
        assert_eq!(
            got,
            vec![
                (1200, e),
                (1200, e),
                (1200, e),
                (1000, Some(EcnCodepoint::Ce))
            ]
        );
    }
}
