//! Accounts and login.
//!
//! Server side:
//! - [`accounts`]: the [`AccountStore`](accounts::AccountStore) trait, account-name and
//!   password rules, and [`SqliteStore`](accounts::SqliteStore), the durable SQLite
//!   implementation an operator can inspect.
//! - [`limiter`]: per-account and per-source-address failure counters with exponential
//!   backoff, in bounded memory.
//! - [`login`]: [`LoginVerifier`](login::LoginVerifier), which turns a
//!   [`LoginRequest`](crate::proto::LoginRequest) into a verdict. It is slow by design
//!   (Argon2id, database writes) and runs on the worker pool, never on the event loop.
//!
//! Client side: [`known_hosts`] (server identity, like SSH's) and [`credentials`]
//! (passwords and identity files).

pub mod accounts;
pub mod credentials;
pub mod known_hosts;
pub mod limiter;
pub mod login;
