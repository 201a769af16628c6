//! What the loops of one [`Workers`] share, over real loopback sockets: one worker pool
//! (one set of threads and one bound on its jobs, results back to the loop that asked)
//! and the per-address admission limits. Every wait is bounded.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use quill_transport::auth::{AccountStore, LoginVerifier, SessionCaps, Verdict};
use quill_transport::driver::{
    verify_on_pool, Completion, Context, EventLoop, Handler, UdpConfig, WorkerStats, Workers,
    WorkersConfig, BUSY,
};
use quill_transport::proto::{
    CidLayout, ConnectionError, ConnectionHandle, EndpointConfig, Event, RetryPolicy, ServerConfig,
    TransportConfig,
};
use support::auth_server::{client, host_key, password, store, temp_dir};

/// Longest any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// What the loops of the server saw, per loop.
#[derive(Default)]
struct PerLoop {
    /// Logins accepted with a verdict from the pool.
    accepted: [AtomicUsize; 2],
    /// Logins refused at once by `verify_on_pool` (nothing queued).
    refused_at_once: [AtomicUsize; 2],
    /// Jobs submitted through `on_wake` that are holding the pool.
    plugs_in: AtomicUsize,
    /// Of those, the ones whose result the loop has collected (their places are free).
    plugs_out: AtomicUsize,
}

/// Verifies logins on the pool; on a wake-up, puts the plugs waiting in `plugs` on the
/// pool (jobs that hold a worker until their sender is dropped).
struct LoginServer {
    index: usize,
    verifier: Arc<LoginVerifier>,
    seen: Arc<PerLoop>,
    plugs: Arc<Mutex<Vec<mpsc::Receiver<()>>>>,
}

