//! The real `quill server` binary as a test server: a temporary host key, account
//! database and file root; stopped with SIGTERM (graceful) when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::OsRandom;
use quill_transport::auth::accounts::{AccountStore, SqliteStore};

/// The account every test server has.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "correct horse battery staple";

/// A `quill server` process on 127.0.0.1.
pub struct TestServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Host key fingerprint.
    pub fingerprint: String,
    /// The server's file root.
    pub root: PathBuf,
    /// Temporary directory (host key, accounts, root); removed on drop.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestServer {
    /// Starts `quill server` with the account [`USER`]/[`PASSWORD`].
    pub fn start(allow_register: bool) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root");
        let accounts = dir.path().join("accounts.db");
        SqliteStore::open(&accounts)
            .expect("accounts")
            .add_user(USER, Some(PASSWORD.as_bytes()), &[])
            .expect("add user");
        let key_path = dir.path().join("host.key");
        let key = HostKeyPair::generate(&OsRandom::new()).expect("key");
        key.write_to(&key_path).expect("write key");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quill"));
        cmd.args(["server", "--listen", "127.0.0.1:0", "--retry", "never"])
            .arg("--key")
            .arg(&key_path)
            .arg("--accounts")
            .arg(&accounts)
            .arg("--root")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if allow_register {
            cmd.arg("--allow-register");
        }
        let mut child = cmd.spawn().expect("quill server starts");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut addr = None;
        let mut line = String::new();
        while addr.is_none() {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("quill server exited before listening");
            }
            if let Some(a) = line.split("listening ").nth(1) {
                addr = Some(a.split_whitespace().next().unwrap_or("").to_string());
            }
        }
        // Keep draining its log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        TestServer {
            addr: addr.expect("set"),
            fingerprint: key.public().fingerprint(),
            root,
            dir,
            child: Some(child),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
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
