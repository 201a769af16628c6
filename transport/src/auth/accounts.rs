//! The server's account store: the [`AccountStore`] trait and [`SqliteStore`], its
//! SQLite implementation ([`PostgresStore`](super::PostgresStore) is the other one;
//! [`open_store`] picks by the `--accounts` value).
//!
//! ## Account names
//!
//! A name is 1 to [`MAX_NAME_LEN`] (32) characters from `[a-z0-9._-]` and starts with a
//! letter or a digit. Input is case-folded to lowercase (ASCII only) before it is
//! checked, so `"Alice"` and `"alice"` name the same account; anything outside ASCII
//! is refused rather than folded, so no two different byte strings can look alike.
//! [`normalize_name`] applies the rule; every [`SqliteStore`] method and the login
//! verifier apply it to every name they are given.
//!
//! ## Passwords
//!
//! Stored only as Argon2id PHC strings ([`quill_crypto::password`]). A new password
//! (registration, [`AccountStore::add_user`], [`AccountStore::set_password`]) must be at
//! least [`MIN_PASSWORD_LEN`] (8) bytes, at most [`MAX_PASSWORD_LEN`] bytes, and must not
//! equal the account name (compared case-insensitively); [`check_new_password`] gives a
//! reason a client can show. Passwords are opaque bytes, not necessarily UTF-8.
//!
//! ## The SQLite file
//!
//! [`SqliteStore::open`] creates the database file itself with mode 0600 before SQLite
//! touches it, and refuses an existing file whose permissions are wider (SQLite gives
//! its `-wal` and `-shm` files the main file's mode). The connection runs in WAL mode
//! with `synchronous=FULL`, so an account change has reached the disk when the call
//! that made it returns: an acknowledged registration survives SIGKILL or power loss.
//! Bookkeeping writes ([`AccountStore::record_login`], [`AccountStore::record_failure`],
//! [`AccountStore::reset_failures`]) go through a second connection with
//! `synchronous=NORMAL`: they are atomic but not synced at commit (a crash may lose the
//! last few), which keeps a failed login from costing an `fsync` that an unknown user
//! would not cost (that would be a timing oracle), and keeps brute force from turning
//! into disk load.
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] holds one SQL
//! script per version, each applied in its own transaction together with the version
//! bump. A file whose version is newer than this build knows is refused. Foreign keys
//! are on (deleting an account deletes its keys).
//!
//! Tables (version 1):
//! - `accounts(id, name UNIQUE, password_phc NULL, created, last_login NULL, disabled,
//!   failed_attempts)`; times are Unix seconds.
//! - `account_keys(account_id → accounts.id ON DELETE CASCADE, fingerprint, key, added)`,
//!   primary key `(account_id, fingerprint)`; `key` is the public key's wire form.
//!
//! Version 2 adds `auth_version(id = 0, n)`, one row whose `n` triggers bump on every
//! insert or delete of an account or key and every change of an account's name,
//! password or disabled flag ([`AccountStore::auth_version`]; `last_login` and
//! `failed_attempts` do not move it). Servers read it to know when their cache of
//! authorised keys is stale (`auth::key_cache`).

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use quill_crypto::hostkey::PublicKey;
use quill_crypto::password::hash_password;
use quill_crypto::random::OsRandom;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use zeroize::Zeroizing;

/// The longest account name, in characters (= bytes: names are ASCII).
pub const MAX_NAME_LEN: usize = 32;
/// The shortest password accepted for a new account or a password change.
pub const MIN_PASSWORD_LEN: usize = 8;
/// The longest password accepted for a new account or a password change.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The most public keys one account may hold.
pub const MAX_KEYS_PER_ACCOUNT: usize = 64;

