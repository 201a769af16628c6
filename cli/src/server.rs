//! TEMPORARY on the cli-client branch: just enough of `quill server`'s module for
//! `quill demo` — [`ServerOptions`], [`spawn`], [`RunningServer`] — built on the test
//! server in `cli/tests/common/services.rs`. The server helper's `server.rs` replaces
//! this file at merge (same API); `quill server` itself is not implemented here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::proto::endpoint::RetryPolicy;
use quill_transport::TransportConfig;

use crate::args::ServerArgs;
use crate::exit::{CliError, CliResult};

#[allow(dead_code)]
#[path = "../tests/common/services.rs"]
mod services;

/// `quill server` (being written on another branch).
pub fn run(_: &ServerArgs) -> CliResult {
    // TEMPORARY: `Request::parse` is the real server's; keep it referenced until then.
    let _ = crate::service::Request::parse;
    Err(CliError::usage("server is being built"))
}

/// What an in-process server runs with.
pub struct ServerOptions {
    /// Listen address.
    pub listen: SocketAddr,
    /// Host key.
    pub host_key: Arc<HostKeyPair>,
    /// Account database (created if missing).
    pub accounts: PathBuf,
    /// Root directory for PUT/GET.
    pub root: Option<PathBuf>,
    /// Let clients register.
    pub allow_register: bool,
    /// Transport behaviour.
    pub transport: TransportConfig,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// A server running on a background thread.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The host key's fingerprint.
    pub fingerprint: String,
    inner: services::Running,
}

impl RunningServer {
    /// Drains connections and stops.
    pub fn stop(self) {
        self.inner.stop();
    }
}

/// Starts a server on a background thread.
pub fn spawn(opts: ServerOptions) -> Result<RunningServer, CliError> {
    let inner = services::start(services::ServiceOptions {
        listen: opts.listen,
        host_key: opts.host_key,
        accounts: opts.accounts,
        root: opts.root,
        allow_register: opts.allow_register,
        transport: opts.transport,
        retry: opts.retry,
    })
    .map_err(CliError::connection)?;
    Ok(RunningServer {
        addr: inner.addr,
        fingerprint: inner.fingerprint.clone(),
        inner,
    })
}
