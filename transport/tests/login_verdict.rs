//! A login verdict computed on the worker pool lands only on the session that asked
//! for it, over real loopback sockets: session A (alice, right password) ends while
//! its verdict is computed, session B reuses A's slab handle, and A's "accept alice"
//! must not log B in.
//!
//! Deterministic: the account store holds every lookup until the test releases it,
//! so the order (A asks, A ends and is freed, B asks in A's slot, A's verdict comes
//! back, B's verdict comes back) does not depend on timing. Every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use quill_crypto::hostkey::PublicKey;
use quill_transport::auth::{Account, AccountStore, SqliteStore, StoreError};
use quill_transport::auth::{LoginVerifier, Verdict};
use quill_transport::driver::blocking::{self, ConnectError};
use quill_transport::driver::verify_on_pool;
use quill_transport::driver::{Context, Handler, LoopHandle};
use quill_transport::proto::{ConnectionError, Event, ServerConfig, TransportConfig};
use quill_transport::proto::{ConnectionHandle, EndpointConfig};
use support::auth_server::{client, host_key, password, store, temp_dir};
use support::bind_loop;

/// Longest any one step of the test may take before it fails.
const STEP: Duration = Duration::from_secs(8);

/// An account store whose lookups (`get`, the first thing a login verification does)
/// wait, in arrival order, until the test releases them.
struct GatedStore {
    inner: Arc<SqliteStore>,
    gate: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Default)]
struct Gate {
    /// Lookups that have started.
    arrived: usize,
    /// Lookups allowed to go on (the first `released` to arrive).
    released: usize,
}

impl GatedStore {
    fn arrived(&self) -> usize {
        self.gate.lock().unwrap().arrived
    }

    fn release_one(&self) {
        self.gate.lock().unwrap().released += 1;
        self.changed.notify_all();
    }
}

impl AccountStore for GatedStore {
    fn add_user(
        &self,
        name: &str,
        password: Option<&[u8]>,
        keys: &[PublicKey],
    ) -> Result<Account, StoreError> {
        self.inner.add_user(name, password, keys)
    }
    fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        self.inner.remove_user(name)
    }
    fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        self.inner.set_disabled(name, disabled)
    }
    fn set_password(&self, name: &str, password: &[u8]) -> Result<(), StoreError> {
        self.inner.set_password(name, password)
    }
    fn add_key(&self, name: &str, key: &PublicKey) -> Result<(), StoreError> {
        self.inner.add_key(name, key)
    }
    fn remove_key(&self, name: &str, fingerprint: &str) -> Result<(), StoreError> {
        self.inner.remove_key(name, fingerprint)
    }
    fn list(&self) -> Result<Vec<Account>, StoreError> {
        self.inner.list()
    }
    fn get(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let mut gate = self.gate.lock().unwrap();
        let ticket = gate.arrived;
        gate.arrived += 1;
        self.changed.notify_all();
        // Bounded: a test that never releases fails on its own wait first.
        let (_gate, _) = self
            .changed
            .wait_timeout_while(gate, 2 * STEP, |g| g.released <= ticket)
            .unwrap();
        self.inner.get(name)
    }
    fn record_login(&self, name: &str, now_unix: u64) -> Result<(), StoreError> {
        self.inner.record_login(name, now_unix)
    }
    fn record_failure(&self, name: &str) -> Result<(), StoreError> {
        self.inner.record_failure(name)
    }
    fn reset_failures(&self, name: &str) -> Result<(), StoreError> {
        self.inner.reset_failures(name)
    }
    // The change counter (not gated): with it the verifier's key cache works.
    fn auth_version(&self) -> Result<Option<u64>, StoreError> {
        self.inner.auth_version()
    }
    fn local_auth_changes(&self) -> u64 {
        self.inner.local_auth_changes()
    }
}

/// What the server saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    LoginRequested(ConnectionHandle, String),
    /// `verify_on_pool`'s `on_verdict`: a verdict came back from the pool.
    Verdict(ConnectionHandle, Option<String>),
    /// The server logged a session in (`Event::Connected` on the server side).
    LoggedIn(ConnectionHandle, String),
    Lost(ConnectionHandle),
}

struct RecordingServer {
    verifier: Arc<LoginVerifier>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sessions: Arc<AtomicUsize>,
}

