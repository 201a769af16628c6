//! A set of `u64` values stored as disjoint, non-adjacent, half-open ranges.
//!
//! Used for received packet numbers (ACK ranges), stream and CRYPTO reassembly,
//! and the acked / lost bookkeeping of send buffers.
//!
//! Layout: the highest range lives in `tail`, every lower range in a
//! `BTreeMap<start, end>`. The common case in all of those users is an in-order
//! append (a range that starts inside or right at the end of the highest range),
//! which only touches `tail`: O(1), no tree access, no allocation. Everything else
//! is O(log n) in the number of ranges (plus the ranges that get merged away).

use std::collections::BTreeMap;
use std::ops::Range;

/// A set of `u64` values kept as maximal disjoint half-open ranges.
///
/// Adjacent ranges are always merged, so two sets holding the same values have the
/// same ranges, and `len()` is the number of maximal runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Every range below `tail`, keyed by start, value is the (exclusive) end.
    lower: BTreeMap<u64, u64>,
    /// The highest range; `None` iff the set is empty.
    tail: Option<Range<u64>>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every value in `r`. Returns `true` if at least one value was new.
    pub fn insert(&mut self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return false;
        }
        match &mut self.tail {
            None => {
                self.tail = Some(r);
                return true;
            }
            // Fast path: the range starts at or above the start of the highest range.
            Some(t) if r.start >= t.start => {
                if r.start <= t.end {
                    if r.end <= t.end {
                        return false;
                    }
                    t.end = r.end;
                    return true;
                }
                let old = std::mem::replace(t, r);
                self.lower.insert(old.start, old.end);
                return true;
            }
            Some(_) => {}
        }
        if self.contains_range(&r) {
            return false;
        }
        self.flush_tail();
        Self::insert_into(&mut self.lower, r);
        self.restore_tail();
        true
    }

    /// Adds a single value. Returns `true` if it was new.
    pub fn insert_one(&mut self, v: u64) -> bool {
        match v.checked_add(1) {
            Some(end) => self.insert(v..end),
            // `u64::MAX` cannot be represented in a half-open range; it is never
            // a valid packet number or offset, so it is simply not stored.
            None => false,
        }
    }

    /// Removes every value in `r`.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        // Fast path: only the tail is affected.
        if let Some(t) = &mut self.tail {
            if r.start >= t.end {
                return;
            }
            if r.start <= t.start && self.lower.is_empty() {
                // Trimming a prefix of a single-range set (reassembly after a read).
                if r.end >= t.end {
                    self.tail = None;
                } else if r.end > t.start {
                    t.start = r.end;
                }
                return;
            }
            if r.start > t.start {
                let old_end = t.end;
                t.end = r.start;
                if r.end < old_end {
                    self.flush_tail();
                    self.tail = Some(r.end..old_end);
                }
                return;
            }
        } else {
            return;
        }
        self.flush_tail();
        // The range that starts before `r.start` may straddle it.
        if let Some((&s, &e)) = self.lower.range(..r.start).next_back() {
            if e > r.start {
                self.lower.insert(s, r.start);
                if e > r.end {
                    self.lower.insert(r.end, e);
                }
            }
        }
        // Ranges starting inside `r`: drop them, keeping any part above `r.end`.
        while let Some((&s, &e)) = self.lower.range(r.start..r.end).next() {
            self.lower.remove(&s);
            if e > r.end {
                self.lower.insert(r.end, e);
            }
        }
        self.restore_tail();
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        match &self.tail {
            None => false,
            Some(t) if v >= t.start => v < t.end,
            Some(_) => self
                .lower
                .range(..=v)
                .next_back()
                .is_some_and(|(_, &e)| v < e),
        }
    }

    /// Whether every value of `r` is in the set (an empty `r` is contained).
    pub fn contains_range(&self, r: &Range<u64>) -> bool {
        if r.start >= r.end {
            return true;
        }
        match &self.tail {
            None => false,
            Some(t) if r.start >= t.start => r.end <= t.end,
            Some(_) => self
                .lower
                .range(..=r.start)
                .next_back()
                .is_some_and(|(_, &e)| r.end <= e),
        }
    }

    #[cfg(test)]
    /// The smallest value in the set.
    pub fn min(&self) -> Option<u64> {
        match self.lower.first_key_value() {
            Some((&s, _)) => Some(s),
            None => self.tail.as_ref().map(|t| t.start),
        }
    }

    /// The largest value in the set (the end of the highest range minus one).
    pub fn max(&self) -> Option<u64> {
        self.tail.as_ref().map(|t| t.end - 1)
    }

    /// The lowest range, without removing it.
    pub fn first(&self) -> Option<Range<u64>> {
        match self.lower.first_key_value() {
            Some((&s, &e)) => Some(s..e),
            None => self.tail.clone(),
        }
    }

    /// The number of disjoint ranges (not the number of values).
    pub fn len(&self) -> usize {
        self.lower.len() + usize::from(self.tail.is_some())
    }

    /// Whether the set holds no value.
    pub fn is_empty(&self) -> bool {
        self.tail.is_none()
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        self.lower.clear();
        self.tail = None;
    }

    /// The ranges in ascending order (reversible).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + Clone + '_ {
        self.lower
            .iter()
            .map(|(&s, &e)| s..e)
            .chain(self.tail.iter().cloned())
    }

    /// The ranges that intersect `r`, in descending order, unclipped.
    pub fn overlapping(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let tail = self
            .tail
            .iter()
            .filter(move |t| r.start < r.end && t.start < r.end && t.end > r.start)
            .cloned();
        let lower = self
            .lower
            .range(..r.end)
            .rev()
            .take_while(move |(_, &e)| e > r.start)
            .filter(move |_| r.start < r.end)
            .map(|(&s, &e)| s..e);
        tail.chain(lower)
    }

    /// Removes and returns the lowest range.
    pub fn pop_min(&mut self) -> Option<Range<u64>> {
        match self.lower.pop_first() {
            Some((s, e)) => Some(s..e),
            None => self.tail.take(),
        }
    }

    #[cfg(test)]
    /// Removes every value below `v`.
    pub fn retain_above(&mut self, v: u64) {
        if v > 0 {
            self.remove(0..v);
        }
    }

    /// Moves the tail into the tree so the tree alone holds the whole set.
    fn flush_tail(&mut self) {
        if let Some(t) = self.tail.take() {
            self.lower.insert(t.start, t.end);
        }
    }

    /// Undoes `flush_tail`: the highest range of the tree becomes the tail.
    fn restore_tail(&mut self) {
        debug_assert!(self.tail.is_none());
        self.tail = self.lower.pop_last().map(|(s, e)| s..e);
    }

    /// Inserts `r` into a map of maximal disjoint ranges, merging neighbours.
    fn insert_into(map: &mut BTreeMap<u64, u64>, mut r: Range<u64>) {
        // Merge with a range that starts before `r` and reaches it.
        if let Some((&s, &e)) = map.range(..r.start).next_back() {
            if e >= r.start {
                map.remove(&s);
                r.start = s;
                r.end = r.end.max(e);
            }
        }
        // Merge with every range that starts inside `r` or right at its end.
        while let Some((&s, &e)) = map.range(r.start..=r.end).next() {
            map.remove(&s);
            r.end = r.end.max(e);
        }
        map.insert(r.start, r.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ranges(s: &RangeSet) -> Vec<Range<u64>> {
        s.iter().collect()
    }

    #[test]
    fn in_order_append_merges_into_one_range() {
        let mut s = RangeSet::new();
        for i in 0..100u64 {
            assert!(s.insert(i * 10..i * 10 + 10));
        }
        assert_eq!(ranges(&s), vec![0..1000]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.min(), Some(0));
        assert_eq!(s.max(), Some(999));
    }

    #[test]
    fn duplicate_insert_reports_nothing_new() {
        let mut s = RangeSet::new();
        assert!(s.insert(5..10));
        assert!(!s.insert(5..10));
        assert!(!s.insert(6..8));
        assert!(s.insert(20..30));
        assert!(!s.insert(5..7));
        assert!(s.insert(9..11));
        assert!(!s.insert(3..3));
        assert_eq!(ranges(&s), vec![5..11, 20..30]);
    }

    #[test]
    fn gap_fill_merges_three_ranges() {
        let mut s = RangeSet::new();
        s.insert(0..2);
        s.insert(4..6);
        s.insert(8..10);
        assert_eq!(s.len(), 3);
        assert!(s.insert(1..9));
        assert_eq!(ranges(&s), vec![0..10]);
    }

    #[test]
    fn remove_splits_and_trims() {
        let mut s = RangeSet::new();
        s.insert(0..10);
        s.insert(20..30);
        s.remove(25..27);
        assert_eq!(ranges(&s), vec![0..10, 20..25, 27..30]);
        s.remove(5..22);
        assert_eq!(ranges(&s), vec![0..5, 22..25, 27..30]);
        s.remove(0..100);
        assert!(s.is_empty());
        assert_eq!(s.min(), None);
        assert_eq!(s.max(), None);
    }

    #[test]
    fn pop_min_and_retain_above() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(0..5);
        s.insert(30..40);
        assert_eq!(s.pop_min(), Some(0..5));
        s.retain_above(15);
        assert_eq!(ranges(&s), vec![15..20, 30..40]);
        s.retain_above(35);
        assert_eq!(ranges(&s), vec![35..40]);
        assert_eq!(s.pop_min(), Some(35..40));
        assert_eq!(s.pop_min(), None);
    }

    #[test]
    fn insert_one_at_u64_max_is_ignored() {
        let mut s = RangeSet::new();
        assert!(!s.insert_one(u64::MAX));
        assert!(s.insert_one(u64::MAX - 1));
        assert!(s.contains(u64::MAX - 1));
    }

    #[test]
    fn iter_reverses() {
        let mut s = RangeSet::new();
        s.insert(0..1);
        s.insert(2..3);
        s.insert(4..5);
        let rev: Vec<_> = s.iter().rev().collect();
        assert_eq!(rev, vec![4..5, 2..3, 0..1]);
    }

    #[test]
    fn overlapping_lists_intersecting_ranges() {
        let mut s = RangeSet::new();
        s.insert(0..5);
        s.insert(10..15);
        s.insert(20..25);
        let o: Vec<_> = s.overlapping(4..21).collect();
        assert_eq!(o, vec![20..25, 10..15, 0..5]);
        let o: Vec<_> = s.overlapping(5..10).collect();
        assert!(o.is_empty());
        let o: Vec<_> = s.overlapping(12..13).collect();
        assert_eq!(o, vec![10..15]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(u64, u64),
        PopMin,
        RetainAbove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..200, 0u64..20).prop_map(|(s, l)| Op::Insert(s, s + l)),
            2 => (0u64..200, 0u64..30).prop_map(|(s, l)| Op::Remove(s, s + l)),
            1 => Just(Op::PopMin),
            1 => (0u64..200).prop_map(Op::RetainAbove),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreeset_model(ops in proptest::collection::vec(op(), 0..120)) {
            let mut s = RangeSet::new();
            let mut m = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(a, b) => {
                        let new = (a..b).any(|v| !m.contains(&v));
                        m.extend(a..b);
                        prop_assert_eq!(s.insert(a..b), new);
                    }
                    Op::Remove(a, b) => {
                        for v in a..b { m.remove(&v); }
                        s.remove(a..b);
                    }
                    Op::PopMin => {
                        let was_empty = m.is_empty();
                        let got = s.pop_min();
                        if let Some(r) = &got {
                            for v in r.clone() { prop_assert!(m.remove(&v)); }
                            prop_assert!(!m.contains(&r.end));
                        }
                        prop_assert_eq!(got.is_none(), was_empty);
                        if let (Some(r), Some(&mn)) = (&got, m.first()) {
                            prop_assert!(mn > r.end);
                        }
                    }
                    Op::RetainAbove(v) => {
                        m.retain(|&x| x >= v);
                        s.retain_above(v);
                    }
                }
                // Same membership, same extremes, maximal disjoint ranges.
                let flat: Vec<u64> = s.iter().flatten().collect();
                let model: Vec<u64> = m.iter().copied().collect();
                prop_assert_eq!(&flat, &model);
                prop_assert_eq!(s.min(), m.first().copied());
                prop_assert_eq!(s.max(), m.last().copied());
                let rs: Vec<_> = s.iter().collect();
                for w in rs.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                for r in &rs { prop_assert!(r.start < r.end); }
                for v in 0..230 {
                    prop_assert_eq!(s.contains(v), m.contains(&v));
                }
            }
        }
    }
}
