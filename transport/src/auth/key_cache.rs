//! [`KeyCache`]: the authorised keys of recently seen accounts, in memory, so that a
//! public-key login does not read the account store every time.
//!
//! What it holds, per account: whether it is disabled and the fingerprints of its
//! authorised keys (no password hash), plus the `last_login` second last written for
//! it. At most [`KEY_CACHE_ACCOUNTS`] accounts; when full, the oldest entry goes.
//!
//! Only acceptances come from the cache. A key the cached entry does not authorise,
//! an account not in the cache, and every refusal are read from the store, so a key
//! added with `quill user key add` works at once.
//!
//! Invalidation (what makes a cached acceptance stop):
//! - A change made through the server's own store handle (a registration, or an
//!   embedder calling the store) applies at once: the handle counts its changes in
//!   memory ([`AccountStore::local_auth_changes`]) and the cache compares that count
//!   on every lookup, with no I/O.
//! - The store's change counter ([`AccountStore::auth_version`]: SQLite triggers bump
//!   it on every change to an account's existence, password, disabled flag or keys,
//!   whichever process made it, `quill user` included) is read at most once per
//!   [`KEY_CACHE_RECHECK`] of login time; when it moved, the whole cache is emptied.
//!   So a key removed, an account disabled or removed, stops logging in within
//!   [`KEY_CACHE_RECHECK`] of the change (one second), with no read per login.
//! - [`KeyCache::clear`] empties it at once (`quill server` calls it on SIGHUP).
//! - A registration through the server forgets that name.
//! - A store without a change counter (`auth_version` answers `None`: the PostgreSQL
//!   store) is not cached: every login reads it, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::accounts::{Account, AccountStore, StoreError};

/// The most accounts the cache holds.
pub const KEY_CACHE_ACCOUNTS: usize = 4096;
/// How often, at most, the store's change counter is read: the longest a cached
/// acceptance outlives a change made to the store by another process.
pub const KEY_CACHE_RECHECK: Duration = Duration::from_secs(1);

/// What a public-key login needs to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAccount {
    /// The account's normalised name.
    pub name: String,
    /// A disabled account cannot log in.
    pub disabled: bool,
    /// Fingerprints of the authorised keys.
    pub fingerprints: Vec<String>,
}

impl CachedAccount {
    fn of(a: &Account) -> CachedAccount {
        CachedAccount {
            name: a.name.clone(),
            disabled: a.disabled,
            fingerprints: a.keys.iter().map(|k| k.fingerprint()).collect(),
        }
    }

    /// Whether the key with this fingerprint may log in as the account.
    pub fn authorises(&self, fingerprint: &str) -> bool {
        !self.disabled && self.fingerprints.iter().any(|f| f == fingerprint)
    }
}

struct Entry {
    account: CachedAccount,
    /// The `last_login` second last written for the account by this process; `None`
    /// after a failure (whose counter a successful login must reset).
    recorded: Option<u64>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Insertion order, for eviction (names may repeat after a re-insert; stale ones
    /// are skipped).
    order: VecDeque<String>,
    /// The store's change counter when the entries were read.
    version: Option<u64>,
    /// When the counter was last read.
    checked: Option<Instant>,
    /// The store handle's own change count then ([`AccountStore::local_auth_changes`]).
    local: u64,
}

/// Authorised keys per account, bounded, invalidated as the [module
/// documentation](self) says.
pub struct KeyCache {
    inner: Mutex<Inner>,
    capacity: usize,
    recheck: Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(KEY_CACHE_ACCOUNTS, KEY_CACHE_RECHECK)
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("accounts", &self.len())
            .field("capacity", &self.capacity)
            .field("recheck", &self.recheck)
            .finish()
    }
}

/// How a public-key login's account was found.
#[derive(Debug)]
pub enum KeyLookup {
    /// The cached entry authorises the key: accept without reading the store.
    Authorised(CachedAccount),
    /// Read from the store now (and cached if it exists): decide on this.
    Read(Option<Account>),
}

impl KeyCache {
    /// A cache of at most `capacity` accounts (at least 1) whose store is re-checked
    /// at most every `recheck`.
    pub fn new(capacity: usize, recheck: Duration) -> KeyCache {
        KeyCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            recheck,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accounts held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every account (SIGHUP, or anything else that must take effect at once).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.order.clear();
        inner.checked = None;
    }

