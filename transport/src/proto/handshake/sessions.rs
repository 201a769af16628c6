//! QUIC v1 client: TLS session tickets shared by the connections made with clones of
//! one [`ClientConfig`](crate::proto::config::ClientConfig), for resumption (RFC 8446
//! §2.2) and 0-RTT.
//!
//! rustls resumes a session only through the same verifier object (the same `Arc`)
//! that stored it, while quill's verifier belongs to one connection (it records the
//! host key that connection saw). The configurations that share [`Sessions`] therefore
//! share one forwarding verifier, which hands each call to the verifier of the
//! connection rustls is working for: the handshake sets it on its thread for the
//! duration of each rustls call ([`with_verifier`]).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

thread_local! {
    /// The verifier of the connection rustls is running for on this thread.
    static CURRENT: RefCell<Option<Arc<dyn ServerCertVerifier>>> = const { RefCell::new(None) };
}

/// TLS session tickets kept by a QUIC v1 client, shared by every connection made with
/// clones of the [`ClientConfig`](crate::proto::config::ClientConfig) holding them.
#[derive(Clone)]
pub struct Sessions(Arc<Shared>);

struct Shared {
    store: Resumption,
    verifier: Arc<dyn ServerCertVerifier>,
    no_client_cert: Arc<dyn ResolvesClientCert>,
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
            verifier: Arc::new(Forward),
            no_client_cert: Arc::new(NoClientCert),
        }))
    }

    /// Puts the shared store and verifier into one connection's rustls configuration.
    pub(crate) fn apply(&self, tls: &mut rustls::ClientConfig) {
        tls.resumption = self.0.store.clone();
        tls.dangerous()
            .set_certificate_verifier(self.0.verifier.clone());
        tls.client_auth_cert_resolver = self.0.no_client_cert.clone();
    }
}

/// Runs `f` (a rustls call of one connection) with `verifier` as that connection's.
pub(crate) fn with_verifier<R>(verifier: &Arc<dyn ServerCertVerifier>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn ServerCertVerifier>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(verifier.clone()));
    let _restore = Restore(previous);
    f()
}

fn current() -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    CURRENT
        .with(|c| c.borrow().clone())
        .ok_or_else(|| rustls::Error::General("no certificate verifier for this connection".into()))
}

/// The verifier the configurations sharing [`Sessions`] hold: it forwards to the
/// current connection's.
#[derive(Debug)]
struct Forward;

impl ServerCertVerifier for Forward {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        current()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        current().map_or_else(|_| Vec::new(), |v| v.supported_verify_schemes())
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
