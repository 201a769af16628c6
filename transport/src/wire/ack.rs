//! ACK frames (RFC 9000 §19.3) without allocation.
//!
//! Decoding validates every range once and keeps the encoded range bytes;
//! [`AckFrame::iter`] walks them again to yield descending inclusive ranges.
//! Encoding takes any iterator of descending ranges (e.g. from the receiver's
//! range set) and writes at most `max_ranges` of them.

use super::codec::{DecodeError, LenCounter, Reader, Sink, Writer};
use core::ops::RangeInclusive;

/// ECN counts of an ACK frame of type 0x03 (RFC 9000 §19.3.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EcnCounts {
    /// "The total number of packets received with the ECT(0) codepoint".
    pub ect0: u64,
    /// "The total number of packets received with the ECT(1) codepoint".
    pub ect1: u64,
    /// "The total number of packets received with the ECN-CE codepoint".
    pub ce: u64,
}

/// A decoded ACK frame that borrows its range bytes from the packet.
///
/// Every range was checked at decode time, so [`AckFrame::iter`] cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrame<'a> {
    /// Largest Acknowledged.
    pub largest: u64,
    /// The ACK Delay field as sent: microseconds scaled down by the sender's
    /// `ack_delay_exponent` (RFC 9000 §19.3).
    pub delay: u64,
    /// First ACK Range: packets `largest - first_range ..= largest` are acknowledged.
    pub first_range: u64,
    /// ECN counts (frame type 0x03 only).
    pub ecn: Option<EcnCounts>,
    /// The ACK Range Count field (ranges after the first).
    additional: u64,
    /// The encoded Gap / ACK Range Length pairs.
    raw: &'a [u8],
}

impl<'a> AckFrame<'a> {
    /// Reads the fields after the frame type. `ecn` is true for type 0x03.
    pub(crate) fn decode_body(r: &mut Reader<'a>, ecn: bool) -> Result<Self, DecodeError> {
        let largest = r.varint()?;
        let delay = r.varint()?;
        let additional = r.varint()?;
        let first_range = r.varint()?;
        // RFC 9000 §19.3.1: "If any computed packet number is negative, an endpoint
        // MUST generate a connection error of type FRAME_ENCODING_ERROR."
        let mut smallest = largest
            .checked_sub(first_range)
            .ok_or(DecodeError::Malformed("ACK range below packet number 0"))?;
        // Each further range takes at least 2 bytes: fail fast on absurd counts.
        if additional > (r.remaining() / 2) as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let raw_all = r.peek_rest();
        let start = r.position();
        for _ in 0..additional {
            let gap = r.varint()?;
            let len = r.varint()?;
            (_, smallest) = next_range(smallest, gap, len)
                .ok_or(DecodeError::Malformed("ACK range below packet number 0"))?;
        }
        let raw = &raw_all[..r.position() - start];
        let ecn = if ecn {
            Some(EcnCounts {
                ect0: r.varint()?,
                ect1: r.varint()?,
                ce: r.varint()?,
            })
        } else {
            None
        };
        Ok(AckFrame {
            largest,
            delay,
            first_range,
            ecn,
            additional,
            raw,
        })
    }

    /// Writes the frame, type byte included (the range bytes are copied verbatim).
    pub(crate) fn emit(&self, s: &mut impl Sink) {
        s.put_varint(if self.ecn.is_some() { 0x03 } else { 0x02 });
        s.put_varint(self.largest);
        s.put_varint(self.delay);
        s.put_varint(self.additional);
        s.put_varint(self.first_range);
        s.put_slice(self.raw);
        if let Some(e) = &self.ecn {
            s.put_varint(e.ect0);
            s.put_varint(e.ect1);
            s.put_varint(e.ce);
        }
    }

