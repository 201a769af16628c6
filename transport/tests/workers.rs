//! A server of several event loops ([`Workers`]) on one loopback address: datagrams
//! steered to the loop named in their connection ID by the reuseport BPF program, or
//! forwarded between loops without it; NAT rebinding through a userspace relay. Every
//! wait is bounded.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::driver::{
    Context, EventLoop, Handler, SteeringMode, UdpConfig, WorkerStats, Workers, WorkersConfig,
};
use quill_transport::proto::{
    CidLayout, ClientConfig, ConnectionHandle, Dir, EndpointConfig, Event, HostKeyPolicy, Login,
    ReadOutcome, RetryPolicy, ServerConfig, StreamEvent, StreamId,
};
use support::relay;
use zeroize::Zeroizing;

const HELLO: &[u8] = b"hello from a light client";

fn host_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[42; 32]).unwrap())
}

/// Accepts every login on the loop and echoes every bidirectional stream at its FIN.
#[derive(Default)]
struct EchoServer {
    streams: HashMap<(ConnectionHandle, StreamId), (Vec<u8>, bool)>,
}

impl Handler for EchoServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        let now = ctx.now();
        let Some(c) = ctx.connection(h) else { return };
        match event {
            Event::LoginRequested(req) => c.accept_login(now, &req.user, "welcome"),
            Event::Stream(StreamEvent::Opened { .. }) => {
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    self.streams.insert((h, id), (Vec::new(), false));
                }
            }
            Event::ConnectionLost(_) => self.streams.retain(|k, _| k.0 != h),
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let mut buf = [0u8; 256];
        self.streams.retain(|&(h, id), (data, fin)| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            while !*fin && data.len() < 4096 {
                match c.read(id, &mut buf) {
                    Ok(ReadOutcome::Data(n)) => data.extend_from_slice(&buf[..n]),
                    Ok(ReadOutcome::Finished) => *fin = true,
                    Ok(ReadOutcome::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            let _ = c.write(id, data);
            let _ = c.finish(id);
            false
        });
    }
}

/// Opens `total` connections (at most `per_turn` new ones per loop turn); each logs in,
/// sends [`HELLO`] on a stream and waits for its echo. Connections stay open.
struct Clients {
    config: ClientConfig,
    server: SocketAddr,
    total: usize,
    per_turn: usize,
    opened: usize,
    echoed: usize,
    replies: HashMap<(ConnectionHandle, StreamId), Vec<u8>>,
    lost: Vec<String>,
    /// Every connection that logged in.
    handles: Vec<ConnectionHandle>,
}

impl Clients {
    fn new(server: SocketAddr, total: usize) -> Clients {
        let config = ClientConfig::new(
            Login::Password {
                user: "alice".into(),
                password: Zeroizing::new("any".into()),
            },
            HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
        );
        Clients {
            config,
            server,
            total,
            per_turn: 50,
            opened: 0,
            echoed: 0,
            replies: HashMap::new(),
            lost: Vec::new(),
            handles: Vec::new(),
        }
    }
}

impl Clients {
    /// Sends [`HELLO`] on a new stream of `h` and expects it back.
    fn send_hello(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle) {
        let c = ctx.connection(h).expect("a live connection");
        let id = c.open_stream(Dir::Bi).expect("a stream");
        assert_eq!(c.write(id, HELLO).unwrap(), HELLO.len());
        c.finish(id).unwrap();
        self.replies.insert((h, id), Vec::new());
    }
}

impl Handler for Clients {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        let Some(c) = ctx.connection(h) else { return };
        match event {
            Event::Connected { .. } => {
                self.handles.push(h);
                self.send_hello(ctx, h);
            }
            Event::Stream(StreamEvent::Readable(id) | StreamEvent::Finished(id)) => {
                let Some(got) = self.replies.get_mut(&(h, id)) else {
                    return;
                };
                let mut buf = [0u8; 256];
                loop {
                    match c.read(id, &mut buf) {
                        Ok(ReadOutcome::Data(n)) => got.extend_from_slice(&buf[..n]),
                        Ok(ReadOutcome::Finished) => {
                            assert_eq!(got.as_slice(), HELLO);
                            self.replies.remove(&(h, id));
                            self.echoed += 1;
                            break;
                        }
                        _ => break,
                    }
                }
            }
            Event::ConnectionLost(e) => self.lost.push(e.to_string()),
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        for _ in 0..self.per_turn.min(self.total - self.opened) {
            ctx.connect(self.config.clone(), self.server)
                .expect("connect");
            self.opened += 1;
        }
    }
}

