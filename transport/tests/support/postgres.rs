//! A throw-away PostgreSQL server for tests: Debian's `postgresql` package (`initdb`,
//! `postgres`, `pg_isready`, `createdb` under /usr/lib/postgresql/VERSION/bin, or the
//! directory in `QUILL_PG_BIN`) in a temporary directory, trust authentication, on a
//! free loopback port, stopped and removed on drop. `.ci/deps` installs the package.
//!
//! PostgreSQL refuses to run as root; as root the server runs as the `postgres` user
//! the package creates. Shared by transport/tests and cli/tests (`#[path]`).

#![allow(dead_code)]

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running throw-away PostgreSQL server.
pub struct TempPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `(uid, gid)` to run the server as, when the test runs as root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUILL_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|b| {
        b.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install the \
             Debian package `postgresql` (bash .ci/deps) or set QUILL_PG_BIN"
        )
    })
}

/// The `postgres` user's ids when we are root (PostgreSQL will not run as root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").unwrap();
    // SAFETY: a valid C string; the result is read at once, before any other call
    // that could reuse the static buffer (tests run this under no shared lock, but
    // only ever look up the same user).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as: install \
         the Debian package `postgresql` (bash .ci/deps)"
    );
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TempPostgres {
    /// Creates a cluster in a new temporary directory and starts it.
    pub fn start() -> TempPostgres {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quill-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run_as = run_as();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let mut pg = TempPostgres {
            bin: bin_dir(),
            dir,
            port: free_port(),
            run_as,
            child: None,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "quill",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.resume();
        pg
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (the cluster is in `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for database `db` as the superuser `quill`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://quill@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-U", "quill", "-p"])
            .arg(self.port.to_string())
            .arg(name)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    /// Starts the server (again, after [`TempPostgres::kill`]) on the same port and
    /// data, and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.join("postgres.log")).unwrap();
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(self.dir.join("postgres.log"), Some(uid), Some(gid)).unwrap();
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-U", "quill", "-p"])
                .arg(self.port.to_string())
                .status()
                .expect("run pg_isready");
            if ready.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "postgres exited with {status} at start: {}",
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server and every backend at once (SIGKILL), as a crash or a lost
    /// host would: no backend lives on to answer one more query. (Backends run in
    /// sessions of their own, so the process group is not enough.)
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pm = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child (stopped so that it forks no more) and on
        // its children, found while it still is their parent.
        unsafe { libc::kill(pm, libc::SIGSTOP) };
        let backends = children_of(pm);
        for &b in &backends {
            unsafe { libc::kill(b, libc::SIGKILL) };
        }
        unsafe { libc::kill(pm, libc::SIGKILL) };
        let _ = child.wait();
        // Their sockets close when they are gone (reaped by init); bounded wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        while backends
            .iter()
            .any(|b| Path::new(&format!("/proc/{b}")).exists() && !is_zombie(*b))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl TempPostgres {
    /// Sends `signal` to the server and every backend (SIGSTOP freezes it with its
    /// connections open; SIGCONT resumes it).
    pub fn signal_all(&self, signal: libc::c_int) {
        let Some(child) = &self.child else {
            return;
        };
        let pm = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child and its children.
        for p in children_of(pm).into_iter().chain([pm]) {
            unsafe { libc::kill(p, signal) };
        }
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        if stat_field(p, 1).and_then(|f| f.parse::<libc::pid_t>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn is_zombie(pid: libc::pid_t) -> bool {
    stat_field(pid, 0).as_deref() == Some("Z")
}

/// Field `n` after the command name of /proc/PID/stat (0: state, 1: ppid).
fn stat_field(pid: libc::pid_t, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n).map(str::to_owned)
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // A test that failed while the server was frozen must not leave it stopped.
        self.signal_all(libc::SIGCONT);
        if let Some(mut child) = self.child.take() {
            // SIGINT: "fast shutdown" (disconnect clients, stop), bounded below.
            // SAFETY: the pid is our own child's, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
