//! Brute-force protection: failure counters per account name and per source address,
//! with exponential backoff, in bounded memory.
//!
//! Rules (defaults in [`LimiterConfig::default`]):
//! - Each key (an account name, or a source IP address) counts failed logins. After
//!   `free_failures` failures the key is locked for `base_lockout`; every further
//!   failure doubles the lockout, up to `max_lockout`. Account names and sources have
//!   separate thresholds: many honest users may share one address behind a NAT.
//! - A login whose account *or* source is locked is refused without checking the
//!   password (the verifier still does a dummy Argon2id run, so the answer and its
//!   timing look like a wrong password) and is not counted: it teaches the attacker
//!   nothing, and the lock expires on schedule.
//! - A successful login forgets the account's counter. It does not forget the
//!   source's: otherwise an attacker holding one valid account could launder guesses at
//!   other accounts by logging into their own between them. A key with no failure for
//!   `forget_after` is forgotten.
//! - Unknown account names are counted exactly like known ones, so locking does not
//!   reveal whether an account exists.
//! - Memory: at most `max_entries` keys; when full, the least recently updated key is
//!   evicted (an attacker spraying names from many addresses can thus flush old
//!   counters, which is the price of bounded memory; the per-source limit slows
//!   spraying from any one address).
//!
//! Time is passed in as [`Instant`]; the limiter never reads a clock. Verifications
//! run concurrently on the worker pool, so between a check and its recorded outcome
//! at most one extra guess per worker can slip through.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Limiter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failures an account name may have before it is locked.
    pub account_free_failures: u32,
    /// Failures a source address may have before it is locked.
    pub source_free_failures: u32,
    /// The first lockout; each further failure doubles it.
    pub base_lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// A key with no failure for this long is forgotten.
    pub forget_after: Duration,
    /// The most keys (names plus addresses) held at once.
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    /// 5 failures per account, 20 per source, then 1 s doubling up to 15 min;
    /// forgotten after an hour of quiet; at most 65 536 keys (a few MiB).
    fn default() -> Self {
        LimiterConfig {
            account_free_failures: 5,
            source_free_failures: 20,
            base_lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_entries: 65_536,
        }
    }
}

/// What a counter is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A (normalised) account name, known or not.
    Account(String),
    /// A client's source address.
    Source(IpAddr),
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
    /// Position in the eviction order.
    seq: u64,
}

/// Failure counters with backoff; see the [module documentation](self).
#[derive(Debug)]
pub struct Limiter {
    config: LimiterConfig,
    entries: HashMap<LimitKey, Entry>,
    /// Eviction order: oldest update first.
    order: BTreeMap<u64, LimitKey>,
    next_seq: u64,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(LimiterConfig::default())
    }
}

