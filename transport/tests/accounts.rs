//! The account store and the login verifier, against a real SQLite file.
//!
//! Argon2id costs ~20 ms per hash here, so the number of real hashes is kept to tens.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_transport::auth::{AccountStore, SqliteStore, StoreError, SCHEMA_VERSION};
use quill_transport::auth::{KeyCache, SessionCaps};
use quill_transport::auth::{Limiter, LimiterConfig};
use quill_transport::auth::{
    LoginVerifier, Verdict, NAME_TAKEN, REFUSED, REGISTRATION_CLOSED, TOO_MANY_REGISTRATIONS,
};
use quill_transport::proto::{LoginMethod, LoginRequest};
use zeroize::Zeroizing;

#[path = "support/store_suite.rs"]
mod store_suite;

/// A fresh directory per test (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quill-accounts-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("accounts.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates an empty file with mode 0600 (as an operator might before the first start).
fn create_empty_0600(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn key(seed: u8) -> PublicKey {
    HostKeyPair::from_seed(&[seed; 32]).unwrap().public()
}

fn password(user: &str, pw: &str) -> LoginRequest {
    LoginRequest {
        user: user.to_owned(),
        method: LoginMethod::Password(Zeroizing::new(pw.as_bytes().to_vec())),
    }
}

fn publickey(user: &str, key: PublicKey) -> LoginRequest {
    LoginRequest {
        user: user.to_owned(),
        method: LoginMethod::PublicKey(key),
    }
}

fn register(user: &str, pw: &str, key: Option<PublicKey>) -> LoginRequest {
    LoginRequest {
        user: user.to_owned(),
        method: LoginMethod::Register {
            password: Zeroizing::new(pw.as_bytes().to_vec()),
            key,
        },
    }
}

fn refused() -> Verdict {
    Verdict::Refuse {
        reason: REFUSED.to_owned(),
    }
}

fn accepted(v: &Verdict, account: &str) -> bool {
    matches!(v, Verdict::Accept { account: a, .. } if a == account)
}

/// Whether `user` logs in with password `pw` from [`SRC`] at `now`.
fn password_accepted(v: &LoginVerifier, user: &str, pw: &str, now: Instant) -> bool {
    accepted(&v.verify(&password(user, pw), SRC, now, 0), user)
}

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

// ---------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------

#[test]
fn store_crud_and_case_folding() {
    let dir = TempDir::new("crud");
    let store = SqliteStore::open(dir.db()).unwrap();
    store_suite::crud_and_case_folding(&store, &|| Box::new(SqliteStore::open(dir.db()).unwrap()));
    drop(store);
    SqliteStore::open(dir.db())
        .unwrap()
        .integrity_check()
        .unwrap();
}

#[test]
fn keys_add_and_remove() {
    let dir = TempDir::new("keys");
    store_suite::keys_add_and_remove(&SqliteStore::open(dir.db()).unwrap());
}

#[test]
fn key_cap() {
    let dir = TempDir::new("keycap");
    store_suite::key_cap(&SqliteStore::open(dir.db()).unwrap());
}

#[test]
fn registration_race_between_two_connections() {
    let dir = TempDir::new("race");
    store_suite::registration_race(
        Arc::new(SqliteStore::open(dir.db()).unwrap()),
        Arc::new(SqliteStore::open(dir.db()).unwrap()),
    );
}

#[test]
fn database_file_is_created_0600() {
    let dir = TempDir::new("mode");
    let store = SqliteStore::open(dir.db()).unwrap();
    store.add_user("dave", None, &[key(4)]).unwrap();
    assert_eq!(mode(&dir.db()), 0o600);
    // SQLite gives the WAL the main file's mode.
    let wal = dir.0.join("accounts.db-wal");
    assert!(wal.exists());
    assert_eq!(mode(&wal), 0o600);
}

#[test]
fn wider_permissions_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perm");
    drop(SqliteStore::open(dir.db()).unwrap());
    for bad in [0o644, 0o640, 0o604, 0o700] {
        std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(bad)).unwrap();
        let err = SqliteStore::open(dir.db()).unwrap_err();
        assert!(
            matches!(err, StoreError::InsecurePermissions { .. }),
            "{bad:o}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&dir.db().display().to_string()), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
    }
    std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(0o600)).unwrap();
    SqliteStore::open(dir.db()).unwrap();
    // Narrower is fine.
    std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(!matches!(
        SqliteStore::open(dir.db()),
        Err(StoreError::InsecurePermissions { .. })
    ));
}