    /// The acknowledged ranges, largest first.
    pub fn iter(&self) -> AckIter<'a> {
        // Validated at decode time; saturating only guards hand-edited public fields.
        let smallest = self.largest.saturating_sub(self.first_range);
        AckIter {
            first: Some(smallest..=self.largest),
            smallest,
            left: self.additional,
            r: Reader::new(self.raw),
        }
    }

    /// Number of ranges [`AckFrame::iter`] yields: the ACK Range Count field plus one.
    pub fn range_count(&self) -> usize {
        self.additional as usize + 1
    }

    /// The smallest acknowledged packet number.
    pub fn smallest(&self) -> u64 {
        self.iter().last().map_or(self.largest, |r| *r.start())
    }
}

/// RFC 9000 §19.3.1: "largest = previous_smallest - gap - 2" and
/// "smallest = largest - ack_range_length". `None` on underflow.
fn next_range(prev_smallest: u64, gap: u64, len: u64) -> Option<(u64, u64)> {
    let largest = prev_smallest.checked_sub(gap)?.checked_sub(2)?;
    Some((largest, largest.checked_sub(len)?))
}

/// Iterator over the ranges of an [`AckFrame`], largest first.
#[derive(Debug, Clone)]
pub struct AckIter<'a> {
    first: Option<RangeInclusive<u64>>,
    smallest: u64,
    left: u64,
    r: Reader<'a>,
}

impl Iterator for AckIter<'_> {
    type Item = RangeInclusive<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated at decode time; a failure here would only end the iteration.
        let gap = self.r.varint().ok()?;
        let len = self.r.varint().ok()?;
        let Some((largest, smallest)) = next_range(self.smallest, gap, len) else {
            self.left = 0;
            return None;
        };
        self.smallest = smallest;
        Some(smallest..=largest)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.left as usize + usize::from(self.first.is_some());
        (n, Some(n))
    }
}

/// Merges overlapping or adjacent ranges of a descending sequence.
#[derive(Clone)]
struct Coalesce<I> {
    inner: I,
    pending: Option<RangeInclusive<u64>>,
}

impl<I: Iterator<Item = RangeInclusive<u64>>> Iterator for Coalesce<I> {
    type Item = RangeInclusive<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut cur = self.pending.take().or_else(|| self.inner.next())?;
        assert!(
            cur.start() <= cur.end(),
            "empty range {cur:?} given to encode_ack"
        );
        for n in self.inner.by_ref() {
            assert!(
                n.start() <= n.end(),
                "empty range {n:?} given to encode_ack"
            );
            if n.end().saturating_add(1) >= *cur.start() {
                assert!(
                    n.start() <= cur.start(),
                    "encode_ack needs descending ranges"
                );
                cur = *n.start()..=(*n.end()).max(*cur.end());
            } else {
                self.pending = Some(n);
                break;
            }
        }
        Some(cur)
    }
}

fn emit_ack(
    s: &mut impl Sink,
    ranges_desc: impl Iterator<Item = RangeInclusive<u64>> + Clone,
    delay: u64,
    ecn: Option<&EcnCounts>,
    max_ranges: usize,
) {
    let mut it = Coalesce {
        inner: ranges_desc,
        pending: None,
    }
    .take(max_ranges.max(1));
    let first = it.next().expect("encode_ack needs at least one range");
    let additional = it.clone().count();
    s.put_varint(if ecn.is_some() { 0x03 } else { 0x02 });
    s.put_varint(*first.end());
    s.put_varint(delay);
    s.put_varint(additional as u64);
    s.put_varint(first.end() - first.start());
    let mut prev_smallest = *first.start();
    for r in it {
        // RFC 9000 §19.3.1: "Gap: A variable-length integer indicating the number of
        // contiguous unacknowledged packets preceding the packet number one lower than
        // the smallest in the preceding ACK Range."
        s.put_varint(prev_smallest - r.end() - 2);
        s.put_varint(r.end() - r.start());
        prev_smallest = *r.start();
    }
    if let Some(e) = ecn {
        s.put_varint(e.ect0);
        s.put_varint(e.ect1);
        s.put_varint(e.ce);
    }
}

