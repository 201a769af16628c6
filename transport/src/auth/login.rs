//! [`LoginVerifier`]: the server's answer to a [`LoginRequest`].
//!
//! **This runs on the worker pool, never on the event-loop thread.** It is slow by
//! design: a password check is one Argon2id run (tens of milliseconds), a registration
//! is a hash plus a synced database commit. The driver hands the request to a worker,
//! and the loop answers the connection with `accept_login` or `refuse_login` when the
//! [`Verdict`] comes back through the waker (docs/ARCHITECTURE.md, "The event loop").
//!
//! SPEC.md §4.8: "Every kind of failure (unknown user, wrong password, locked or
//! disabled account, refused registration) uses this one code; the reason phrase is the
//! same for unknown users and wrong passwords."
//!
//! Logins (password and public key):
//! - Unknown user, invalid name, wrong password, account without a password, disabled
//!   account, locked account or source: all answer [`REFUSED`] ("login refused").
//!   Every password attempt costs exactly one Argon2id run: a real one against the
//!   account's hash, or [`dummy_verify`] when there is none to check (unknown user, no
//!   password, locked). So neither the answer nor its timing tells them apart.
//! - A public-key login (whose transcript signature the handshake already verified) is
//!   accepted if the key's fingerprint is among the account's authorised keys. It has no
//!   password to hash, so all of its refusals are equally fast. The keys come from the
//!   [`KeyCache`] when it has the account and authorises the key (no store read; see
//!   its documentation for how long a change made elsewhere takes to apply); every
//!   refusal is decided on a fresh read of the store.
//! - A successful login writes `last_login` at most once per account and second.
//! - Every refused login counts against the account name (known or not), the source
//!   address and the pair in the [`Limiter`], and its answer is held back until the
//!   lock it leaves ends ([`Decision::answer_at`], at most `max_answer_delay`): the
//!   driver answers with `Connection::refuse_login_at`, so no thread waits.
//!
//! Registration (only when `allow_register`; otherwise [`REGISTRATION_CLOSED`]):
//! - A bad name or a weak password is refused with the specific reason (the user can
//!   fix it; nothing about other accounts is revealed).
//! - A taken name is refused with [`NAME_TAKEN`]. This necessarily reveals that the
//!   name exists: a registration that silently failed on a taken name would be worse
//!   for honest users and still observable (the account never works). We limit the
//!   oracle instead: registration is off by default, a taken-name answer counts as a
//!   failure against the source address (so one address can probe only
//!   `source_free_failures` names before backing off), and a locked source gets
//!   [`REFUSED`]. Nothing beyond "taken" is revealed (not whether the account is
//!   disabled, has a password, or has keys).
//! - Each address may attempt `registrations_per_source` registrations (that reach the
//!   account store) per `registration_window`; beyond that it gets
//!   [`TOO_MANY_REGISTRATIONS`].
//! - On success the account exists durably (committed with `synchronous=FULL`) before
//!   [`Verdict::Accept`] is returned, and the client is logged in as it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use quill_crypto::password::{dummy_verify, verify_password};

use super::accounts::{check_new_password, normalize_name, AccountStore, StoreError};
use super::key_cache::{KeyCache, KeyLookup};
use super::limiter::Limiter;
use super::sessions::SessionCaps;
use crate::proto::{LoginMethod, LoginRequest};

/// The reason given for every failed login.
pub const REFUSED: &str = "login refused";
/// The reason given for a registration when the server does not allow it.
pub const REGISTRATION_CLOSED: &str = "registration is closed";
/// The reason given when the account store cannot answer (a lost database): the
/// same for every name, and counted against nobody.
pub const STORE_UNAVAILABLE: &str =
    "the server's account database is unavailable; try again in a moment";
/// The reason given for a registration whose name is taken.
pub const NAME_TAKEN: &str = "that account name is taken";
/// The reason given when an address has used up its registrations for now.
pub const TOO_MANY_REGISTRATIONS: &str =
    "too many registrations from your address; try again later";

