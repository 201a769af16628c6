//! Streams, flow control and reassembly: the per-connection stream table.
//!
//! [`Streams`] is sans-IO and knows nothing of packets. The connection feeds it
//! what arrived (`on_*`), asks it what to send (`poll_control`, `poll_chunk`,
//! `chunk_data`), tells it what was acknowledged or lost (`on_chunk_*`,
//! `on_control_lost`), and forwards application calls (`open`, `write`, `read`,
//! ...). Application-visible changes come out of `poll_event`.
//!
//! Calling order per packet the connection builds: `poll_control` until `None`
//! (or the packet is full), then `poll_chunk` with the room left, then
//! `chunk_data` for each chunk to copy its bytes. Time only comes in as `now`
//! arguments (`on_stream_frame`, `set_rtt`); the latest one is used to auto-tune
//! flow-control windows when the application reads.
//!
//! Memory bounds (a peer cannot make us hold more): out-of-order data per stream is
//! bounded by the stream window (flow control refuses more, the assembler has the
//! largest window as a hard cap); the number of peer streams by our MAX_STREAMS;
//! unacknowledged send data per stream by `send_buffer`, and on all streams together
//! by `max_connection_send_buffer` (so a peer that grants huge windows and never
//! acknowledges cannot make us hold streams × `send_buffer`). Streams whose two
//! halves are done are removed from the table at once.

mod assembler;
mod flow;
mod id;
mod recv;
mod send;

pub use assembler::Assembler;
pub use flow::{RecvWindow, MAX_LIMIT};
pub use id::{Dir, Side, StreamId, MAX_STREAM_ID};
pub use send::SendBuffer;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::{TransportErrorCode, TransportParameters};

use recv::{RecvOutcome, RecvState, RecvStream};
use send::SendStream;

/// The largest stream count a MAX_STREAMS frame or transport parameter may carry
/// (RFC 9000 §4.6, §19.11), defined once in the wire layer.
pub use crate::wire::frame::MAX_STREAMS_LIMIT;

/// Local stream and flow-control settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Bidirectional streams the peer may have open at once.
    pub max_concurrent_bidi: u64,
    /// Unidirectional streams the peer may have open at once.
    pub max_concurrent_uni: u64,
    /// Initial per-stream receive window.
    pub stream_receive_window: u64,
    /// Auto-tuning cap of the per-stream receive window.
    pub max_stream_receive_window: u64,
    /// Initial connection-level receive window.
    pub receive_window: u64,
    /// Auto-tuning cap of the connection-level receive window.
    pub max_receive_window: u64,
    /// Per-stream cap on written but unacknowledged data.
    pub send_buffer: u64,
    /// Connection-wide cap on written but unacknowledged data (unsent and in
    /// flight, all streams together).
    pub max_connection_send_buffer: u64,
}

impl Default for StreamsConfig {
    /// Stream window 1 MiB growing to 16 MiB, connection window 1.5 MiB growing to
    /// 24 MiB, 100 concurrent streams each way, 16 MiB send buffer per stream.
    ///
    /// 1 MiB from the first round trip covers 80 Mbit/s at 100 ms RTT and several
    /// GB/s on a LAN; auto-tuning takes a stream that needs it to 16 MiB, enough
    /// for ~1.3 Gbit/s at 100 ms or 4 GB/s at 4 ms, while bounding what one stream
    /// can make us buffer. The connection window is 1.5x the stream window (the
    /// ratio quic-go and Chromium use) so that one saturated stream leaves room for
    /// others. The send buffer matches the largest window the peer can grant us
    /// with the same settings; more could never be in flight.
    ///
    /// The connection-wide send cap is 32 MiB: twice the per-stream buffer, so one
    /// bulk stream is never limited by it (its throughput is unchanged), and above
    /// the largest connection window a peer with these settings grants (24 MiB), so
    /// against such a peer it binds only if acknowledgements lag far behind its
    /// MAX_DATA updates. It stops a peer that grants huge windows and never
    /// acknowledges from making us hold 100 streams × 16 MiB.
    fn default() -> Self {
        const MIB: u64 = 1 << 20;
        Self {
            max_concurrent_bidi: 100,
            max_concurrent_uni: 100,
            stream_receive_window: MIB,
            max_stream_receive_window: 16 * MIB,
            receive_window: 3 * MIB / 2,
            max_receive_window: 24 * MIB,
            send_buffer: 16 * MIB,
            max_connection_send_buffer: 32 * MIB,
        }
    }
}

/// A peer violated a stream or flow-control rule: close the connection with this
/// transport error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsError {
    /// RFC 9000 transport error code (FLOW_CONTROL_ERROR, STREAM_LIMIT_ERROR, ...).
    pub code: TransportErrorCode,
    /// Human-readable reason for CONNECTION_CLOSE.
    pub reason: &'static str,
}

impl StreamsError {
    fn new(code: TransportErrorCode, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

impl fmt::Display for StreamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transport error {:#x}: {}", self.code.0, self.reason)
    }
}

impl std::error::Error for StreamsError {}

/// A control frame to send, described; the connection encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFrame {
    /// MAX_DATA.
    MaxData(u64),
    /// MAX_STREAM_DATA.
    MaxStreamData {
        /// Stream.
        id: StreamId,
        /// New limit.
        max: u64,
    },
    /// MAX_STREAMS (bidi or uni).
    MaxStreams {
        /// Which kind of stream.
        dir: Dir,
        /// New cumulative stream count.
        max: u64,
    },
    /// RESET_STREAM.
    ResetStream {
        /// Stream.
        id: StreamId,
        /// Application error code.
        code: u64,
        /// Final size.
        final_size: u64,
    },
    /// STOP_SENDING.
    StopSending {
        /// Stream.
        id: StreamId,
        /// Application error code.
        code: u64,
    },
    /// DATA_BLOCKED.
    DataBlocked(u64),
    /// STREAM_DATA_BLOCKED.
    StreamDataBlocked {
        /// Stream.
        id: StreamId,
        /// The limit we are blocked at.
        limit: u64,
    },
    /// STREAMS_BLOCKED.
    StreamsBlocked {
        /// Which kind of stream.
        dir: Dir,
        /// The stream count limit we are blocked at.
        limit: u64,
    },
}