/// Encodes an ACK frame (type 0x02, or 0x03 with `ecn`) from descending inclusive
/// ranges. Overlapping or adjacent ranges are merged; at most `max_ranges` ranges
/// (counting the first; at least 1) are written and the smallest ones are dropped.
/// `delay` is the ACK Delay field value, already scaled by `ack_delay_exponent`.
///
/// # Panics
///
/// If `ranges_desc` is empty, not descending, contains an empty range, or the
/// writer is too short (size it with [`ack_len`]).
pub fn encode_ack(
    w: &mut Writer,
    ranges_desc: impl Iterator<Item = RangeInclusive<u64>> + Clone,
    delay: u64,
    ecn: Option<&EcnCounts>,
    max_ranges: usize,
) {
    emit_ack(w, ranges_desc, delay, ecn, max_ranges);
}

/// The exact number of bytes [`encode_ack`] writes for the same arguments.
pub fn ack_len(
    ranges_desc: impl Iterator<Item = RangeInclusive<u64>> + Clone,
    delay: u64,
    ecn: Option<&EcnCounts>,
    max_ranges: usize,
) -> usize {
    LenCounter::count(|c| emit_ack(c, ranges_desc, delay, ecn, max_ranges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Frame;
    use proptest::prelude::*;

    fn encode(
        ranges: &[RangeInclusive<u64>],
        delay: u64,
        ecn: Option<&EcnCounts>,
        max: usize,
    ) -> Vec<u8> {
        let n = ack_len(ranges.iter().cloned(), delay, ecn, max);
        let mut buf = vec![0u8; n];
        let mut w = Writer::new(&mut buf);
        encode_ack(&mut w, ranges.iter().cloned(), delay, ecn, max);
        assert_eq!(w.remaining(), 0);
        buf
    }

    fn decode(bytes: &[u8]) -> AckFrame<'_> {
        let mut r = Reader::new(bytes);
        let Frame::Ack(a) = Frame::decode(&mut r).unwrap() else {
            panic!("not an ACK")
        };
        assert!(r.is_empty());
        a
    }

    #[test]
    fn ack_bytes_both_ways() {
        // Acks 95..=100, 90..=92, 5..=5: gap = 95-92-2 = 1, len 2; gap = 90-5-2 = 83, len 0.
        let ranges = [95..=100, 90..=92, 5..=5];
        let bytes = encode(&ranges, 0x25, None, 10);
        assert_eq!(hex::encode(&bytes), "0240642502050102405300");
        let a = decode(&bytes);
        assert_eq!(
            (a.largest, a.delay, a.first_range, a.ecn),
            (100, 0x25, 5, None)
        );
        assert_eq!(a.range_count(), 3);
        assert_eq!(a.iter().collect::<Vec<_>>(), ranges);
        assert_eq!(a.smallest(), 5);
    }

    #[test]
    fn ack_ecn_bytes() {
        let ecn = EcnCounts {
            ect0: 1,
            ect1: 2,
            ce: 3,
        };
        let bytes = encode(&[0..=0], 0, Some(&ecn), 1);
        assert_eq!(hex::encode(&bytes), "0300000000010203");
        let a = decode(&bytes);
        assert_eq!(a.ecn, Some(ecn));
        assert_eq!(a.iter().collect::<Vec<_>>(), [0..=0]);
    }

    #[test]
    fn encode_merges_and_truncates() {
        // Adjacent and overlapping ranges merge; max_ranges drops the smallest.
        let bytes = encode(&[10..=12, 8..=9, 7..=8, 1..=2, 0..=0], 0, None, 1);
        assert_eq!(decode(&bytes).iter().collect::<Vec<_>>(), [7..=12]);
        let bytes = encode(&[10..=12, 8..=9, 1..=2], 0, None, 0);
        assert_eq!(decode(&bytes).range_count(), 1);
    }

    #[test]
    fn underflow_is_an_error() {
        // First range larger than largest.
        let mut r = Reader::new(&[0x02, 0x05, 0x00, 0x00, 0x06]);
        assert!(matches!(
            Frame::decode(&mut r),
            Err(DecodeError::Malformed(_))
        ));
        // Gap reaching below zero: largest 5, first 0, gap 4 -> 5 - 4 - 2 < 0.
        let mut r = Reader::new(&[0x02, 0x05, 0x00, 0x01, 0x00, 0x04, 0x00]);
        assert!(matches!(
            Frame::decode(&mut r),
            Err(DecodeError::Malformed(_))
        ));
        // Range length reaching below zero: gap 0 -> largest 3, len 4.
        let mut r = Reader::new(&[0x02, 0x05, 0x00, 0x01, 0x00, 0x00, 0x04]);
        assert!(matches!(
            Frame::decode(&mut r),
            Err(DecodeError::Malformed(_))
        ));
        // Exactly zero is fine.
        let mut r = Reader::new(&[0x02, 0x05, 0x00, 0x01, 0x00, 0x00, 0x03]);
        assert!(Frame::decode(&mut r).is_ok());
        // Huge range count with no bytes behind it.
        let mut r = Reader::new(&[0x02, 0x05, 0x00, 0xbf, 0xff, 0xff, 0xff, 0x00]);
        assert_eq!(Frame::decode(&mut r), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    #[should_panic(expected = "descending")]
    fn ascending_ranges_panic() {
        encode(&[1..=2, 5..=6], 0, None, 10);
    }

    fn arb_ranges() -> impl Strategy<Value = Vec<RangeInclusive<u64>>> {
        (
            0u64..(1 << 40),
            proptest::collection::vec((0u64..1000, 0u64..1000), 1..40),
        )
            .prop_map(|(top, steps)| {
                // Build descending, non-adjacent ranges from the top down.
                let mut out = Vec::new();
                let mut next_largest = top + 1_000_000;
                for (gap, len) in steps {
                    let Some(smallest) = next_largest.checked_sub(len) else {
                        break;
                    };
                    out.push(smallest..=next_largest);
                    match smallest.checked_sub(gap + 2) {
                        Some(l) => next_largest = l,
                        None => break,
                    }
                }
                out
            })
    }

    proptest! {
        #[test]
        fn ack_roundtrip(ranges in arb_ranges(), delay in 0u64..(1 << 62), ecn: Option<(u32, u32, u32)>, max in 1usize..50) {
            let ecn = ecn.map(|(a, b, c)| EcnCounts { ect0: a.into(), ect1: b.into(), ce: c.into() });
            let bytes = encode(&ranges, delay, ecn.as_ref(), max);
            let a = decode(&bytes);
            let expect: Vec<_> = ranges.iter().take(max).cloned().collect();
            prop_assert_eq!(a.iter().collect::<Vec<_>>(), expect.clone());
            prop_assert_eq!(a.range_count(), expect.len());
            prop_assert_eq!(a.delay, delay);
            prop_assert_eq!(a.ecn, ecn);
            // Re-encoding the decoded frame gives the same bytes.
            let f = Frame::Ack(a);
            prop_assert_eq!(f.encoded_len(), bytes.len());
            let mut buf = vec![0u8; bytes.len()];
            f.encode(&mut Writer::new(&mut buf));
            prop_assert_eq!(buf, bytes);
        }

        #[test]
        fn random_ack_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), ecn: bool) {
            let mut b = vec![if ecn { 0x03 } else { 0x02 }];
            b.extend_from_slice(&bytes);
            let mut r = Reader::new(&b);
            if let Ok(Frame::Ack(a)) = Frame::decode(&mut r) {
                // Every decoded ACK iterates fully and descends.
                let v: Vec<_> = a.iter().collect();
                prop_assert_eq!(v.len(), a.range_count());
                for w in v.windows(2) {
                    prop_assert!(w[1].end() + 1 < *w[0].start());
                }
            }
        }
    }
}
