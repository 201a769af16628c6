//! Caps on sessions per account and per source address.
//!
//! Every logged-in connection pins its windows and buffers until it closes or times
//! out (docs/ARCHITECTURE.md, "Limits"), so one user or one address must not be able
//! to hold an unbounded number of them. [`SessionCaps`] counts them with RAII
//! [`SessionSlot`]s: a slot is taken for the address when a login is requested, is
//! extended to the account when the login is accepted, and is attached to the
//! connection (`Connection::attach`), so it is released exactly when the endpoint
//! frees the connection, however it ends. No handler has to remember to count down.
//!
//! Memory: one map entry per address and per account with live sessions.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Default most logged-in sessions per account (`max-connections-per-user`).
pub const DEFAULT_MAX_PER_USER: usize = 16;
/// Default most sessions per source address (`max-connections-per-address`).
pub const DEFAULT_MAX_PER_ADDRESS: usize = 32;

/// Which cap a new session would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapExceeded {
    /// The account already has this many sessions.
    User(usize),
    /// The address already has this many sessions.
    Address(usize),
}

impl fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapExceeded::User(n) => write!(
                f,
                "too many connections for this account (the server allows {n}); \
                 close some and try again"
            ),
            CapExceeded::Address(n) => write!(
                f,
                "too many connections from your address (the server allows {n}); \
                 close some and try again"
            ),
        }
    }
}

impl std::error::Error for CapExceeded {}

#[derive(Debug, Default)]
struct Counts {
    users: HashMap<String, usize>,
    addresses: HashMap<IpAddr, usize>,
}

/// Counts sessions per account and per address; see the [module documentation](self).
/// Cloning shares the counts and the caps ([`SessionCaps::set_caps`] changes them for
/// every clone, e.g. when a server reloads its configuration).
#[derive(Debug, Clone)]
pub struct SessionCaps {
    /// `(per account, per address)`; 0 means no cap.
    caps: Arc<(AtomicUsize, AtomicUsize)>,
    counts: Arc<Mutex<Counts>>,
}

impl Default for SessionCaps {
    fn default() -> Self {
        SessionCaps::new(DEFAULT_MAX_PER_USER, DEFAULT_MAX_PER_ADDRESS)
    }
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionCaps {
    /// Caps of `max_per_user` sessions per account and `max_per_address` per source
    /// address (0 means no cap).
    pub fn new(max_per_user: usize, max_per_address: usize) -> SessionCaps {
        SessionCaps {
            caps: Arc::new((
                AtomicUsize::new(max_per_user),
                AtomicUsize::new(max_per_address),
            )),
            counts: Arc::default(),
        }
    }

    /// Changes the caps for new sessions (0 means no cap). Sessions already counted
    /// stay; an account or address over a lowered cap gets no new session until it is
    /// under it again.
    pub fn set_caps(&self, max_per_user: usize, max_per_address: usize) {
        self.caps.0.store(max_per_user, Ordering::Relaxed);
        self.caps.1.store(max_per_address, Ordering::Relaxed);
    }

    /// `(most sessions per account, most per address)`; 0 means no cap.
    pub fn caps(&self) -> (usize, usize) {
        (
            self.caps.0.load(Ordering::Relaxed),
            self.caps.1.load(Ordering::Relaxed),
        )
    }

    /// Takes a slot for a session from `address`, or says which cap is reached.
    pub(crate) fn admit_address(&self, address: IpAddr) -> Result<SessionSlot, CapExceeded> {
        let max_per_address = self.caps().1;
        let mut c = lock(&self.counts);
        let n = c.addresses.entry(address).or_insert(0);
        if max_per_address > 0 && *n >= max_per_address {
            if *n == 0 {
                c.addresses.remove(&address);
            }
            return Err(CapExceeded::Address(max_per_address));
        }
        *n += 1;
        Ok(SessionSlot {
            caps: self.clone(),
            address,
            user: None,
        })
    }

    /// Sessions counted for `account` now.
    pub fn sessions_of_user(&self, account: &str) -> usize {
        lock(&self.counts).users.get(account).copied().unwrap_or(0)
    }

    #[cfg(test)]
    /// Sessions counted for `address` now.
    pub(crate) fn sessions_from(&self, address: IpAddr) -> usize {
        lock(&self.counts)
            .addresses
            .get(&address)
            .copied()
            .unwrap_or(0)
    }
}

/// One counted session; dropping it releases its counts.
#[derive(Debug)]
pub struct SessionSlot {
    caps: SessionCaps,
    address: IpAddr,
    user: Option<String>,
}

impl SessionSlot {
    /// Extends the slot to `account` (once logged in), or says the account's cap is
    /// reached (the slot then still holds only its address).
    pub(crate) fn admit_user(&mut self, account: &str) -> Result<(), CapExceeded> {
        if self.user.is_some() {
            return Ok(());
        }
        let max = self.caps.caps().0;
        let mut c = lock(&self.caps.counts);
        let n = c.users.entry(account.to_owned()).or_insert(0);
        if max > 0 && *n >= max {
            if *n == 0 {
                c.users.remove(account);
            }
            return Err(CapExceeded::User(max));
        }
        *n += 1;
        drop(c);
        self.user = Some(account.to_owned());
        Ok(())
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.caps.counts);
        if let Some(n) = c.addresses.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                c.addresses.remove(&self.address);
            }
        }
        if let Some(user) = self.user.take() {
            if let Some(n) = c.users.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    c.users.remove(&user);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_ip as ip;

    #[test]
    fn caps_count_and_slots_release_on_drop() {
        let caps = SessionCaps::new(2, 3);
        let mut a = caps.admit_address(ip(1)).unwrap();
        let mut b = caps.admit_address(ip(1)).unwrap();
        let mut c = caps.admit_address(ip(2)).unwrap();
        a.admit_user("alice").unwrap();
        b.admit_user("alice").unwrap();
        assert_eq!(c.admit_user("alice"), Err(CapExceeded::User(2)));
        c.admit_user("bob").unwrap();
        let d = caps.admit_address(ip(1)).unwrap();
        assert_eq!(
            caps.admit_address(ip(1)).unwrap_err(),
            CapExceeded::Address(3)
        );
        assert_eq!(caps.sessions_of_user("alice"), 2);
        drop(a);
        assert_eq!(caps.sessions_of_user("alice"), 1);
        assert_eq!(caps.sessions_from(ip(1)), 2);
        drop((b, c, d));
        assert_eq!(caps.sessions_from(ip(1)), 0);
        assert_eq!(caps.sessions_of_user("bob"), 0);
        assert!(lock(&caps.counts).users.is_empty());
        assert!(lock(&caps.counts).addresses.is_empty());
    }

    #[test]
    fn zero_means_no_cap() {
        let caps = SessionCaps::new(0, 0);
        let slots: Vec<_> = (0..100)
            .map(|_| {
                let mut s = caps.admit_address(ip(1)).unwrap();
                s.admit_user("alice").unwrap();
                s
            })
            .collect();
        assert_eq!(caps.sessions_of_user("alice"), 100);
        drop(slots);
        assert_eq!(caps.sessions_of_user("alice"), 0);
    }
}