/// A piece of stream data to put in a STREAM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamChunk {
    /// Stream.
    pub id: StreamId,
    /// Offset of the first byte.
    pub offset: u64,
    /// Number of data bytes (may be 0 for a bare FIN).
    pub len: usize,
    /// Whether the frame carries the FIN bit.
    pub fin: bool,
}

/// Something the application should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened one or more streams; see `accept`.
    Opened {
        /// Which kind.
        dir: Dir,
    },
    /// Data, the end, or a reset can be read.
    Readable(StreamId),
    /// A stream whose write came up short can take more data.
    Writable(StreamId),
    /// All our data on the stream, and the FIN, were acknowledged.
    Finished(StreamId),
    /// The peer sent STOP_SENDING; the stream was reset with the same code.
    Stopped {
        /// Stream.
        id: StreamId,
        /// Application error code.
        code: u64,
    },
    /// The peer raised our stream limit: `open` may succeed again.
    Available {
        /// Which kind.
        dir: Dir,
    },
}

/// Result of a successful `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied.
    Data(usize),
    /// The stream ended (all data read); it will not produce more.
    Finished,
    /// Nothing to read right now.
    Blocked,
}

/// Why `read` or `stop_sending` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer reset the stream with this code (reported once).
    Reset(u64),
    /// No such receiving stream (never opened, or send-only).
    UnknownStream,
    /// The stream's receiving half is already over.
    ClosedStream,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Reset(c) => write!(f, "stream reset by peer with code {c}"),
            ReadError::UnknownStream => f.write_str("unknown stream"),
            ReadError::ClosedStream => f.write_str("stream closed"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why `write`, `finish` or `reset` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// No flow-control credit or send-buffer room; wait for `Writable`.
    Blocked,
    /// The peer sent STOP_SENDING with this code.
    Stopped(u64),
    /// No such sending stream (never opened, or receive-only).
    UnknownStream,
    /// The stream was finished or reset.
    ClosedStream,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Blocked => f.write_str("stream blocked by flow control"),
            WriteError::Stopped(c) => write!(f, "peer stopped the stream with code {c}"),
            WriteError::UnknownStream => f.write_str("unknown stream"),
            WriteError::ClosedStream => f.write_str("stream closed"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Hasher for stream IDs: a multiplicative mix (IDs are bounded by our limits, so
/// there is no flooding concern, and SipHash would cost more than the lookup).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// One stream: a sending half, a receiving half, or both.
#[derive(Debug)]
struct Stream {
    send: Option<SendStream>,
    recv: Option<RecvStream>,
}

/// The sending half of stream `id`, if the stream is open and has one.
fn send_half(streams: &mut IdMap<Stream>, id: StreamId) -> Option<&mut SendStream> {
    streams.get_mut(&id.0).and_then(|s| s.send.as_mut())
}

/// The receiving half of stream `id`, if the stream is open and has one.
fn recv_half(streams: &mut IdMap<Stream>, id: StreamId) -> Option<&mut RecvStream> {
    streams.get_mut(&id.0).and_then(|s| s.recv.as_mut())
}

/// [`send_half`] for the application's calls, which tell a stream that is over from
/// one that has no sending half.
fn send_half_or(streams: &mut IdMap<Stream>, id: StreamId) -> Result<&mut SendStream, WriteError> {
    let stream = streams.get_mut(&id.0).ok_or(WriteError::ClosedStream)?;
    stream.send.as_mut().ok_or(WriteError::UnknownStream)
}

/// [`recv_half`] for the application's calls, which tell a stream that is over from
/// one that has no receiving half.
fn recv_half_or(streams: &mut IdMap<Stream>, id: StreamId) -> Result<&mut RecvStream, ReadError> {
    let stream = streams.get_mut(&id.0).ok_or(ReadError::ClosedStream)?;
    stream.recv.as_mut().ok_or(ReadError::UnknownStream)
}

/// The per-connection stream table, with stream limits and flow control.
#[derive(Debug)]
pub struct Streams {
    side: Side,
    config: StreamsConfig,
    streams: IdMap<Stream>,
    /// The peer's transport parameters, of which the stream and flow-control limits
    /// (RFC 9000 §18.2 `initial_max_*`) are used.
    peer: TransportParameters,

    // Streams we open, per direction (index 0 bidi, 1 uni).
    /// Index of the next stream we open.
    next_local: [u64; 2],
    /// The peer's MAX_STREAMS for our streams.
    peer_max_streams: [u64; 2],
    /// The limit at which we last queued STREAMS_BLOCKED.
    streams_blocked_at: [Option<u64>; 2],
    streams_blocked_pending: [bool; 2],
    /// An `open` failed since the limit last grew: report `Available`.
    open_failed: [bool; 2],

    // Streams the peer opens.
    /// Number of peer streams opened (implicitly or not).
    next_remote: [u64; 2],
    /// Index of the next peer stream `accept` returns.
    next_accept: [u64; 2],
    /// Our advertised MAX_STREAMS.
    max_remote: [u64; 2],
    /// Peer streams freed so far.
    closed_remote: [u64; 2],
    max_streams_pending: [bool; 2],

    // Connection-level flow control, sending.
    peer_max_data: u64,
    /// Bytes written by the application on all streams (credit consumed).
    conn_written: u64,
    data_blocked_at: Option<u64>,
    data_blocked_pending: bool,
    /// Bytes written and not yet acknowledged on all streams (the sum of their
    /// `SendBuffer::buffered`), bounded by `config.max_connection_send_buffer`.
    conn_buffered: u64,
    /// Streams whose writes hit the connection limit or the connection-wide send
    /// cap; woken when MAX_DATA arrives or acks / resets free room in the cap.
    conn_blocked: Vec<StreamId>,

    // Connection-level flow control, receiving.
    conn_window: RecvWindow,
    /// Sum over streams of the highest offset received.
    conn_received: u64,
    /// Credit released: bytes read, or discarded on reset / stop.
    conn_consumed: u64,
    max_data_pending: bool,

    // Output.
    /// RESET_STREAM, STOP_SENDING and STREAM_DATA_BLOCKED frames to send.
    control: VecDeque<ControlFrame>,
    /// Streams with a MAX_STREAM_DATA to send (value taken when polled).
    max_stream_data_queue: VecDeque<StreamId>,
    /// Streams with data to send, in round-robin order.
    send_queue: VecDeque<StreamId>,
    events: VecDeque<StreamEvent>,

    now: Option<Instant>,
    rtt: Option<Duration>,
}

impl Streams {
    /// An empty table for the given side. Nothing can be opened until
    /// `apply_peer_limits` has run.
    pub fn new(side: Side, config: &StreamsConfig) -> Self {
        let max_remote = [
            config.max_concurrent_bidi.min(MAX_STREAMS_LIMIT),
            config.max_concurrent_uni.min(MAX_STREAMS_LIMIT),
        ];
        Self {
            side,
            config: config.clone(),
            streams: IdMap::default(),
            peer: TransportParameters::default(),
            next_local: [0; 2],
            peer_max_streams: [0; 2],
            streams_blocked_at: [None; 2],
            streams_blocked_pending: [false; 2],
            open_failed: [false; 2],
            next_remote: [0; 2],
            next_accept: [0; 2],
            max_remote,
            closed_remote: [0; 2],
            max_streams_pending: [false; 2],
            peer_max_data: 0,
            conn_written: 0,
            conn_buffered: 0,
            data_blocked_at: None,
            data_blocked_pending: false,
            conn_blocked: Vec::new(),
            conn_window: RecvWindow::new(config.receive_window, config.max_receive_window),
            conn_received: 0,
            conn_consumed: 0,
            max_data_pending: false,
            control: VecDeque::new(),
            max_stream_data_queue: VecDeque::new(),
            send_queue: VecDeque::new(),
            events: VecDeque::new(),
            now: None,
            rtt: None,
        }
    }

    /// What to advertise in our transport parameters: the stream and flow-control
    /// limits (RFC 9000 §18.2 `initial_max_*`), every other parameter at its default.
    pub fn local_limits(&self) -> TransportParameters {
        let w = self.config.stream_receive_window.min(MAX_LIMIT);
        TransportParameters {
            initial_max_data: self.conn_window.limit(),
            initial_max_stream_data_bidi_local: w,
            initial_max_stream_data_bidi_remote: w,
            initial_max_stream_data_uni: w,
            initial_max_streams_bidi: self.max_remote[0],
            initial_max_streams_uni: self.max_remote[1],
            ..TransportParameters::default()
        }
    }

    /// Takes the peer's transport parameters into account. Limits only grow;
    /// stream counts above 2^60 are clamped (the transport-parameter decoder is
    /// where such a value is refused with TRANSPORT_PARAMETER_ERROR).
    pub fn apply_peer_limits(&mut self, limits: &TransportParameters) {
        self.peer = *limits;
        self.on_max_data(limits.initial_max_data);
        for (dir, max) in [
            (Dir::Bi, limits.initial_max_streams_bidi),
            (Dir::Uni, limits.initial_max_streams_uni),
        ] {
            self.on_max_streams(dir, max.min(MAX_STREAMS_LIMIT));
        }
        let (side, peer) = (self.side, self.peer);
        for (&raw, stream) in self.streams.iter_mut() {
            let id = StreamId(raw);
            if let Some(ss) = stream.send.as_mut() {
                let initial = Self::peer_initial_send_limit_for(&peer, id, side);
                if initial > ss.max_data {
                    ss.max_data = initial;
                }
            }
        }
    }

    /// What early use (0-RTT, under remembered limits) went beyond the limits of
    /// the peer's current transport parameters, if anything: after a refused 0-RTT
    /// the server may lower them (RFC 9000 §7.4.1), and data already written under
    /// the old ones cannot be taken back.
    pub fn early_use_beyond_peer_limits(&self) -> Option<String> {
        let peer = &self.peer;
        for (dir, max) in [
            (Dir::Bi, peer.initial_max_streams_bidi),
            (Dir::Uni, peer.initial_max_streams_uni),
        ] {
            let opened = self.next_local[dir.index()];
            if opened > max {
                return Some(format!(
                    "{opened} {dir:?} streams were opened, the server now allows {max}"
                ));
            }
        }
        if self.conn_written > peer.initial_max_data {
            return Some(format!(
                "{} bytes were written, the server now allows {}",
                self.conn_written, peer.initial_max_data
            ));
        }
        for (&raw, stream) in self.streams.iter() {
            let id = StreamId(raw);
            let Some(ss) = stream.send.as_ref() else {
                continue;
            };
            if id.initiator() != self.side {
                continue;
            }
            let limit = self.peer_initial_send_limit(id, self.side);
            if ss.buf.offset() > limit {
                return Some(format!(
                    "{} bytes were written on stream {raw}, the server now allows {limit}",
                    ss.buf.offset()
                ));
            }
        }
        None
    }

    /// The peer's initial limit for our sending on stream `id`.
    fn peer_initial_send_limit_for(peer: &TransportParameters, id: StreamId, side: Side) -> u64 {
        // RFC 9000 §18.2: initial_max_stream_data_bidi_local "applies to newly
        // created bidirectional streams opened by the endpoint that sends the
        // transport parameter"; _bidi_remote "applies to newly created
        // bidirectional streams opened by the endpoint that receives the transport
        // parameter"; _uni "applies to newly created unidirectional streams opened
        // by the endpoint that receives the transport parameter".
        match (id.dir(), id.initiator() == side) {
            (Dir::Bi, true) => peer.initial_max_stream_data_bidi_remote,
            (Dir::Bi, false) => peer.initial_max_stream_data_bidi_local,
            (Dir::Uni, _) => peer.initial_max_stream_data_uni,
        }
    }

    fn peer_initial_send_limit(&self, id: StreamId, side: Side) -> u64 {
        Self::peer_initial_send_limit_for(&self.peer, id, side)
    }

    fn new_stream(&self, id: StreamId) -> Stream {
        let local = id.initiator() == self.side;
        let has_send = id.dir() == Dir::Bi || local;
        let has_recv = id.dir() == Dir::Bi || !local;
        Stream {
            send: has_send.then(|| SendStream::new(self.peer_initial_send_limit(id, self.side))),
            recv: has_recv.then(|| {
                RecvStream::new(
                    self.config.stream_receive_window,
                    self.config.max_stream_receive_window,
                )
            }),
        }
    }

    // ----------------------------------------------------------------------
    // Application side
    // ----------------------------------------------------------------------

    /// Opens a new local stream. `None` when the peer's MAX_STREAMS forbids it
    /// (a STREAMS_BLOCKED frame is then queued; `Available` reports new room).
    pub fn open(&mut self, dir: Dir) -> Option<StreamId> {
        let d = dir.index();
        if self.next_local[d] >= self.peer_max_streams[d] {
            self.open_failed[d] = true;
            // RFC 9000 §4.6: "An endpoint that is unable to open a new stream due to
            // the peer's limits SHOULD send a STREAMS_BLOCKED frame".
            let limit = self.peer_max_streams[d];
            if self.streams_blocked_at[d] != Some(limit) {
                self.streams_blocked_at[d] = Some(limit);
                self.streams_blocked_pending[d] = true;
            }
            return None;
        }
        let id = StreamId::new(self.side, dir, self.next_local[d]);
        self.next_local[d] += 1;
        let stream = self.new_stream(id);
        self.streams.insert(id.0, stream);
        Some(id)
    }

    /// The next stream the peer opened, in order.
    pub fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        let d = dir.index();
        if self.next_accept[d] >= self.next_remote[d] {
            return None;
        }
        let id = StreamId::new(self.side.peer(), dir, self.next_accept[d]);
        self.next_accept[d] += 1;
        Some(id)
    }

    /// Whether `id` names a stream we can send on that was opened at some point.
    fn check_send_id(&self, id: StreamId) -> Result<(), WriteError> {
        let d = id.dir().index();
        let ok = if id.initiator() == self.side {
            id.index() < self.next_local[d]
        } else {
            id.dir() == Dir::Bi && id.index() < self.next_remote[d]
        };
        if ok {
            Ok(())
        } else {
            Err(WriteError::UnknownStream)
        }
    }

    /// Whether `id` names a stream we can receive on that was opened at some point.
    fn check_recv_id(&self, id: StreamId) -> Result<(), ReadError> {
        let d = id.dir().index();
        let ok = if id.initiator() == self.side {
            id.dir() == Dir::Bi && id.index() < self.next_local[d]
        } else {
            id.index() < self.next_remote[d]
        };
        if ok {
            Ok(())
        } else {
            Err(ReadError::UnknownStream)
        }
    }

    /// Writes as much of `data` as flow control (stream and connection) and the
    /// send buffer allow; returns how much was taken. `Err(Blocked)` when nothing
    /// fit: wait for `Writable`.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        self.write_with(id, data.len(), |buf, n| buf.write(&data[..n]))
    }

    /// Like [`Streams::write`], but takes the first bytes of `data` without copying
    /// them: the buffer keeps a reference until the peer acknowledges them.
    pub fn write_bytes(&mut self, id: StreamId, data: Bytes) -> Result<usize, WriteError> {
        let len = data.len();
        self.write_with(id, len, |buf, n| {
            if n == len {
                buf.write_bytes(data)
            } else {
                buf.write_bytes(data.slice(..n))
            }
        })
    }

    /// The checks and accounting of a write of `len` bytes; `put(buffer, n)` stores
    /// the first `n` of them.
    fn write_with(
        &mut self,
        id: StreamId,
        len: usize,
        put: impl FnOnce(&mut SendBuffer, usize),
    ) -> Result<usize, WriteError> {
        self.check_send_id(id)?;
        let conn_credit = self.peer_max_data.saturating_sub(self.conn_written);
        let conn_room = self.conn_send_room();
        let send_buffer = self.config.send_buffer;
        let ss = send_half_or(&mut self.streams, id)?;
        if let Some(code) = ss.stopped {
            return Err(WriteError::Stopped(code));
        }
        if ss.reset || ss.fin {
            return Err(WriteError::ClosedStream);
        }
        if len == 0 {
            return Ok(0);
        }
        let stream_credit = ss.credit();
        let room = send_buffer.saturating_sub(ss.buf.buffered());
        let n = (len as u64)
            .min(stream_credit)
            .min(conn_credit)
            .min(room)
            .min(conn_room) as usize;
        if n < len {
            ss.write_blocked = true;
            // RFC 9000 §4.1: "A sender SHOULD send a STREAM_DATA_BLOCKED or
            // DATA_BLOCKED frame to indicate to the receiver that it has data to
            // write but is blocked by flow control limits."
            if stream_credit < len as u64 && ss.blocked_at != Some(ss.max_data) {
                ss.blocked_at = Some(ss.max_data);
                self.control.push_back(ControlFrame::StreamDataBlocked {
                    id,
                    limit: ss.max_data,
                });
            }
            if conn_credit < len as u64 && self.data_blocked_at != Some(self.peer_max_data) {
                self.data_blocked_at = Some(self.peer_max_data);
                self.data_blocked_pending = true;
            }
            if (conn_credit < len as u64 || conn_room < len as u64)
                && !self.conn_blocked.contains(&id)
            {
                self.conn_blocked.push(id);
            }
        }
        if n == 0 {
            return Err(WriteError::Blocked);
        }
        put(&mut ss.buf, n);
        self.conn_written += n as u64;
        self.conn_buffered += n as u64;
        if !ss.queued {
            ss.queued = true;
            self.send_queue.push_back(id);
        }
        Ok(n)
    }

    /// Marks the end of the stream after the data written so far.
    pub fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        self.check_send_id(id)?;
        let ss = send_half_or(&mut self.streams, id)?;
        if let Some(code) = ss.stopped {
            return Err(WriteError::Stopped(code));
        }
        if ss.reset {
            return Err(WriteError::ClosedStream);
        }
        if ss.fin {
            return Ok(());
        }
        ss.fin = true;
        ss.fin_pending = true;
        if !ss.queued {
            ss.queued = true;
            self.send_queue.push_back(id);
        }
        Ok(())
    }

    /// Abandons sending: queues RESET_STREAM with `code`, drops unsent and
    /// unacknowledged data. A no-op on a stream already reset.
    pub fn reset(&mut self, id: StreamId, code: u64) -> Result<(), WriteError> {
        self.check_send_id(id)?;
        let ss = send_half_or(&mut self.streams, id)?;
        if ss.reset || ss.is_done() {
            return Ok(());
        }
        let released = Self::reset_send(&mut self.control, id, ss, code);
        self.release_send_buffer(released);
        self.maybe_free(id);
        Ok(())
    }

    /// RFC 9000 §3.1: "From any of the "Ready", "Send", or "Data Sent" states, an
    /// application can signal that it wishes to abandon transmission of stream
    /// data. [...] the endpoint sends a RESET_STREAM frame".
    ///
    /// Returns the unacknowledged bytes dropped, for `release_send_buffer`.
    fn reset_send(
        control: &mut VecDeque<ControlFrame>,
        id: StreamId,
        ss: &mut SendStream,
        code: u64,
    ) -> u64 {
        // RFC 9000 §4.5: the final size of a reset stream is the flow-control credit
        // it consumed, which for us is everything written.
        let final_size = ss.buf.offset();
        let released = ss.buf.buffered();
        ss.reset = true;
        ss.fin_pending = false;
        ss.buf = SendBuffer::new();
        control.push_back(ControlFrame::ResetStream {
            id,
            code,
            final_size,
        });
        released
    }

    /// Room left under the connection-wide send cap.
    fn conn_send_room(&self) -> u64 {
        self.config
            .max_connection_send_buffer
            .saturating_sub(self.conn_buffered)
    }

    /// Whether a write blocked on the connection (credit or send cap) could take
    /// bytes now.
    fn conn_has_room(&self) -> bool {
        self.peer_max_data > self.conn_written && self.conn_send_room() > 0
    }

    /// `n` unacknowledged bytes left the send buffers (acknowledged, or dropped by
    /// a reset): they no longer count against the connection-wide send cap, and
    /// the streams that were waiting for it are told they can write again. Only
    /// streams that were actually blocked are visited.
    fn release_send_buffer(&mut self, n: u64) {
        if n > 0 {
            self.conn_buffered -= n;
            self.wake_conn_blocked();
        }
    }

    /// Tells the streams in `conn_blocked` they can write again, if the
    /// connection has credit and room under the send cap; a no-op (O(1)) otherwise.
    fn wake_conn_blocked(&mut self) {
        if self.conn_blocked.is_empty() || !self.conn_has_room() {
            return;
        }
        let send_buffer = self.config.send_buffer;
        for id in std::mem::take(&mut self.conn_blocked) {
            if let Some(ss) = send_half(&mut self.streams, id) {
                Self::signal_writable(
                    &mut self.events,
                    &mut self.conn_blocked,
                    true,
                    send_buffer,
                    id,
                    ss,
                );
            }
        }
    }

    /// Reads contiguous data into `buf`.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<ReadOutcome, ReadError> {
        self.read_with(id, |rs| rs.read(buf))
    }

    /// Like [`Streams::read`], but hands at most `max` bytes to `f` where they lie in
    /// the reassembly buffer (up to two slices, in order) instead of copying them.
    pub fn read_in_place(
        &mut self,
        id: StreamId,
        max: usize,
        f: impl FnMut(&[u8]),
    ) -> Result<ReadOutcome, ReadError> {
        self.read_with(id, |rs| rs.read_in_place(max, f))
    }

    /// The checks and flow-control accounting of a read done by `read`.
    fn read_with(
        &mut self,
        id: StreamId,
        read: impl FnOnce(&mut RecvStream) -> Result<ReadOutcome, ReadError>,
    ) -> Result<ReadOutcome, ReadError> {
        self.check_recv_id(id)?;
        let rs = recv_half_or(&mut self.streams, id)?;
        let out = read(rs);
        match out {
            Ok(ReadOutcome::Data(n)) => {
                rs.credited += n as u64;
                if rs.wants_credit()
                    && rs
                        .window
                        .on_consumed(rs.credited, self.now, self.rtt)
                        .is_some()
                {
                    // The frame carries the limit current when it is polled, so one
                    // queue entry per stream is enough.
                    if !rs.max_data_queued {
                        rs.max_data_queued = true;
                        self.max_stream_data_queue.push_back(id);
                    }
                    // Keep the connection window ahead of a growing stream window.
                    let stream_window = rs.window.window();
                    self.conn_window
                        .ensure_window(stream_window.saturating_add(stream_window / 2));
                }
                self.release_conn_credit(n as u64);
            }
            Ok(ReadOutcome::Finished) | Err(ReadError::Reset(_)) => self.maybe_free(id),
            _ => {}
        }
        out
    }

    /// Tells the peer to stop sending (STOP_SENDING with `code`); data that arrives
    /// from now on is discarded. A no-op if the receiving half already ended.
    pub fn stop_sending(&mut self, id: StreamId, code: u64) -> Result<(), ReadError> {
        self.check_recv_id(id)?;
        let rs = recv_half_or(&mut self.streams, id)?;
        let (released, send_frame) = rs.stop();
        if send_frame {
            self.control
                .push_back(ControlFrame::StopSending { id, code });
        }
        self.release_conn_credit(released);
        self.maybe_free(id);
        Ok(())
    }

    /// Gives `n` bytes of connection-level credit back; queues MAX_DATA when due.
    fn release_conn_credit(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.conn_consumed += n;
        if self
            .conn_window
            .on_consumed(self.conn_consumed, self.now, self.rtt)
            .is_some()
        {
            self.max_data_pending = true;
        }
    }

    /// Removes the stream if both halves are done; peer streams give back a
    /// MAX_STREAMS slot.
    fn maybe_free(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id.0) else {
            return;
        };
        let done = s.send.as_ref().is_none_or(SendStream::is_done)
            && s.recv.as_ref().is_none_or(RecvStream::is_done);
        if !done {
            return;
        }
        self.streams.remove(&id.0);
        if id.initiator() != self.side {
            // RFC 9000 §4.6: "Implementations might choose to increase limits as
            // streams are closed, to keep the number of streams available to peers
            // roughly consistent." We re-advertise once an eighth of the concurrency
            // limit has been freed, so MAX_STREAMS frames stay rare on busy
            // connections while the peer never waits for long.
            let d = id.dir().index();
            self.closed_remote[d] += 1;
            let concurrent = match id.dir() {
                Dir::Bi => self.config.max_concurrent_bidi,
                Dir::Uni => self.config.max_concurrent_uni,
            };
            let target = self.closed_remote[d]
                .saturating_add(concurrent)
                .min(MAX_STREAMS_LIMIT);
            let step = (concurrent / 8).max(1);
            if target >= self.max_remote[d].saturating_add(step) {
                self.max_remote[d] = target;
                self.max_streams_pending[d] = true;
            }
        }
    }

    // ----------------------------------------------------------------------
    // Frames that arrived
    // ----------------------------------------------------------------------

    /// Validates a frame's stream ID against who may send it and our limits, and
    /// opens peer streams implicitly. Returns whether the stream still exists
    /// (`false`: it was closed and freed; the frame is to be ignored).
    ///
    /// `peer_sends` is whether the frame is one only the stream's data sender sends
    /// (STREAM, RESET_STREAM, STREAM_DATA_BLOCKED) as opposed to one only its data
    /// receiver sends (STOP_SENDING, MAX_STREAM_DATA).
    fn validate_frame_id(&mut self, id: StreamId, peer_sends: bool) -> Result<bool, StreamsError> {
        if id.0 > MAX_STREAM_ID {
            return Err(StreamsError::new(
                TransportErrorCode::FRAME_ENCODING_ERROR,
                "stream ID out of range",
            ));
        }
        let d = id.dir().index();
        let local = id.initiator() == self.side;
        if id.dir() == Dir::Uni {
            // RFC 9000 §19.8: "An endpoint MUST terminate the connection with error
            // STREAM_STATE_ERROR if it receives a STREAM frame for a locally
            // initiated stream that has not yet been created, or for a send-only
            // stream." Likewise RESET_STREAM (§19.4) and STREAM_DATA_BLOCKED
            // (§19.13) for a send-only stream, and STOP_SENDING (§19.5) and
            // MAX_STREAM_DATA (§19.10) for a receive-only stream.
            if local == peer_sends {
                return Err(StreamsError::new(
                    TransportErrorCode::STREAM_STATE_ERROR,
                    if peer_sends {
                        "frame for a send-only stream"
                    } else {
                        "frame for a receive-only stream"
                    },
                ));
            }
        }
        if local {
            if id.index() >= self.next_local[d] {
                return Err(StreamsError::new(
                    TransportErrorCode::STREAM_STATE_ERROR,
                    "frame for a locally initiated stream not yet created",
                ));
            }
            return Ok(self.streams.contains_key(&id.0));
        }
        // RFC 9000 §4.6: "An endpoint that receives a frame with a stream ID
        // exceeding the limit it has sent MUST treat this as a connection error of
        // type STREAM_LIMIT_ERROR".
        if id.index() >= self.max_remote[d] {
            return Err(StreamsError::new(
                TransportErrorCode::STREAM_LIMIT_ERROR,
                "peer exceeded the stream limit",
            ));
        }
        if id.index() >= self.next_remote[d] {
            // RFC 9000 §3.2: "Before a stream is created, all streams of the same
            // type with lower-numbered stream IDs MUST be created."
            let dir = id.dir();
            for index in self.next_remote[d]..=id.index() {
                let new_id = StreamId::new(self.side.peer(), dir, index);
                let stream = self.new_stream(new_id);
                self.streams.insert(new_id.0, stream);
            }
            self.next_remote[d] = id.index() + 1;
            self.events.push_back(StreamEvent::Opened { dir });
            return Ok(true);
        }
        Ok(self.streams.contains_key(&id.0))
    }

    /// A STREAM frame arrived.
    pub fn on_stream_frame(
        &mut self,
        now: Instant,
        id: u64,
        offset: u64,
        data: &[u8],
        fin: bool,
    ) -> Result<(), StreamsError> {
        self.now = Some(now);
        let id = StreamId(id);
        // RFC 9000 §19.8: "The largest offset delivered on a stream -- the sum of the
        // offset and data length -- cannot exceed 2^62-1 [...]. Receipt of a frame
        // that exceeds this limit MUST be treated as a connection error of type
        // FRAME_ENCODING_ERROR or FLOW_CONTROL_ERROR."
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= MAX_LIMIT => {}
            _ => {
                return Err(StreamsError::new(
                    TransportErrorCode::FLOW_CONTROL_ERROR,
                    "stream offset beyond 2^62-1",
                ))
            }
        }
        if !self.validate_frame_id(id, true)? {
            return Ok(());
        }
        let conn_credit = self.conn_window.limit().saturating_sub(self.conn_received);
        let Some(rs) = recv_half(&mut self.streams, id) else {
            return Ok(());
        };
        let out = rs.on_data(offset, data, fin, conn_credit)?;
        let stopped = rs.state == RecvState::Stopped;
        if out.notify && !rs.readable_signaled {
            rs.readable_signaled = true;
            self.events.push_back(StreamEvent::Readable(id));
        }
        self.absorb(out);
        if stopped {
            self.maybe_free(id);
        }
        Ok(())
    }

    /// Connection-level accounting of a frame's effect.
    fn absorb(&mut self, out: RecvOutcome) {
        self.conn_received += out.delta;
        self.release_conn_credit(out.released);
    }

    /// A RESET_STREAM frame arrived.
    pub fn on_reset_stream(
        &mut self,
        id: u64,
        code: u64,
        final_size: u64,
    ) -> Result<(), StreamsError> {
        let id = StreamId(id);
        if !self.validate_frame_id(id, true)? {
            return Ok(());
        }
        let conn_credit = self.conn_window.limit().saturating_sub(self.conn_received);
        let Some(rs) = recv_half(&mut self.streams, id) else {
            return Ok(());
        };
        let out = rs.on_reset(code, final_size, conn_credit)?;
        if out.notify {
            rs.readable_signaled = true;
            self.events.push_back(StreamEvent::Readable(id));
        }
        self.absorb(out);
        self.maybe_free(id);
        Ok(())
    }

    /// A STOP_SENDING frame arrived: the stream is reset with the peer's code
    /// (RFC 9000 §3.5: "An endpoint that receives a STOP_SENDING frame MUST send a
    /// RESET_STREAM frame if the stream is in the "Ready" or "Send" state.").
    pub fn on_stop_sending(&mut self, id: u64, code: u64) -> Result<(), StreamsError> {
        let id = StreamId(id);
        if !self.validate_frame_id(id, false)? {
            return Ok(());
        }
        let Some(ss) = send_half(&mut self.streams, id) else {
            return Ok(());
        };
        if ss.stopped.is_some() {
            return Ok(());
        }
        ss.stopped = Some(code);
        let released = if ss.is_done() {
            0
        } else {
            Self::reset_send(&mut self.control, id, ss, code)
        };
        self.events.push_back(StreamEvent::Stopped { id, code });
        self.release_send_buffer(released);
        self.maybe_free(id);
        Ok(())
    }

    /// A MAX_DATA frame arrived.
    pub fn on_max_data(&mut self, max: u64) {
        if max <= self.peer_max_data {
            return;
        }
        self.peer_max_data = max;
        self.wake_conn_blocked();
    }

    /// Emits `Writable` if the stream's last write came up short and it has room
    /// now. A stream with room of its own but no connection credit or no room under
    /// the connection-wide send cap waits in `conn_blocked` for MAX_DATA or acks.
    fn signal_writable(
        events: &mut VecDeque<StreamEvent>,
        conn_blocked: &mut Vec<StreamId>,
        conn_has_room: bool,
        send_buffer: u64,
        id: StreamId,
        ss: &mut SendStream,
    ) {
        if !ss.write_blocked
            || ss.reset
            || ss.fin
            || ss.credit() == 0
            || ss.buf.buffered() >= send_buffer
        {
            return;
        }
        if conn_has_room {
            ss.write_blocked = false;
            events.push_back(StreamEvent::Writable(id));
        } else if !conn_blocked.contains(&id) {
            conn_blocked.push(id);
        }
    }

    /// A MAX_STREAM_DATA frame arrived.
    pub fn on_max_stream_data(&mut self, id: u64, max: u64) -> Result<(), StreamsError> {
        let id = StreamId(id);
        if !self.validate_frame_id(id, false)? {
            return Ok(());
        }
        let conn_has_room = self.conn_has_room();
        let send_buffer = self.config.send_buffer;
        if let Some(ss) = send_half(&mut self.streams, id) {
            if max > ss.max_data {
                ss.max_data = max;
                Self::signal_writable(
                    &mut self.events,
                    &mut self.conn_blocked,
                    conn_has_room,
                    send_buffer,
                    id,
                    ss,
                );
            }
        }
        Ok(())
    }

    /// A MAX_STREAMS frame arrived (its count is at most 2^60: the wire decoder
    /// refuses larger ones, RFC 9000 §19.11).
    pub fn on_max_streams(&mut self, dir: Dir, max: u64) {
        let d = dir.index();
        if max > self.peer_max_streams[d] {
            self.peer_max_streams[d] = max;
            if std::mem::take(&mut self.open_failed[d]) {
                self.events.push_back(StreamEvent::Available { dir });
            }
        }
    }

    /// A DATA_BLOCKED frame arrived. If the peer is blocked below what we already
    /// advertised, the update was probably lost: advertise again.
    pub fn on_data_blocked(&mut self, limit: u64) {
        if limit < self.conn_window.limit() {
            self.max_data_pending = true;
        }
    }

    /// A STREAM_DATA_BLOCKED frame arrived (validated like a STREAM frame).
    pub fn on_stream_data_blocked(&mut self, id: u64, limit: u64) -> Result<(), StreamsError> {
        let id = StreamId(id);
        if !self.validate_frame_id(id, true)? {
            return Ok(());
        }
        if let Some(rs) = recv_half(&mut self.streams, id) {
            if limit < rs.window.limit() && rs.wants_credit() && !rs.max_data_queued {
                rs.max_data_queued = true;
                self.max_stream_data_queue.push_back(id);
            }
        }
        Ok(())
    }

    /// A STREAMS_BLOCKED frame arrived (its count is at most 2^60: the wire decoder
    /// refuses larger ones, RFC 9000 §19.14).
    pub fn on_streams_blocked(&mut self, dir: Dir, limit: u64) {
        let d = dir.index();
        if limit < self.max_remote[d] {
            self.max_streams_pending[d] = true;
        }
    }

    /// Latest smoothed RTT, used for window auto-tuning.
    pub fn set_rtt(&mut self, now: Instant, smoothed_rtt: Duration) {
        self.now = Some(now);
        self.rtt = Some(smoothed_rtt);
    }

    // ----------------------------------------------------------------------
    // Output
    // ----------------------------------------------------------------------

    /// The next control frame to send. Each is returned once; if the packet
    /// carrying it is lost, hand it to `on_control_lost`.
    pub fn poll_control(&mut self) -> Option<ControlFrame> {
        if let Some(f) = self.control.pop_front() {
            return Some(f);
        }
        if self.max_data_pending {
            self.max_data_pending = false;
            return Some(ControlFrame::MaxData(self.conn_window.limit()));
        }
        for dir in [Dir::Bi, Dir::Uni] {
            let d = dir.index();
            if self.max_streams_pending[d] {
                self.max_streams_pending[d] = false;
                return Some(ControlFrame::MaxStreams {
                    dir,
                    max: self.max_remote[d],
                });
            }
        }
        while let Some(id) = self.max_stream_data_queue.pop_front() {
            if let Some(rs) = recv_half(&mut self.streams, id) {
                rs.max_data_queued = false;
                if rs.wants_credit() {
                    return Some(ControlFrame::MaxStreamData {
                        id,
                        max: rs.window.limit(),
                    });
                }
            }
        }
        if self.data_blocked_pending {
            self.data_blocked_pending = false;
            if self.conn_written >= self.peer_max_data {
                return Some(ControlFrame::DataBlocked(self.peer_max_data));
            }
        }
        for dir in [Dir::Bi, Dir::Uni] {
            let d = dir.index();
            if self.streams_blocked_pending[d] {
                self.streams_blocked_pending[d] = false;
                if self.next_local[d] >= self.peer_max_streams[d] {
                    return Some(ControlFrame::StreamsBlocked {
                        dir,
                        limit: self.peer_max_streams[d],
                    });
                }
            }
        }
        None
    }

    /// A packet carrying `frame` was lost: queue it again if it still matters
    /// (a newer MAX_* value, once sent, supersedes an older one).
    pub fn on_control_lost(&mut self, frame: ControlFrame) {
        match frame {
            ControlFrame::MaxData(max) => {
                if max == self.conn_window.limit() {
                    self.max_data_pending = true;
                }
            }
            ControlFrame::MaxStreamData { id, max } => {
                if let Some(rs) = recv_half(&mut self.streams, id) {
                    if max == rs.window.limit() && rs.wants_credit() && !rs.max_data_queued {
                        rs.max_data_queued = true;
                        self.max_stream_data_queue.push_back(id);
                    }
                }
            }
            ControlFrame::MaxStreams { dir, max } => {
                if max == self.max_remote[dir.index()] {
                    self.max_streams_pending[dir.index()] = true;
                }
            }
            // Our reset is final: repeat it until it gets through (the stream may
            // already be gone from the table).
            ControlFrame::ResetStream { .. } => self.control.push_back(frame),
            ControlFrame::StopSending { id, .. } => {
                let relevant = self
                    .streams
                    .get(&id.0)
                    .and_then(|s| s.recv.as_ref())
                    .is_some_and(|rs| rs.state == RecvState::Stopped && rs.final_size.is_none());
                if relevant {
                    self.control.push_back(frame);
                }
            }
            ControlFrame::DataBlocked(limit) => {
                if limit == self.peer_max_data && self.conn_written >= limit {
                    self.data_blocked_pending = true;
                }
            }
            ControlFrame::StreamDataBlocked { id, limit } => {
                let relevant = self
                    .streams
                    .get(&id.0)
                    .and_then(|s| s.send.as_ref())
                    .is_some_and(|ss| !ss.reset && ss.max_data == limit && ss.credit() == 0);
                if relevant {
                    self.control.push_back(frame);
                }
            }
            ControlFrame::StreamsBlocked { dir, limit } => {
                let d = dir.index();
                if limit == self.peer_max_streams[d] && self.next_local[d] >= limit {
                    self.streams_blocked_pending[d] = true;
                }
            }
        }
    }

    /// The next chunk of stream data to send, at most `max_len` data bytes
    /// (`max_len == 0` gives `None`). Streams take turns chunk by chunk; within a
    /// stream, lost data goes before new data. Everything buffered is within the
    /// peer's flow-control limits (writes are bounded by them).
    pub fn poll_chunk(&mut self, max_len: usize) -> Option<StreamChunk> {
        if max_len == 0 {
            return None;
        }
        while let Some(id) = self.send_queue.pop_front() {
            let Some(ss) = send_half(&mut self.streams, id) else {
                continue;
            };
            ss.queued = false;
            let Some((range, fin)) = ss.poll(max_len) else {
                continue;
            };
            if ss.has_pending() {
                ss.queued = true;
                self.send_queue.push_back(id);
            }
            return Some(StreamChunk {
                id,
                offset: range.start,
                len: (range.end - range.start) as usize,
                fin,
            });
        }
        None
    }

    /// The bytes of a chunk returned by `poll_chunk` (up to two slices; empty if
    /// the stream has since been reset or freed).
    pub fn chunk_data(&self, chunk: &StreamChunk) -> (&[u8], &[u8]) {
        match self.streams.get(&chunk.id.0).and_then(|s| s.send.as_ref()) {
            Some(ss) if !ss.reset => ss.buf.data(chunk.offset..chunk.offset + chunk.len as u64),
            _ => (&[], &[]),
        }
    }

    /// The packet carrying `chunk` was acknowledged.
    pub fn on_chunk_acked(&mut self, chunk: &StreamChunk) {
        let send_buffer = self.config.send_buffer;
        let Some(ss) = send_half(&mut self.streams, chunk.id) else {
            return;
        };
        if ss.reset {
            return;
        }
        let before = ss.buf.buffered();
        ss.buf.on_ack(chunk.offset..chunk.offset + chunk.len as u64);
        let released = before - ss.buf.buffered();
        self.conn_buffered -= released;
        // `conn_has_room`, spelled out: `ss` borrows the stream table.
        let conn_has_room = self.peer_max_data > self.conn_written
            && self.conn_buffered < self.config.max_connection_send_buffer;
        if chunk.fin {
            ss.fin_acked = true;
        }
        Self::signal_writable(
            &mut self.events,
            &mut self.conn_blocked,
            conn_has_room,
            send_buffer,
            chunk.id,
            ss,
        );
        let done = ss.is_done();
        if done && !ss.finished_reported {
            ss.finished_reported = true;
            self.events.push_back(StreamEvent::Finished(chunk.id));
        }
        if released > 0 {
            self.wake_conn_blocked();
        }
        if done {
            self.maybe_free(chunk.id);
        }
    }

    /// The packet carrying `chunk` was lost: its data (and FIN) will be sent again.
    pub fn on_chunk_lost(&mut self, chunk: &StreamChunk) {
        let Some(ss) = send_half(&mut self.streams, chunk.id) else {
            return;
        };
        if ss.reset {
            return;
        }
        ss.buf
            .on_lost(chunk.offset..chunk.offset + chunk.len as u64);
        if chunk.fin && !ss.fin_acked {
            ss.fin_pending = true;
        }
        if ss.has_pending() && !ss.queued {
            ss.queued = true;
            self.send_queue.push_back(chunk.id);
        }
    }

    /// Whether a control frame or stream data is ready to send now.
    pub fn has_pending(&self) -> bool {
        // Whether a stream in `queue` is still open and `wants` something sent.
        let any_in = |queue: &VecDeque<StreamId>, wants: fn(&Stream) -> bool| {
            queue
                .iter()
                .any(|id| self.streams.get(&id.0).is_some_and(wants))
        };
        let stream_data = || {
            any_in(&self.send_queue, |s| {
                s.send.as_ref().is_some_and(SendStream::has_pending)
            })
        };
        let max_stream_data = || {
            any_in(&self.max_stream_data_queue, |s| {
                s.recv.as_ref().is_some_and(RecvStream::wants_credit)
            })
        };
        !self.control.is_empty()
            || self.max_data_pending
            || self.max_streams_pending.iter().any(|&p| p)
            || (self.data_blocked_pending && self.conn_written >= self.peer_max_data)
            || (0..2).any(|d| {
                self.streams_blocked_pending[d] && self.next_local[d] >= self.peer_max_streams[d]
            })
            || max_stream_data()
            || stream_data()
    }

    /// The next application-visible event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Streams currently held in the table (open, or not yet fully closed).
    pub fn open_count(&self) -> usize {
        self.streams.len()
    }

    /// Bytes the application wrote that the peer has not acknowledged yet, on all
    /// streams (unsent and in flight): at most `max_connection_send_buffer`.
    pub fn send_buffered(&self) -> u64 {
        self.conn_buffered
    }

    /// Test support for the stateful fuzz targets: the lengths of the queues a peer
    /// can make grow, by name.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn fuzz_queue_lens(&self) -> [(&'static str, usize); 5] {
        [
            ("streams.control", self.control.len()),
            (
                "streams.max_stream_data_queue",
                self.max_stream_data_queue.len(),
            ),
            ("streams.send_queue", self.send_queue.len()),
            ("streams.events", self.events.len()),
            ("streams.conn_blocked", self.conn_blocked.len()),
        ]
    }
}

#[cfg(test)]
mod tests;
