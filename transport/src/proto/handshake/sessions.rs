//! QUIC v1 client: TLS session tickets shared by the connections made with clones of
//! one [`ClientConfig`](crate::proto::config::ClientConfig), for resumption (RFC 8446
//! §2.2) and 0-RTT.
//!
//! rustls resumes a session only through the same verifier object (the same `Arc`)
//! that stored it, so the configurations that share [`Sessions`] share one verifier
//! too, built on first use. A host-key check belongs to one connection (it records
//! the key that connection saw): the shared host-key verifier asks the check of the
//! connection rustls is working for, set on its thread for the duration of each
//! rustls call ([`with_check`]).

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex};

use quill_crypto::hostkey::PublicKey;
use quill_crypto::tls::{HostKeyCheck, ServerTrust};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

thread_local! {
    /// The host-key check of the connection rustls is running for on this thread.
    static CURRENT: RefCell<Option<Arc<HostKeyCheck>>> = const { RefCell::new(None) };
}

/// TLS session tickets kept by a QUIC v1 client, shared by every connection made with
/// clones of the [`ClientConfig`](crate::proto::config::ClientConfig) holding them.
#[derive(Clone)]
pub struct Sessions(Arc<Shared>);

struct Shared {
    store: Resumption,
    /// The verifier of the configurations sharing the store, and what it trusts.
    verifier: Mutex<Option<(Trust, Arc<dyn ServerCertVerifier>)>>,
    no_client_cert: Arc<dyn ResolvesClientCert>,
}

/// What a shared verifier was built for.
enum Trust {
    HostKey,
    Roots(Arc<rustls::RootCertStore>),
    Unverified,
}

impl Trust {
    fn matches(&self, trust: &ServerTrust) -> bool {
        match (self, trust) {
            (Trust::HostKey, ServerTrust::HostKey(_))
            | (Trust::Unverified, ServerTrust::Unverified) => true,
            (Trust::Roots(a), ServerTrust::Roots(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    /// Up to `n` sessions kept in memory (by server name; the latest tickets of each).
    pub fn in_memory(n: usize) -> Self {
        Sessions(Arc::new(Shared {
            store: Resumption::in_memory_sessions(n),
            verifier: Mutex::new(None),
            no_client_cert: Arc::new(NoClientCert),
        }))
    }

    /// Puts the shared store and the shared verifier for `trust` into one
    /// connection's rustls configuration. A configuration that trusts otherwise
    /// than the last one replaces the shared verifier (its sessions then no longer
    /// resume).
    pub(crate) fn apply(
        &self,
        tls: &mut rustls::ClientConfig,
        trust: &ServerTrust,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(), quill_crypto::Error> {
        let mut slot = self.0.verifier.lock().unwrap_or_else(|e| e.into_inner());
        let verifier = match &*slot {
            Some((t, v)) if t.matches(trust) => v.clone(),
            _ => {
                let (t, shared) = match trust {
                    ServerTrust::HostKey(_) => (
                        Trust::HostKey,
                        ServerTrust::HostKey(Arc::new(current_check)),
                    ),
                    ServerTrust::Roots(r) => (Trust::Roots(r.clone()), trust.clone()),
                    ServerTrust::Unverified => (Trust::Unverified, ServerTrust::Unverified),
                };
                let v = quill_crypto::tls::server_cert_verifier(shared, provider)?;
                *slot = Some((t, v.clone()));
                v
            }
        };
        tls.resumption = self.0.store.clone();
        tls.dangerous().set_certificate_verifier(verifier);
        tls.client_auth_cert_resolver = self.0.no_client_cert.clone();
        Ok(())
    }
}

/// Runs `f` (a rustls call of one connection) with `check` as that connection's
/// host-key check.
pub(crate) fn with_check<R>(check: &Arc<HostKeyCheck>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<HostKeyCheck>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(check.clone()));
    let _restore = Restore(previous);
    f()
}

/// The shared host-key verifier's check: the current connection's.
fn current_check(key: &PublicKey) -> Result<(), String> {
    match CURRENT.with(|c| c.borrow().clone()) {
        Some(check) => check(key),
        None => Err("no host-key check for this connection".into()),
    }
}

/// No client certificate (what `with_no_client_auth` sets, as one shared object).
#[derive(Debug)]
struct NoClientCert;

impl ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}