/// The schema migrations, in order: entry `i` moves a database from `user_version = i`
/// to `i + 1`. Append new versions; never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE accounts (
         id              INTEGER PRIMARY KEY,
         name            TEXT    NOT NULL UNIQUE,
         password_phc    TEXT,
         created         INTEGER NOT NULL,
         last_login      INTEGER,
         disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
         failed_attempts INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE account_keys (
         account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
         fingerprint TEXT    NOT NULL,
         key         BLOB    NOT NULL,
         added       INTEGER NOT NULL,
         PRIMARY KEY (account_id, fingerprint)
     );",
    // Version 2: a change counter for the servers' caches of authorised keys
    // (`auth::key_cache`), bumped by every change that can end a login's right.
    "CREATE TABLE auth_version (
         id INTEGER PRIMARY KEY CHECK (id = 0),
         n  INTEGER NOT NULL
     );
     INSERT INTO auth_version (id, n) VALUES (0, 0);
     CREATE TRIGGER auth_version_account_added AFTER INSERT ON accounts
     BEGIN UPDATE auth_version SET n = n + 1; END;
     CREATE TRIGGER auth_version_account_removed AFTER DELETE ON accounts
     BEGIN UPDATE auth_version SET n = n + 1; END;
     CREATE TRIGGER auth_version_account_changed
     AFTER UPDATE OF name, password_phc, disabled ON accounts
     BEGIN UPDATE auth_version SET n = n + 1; END;
     CREATE TRIGGER auth_version_key_added AFTER INSERT ON account_keys
     BEGIN UPDATE auth_version SET n = n + 1; END;
     CREATE TRIGGER auth_version_key_removed AFTER DELETE ON account_keys
     BEGIN UPDATE auth_version SET n = n + 1; END;
     CREATE TRIGGER auth_version_key_changed AFTER UPDATE ON account_keys
     BEGIN UPDATE auth_version SET n = n + 1; END;",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// One account, as the store holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The normalised (lowercase) account name.
    pub name: String,
    /// The Argon2id PHC string, if the account has a password.
    pub password_phc: Option<String>,
    /// The public keys authorised to log in as this account.
    pub keys: Vec<PublicKey>,
    /// When the account was created (Unix seconds).
    pub created: u64,
    /// The last successful login (Unix seconds), if any.
    pub last_login: Option<u64>,
    /// A disabled account cannot log in.
    pub disabled: bool,
    /// Failed logins since the last successful one (informational; the lockout itself
    /// is the in-memory [`Limiter`](super::limiter::Limiter)).
    pub failed_attempts: u32,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("has_password", &self.password_phc.is_some())
            .field("keys", &self.keys)
            .field("created", &self.created)
            .field("last_login", &self.last_login)
            .field("disabled", &self.disabled)
            .field("failed_attempts", &self.failed_attempts)
            .finish()
    }
}

/// Why a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The account name breaks the name rules; the string says which rule.
    InvalidName(String),
    /// The new password is too weak (or too long); the string says why.
    WeakPassword(String),
    /// An account with this name already exists.
    Exists(String),
    /// No account has this name.
    NotFound(String),
    /// The account already holds this key (by fingerprint).
    KeyExists(String),
    /// The account holds no key with this fingerprint.
    NoSuchKey(String),
    /// The account already holds [`MAX_KEYS_PER_ACCOUNT`] keys.
    TooManyKeys(String),
    /// The database file's permissions are wider than 0600.
    InsecurePermissions {
        /// The database file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The database was written by a newer quill whose schema this build does not know.
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The file's schema version.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// Opening or inspecting the database file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// SQLite reported an error.
    Database(rusqlite::Error),
    /// The database could not be configured as required (WAL mode, ...).
    Setup(String),
    /// The PostgreSQL account database could not be reached, did not answer in time,
    /// or refused a statement.
    Postgres {
        /// The database URL without its password.
        target: String,
        /// What went wrong, in one line.
        message: String,
    },
    /// Hashing the password failed.
    Hash(quill_crypto::Error),
    /// `PRAGMA integrity_check` found problems; these are its messages.
    Corrupt(Vec<String>),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidName(why) => write!(f, "invalid account name: {why}"),
            StoreError::WeakPassword(why) => write!(f, "password refused: {why}"),
            StoreError::Exists(name) => write!(f, "account {name:?} already exists"),
            StoreError::NotFound(name) => write!(f, "no account named {name:?}"),
            StoreError::KeyExists(fp) => write!(f, "the account already has key {fp}"),
            StoreError::NoSuchKey(fp) => write!(f, "the account has no key {fp}"),
            StoreError::TooManyKeys(name) => write!(
                f,
                "account {name:?} already has {MAX_KEYS_PER_ACCOUNT} keys"
            ),
            StoreError::InsecurePermissions { path, mode } => write!(
                f,
                "account database {} has permissions {:o}, wider than 0600; \
                 fix with `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            StoreError::SchemaTooNew { path, found, known } => write!(
                f,
                "account database {} has schema version {found}, but this quill only knows \
                 versions up to {known}; use a newer quill",
                path.display()
            ),
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Database(e) => write!(f, "account database: {e}"),
            StoreError::Setup(why) => write!(f, "account database: {why}"),
            StoreError::Postgres { target, message } => {
                write!(f, "account database {target}: {message}")
            }
            StoreError::Hash(e) => write!(f, "password hashing: {e}"),
            StoreError::Corrupt(msgs) => {
                write!(f, "account database is corrupt: {}", msgs.join("; "))
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Database(e) => Some(e),
            StoreError::Hash(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e)
    }
}

