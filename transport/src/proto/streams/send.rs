//! The sending half: a send buffer (also used for CRYPTO data) and per-stream send state.
//!
//! [`SendBuffer`] keeps every byte the application wrote until the peer
//! acknowledged it. Offsets fall into three kinds: never sent (`unsent..offset`),
//! lost and waiting for retransmission (a [`RangeSet`]), and everything else
//! (in flight or acked). Acked ranges above the acked prefix are remembered in a
//! second [`RangeSet`].
//!
//! Storage is a queue of immutable segments ([`Bytes`]) followed by a growing tail:
//! copied writes ([`SendBuffer::write`]) land in the tail, which becomes a segment
//! once it holds [`TAIL_SEGMENT`] bytes; [`SendBuffer::write_bytes`] appends the
//! caller's `Bytes` as a segment without copying. Nothing is ever moved inside the
//! buffer: when the acked prefix passes the end of a segment, the segment is dropped
//! whole. Memory is therefore bounded by the unacked data plus at most one segment.
//! A chunk handed out by [`SendBuffer::poll_chunk`] spans at most two storage
//! pieces, so [`SendBuffer::data`] always returns it as (at most) two slices.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use crate::proto::range_set::RangeSet;

/// Size at which the tail of copied writes becomes an immutable segment.
pub const TAIL_SEGMENT: usize = 64 * 1024;

/// Bytes written by the application, kept until acknowledged.
#[derive(Debug, Clone, Default)]
pub struct SendBuffer {
    /// Immutable segments with their absolute start offsets, contiguous and in order.
    segs: VecDeque<(u64, Bytes)>,
    /// Segments dropped from the front so far (turns an index into `segs` into a
    /// stable segment number).
    popped: usize,
    /// Number of the segment the last lookup found: lookups walk forward from it, so
    /// the bulk path does not search.
    hint: Cell<usize>,
    /// Offset of the first byte of `tail` (the end of the last segment).
    tail_start: u64,
    /// Copied writes after the last segment.
    tail: Vec<u8>,
    /// Every byte below is acknowledged (storage may still hold part of the
    /// segment it falls in).
    base: u64,
    /// First offset never handed out by `poll_chunk`.
    unsent: u64,
    /// Lost ranges waiting for retransmission (never acked bytes, all below `unsent`).
    retransmit: RangeSet,
    /// Acknowledged ranges at or above `base` (the prefix is folded into `base`).
    acked: RangeSet,
}

