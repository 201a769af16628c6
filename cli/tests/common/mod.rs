//! The real `quill server` binary as a test server: a temporary host key, account
//! database and file root; stopped with SIGTERM (graceful) when dropped.

#![allow(dead_code)]

/// SIGTERM, bounded waits and SIGKILL for child processes (the interop suite's module;
/// this crate's tests cannot depend on that crate).
#[path = "../../../interop-tests/src/child.rs"]
pub mod child;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::OsRandom;
use quill_transport::auth::{AccountStore, SqliteStore};

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
    /// The command line, for [`TestServer::restart`].
    command: Vec<OsString>,
}

/// How to start a [`TestServer`] beyond the defaults.
#[derive(Default)]
pub struct Setup<'a> {
    /// Let clients create accounts.
    pub allow_register: bool,
    /// More `quill server` options.
    pub args: &'a [&'a str],
    /// Run the server in its own mount namespace (`unshare -m`, needs root) after this
    /// shell script, which sees the root directory as `$QUILL_ROOT` (to mount a small
    /// file system there, say). The server's view of its root is then at
    /// [`TestServer::server_view`].
    pub namespace_script: Option<&'a str>,
}

impl TestServer {
    /// Starts `quill server` with the account [`USER`]/[`PASSWORD`].
    pub fn start(allow_register: bool) -> TestServer {
        TestServer::start_with(Setup {
            allow_register,
            ..Setup::default()
        })
    }

    /// Starts `quill server` as `setup` says.
    pub fn start_with(setup: Setup<'_>) -> TestServer {
        let allow_register = setup.allow_register;
        let ServerFiles {
            dir,
            root,
            accounts,
            key_path,
            key,
        } = ServerFiles::new();
        let mut command: Vec<OsString> = Vec::new();
        if let Some(script) = setup.namespace_script {
            command.extend(["unshare", "-m", "sh", "-e", "-c"].map(OsString::from));
            command.push(format!("{script}\nexec \"$0\" \"$@\"").into());
        }
        command.push(env!("CARGO_BIN_EXE_quill").into());
        command
            .extend(["server", "--listen", "127.0.0.1:0", "--retry", "never"].map(OsString::from));
        command.extend([
            "--key".into(),
            key_path.into_os_string(),
            "--accounts".into(),
            accounts.into_os_string(),
            "--root".into(),
            root.clone().into_os_string(),
        ]);
        if allow_register {
            command.push("--allow-register".into());
        }
        command.extend(setup.args.iter().map(OsString::from));
        let (child, addr) = spawn_server(&command, &root);
        TestServer {
            addr,
            fingerprint: key.public().fingerprint(),
            root,
            dir,
            child: Some(child),
            command,
        }
    }

    /// The server process's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The file space of [`USER`]: `ROOT/alice`, where the server keeps that account's
    /// files (created here as the server would: mode 0700).
    pub fn space(&self) -> PathBuf {
        space_of(&self.root, USER)
    }

    /// The server's root as the server sees it (inside its mount namespace, if any).
    pub fn server_view(&self) -> PathBuf {
        let root = self.root.strip_prefix("/").expect("absolute root");
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(root)
    }

    /// SIGKILL: the server cleans nothing up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again (after [`TestServer::kill`]); `addr` changes.
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn_server(&self.command, &self.root);
        self.child = Some(child);
        self.addr = addr;
    }
}

/// What a test server needs on disk, in a temporary directory: `root/`, an account
/// database with [`USER`]/[`PASSWORD`], and a host key.
pub struct ServerFiles {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// `DIR/root`, the file service's root.
    pub root: PathBuf,
    /// `DIR/accounts.db`.
    pub accounts: PathBuf,
    /// `DIR/host.key`.
    pub key_path: PathBuf,
    /// The host key.
    pub key: HostKeyPair,
}

impl ServerFiles {
    /// Creates them.
    pub fn new() -> ServerFiles {
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
        ServerFiles {
            dir,
            root,
            accounts,
            key_path,
            key,
        }
    }
}

/// `root/account`, created mode 0700 if missing (what the server does on the
/// account's first request).
pub fn space_of(root: &std::path::Path, account: &str) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let space = root.join(account);
    if !space.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&space)
            .expect("file space");
    }
    space
}

/// Runs the server command; returns it and its address once it listens.
pub fn spawn_server(command: &[OsString], root: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .env("QUILL_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quill server starts");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut addr = None;
    let mut log = String::new();
    while addr.is_none() {
        let start = log.len();
        if err.read_line(&mut log).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quill server exited before listening: {log}");
        }
        if let Some(a) = log[start..].split("listening ").nth(1) {
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
    (child, addr.expect("set"))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child::stop(&mut child, Duration::from_secs(10));
        }
    }
}

/// A command's standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a command exited with `code` and said `needle` on standard error.
pub fn assert_exit(o: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert!(stderr(o).contains(needle), "{}", stderr(o));
}

/// The fingerprint of some other key (for host-key mismatch tests).
pub fn other_fingerprint() -> String {
    HostKeyPair::generate(&OsRandom::new())
        .expect("key")
        .public()
        .fingerprint()
}
