//! Brute-force protection that cannot be turned against the users it protects:
//! failure counters per (account, source address), per source address and per
//! account, with exponential backoff, plus a per-address registration budget, in
//! bounded memory.
//!
//! Rules (numbers in [`LimiterConfig::default`], also in README.md):
//! - Every key counts failed logins. After its `*_free_failures` failures the key is
//!   locked for `base_lockout`; every further failure doubles the lock, up to
//!   `max_lockout`. Keys:
//!   - **(account, source)**: one address guessing one account. Few free failures:
//!     a user who mistypes a few times waits seconds, a guesser waits longer and longer.
//!   - **source**: one address guessing across accounts. More free failures, since
//!     many honest users may share an address behind a NAT.
//!   - **account**: guesses at one account from any number of addresses. Its lock
//!     applies only to sources that have failed logins of their own on record. A
//!     correct password or key from an address with no failures always gets in, so
//!     an attacker cannot lock a user out by guessing at their account (the shape
//!     of OpenSSH's per-source penalties). The price: each fresh address gets one
//!     guess past the account lock before its own failure subjects it to the lock.
//! - A login whose applicable key is locked is refused without checking the
//!   credentials (the verifier still does a dummy Argon2id run, so the answer looks
//!   like a wrong password) and is not counted: it teaches the attacker nothing, and
//!   the lock expires on schedule.
//! - **The refusal is the brake.** Every refusal is answered when the lock it left
//!   (or found) ends, at most `max_answer_delay` later; [`Limiter::record_failure`]
//!   and [`Limiter::locked_until_for`] say when. The driver holds the answer back
//!   with a connection timer (`Connection::refuse_login_at`), never by blocking a
//!   thread, so a guesser who waits for each answer is slowed to the lock schedule,
//!   and one who does not wait gets unchecked refusals.
//! - A successful login forgets the account's counter and the (account, source)
//!   counter, not the source's: otherwise an attacker holding one valid account
//!   could launder guesses at other accounts by logging into their own between them.
//!   A key with no failure for `forget_after` is forgotten.
//! - Unknown account names are counted exactly like known ones, so locking does not
//!   reveal whether an account exists.
//! - Registrations: each source may attempt `registrations_per_source` registrations
//!   per `registration_window` (a fixed window starting at its first attempt).
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
    /// Failures one source may have against one account before that pair is locked.
    pub pair_free_failures: u32,
    /// Failures a source address may have (over all accounts) before it is locked.
    pub source_free_failures: u32,
    /// Failures an account name may have (over all sources) before it is locked
    /// against sources that have failures of their own.
    pub account_free_failures: u32,
    /// The first lock; each further failure doubles it.
    pub base_lockout: Duration,
    /// The longest lock.
    pub max_lockout: Duration,
    /// The longest a refusal's answer is held back (the rest of a longer lock is
    /// enforced by refusing unchecked). Keep it well under the client's patience and
    /// the server's handshake timeout.
    pub max_answer_delay: Duration,
    /// Registrations one source address may attempt per `registration_window`
    /// (0: no limit).
    pub registrations_per_source: u32,
    /// The window of `registrations_per_source`.
    pub registration_window: Duration,
    /// A key with no failure for this long is forgotten.
    pub forget_after: Duration,
    /// The most keys held at once.
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    /// Locks after 3 failures per (account, source), 10 per source and 10 per account;
    /// locks start at 1 s and double up to 15 min; answers are held back up to 5 s;
    /// 5 registrations per address per hour; keys forgotten after an hour of quiet;
    /// at most 65 536 keys (a few MiB).
    fn default() -> Self {
        LimiterConfig {
            pair_free_failures: 3,
            source_free_failures: 10,
            account_free_failures: 10,
            base_lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(15 * 60),
            max_answer_delay: Duration::from_secs(5),
            registrations_per_source: 5,
            registration_window: Duration::from_secs(60 * 60),
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
    /// One source address against one account name.
    Pair(String, IpAddr),
    /// Registrations attempted from a source address.
    Registrations(IpAddr),
}

#[derive(Debug, Clone)]
struct Entry {
    /// Failures (or, for registrations, attempts in the current window).
    failures: u32,
    /// The last failure (or the start of the registration window).
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
    /// A limiter with these settings (`max_entries` is raised to at least 3).
    pub fn new(mut config: LimiterConfig) -> Limiter {
        config.max_entries = config.max_entries.max(3);
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

    /// Changes how many registrations one source may attempt per window (0: no
    /// limit); counts already taken stay.
    pub fn set_registrations_per_source(&mut self, n: u32) {
        self.config.registrations_per_source = n;
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

    /// Whether `source` has failed logins on record (within `forget_after`).
    fn source_has_failures(&self, source: IpAddr, now: Instant) -> bool {
        self.entries
            .get(&LimitKey::Source(source))
            .is_some_and(|e| {
                e.failures > 0
                    && now.saturating_duration_since(e.last_failure) < self.config.forget_after
            })
    }

    /// Until when a login for `account` from `source` must be refused without checking
    /// its credentials, or `None` if it may be checked now. `account` is `None` when
    /// the name was not even valid. The account's own lock counts only if `source`
    /// has failures on record (see the module documentation).
    pub(crate) fn locked_until_for(
        &self,
        account: Option<&str>,
        source: IpAddr,
        now: Instant,
    ) -> Option<Instant> {
        let mut until = self.locked_until(&LimitKey::Source(source), now);
        if let Some(a) = account {
            let pair = self.locked_until(&LimitKey::Pair(a.to_owned(), source), now);
            until = until.max(pair);
            if self.source_has_failures(source, now) {
                until = until.max(self.locked_until(&LimitKey::Account(a.to_owned()), now));
            }
        }
        until
    }

    /// True if a login for `account` from `source` must be refused at `now` without
    /// checking its credentials (see [`Limiter::locked_until_for`]).
    pub fn is_locked(&self, account: Option<&str>, source: IpAddr, now: Instant) -> bool {
        self.locked_until_for(account, source, now).is_some()
    }

    /// When to send a refusal decided at `now` whose lock lasts until `until`:
    /// at the end of the lock, at most `max_answer_delay` from now.
    pub fn answer_at(&self, until: Option<Instant>, now: Instant) -> Instant {
        until.map_or(now, |u| u.min(now + self.config.max_answer_delay))
    }

    /// Counts a failed login for `account` (if the name was valid) from `source`.
    /// Returns when its refusal should be answered ([`Limiter::answer_at`] of the
    /// locks now in force for this account and source).
    pub fn record_failure(
        &mut self,
        account: Option<&str>,
        source: IpAddr,
        now: Instant,
    ) -> Instant {
        if let Some(a) = account {
            let free = self.config.account_free_failures;
            self.fail(LimitKey::Account(a.to_owned()), free, now);
            let free = self.config.pair_free_failures;
            self.fail(LimitKey::Pair(a.to_owned(), source), free, now);
        }
        let free = self.config.source_free_failures;
        self.fail(LimitKey::Source(source), free, now);
        self.answer_at(self.locked_until_for(account, source, now), now)
    }

    /// A successful login: forgets the account's counter and that of the pair (not
    /// the source's; see the module documentation).
    pub(crate) fn record_success(&mut self, account: &str, source: IpAddr) {
        self.remove(&LimitKey::Account(account.to_owned()));
        self.remove(&LimitKey::Pair(account.to_owned(), source));
    }

    /// Counts a registration attempt from `source`; false if the source has used up
    /// its `registrations_per_source` for the current window (the attempt is then not
    /// counted).
    pub(crate) fn allow_registration(&mut self, source: IpAddr, now: Instant) -> bool {
        let per = self.config.registrations_per_source;
        if per == 0 {
            return true;
        }
        let key = LimitKey::Registrations(source);
        let window = self.config.registration_window;
        let fresh = self
            .entries
            .get(&key)
            .is_none_or(|e| now.saturating_duration_since(e.last_failure) >= window);
        if !fresh && self.entries.get(&key).is_some_and(|e| e.failures >= per) {
            return false;
        }
        let seq = self.bump_seq();
        match self.entries.get_mut(&key) {
            Some(e) => {
                self.order.remove(&e.seq);
                if fresh {
                    e.failures = 0;
                    e.last_failure = now;
                }
                e.failures += 1;
                e.seq = seq;
            }
            None => {
                self.insert_first_failure(key.clone(), now, seq);
            }
        }
        self.order.insert(seq, key);
        true
    }

    /// A new entry for `key` with one failure at `now`, evicting one if full.
    fn insert_first_failure(&mut self, key: LimitKey, now: Instant, seq: u64) {
        self.evict_for_one(now);
        let e = Entry {
            failures: 1,
            last_failure: now,
            locked_until: None,
            seq,
        };
        self.entries.insert(key, e);
    }

    fn remove(&mut self, key: &LimitKey) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.seq);
        }
    }

    fn bump_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The lock after `failures` failures when `free` are allowed.
    fn lockout(&self, failures: u32, free: u32) -> Option<Duration> {
        let over = failures.checked_sub(free.max(1))?;
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
        let seq = self.bump_seq();
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
                self.insert_first_failure(key.clone(), now, seq);
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
            let quiet = match key {
                LimitKey::Registrations(_) => self.config.registration_window,
                _ => self.config.forget_after,
            };
            let stale = self.entries.get(key).is_none_or(|e| {
                now.saturating_duration_since(e.last_failure) >= quiet
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
    use crate::auth::test_ip as ip;

    /// A limiter with the default configuration adjusted by `tune`, and a start time.
    fn limiter(tune: impl FnOnce(&mut LimiterConfig)) -> (Limiter, Instant) {
        let mut cfg = LimiterConfig::default();
        tune(&mut cfg);
        (Limiter::new(cfg), Instant::now())
    }

    /// `n` failed logins of `account` from `source` at `now`.
    fn fail(l: &mut Limiter, n: usize, account: &str, source: IpAddr, now: Instant) {
        for _ in 0..n {
            l.record_failure(Some(account), source, now);
        }
    }

    #[test]
    fn pair_locks_after_free_failures_and_doubles() {
        let (mut l, t) = limiter(|_| {});
        for _ in 0..2 {
            assert_eq!(
                l.record_failure(Some("alice"), ip(1), t),
                t,
                "free: answered at once"
            );
            assert!(!l.is_locked(Some("alice"), ip(1), t));
        }
        let answer = l.record_failure(Some("alice"), ip(1), t);
        assert_eq!(
            answer - t,
            Duration::from_secs(1),
            "answered when the lock ends"
        );
        assert!(l.is_locked(Some("alice"), ip(1), t));
        // Another source is not locked out of the account...
        assert!(!l.is_locked(Some("alice"), ip(2), t));
        // ...and the source itself may still try other accounts.
        assert!(!l.is_locked(Some("bob"), ip(1), t));
        let t = t + Duration::from_secs(1);
        assert!(!l.is_locked(Some("alice"), ip(1), t));
        let answer = l.record_failure(Some("alice"), ip(1), t);
        assert_eq!(answer - t, Duration::from_secs(2));
    }

    #[test]
    fn locks_are_capped_and_answers_held_back_at_most_max_answer_delay() {
        let (mut l, mut t) = limiter(|_| {});
        for _ in 0..100 {
            let answer = l.record_failure(Some("alice"), ip(1), t);
            assert!(answer - t <= Duration::from_secs(5));
            t += Duration::from_millis(10);
        }
        let key = LimitKey::Pair("alice".into(), ip(1));
        let until = l.locked_until(&key, t).unwrap();
        assert!(until - t <= Duration::from_secs(15 * 60));
        assert!(until - t > Duration::from_secs(14 * 60));
        assert_eq!(
            l.answer_at(Some(until), t) - t,
            Duration::from_secs(5),
            "answer held back at most max_answer_delay"
        );
    }

    #[test]
    fn an_account_lock_spares_sources_without_failures() {
        let (mut l, t) = limiter(|_| {});
        // Ten attackers, one guess each: the account is locked...
        for n in 10..20 {
            l.record_failure(Some("alice"), ip(n), t);
        }
        assert!(l
            .locked_until(&LimitKey::Account("alice".into()), t)
            .is_some());
        // ...for them,
        assert!(l.is_locked(Some("alice"), ip(10), t));
        // but not for an address with no failures: the real user gets in.
        assert!(!l.is_locked(Some("alice"), ip(1), t));
        // Once that address fails, the lock applies to it as well.
        l.record_failure(Some("bob"), ip(1), t);
        assert!(l.is_locked(Some("alice"), ip(1), t));
    }

    #[test]
    fn success_resets_account_and_pair_but_not_source() {
        let (mut l, t) = limiter(|_| {});
        fail(&mut l, 10, "alice", ip(1), t);
        assert!(l.is_locked(None, ip(1), t));
        l.record_success("alice", ip(1));
        assert!(l
            .locked_until(&LimitKey::Account("alice".into()), t)
            .is_none());
        assert!(l
            .locked_until(&LimitKey::Pair("alice".into(), ip(1)), t)
            .is_none());
        assert!(l.is_locked(Some("alice"), ip(1), t), "source stays locked");
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let (mut l, t) = limiter(|_| {});
        fail(&mut l, 2, "alice", ip(1), t);
        let later = t + l.config().forget_after;
        l.record_failure(Some("alice"), ip(1), later);
        assert!(
            !l.is_locked(Some("alice"), ip(1), later),
            "counter restarted"
        );
    }

    #[test]
    fn registrations_per_source_per_window() {
        let (mut l, t) = limiter(|c| c.registrations_per_source = 3);
        for _ in 0..3 {
            assert!(l.allow_registration(ip(1), t));
        }
        assert!(!l.allow_registration(ip(1), t));
        assert!(l.allow_registration(ip(2), t), "per address");
        let later = t + l.config().registration_window;
        assert!(l.allow_registration(ip(1), later), "a new window");
    }

    #[test]
    fn memory_is_bounded_and_evicts_oldest() {
        let (mut l, t) = limiter(|c| c.max_entries = 100);
        fail(&mut l, 3, "victim", ip(1), t);
        assert!(l.is_locked(Some("victim"), ip(1), t));
        for i in 0..1000u32 {
            l.record_failure(Some(&format!("spray{i}")), ip(2), t);
            assert!(l.len() <= 100);
        }
        // The oldest counters were evicted.
        assert!(!l.is_locked(Some("victim"), ip(1), t));
        // The source, touched on every failure, stayed.
        assert!(l.is_locked(None, ip(2), t));
    }
}
