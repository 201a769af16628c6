//! Half-open server sessions (handshake or login not finished), by source address.
//!
//! A client that follows a Retry proves only that it can receive at its address; it
//! can then start handshakes and never finish them. Three bounds keep such clients
//! from filling the endpoint and locking real users out:
//!
//! - the connection's handshake timeout frees a half-open session after a few
//!   seconds (`TransportConfig::handshake_timeout`);
//! - at most `per_address` half-open sessions per source address;
//! - when the endpoint-wide limit is reached, the oldest half-open session of the
//!   most represented address is evicted to make room, so that a flood from a few
//!   addresses cannot crowd out a client from a new one.
//!
//! Established sessions are never tracked here, so they are never evicted.
//!
//! Cost: admission and removal are O(log n) in the number of addresses (a
//! `BTreeSet` ordered by (sessions, age of the oldest)) plus O(`per_address`) to
//! remove a session from its address's queue; nothing scans all sessions.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use super::address_limits::AddressLimits;

/// A half-open session: its slab key and generation.
pub(super) type SessionRef = (usize, u32);

/// Where a tracked session is filed, kept in the session for [`HalfOpen::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    addr: IpAddr,
    seq: u64,
}

/// What [`HalfOpen::admit`] decided for a new session from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// There is room.
    Admit,
    /// The address already has its share of half-open sessions.
    AddressFull,
    /// The endpoint is full and no address has more half-open sessions than this one.
    Full,
    /// The endpoint is full: evict this session (of an address with more half-open
    /// sessions than this one) first, then admit.
    Evict(SessionRef),
}

#[derive(Default)]
struct PerAddress {
    /// (seq, session), oldest first; seq grows, so the queue is sorted by it.
    sessions: VecDeque<(u64, SessionRef)>,
}

/// The half-open sessions of an endpoint, by source address.
pub(super) struct HalfOpen {
    max_total: usize,
    per_address: usize,
    total: usize,
    next_seq: u64,
    addresses: HashMap<IpAddr, PerAddress>,
    /// (sessions of the address, Reverse(seq of its oldest), address): the last
    /// element names the most represented address, and among those the one whose
    /// oldest session is the oldest.
    ranking: BTreeSet<(usize, Reverse<u64>, IpAddr)>,
    /// Where a removed session gives back the place it held
    /// ([`HalfOpen::releasing_to`]).
    limits: Option<Arc<AddressLimits>>,
}

impl HalfOpen {
    /// At most `max_total` half-open sessions, and `per_address` from one address
    /// (0 for either: no limit of that kind).
    pub(super) fn new(max_total: usize, per_address: usize) -> Self {
        HalfOpen {
            max_total,
            per_address,
            total: 0,
            next_seq: 0,
            addresses: HashMap::new(),
            ranking: BTreeSet::new(),
            limits: None,
        }
    }

