//! Accounts and login: the client side (known hosts, credentials).

pub mod credentials;
pub mod known_hosts;
