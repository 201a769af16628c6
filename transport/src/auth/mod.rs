//! Accounts and login.
//!
//! Server side:
//! - [`accounts`]: the [`AccountStore`](accounts::AccountStore) trait, account-name and
//!   password rules, and [`SqliteStore`](accounts::SqliteStore), the durable SQLite
//!   implementation an operator can inspect.
//! - [`limiter`]: failure counters per (account, address), per address and per account
//!   with exponential backoff that a correct login from a clean address always passes,
//!   and the per-address registration budget, in bounded memory.
//! - [`sessions`]: caps on sessions per account and per address, counted by slots that
//!   live as long as the connections.
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
pub mod sessions;