impl SendBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a copy of `data` at the end of the stream.
    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.tail.len() >= TAIL_SEGMENT {
                self.freeze_tail();
            }
            if self.tail.capacity() == 0 {
                self.tail.reserve_exact(data.len().min(TAIL_SEGMENT));
            }
            let take = data.len().min(TAIL_SEGMENT - self.tail.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    /// Appends `data` at the end of the stream without copying it.
    pub fn write_bytes(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.freeze_tail();
        let start = self.tail_start;
        self.tail_start += data.len() as u64;
        self.segs.push_back((start, data));
    }

    /// Turns the tail into an immutable segment.
    fn freeze_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let tail = Bytes::from(std::mem::take(&mut self.tail));
        let start = self.tail_start;
        self.tail_start += tail.len() as u64;
        self.segs.push_back((start, tail));
    }

    /// The storage piece holding `offset` (which must lie in the buffer), with the
    /// piece's absolute start offset.
    fn piece(&self, offset: u64) -> (u64, &[u8]) {
        if offset >= self.tail_start {
            return (self.tail_start, &self.tail);
        }
        let contains = |i: usize| {
            self.segs
                .get(i)
                .filter(|(s, b)| *s <= offset && offset < s + b.len() as u64)
        };
        let hint = self.hint.get().wrapping_sub(self.popped);
        for i in [hint, hint.wrapping_add(1)] {
            if let Some((s, b)) = contains(i) {
                self.hint.set(self.popped + i);
                return (*s, b);
            }
        }
        let i = self
            .segs
            .partition_point(|(s, _)| *s <= offset)
            .wrapping_sub(1);
        match contains(i) {
            Some((s, b)) => {
                self.hint.set(self.popped + i);
                (*s, b)
            }
            None => (offset, &[]),
        }
    }

    /// Clips `start..end` so that it spans at most two storage pieces.
    fn clip(&self, start: u64, end: u64) -> u64 {
        let (s, p) = self.piece(start);
        let first_end = s + p.len() as u64;
        if end <= first_end || first_end <= start {
            return end;
        }
        let (s2, p2) = self.piece(first_end);
        end.min(s2 + p2.len() as u64).max(first_end)
    }

    /// The next range to transmit, at most `max_len` bytes: the lowest lost range
    /// first, then new data. The range is considered in flight from now on.
    pub fn poll_chunk(&mut self, max_len: usize) -> Option<Range<u64>> {
        if max_len == 0 {
            return None;
        }
        if let Some(r) = self.retransmit.first() {
            let end = r.end.min(r.start.saturating_add(max_len as u64));
            let end = self.clip(r.start, end);
            self.retransmit.remove(r.start..end);
            return Some(r.start..end);
        }
        let offset = self.offset();
        if self.unsent < offset {
            let start = self.unsent;
            let end = offset.min(start.saturating_add(max_len as u64));
            let end = self.clip(start, end);
            self.unsent = end;
            return Some(start..end);
        }
        None
    }

    /// The bytes of `range` (as returned by `poll_chunk`, not yet acknowledged),
    /// as up to two slices. Parts outside the buffer are omitted.
    pub fn data(&self, range: Range<u64>) -> (&[u8], &[u8]) {
        debug_assert!(range.start >= self.base && range.end <= self.offset());
        let start = range.start.max(self.base).min(self.offset());
        let end = range.end.min(self.offset()).max(start);
        if start == end {
            return (&[], &[]);
        }
        let (s, p) = self.piece(start);
        let a = &p[(start - s) as usize..((end - s) as usize).min(p.len())];
        let next = start + a.len() as u64;
        if next >= end || a.is_empty() {
            return (a, &[]);
        }
        let (s2, p2) = self.piece(next);
        let b = &p2[(next - s2) as usize..((end - s2) as usize).min(p2.len())];
        (a, b)
    }

    /// The peer acknowledged `range`: it will never be retransmitted, and once the
    /// acked prefix covers it, its memory is released.
    pub fn on_ack(&mut self, range: Range<u64>) {
        let r = range.start.max(self.base)..range.end.min(self.unsent);
        if r.start >= r.end {
            return;
        }
        self.retransmit.remove(r.clone());
        self.acked.insert(r);
        if let Some(first) = self.acked.first() {
            if first.start == self.base {
                self.acked.pop_min();
                self.base = first.end;
                self.release();
            }
        }
    }

    /// Drops the storage wholly below the acked prefix.
    fn release(&mut self) {
        while let Some((s, b)) = self.segs.front() {
            if s + b.len() as u64 > self.base {
                return;
            }
            self.segs.pop_front();
            self.popped += 1;
        }
        if self.base == self.offset() && !self.tail.is_empty() {
            // Everything is acked: the tail starts afresh (a large one is freed, a
            // small one keeps its capacity for the next writes).
            self.tail_start = self.base;
            if self.tail.capacity() > 4096 {
                self.tail = Vec::new();
            } else {
                self.tail.clear();
            }
        }
    }

    /// The packet carrying `range` was lost: its unacknowledged bytes are
    /// queued for retransmission.
    pub fn on_lost(&mut self, range: Range<u64>) {
        let r = range.start.max(self.base)..range.end.min(self.unsent);
        if r.start >= r.end || !self.retransmit.insert(r.clone()) {
            return;
        }
        for acked in self.acked.overlapping(r) {
            self.retransmit.remove(acked);
        }
    }

    /// Total bytes ever written (the offset of the next write).
    pub fn offset(&self) -> u64 {
        self.tail_start + self.tail.len() as u64
    }

    /// Whether every written byte was acknowledged.
    pub fn is_fully_acked(&self) -> bool {
        self.base == self.offset()
    }

    /// Whether `poll_chunk` would return something.
    pub fn has_pending(&self) -> bool {
        !self.retransmit.is_empty() || self.unsent < self.offset()
    }

    /// Bytes written and not yet acknowledged as a prefix (what the write limit
    /// counts; storage holds at most one segment more).
    pub fn buffered(&self) -> u64 {
        self.offset() - self.base
    }
}

/// Send-side state of one stream, driven by `Streams`.
#[derive(Debug)]
pub(crate) struct SendStream {
    /// Unacknowledged data.
    pub buf: SendBuffer,
    /// The peer's limit on this stream's offset (MAX_STREAM_DATA).
    pub max_data: u64,
    /// The application called `finish`.
    pub fin: bool,
    /// A FIN must be (re)transmitted.
    pub fin_pending: bool,
    /// The peer acknowledged the FIN.
    pub fin_acked: bool,
    /// We reset the stream (the RESET_STREAM frame was queued): no more data goes out.
    pub reset: bool,
    /// The peer asked us to stop with this code (STOP_SENDING).
    pub stopped: Option<u64>,
    /// The limit at which we last queued STREAM_DATA_BLOCKED.
    pub blocked_at: Option<u64>,
    /// A write came up short; a `Writable` event is due when room appears.
    pub write_blocked: bool,
    /// `Finished` was already reported.
    pub finished_reported: bool,
    /// The stream is in the connection's round-robin send queue.
    pub queued: bool,
}