fn server(workers: usize, bpf: bool, retry: RetryPolicy) -> Workers {
    let endpoint = EndpointConfig {
        retry,
        // One source address opens every connection.
        per_source_handshakes_per_sec: 0,
        max_half_open_per_address: 0,
        ..EndpointConfig::default()
    };
    let config = WorkersConfig {
        workers,
        bpf,
        layout: CidLayout::new(&[0x0a, 0x01], 9).unwrap(),
        pool_threads: 1,
        pool_capacity: 0,
    };
    Workers::spawn(
        "127.0.0.1:0".parse().unwrap(),
        &config,
        &UdpConfig::default(),
        endpoint,
        ServerConfig::new(host_key()),
        |_, _| EchoServer::default(),
    )
    .expect("start the workers")
}

/// Runs `total` light clients against `to` (the server or a relay) on one client loop
/// until every one has its echo, within `limit`; returns the client handler.
fn run_clients(to: SocketAddr, total: usize, limit: Duration) -> Clients {
    // No GSO: one client socket carries every connection, and a GSO batch (one skb)
    // mixing connections of both loops can only be steered by its first datagram.
    // Real clients have a socket per connection.
    let udp = UdpConfig {
        gso: false,
        ..UdpConfig::default()
    };
    let mut client = EventLoop::bind(
        "127.0.0.1:0".parse().unwrap(),
        &udp,
        EndpointConfig::default(),
        None,
        1,
        Clients::new(to, total),
    )
    .expect("bind the client loop");
    // The first batch now: an idle loop would wait for the limit before its first turn.
    client.with_context(|c, ctx| c.on_turn(ctx));
    let done = client
        .run_until(limit, |c, _| c.echoed == c.total || !c.lost.is_empty())
        .expect("client loop");
    let c = client.into_handler();
    assert!(
        c.lost.is_empty(),
        "connections lost: {:?}",
        &c.lost[..c.lost.len().min(5)]
    );
    assert!(done, "{} of {total} echoes within {limit:?}", c.echoed);
    c
}

/// Waits (bounded) until the loops have published `sessions` created in all.
fn settled_stats(workers: &Workers, sessions: u64) -> Vec<WorkerStats> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = workers.stats();
        let created: u64 = stats.iter().map(|s| s.sessions_created).sum();
        if created >= sessions || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn bpf_attached(workers: &Workers) -> bool {
    match workers.steering() {
        SteeringMode::Bpf => true,
        other => {
            eprintln!(
                "NOTE: the kernel refused the reuseport BPF program ({other:?}); \
                 this run checks the forwarding path only, not the zero-forward target"
            );
            false
        }
    }
}

#[test]
fn two_workers_serve_1000_concurrent_connections_steered_by_bpf() {
    let workers = server(2, true, RetryPolicy::Never);
    let attached = bpf_attached(&workers);
    run_clients(workers.local_addr(), 1000, Duration::from_secs(120));
    let stats = settled_stats(&workers, 1000);
    eprintln!("per-worker stats: {stats:?}");
    let created: Vec<u64> = stats.iter().map(|s| s.sessions_created).collect();
    assert_eq!(created.iter().sum::<u64>(), 1000, "{created:?}");
    assert_eq!(
        stats.iter().map(|s| s.connections).sum::<u64>(),
        1000,
        "all 1,000 are open at once"
    );
    // The client's Initial DCIDs are random: each loop gets about half.
    assert!(created.iter().all(|&c| c >= 300), "spread: {created:?}");
    let forwarded: u64 = stats.iter().map(|s| s.forwarded_out).sum();
    if attached {
        assert_eq!(
            forwarded, 0,
            "BPF steering sent datagrams to the wrong loop"
        );
    }
    assert_eq!(stats.iter().map(|s| s.forward_dropped).sum::<u64>(), 0);
    drop(workers);
}