/// The answer to a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Log the client in as `account` (normalised name) and show it `message`.
    Accept {
        /// The account the client is now logged in as.
        account: String,
        /// A greeting for the client.
        message: String,
    },
    /// Close with LOGIN_REFUSED and this reason phrase.
    Refuse {
        /// The reason phrase (see the module documentation for which ones exist).
        reason: String,
    },
}

impl Verdict {
    fn refuse(reason: &str) -> Verdict {
        Verdict::Refuse {
            reason: reason.to_owned(),
        }
    }
}

/// A [`Verdict`] and when to deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The answer.
    pub verdict: Verdict,
    /// When to send it: the decision time for acceptances and most refusals; for a
    /// refused login, the end of the lock it left or found (bounded by the limiter's
    /// `max_answer_delay`). Hold the answer back with `Connection::refuse_login_at`.
    pub answer_at: Instant,
    /// For the server's log only, never for the client: how the login was accepted
    /// (`"password"`, `"public key"`, `"registration"`) or why it was refused as the
    /// server knows it (`"wrong password"`, `"unknown account"`, ...), where the
    /// client sees one [`REFUSED`] for all of them (SPEC.md §4.8).
    pub log_reason: &'static str,
}

/// A successful login's bookkeeping write, made after the answer
/// ([`LoginVerifier::decide_deferred`], [`LoginVerifier::record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The account that logged in.
    pub account: String,
    /// When (Unix seconds): its new `last_login`.
    pub unix_now: u64,
}

impl Decision {
    fn now(verdict: Verdict, now: Instant, log_reason: &'static str) -> Decision {
        Decision {
            verdict,
            answer_at: now,
            log_reason,
        }
    }
}

/// Why a login with `account` (`None`: unknown, or the name is invalid) failed, for
/// the server's log; `credential_ok` says whether the password or key matched.
fn refusal_reason(
    name_valid: bool,
    account: Option<&super::accounts::Account>,
    locked: bool,
    credential_ok: bool,
    wrong_credential: &'static str,
) -> &'static str {
    match account {
        _ if !name_valid => "invalid account name",
        None => "unknown account",
        Some(_) if locked => "locked after repeated failures",
        Some(a) if a.disabled => "account disabled",
        Some(_) if !credential_ok => wrong_credential,
        Some(_) => "refused",
    }
}

/// Decides logins against an [`AccountStore`], with brute-force limits. See the
/// [module documentation](self); call [`verify`](Self::verify) on the worker pool.
pub struct LoginVerifier {
    /// Where the accounts are.
    pub store: Arc<dyn AccountStore>,
    /// Failure counters and lockouts.
    pub limiter: Mutex<Limiter>,
    /// Whether `register` logins may create accounts (off by default in the server).
    pub allow_register: bool,
    /// Caps on sessions per account and per address (applied by the driver).
    pub sessions: SessionCaps,
    /// Authorised keys of recent accounts, so that a public-key login does not read
    /// the store each time ([`KeyCache`]: how it is invalidated).
    pub keys: KeyCache,
}

impl std::fmt::Debug for LoginVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginVerifier")
            .field("allow_register", &self.allow_register)
            .finish_non_exhaustive()
    }
}

impl LoginVerifier {
    /// A verifier over `store` with the default [`Limiter`] and [`SessionCaps`].
    pub fn new(store: Arc<dyn AccountStore>, allow_register: bool) -> LoginVerifier {
        LoginVerifier {
            store,
            limiter: Mutex::new(Limiter::default()),
            allow_register,
            sessions: SessionCaps::default(),
            keys: KeyCache::default(),
        }
    }

    fn limiter(&self) -> MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides `req` from `source` (the verdict of [`LoginVerifier::decide`]).
    ///
    /// Blocks for an Argon2id run and database I/O: call it on the worker pool.
    pub fn verify(
        &self,
        req: &LoginRequest,
        source: IpAddr,
        now: Instant,
        unix_now: u64,
    ) -> Verdict {
        self.decide(req, source, now, unix_now).verdict
    }