impl SendStream {
    pub fn new(max_data: u64) -> Self {
        Self {
            buf: SendBuffer::new(),
            max_data,
            fin: false,
            fin_pending: false,
            fin_acked: false,
            reset: false,
            stopped: None,
            blocked_at: None,
            write_blocked: false,
            finished_reported: false,
            queued: false,
        }
    }

    /// Whether `poll` would return a chunk.
    pub fn has_pending(&self) -> bool {
        !self.reset && (self.buf.has_pending() || self.fin_pending)
    }

    /// The next chunk to send: `(range, fin)`.
    pub fn poll(&mut self, max_len: usize) -> Option<(Range<u64>, bool)> {
        if self.reset {
            return None;
        }
        if let Some(r) = self.buf.poll_chunk(max_len) {
            let fin = self.fin_pending && r.end == self.buf.offset();
            if fin {
                self.fin_pending = false;
            }
            return Some((r, fin));
        }
        if self.fin_pending {
            self.fin_pending = false;
            let end = self.buf.offset();
            return Some((end..end, true));
        }
        None
    }

    /// Every byte and the FIN are acknowledged, or the stream was reset.
    pub fn is_done(&self) -> bool {
        self.reset || (self.fin_acked && self.buf.is_fully_acked())
    }

    /// Stream-level credit left for new writes.
    pub fn credit(&self) -> u64 {
        self.max_data.saturating_sub(self.buf.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(b: &SendBuffer, r: Range<u64>) -> Vec<u8> {
        let (x, y) = b.data(r);
        [x, y].concat()
    }

    #[test]
    fn new_data_in_chunks_then_nothing() {
        let mut b = SendBuffer::new();
        b.write(b"hello world");
        assert_eq!(b.offset(), 11);
        assert_eq!(b.poll_chunk(5), Some(0..5));
        assert_eq!(b.poll_chunk(5), Some(5..10));
        assert_eq!(b.poll_chunk(5), Some(10..11));
        assert_eq!(b.poll_chunk(5), None);
        assert!(!b.has_pending());
        assert_eq!(bytes(&b, 3..8), b"lo wo");
        assert_eq!(b.poll_chunk(0), None);
    }

    #[test]
    fn lost_data_goes_first_and_acks_free_memory() {
        let mut b = SendBuffer::new();
        b.write(&[1; 100]);
        b.poll_chunk(40).unwrap();
        b.poll_chunk(40).unwrap();
        b.on_lost(0..40);
        b.write(&[2; 10]);
        assert_eq!(b.poll_chunk(30), Some(0..30));
        assert_eq!(b.poll_chunk(30), Some(30..40));
        assert_eq!(b.poll_chunk(100), Some(80..110));
        assert_eq!(b.buffered(), 110);
        b.on_ack(40..80);
        assert_eq!(b.buffered(), 110, "prefix not acked yet");
        b.on_ack(0..40);
        assert_eq!(b.buffered(), 30);
        b.on_ack(80..110);
        assert!(b.is_fully_acked());
        assert_eq!(b.buffered(), 0);
    }

    #[test]
    fn loss_after_ack_does_not_retransmit_acked_bytes() {
        let mut b = SendBuffer::new();
        b.write(&[0; 30]);
        b.poll_chunk(30).unwrap();
        b.on_ack(10..20);
        b.on_lost(0..30);
        assert_eq!(b.poll_chunk(100), Some(0..10));
        assert_eq!(b.poll_chunk(100), Some(20..30));
        assert_eq!(b.poll_chunk(100), None);
        // A spurious loss declaration followed by the ack cancels the retransmission.
        b.on_lost(0..10);
        b.on_ack(0..10);
        assert!(!b.has_pending());
    }

    #[test]
    fn data_spans_the_ring_wrap() {
        let mut b = SendBuffer::new();
        b.write(&[0; 6]);
        b.poll_chunk(6);
        b.on_ack(0..6);
        // The ring's head moved; new writes may wrap around its end.
        let payload: Vec<u8> = (0..64).collect();
        b.write(&payload);
        let r = b.poll_chunk(64).unwrap();
        assert_eq!(bytes(&b, r), payload);
    }

    #[test]
    fn zero_copy_segments_and_copied_tail_interleave() {
        let mut b = SendBuffer::new();
        b.write(b"ab");
        b.write_bytes(Bytes::from_static(b"cdef"));
        b.write(b"g");
        b.write_bytes(Bytes::from_static(b"hi"));
        b.write_bytes(Bytes::new());
        assert_eq!(b.offset(), 9);
        // A chunk spans at most two pieces: "ab" + "cdef", then "g" + "hi".
        assert_eq!(b.poll_chunk(100), Some(0..6));
        assert_eq!(bytes(&b, 0..6), b"abcdef");
        assert_eq!(b.poll_chunk(100), Some(6..9));
        assert_eq!(bytes(&b, 6..9), b"ghi");
        // A retransmission of everything is clipped the same way.
        b.on_lost(0..9);
        assert_eq!(b.poll_chunk(100), Some(0..6));
        assert_eq!(b.poll_chunk(3), Some(6..9));
        assert_eq!(bytes(&b, 1..4), b"bcd");
        b.on_ack(0..9);
        assert!(b.is_fully_acked());
        assert_eq!(b.buffered(), 0);
        assert!(b.segs.is_empty() && b.tail.is_empty(), "storage released");
        b.write(b"jk");
        assert_eq!(b.poll_chunk(100), Some(9..11));
        assert_eq!(bytes(&b, 9..11), b"jk");
    }

    #[test]
    fn large_copied_writes_become_segments_freed_on_ack() {
        let mut b = SendBuffer::new();
        let data: Vec<u8> = (0..3 * TAIL_SEGMENT + 5).map(|i| i as u8).collect();
        b.write(&data);
        assert_eq!(b.segs.len(), 3);
        let mut sent = Vec::new();
        while let Some(r) = b.poll_chunk(1000) {
            sent.extend_from_slice(&bytes(&b, r));
        }
        assert_eq!(sent, data);
        b.on_ack(0..TAIL_SEGMENT as u64 + 1);
        assert_eq!(b.segs.len(), 2, "the first segment is freed");
        assert_eq!(b.buffered(), data.len() as u64 - TAIL_SEGMENT as u64 - 1);
    }

    #[test]
    fn send_stream_fin_rides_last_chunk_and_is_retransmitted() {
        let mut s = SendStream::new(100);
        s.buf.write(b"abc");
        s.fin = true;
        s.fin_pending = true;
        assert_eq!(s.poll(2), Some((0..2, false)));
        assert_eq!(s.poll(2), Some((2..3, true)));
        assert_eq!(s.poll(2), None);
        // FIN lost alone: a zero-length FIN chunk goes out.
        s.fin_pending = true;
        assert_eq!(s.poll(2), Some((3..3, true)));
        assert!(!s.is_done());
        s.buf.on_ack(0..3);
        s.fin_acked = true;
        assert!(s.is_done());
    }

    proptest! {
        #[test]
        fn random_ack_loss_sequences_end_fully_acked(
            writes in proptest::collection::vec(1usize..300, 1..20),
            decisions in proptest::collection::vec(0u8..10, 1..400),
            chunk in 1usize..200,
        ) {
            let mut b = SendBuffer::new();
            let mut model = Vec::new();
            let mut in_flight: Vec<Range<u64>> = Vec::new();
            let mut received = vec![None::<u8>; 0];
            let mut w = writes.into_iter();
            let mut d = decisions.into_iter().cycle();
            for step in 0..100_000 {
                if let Some(n) = w.next() {
                    let data: Vec<u8> = (0..n).map(|i| (model.len() + i) as u8 ^ 0x5a).collect();
                    if n % 3 == 0 {
                        b.write_bytes(Bytes::from(data.clone()));
                    } else {
                        b.write(&data);
                    }
                    model.extend_from_slice(&data);
                    received.resize(model.len(), None);
                }
                if let Some(r) = b.poll_chunk(chunk) {
                    // What goes on the wire must be exactly the written bytes.
                    prop_assert_eq!(bytes(&b, r.clone()), &model[r.start as usize..r.end as usize]);
                    in_flight.push(r);
                }
                if in_flight.is_empty() {
                    if b.is_fully_acked() { break; }
                    continue;
                }
                let pick = d.next().unwrap() as usize % in_flight.len();
                let r = in_flight.swap_remove(pick);
                // Losses stop eventually so that the sequence can complete.
                if d.next().unwrap() < 3 && step < 2_000 {
                    b.on_lost(r);
                } else {
                    for i in r.clone() { received[i as usize] = Some(model[i as usize]); }
                    b.on_ack(r);
                }
                prop_assert!(b.buffered() <= model.len() as u64);
            }
            prop_assert!(b.is_fully_acked());
            prop_assert!(!b.has_pending());
            prop_assert_eq!(b.offset(), model.len() as u64);
            let got: Vec<u8> = received.into_iter().map(|x| x.unwrap()).collect();
            prop_assert_eq!(got, model);
        }
    }
}
