//! [`PostgresStore`]: the accounts of a fleet in one PostgreSQL database, behind the
//! same [`AccountStore`] trait as the SQLite file.
//!
//! ## Connection
//!
//! [`PostgresStore::open`] takes a `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or
//! `postgresql://`) URL in libpq's form; a host given as a percent-encoded path
//! (`postgres://quill@%2Frun%2Fpostgresql/quill`) is a unix-socket directory. TLS is
//! not spoken: reach a remote server through a local socket or a tunnel. The URL may
//! hold a password, so every message and log line shows it through [`redact_url`].
//!
//! The store keeps two connections, like [`SqliteStore`](super::SqliteStore): one for
//! account changes and one for bookkeeping ([`AccountStore::record_login`],
//! [`AccountStore::record_failure`], [`AccountStore::reset_failures`]), so counting a
//! failed login never waits behind an account change. They are driven by a
//! current-thread tokio runtime owned by the store, from whichever worker-pool thread
//! calls; nothing here runs on an event loop.
//!
//! ## Bounds
//!
//! Every call has a client-side deadline: connecting takes at most
//! [`CONNECT_TIMEOUT`], and one method's statements together at most
//! [`QUERY_TIMEOUT`] (the server also cancels a statement after
//! `statement_timeout`, set to the same value). A connection that broke, timed out or
//! failed below SQL is dropped: that call returns [`StoreError::Postgres`] saying the
//! database is unreachable, and the next call connects again. A server killed
//! mid-call therefore costs the logins in flight a clear error, never a hang, and the
//! store is usable again as soon as the server is back.
//!
//! ## Schema
//!
//! The same tables as the SQLite store (BIGINT Unix seconds, BOOLEAN `disabled`,
//! BYTEA keys), plus `account_keys.seq` to keep keys in the order they were added.
//! The version lives in `quill_schema(version)`; [`MIGRATIONS`] holds one script per
//! version, applied in one transaction with the version bump under a transaction-level
//! advisory lock, so servers of a fleet starting together migrate once. A database
//! whose version is newer than this build knows is refused. Name uniqueness is the
//! `UNIQUE` constraint, so two servers registering the same name race safely: one
//! wins, the other gets [`StoreError::Exists`].

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use quill_crypto::hostkey::PublicKey;
use quill_crypto::random::OsRandom;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, NoTls, Row};
use zeroize::Zeroizing;

use super::accounts::{
    hash_new_password, normalize_name, precheck_new_account, unix_now, Account, AccountStore,
    StoreError, MAX_KEYS_PER_ACCOUNT,
};

/// How long connecting (TCP or unix socket, startup, authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the statements of one store method may take together.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL schema migrations, in order: entry `i` moves a database from
/// version `i` to `i + 1`. Append new versions; never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE accounts (
         id              BIGSERIAL PRIMARY KEY,
         name            TEXT    NOT NULL UNIQUE,
         password_phc    TEXT,
         created         BIGINT  NOT NULL,
         last_login      BIGINT,
         disabled        BOOLEAN NOT NULL DEFAULT FALSE,
         failed_attempts BIGINT  NOT NULL DEFAULT 0
     );
     CREATE TABLE account_keys (
         account_id  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
         fingerprint TEXT   NOT NULL,
         key         BYTEA  NOT NULL,
         added       BIGINT NOT NULL,
         seq         BIGSERIAL,
         PRIMARY KEY (account_id, fingerprint)
     );",
];

/// The schema version this build writes and understands.
pub const PG_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Key of the advisory lock held while migrating ("quill" in ASCII).
const MIGRATION_LOCK: i64 = 0x71_75_69_6c_6c;

/// Whether an `--accounts` value names a PostgreSQL database rather than a file.
pub fn is_postgres_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// The URL with any password replaced by `***` (`postgres://quill:***@db/quill`), and
/// any `password=` query parameter likewise: the form every message shows.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority_end, _) = rest
        .char_indices()
        .find(|&(_, c)| c == '/' || c == '?')
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The PostgreSQL account store (module docs: connection, bounds, schema).
pub struct PostgresStore {
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    target: String,
    runtime: tokio::runtime::Runtime,
    /// Account changes.
    conn: Mutex<Option<Client>>,
    /// Bookkeeping (last login, failure counts).
    stats: Mutex<Option<Client>>,
    rng: OsRandom,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Option<Client>>) -> MutexGuard<'_, Option<Client>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Whether `e` ended the connection: an error below SQL (I/O, closed), or one the