    /// Decides `req` from `source`, and when to answer. `now` drives the limiter;
    /// `unix_now` is recorded as the account's last login (and creation time is the
    /// store's clock).
    ///
    /// Blocks for an Argon2id run and database I/O: call it on the worker pool.
    pub fn decide(
        &self,
        req: &LoginRequest,
        source: IpAddr,
        now: Instant,
        unix_now: u64,
    ) -> Decision {
        let (decision, record) = self.decide_deferred(req, source, now, unix_now);
        if let Some(r) = record {
            self.record(r);
        }
        decision
    }

    /// [`decide`](Self::decide) without writing a successful login's `last_login`:
    /// that write is returned, to be made with [`record`](Self::record) after the
    /// answer has gone out (the driver does so on the worker pool), so that the
    /// client does not wait for it.
    ///
    /// Blocks for an Argon2id run and database reads: call it on the worker pool.
    pub fn decide_deferred(
        &self,
        req: &LoginRequest,
        source: IpAddr,
        now: Instant,
        unix_now: u64,
    ) -> (Decision, Option<LoginRecord>) {
        let mut record = None;
        let decision = self.decide_inner(req, source, now, unix_now, &mut record);
        (decision, record)
    }

    /// Decides a public-key login from memory alone where it can: the [`KeyCache`]
    /// authorises the key with no store read due
    /// ([`KeyCache::lookup_cached`]) and no lock applies. The same decision as
    /// [`decide_deferred`](Self::decide_deferred) would make then. `None` for
    /// everything else (other methods, a cache miss, a re-check due, a lock): decide
    /// it with [`decide_deferred`](Self::decide_deferred) on the worker pool.
    ///
    /// Does no I/O (memory and two short locks), so the event-loop thread may call it;
    /// the returned [`LoginRecord`] is still a write for the worker pool.
    pub fn decide_cached(
        &self,
        req: &LoginRequest,
        source: IpAddr,
        now: Instant,
        unix_now: u64,
    ) -> Option<(Decision, Option<LoginRecord>)> {
        let LoginMethod::PublicKey(key) = &req.method else {
            return None;
        };
        let name = normalize_name(&req.user).ok()?;
        let cached =
            self.keys
                .lookup_cached(self.store.as_ref(), &name, &key.fingerprint(), now)?;
        if self
            .limiter()
            .locked_until_for(Some(&name), source, now)
            .is_some()
        {
            return None;
        }
        let mut record = None;
        let verdict = self.succeed(&cached.name, source, unix_now, &mut record);
        Some((Decision::now(verdict, now, "public key"), record))
    }

    /// Writes a successful login's bookkeeping (`last_login`, and the failure
    /// counter back to zero). A failure is logged, not returned: the login stands.
    ///
    /// Blocks for a database write: call it on the worker pool.
    pub fn record(&self, r: LoginRecord) {
        if let Err(e) = self.store.record_login(&r.account, r.unix_now) {
            tracing::warn!(account = r.account, "could not record login: {e}");
        }
    }