#[test]
fn migrates_an_empty_file() {
    let dir = TempDir::new("empty");
    create_empty_0600(&dir.db());
    assert_eq!(std::fs::metadata(dir.db()).unwrap().len(), 0);
    let store = SqliteStore::open(dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 2);
    store.add_user("erin", None, &[key(5)]).unwrap();
    drop(store);
    // Reopening an up-to-date file migrates nothing and keeps the data.
    let store = SqliteStore::open(dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.get("erin").unwrap().is_some());
}

#[test]
fn newer_schema_is_refused() {
    let dir = TempDir::new("newer");
    drop(SqliteStore::open(dir.db()).unwrap());
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = SqliteStore::open(dir.db()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew { found, known, .. } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*known, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("schema version 3"), "{msg}");
    assert!(msg.contains(&dir.db().display().to_string()), "{msg}");
}

// ---------------------------------------------------------------------------------
// The verifier
// ---------------------------------------------------------------------------------

fn verifier(dir: &TempDir, allow_register: bool, limiter: LimiterConfig) -> LoginVerifier {
    let store = SqliteStore::open(dir.db()).unwrap();
    LoginVerifier {
        store: Arc::new(store),
        limiter: Mutex::new(Limiter::new(limiter)),
        allow_register,
        sessions: SessionCaps::default(),
        keys: KeyCache::default(),
    }
}