impl Handler for RecordingServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        let mut seen = self.seen.lock().unwrap();
        match event {
            Event::LoginRequested(req) => {
                seen.push(Seen::LoginRequested(h, req.user.clone()));
                drop(seen);
                let log = self.seen.clone();
                verify_on_pool(ctx, &self.verifier, h, req, move |_, h, verdict| {
                    let account = match verdict {
                        Verdict::Accept { account, .. } => Some(account.clone()),
                        Verdict::Refuse { .. } => None,
                    };
                    log.lock().unwrap().push(Seen::Verdict(h, account));
                });
            }
            Event::Connected { account, .. } => seen.push(Seen::LoggedIn(h, account)),
            Event::ConnectionLost(_) => seen.push(Seen::Lost(h)),
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        self.sessions.store(ctx.connections(), Ordering::SeqCst);
    }
}

/// A client that connects and never finishes by itself.
struct Quiet {
    connected: Option<String>,
}

impl Handler for Quiet {
    fn on_event(&mut self, _: &mut Context<'_, Self>, _: ConnectionHandle, event: Event) {
        if let Event::Connected { account, .. } = event {
            self.connected = Some(account);
        }
    }
}

/// The server under test, on a thread of its own: one loop, one worker thread (so jobs
/// run in order), no per-address handshake limits.
fn start_server(
    key: &Arc<quill_crypto::hostkey::HostKeyPair>,
    handler: RecordingServer,
) -> (SocketAddr, LoopHandle, std::thread::JoinHandle<()>) {
    let mut config = ServerConfig::new(key.clone());
    config.transport = Arc::new(TransportConfig::default());
    let endpoint = EndpointConfig {
        per_source_handshakes_per_sec: 0,
        max_half_open_per_address: 0,
        ..EndpointConfig::default()
    };
    let mut server = bind_loop("127.0.0.1:0", endpoint, Some(config), 1, handler);
    let addr: SocketAddr = server.local_addr();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run().expect("server loop"));
    (addr, handle, thread)
}

/// Polls `done` every 5 ms; panics with `what` if it does not hold within [`STEP`].
fn wait_for(what: &str, done: impl FnMut() -> bool) {
    support::wait_for(what, STEP, done);
}

#[test]
fn a_verdict_for_an_ended_session_never_logs_in_the_session_reusing_its_handle() {
    let dir = temp_dir("verdict-reuse");
    let key = host_key(9);
    let accounts = store(&dir);
    accounts
        .add_user("alice", Some(b"correct horse battery"), &[])
        .unwrap();
    let gated = Arc::new(GatedStore {
        inner: accounts,
        gate: Mutex::new(Gate::default()),
        changed: Condvar::new(),
    });
    let verifier = Arc::new(LoginVerifier::new(gated.clone(), false));

    // The server: one worker, so jobs run in order: B's verification starts only once
    // A's has finished and its verdict is queued for the loop, ahead of B's.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sessions = Arc::new(AtomicUsize::new(0));
    let (addr, server_handle, server_thread) = start_server(
        &key,
        RecordingServer {
            verifier,
            seen: seen.clone(),
            sessions: sessions.clone(),
        },
    );

    // A: alice with the right password. Its verification starts and is held.
    let mut a = bind_loop(
        "127.0.0.1:0",
        EndpointConfig::default(),
        None,
        1,
        Quiet { connected: None },
    );
    let a_conn = a
        .with_context(|_, ctx| {
            ctx.connect(
                client(password("alice", "correct horse battery"), &key),
                addr,
            )
        })
        .expect("connect A");
    // The store is watched from outside A's loop, which nothing wakes when it
    // changes: run the loop in short slices.
    let deadline = Instant::now() + STEP;
    while gated.arrived() < 1 {
        assert!(
            Instant::now() < deadline,
            "A's login never reached the account store"
        );
        a.run_until(Duration::from_millis(10), |_, _| false)
            .expect("client A loop");
    }
    let a_handle = match seen.lock().unwrap().as_slice() {
        [Seen::LoginRequested(h, user)] if user == "alice" => *h,
        other => panic!("expected only A's login request, saw {other:?}"),
    };

    // A goes away before its verdict: the server drains and frees A's session.
    a.with_context(|_, ctx| {
        let now = ctx.now();
        ctx.connection(a_conn)
            .expect("A is still connecting")
            .close(now, 0, "gone")
    });
    let closed = a
        .run_until(STEP, |_, ep| ep.is_empty())
        .expect("client A loop");
    assert!(closed, "client A did not finish closing");
    assert_eq!(a.handler().connected, None, "A was never answered");
    wait_for("the server to free A's session", || {
        seen.lock().unwrap().contains(&Seen::Lost(a_handle)) && sessions.load(Ordering::SeqCst) == 0
    });

    // B: alice with a WRONG password, in the slot A left. Its verification waits
    // behind A's on the one worker.
    let b_key = key.clone();
    let b = std::thread::spawn(move || {
        blocking::connect(addr, client(password("alice", "not her password"), &b_key))
    });
    wait_for("B's login request", || seen.lock().unwrap().len() == 3);
    let b_handle = match seen.lock().unwrap().as_slice() {
        [_, _, Seen::LoginRequested(h, _)] => *h,
        other => panic!("expected B's login request after A's, saw {other:?}"),
    };
    assert_eq!(
        b_handle, a_handle,
        "precondition: B's session reuses A's slab handle"
    );

    // A's verification finishes (accept alice); once B's lookup has started on the
    // one worker, A's verdict is queued for the loop ahead of B's.
    gated.release_one();
    wait_for("B's login to reach the account store", || {
        gated.arrived() == 2
    });
    // Then B's (refused).
    gated.release_one();
    let deadline = Instant::now() + STEP;
    while !b.is_finished() {
        assert!(Instant::now() < deadline, "B's login did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    match b.join().expect("client B thread") {
        Err(ConnectError::Connection(ConnectionError::LoginRefused { .. })) => {}
        Ok(c) => panic!(
            "B gave a wrong password and was logged in as {:?}",
            c.account()
        ),
        Err(e) => panic!("expected B to be refused, got {e}"),
    }
    // The server never logged anyone in: not B as alice, not the departed A.
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::LoggedIn(..))),
        "the server logged a session in: {seen:?}"
    );
    assert!(
        seen.contains(&Seen::Verdict(b_handle, None)),
        "B got its own verdict (refused): {seen:?}"
    );
    // A's stale verdict was not reported either: a handler that logs per handle
    // never credits alice to B.
    assert!(
        !seen.contains(&Seen::Verdict(a_handle, Some("alice".into()))),
        "the stale verdict reached on_verdict: {seen:?}"
    );

    server_handle.shutdown();
    server_thread.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A public-key login the key cache accepts is answered on the loop thread: it logs in