    fn decide_inner(
        &self,
        req: &LoginRequest,
        source: IpAddr,
        now: Instant,
        unix_now: u64,
        record: &mut Option<LoginRecord>,
    ) -> Decision {
        match &req.method {
            LoginMethod::Password(pw) => {
                self.password(&req.user, pw, source, now, unix_now, record)
            }
            LoginMethod::PublicKey(key) => {
                let name = normalize_name(&req.user).ok();
                let locked = self
                    .limiter()
                    .locked_until_for(name.as_deref(), source, now);
                let fp = key.fingerprint();
                let account = match self.lookup_for_key(name.as_deref(), &fp, now) {
                    Ok(KeyLookup::Authorised(cached)) if locked.is_none() => {
                        let verdict = self.succeed(&cached.name, source, unix_now, record);
                        return Decision::now(verdict, now, "public key");
                    }
                    // Locked: decided below on the store's answer, as without a cache.
                    Ok(KeyLookup::Authorised(cached)) => match self.lookup(Some(&cached.name)) {
                        Ok(a) => a,
                        Err(unavailable) => {
                            return Decision::now(unavailable, now, "account store unavailable")
                        }
                    },
                    Ok(KeyLookup::Read(a)) => a,
                    Err(unavailable) => {
                        return Decision::now(unavailable, now, "account store unavailable")
                    }
                };
                let authorised = account
                    .as_ref()
                    .is_some_and(|a| !a.disabled && a.keys.iter().any(|k| k.fingerprint() == fp));
                if authorised && locked.is_none() {
                    let name = name.unwrap_or_default();
                    let verdict = self.succeed(&name, source, unix_now, record);
                    Decision::now(verdict, now, "public key")
                } else {
                    let why = refusal_reason(
                        name.is_some(),
                        account.as_ref(),
                        locked.is_some(),
                        account
                            .as_ref()
                            .is_some_and(|a| a.keys.iter().any(|k| k.fingerprint() == fp)),
                        "key not authorised for this account",
                    );
                    self.fail(name.as_deref(), account.is_some(), locked, source, now, why)
                }
            }
            LoginMethod::Register { password, key } => {
                let (verdict, why) = self.register(
                    &req.user,
                    password,
                    key.as_ref(),
                    source,
                    (now, unix_now),
                    record,
                );
                Decision::now(verdict, now, why)
            }
        }
    }

    /// The account, if `name` is valid and names one. A store that cannot answer (a
    /// lost database, a disk error) gives the refusal [`STORE_UNAVAILABLE`] to send
    /// instead: it says nothing about the account, and counts against nobody's
    /// failure budget.
    fn lookup(&self, name: Option<&str>) -> Result<Option<super::accounts::Account>, Verdict> {
        let Some(name) = name else {
            return Ok(None);
        };
        self.store.get(name).map_err(|e| {
            tracing::error!("account store lookup failed: {e}");
            Verdict::refuse(STORE_UNAVAILABLE)
        })
    }

    /// The account for a public-key login with the key `fingerprint`, through the
    /// [`KeyCache`]; errors as [`lookup`](Self::lookup).
    fn lookup_for_key(
        &self,
        name: Option<&str>,
        fingerprint: &str,
        now: Instant,
    ) -> Result<KeyLookup, Verdict> {
        let Some(name) = name else {
            return Ok(KeyLookup::Read(None));
        };
        self.keys
            .lookup(self.store.as_ref(), name, fingerprint, now)
            .map_err(|e| {
                tracing::error!("account store lookup failed: {e}");
                Verdict::refuse(STORE_UNAVAILABLE)
            })
    }

    fn password(
        &self,
        user: &str,
        pw: &[u8],
        source: IpAddr,
        now: Instant,
        unix_now: u64,
        record: &mut Option<LoginRecord>,
    ) -> Decision {
        let name = normalize_name(user).ok();
        let locked = self
            .limiter()
            .locked_until_for(name.as_deref(), source, now);
        let account = match self.lookup(name.as_deref()) {
            Ok(a) => a,
            Err(unavailable) => {
                dummy_verify(pw);
                return Decision::now(unavailable, now, "account store unavailable");
            }
        };
        // Exactly one Argon2id run on every path.
        let matched = match account.as_ref().and_then(|a| a.password_phc.as_deref()) {
            Some(phc) if locked.is_none() => verify_password(phc, pw),
            _ => {
                dummy_verify(pw);
                false
            }
        };
        let ok = matched && account.as_ref().is_some_and(|a| !a.disabled);
        match (ok, name) {
            (true, Some(name)) => {
                let verdict = self.succeed(&name, source, unix_now, record);
                Decision::now(verdict, now, "password")
            }
            (_, name) => {
                let wrong = match account.as_ref().and_then(|a| a.password_phc.as_deref()) {
                    None => "the account has no password",
                    Some(_) => "wrong password",
                };
                let why = refusal_reason(
                    name.is_some(),
                    account.as_ref(),
                    locked.is_some(),
                    matched,
                    wrong,
                );
                self.fail(name.as_deref(), account.is_some(), locked, source, now, why)
            }
        }
    }