/// A limiter that never locks, for tests that are about something else.
fn lenient() -> LimiterConfig {
    LimiterConfig {
        pair_free_failures: 10_000,
        account_free_failures: 10_000,
        source_free_failures: 10_000,
        ..LimiterConfig::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn password_login_unknown_user_and_wrong_password_look_alike() {
    let dir = TempDir::new("pw");
    let v = verifier(&dir, false, lenient());
    v.store
        .add_user("alice", Some(b"correct horse"), &[])
        .unwrap();
    v.store.add_user("keyonly", None, &[key(9)]).unwrap();
    let now = Instant::now();

    let ok = v.verify(&password("Alice", "correct horse"), SRC, now, 1234);
    assert_eq!(
        ok,
        Verdict::Accept {
            account: "alice".into(),
            message: "welcome, alice".into()
        }
    );
    assert_eq!(
        v.store.get("alice").unwrap().unwrap().last_login,
        Some(1234)
    );

    let wrong = v.verify(&password("alice", "wrong horse"), SRC, now, 0);
    let unknown = v.verify(&password("mallory", "correct horse"), SRC, now, 0);
    let invalid = v.verify(&password("-not-a-name", "correct horse"), SRC, now, 0);
    let no_password = v.verify(&password("keyonly", "anything"), SRC, now, 0);
    assert_eq!(wrong, refused());
    assert_eq!(unknown, wrong);
    assert_eq!(invalid, wrong);
    assert_eq!(no_password, wrong);
    assert_eq!(v.store.get("alice").unwrap().unwrap().failed_attempts, 1);

    // Timing: both paths do one Argon2id run (~20 ms); the rest is a few indexed
    // queries. Samples alternate so that machine load (other tests, other processes)
    // hits both sides alike, and the medians ignore outliers. The bound of 3x is
    // generous on purpose: it catches a path that skips the hash (a ratio in the
    // hundreds) without flaking on a loaded machine.
    let (mut t_wrong, mut t_unknown) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let start = Instant::now();
        let a = v.verify(&password("alice", &format!("guess {i}")), SRC, now, 0);
        t_wrong.push(start.elapsed());
        let start = Instant::now();
        let b = v.verify(&password(&format!("ghost{i}"), "guess"), SRC, now, 0);
        t_unknown.push(start.elapsed());
        assert_eq!(a, b);
    }
    let (w, u) = (median(t_wrong), median(t_unknown));
    let ratio = w.as_secs_f64().max(u.as_secs_f64()) / w.as_secs_f64().min(u.as_secs_f64());
    assert!(
        ratio < 3.0,
        "wrong password {w:?} vs unknown user {u:?}: ratio {ratio:.2}"
    );
}

#[test]
fn disabled_accounts_are_refused_like_wrong_passwords() {
    let dir = TempDir::new("disabled");
    let v = verifier(&dir, false, lenient());
    v.store
        .add_user("frank", Some(b"frank's password"), &[key(6)])
        .unwrap();
    v.store.set_disabled("frank", true).unwrap();
    let now = Instant::now();
    assert_eq!(
        v.verify(&password("frank", "frank's password"), SRC, now, 0),
        refused()
    );
    assert_eq!(
        v.verify(&publickey("frank", key(6)), SRC, now, 0),
        refused()
    );
    v.store.set_disabled("frank", false).unwrap();
    assert!(password_accepted(&v, "frank", "frank's password", now));
}

#[test]
fn publickey_login_checks_authorised_keys() {
    let dir = TempDir::new("pk");
    let v = verifier(&dir, false, lenient());
    v.store.add_user("grace", None, &[key(7)]).unwrap();
    let now = Instant::now();
    assert!(accepted(
        &v.verify(&publickey("Grace", key(7)), SRC, now, 5),
        "grace"
    ));
    assert_eq!(
        v.verify(&publickey("grace", key(8)), SRC, now, 0),
        refused()
    );
    assert_eq!(
        v.verify(&publickey("nobody", key(7)), SRC, now, 0),
        refused()
    );
    // Authorising and revoking take effect at once.
    v.store.add_key("grace", &key(8)).unwrap();
    assert!(accepted(
        &v.verify(&publickey("grace", key(8)), SRC, now, 0),
        "grace"
    ));
    v.store.remove_key("grace", &key(7).fingerprint()).unwrap();
    assert_eq!(
        v.verify(&publickey("grace", key(7)), SRC, now, 0),
        refused()
    );
}

#[test]
fn registration_rules() {
    let now = Instant::now();
    // Closed (the default for a server).
    let dir = TempDir::new("reg-closed");
    let closed = verifier(&dir, false, LimiterConfig::default());
    assert_eq!(
        closed.verify(&register("heidi", "a fine password", None), SRC, now, 0),
        Verdict::Refuse {
            reason: REGISTRATION_CLOSED.into()
        }
    );
    assert!(closed.store.get("heidi").unwrap().is_none());

    let dir = TempDir::new("reg-open");
    let v = verifier(&dir, true, LimiterConfig::default());
    // Register (with a key), then log in both ways.
    let reg = v.verify(
        &register("Heidi", "a fine password", Some(key(10))),
        SRC,
        now,
        42,
    );
    assert!(accepted(&reg, "heidi"), "{reg:?}");
    let acct = v.store.get("heidi").unwrap().unwrap();
    assert_eq!(acct.keys, [key(10)]);
    assert_eq!(acct.last_login, Some(42));
    assert!(password_accepted(&v, "heidi", "a fine password", now));
    assert!(accepted(
        &v.verify(&publickey("heidi", key(10)), SRC, now, 0),
        "heidi"
    ));

    // Duplicate name, in any case.
    assert_eq!(
        v.verify(&register("HEIDI", "another password", None), SRC, now, 0),
        Verdict::Refuse {
            reason: NAME_TAKEN.into()
        }
    );
    // The original password still works.
    assert!(password_accepted(&v, "heidi", "a fine password", now));

    // Weak passwords and bad names get a reason the client can show.
    for (user, pw, needle) in [
        ("ivan", "short", "at least 8 bytes"),
        ("ivan", "", "at least 8 bytes"),
        ("ivanivan", "IvanIvan", "must not be the account name"),
        ("-ivan", "a fine password", "start with a letter or a digit"),
        ("iv an", "a fine password", "only letters"),
        (&"i".repeat(33), "a fine password", "longer than 32"),
        ("", "a fine password", "empty"),
    ] {
        match v.verify(&register(user, pw, None), SRC, now, 0) {
            Verdict::Refuse { reason } => {
                assert!(reason.contains(needle), "{user:?}/{pw:?}: {reason}");
                assert_ne!(reason, REFUSED);
            }
            other => panic!("{user:?}/{pw:?} accepted: {other:?}"),
        }
    }
    assert_eq!(v.store.list().unwrap().len(), 1);
}

#[test]
fn lockout_after_failures_and_recovery_after_backoff() {
    let dir = TempDir::new("lock");
    let v = verifier(&dir, false, LimiterConfig::default());
    v.store
        .add_user("judy", Some(b"judy's password"), &[key(11)])
        .unwrap();
    let t0 = Instant::now();
    // Three failures from one address lock that address out of the account for 1 s;
    // the third refusal is answered when the lock ends.
    for i in 0..3 {
        let d = v.decide(&password("judy", &format!("guess {i}")), SRC, t0, 0);
        assert_eq!(d.verdict, refused());
        let want = if i < 2 {
            t0
        } else {
            t0 + Duration::from_secs(1)
        };
        assert_eq!(d.answer_at, want, "attempt {i}");
    }
    assert_eq!(v.store.get("judy").unwrap().unwrap().failed_attempts, 3);
    // Locked: the right password and the right key from that address are refused
    // exactly like a wrong password, answered at the end of the lock, not counted.
    let t = t0 + Duration::from_millis(500);
    let d = v.decide(&password("judy", "judy's password"), SRC, t, 0);
    assert_eq!(
        (d.verdict, d.answer_at),
        (refused(), t0 + Duration::from_secs(1))
    );
    assert_eq!(v.verify(&publickey("judy", key(11)), SRC, t, 0), refused());
    assert_eq!(v.store.get("judy").unwrap().unwrap().failed_attempts, 3);
    // From an address with no failures, the right password gets in.
    let elsewhere = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    assert!(accepted(
        &v.verify(&password("judy", "judy's password"), elsewhere, t, 0),
        "judy"
    ));
    // An unknown name locks the same way, so locking reveals nothing.
    for _ in 0..3 {
        v.verify(&password("nemo", "guess"), SRC, t, 0);
    }
    let l = v.limiter.lock().unwrap();
    assert!(l.is_locked(Some("nemo"), SRC, t));
    assert!(l.is_locked(Some("judy"), SRC, t));
    assert!(!l.is_locked(Some("judy"), elsewhere, t));
    drop(l);

    // After the 1 s lock (attempts while locked did not extend it) it works again,
    // and success clears the pair's counter.
    let t = t0 + Duration::from_secs(1);
    assert!(accepted(
        &v.verify(&password("judy", "judy's password"), SRC, t, 99),
        "judy"
    ));
    let a = v.store.get("judy").unwrap().unwrap();
    assert_eq!((a.failed_attempts, a.last_login), (0, Some(99)));
    assert_eq!(v.verify(&password("judy", "wrong"), SRC, t, 0), refused());
    assert!(password_accepted(&v, "judy", "judy's password", t));

    // Backoff doubles: 3 more failures lock for 1 s again from a clean start; a fourth
    // failure after that lock locks for 2 s.
    let t1 = t + Duration::from_secs(10);
    for _ in 0..3 {
        v.verify(&password("judy", "wrong"), SRC, t1, 0);
    }
    let t2 = t1 + Duration::from_secs(1);
    let d = v.decide(&password("judy", "wrong"), SRC, t2, 0);
    assert_eq!(d.answer_at, t2 + Duration::from_secs(2));
    let right = password("judy", "judy's password");
    assert_eq!(
        v.verify(&right, SRC, t2 + Duration::from_millis(1500), 0),
        refused()
    );
    assert!(accepted(
        &v.verify(&right, SRC, t2 + Duration::from_secs(2), 0),
        "judy"
    ));
}

#[test]
fn guessing_from_other_addresses_cannot_lock_the_owner_out() {
    let dir = TempDir::new("no-weapon");
    let v = verifier(&dir, false, LimiterConfig::default());
    v.store
        .add_user("kate", Some(b"kate's password"), &[])
        .unwrap();
    let t0 = Instant::now();
    // Forty addresses guess at the account, one guess each: far past the account's
    // free failures.
    for n in 0..40u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
        assert_eq!(v.verify(&password("kate", "guess"), ip, t0, 0), refused());
    }
    // They are locked out of it...
    let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0));
    assert!(v
        .limiter
        .lock()
        .unwrap()
        .is_locked(Some("kate"), attacker, t0));
    // ...the owner, from an address with no failures, is not.
    assert!(password_accepted(&v, "kate", "kate's password", t0));
}

