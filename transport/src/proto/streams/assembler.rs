//! Out-of-order reassembly of a byte stream by offset (STREAM and CRYPTO data).
//!
//! Bytes are kept in one ring buffer that starts at the read offset; holes are
//! zero-filled placeholders and a [`RangeSet`] records which bytes really arrived.
//! The in-order case (data that starts exactly where the buffer ends) is a single
//! copy onto the end of the ring, and reads copy straight out of the ring into the
//! caller's buffer: no per-segment allocation, only buffer growth.
//!
//! Memory bound: nothing is buffered further than `max_buffered` bytes past the
//! read offset; a segment that would go beyond is refused with [`AssemblerFull`].
//! For streams, flow control already refuses such data (the cap is a backstop set
//! to the largest window); for CRYPTO it is the hard cap.

use std::collections::VecDeque;
use std::fmt;

use crate::proto::range_set::RangeSet;

/// A segment would have buffered data beyond the assembler's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssemblerFull;

impl fmt::Display for AssemblerFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reassembly buffer limit exceeded")
    }
}

impl std::error::Error for AssemblerFull {}

/// Reassembles segments received in any order, with duplicates and overlaps.
#[derive(Debug, Clone)]
pub struct Assembler {
    /// Bytes from `read_offset` up to the highest received end; holes are zeros.
    buf: VecDeque<u8>,
    /// Stream offset of `buf[0]`: everything below was read by the application.
    read_offset: u64,
    /// Absolute ranges actually received at or above `read_offset`.
    received: RangeSet,
    /// Largest distance past `read_offset` that may be buffered.
    max_buffered: u64,
}

impl Assembler {
    /// An empty assembler that buffers at most `max_buffered` bytes past its read offset.
    pub fn new(max_buffered: u64) -> Self {
        Self {
            buf: VecDeque::new(),
            read_offset: 0,
            received: RangeSet::new(),
            max_buffered,
        }
    }

    /// Inserts `data` found at stream offset `offset`.
    ///
    /// Bytes below the read offset and bytes already present are ignored
    /// (a well-behaved peer repeats the same bytes). Fails, buffering nothing,
    /// if the segment ends more than the cap past the read offset.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), AssemblerFull> {
        let end = offset.checked_add(data.len() as u64).ok_or(AssemblerFull)?;
        if end <= self.read_offset {
            return Ok(());
        }
        if end - self.read_offset > self.max_buffered {
            return Err(AssemblerFull);
        }
        let (offset, data) = if offset < self.read_offset {
            let skip = (self.read_offset - offset) as usize;
            (self.read_offset, &data[skip..])
        } else {
            (offset, data)
        };
        // Both fit in usize: they are at most `max_buffered` past the read offset,
        // and the buffer for them is about to be allocated anyway.
        let rel = (offset - self.read_offset) as usize;
        let rel_end = rel + data.len();
        let len = self.buf.len();
        if rel >= len {
            // At or past the end: pad any hole, then append (the bulk path).
            self.buf.resize(rel, 0);
            self.buf.extend(data);
        } else {
            // Overlaps what is buffered: overwrite the overlap, append the rest.
            let overlap = rel_end.min(len) - rel;
            write_at(&mut self.buf, rel, &data[..overlap]);
            self.buf.extend(&data[overlap..]);
        }
        self.received.insert(offset..end);
        Ok(())
    }

    /// Copies contiguous bytes from the read offset into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.readable().min(buf.len());
        if n == 0 {
            return 0;
        }
        let (a, b) = self.buf.as_slices();
        if n <= a.len() {
            buf[..n].copy_from_slice(&a[..n]);
        } else {
            buf[..a.len()].copy_from_slice(a);
            buf[a.len()..n].copy_from_slice(&b[..n - a.len()]);
        }
        self.consume(n);
        n
    }

    /// The contiguous readable bytes, without consuming them (up to two slices).
    pub fn peek(&self) -> (&[u8], &[u8]) {
        let n = self.readable();
        let (a, b) = self.buf.as_slices();
        if n <= a.len() {
            (&a[..n], &[])
        } else {
            (a, &b[..n - a.len()])
        }
    }

    /// Discards `n` readable bytes (at most `readable()`), advancing the read offset.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.readable());
        if n == 0 {
            return;
        }
        self.buf.drain(..n);
        let new = self.read_offset + n as u64;
        self.received.remove(self.read_offset..new);
        self.read_offset = new;
    }

    /// Stream offset of the next byte `read` returns.
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// How many contiguous bytes are ready at the read offset.
    pub fn readable(&self) -> usize {
        match self.received.first() {
            Some(r) if r.start == self.read_offset => (r.end - r.start) as usize,
            _ => 0,
        }
    }

    #[cfg(test)]
    /// Bytes of memory held for buffered data (including holes).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops every buffered byte and releases the memory; the read offset stays.
    pub fn clear(&mut self) {
        self.buf = VecDeque::new();
        self.received.clear();
    }
}