impl Handler for LoginServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        if let Event::LoginRequested(req) = event {
            let seen = self.seen.clone();
            let i = self.index;
            verify_on_pool(ctx, &self.verifier, h, req, move |_, _, v| {
                if matches!(v, Verdict::Accept { .. }) {
                    seen.accepted[i].fetch_add(1, Ordering::SeqCst);
                }
            });
            if ctx.connection(h).is_some_and(|c| c.is_closed()) {
                self.seen.refused_at_once[i].fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn on_wake(&mut self, ctx: &mut Context<'_, Self>) {
        let plugs: Vec<_> = self.plugs.lock().unwrap().drain(..).collect();
        for rx in plugs {
            let job = move || -> Completion<Self> {
                // Bounded: a test that fails never leaves the worker blocked for good.
                let _ = rx.recv_timeout(STEP);
                Box::new(|server: &mut Self, _: &mut Context<'_, Self>| {
                    server.seen.plugs_out.fetch_add(1, Ordering::SeqCst);
                })
            };
            ctx.spawn(job).expect("room for a plug");
            self.seen.plugs_in.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct LoginFixture {
    workers: Workers,
    seen: Arc<PerLoop>,
    plugs: Arc<Mutex<Vec<mpsc::Receiver<()>>>>,
    key: Arc<quill_crypto::hostkey::HostKeyPair>,
}

/// Two loops, one pool thread, room for `pool_capacity` jobs (0: the default); alice's
/// password is "correct horse battery".
fn login_server(name: &str, pool_capacity: usize) -> LoginFixture {
    let accounts = store(&temp_dir(name));
    accounts
        .add_user("alice", Some(b"correct horse battery"), &[])
        .unwrap();
    let mut verifier = LoginVerifier::new(accounts, false);
    verifier.sessions = SessionCaps::new(0, 0);
    let verifier = Arc::new(verifier);
    let key = host_key(31);
    let endpoint = EndpointConfig {
        retry: RetryPolicy::Never,
        // One source address opens every connection.
        per_source_handshakes_per_sec: 0,
        max_half_open_per_address: 0,
        ..EndpointConfig::default()
    };
    let config = WorkersConfig {
        workers: 2,
        bpf: true,
        layout: CidLayout::new(&[0x0a, 0x02], 9).unwrap(),
        pool_threads: 1,
        pool_capacity,
    };
    let seen = Arc::new(PerLoop::default());
    let plugs = Arc::new(Mutex::new(Vec::new()));
    let workers = Workers::spawn(
        "127.0.0.1:0".parse().unwrap(),
        &config,
        &UdpConfig::default(),
        endpoint,
        ServerConfig::new(key.clone()),
        |index, _| LoginServer {
            index,
            verifier: verifier.clone(),
            seen: seen.clone(),
            plugs: plugs.clone(),
        },
    )
    .expect("start the workers");
    LoginFixture {
        workers,
        seen,
        plugs,
        key,
    }
}

/// Opens `total` connections at once that log in as alice and close when in; records
/// how each ended.
struct Logins {
    total: usize,
    logged_in: usize,
    /// Connections logged in (and then closed by us: their end is no failure).
    ours: HashSet<ConnectionHandle>,
    refused: Vec<String>,
    other: Vec<String>,
}

impl Logins {
    fn done(&self) -> bool {
        self.logged_in + self.refused.len() + self.other.len() >= self.total
    }
}

impl Handler for Logins {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::Connected { .. } => {
                self.logged_in += 1;
                self.ours.insert(h);
                let now = ctx.now();
                if let Some(c) = ctx.connection(h) {
                    c.close(now, 0, "done");
                }
            }
            Event::ConnectionLost(ConnectionError::LoginRefused { reason }) => {
                self.refused.push(reason)
            }
            Event::ConnectionLost(_) if self.ours.contains(&h) => {}
            Event::ConnectionLost(e) => self.other.push(e.to_string()),
            _ => {}
        }
    }
}

/// A client loop without GSO (one socket carries every connection; a GSO batch mixing
/// connections of both loops could only be steered by its first datagram).
fn client_loop<H: Handler>(handler: H) -> EventLoop<H> {
    let udp = UdpConfig {
        gso: false,
        ..UdpConfig::default()
    };
    EventLoop::bind(
        "127.0.0.1:0".parse().unwrap(),
        &udp,
        EndpointConfig::default(),
        None,
        1,
        handler,
    )
    .expect("bind the client loop")
}

/// Logs in `total` times at once (as alice, right password); every login ends within
/// [`STEP`].
fn log_in(server: SocketAddr, fixture: &LoginFixture, total: usize) -> Logins {
    let mut ev = client_loop(Logins {
        total,
        logged_in: 0,
        ours: HashSet::new(),
        refused: Vec::new(),
        other: Vec::new(),
    });
    let config = client(password("alice", "correct horse battery"), &fixture.key);
    ev.with_context(|_, ctx| {
        for _ in 0..total {
            ctx.connect(config.clone(), server).expect("connect");
        }
    });
    let done = ev.run_until(STEP, |c, _| c.done()).expect("client loop");
    let logins = ev.into_handler();
    assert!(
        done,
        "{} of {total} logins ended within {STEP:?}",
        logins.logged_in + logins.refused.len() + logins.other.len()
    );
    logins
}

fn per_loop(counters: &[AtomicUsize; 2]) -> [usize; 2] {
    [0, 1].map(|i| counters[i].load(Ordering::SeqCst))
}

/// Polls `done` every 5 ms; panics with `what` if it does not hold within [`STEP`].
fn wait_for(what: &str, done: impl FnMut() -> bool) {
    support::wait_for(what, STEP, done);
}

#[test]
fn two_loops_share_one_pool_and_logins_on_both_complete() {
    let fx = login_server("shared-pool", 0);
    let stats = fx.workers.stats();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].pool, stats[1].pool, "one pool for both loops");
    assert_eq!(fx.workers.pool_threads(), 1);
    // The default bound: every half-open handshake of both loops may wait for a verdict.
    assert_eq!(
        fx.workers.pool_capacity(),
        2 * EndpointConfig::default().max_half_open
    );
    // 16 random first flights: both loops get some (all on one: 2 in 65,536).
    let logins = log_in(fx.workers.local_addr(), &fx, 16);
    assert!(logins.other.is_empty(), "lost: {:?}", logins.other);
    assert!(logins.refused.is_empty(), "refused: {:?}", logins.refused);
    assert_eq!(logins.logged_in, 16);
    let accepted = per_loop(&fx.seen.accepted);
    assert_eq!(accepted.iter().sum::<usize>(), 16, "{accepted:?}");
    assert!(
        accepted.iter().all(|&n| n > 0),
        "logins on both loops: {accepted:?}"
    );
}

/// The pool's bound is the server's, not a loop's: two jobs submitted on loop 0 fill
/// a pool of two places, and logins landing on either loop are refused at once with
/// "server busy" (never queued, never left hanging); once the jobs finish, logins on
/// both loops go through again.
#[test]
fn a_full_shared_pool_refuses_logins_on_both_loops_at_once() {
    let fx = login_server("full-pool", 2);
    let mut release = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel::<()>();
        fx.plugs.lock().unwrap().push(rx);
        release.push(tx);
    }
    fx.workers.handles()[0].wake();
    wait_for("the plugs to fill the pool", || {
        fx.seen.plugs_in.load(Ordering::SeqCst) == 2
    });

    // 24 random first flights: both loops get some (all on one: 2 in 16.7 million).
    let logins = log_in(fx.workers.local_addr(), &fx, 24);
    assert!(logins.other.is_empty(), "lost: {:?}", logins.other);
    assert_eq!(logins.logged_in, 0, "a login got past a full pool");
    assert_eq!(logins.refused.len(), 24);
    assert!(
        logins.refused.iter().all(|r| r == BUSY),
        "refusals: {:?}",
        logins.refused
    );
    let at_once = per_loop(&fx.seen.refused_at_once);
    assert_eq!(at_once.iter().sum::<usize>(), 24, "{at_once:?}");
    assert!(
        at_once.iter().all(|&n| n > 0),
        "refusals on both loops: {at_once:?}"
    );

    // The plugs end; their places come back. One login at a time (the pool has two
    // places) until both loops have let one in (40 all on one loop: 2 in 10^12).
    drop(release);
    wait_for("the plugs' places to come back", || {
        fx.seen.plugs_out.load(Ordering::SeqCst) == 2
    });
    for _ in 0..40 {
        let logins = log_in(fx.workers.local_addr(), &fx, 1);
        assert!(logins.other.is_empty(), "lost: {:?}", logins.other);
        assert_eq!(
            logins.logged_in, 1,
            "after the pool drained: {:?}",
            logins.refused
        );
        if per_loop(&fx.seen.accepted).iter().all(|&n| n > 0) {
            return;
        }
    }
    panic!(
        "40 logins, all on one loop: {:?}",
        per_loop(&fx.seen.accepted)
    );
}