#[test]
fn registrations_are_limited_per_address() {
    let dir = TempDir::new("reg-limit");
    let v = verifier(
        &dir,
        true,
        LimiterConfig {
            registrations_per_source: 3,
            ..LimiterConfig::default()
        },
    );
    let now = Instant::now();
    for i in 0..3 {
        let name = format!("reg{i}");
        assert!(accepted(
            &v.verify(&register(&name, "a fine password", None), SRC, now, 0),
            &name
        ));
    }
    assert_eq!(
        v.verify(&register("reg3", "a fine password", None), SRC, now, 0),
        Verdict::Refuse {
            reason: TOO_MANY_REGISTRATIONS.into()
        }
    );
    assert!(v.store.get("reg3").unwrap().is_none());
    let other = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
    assert!(accepted(
        &v.verify(&register("reg3", "a fine password", None), other, now, 0),
        "reg3"
    ));
}

// ---------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------

const CHILD_ENV: &str = "QUILL_CHILD";
const CHILD_DB_ENV: &str = "QUILL_CHILD_DB";
const ACK: &str = "ACK ";

/// The child half of `registrations_survive_sigkill`: registers users through the
/// verifier from two threads, printing each name only after its registration returned
/// `Accept` (that is, after the commit). Not a test on its own.
#[test]
#[ignore = "helper process for registrations_survive_sigkill"]
fn child_writer() {
    assert_eq!(
        std::env::var(CHILD_ENV).as_deref(),
        Ok("1"),
        "run by registrations_survive_sigkill only"
    );
    let path = std::env::var(CHILD_DB_ENV).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let v = Arc::new(LoginVerifier {
        store: Arc::new(store),
        // Thousands of registrations from one address: no registration limit.
        limiter: Mutex::new(Limiter::new(LimiterConfig {
            registrations_per_source: 0,
            ..LimiterConfig::default()
        })),
        allow_register: true,
        sessions: SessionCaps::default(),
        keys: KeyCache::default(),
    });
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let v = v.clone();
            std::thread::spawn(move || {
                // Bounded, so a parent that never kills us still finishes.
                for i in 0..2000 {
                    let name = format!("user{t}x{i:04}");
                    let verdict = v.verify(
                        &register(&name, "durable password", None),
                        SRC,
                        Instant::now(),
                        0,
                    );
                    assert!(accepted(&verdict, &name), "{verdict:?}");
                    println!("{ACK}{name}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn registrations_survive_sigkill() {
    let dir = TempDir::new("durable");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env(CHILD_DB_ENV, dir.db())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    // Kill mid-burst: after 16 acknowledgements, while both threads are working.
    while acked.len() < 16 {
        match lines.next() {
            Some(line) => {
                if let Some(name) = line.unwrap().strip_prefix(ACK) {
                    acked.push(name.to_owned());
                }
            }
            None => panic!("child ended after {} acknowledgements", acked.len()),
        }
    }
    child.kill().unwrap(); // SIGKILL
                           // Lines already printed before the kill were acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix(ACK) {
            acked.push(name.to_owned());
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "child was killed, not finished");

    let store = SqliteStore::open(dir.db()).unwrap();
    store.integrity_check().unwrap();
    for name in &acked {
        assert!(
            store.get(name).unwrap().is_some(),
            "acknowledged registration {name} lost"
        );
    }
    let all = store.list().unwrap();
    // At most one unacknowledged registration per thread was in flight.
    assert!(all.len() >= acked.len() && all.len() <= acked.len() + 2);
    // The survivors are whole accounts that can log in.
    let v = LoginVerifier::new(Arc::new(store), false);
    assert!(accepted(
        &v.verify(
            &password(&acked[0], "durable password"),
            SRC,
            Instant::now(),
            0
        ),
        &acked[0]
    ));
}

// ---------------------------------------------------------------------------------
// The cache of authorised keys (auth::key_cache)
// ---------------------------------------------------------------------------------

/// The server's verifier over `dir`'s database, and a second handle on the same
/// file, as `quill user` would open it in another process.
fn cached_pair(dir: &TempDir) -> (LoginVerifier, SqliteStore) {
    let store = Arc::new(SqliteStore::open(dir.db()).unwrap());
    let mut v = LoginVerifier::new(store, false);
    v.limiter = Mutex::new(Limiter::new(lenient()));
    let admin = SqliteStore::open(dir.db()).unwrap();
    (v, admin)
}

/// [`cached_pair`] with `user` holding `keys`, after one accepted login with the
/// first key at the returned instant (so the account is cached).
fn cached_after_login(
    tag: &str,
    user: &str,
    keys: &[PublicKey],
) -> (TempDir, LoginVerifier, SqliteStore, Instant) {
    let dir = TempDir::new(tag);
    let (v, admin) = cached_pair(&dir);
    admin.add_user(user, None, keys).unwrap();
    let t0 = Instant::now();
    assert!(key_accepted(&v, user, &keys[0], t0));
    (dir, v, admin, t0)
}

fn key_accepted(v: &LoginVerifier, user: &str, k: &PublicKey, now: Instant) -> bool {
    accepted(
        &v.verify(&publickey(user, k.clone()), SRC, now, 1_000),
        user,
    )
}

#[test]
fn public_key_logins_read_the_store_once_while_nothing_changes() {
    use quill_transport::auth::KeyLookup;
    let (_dir, v, admin, t0) = cached_after_login("cache-hit", "kim", &[key(1)]);
    assert_eq!(admin.get("kim").unwrap().unwrap().last_login, Some(1_000));
    // From now on the cache answers: `Authorised` never comes from a store read.
    let fp = key(1).fingerprint();
    let hit = v.keys.lookup(v.store.as_ref(), "kim", &fp, t0).unwrap();
    assert!(matches!(hit, KeyLookup::Authorised(_)), "{hit:?}");
    // More logins in the same Unix second write `last_login` no more: a value set
    // meanwhile by another process stays.
    admin.record_login("kim", 5).unwrap();
    for i in 0..50 {
        assert!(key_accepted(
            &v,
            "kim",
            &key(1),
            t0 + Duration::from_millis(i * 10)
        ));
    }
    assert_eq!(admin.get("kim").unwrap().unwrap().last_login, Some(5));
    // A key the cached entry lacks is looked up, and refused.
    assert!(!key_accepted(&v, "kim", &key(2), t0));
}

#[test]
fn a_key_removed_through_the_store_stops_working_after_the_recheck() {
    use quill_transport::auth::KEY_CACHE_RECHECK;
    let (_dir, v, admin, t0) = cached_after_login("cache-remove", "lee", &[key(1), key(2)]);
    assert!(key_accepted(&v, "lee", &key(2), t0));
    // Another process removes key 1 (`quill user key remove`).
    admin.remove_key("lee", &key(1).fingerprint()).unwrap();
    // Once the recheck interval has passed, the change counter has moved: refused.
    let later = t0 + KEY_CACHE_RECHECK;
    assert!(!key_accepted(&v, "lee", &key(1), later));
    assert!(key_accepted(&v, "lee", &key(2), later));
    // And it stays refused.
    assert!(!key_accepted(&v, "lee", &key(1), later));
    // Disabling the account ends key 2 the same way.
    admin.set_disabled("lee", true).unwrap();
    assert!(!key_accepted(&v, "lee", &key(2), later + KEY_CACHE_RECHECK));
    // Removing the account: a re-created "lee" with other keys does not inherit them.
    admin.set_disabled("lee", false).unwrap();
    let t1 = later + 2 * KEY_CACHE_RECHECK;
    assert!(key_accepted(&v, "lee", &key(2), t1));
    admin.remove_user("lee").unwrap();
    admin.add_user("lee", None, &[key(3)]).unwrap();
    let t2 = t1 + KEY_CACHE_RECHECK;
    assert!(!key_accepted(&v, "lee", &key(2), t2));
    assert!(key_accepted(&v, "lee", &key(3), t2));
}

#[test]
fn clearing_the_cache_applies_a_removal_at_once() {
    let (_dir, v, admin, t0) = cached_after_login("cache-clear", "max", &[key(1)]);
    admin.remove_key("max", &key(1).fingerprint()).unwrap();
    // SIGHUP in `quill server`: the next login reads the store, at the same instant.
    v.keys.clear();
    assert!(!key_accepted(&v, "max", &key(1), t0));
}

#[test]
fn a_key_added_through_the_store_works_at_once() {
    let (_dir, v, admin, t0) = cached_after_login("cache-add", "ned", &[key(1)]);
    admin.add_key("ned", &key(2)).unwrap();
    // No recheck due yet, but a key the cache does not authorise is read from the store.
    assert!(key_accepted(&v, "ned", &key(2), t0));
}

/// What the event loop decides itself (`decide_cached`): only an acceptance the key
/// cache gives from memory; everything else goes to the worker pool (`None`).
#[test]
fn only_cached_acceptances_are_decided_without_the_pool() {
    use quill_transport::auth::KEY_CACHE_RECHECK;
    let dir = TempDir::new("cache-loop");
    let (mut v, admin) = cached_pair(&dir);
    admin.add_user("ada", None, &[key(1)]).unwrap();
    let t0 = Instant::now();
    let pk = |user: &str, k: u8| publickey(user, key(k));
    // Cold: nothing cached yet.
    assert!(v.decide_cached(&pk("ada", 1), SRC, t0, 1_000).is_none());
    assert!(key_accepted(&v, "ada", &key(1), t0));
    // Warm: the pool's verdict, at once; this second's `last_login` is written already.
    let (d, record) = v
        .decide_cached(&pk("ADA", 1), SRC, t0, 1_000)
        .expect("cached");
    assert!(accepted(&d.verdict, "ada"), "{d:?}");
    assert_eq!(
        (d.answer_at, d.log_reason, record),
        (t0, "public key", None)
    );
    // A new second: the write is handed back, for the pool.
    let (_, record) = v.decide_cached(&pk("ada", 1), SRC, t0, 1_001).unwrap();
    assert_eq!(
        record.map(|r| (r.account, r.unix_now)),
        Some(("ada".into(), 1_001))
    );
    // Never a key or name the cache does not authorise, nor another method.
    assert!(v.decide_cached(&pk("ada", 2), SRC, t0, 1_000).is_none());
    assert!(v.decide_cached(&pk("bob", 1), SRC, t0, 1_000).is_none());
    assert!(v
        .decide_cached(&pk("bad name!", 1), SRC, t0, 1_000)
        .is_none());
    assert!(v
        .decide_cached(&password("ada", "pw"), SRC, t0, 1_000)
        .is_none());
    // Once the store's change counter is due for a read, the pool decides: a key
    // removed by another process is refused there.
    admin.remove_key("ada", &key(1).fingerprint()).unwrap();
    let later = t0 + KEY_CACHE_RECHECK;
    assert!(v.decide_cached(&pk("ada", 1), SRC, later, 1_002).is_none());
    assert!(!key_accepted(&v, "ada", &key(1), later));
    assert!(v.decide_cached(&pk("ada", 1), SRC, later, 1_002).is_none());
    // A lock applies: a cached key whose pair is locked goes to the pool too.
    admin.add_key("ada", &key(1)).unwrap();
    v.limiter = Mutex::new(Limiter::new(LimiterConfig::default()));
    let t1 = later + KEY_CACHE_RECHECK;
    assert!(key_accepted(&v, "ada", &key(1), t1));
    assert!(v.decide_cached(&pk("ada", 1), SRC, t1, 1_003).is_some());
    for _ in 0..5 {
        assert!(!key_accepted(&v, "ada", &key(2), t1));
    }
    assert!(v.decide_cached(&pk("ada", 1), SRC, t1, 1_003).is_none());
}

#[test]
fn the_cache_is_bounded() {
    use quill_transport::auth::{KeyCache, KeyLookup};
    let dir = TempDir::new("cache-bound");
    let store = SqliteStore::open(dir.db()).unwrap();
    let cache = KeyCache::new(4, Duration::from_secs(3600));
    let t0 = Instant::now();
    for i in 0..20u8 {
        let name = format!("user{i}");
        store.add_user(&name, None, &[key(i + 1)]).unwrap();
        let fp = key(i + 1).fingerprint();
        let found = cache.lookup(&store, &name, &fp, t0).unwrap();
        assert!(matches!(found, KeyLookup::Read(Some(_))));
        assert!(cache.len() <= 4, "{} accounts held", cache.len());
        // Held now: the next lookup comes from the cache.
        let again = cache.lookup(&store, &name, &fp, t0).unwrap();
        assert!(matches!(again, KeyLookup::Authorised(_)));
    }
}

#[test]
fn a_version_1_file_gains_the_change_counter() {
    let dir = TempDir::new("v1");
    create_empty_0600(&dir.db());
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(quill_transport::auth::MIGRATIONS[0])
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = SqliteStore::open(dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    let v0 = store.auth_version().unwrap().unwrap();
    store.add_user("ola", None, &[key(1)]).unwrap();
    let v1 = store.auth_version().unwrap().unwrap();
    assert!(v1 > v0);
    // Bookkeeping does not move it.
    store.record_login("ola", 5).unwrap();
    store.record_failure("ola").unwrap();
    assert_eq!(store.auth_version().unwrap().unwrap(), v1);
    store.add_key("ola", &key(2)).unwrap();
    let v2 = store.auth_version().unwrap().unwrap();
    assert!(v2 > v1);
    store.remove_key("ola", &key(2).fingerprint()).unwrap();
    assert!(store.auth_version().unwrap().unwrap() > v2);
}
