//! [`AddressLimits`]: the per-source-address admission limits of new server sessions
//! (handshakes in progress per address, handshakes per second per address), in one
//! place that several endpoints can share.
//!
//! One endpoint alone owns its limits. The event loops of one server
//! (`driver::Workers`) share one: a client's first flights land on the loops by a hash
//! of their random connection IDs, so limits kept per loop would give one address N
//! times its allowance over N loops.
//!
//! Sharing is safe and cheap: the state is split into shards by a keyed hash of the
//! address, each behind its own mutex, taken once per new-session attempt (never for
//! a datagram of an existing session) and held for a map lookup.
//!
//! Memory is bounded: an address has a handshake count only while it has handshakes in
//! progress (so no more entries than half-open sessions, which each endpoint bounds),
//! and the rate buckets of each shard are a [`RateLimiter`] that forgets its oldest
//! address when full.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::stateless::RateLimiter;

/// Shards of a shared [`AddressLimits`] ([`AddressLimits::shared`]).
const SHARDS: usize = 16;

/// Why [`AddressLimits::reserve`] refused a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address has its most handshakes in progress.
    HalfOpen,
    /// The address has used up its handshakes per second.
    Rate,
}

/// Per-source-address limits on new server sessions; see the
/// [module documentation](self).
pub struct AddressLimits {
    /// Most handshakes in progress per address; 0: no limit.
    per_address: usize,
    per_sec: u32,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

struct Shard {
    rate: RateLimiter,
    /// Handshakes in progress per address (entries only while non-zero).
    half_open: HashMap<IpAddr, usize>,
}

impl std::fmt::Debug for AddressLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressLimits")
            .field("per_address", &self.per_address)
            .field("per_sec", &self.per_sec)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// A place [`AddressLimits::reserve`] took for a new session: given back when
/// dropped, unless [`Place::keep`] hands it to the half-open session.
pub(crate) struct Place {
    limits: Arc<AddressLimits>,
    ip: IpAddr,
}

impl Place {
    /// The session exists now and holds the place until it stops being half-open
    /// (then [`AddressLimits::release`] gives it back).
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

impl AddressLimits {
    /// For one endpoint alone: at most `per_address` handshakes in progress per
    /// address and `per_sec` new ones per second (burst of the same size), remembering
    /// the rates of at most `max_sources` addresses; 0 for a limit: none.
    pub fn new(per_address: usize, per_sec: u32, max_sources: usize) -> AddressLimits {
        Self::with_shards(per_address, per_sec, max_sources, 1)
    }

    /// Like [`new`](Self::new), for several endpoints (the loops of one server) at
    /// once: give each a clone of the `Arc` in `EndpointConfig::address_limits`.
    pub fn shared(per_address: usize, per_sec: u32, max_sources: usize) -> Arc<AddressLimits> {
        Arc::new(Self::with_shards(per_address, per_sec, max_sources, SHARDS))
    }

