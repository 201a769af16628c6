//! A hierarchical hashed timing wheel: one timer per key, 1 ms tick, O(1)
//! `set` and `cancel`, `next_deadline` in O(levels), `expire` proportional to
//! the timers it fires or moves.
//!
//! The endpoint keeps one wheel for all connections; a connection's key is its
//! slab index and the generation tells a freed and reused slot from the
//! connection that armed the timer. The wheel stores and returns the
//! generation; checking it against the slab is the caller's business.
//!
//! # Layout
//!
//! Time is counted in ticks of 1 ms since `start`. Eleven levels of 64 slots
//! cover the whole `u64` tick range (6 bits per level), so any deadline fits;
//! level `l` holds the timers whose tick agrees with the current tick above
//! bit `6(l+1)` but not above bit `6l`. When time reaches a slot of a coarse
//! level, its timers move down to finer levels (cascade) until they sit in
//! level 0, where a slot is exactly one tick. Nodes live in a `Vec` indexed by
//! key (keys are slab indices: memory is proportional to the largest key ever
//! armed) and form intrusive doubly linked lists, one per slot, so `set` and
//! `cancel` never search.
//!
//! # Rounding
//!
//! A deadline is rounded *up* to its tick and a tick fires once `now` has
//! fully reached it (`now` is rounded *down*), so a timer never fires before
//! its deadline and at most 1 ms after it (given an `expire` call then).
//! [`TimerWheel::next_deadline`] reports tick instants, so waking at it and
//! calling `expire` always makes progress.

use std::time::{Duration, Instant};

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// 11 * 6 = 66 ≥ 64: every `u64` tick has a level.
const LEVELS: usize = 11;
const NIL: usize = usize::MAX;
const TICK_NANOS: u128 = 1_000_000;

/// Where a node is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// Not armed.
    Idle,
    /// Due (tick at or before the wheel's current tick): fires on the next `expire`.
    Pending,
    /// In slot `level * SLOTS + slot`.
    Slot(u16),
}

#[derive(Debug, Clone)]
struct Node {
    generation: u32,
    deadline: Instant,
    tick: u64,
    prev: usize,
    next: usize,
    loc: Loc,
}

/// Hierarchical timing wheel keyed by `(key, generation)`; see the module docs.
#[derive(Debug)]
pub struct TimerWheel {
    start: Instant,
    /// The current tick: everything at or before it has been (or is about to be) fired.
    elapsed: u64,
    nodes: Vec<Node>,
    /// `LEVELS * SLOTS` list heads.
    heads: Box<[usize]>,
    /// Bit `s` of `occupied[l]` is set when slot `s` of level `l` is non-empty.
    occupied: [u64; LEVELS],
    pending: usize,
    len: usize,
    scratch: Vec<usize>,
}