/// server sends as it drops the session (severity FATAL or PANIC, SQLSTATE class 08
/// "connection exception" or 57P "operator intervention": shutdown, crash).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            matches!(db.severity(), "FATAL" | "PANIC")
                || code.starts_with("08")
                || code.starts_with("57P")
        }
    }
}

/// What one call failed with, before it becomes a [`StoreError`]: a store error
/// proper, or a PostgreSQL error that still needs the target named.
enum Failure {
    Store(StoreError),
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

type Outcome<T> = Result<T, Failure>;

impl PostgresStore {
    /// Connects to the database at `url` and migrates its schema to
    /// [`PG_SCHEMA_VERSION`]. Fails at once, with a one-line reason that shows the URL
    /// without its password, if the URL is malformed, the server cannot be reached
    /// within [`CONNECT_TIMEOUT`], or the schema is newer than this build knows.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let target = redact_url(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Setup(format!(
                "{target} is not a PostgreSQL URL ({e}); use postgres://USER@HOST[:PORT]/DB"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // Bound statements on the server too, and notice a silent peer.
        let timeout_ms = QUERY_TIMEOUT.as_millis();
        let options = match config.get_options() {
            Some(o) => format!("{o} -c statement_timeout={timeout_ms}"),
            None => format!("-c statement_timeout={timeout_ms}"),
        };
        config.options(&options);
        config.application_name("quill");
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(QUERY_TIMEOUT);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Setup(format!("cannot start the PostgreSQL client: {e}")))?;
        let store = PostgresStore {
            config,
            target,
            runtime,
            conn: Mutex::new(None),
            stats: Mutex::new(None),
            rng: OsRandom::new(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database URL without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The database's schema version.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.call(&self.conn, async move |c| {
            let v: i32 = c
                .query_one("SELECT version FROM quill_schema", &[])
                .await?
                .get(0);
            Ok(u32::try_from(v).unwrap_or(0))
        })
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let target = self.target.clone();
        self.call(&self.conn, async move |c| {
            let tx = c.transaction().await?;
            tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS quill_schema (
                     singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                     version   INTEGER NOT NULL
                 );
                 INSERT INTO quill_schema (singleton, version) VALUES (TRUE, 0)
                     ON CONFLICT DO NOTHING;",
            )
            .await?;
            let found: i32 = tx
                .query_one("SELECT version FROM quill_schema", &[])
                .await?
                .get(0);
            let found = u32::try_from(found).unwrap_or(u32::MAX);
            if found > PG_SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    path: PathBuf::from(target),
                    found,
                    known: PG_SCHEMA_VERSION,
                }
                .into());
            }
            for (from, script) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.batch_execute(script).await?;
                let to = i32::try_from(from + 1).unwrap_or(i32::MAX);
                tx.execute("UPDATE quill_schema SET version = $1", &[&to])
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Runs `work` on the connection in `slot` (connecting first if there is none)
    /// within [`QUERY_TIMEOUT`]. A failure below SQL (closed connection, I/O, time-out)
    /// drops the connection, so the next call connects again.
    fn call<T>(
        &self,
        slot: &Mutex<Option<Client>>,
        work: impl AsyncFnOnce(&mut Client) -> Outcome<T>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(slot);
        if guard.as_ref().is_some_and(Client::is_closed) {
            *guard = None;
        }
        let client = match &mut *guard {
            Some(c) => c,
            none => none.insert(self.connect()?),
        };
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(QUERY_TIMEOUT, work(client)).await });
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Failure::Store(e))) => Err(e),
            Ok(Err(Failure::Pg(e))) => {
                if connection_lost(&e) {
                    *guard = None;
                    tracing::warn!(
                        "account database {}: {e}; reconnecting on next use",
                        self.target
                    );
                }
                Err(self.pg_error(&e))
            }
            Err(_) => {
                *guard = None;
                tracing::warn!(
                    "account database {}: no answer within {:?}; reconnecting on next use",
                    self.target,
                    QUERY_TIMEOUT
                );
                Err(StoreError::Postgres {
                    target: self.target.clone(),
                    message: format!("no answer within {QUERY_TIMEOUT:?}"),
                })
            }
        }
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let connecting = self.config.connect(NoTls);
        let (client, connection) = self
            .runtime
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, connecting).await })
            .map_err(|_| StoreError::Postgres {
                target: self.target.clone(),
                message: format!("cannot connect within {CONNECT_TIMEOUT:?}"),
            })?
            .map_err(|e| self.pg_error(&e))?;
        // The connection task runs while a call drives the runtime; it ends when the
        // client is dropped or the server goes away.
        self.runtime.spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn pg_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let message = match e.as_db_error() {
            Some(db) if !connection_lost(e) => format!("{}: {}", db.severity(), db.message()),
            Some(db) => format!("unreachable ({}: {})", db.severity(), db.message()),
            None => {
                let mut m = format!("unreachable ({e}");
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    m.push_str(&format!(": {s}"));
                    source = s.source();
                }
                m.push(')');
                m
            }
        };
        StoreError::Postgres {
            target: self.target.clone(),
            message,
        }
    }

    fn hash(&self, name: &str, password: &[u8]) -> Result<Zeroizing<String>, StoreError> {
        hash_new_password(name, password, &self.rng)
    }

    /// One `UPDATE`/`DELETE` on the account `name` (normalised first), which is `$1`
    /// in `sql`; [`StoreError::NotFound`] if it touched no row.
    fn update_named(
        &self,
        slot: &Mutex<Option<Client>>,
        name: &str,
        sql: &'static str,
        extra: Option<Param>,
    ) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        self.call(slot, async move |c| {
            let n = match extra {
                None => c.execute(sql, &[&name]).await?,
                Some(Param::Bool(b)) => c.execute(sql, &[&name, &b]).await?,
                Some(Param::Int(i)) => c.execute(sql, &[&name, &i]).await?,
                Some(Param::Text(t)) => c.execute(sql, &[&name, &t.as_str()]).await?,
            };
            if n == 0 {
                return Err(StoreError::NotFound(name).into());
            }
            Ok(())
        })
    }
}