    /// Accepts `name`; its bookkeeping write goes to `record` (`last_login` is in
    /// seconds: one write per account and second is enough).
    fn succeed(
        &self,
        name: &str,
        source: IpAddr,
        unix_now: u64,
        record: &mut Option<LoginRecord>,
    ) -> Verdict {
        self.limiter().record_success(name, source);
        if self.keys.needs_record(name, unix_now) {
            *record = Some(LoginRecord {
                account: name.to_owned(),
                unix_now,
            });
        }
        Verdict::Accept {
            account: name.to_owned(),
            message: format!("welcome, {name}"),
        }
    }

    /// Refuses, answering when the lock ends. An attempt made while locked (`locked`
    /// is the lock's end) is not counted (see the limiter's rules).
    fn fail(
        &self,
        name: Option<&str>,
        known: bool,
        locked: Option<Instant>,
        source: IpAddr,
        now: Instant,
        log_reason: &'static str,
    ) -> Decision {
        let refused = Verdict::refuse(REFUSED);
        if locked.is_some() {
            let answer_at = self.limiter().answer_at(locked, now);
            return Decision {
                verdict: refused,
                answer_at,
                log_reason,
            };
        }
        let answer_at = self.limiter().record_failure(name, source, now);
        if let Some(name) = name {
            self.keys.note_failure(name);
            // Same statement for known and unknown names (it updates no row for the
            // latter); it runs on the unsynced bookkeeping connection either way.
            match self.store.record_failure(name) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) if known => tracing::warn!(account = name, "could not count failure: {e}"),
                Err(_) => {}
            }
        }
        Decision {
            verdict: refused,
            answer_at,
            log_reason,
        }
    }

    fn register(
        &self,
        user: &str,
        password: &[u8],
        key: Option<&quill_crypto::hostkey::PublicKey>,
        source: IpAddr,
        (now, unix_now): (Instant, u64),
        record: &mut Option<LoginRecord>,
    ) -> (Verdict, &'static str) {
        if !self.allow_register {
            return (Verdict::refuse(REGISTRATION_CLOSED), "registration closed");
        }
        if self.limiter().is_locked(None, source, now) {
            return (
                Verdict::refuse(REFUSED),
                "registration from a locked address",
            );
        }
        let name = match normalize_name(user) {
            Ok(n) => n,
            Err(e) => return (Verdict::refuse(&e.to_string()), "invalid account name"),
        };
        if let Err(e) = check_new_password(&name, password) {
            return (Verdict::refuse(&e.to_string()), "weak password");
        }
        if !self.limiter().allow_registration(source, now) {
            return (
                Verdict::refuse(TOO_MANY_REGISTRATIONS),
                "too many registrations from the address",
            );
        }
        let keys: Vec<_> = key.into_iter().cloned().collect();
        match self.store.add_user(&name, Some(password), &keys) {
            // add_user returns after the commit: the account is durable.
            Ok(account) => {
                self.keys.forget(&account.name);
                (
                    self.succeed(&account.name, source, unix_now, record),
                    "registration",
                )
            }
            Err(StoreError::Exists(_)) => {
                // Count it against the source only: probing names is what we limit.
                self.limiter().record_failure(None, source, now);
                (Verdict::refuse(NAME_TAKEN), "name taken")
            }
            Err(e @ StoreError::InvalidName(_)) => {
                (Verdict::refuse(&e.to_string()), "invalid account name")
            }
            Err(e @ StoreError::WeakPassword(_)) => {
                (Verdict::refuse(&e.to_string()), "weak password")
            }
            Err(e) => {
                tracing::error!(account = name, "registration failed: {e}");
                (
                    Verdict::refuse(match e {
                        StoreError::Hash(_) => "registration failed on the server",
                        _ => STORE_UNAVAILABLE,
                    }),
                    "account store error",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::accounts::Account;
    use quill_crypto::hostkey::{HostKeyPair, PublicKey};
    use quill_crypto::password::hash_password;
    use quill_crypto::random::SeededRandom;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use zeroize::Zeroizing;

    /// An in-memory store, to show the trait is enough for an embedder.
    #[derive(Default)]
    struct MemStore(Mutex<HashMap<String, Account>>);

    impl AccountStore for MemStore {
        fn add_user(
            &self,
            name: &str,
            password: Option<&[u8]>,
            keys: &[PublicKey],
        ) -> Result<Account, StoreError> {
            let name = normalize_name(name)?;
            let mut m = self.0.lock().unwrap();
            if m.contains_key(&name) {
                return Err(StoreError::Exists(name));
            }
            let rng = SeededRandom::new([7; 32]);
            let a = Account {
                name: name.clone(),
                password_phc: password.map(|p| hash_password(p, &rng).unwrap()),
                keys: keys.to_vec(),
                created: 0,
                last_login: None,
                disabled: false,
                failed_attempts: 0,
            };
            m.insert(name, a.clone());
            Ok(a)
        }
        fn remove_user(&self, name: &str) -> Result<(), StoreError> {
            self.0.lock().unwrap().remove(name);
            Ok(())
        }
        fn set_disabled(&self, name: &str, d: bool) -> Result<(), StoreError> {
            self.with(name, |a| a.disabled = d)
        }
        fn set_password(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        fn add_key(&self, name: &str, key: &PublicKey) -> Result<(), StoreError> {
            self.with(name, |a| a.keys.push(key.clone()))
        }
        fn remove_key(&self, name: &str, fp: &str) -> Result<(), StoreError> {
            self.with(name, |a| a.keys.retain(|k| k.fingerprint() != fp))
        }
        fn list(&self) -> Result<Vec<Account>, StoreError> {
            Ok(self.0.lock().unwrap().values().cloned().collect())
        }
        fn get(&self, name: &str) -> Result<Option<Account>, StoreError> {
            Ok(self.0.lock().unwrap().get(name).cloned())
        }
        fn record_login(&self, name: &str, now: u64) -> Result<(), StoreError> {
            self.with(name, |a| {
                a.last_login = Some(now);
                a.failed_attempts = 0
            })
        }
        fn record_failure(&self, name: &str) -> Result<(), StoreError> {
            self.with(name, |a| a.failed_attempts += 1)
        }
        fn reset_failures(&self, name: &str) -> Result<(), StoreError> {
            self.with(name, |a| a.failed_attempts = 0)
        }
    }

    impl MemStore {
        fn with(&self, name: &str, f: impl FnOnce(&mut Account)) -> Result<(), StoreError> {
            match self.0.lock().unwrap().get_mut(name) {
                Some(a) => {
                    f(a);
                    Ok(())
                }
                None => Err(StoreError::NotFound(name.to_owned())),
            }
        }
    }

    fn req(user: &str, method: LoginMethod) -> LoginRequest {
        LoginRequest {
            user: user.to_owned(),
            method,
        }
    }

    fn pw(p: &str) -> LoginMethod {
        LoginMethod::Password(Zeroizing::new(p.as_bytes().to_vec()))
    }

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn works_over_an_embedder_store() {
        let store = Arc::new(MemStore::default());
        let v = LoginVerifier::new(store.clone(), true);
        let t = Instant::now();
        let key = HostKeyPair::from_seed(&[3; 32]).unwrap().public();
        let reg = req(
            "Carol",
            LoginMethod::Register {
                password: Zeroizing::new(b"carol's secret".to_vec()),
                key: Some(key.clone()),
            },
        );
        assert_eq!(
            v.verify(&reg, SRC, t, 100),
            Verdict::Accept {
                account: "carol".into(),
                message: "welcome, carol".into()
            }
        );
        assert_eq!(store.get("carol").unwrap().unwrap().last_login, Some(100));
        assert!(matches!(
            v.verify(&req("carol", pw("carol's secret")), SRC, t, 101),
            Verdict::Accept { .. }
        ));
        assert!(matches!(
            v.verify(&req("CAROL", LoginMethod::PublicKey(key)), SRC, t, 102),
            Verdict::Accept { .. }
        ));
        assert_eq!(
            v.verify(&req("carol", pw("nope nope")), SRC, t, 103),
            Verdict::Refuse {
                reason: REFUSED.into()
            }
        );
        assert_eq!(store.get("carol").unwrap().unwrap().failed_attempts, 1);
    }

    #[test]
    fn invalid_names_are_refused_like_unknown_users() {
        let v = LoginVerifier::new(Arc::new(MemStore::default()), false);
        let t = Instant::now();
        for user in ["", "-x", &"y".repeat(200), "a b"] {
            assert_eq!(
                v.verify(&req(user, pw("whatever1")), SRC, t, 0),
                Verdict::Refuse {
                    reason: REFUSED.into()
                }
            );
        }
    }

    #[test]
    fn the_log_reason_tells_failures_apart_the_answer_does_not() {
        let store = Arc::new(MemStore::default());
        let key = HostKeyPair::from_seed(&[4; 32]).unwrap().public();
        let other = HostKeyPair::from_seed(&[5; 32]).unwrap().public();
        store
            .add_user("dave", Some(b"dave's secret"), std::slice::from_ref(&key))
            .unwrap();
        store.add_user("erin", Some(b"erin's secret"), &[]).unwrap();
        store.set_disabled("erin", true).unwrap();
        let v = LoginVerifier::new(store, false);
        let t = Instant::now();
        let why = |r: LoginRequest, src: IpAddr| {
            let d = v.decide(&r, src, t, 0);
            (d.verdict, d.log_reason)
        };
        let refused = Verdict::Refuse {
            reason: REFUSED.into(),
        };
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let c = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
        // (request, source, accepted?, log reason): the client's answer is the same
        // REFUSED for every refusal.
        let cases = [
            (req("dave", pw("dave's secret")), a, true, "password"),
            (req("dave", pw("wrong one")), a, false, "wrong password"),
            (req("nobody", pw("whatever1")), b, false, "unknown account"),
            (
                req("a b", pw("whatever1")),
                b,
                false,
                "invalid account name",
            ),
            (
                req("erin", pw("erin's secret")),
                c,
                false,
                "account disabled",
            ),
            (
                req("dave", LoginMethod::PublicKey(key)),
                c,
                true,
                "public key",
            ),
            (
                req("dave", LoginMethod::PublicKey(other)),
                c,
                false,
                "key not authorised for this account",
            ),
        ];
        for (r, src, accepted, reason) in cases {
            let user = r.user.clone();
            let (verdict, log_reason) = why(r, src);
            assert_eq!(log_reason, reason, "{user}");
            assert_eq!(verdict == refused, !accepted, "{user}: {verdict:?}");
        }
        // Three failures of one address against one account lock the pair.
        why(req("dave", pw("wrong two")), a);
        why(req("dave", pw("wrong three")), a);
        assert_eq!(
            why(req("dave", pw("dave's secret")), a),
            (refused, "locked after repeated failures")
        );
        let reg = req(
            "frank",
            LoginMethod::Register {
                password: Zeroizing::new(b"frank's secret".to_vec()),
                key: None,
            },
        );
        assert_eq!(why(reg, c).1, "registration closed");
    }
}