/// Applies the name rules (module docs): lowercases ASCII letters, then checks length,
/// alphabet and first character. Returns the normalised name.
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    let bad = |why: &str| Err(StoreError::InvalidName(why.to_owned()));
    if name.is_empty() {
        return bad("the name is empty");
    }
    // Length first, so the rest never works on an unbounded string.
    if name.len() > MAX_NAME_LEN {
        return bad("the name is longer than 32 characters");
    }
    let folded = name.to_ascii_lowercase();
    if !folded
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("use only letters a-z, digits, '.', '_' and '-'");
    }
    let first = folded.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return bad("the name must start with a letter or a digit");
    }
    Ok(folded)
}

/// The weak-password rule for new passwords (module docs). `name` is the normalised
/// account name.
pub fn check_new_password(name: &str, password: &[u8]) -> Result<(), StoreError> {
    let weak = |why: &str| Err(StoreError::WeakPassword(why.to_owned()));
    if password.len() < MIN_PASSWORD_LEN {
        return weak("the password must be at least 8 bytes long");
    }
    if password.len() > MAX_PASSWORD_LEN {
        return weak("the password must be at most 1024 bytes long");
    }
    if password.eq_ignore_ascii_case(name.as_bytes()) {
        return weak("the password must not be the account name");
    }
    Ok(())
}