/// while the only worker thread is held by another login's account lookup.
#[test]
fn a_cached_public_key_login_does_not_wait_for_the_worker_pool() {
    use quill_crypto::hostkey::HostKeyPair;
    use quill_transport::auth::{KeyCache, KEY_CACHE_ACCOUNTS};
    use quill_transport::proto::Login;
    let dir = temp_dir("verdict-cached");
    let key = host_key(9);
    let kim_key = Arc::new(HostKeyPair::from_seed(&[7; 32]).unwrap());
    let accounts = store(&dir);
    accounts.add_user("kim", None, &[kim_key.public()]).unwrap();
    accounts
        .add_user("bob", Some(b"correct horse battery"), &[])
        .unwrap();
    let gated = Arc::new(GatedStore {
        inner: accounts,
        gate: Mutex::new(Gate::default()),
        changed: Condvar::new(),
    });
    // No re-check of the store's change counter falls due during the test, however
    // slow the machine: the second login's path does not depend on timing.
    let verifier = Arc::new(LoginVerifier {
        keys: KeyCache::new(KEY_CACHE_ACCOUNTS, Duration::from_secs(3600)),
        ..LoginVerifier::new(gated.clone(), false)
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (addr, server_handle, server_thread) = start_server(
        &key,
        RecordingServer {
            verifier,
            seen: seen.clone(),
            sessions: Arc::new(AtomicUsize::new(0)),
        },
    );
    let kim = || Login::PublicKey {
        user: "kim".into(),
        key: kim_key.clone(),
    };

    // kim's first login reads the store on the pool (and fills the cache).
    let first = {
        let (login, key) = (kim(), key.clone());
        std::thread::spawn(move || blocking::connect(addr, client(login, &key)))
    };
    wait_for("kim's first lookup", || gated.arrived() == 1);
    gated.release_one();
    let c = first.join().unwrap().expect("kim's first login");
    assert_eq!(c.account(), "kim");
    drop(c);

    // bob's login holds the one worker thread in the account store.
    let bob = {
        let key = key.clone();
        std::thread::spawn(move || {
            blocking::connect(addr, client(password("bob", "correct horse battery"), &key))
        })
    };
    wait_for("bob's lookup", || gated.arrived() == 2);

    // kim again: answered while bob's job still holds the pool.
    let c = blocking::connect(addr, client(kim(), &key)).expect("kim's cached login");
    assert_eq!(c.account(), "kim");
    assert_eq!(gated.arrived(), 2, "the cached login read the store");
    assert!(!bob.is_finished(), "bob's lookup was released early");
    drop(c);

    gated.release_one();
    let b = bob.join().unwrap().expect("bob's login");
    assert_eq!(b.account(), "bob");
    drop(b);
    let verdicts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| matches!(s, Seen::Verdict(_, Some(_))))
        .count();
    assert_eq!(
        verdicts,
        3,
        "on_verdict ran for every login: {:?}",
        seen.lock().unwrap()
    );

    server_handle.shutdown();
    server_thread.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