/// The second parameter of [`PostgresStore::update_named`].
enum Param {
    Bool(bool),
    Int(i64),
    Text(Zeroizing<String>),
}

const ACCOUNT_COLUMNS: &str =
    "id, name, password_phc, created, last_login, disabled, failed_attempts";

async fn row_to_account(c: &impl GenericClient, row: &Row) -> Outcome<Account> {
    let id: i64 = row.get(0);
    let blobs = c
        .query(
            "SELECT key FROM account_keys WHERE account_id = $1 ORDER BY added, seq",
            &[&id],
        )
        .await?;
    let mut keys = Vec::with_capacity(blobs.len());
    for b in blobs {
        let blob: Vec<u8> = b.get(0);
        match PublicKey::from_bytes(&blob) {
            Ok(k) => keys.push(k),
            // Fail closed: a key we cannot parse authorises nothing.
            Err(e) => tracing::warn!(account_id = id, "skipping unreadable key: {e}"),
        }
    }
    Ok(Account {
        name: row.get(1),
        password_phc: row.get(2),
        keys,
        created: from_i64(row.get(3)),
        last_login: row.get::<_, Option<i64>>(4).map(from_i64),
        disabled: row.get(5),
        failed_attempts: u32::try_from(row.get::<_, i64>(6)).unwrap_or(u32::MAX),
    })
}

async fn account_id(c: &impl GenericClient, name: &str) -> Outcome<i64> {
    match c
        .query_opt("SELECT id FROM accounts WHERE name = $1", &[&name])
        .await?
    {
        Some(r) => Ok(r.get(0)),
        None => Err(StoreError::NotFound(name.to_owned()).into()),
    }
}

/// Authorises `key` for account `id`; [`StoreError::KeyExists`] if it already is.
async fn insert_key(c: &impl GenericClient, id: i64, key: &PublicKey, now: i64) -> Outcome<()> {
    let added = c
        .execute(
            "INSERT INTO account_keys (account_id, fingerprint, key, added)
             VALUES ($1, $2, $3, $4)",
            &[&id, &key.fingerprint(), &key.to_bytes(), &now],
        )
        .await;
    match added {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::KeyExists(key.fingerprint()).into()),
        Err(e) => Err(e.into()),
    }
}

impl AccountStore for PostgresStore {
    fn add_user(
        &self,
        name: &str,
        password: Option<&[u8]>,
        keys: &[PublicKey],
    ) -> Result<Account, StoreError> {
        let name = precheck_new_account(self, name, keys)?;
        // Hash outside any connection: Argon2id takes tens of milliseconds.
        let phc = password.map(|pw| self.hash(&name, pw)).transpose()?;
        let keys = keys.to_vec();
        self.call(&self.conn, async move |c| {
            let now = to_i64(unix_now());
            let tx = c.transaction().await?;
            let phc = phc.as_deref().map(String::as_str);
            let row = match tx
                .query_one(
                    &format!(
                        "INSERT INTO accounts (name, password_phc, created) VALUES ($1, $2, $3)
                         RETURNING {ACCOUNT_COLUMNS}"
                    ),
                    &[&name, &phc, &now],
                )
                .await
            {
                Ok(r) => r,
                Err(e) if is_unique_violation(&e) => return Err(StoreError::Exists(name).into()),
                Err(e) => return Err(e.into()),
            };
            let id: i64 = row.get(0);
            for key in &keys {
                insert_key(&tx, id, key, now).await?;
            }
            let account = row_to_account(&tx, &row).await?;
            // Committed (and, with PostgreSQL's default synchronous_commit, on disk)
            // when this returns.
            tx.commit().await?;
            Ok(account)
        })
    }

    fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        self.update_named(
            &self.conn,
            name,
            "DELETE FROM accounts WHERE name = $1",
            None,
        )
    }

    fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        self.update_named(
            &self.conn,
            name,
            "UPDATE accounts SET disabled = $2 WHERE name = $1",
            Some(Param::Bool(disabled)),
        )
    }

    fn set_password(&self, name: &str, password: &[u8]) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        // Fail fast on an unknown name before spending a hash on it.
        if self.get(&name)?.is_none() {
            return Err(StoreError::NotFound(name));
        }
        let phc = self.hash(&name, password)?;
        self.update_named(
            &self.conn,
            &name,
            "UPDATE accounts SET password_phc = $2 WHERE name = $1",
            Some(Param::Text(phc)),
        )
    }

    fn add_key(&self, name: &str, key: &PublicKey) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        let key = key.clone();
        self.call(&self.conn, async move |c| {
            let tx = c.transaction().await?;
            let id = account_id(&tx, &name).await?;
            // Lock the account row so two concurrent additions cannot both pass the
            // count below.
            tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&id])
                .await?;
            let count: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM account_keys WHERE account_id = $1",
                    &[&id],
                )
                .await?
                .get(0);
            if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_KEYS_PER_ACCOUNT {
                return Err(StoreError::TooManyKeys(name).into());
            }
            insert_key(&tx, id, &key, to_i64(unix_now())).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn remove_key(&self, name: &str, fingerprint: &str) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        let fingerprint = fingerprint.to_owned();
        self.call(&self.conn, async move |c| {
            let tx = c.transaction().await?;
            let id = account_id(&tx, &name).await?;
            let n = tx
                .execute(
                    "DELETE FROM account_keys WHERE account_id = $1 AND fingerprint = $2",
                    &[&id, &fingerprint],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NoSuchKey(fingerprint).into());
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<Account>, StoreError> {
        self.call(&self.conn, async move |c| {
            let tx = c.transaction().await?;
            let rows = tx
                .query(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"),
                    &[],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(row_to_account(&tx, row).await?);
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    fn get(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let Ok(name) = normalize_name(name) else {
            return Ok(None);
        };
        self.call(&self.conn, async move |c| {
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
                    &[&name],
                )
                .await?;
            let account = match row {
                Some(row) => Some(row_to_account(&tx, &row).await?),
                None => None,
            };
            tx.commit().await?;
            Ok(account)
        })
    }

    fn record_login(&self, name: &str, now_unix: u64) -> Result<(), StoreError> {
        self.update_named(
            &self.stats,
            name,
            "UPDATE accounts SET last_login = $2, failed_attempts = 0 WHERE name = $1",
            Some(Param::Int(to_i64(now_unix))),
        )
    }

    fn record_failure(&self, name: &str) -> Result<(), StoreError> {
        self.update_named(
            &self.stats,
            name,
            "UPDATE accounts SET failed_attempts = LEAST(failed_attempts + 1, 4294967295)
             WHERE name = $1",
            None,
        )
    }

    fn reset_failures(&self, name: &str) -> Result<(), StoreError> {
        self.update_named(
            &self.stats,
            name,
            "UPDATE accounts SET failed_attempts = 0 WHERE name = $1",
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(is_postgres_url("postgres://quill@db/quill"));
        assert!(is_postgres_url("postgresql://quill@db/quill"));
        assert!(!is_postgres_url("accounts.db"));
        assert!(!is_postgres_url("/srv/postgres://x"));
        assert_eq!(
            redact_url("postgres://quill:hunter22@db:5433/quill"),
            "postgres://quill:***@db:5433/quill"
        );
        assert_eq!(
            redact_url("postgres://quill@db/quill?password=s3cret&connect_timeout=2"),
            "postgres://quill@db/quill?password=***&connect_timeout=2"
        );
        assert_eq!(redact_url("postgresql://u:p@h"), "postgresql://u:***@h");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn a_malformed_url_is_one_line_without_the_password() {
        let e = PostgresStore::open("postgres://quill:hunter22@db:notaport/quill").unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains("hunter22"), "{msg}");
        assert!(msg.contains("postgres://USER@HOST"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