/// Where accounts live. Implement it to keep accounts in your own database; quill ships
/// [`SqliteStore`].
///
/// Names given to these methods may be in any case; implementations normalise them with
/// [`normalize_name`]. Every method may block (disk, hashing): call them from the worker
/// pool, never from the event-loop thread.
pub trait AccountStore: Send + Sync {
    /// Creates an account with an optional password (hashed with Argon2id here; it must
    /// pass [`check_new_password`]) and authorised keys. Fails with
    /// [`StoreError::Exists`] if the name is taken. The account is durable when this
    /// returns `Ok`.
    fn add_user(
        &self,
        name: &str,
        password: Option<&[u8]>,
        keys: &[PublicKey],
    ) -> Result<Account, StoreError>;
    /// Deletes an account and its keys.
    fn remove_user(&self, name: &str) -> Result<(), StoreError>;
    /// Disables or re-enables an account.
    fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError>;
    /// Replaces the account's password (hashed here; it must pass
    /// [`check_new_password`]).
    fn set_password(&self, name: &str, password: &[u8]) -> Result<(), StoreError>;
    /// Authorises another public key for the account.
    fn add_key(&self, name: &str, key: &PublicKey) -> Result<(), StoreError>;
    /// Removes the key with this fingerprint (as [`PublicKey::fingerprint`] prints it).
    fn remove_key(&self, name: &str, fingerprint: &str) -> Result<(), StoreError>;
    /// Every account, ordered by name.
    fn list(&self) -> Result<Vec<Account>, StoreError>;
    /// One account; `Ok(None)` if no account has this name (or the name is invalid).
    fn get(&self, name: &str) -> Result<Option<Account>, StoreError>;
    /// Records a successful login: sets `last_login` and resets `failed_attempts`.
    fn record_login(&self, name: &str, now_unix: u64) -> Result<(), StoreError>;
    /// Counts one failed login. [`StoreError::NotFound`] for an unknown account.
    fn record_failure(&self, name: &str) -> Result<(), StoreError>;
    /// Sets `failed_attempts` back to zero.
    fn reset_failures(&self, name: &str) -> Result<(), StoreError>;
    /// A counter that moves whenever an account is added or removed, or its password,
    /// disabled flag or keys change, by any process; `None` if the store keeps none
    /// (then nothing of it is cached: `auth::key_cache`).
    fn auth_version(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// A counter of the changes made through this handle (this process) that
    /// [`auth_version`](Self::auth_version) would count, kept in memory: a cache
    /// compares it on every lookup (no I/O), so such changes apply at once.
    fn local_auth_changes(&self) -> u64 {
        0
    }
}

/// The checks of [`AccountStore::add_user`] before any hashing or writing: the name
/// rules, the key cap, and a cheap early [`StoreError::Exists`] (the store's unique
/// constraint still settles races). Returns the normalised name.
pub(crate) fn precheck_new_account(
    store: &dyn AccountStore,
    name: &str,
    keys: &[PublicKey],
) -> Result<String, StoreError> {
    let name = normalize_name(name)?;
    if keys.len() > MAX_KEYS_PER_ACCOUNT {
        return Err(StoreError::TooManyKeys(name));
    }
    if store.get(&name)?.is_some() {
        return Err(StoreError::Exists(name));
    }
    Ok(name)
}

/// A new password for account `name`, checked ([`check_new_password`]) and hashed
/// with Argon2id into a PHC string (tens of milliseconds: never under a store lock).
pub(crate) fn hash_new_password(
    name: &str,
    password: &[u8],
    rng: &OsRandom,
) -> Result<Zeroizing<String>, StoreError> {
    check_new_password(name, password)?;
    hash_password(password, rng)
        .map(Zeroizing::new)
        .map_err(StoreError::Hash)
}

/// Opens the account store that an `--accounts` value names: a
/// [`PostgresStore`](super::PostgresStore) for a `postgres://` or `postgresql://` URL,
/// otherwise the [`SqliteStore`] file at that path (created if missing).
pub fn open_store(spec: &Path) -> Result<std::sync::Arc<dyn AccountStore>, StoreError> {
    match spec.to_str() {
        Some(url) if super::postgres::is_postgres_url(url) => {
            Ok(std::sync::Arc::new(super::PostgresStore::open(url)?))
        }
        _ => Ok(std::sync::Arc::new(SqliteStore::open(spec)?)),
    }
}

/// The SQLite account store (module docs describe the file, its schema and its
/// durability).
pub struct SqliteStore {
    /// Account changes: `synchronous=FULL`.
    conn: Mutex<Connection>,
    /// Bookkeeping (last login, failure counts): `synchronous=NORMAL`.
    stats: Mutex<Connection>,
    path: PathBuf,
    rng: OsRandom,
    /// Changes made through this handle ([`AccountStore::local_auth_changes`]).
    changes: AtomicU64,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection usable: SQLite rolls back
    // any open transaction when the `Transaction` guard is dropped during unwinding.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

impl SqliteStore {
    /// Opens (creating if needed, with mode 0600) the account database at `path`,
    /// switches it to WAL with `synchronous=FULL`, turns foreign keys on and migrates
    /// the schema to [`SCHEMA_VERSION`].
    ///
    /// Refuses a file with permissions wider than 0600
    /// ([`StoreError::InsecurePermissions`], whose message names the file and the
    /// `chmod 600` that fixes it) and a schema newer than this build knows
    /// ([`StoreError::SchemaTooNew`]).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        // Create the file ourselves so that it is never, even for an instant, readable
        // by others; SQLite then opens the existing file.
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o177 != 0 {
                return Err(StoreError::InsecurePermissions { path, mode });
            }
        }
        drop(file);