impl TimerWheel {
    /// An empty wheel whose tick 0 is `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            elapsed: 0,
            nodes: Vec::new(),
            heads: vec![NIL; LEVELS * SLOTS].into_boxed_slice(),
            occupied: [0; LEVELS],
            pending: NIL,
            len: 0,
            scratch: Vec::new(),
        }
    }

    /// Arms (or re-arms) the single timer of `key` at `deadline`, replacing
    /// any previous one for that key.
    pub fn set(&mut self, key: usize, generation: u32, deadline: Instant) {
        if key >= self.nodes.len() {
            let start = self.start;
            self.nodes.resize_with(key + 1, || Node {
                generation: 0,
                deadline: start,
                tick: 0,
                prev: NIL,
                next: NIL,
                loc: Loc::Idle,
            });
        }
        if self.nodes[key].loc == Loc::Idle {
            self.len += 1;
        } else {
            self.unlink(key);
        }
        let tick = self.tick_of(deadline);
        let node = &mut self.nodes[key];
        node.generation = generation;
        node.deadline = deadline;
        node.tick = tick;
        self.link(key);
    }

    /// Disarms the timer of `key`, if any.
    pub fn cancel(&mut self, key: usize) {
        if self.nodes.get(key).is_some_and(|n| n.loc != Loc::Idle) {
            self.unlink(key);
            self.nodes[key].loc = Loc::Idle;
            self.len -= 1;
        }
    }

    #[cfg(test)]
    /// The deadline of `key`'s timer, if armed.
    pub fn deadline(&self, key: usize) -> Option<(u32, Instant)> {
        let node = self.nodes.get(key)?;
        (node.loc != Loc::Idle).then_some((node.generation, node.deadline))
    }

    /// When to call [`expire`](Self::expire) next, for `poll(timeout)`.
    ///
    /// Never later than the instant at which `expire` fires the earliest timer
    /// (its deadline rounded up to the tick). It may be earlier, by design:
    /// for a timer still in a coarse level it is the start of that level's
    /// slot, where `expire` moves it down a level; that costs at most one
    /// extra wake-up per level. O(levels), no scan of entries.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending != NIL {
            return Some(self.instant_of(self.elapsed));
        }
        let (_, start) = self.next_slot()?;
        Some(self.instant_of(start))
    }

    /// Pops every timer whose deadline is at or before `now` (at tick
    /// granularity, see the module docs), calling `fired(key, generation)` in
    /// deadline order (ties arbitrary). Timers are removed before `fired`
    /// runs.
    pub fn expire(&mut self, now: Instant, mut fired: impl FnMut(usize, u32)) {
        let now_tick = self.floor_tick(now);
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        // Already due: tick at or before the current tick.
        let mut idx = std::mem::replace(&mut self.pending, NIL);
        while idx != NIL {
            let next = self.nodes[idx].next;
            self.nodes[idx].loc = Loc::Idle;
            self.len -= 1;
            due.push(idx);
            idx = next;
        }
        while let Some((slot_index, slot_start)) = self.next_slot() {
            if slot_start > now_tick {
                break;
            }
            // Move the clock to the slot's start: its timers are then either
            // due (tick ≤ now) or belong to a finer level relative to it.
            self.elapsed = self.elapsed.max(slot_start);
            let level = slot_index / SLOTS;
            self.occupied[level] &= !(1u64 << (slot_index % SLOTS));
            let mut idx = std::mem::replace(&mut self.heads[slot_index], NIL);
            while idx != NIL {
                let next = self.nodes[idx].next;
                if self.nodes[idx].tick <= now_tick {
                    self.nodes[idx].loc = Loc::Idle;
                    self.len -= 1;
                    due.push(idx);
                } else {
                    self.link(idx);
                }
                idx = next;
            }
        }
        // Safe: every remaining timer's slot starts after `now_tick`, so moving
        // the clock there keeps every timer at its level (see `next_slot`).
        self.elapsed = self.elapsed.max(now_tick);
        due.sort_unstable_by_key(|&k| self.nodes[k].deadline);
        for &key in &due {
            fired(key, self.nodes[key].generation);
        }
        due.clear();
        self.scratch = due;
    }

    #[cfg(test)]
    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tick of `deadline`, rounded up (never fire early).
    fn tick_of(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.start).as_nanos();
        let ceil = u64::try_from(nanos.div_ceil(TICK_NANOS)).unwrap_or(u64::MAX);
        if self
            .start
            .checked_add(Duration::from_millis(ceil))
            .is_some()
        {
            ceil
        } else {
            // Within a millisecond of the end of representable time: round down.
            u64::try_from(nanos / TICK_NANOS).unwrap_or(u64::MAX)
        }
    }

    /// Tick of `now`, rounded down.
    fn floor_tick(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        u64::try_from(nanos / TICK_NANOS).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        // Ticks come from representable deadlines (see `tick_of`), and slot
        // starts are at or before the ticks they hold, so this does not overflow.
        self.start
            .checked_add(Duration::from_millis(tick))
            .unwrap_or(self.start)
    }

    /// The earliest non-empty slot: `(slot index, first tick it covers)`.
    ///
    /// Invariant: a timer at level `l` agrees with `elapsed` above bit
    /// `6(l+1)` and its level-`l` digit is above `elapsed`'s (at level 0: at or
    /// above). So all of level `l` comes before all of level `l+1`, and within
    /// a level, slots at or after the current digit are in time order.
    fn next_slot(&self) -> Option<(usize, u64)> {
        for level in 0..LEVELS {
            let shift = SLOT_BITS * level as u32;
            let current = (self.elapsed >> shift) & SLOT_MASK;
            let candidates = self.occupied[level] & (u64::MAX << current);
            if candidates == 0 {
                continue;
            }
            let slot = u64::from(candidates.trailing_zeros());
            let upper_shift = shift + SLOT_BITS;
            let upper = if upper_shift >= 64 {
                0
            } else {
                (self.elapsed >> upper_shift) << upper_shift
            };
            return Some((level * SLOTS + slot as usize, upper | (slot << shift)));
        }
        None
    }

    /// Links node `idx` into the pending list or the slot for its tick.
    fn link(&mut self, idx: usize) {
        let tick = self.nodes[idx].tick;
        let (loc, head) = if tick <= self.elapsed {
            (Loc::Pending, &mut self.pending)
        } else {
            let masked = (self.elapsed ^ tick) | SLOT_MASK;
            let significant = 63 - masked.leading_zeros();
            let level = (significant / SLOT_BITS) as usize;
            let slot = ((tick >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize;
            self.occupied[level] |= 1u64 << slot;
            let index = level * SLOTS + slot;
            (Loc::Slot(index as u16), &mut self.heads[index])
        };
        let old_head = std::mem::replace(head, idx);
        if old_head != NIL {
            self.nodes[old_head].prev = idx;
        }
        let node = &mut self.nodes[idx];
        node.prev = NIL;
        node.next = old_head;
        node.loc = loc;
    }

    /// Unlinks node `idx` from its list (its `loc` is left for the caller).
    fn unlink(&mut self, idx: usize) {
        let Node {
            prev, next, loc, ..
        } = self.nodes[idx];
        if next != NIL {
            self.nodes[next].prev = prev;
        }
        if prev != NIL {
            self.nodes[prev].next = next;
            return;
        }
        match loc {
            Loc::Idle => {}
            Loc::Pending => self.pending = next,
            Loc::Slot(index) => {
                let index = usize::from(index);
                self.heads[index] = next;
                if next == NIL {
                    self.occupied[index / SLOTS] &= !(1u64 << (index % SLOTS));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn expire_all(wheel: &mut TimerWheel, now: Instant) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        wheel.expire(now, |k, g| out.push((k, g)));
        out
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.set(3, 7, t0 + ms(10));
        assert_eq!(w.len(), 1);
        assert_eq!(w.next_deadline(), Some(t0 + ms(10)));
        assert!(expire_all(&mut w, t0 + ms(9)).is_empty());
        assert!(expire_all(&mut w, t0 + Duration::from_micros(9_999)).is_empty());
        assert_eq!(expire_all(&mut w, t0 + ms(10)), vec![(3, 7)]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn sub_millisecond_deadline_rounds_up() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.set(0, 1, t0 + Duration::from_micros(10_100));
        assert_eq!(w.next_deadline(), Some(t0 + ms(11)));
        assert!(expire_all(&mut w, t0 + Duration::from_micros(10_500)).is_empty());
        assert_eq!(expire_all(&mut w, t0 + ms(11)), vec![(0, 1)]);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0 + ms(5));
        w.set(1, 0, t0);
        assert_eq!(w.next_deadline(), Some(t0 + ms(5)));
        assert_eq!(expire_all(&mut w, t0 + ms(5)), vec![(1, 0)]);
        // After time has advanced, a deadline in the past is pending.
        assert!(expire_all(&mut w, t0 + ms(100)).is_empty());
        w.set(2, 9, t0 + ms(50));
        assert_eq!(expire_all(&mut w, t0 + ms(100)), vec![(2, 9)]);
    }

    #[test]
    fn rearm_replaces_and_cancel_removes() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.set(5, 1, t0 + ms(10));
        w.set(5, 2, t0 + ms(5000));
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(5), Some((2, t0 + ms(5000))));
        assert!(expire_all(&mut w, t0 + ms(4999)).is_empty());
        assert_eq!(expire_all(&mut w, t0 + ms(5000)), vec![(5, 2)]);
        w.set(6, 1, t0 + ms(6000));
        w.set(7, 1, t0 + ms(6000));
        w.cancel(6);
        w.cancel(6);
        w.cancel(1000);
        assert_eq!(w.len(), 1);
        assert_eq!(expire_all(&mut w, t0 + ms(7000)), vec![(7, 1)]);
    }

    #[test]
    fn fires_in_deadline_order_across_levels() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let deadlines = [70_000u64, 3, 64, 4096, 65, 1, 262_144, 2];
        for (k, d) in deadlines.iter().enumerate() {
            w.set(k, 0, t0 + ms(*d));
        }
        let fired: Vec<usize> = expire_all(&mut w, t0 + ms(1_000_000))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(fired, vec![5, 7, 1, 2, 4, 3, 0, 6]);
    }

    #[test]
    fn same_tick_fires_in_exact_deadline_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.set(0, 0, t0 + Duration::from_micros(1_900));
        w.set(1, 0, t0 + Duration::from_micros(1_100));
        w.set(2, 0, t0 + Duration::from_micros(1_500));
        let fired: Vec<usize> = expire_all(&mut w, t0 + ms(2))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(fired, vec![1, 2, 0]);
    }

    #[test]
    fn far_future_deadlines_work() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let day = Duration::from_secs(86_400);
        w.set(0, 0, t0 + day);
        w.set(1, 0, t0 + day * 365 * 100);
        w.set(2, 0, t0 + Duration::from_secs(15));
        // A keep-alive every 15 s for 24 virtual hours, jumping to next_deadline.
        let mut now = t0;
        let mut keepalives = 0;
        let mut wakeups = 0;
        let mut day_fired = false;
        while let Some(next) = w.next_deadline() {
            if next > t0 + day {
                break;
            }
            assert!(next >= now);
            now = next;
            wakeups += 1;
            for (k, _) in expire_all(&mut w, now) {
                match k {
                    2 => {
                        keepalives += 1;
                        w.set(2, 0, now + Duration::from_secs(15));
                    }
                    0 => {
                        assert!(now >= t0 + day && now < t0 + day + ms(1));
                        day_fired = true;
                    }
                    _ => panic!("century timer fired after a day"),
                }
            }
        }
        assert!(day_fired);
        assert_eq!(keepalives, 86_400 / 15);
        // Cascades cost a bounded number of extra wake-ups per timer.
        assert!(
            wakeups <= keepalives * 4,
            "{wakeups} wake-ups for {keepalives} keep-alives"
        );
        assert_eq!(w.len(), 2);
        w.cancel(2);
        assert_eq!(expire_all(&mut w, t0 + day * 365 * 100 - ms(1)), vec![]);
        assert_eq!(expire_all(&mut w, t0 + day * 365 * 100), vec![(1, 0)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set {
            key: usize,
            generation: u32,
            after_us: u64,
        },
        Cancel {
            key: usize,
        },
        Advance {
            by_us: u64,
        },
        JumpToNext,
    }

    fn duration_us() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..2_000u64,
            0..100_000u64,
            0..10_000_000u64,
            0..200_000_000_000u64, // ~2.3 days
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12usize, any::<u32>(), duration_us())
                .prop_map(|(key, generation, after_us)| Op::Set { key, generation, after_us }),
            1 => (0..12usize).prop_map(|key| Op::Cancel { key }),
            3 => duration_us().prop_map(|by_us| Op::Advance { by_us }),
            2 => Just(Op::JumpToNext),
        ]
    }

    /// The documented firing rule: deadline rounded up to the tick, `now` rounded down.
    fn due(start: Instant, deadline: Instant, now: Instant) -> bool {
        let d = deadline
            .saturating_duration_since(start)
            .as_nanos()
            .div_ceil(TICK_NANOS);
        let n = now.saturating_duration_since(start).as_nanos() / TICK_NANOS;
        d <= n
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_btreemap_model(offset_us in 0..5_000u64, ops in proptest::collection::vec(op(), 1..200)) {
            let start = Instant::now();
            let mut wheel = TimerWheel::new(start);
            let mut model: BTreeMap<usize, (u32, Instant)> = BTreeMap::new();
            // Start the clock off a tick boundary.
            let mut now = start + Duration::from_micros(offset_us);
            for op in ops {
                match op {
                    Op::Set { key, generation, after_us } => {
                        let deadline = now + Duration::from_micros(after_us);
                        wheel.set(key, generation, deadline);
                        model.insert(key, (generation, deadline));
                    }
                    Op::Cancel { key } => {
                        wheel.cancel(key);
                        model.remove(&key);
                    }
                    Op::Advance { by_us } => now += Duration::from_micros(by_us),
                    Op::JumpToNext => {
                        if let Some(next) = wheel.next_deadline() {
                            // Never later than the earliest timer's firing tick.
                            let earliest = model.values().map(|&(_, d)| d).min().unwrap();
                            let ceil = start + Duration::from_millis(
                                u64::try_from(earliest.saturating_duration_since(start).as_nanos().div_ceil(TICK_NANOS)).unwrap());
                            prop_assert!(next <= ceil.max(now), "next {next:?} after earliest firing {ceil:?}");
                            now = now.max(next);
                        } else {
                            prop_assert!(model.is_empty());
                        }
                    }
                }
                let mut fired = Vec::new();
                wheel.expire(now, |k, g| fired.push((k, g)));
                let expected: BTreeMap<usize, (u32, Instant)> = model
                    .iter()
                    .filter(|(_, &(_, d))| due(start, d, now))
                    .map(|(&k, &v)| (k, v))
                    .collect();
                for k in expected.keys() {
                    model.remove(k);
                }
                let mut last = None;
                for &(k, g) in &fired {
                    let (eg, ed) = expected.get(&k).copied().ok_or_else(|| {
                        TestCaseError::fail(format!("key {k} fired but was not due"))
                    })?;
                    prop_assert_eq!(g, eg);
                    prop_assert!(ed <= now, "fired early");
                    prop_assert!(last.is_none_or(|l| l <= ed), "out of deadline order");
                    last = Some(ed);
                }
                prop_assert_eq!(fired.len(), expected.len(), "lost or duplicated timers");
                prop_assert_eq!(wheel.len(), model.len());
                prop_assert_eq!(wheel.is_empty(), model.is_empty());
                prop_assert_eq!(wheel.next_deadline().is_none(), model.is_empty());
                for (&k, &(g, d)) in &model {
                    prop_assert_eq!(wheel.deadline(k), Some((g, d)));
                }
            }
        }

        #[test]
        fn jumping_to_next_deadline_always_progresses(deadlines in proptest::collection::vec(duration_us(), 1..40)) {
            let start = Instant::now();
            let mut wheel = TimerWheel::new(start);
            for (k, d) in deadlines.iter().enumerate() {
                wheel.set(k, k as u32, start + Duration::from_micros(*d));
            }
            let mut now = start;
            let mut fired = 0;
            let mut steps = 0;
            while let Some(next) = wheel.next_deadline() {
                prop_assert!(next >= now);
                now = next;
                wheel.expire(now, |k, g| {
                    assert_eq!(k as u32, g);
                    fired += 1;
                });
                steps += 1;
                // Each timer costs at most one wake-up per level.
                prop_assert!(steps <= deadlines.len() * LEVELS);
            }
            prop_assert_eq!(fired, deadlines.len());
        }
    }
}