/// A server that never answers a login (every session stays half-open), counting the
/// logins asked for; also the client that opens the connections and does nothing more.
#[derive(Default)]
struct Silent {
    asked: Arc<AtomicUsize>,
}

impl Handler for Silent {
    fn on_event(&mut self, _: &mut Context<'_, Self>, _: ConnectionHandle, event: Event) {
        if let Event::LoginRequested(_) = event {
            self.asked.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Opens `attempts` connections from one address to a server of `workers` loops that
/// lets one address hold `limit` handshakes in progress; returns each loop's counters
/// (after the loops ended) once every attempt has had time to retransmit its first
/// flight, and how many logins the server was asked for.
fn half_open_from_one_address(
    workers: usize,
    limit: usize,
    attempts: usize,
) -> (Vec<WorkerStats>, usize) {
    // Longer than the test: no half-open session ends and frees a place meanwhile.
    let slow = Arc::new(TransportConfig {
        handshake_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        ..TransportConfig::default()
    });
    let mut server = ServerConfig::new(host_key(32));
    server.transport = slow.clone();
    let endpoint = EndpointConfig {
        retry: RetryPolicy::Never,
        per_source_handshakes_per_sec: 0,
        max_half_open_per_address: limit,
        ..EndpointConfig::default()
    };
    let config = WorkersConfig {
        workers,
        bpf: true,
        layout: CidLayout::new(&[0x0a, 0x03], 9).unwrap(),
        pool_threads: 1,
        pool_capacity: 0,
    };
    let asked = Arc::new(AtomicUsize::new(0));
    let mut workers = Workers::spawn(
        "127.0.0.1:0".parse().unwrap(),
        &config,
        &UdpConfig::default(),
        endpoint,
        server,
        |_, _| Silent {
            asked: asked.clone(),
        },
    )
    .expect("start the workers");
    let key = host_key(32);
    let mut login = client(password("alice", "whatever"), &key);
    login.transport = slow;
    let mut ev = client_loop(Silent::default());
    ev.with_context(|_, ctx| {
        for _ in 0..attempts {
            ctx.connect(login.clone(), workers.local_addr())
                .expect("connect");
        }
    });
    // Until `limit` sessions exist and every refused first flight has been sent at
    // least twice (the client retransmits after its first PTO, well under 2 s).
    let deadline = Instant::now() + STEP;
    loop {
        ev.run_until(Duration::from_millis(100), |_, _| false)
            .expect("client loop");
        let n = asked.load(Ordering::SeqCst);
        if n >= limit {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} logins asked for within {STEP:?}"
        );
    }
    ev.run_until(Duration::from_secs(2), |_, _| false)
        .expect("client loop");
    // One loop publishes its counters only when it ends.
    workers.shutdown();
    workers.join().expect("the loops");
    (workers.stats(), asked.load(Ordering::SeqCst))
}

/// One address gets `max_half_open_per_address` handshakes in progress from the whole
/// server, as from one loop: its first flights spread over both loops (by their
/// random connection IDs), and the limit is counted once for both.
#[test]
fn the_per_address_handshake_limit_holds_across_loops() {
    const LIMIT: usize = 4;
    const ATTEMPTS: usize = 24;
    let (one, asked) = half_open_from_one_address(1, LIMIT, ATTEMPTS);
    assert_eq!(one[0].sessions_created, LIMIT as u64, "one loop: {one:?}");
    assert_eq!(asked, LIMIT);
    let (two, asked) = half_open_from_one_address(2, LIMIT, ATTEMPTS);
    eprintln!("per-worker stats: {two:?}");
    assert_eq!(asked, LIMIT, "two loops: {two:?}");
    // 24 random first flights: both loops get some (all on one: 2 in 16.7 million),
    // and with a limit per loop both would have taken 4.
    assert!(two.iter().all(|s| s.datagrams_in > 0), "{two:?}");
    let created: u64 = two.iter().map(|s| s.sessions_created).sum();
    assert_eq!(created, LIMIT as u64, "two loops: {two:?}");
}