    /// Forgets one account (by normalised name).
    pub fn forget(&self, name: &str) {
        self.lock().entries.remove(name);
    }

    /// The account `name` (normalised) for a login with the key `fingerprint` at
    /// `now`: from the cache when the cached entry authorises the key and the store
    /// has not changed (checked at most once per recheck interval), otherwise read
    /// from `store`.
    pub fn lookup(
        &self,
        store: &dyn AccountStore,
        name: &str,
        fingerprint: &str,
        now: Instant,
    ) -> Result<KeyLookup, StoreError> {
        let version = {
            let mut inner = self.lock();
            // Changes made through this very store handle apply at once.
            let local = store.local_auth_changes();
            let due = inner.local != local
                || inner
                    .checked
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.recheck);
            if due {
                let v = store.auth_version()?;
                if v.is_none() || v != inner.version {
                    inner.entries.clear();
                    inner.order.clear();
                }
                inner.version = v;
                inner.local = local;
                inner.checked = Some(now);
            }
            if let Some(e) = inner.entries.get(name) {
                if e.account.authorises(fingerprint) {
                    return Ok(KeyLookup::Authorised(e.account.clone()));
                }
            }
            inner.version
        };
        // Read after the counter: what is cached is at least as new as the version
        // it is filed under, so the next change still empties it.
        let account = store.get(name)?;
        if version.is_some() {
            let mut inner = self.lock();
            if inner.version == version {
                match &account {
                    Some(a) => self.insert(&mut inner, a),
                    None => {
                        inner.entries.remove(name);
                    }
                }
            }
        }
        Ok(KeyLookup::Read(account))
    }

    /// The cached account for a public-key login at `now`, from memory alone: `Some`
    /// only when no re-check of the store is due (its change counter was read less
    /// than the recheck interval before `now`, and this handle has made no change
    /// since) and the cached entry authorises the key `fingerprint`. `None` otherwise:
    /// [`lookup`](Self::lookup) decides, reading the store where it must. Does no
    /// I/O, so an event-loop thread may call it.
    pub fn lookup_cached(
        &self,
        store: &dyn AccountStore,
        name: &str,
        fingerprint: &str,
        now: Instant,
    ) -> Option<CachedAccount> {
        let inner = self.lock();
        let fresh = inner.local == store.local_auth_changes()
            && inner
                .checked
                .is_some_and(|t| now.saturating_duration_since(t) < self.recheck);
        if !fresh {
            return None;
        }
        inner
            .entries
            .get(name)
            .filter(|e| e.account.authorises(fingerprint))
            .map(|e| e.account.clone())
    }

    fn insert(&self, inner: &mut Inner, a: &Account) {
        let recorded = inner.entries.remove(&a.name).and_then(|e| e.recorded);
        while inner.entries.len() >= self.capacity {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&old);
        }
        if inner.order.len() >= self.capacity.saturating_mul(2) {
            // Re-inserted names leave stale places behind: keep the queue bounded.
            let live = &inner.entries;
            let mut order = std::mem::take(&mut inner.order);
            order.retain(|n| live.contains_key(n));
            inner.order = order;
        }
        inner.order.push_back(a.name.clone());
        inner.entries.insert(
            a.name.clone(),
            Entry {
                account: CachedAccount::of(a),
                recorded,
            },
        );
    }

    /// Whether a successful login of `name` at `unix_now` must be written to the
    /// store: not when this process already wrote that second for the account and
    /// no failure came since. Notes the write as done when it says yes.
    pub fn needs_record(&self, name: &str, unix_now: u64) -> bool {
        let mut inner = self.lock();
        match inner.entries.get_mut(name) {
            Some(e) if e.recorded == Some(unix_now) => false,
            Some(e) => {
                e.recorded = Some(unix_now);
                true
            }
            None => true,
        }
    }

    /// A failed login of `name`: its next success is written to the store (which
    /// resets the failure counter).
    pub fn note_failure(&self, name: &str) {
        if let Some(e) = self.lock().entries.get_mut(name) {
            e.recorded = None;
        }
    }
}