        let mut conn = Connection::open(&path)?;
        Self::configure(&conn, "FULL")?;
        Self::migrate(&mut conn, &path)?;
        let stats = Connection::open(&path)?;
        Self::configure(&stats, "NORMAL")?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            stats: Mutex::new(stats),
            path,
            rng: OsRandom::new(),
            changes: AtomicU64::new(0),
        })
    }

    fn configure(conn: &Connection, synchronous: &str) -> Result<(), StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // `journal_mode` answers with the mode now in force.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Setup(format!(
                "could not switch to WAL mode (journal_mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(())
    }

    /// Applies every migration above the file's `user_version`, each in its own
    /// transaction together with its version bump.
    fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let found = u32::try_from(found).unwrap_or(u32::MAX);
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (from, script) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
            // Another process may have migrated between our read and our lock.
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now as usize > from {
                continue;
            }
            tx.execute_batch(script)?;
            tx.pragma_update(None, "user_version", (from + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Counts a committed change made through this handle (after the commit, so a
    /// cache that sees it rereads a counter that has moved too).
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v: i64 = lock(&self.conn).pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(u32::try_from(v).unwrap_or(u32::MAX))
    }

    /// Runs `PRAGMA integrity_check`; [`StoreError::Corrupt`] lists what it found.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let msgs = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        if msgs.len() == 1 && msgs[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(msgs))
        }
    }

    fn hash(&self, name: &str, password: &[u8]) -> Result<Zeroizing<String>, StoreError> {
        hash_new_password(name, password, &self.rng)
    }

    fn account_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
        conn.query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }

    fn load_keys(conn: &Connection, id: i64) -> Result<Vec<PublicKey>, StoreError> {
        let mut stmt = conn.prepare_cached(
            "SELECT key FROM account_keys WHERE account_id = ?1 ORDER BY added, rowid",
        )?;
        let mut keys = Vec::new();
        for blob in stmt.query_map([id], |r| r.get::<_, Vec<u8>>(0))? {
            let blob = blob?;
            match PublicKey::from_bytes(&blob) {
                Ok(k) => keys.push(k),
                // Fail closed: a key we cannot parse authorises nothing.
                Err(e) => tracing::warn!(account_id = id, "skipping unreadable key: {e}"),
            }
        }
        Ok(keys)
    }

    fn row_to_account(conn: &Connection, row: AccountRow) -> Result<Account, StoreError> {
        let keys = Self::load_keys(conn, row.id)?;
        Ok(Account {
            name: row.name,
            password_phc: row.password_phc,
            keys,
            created: from_i64(row.created),
            last_login: row.last_login.map(from_i64),
            disabled: row.disabled,
            failed_attempts: u32::try_from(row.failed_attempts).unwrap_or(u32::MAX),
        })
    }

    /// [`Self::update_one`] on `db` for the account `name` (normalized first), which
    /// is `?1` in `sql`; `extra` are `?2`, ....
    fn update_named(
        db: &Mutex<Connection>,
        name: &str,
        sql: &str,
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        let conn = lock(db);
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&name];
        params.extend_from_slice(extra);
        Self::update_one(&conn, &name, sql, &params)
    }

    fn update_one(
        conn: &Connection,
        name: &str,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StoreError> {
        let n = conn.prepare_cached(sql)?.execute(params)?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }
}

struct AccountRow {
    id: i64,
    name: String,
    password_phc: Option<String>,
    created: i64,
    last_login: Option<i64>,
    disabled: bool,
    failed_attempts: i64,
}

const ACCOUNT_COLUMNS: &str =
    "id, name, password_phc, created, last_login, disabled, failed_attempts";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        name: r.get(1)?,
        password_phc: r.get(2)?,
        created: r.get(3)?,
        last_login: r.get(4)?,
        disabled: r.get(5)?,
        failed_attempts: r.get(6)?,
    })
}