    fn with_shards(
        per_address: usize,
        per_sec: u32,
        max_sources: usize,
        shards: usize,
    ) -> AddressLimits {
        let per_shard = max_sources.div_ceil(shards).max(1);
        AddressLimits {
            per_address,
            per_sec,
            hasher: RandomState::new(),
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        rate: RateLimiter::new(per_sec, per_shard),
                        half_open: HashMap::new(),
                    })
                })
                .collect(),
        }
    }

    /// Most handshakes in progress per address (0: no limit).
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    /// Handshakes in progress from `ip` now, over every endpoint sharing these limits.
    pub fn half_open(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        self.shard(ip).half_open.get(&ip).copied().unwrap_or(0)
    }

    /// Admits a new session from `ip` if the address has room for another handshake
    /// in progress and a handshake left in its rate, checked and taken together, so
    /// that endpoints sharing the limits never overshoot them.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<Place>, Refusal> {
        if self.per_address == 0 && self.per_sec == 0 {
            return Ok(None);
        }
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip);
        let held = shard.half_open.get(&ip).copied().unwrap_or(0);
        if self.per_address > 0 && held >= self.per_address {
            return Err(Refusal::HalfOpen);
        }
        if !shard.rate.allow(ip, now) {
            return Err(Refusal::Rate);
        }
        if self.per_address == 0 {
            return Ok(None);
        }
        shard.half_open.insert(ip, held + 1);
        Ok(Some(Place {
            limits: Arc::clone(self),
            ip,
        }))
    }

    /// Gives back a place a half-open session from `ip` held.
    pub(crate) fn release(&self, ip: IpAddr) {
        if self.per_address == 0 {
            return;
        }
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip);
        if let Some(n) = shard.half_open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                shard.half_open.remove(&ip);
            }
        }
    }

    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(ip) % self.shards.len() as u64) as usize;
        // A panic never happens between two changes of a shard: its state is whole.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn places_are_counted_until_given_back() {
        let limits = AddressLimits::shared(2, 0, 100);
        let t = Instant::now();
        let a = limits.reserve(ip("192.0.2.1"), t).unwrap().unwrap();
        let b = limits.reserve(ip("::ffff:192.0.2.1"), t).unwrap().unwrap();
        assert_eq!(limits.half_open(ip("192.0.2.1")), 2);
        assert_eq!(
            limits.reserve(ip("192.0.2.1"), t).err(),
            Some(Refusal::HalfOpen)
        );
        assert!(limits.reserve(ip("192.0.2.2"), t).unwrap().is_some());
        // Dropped (the session was not created): the place comes back.
        drop(a);
        assert_eq!(limits.half_open(ip("192.0.2.1")), 1);
        // Kept: held until released.
        b.keep();
        assert_eq!(limits.half_open(ip("192.0.2.1")), 1);
        limits.release(ip("192.0.2.1"));
        assert_eq!(limits.half_open(ip("192.0.2.1")), 0);
        for shard in limits.shards.iter() {
            assert!(shard.lock().unwrap().half_open.is_empty(), "entries freed");
        }
    }

    #[test]
    fn the_rate_is_per_address_and_shared_by_every_user() {
        let limits = AddressLimits::shared(0, 2, 100);
        let t = Instant::now();
        let other = Arc::clone(&limits);
        assert!(limits.reserve(ip("192.0.2.1"), t).is_ok());
        assert!(other.reserve(ip("192.0.2.1"), t).is_ok());
        assert_eq!(
            limits.reserve(ip("192.0.2.1"), t).err(),
            Some(Refusal::Rate)
        );
        assert_eq!(other.reserve(ip("192.0.2.1"), t).err(), Some(Refusal::Rate));
        assert!(limits.reserve(ip("192.0.2.2"), t).is_ok());
        assert!(other
            .reserve(ip("192.0.2.1"), t + Duration::from_millis(500))
            .is_ok());
    }

    #[test]
    fn no_limits_take_no_lock_and_keep_nothing() {
        let limits = Arc::new(AddressLimits::new(0, 0, 1));
        for i in 0..100u8 {
            assert!(limits
                .reserve(IpAddr::from([10, 0, 0, i]), Instant::now())
                .unwrap()
                .is_none());
        }
        assert_eq!(limits.half_open(ip("10.0.0.1")), 0);
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let limits = AddressLimits::shared(5, 0, 100);
        let t = Instant::now();
        let kept: Vec<usize> = std::thread::scope(|s| {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let limits = &limits;
                    s.spawn(move || {
                        (0..10)
                            .filter_map(|_| limits.reserve(ip("192.0.2.9"), t).ok().flatten())
                            .map(Place::keep)
                            .count()
                    })
                })
                .collect();
            tasks.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(kept.iter().sum::<usize>(), 5);
        assert_eq!(limits.half_open(ip("192.0.2.9")), 5);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
}