impl Limiter {
    /// A limiter with these settings (`max_entries` is raised to at least 2).
    pub fn new(mut config: LimiterConfig) -> Limiter {
        config.max_entries = config.max_entries.max(2);
        Limiter {
            config,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// If the key is locked at `now`, until when.
    pub fn locked_until(&self, key: &LimitKey, now: Instant) -> Option<Instant> {
        let e = self.entries.get(key)?;
        e.locked_until.filter(|&until| until > now)
    }

    /// True if a login for `account` from `source` must be refused at `now` without
    /// checking its credentials. `account` is `None` when the name was not even valid.
    pub fn is_locked(&self, account: Option<&str>, source: IpAddr, now: Instant) -> bool {
        let account_locked = account.is_some_and(|a| {
            self.locked_until(&LimitKey::Account(a.to_owned()), now)
                .is_some()
        });
        account_locked || self.locked_until(&LimitKey::Source(source), now).is_some()
    }

    /// Counts a failed login for `account` (if the name was valid) and `source`.
    pub fn record_failure(&mut self, account: Option<&str>, source: IpAddr, now: Instant) {
        if let Some(a) = account {
            let free = self.config.account_free_failures;
            self.fail(LimitKey::Account(a.to_owned()), free, now);
        }
        let free = self.config.source_free_failures;
        self.fail(LimitKey::Source(source), free, now);
    }

    /// A successful login: forgets the account's counter (not the source's; see the
    /// module documentation).
    pub fn record_success(&mut self, account: &str) {
        self.remove(&LimitKey::Account(account.to_owned()));
    }

    fn remove(&mut self, key: &LimitKey) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.seq);
        }
    }

    /// The lockout after `failures` failures when `free` are allowed.
    fn lockout(&self, failures: u32, free: u32) -> Option<Duration> {
        let over = failures.checked_sub(free)?;
        // base * 2^over, saturating; 2^20 s is far above any sane max_lockout.
        let factor = 1u32.checked_shl(over.min(30)).unwrap_or(u32::MAX);
        let d = self
            .config
            .base_lockout
            .checked_mul(factor)
            .unwrap_or(self.config.max_lockout);
        Some(d.min(self.config.max_lockout))
    }

    fn fail(&mut self, key: LimitKey, free: u32, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let forget_after = self.config.forget_after;
        let failures = match self.entries.get_mut(&key) {
            Some(e) => {
                self.order.remove(&e.seq);
                if now.saturating_duration_since(e.last_failure) >= forget_after {
                    e.failures = 0;
                }
                e.failures = e.failures.saturating_add(1);
                e.last_failure = now;
                e.seq = seq;
                e.failures
            }
            None => {
                self.evict_for_one(now);
                self.entries.insert(
                    key.clone(),
                    Entry {
                        failures: 1,
                        last_failure: now,
                        locked_until: None,
                        seq,
                    },
                );
                1
            }
        };
        let lock = self.lockout(failures, free).map(|d| now + d);
        if let Some(e) = self.entries.get_mut(&key) {
            if lock.is_some() {
                e.locked_until = lock;
            }
        }
        self.order.insert(seq, key);
    }

    /// Makes room for one new key: drops forgotten keys from the old end, then the
    /// oldest if still full.
    fn evict_for_one(&mut self, now: Instant) {
        while let Some((&seq, key)) = self.order.iter().next() {
            let stale = self.entries.get(key).is_none_or(|e| {
                now.saturating_duration_since(e.last_failure) >= self.config.forget_after
                    && e.locked_until.is_none_or(|u| u <= now)
            });
            if !stale && self.entries.len() < self.config.max_entries {
                break;
            }
            let key = key.clone();
            self.order.remove(&seq);
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn locks_after_free_failures_and_doubles() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let mut t = t0;
        for _ in 0..4 {
            l.record_failure(Some("alice"), ip(1), t);
            assert!(!l.is_locked(Some("alice"), ip(1), t));
        }
        l.record_failure(Some("alice"), ip(1), t);
        assert!(l.is_locked(Some("alice"), ip(1), t));
        // Another source is locked out of the account too...
        assert!(l.is_locked(Some("alice"), ip(2), t));
        // ...but the source itself is not (20 free failures), so other accounts work.
        assert!(!l.is_locked(Some("bob"), ip(1), t));
        let until = l
            .locked_until(&LimitKey::Account("alice".into()), t)
            .unwrap();
        assert_eq!(until - t, Duration::from_secs(1));
        t += Duration::from_secs(1);
        assert!(!l.is_locked(Some("alice"), ip(1), t));
        l.record_failure(Some("alice"), ip(1), t);
        let until = l
            .locked_until(&LimitKey::Account("alice".into()), t)
            .unwrap();
        assert_eq!(until - t, Duration::from_secs(2));
    }

    #[test]
    fn lockout_is_capped() {
        let mut l = Limiter::default();
        let mut t = Instant::now();
        for _ in 0..100 {
            l.record_failure(Some("alice"), ip(1), t);
            t += Duration::from_millis(10);
        }
        let key = LimitKey::Account("alice".into());
        let until = l.locked_until(&key, t).unwrap();
        assert!(until - t <= Duration::from_secs(15 * 60));
        assert!(until - t > Duration::from_secs(14 * 60));
    }

    #[test]
    fn success_resets_account_but_not_source() {
        let mut l = Limiter::default();
        let t = Instant::now();
        for _ in 0..20 {
            l.record_failure(Some("alice"), ip(1), t);
        }
        assert!(l.is_locked(None, ip(1), t));
        l.record_success("alice");
        assert!(!l.is_locked(Some("alice"), ip(2), t));
        assert!(l.is_locked(Some("alice"), ip(1), t), "source stays locked");
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let cfg = LimiterConfig::default();
        let mut l = Limiter::new(cfg.clone());
        let t = Instant::now();
        for _ in 0..4 {
            l.record_failure(Some("alice"), ip(1), t);
        }
        let later = t + cfg.forget_after;
        l.record_failure(Some("alice"), ip(1), later);
        assert!(
            !l.is_locked(Some("alice"), ip(1), later),
            "counter restarted"
        );
    }

    #[test]
    fn memory_is_bounded_and_evicts_oldest() {
        let mut l = Limiter::new(LimiterConfig {
            max_entries: 100,
            ..LimiterConfig::default()
        });
        let t = Instant::now();
        for _ in 0..5 {
            l.record_failure(Some("victim"), ip(1), t);
        }
        assert!(l.is_locked(Some("victim"), ip(9), t));
        for i in 0..1000u32 {
            l.record_failure(Some(&format!("spray{i}")), ip(1), t);
            assert!(l.len() <= 100);
        }
        // The oldest counter was evicted.
        assert!(!l.is_locked(Some("victim"), ip(9), t));
        // The source, touched on every failure, stayed.
        assert!(l.is_locked(None, ip(1), t));
    }
}