impl AccountStore for SqliteStore {
    fn add_user(
        &self,
        name: &str,
        password: Option<&[u8]>,
        keys: &[PublicKey],
    ) -> Result<Account, StoreError> {
        let name = precheck_new_account(self, name, keys)?;
        // Hash outside the lock: Argon2id takes tens of milliseconds.
        let phc = password.map(|pw| self.hash(&name, pw)).transpose()?;
        let now = to_i64(unix_now());
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO accounts (name, password_phc, created) VALUES (?1, ?2, ?3)",
            params![name, phc.as_deref().map(String::as_str), now],
        );
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Exists(name)),
            Err(e) => return Err(e.into()),
        }
        let id = tx.last_insert_rowid();
        for key in keys {
            let added = tx.execute(
                "INSERT INTO account_keys (account_id, fingerprint, key, added)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, key.fingerprint(), key.to_bytes(), now],
            );
            match added {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::KeyExists(key.fingerprint()))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let row = tx.query_row(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
            [id],
            read_row,
        )?;
        let account = Self::row_to_account(&tx, row)?;
        // With synchronous=FULL the commit has reached the disk when it returns.
        tx.commit()?;
        self.changed();
        Ok(account)
    }

    fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        Self::update_named(
            &self.conn,
            name,
            "DELETE FROM accounts WHERE name = ?1",
            &[],
        )?;
        self.changed();
        Ok(())
    }

    fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        Self::update_named(
            &self.conn,
            name,
            "UPDATE accounts SET disabled = ?2 WHERE name = ?1",
            &[&disabled],
        )?;
        self.changed();
        Ok(())
    }

    fn set_password(&self, name: &str, password: &[u8]) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        // Fail fast on an unknown name before spending a hash on it.
        if self.get(&name)?.is_none() {
            return Err(StoreError::NotFound(name));
        }
        let phc = self.hash(&name, password)?;
        let conn = lock(&self.conn);
        Self::update_one(
            &conn,
            &name,
            "UPDATE accounts SET password_phc = ?2 WHERE name = ?1",
            &[&name, &phc.as_str()],
        )?;
        self.changed();
        Ok(())
    }

    fn add_key(&self, name: &str, key: &PublicKey) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        let id = Self::account_id(&tx, &name)?;
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM account_keys WHERE account_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if count as usize >= MAX_KEYS_PER_ACCOUNT {
            return Err(StoreError::TooManyKeys(name));
        }
        let added = tx.execute(
            "INSERT INTO account_keys (account_id, fingerprint, key, added)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, key.fingerprint(), key.to_bytes(), to_i64(unix_now())],
        );
        match added {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::KeyExists(key.fingerprint()))
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit()?;
        self.changed();
        Ok(())
    }

    fn remove_key(&self, name: &str, fingerprint: &str) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        let id = Self::account_id(&tx, &name)?;
        let n = tx.execute(
            "DELETE FROM account_keys WHERE account_id = ?1 AND fingerprint = ?2",
            params![id, fingerprint],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchKey(fingerprint.to_owned()));
        }
        tx.commit()?;
        self.changed();
        Ok(())
    }

    fn list(&self) -> Result<Vec<Account>, StoreError> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"
        ))?;
        let rows = stmt
            .query_map([], read_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|row| Self::row_to_account(&conn, row))
            .collect()
    }

    fn get(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let Ok(name) = normalize_name(name) else {
            return Ok(None);
        };
        let conn = lock(&self.conn);
        let row = conn
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"
            ))?
            .query_row([&name], read_row)
            .optional()?;
        row.map(|row| Self::row_to_account(&conn, row)).transpose()
    }

    fn record_login(&self, name: &str, now_unix: u64) -> Result<(), StoreError> {
        Self::update_named(
            &self.stats,
            name,
            "UPDATE accounts SET last_login = ?2, failed_attempts = 0 WHERE name = ?1",
            &[&to_i64(now_unix)],
        )
    }

    fn record_failure(&self, name: &str) -> Result<(), StoreError> {
        Self::update_named(
            &self.stats,
            name,
            "UPDATE accounts SET failed_attempts = MIN(failed_attempts + 1, 4294967295)
             WHERE name = ?1",
            &[],
        )
    }

    fn reset_failures(&self, name: &str) -> Result<(), StoreError> {
        Self::update_named(
            &self.stats,
            name,
            "UPDATE accounts SET failed_attempts = 0 WHERE name = ?1",
            &[],
        )
    }

    fn local_auth_changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn auth_version(&self) -> Result<Option<u64>, StoreError> {
        // One row, read on the bookkeeping connection that logins already use.
        let conn = lock(&self.stats);
        let n: i64 = conn
            .prepare_cached("SELECT n FROM auth_version WHERE id = 0")?
            .query_row([], |r| r.get(0))?;
        Ok(Some(n as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_crypto::hostkey::HostKeyPair;

    fn key(seed: u8) -> PublicKey {
        HostKeyPair::from_seed(&[seed; 32]).unwrap().public()
    }

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "quill-accounts-unit-{}-{tag}-{}",
            std::process::id(),
            unix_now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("accounts.db")
    }

    #[test]
    fn name_rules() {
        assert_eq!(normalize_name("Alice").unwrap(), "alice");
        assert_eq!(normalize_name("a").unwrap(), "a");
        assert_eq!(normalize_name("0day.user_x-y").unwrap(), "0day.user_x-y");
        assert_eq!(normalize_name(&"x".repeat(32)).unwrap(), "x".repeat(32));
        for bad in [
            "",
            &"x".repeat(33),
            ".hidden",
            "-dash",
            "_under",
            "with space",
            "semi;colon",
            "ünïcode",
            "K\u{212A}", // Kelvin sign: would fold to 'k' under Unicode rules
            "a/b",
        ] {
            assert!(
                matches!(normalize_name(bad), Err(StoreError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn password_rules() {
        assert!(check_new_password("alice", b"correct horse").is_ok());
        assert!(check_new_password("alice", b"12345678").is_ok());
        for bad in [&b"short"[..], b"1234567", b"", b"alice", b"ALICE"] {
            assert!(matches!(
                check_new_password("alice", bad),
                Err(StoreError::WeakPassword(_))
            ));
        }
        assert!(matches!(
            check_new_password("longname1", b"LongName1"),
            Err(StoreError::WeakPassword(_))
        ));
        assert!(check_new_password("a", &vec![b'p'; MAX_PASSWORD_LEN]).is_ok());
        assert!(check_new_password("a", &vec![b'p'; MAX_PASSWORD_LEN + 1]).is_err());
    }

    #[test]
    fn keys_roundtrip_and_cascade_on_delete() {
        let path = temp_db("cascade");
        let store = SqliteStore::open(&path).unwrap();
        let acct = store.add_user("Bob", None, &[key(1), key(2)]).unwrap();
        assert_eq!(acct.name, "bob");
        assert_eq!(acct.keys, vec![key(1), key(2)]);
        assert!(acct.password_phc.is_none());
        store.remove_user("bob").unwrap();
        let orphans: i64 = lock(&store.conn)
            .query_row("SELECT COUNT(*) FROM account_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(orphans, 0);
        assert!(matches!(
            store.remove_user("bob"),
            Err(StoreError::NotFound(_))
        ));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn pragmas_in_force() {
        let path = temp_db("pragmas");
        let store = SqliteStore::open(&path).unwrap();
        let conn = lock(&store.conn);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // synchronous: 2 = FULL, 1 = NORMAL.
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2);
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(conn);
        let sync: i64 = lock(&store.stats)
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e = StoreError::InsecurePermissions {
            path: PathBuf::from("/srv/quill/accounts.db"),
            mode: 0o100644,
        };
        let msg = e.to_string();
        assert!(msg.contains("/srv/quill/accounts.db"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains("644"), "{msg}");
    }
}