#[test]
fn without_bpf_rebinding_clients_are_forwarded_and_served() {
    let workers = server(2, false, RetryPolicy::Never);
    assert!(matches!(workers.steering(), SteeringMode::Forwarding(_)));
    // Without the program the kernel picks a loop by the 4-tuple: first flights are
    // forwarded to the loop their DCID names, and so are later datagrams whenever a
    // new relay port hashes to the other loop.
    let (relay, stop) = relay::rebinding(workers.local_addr(), 16, 40);
    run_clients(relay, 100, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let stats = settled_stats(&workers, 100);
    eprintln!("per-worker stats: {stats:?}");
    let out: u64 = stats.iter().map(|s| s.forwarded_out).sum();
    let taken: u64 = stats.iter().map(|s| s.forwarded_in).sum();
    assert!(out > 0, "no datagram was forwarded: {stats:?}");
    assert_eq!(stats.iter().map(|s| s.forward_dropped).sum::<u64>(), 0);
    assert!(taken <= out);
    drop(workers);
}

#[test]
fn rebinding_with_bpf_keeps_each_connection_on_its_loop() {
    let workers = server(2, true, RetryPolicy::Never);
    let attached = bpf_attached(&workers);
    let (relay, stop) = relay::rebinding(workers.local_addr(), 16, 40);
    run_clients(relay, 100, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let stats = settled_stats(&workers, 100);
    eprintln!("per-worker stats: {stats:?}");
    assert_eq!(stats.iter().map(|s| s.sessions_created).sum::<u64>(), 100);
    if attached {
        // The connection ID, not the address, picks the loop.
        assert_eq!(stats.iter().map(|s| s.forwarded_out).sum::<u64>(), 0);
    }
    drop(workers);
}

/// Active client migration (RFC 9000 §9.2) with several loops: the client moves to a
/// new port and switches to a spare connection ID of the server's, which carries the
/// same loop's index, so the kernel program keeps each connection on its loop; every
/// connection then echoes a second stream over the new path.
#[test]
fn client_migration_keeps_each_connection_on_its_loop() {
    let workers = server(2, true, RetryPolicy::Never);
    let attached = bpf_attached(&workers);
    let udp = UdpConfig {
        gso: false,
        ..UdpConfig::default()
    };
    let total = 40;
    let mut client = EventLoop::bind(
        "127.0.0.1:0".parse().unwrap(),
        &udp,
        EndpointConfig::default(),
        None,
        1,
        Clients::new(workers.local_addr(), total),
    )
    .expect("bind the client loop");
    client.with_context(|c, ctx| c.on_turn(ctx));
    let limit = Duration::from_secs(60);
    let done = client
        .run_until(limit, |c, _| c.echoed == total || !c.lost.is_empty())
        .expect("client loop");
    assert!(done && client.handler().lost.is_empty(), "first round");
    let before = client.local_addr();
    let after = client.migrate().expect("a new socket");
    assert_ne!(before.port(), after.port());
    client.with_context(|c, ctx| {
        for h in c.handles.clone() {
            c.send_hello(ctx, h);
        }
    });
    let done = client
        .run_until(limit, |c, _| c.echoed == 2 * total || !c.lost.is_empty())
        .expect("client loop");
    let migrated = client.with_context(|c, ctx| {
        c.handles
            .iter()
            .filter(|&&h| {
                ctx.connection(h)
                    .is_some_and(|c| c.stats().local_migrations == 1)
            })
            .count()
    });
    let c = client.into_handler();
    assert!(
        c.lost.is_empty(),
        "connections lost: {:?}",
        &c.lost[..c.lost.len().min(5)]
    );
    assert!(
        done,
        "{} of {} echoes within {limit:?}",
        c.echoed,
        2 * total
    );
    assert_eq!(migrated, total);
    let stats = settled_stats(&workers, total as u64);
    eprintln!("per-worker stats: {stats:?}");
    assert_eq!(
        stats.iter().map(|s| s.sessions_created).sum::<u64>(),
        total as u64
    );
    if attached {
        assert_eq!(stats.iter().map(|s| s.forwarded_out).sum::<u64>(), 0);
    }
    drop(workers);
}

/// Retry with several loops, with and without kernel steering: the retried Initial
/// (its DCID is the Retry's source ID, which names the loop that sent the Retry)
/// reaches that loop, whose token it is. (Not through the rebinding relay: a Retry
/// token is bound to the client's address, RFC 9000 §8.1.4.)
#[test]
fn retry_works_with_and_without_bpf() {
    for bpf in [true, false] {
        let workers = server(2, bpf, RetryPolicy::Always);
        run_clients(workers.local_addr(), 100, Duration::from_secs(60));
        let stats = settled_stats(&workers, 100);
        eprintln!("bpf {bpf}: per-worker stats: {stats:?}");
        assert_eq!(stats.iter().map(|s| s.sessions_created).sum::<u64>(), 100);
        if bpf && bpf_attached(&workers) {
            assert_eq!(stats.iter().map(|s| s.forwarded_out).sum::<u64>(), 0);
        }
        drop(workers);
    }
}

#[test]
fn one_worker_needs_no_steering() {
    let workers = server(1, true, RetryPolicy::Never);
    assert_eq!(workers.steering(), &SteeringMode::Single);
    run_clients(workers.local_addr(), 20, Duration::from_secs(30));
    drop(workers);
}
