//! TEMPORARY (cli-client branch): an in-process server for the client tests, until the
//! real `quill server` lands at merge (then these tests start the binary instead).

#![allow(dead_code)]

mod services;

use std::path::PathBuf;
use std::sync::Arc;

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::OsRandom;
use quill_transport::auth::accounts::{AccountStore, SqliteStore};
use quill_transport::proto::endpoint::RetryPolicy;
use quill_transport::TransportConfig;

/// The account every test server has.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "correct horse battery staple";

/// A server on 127.0.0.1 with a temporary host key, account database and root.
pub struct TestServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Host key fingerprint.
    pub fingerprint: String,
    /// The server's file root.
    pub root: PathBuf,
    /// Temporary directory (host key, accounts, root); removed on drop.
    pub dir: tempfile::TempDir,
    running: Option<services::Running>,
}

impl TestServer {
    /// Starts a server with the account [`USER`]/[`PASSWORD`].
    pub fn start(allow_register: bool) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root");
        let accounts = dir.path().join("accounts.db");
        SqliteStore::open(&accounts)
            .expect("accounts")
            .add_user(USER, Some(PASSWORD.as_bytes()), &[])
            .expect("add user");
        let host_key = Arc::new(HostKeyPair::generate(&OsRandom::new()).expect("key"));
        let running = services::start(services::ServiceOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            host_key,
            accounts,
            root: Some(root.clone()),
            allow_register,
            transport: TransportConfig::default(),
            retry: RetryPolicy::Never,
        })
        .expect("server starts");
        TestServer {
            addr: running.addr.to_string(),
            fingerprint: running.fingerprint.clone(),
            root,
            dir,
            running: Some(running),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// The fingerprint of some other key (for host-key mismatch tests).
pub fn other_fingerprint() -> String {
    HostKeyPair::generate(&OsRandom::new())
        .expect("key")
        .public()
        .fingerprint()
}
