//! Accounts and login.
//!
//! Server side:
//! - `accounts`: the [`AccountStore`] trait, account-name and
//!   password rules, and [`SqliteStore`], the durable SQLite
//!   implementation an operator can inspect; [`open_store`] picks it or
//! - `postgres`: [`PostgresStore`], the accounts of a fleet in one PostgreSQL
//!   database, from an `--accounts postgres://...` URL.
//! - `limiter`: failure counters per (account, address), per address and per account
//!   with exponential backoff that a correct login from a clean address always passes,
//!   and the per-address registration budget, in bounded memory.
//! - `sessions`: caps on sessions per account and per address, counted by slots that
//!   live as long as the connections.
//! - `key_cache`: [`KeyCache`], the authorised keys of recent accounts in memory, so
//!   that a public-key login does not read the store each time.
//! - `login`: [`LoginVerifier`], which turns a
//!   [`LoginRequest`](crate::proto::LoginRequest) into a verdict. It is slow by design
//!   (Argon2id, database writes) and runs on the worker pool, never on the event loop.
//!
//! Client side: `known_hosts` (server identity, like SSH's) and `credentials`
//! (passwords and identity files).

pub(crate) mod accounts;
pub(crate) mod credentials;
pub(crate) mod key_cache;
pub(crate) mod known_hosts;
pub(crate) mod limiter;
pub(crate) mod login;
pub(crate) mod postgres;
pub(crate) mod sessions;

/// `192.0.2.n` (RFC 5737 TEST-NET-1), the client address of the unit tests.
#[cfg(test)]
pub(crate) fn test_ip(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n))
}

pub use accounts::{
    check_new_password, normalize_name, open_store, Account, AccountStore, SqliteStore, StoreError,
    MAX_KEYS_PER_ACCOUNT, MAX_NAME_LEN, MIGRATIONS, MIN_PASSWORD_LEN, SCHEMA_VERSION,
};
pub use credentials::{
    has_terminal, prompt_password, read_password, Credentials, CredentialsError,
};
pub use key_cache::{CachedAccount, KeyCache, KeyLookup, KEY_CACHE_ACCOUNTS, KEY_CACHE_RECHECK};
pub use known_hosts::{
    default_known_hosts_path, known_hosts_policy, known_hosts_policy_with, parse_fingerprint,
    pinned_policy, quill_home, KnownHosts, KnownHostsError, Lookup, TrustMode, KNOWN_HOSTS_ENV,
    QUILL_HOME_ENV,
};
pub use limiter::{LimitKey, Limiter, LimiterConfig};
pub use login::{
    Decision, LoginRecord, LoginVerifier, Verdict, NAME_TAKEN, REFUSED, REGISTRATION_CLOSED,
    STORE_UNAVAILABLE, TOO_MANY_REGISTRATIONS,
};
pub use postgres::{
    is_postgres_url, redact_url, PostgresStore, CONNECT_TIMEOUT, PG_SCHEMA_VERSION, QUERY_TIMEOUT,
};
pub use sessions::{
    CapExceeded, SessionCaps, SessionSlot, DEFAULT_MAX_PER_ADDRESS, DEFAULT_MAX_PER_USER,
};