    /// Every session removed from now on gives back its address's place in `limits`
    /// (which the endpoint took for it with `AddressLimits::reserve`).
    pub(super) fn releasing_to(mut self, limits: Arc<AddressLimits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Half-open sessions now.
    pub(super) fn len(&self) -> usize {
        self.total
    }

    /// Half-open sessions from `ip` now.
    pub(super) fn count(&self, ip: IpAddr) -> usize {
        self.addresses
            .get(&ip.to_canonical())
            .map_or(0, |a| a.sessions.len())
    }

    /// Whether a new session from `ip` may start, and what must go first.
    pub(super) fn admit(&self, ip: IpAddr) -> Admission {
        let ip = ip.to_canonical();
        if self.per_address > 0 && self.count(ip) >= self.per_address {
            return Admission::AddressFull;
        }
        if self.max_total > 0 && self.total >= self.max_total {
            // Evicting only from an address with more sessions than the newcomer's
            // moves towards a fair share; a newcomer never evicts its own address.
            let mine = self.count(ip);
            return match self.ranking.last() {
                Some(&(n, _, worst)) if n > mine => self
                    .addresses
                    .get(&worst)
                    .and_then(|a| a.sessions.front())
                    .map_or(Admission::Full, |&(_, victim)| Admission::Evict(victim)),
                _ => Admission::Full,
            };
        }
        Admission::Admit
    }

    /// Files a new half-open session from `ip`.
    pub(super) fn insert(&mut self, ip: IpAddr, session: SessionRef) -> Ticket {
        let ip = ip.to_canonical();
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = self.addresses.entry(ip).or_default();
        if let Some(old) = rank(ip, entry) {
            self.ranking.remove(&old);
        }
        entry.sessions.push_back((seq, session));
        if let Some(new) = rank(ip, entry) {
            self.ranking.insert(new);
        }
        self.total += 1;
        Ticket { addr: ip, seq }
    }

    /// Forgets a session (it completed, closed, or was evicted). Idempotent.
    pub(super) fn remove(&mut self, ticket: Ticket) {
        let Some(entry) = self.addresses.get_mut(&ticket.addr) else {
            return;
        };
        let Ok(i) = entry
            .sessions
            .binary_search_by_key(&ticket.seq, |&(seq, _)| seq)
        else {
            return;
        };
        if let Some(old) = rank(ticket.addr, entry) {
            self.ranking.remove(&old);
        }
        entry.sessions.remove(i);
        self.total -= 1;
        if let Some(limits) = &self.limits {
            limits.release(ticket.addr);
        }
        match rank(ticket.addr, entry) {
            Some(new) => {
                self.ranking.insert(new);
            }
            None => {
                self.addresses.remove(&ticket.addr);
            }
        }
    }
}

fn rank(ip: IpAddr, entry: &PerAddress) -> Option<(usize, Reverse<u64>, IpAddr)> {
    let &(oldest, _) = entry.sessions.front()?;
    Some((entry.sessions.len(), Reverse(oldest), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_per_address_cap_refuses_only_that_address() {
        let mut h = HalfOpen::new(100, 2);
        h.insert(ip("192.0.2.1"), (0, 0));
        h.insert(ip("192.0.2.1"), (1, 0));
        assert_eq!(h.admit(ip("192.0.2.1")), Admission::AddressFull);
        // An IPv4-mapped IPv6 address is the same address.
        assert_eq!(h.admit(ip("::ffff:192.0.2.1")), Admission::AddressFull);
        assert_eq!(h.admit(ip("192.0.2.2")), Admission::Admit);
        assert_eq!(h.count(ip("192.0.2.1")), 2);
        assert_eq!(h.len(), 2);
    }

    /// When full, the victim is the oldest session of the address with the most
    /// sessions; among equally represented addresses, the one whose oldest session is
    /// the oldest. Only an address with more sessions than the newcomer's loses one,
    /// so a newcomer never evicts its own address's sessions.
    #[test]
    fn eviction_takes_the_oldest_of_the_most_represented_address() {
        let mut h = HalfOpen::new(6, 0);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        let c = ip("192.0.2.3");
        let tb0 = h.insert(b, (10, 0));
        h.insert(a, (20, 0));
        h.insert(a, (21, 0));
        h.insert(a, (22, 0));
        h.insert(b, (11, 0));
        h.insert(c, (30, 0));
        // a has 3, b 2, c 1: a's oldest goes.
        assert_eq!(h.admit(ip("198.51.100.7")), Admission::Evict((20, 0)));
        // Remove a's sessions down to 2: a and b tie at 2, and b's oldest (10) is
        // older than a's (21).
        let mut h2 = HalfOpen::new(6, 0);
        let b0 = h2.insert(b, (10, 0));
        let a0 = h2.insert(a, (20, 0));
        h2.insert(a, (21, 0));
        h2.insert(a, (22, 0));
        h2.insert(b, (11, 0));
        h2.insert(c, (30, 0));
        h2.remove(a0);
        h2.insert(c, (31, 0));
        assert_eq!(h2.len(), 6);
        assert_eq!(h2.admit(ip("198.51.100.7")), Admission::Evict((10, 0)));
        h2.remove(b0);
        // Now a has 2 (21, 22), b 1 (11), c 2 (30, 31): a's 21 is older than c's 30.
        h2.insert(ip("198.51.100.7"), (40, 0));
        assert_eq!(h2.admit(ip("198.51.100.8")), Admission::Evict((21, 0)));
        // Full (a: 21, 22; b: 11; c: 30, 31; 198.51.100.7: 40): a newcomer from a,
        // which already has the most, is refused instead of evicting.
        assert_eq!(h2.admit(a), Admission::Full);
        // So is one from c (2, as many as a).
        assert_eq!(h2.admit(c), Admission::Full);
        // The first tracker: removing twice is harmless.
        h.remove(tb0);
        h.remove(tb0);
        assert_eq!(h.len(), 5);
        assert_eq!(h.count(b), 1);
    }

    #[test]
    fn the_bookkeeping_empties_completely() {
        let mut h = HalfOpen::new(0, 0);
        let mut tickets = Vec::new();
        for i in 0..50u8 {
            let addr = IpAddr::from([127, 0, 0, i % 7]);
            tickets.push(h.insert(addr, (usize::from(i), 0)));
        }
        assert_eq!(h.admit(ip("127.0.0.1")), Admission::Admit, "no limits");
        for t in tickets.into_iter().rev() {
            h.remove(t);
        }
        assert_eq!(h.len(), 0);
        assert!(h.addresses.is_empty());
        assert!(h.ranking.is_empty());
    }
}