/// Copies `data` into `buf` starting at index `at` (`at + data.len() <= buf.len()`).
fn write_at(buf: &mut VecDeque<u8>, at: usize, data: &[u8]) {
    let (a, b) = buf.as_mut_slices();
    let end = at + data.len();
    if end <= a.len() {
        a[at..end].copy_from_slice(data);
    } else if at >= a.len() {
        b[at - a.len()..end - a.len()].copy_from_slice(data);
    } else {
        let split = a.len() - at;
        a[at..].copy_from_slice(&data[..split]);
        b[..end - a.len()].copy_from_slice(&data[split..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(a: &mut Assembler) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = a.read(&mut buf);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn in_order_segments_read_back() {
        let mut a = Assembler::new(1024);
        a.insert(0, b"hello ").unwrap();
        a.insert(6, b"world").unwrap();
        assert_eq!(a.readable(), 11);
        assert_eq!(read_all(&mut a), b"hello world");
        assert_eq!(a.read_offset(), 11);
        assert_eq!(a.readable(), 0);
    }

    #[test]
    fn hole_blocks_reading_until_filled() {
        let mut a = Assembler::new(1024);
        a.insert(5, b"56789").unwrap();
        assert_eq!(a.readable(), 0);
        assert_eq!(read_all(&mut a), b"");
        a.insert(0, b"01234").unwrap();
        assert_eq!(read_all(&mut a), b"0123456789");
    }

    #[test]
    fn overlaps_and_duplicates_are_tolerated() {
        let mut a = Assembler::new(1024);
        a.insert(2, b"234").unwrap();
        a.insert(0, b"0123").unwrap();
        a.insert(3, b"3456").unwrap();
        a.insert(0, b"01").unwrap();
        assert_eq!(read_all(&mut a), b"0123456");
        // Data wholly below the read offset is ignored; a straddling segment is trimmed.
        a.insert(0, b"0123").unwrap();
        a.insert(5, b"5678").unwrap();
        assert_eq!(read_all(&mut a), b"78");
    }

    #[test]
    fn cap_is_enforced_relative_to_read_offset() {
        let mut a = Assembler::new(10);
        assert_eq!(a.insert(5, &[0; 6]), Err(AssemblerFull));
        assert_eq!(a.buffered(), 0);
        a.insert(0, &[1; 10]).unwrap();
        assert_eq!(a.insert(10, &[1]), Err(AssemblerFull));
        let mut buf = [0; 4];
        assert_eq!(a.read(&mut buf), 4);
        a.insert(10, &[2; 4]).unwrap();
        assert_eq!(a.insert(14, &[2]), Err(AssemblerFull));
        assert_eq!(a.insert(u64::MAX, &[2]), Err(AssemblerFull));
    }

    #[test]
    fn peek_and_consume() {
        let mut a = Assembler::new(100);
        a.insert(0, b"abcdef").unwrap();
        let (x, y) = a.peek();
        assert_eq!([x, y].concat(), b"abcdef");
        a.consume(4);
        assert_eq!(a.read_offset(), 4);
        a.consume(100);
        assert_eq!(a.read_offset(), 6);
    }

    proptest! {
        #[test]
        fn random_segments_reassemble(
            len in 1usize..3000,
            cuts in proptest::collection::vec((0usize..3000, 1usize..200), 1..80),
            reads in proptest::collection::vec(1usize..500, 1..20),
            seed in any::<u64>(),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ seed).wrapping_mul(31) as u8).collect();
            // Random (overlapping, duplicated) segments, then a full cover so the
            // stream completes, shuffled together.
            let mut segs: Vec<(usize, usize)> = cuts
                .into_iter()
                .map(|(s, l)| (s % len, ((s % len) + l).min(len)))
                .collect();
            let mut at = 0;
            while at < len {
                let e = (at + 97).min(len);
                segs.push((at, e));
                at = e;
            }
            let mut rng = seed;
            for i in (1..segs.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                segs.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut a = Assembler::new(len as u64);
            let mut out = Vec::new();
            for (ri, (s, e)) in segs.into_iter().enumerate() {
                a.insert(s as u64, &data[s..e]).unwrap();
                prop_assert!(a.buffered() as u64 <= len as u64);
                let mut buf = vec![0u8; reads[ri % reads.len()]];
                let n = a.read(&mut buf);
                out.extend_from_slice(&buf[..n]);
            }
            out.extend(read_all(&mut a));
            prop_assert_eq!(out, data);
        }

        #[test]
        fn cap_never_exceeded(
            cap in 1u64..500,
            segs in proptest::collection::vec((0u64..1000, 1usize..100), 1..50),
        ) {
            let mut a = Assembler::new(cap);
            for (off, l) in segs {
                let before = a.buffered();
                let r = a.insert(off, &vec![7u8; l]);
                let end = off + l as u64;
                prop_assert_eq!(r.is_err(), end > a.read_offset() + cap);
                if r.is_err() {
                    prop_assert_eq!(a.buffered(), before);
                }
                prop_assert!(a.buffered() as u64 <= cap);
                let mut buf = [0u8; 13];
                a.read(&mut buf);
            }
        }
    }
}
