//! The impairment relay over real UDP sockets on 127.0.0.x. Every wait is bounded.

#[path = "../../transport/tests/support/echo.rs"]
mod echo;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quill_interop::{
    Action, Capture, Direction, DropReason, Impairments, Rebind, RebindKind, Relay, RelayConfig,
};

/// A UDP echo server recording the source address of every datagram.
struct Echo {
    addr: SocketAddr,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let sock = big_socket();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, st2) = (sources.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    s2.lock().unwrap().push(from);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            sources,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A socket on 127.0.0.1 with 4 MiB kernel buffers, so bursts are not lost in the
/// kernel when the test threads share two cores.
fn big_socket() -> UdpSocket {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    sock.into()
}

fn client(relay: &Relay) -> UdpSocket {
    let s = big_socket();
    s.connect(relay.addr()).unwrap();
    s
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(4)];
    v[..4].copy_from_slice(&i.to_be_bytes());
    for (k, b) in v.iter_mut().enumerate().skip(4) {
        *b = (k as u32 ^ i) as u8;
    }
    v
}

/// Collects echoed datagrams until `quiet` passes without one (bounded by `max`).
fn collect(sock: &UdpSocket, quiet: Duration, max: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let end = Instant::now() + max;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    out
}

fn run(config: RelayConfig, n: u32, len: usize, gap: Duration) -> (Vec<Vec<u8>>, Capture) {
    let relay = Relay::start(config).unwrap();
    let c = client(&relay);
    for i in 0..n {
        c.send(&payload(i, len)).unwrap();
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    let got = collect(&c, Duration::from_millis(300), Duration::from_secs(5));
    (got, relay.stop())
}

/// Sends `n` datagrams of `len` bytes through a relay to `echo`, seeded with `seed`
/// and with `impair` applied client to server; checks the relay saw all `n` and
/// returns the indices it dropped.
fn c2s_drops(
    echo: &Echo,
    seed: u64,
    n: u32,
    len: usize,
    impair: impl Fn(&mut Impairments),
) -> Vec<u64> {
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.seed = seed;
    impair(&mut cfg.c2s);
    let (_, cap) = run(cfg, n, len, Duration::from_micros(50));
    assert_eq!(cap.originals(Direction::C2S).count(), n as usize);
    cap.dropped_indices(Direction::C2S)
}

#[test]
fn plain_echo_arrives_complete_and_in_order() {
    let echo = Echo::start();
    let (got, cap) = run(
        RelayConfig::new(echo.addr),
        200,
        100,
        Duration::from_micros(200),
    );
    let expected: Vec<_> = (0..200).map(|i| payload(i, 100)).collect();
    assert_eq!(got, expected);
    assert_eq!(cap.count(Direction::C2S, Action::Forwarded), 200);
    assert_eq!(cap.count(Direction::S2C, Action::Forwarded), 200);
}

#[test]
fn loss_is_reproducible_and_near_the_rate() {
    let echo = Echo::start();
    let pattern = || c2s_drops(&echo, 7, 1000, 50, |c2s| c2s.loss = 0.3);
    let a = pattern();
    let b = pattern();
    assert_eq!(a, b, "same seed, same drops");
    // Binomial(1000, 0.3): sd ≈ 14.5; ±5 sd.
    assert!((228..=372).contains(&a.len()), "dropped {}", a.len());
}

#[test]
fn drop_list_drops_exactly_those_indices() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.c2s.drop_indices = vec![0, 3, 17];
    cfg.s2c.drop_indices = vec![5];
    let (got, cap) = run(cfg, 20, 40, Duration::from_millis(1));
    assert_eq!(cap.dropped_indices(Direction::C2S), vec![0, 3, 17]);
    assert_eq!(cap.dropped_indices(Direction::S2C), vec![5]);
    let ids: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    let expected: Vec<u32> = (0..20).filter(|i| ![0, 3, 17].contains(i)).collect();
    // s2c index 5 is the sixth echo, i.e. the sixth surviving request.
    let mut exp = expected.clone();
    exp.remove(5);
    assert_eq!(ids, exp);
}

#[test]
fn delay_is_honoured() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.c2s.delay = Duration::from_millis(50);
    let relay = Relay::start(cfg).unwrap();
    let c = client(&relay);
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..3 {
        let t0 = Instant::now();
        c.send(&payload(i, 10)).unwrap();
        c.recv(&mut buf).unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
    }
    relay.stop();
}

#[test]
fn duplication_produces_duplicates() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.c2s.duplicate = 0.5;
    let (got, cap) = run(cfg, 100, 20, Duration::from_micros(200));
    let dups = cap.count(Direction::C2S, Action::Duplicated);
    assert!(dups > 20 && dups < 80, "{dups}");
    assert_eq!(got.len(), 100 + dups);
    let distinct: HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), 100);
}

#[test]
fn corruption_changes_bytes_within_first_50() {
    let echo = Echo::start();
    for first50 in [true, false] {
        let mut cfg = RelayConfig::new(echo.addr);
        cfg.seed = 3;
        cfg.c2s.corrupt = 1.0;
        cfg.c2s.corrupt_first_50 = first50;
        let (got, cap) = run(cfg, 100, 1000, Duration::from_micros(200));
        assert_eq!(got.len(), 100);
        let mut beyond = 0;
        for d in &got {
            // The index may itself be corrupted: compare with every original.
            let diffs: Vec<usize> = (0..100)
                .map(|i| payload(i, 1000))
                .map(|p| (0..1000).filter(|&k| p[k] != d[k]).collect::<Vec<_>>())
                .min_by_key(|v| v.len())
                .unwrap();
            assert_eq!(diffs.len(), 1, "exactly one byte flipped");
            if diffs[0] >= 50 {
                beyond += 1;
            }
        }
        if first50 {
            assert_eq!(beyond, 0);
        } else {
            assert!(beyond > 50, "{beyond}");
        }
        assert!(cap
            .dir(Direction::C2S)
            .all(|r| matches!(r.action, Action::Corrupted { .. })));
    }
}

/// The network simulator's corrupt-rate model spares Version Negotiation packets (a
/// client must abandon on one whose list lost its version); other long headers are hit.
#[test]
fn simulator_corruption_spares_version_negotiation() {
    let echo = Echo::start();
    let relay = Relay::start(RelayConfig {
        seed: 5,
        c2s: Impairments {
            corrupt: 1.0,
            corrupt_first_50: true,
            ..Impairments::default()
        },
        ..RelayConfig::new(echo.addr)
    })
    .unwrap();
    let c = client(&relay);
    let mut vn = vec![0x80, 0, 0, 0, 0, 4, 1, 2, 3, 4, 4, 5, 6, 7, 8];
    vn.extend_from_slice(&[0, 0, 0, 1, 0x0a, 0x1a, 0x2a, 0x3a]);
    let mut initial = vn.clone();
    initial[4] = 1; // version 1: not a Version Negotiation packet
    c.send(&vn).unwrap();
    c.send(&initial).unwrap();
    let got = collect(&c, Duration::from_millis(300), Duration::from_secs(5));
    let cap = relay.stop();
    assert_eq!(got.len(), 2);
    assert!(
        got.contains(&vn),
        "the Version Negotiation packet arrives untouched"
    );
    assert!(
        !got.contains(&initial),
        "the other long header is corrupted"
    );
    assert_eq!(cap.count(Direction::C2S, Action::Forwarded), 1);
    assert_eq!(
        cap.dir(Direction::C2S)
            .filter(|r| matches!(r.action, Action::Corrupted { .. }))
            .count(),
        1
    );
}

/// A second path (preferredaddress: the server's preferred address is the relay's
/// second port): datagrams to it reach the server from another client address
/// (127.0.0.2), the answers come back from the second port, and the capture tells the
/// paths apart by upstream address.
#[test]
fn second_path_forwards_from_another_client_address() {
    let echo = Echo::start();
    let second = UdpSocket::bind("127.0.0.1:0").unwrap();
    let second_addr = second.local_addr().unwrap();
    let relay = Relay::start_with_second_path(RelayConfig::new(echo.addr), second).unwrap();
    let first_addr = relay.addr();
    let c = big_socket();
    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    c.send_to(&payload(1, 100), relay.addr()).unwrap();
    c.send_to(&payload(2, 100), second_addr).unwrap();
    let mut from = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while from.len() < 2 && Instant::now() < deadline {
        if let Ok((n, a)) = c.recv_from(&mut buf) {
            from.push((buf[..n].to_vec(), a));
        }
    }
    let cap = relay.stop();
    assert!(from.contains(&(payload(1, 100), first_addr)), "{from:?}");
    let back2 = from
        .iter()
        .find(|(d, _)| *d == payload(2, 100))
        .expect("echo on path 2");
    assert_eq!(
        back2.1, second_addr,
        "the second path answers from the second port"
    );
    let sources = echo.sources.lock().unwrap().clone();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(sources[1].ip(), Ipv4Addr::new(127, 0, 0, 2));
    let ups: Vec<SocketAddr> = cap.dir(Direction::C2S).map(|r| r.upstream).collect();
    assert_eq!(ups, sources, "records carry each path's upstream address");
    let downs: Vec<SocketAddr> = cap.dir(Direction::S2C).map(|r| r.upstream).collect();
    assert_eq!(downs, sources);
}

/// `follow_client_address` (connectionmigration): a client that moves to a new
/// local port is seen by the server from a new source as well, as behind a NAT, and
/// the answers reach the client's new address; without it the server sees one source.
#[test]
fn a_client_that_moves_gets_a_new_upstream_port() {
    for follow in [true, false] {
        let echo = Echo::start();
        let mut cfg = RelayConfig::new(echo.addr);
        cfg.follow_client_address = follow;
        let relay = Relay::start(cfg).unwrap();
        let (a, b) = (client(&relay), client(&relay));
        for c in [&a, &b] {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let mut buf = [0u8; 2048];
        a.send_to(&payload(1, 100), relay.addr()).unwrap();
        let (n, _) = a.recv_from(&mut buf).expect("echo to the first socket");
        assert_eq!(&buf[..n], &payload(1, 100)[..]);
        b.send_to(&payload(2, 100), relay.addr()).unwrap();
        let (n, _) = b.recv_from(&mut buf).expect("echo to the new socket");
        assert_eq!(&buf[..n], &payload(2, 100)[..]);
        let cap = relay.stop();
        let sources = echo.sources.lock().unwrap().clone();
        assert_eq!(sources.len(), 2);
        assert_eq!(
            sources[0] != sources[1],
            follow,
            "follow={follow}: {sources:?}"
        );
        let ups: Vec<SocketAddr> = cap.dir(Direction::C2S).map(|r| r.upstream).collect();
        assert_eq!(
            ups, sources,
            "records carry each datagram's upstream address"
        );
    }
}

#[test]
fn rate_limit_drops_the_excess_and_paces_the_rest() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.c2s.rate_bps = Some(1_000_000);
    cfg.c2s.queue_bytes = 10_000;
    let relay = Relay::start(cfg).unwrap();
    let c = client(&relay);
    let t0 = Instant::now();
    for i in 0..100 {
        c.send(&payload(i, 1000)).unwrap();
    }
    let got = collect(&c, Duration::from_millis(300), Duration::from_secs(5));
    let cap = relay.stop();
    let dropped = cap.count(Direction::C2S, Action::Dropped(DropReason::QueueFull));
    assert!(dropped > 50, "{dropped}");
    assert_eq!(got.len(), 100 - dropped);
    // 1000-byte datagrams at 1 Mbit/s take 8 ms each: the last left ≥ 8·(n-1) ms after the first.
    let paced = Duration::from_millis(8 * (got.len() as u64 - 1));
    assert!(t0.elapsed() >= paced);
}

#[test]
fn blackhole_drops_only_while_on() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.blackhole = Some((Duration::from_millis(200), Duration::from_millis(200)));
    let (_, cap) = run(cfg, 60, 20, Duration::from_millis(10));
    let mut seen_drop = false;
    for r in cap.dir(Direction::C2S) {
        let phase = r.t.as_millis() % 400;
        if r.action == Action::Dropped(DropReason::Blackhole) {
            seen_drop = true;
            assert!(phase >= 200, "dropped at {phase}");
        } else {
            assert!(phase < 200, "passed at {phase}");
        }
    }
    assert!(seen_drop);
}

#[test]
fn rebinding_changes_the_source_the_server_sees() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.rebind = vec![
        Rebind {
            at: Duration::from_millis(150),
            kind: RebindKind::Port,
        },
        Rebind {
            at: Duration::from_millis(300),
            kind: RebindKind::Address(Ipv4Addr::new(127, 0, 0, 2)),
        },
    ];
    let (got, cap) = run(cfg, 45, 20, Duration::from_millis(10));
    assert!(got.len() > 30);
    let sources = echo.sources.lock().unwrap().clone();
    let ports: HashSet<_> = sources.iter().map(|a| a.port()).collect();
    let ips: HashSet<_> = sources.iter().map(|a| a.ip()).collect();
    assert_eq!(ports.len(), 3, "{sources:?}");
    assert_eq!(ips.len(), 2, "{sources:?}");
    assert_eq!(cap.distinct_client_sources(), 3);
    assert_eq!(cap.distinct_client_ips(), 2);
}

#[test]
fn reordering_holds_some_back() {
    let echo = Echo::start();
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.seed = 11;
    cfg.c2s.reorder = 0.2;
    cfg.c2s.reorder_delay = Duration::from_millis(30);
    let (got, _) = run(cfg, 100, 20, Duration::from_millis(1));
    assert_eq!(got.len(), 100);
    let ids: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    let inversions = ids.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 0, "{ids:?}");
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 100);
}

#[test]
fn burst_loss_is_reproducible_and_clustered() {
    let echo = Echo::start();
    let pattern = || {
        c2s_drops(&echo, 5, 500, 30, |c2s| {
            c2s.burst = Some(quill_interop::GilbertElliott {
                p_good_to_bad: 0.05,
                p_bad_to_good: 0.3,
                loss_good: 0.0,
                loss_bad: 1.0,
            })
        })
    };
    let a = pattern();
    assert_eq!(a, pattern());
    assert!(!a.is_empty());
    // Bursts: most drops are next to another drop.
    let adjacent = a.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(adjacent * 2 > a.len(), "{a:?}");
}

mod quill_end_to_end {
    use super::*;
    use echo::echo_round_trip;
    use std::collections::HashMap;

    use quill_crypto::hostkey::HostKeyPair;
    use quill_transport::driver::blocking;
    use quill_transport::driver::UdpConfig;
    use quill_transport::driver::{Context, EventLoop, Handler};
    use quill_transport::proto::{
        ClientConfig, Dir, Event, HostKeyPolicy, Login, LoginMethod, ServerConfig, StreamEvent,
        StreamId,
    };
    use quill_transport::proto::{ConnectionHandle, EndpointConfig};
    use quill_transport::service::{Echo, Pumped};
    use quill_transport::wire::LongType;
    use zeroize::Zeroizing;

    fn host_key() -> Arc<HostKeyPair> {
        Arc::new(HostKeyPair::from_seed(&[42; 32]).unwrap())
    }

    /// Accepts the password "pw" at once and echoes bidirectional streams.
    #[derive(Default)]
    struct EchoServer {
        echo: HashMap<(ConnectionHandle, StreamId), Echo>,
    }

    impl Handler for EchoServer {
        fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
            let now = ctx.now();
            match event {
                Event::LoginRequested(req) => {
                    let ok =
                        matches!(&req.method, LoginMethod::Password(p) if p.as_slice() == b"pw");
                    if let Some(c) = ctx.connection(h) {
                        if ok {
                            c.accept_login(now, &req.user, "welcome");
                        } else {
                            c.refuse_login(now, "refused");
                        }
                    }
                }
                Event::Stream(StreamEvent::Opened { .. }) => {
                    let c = ctx.connection(h).unwrap();
                    while let Some(id) = c.accept_stream(Dir::Bi) {
                        self.echo.insert((h, id), Echo::default());
                    }
                    while c.accept_stream(Dir::Uni).is_some() {}
                }
                _ => {}
            }
        }

        fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
            let mut buf = vec![0u8; 65536];
            self.echo.retain(|&(h, id), echo| {
                let Some(c) = ctx.connection(h) else {
                    return false;
                };
                matches!(
                    echo.pump(c, id, &mut buf, 1 << 20, 1 << 20),
                    Pumped::Moved(_)
                )
            });
        }
    }

    #[test]
    fn one_megabyte_echo_through_loss_and_delay() {
        let config = ServerConfig::new(host_key());
        let endpoint = EndpointConfig {
            per_source_handshakes_per_sec: 0,
            max_half_open_per_address: 0,
            ..EndpointConfig::default()
        };
        let mut ev = EventLoop::bind(
            "127.0.0.1:0".parse().unwrap(),
            &UdpConfig::default(),
            endpoint,
            Some(config),
            1,
            EchoServer::default(),
        )
        .unwrap();
        let server = ev.local_addr();
        let handle = ev.handle();
        let thread = std::thread::spawn(move || ev.run().expect("server loop"));

        let mut rc = RelayConfig::new(server);
        rc.seed = 2026;
        rc.max_lifetime = Duration::from_secs(60);
        for imp in [&mut rc.c2s, &mut rc.s2c] {
            imp.loss = 0.05;
            imp.delay = Duration::from_millis(20);
        }
        let relay = Relay::start(rc).unwrap();
        let client = ClientConfig::new(
            Login::Password {
                user: "alice".into(),
                password: Zeroizing::new("pw".into()),
            },
            HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
        );
        let conn = blocking::connect(relay.addr(), client).expect("connect through the relay");

        echo_round_trip(&conn, 1 << 20);
        conn.close(0, "done");

        let cap = relay.stop();
        handle.shutdown();
        thread.join().unwrap();

        assert!(cap.count(Direction::C2S, Action::Dropped(DropReason::Loss)) > 0);
        assert!(cap.long_packets(Direction::C2S, LongType::Initial) > 0);
        assert!(cap.long_packets(Direction::C2S, LongType::Handshake) > 0);
        let (client_bytes, server_bytes) = cap.amplification();
        assert!(client_bytes > 0 && server_bytes > 0);
        assert!(
            server_bytes <= 3 * client_bytes,
            "server sent {server_bytes} before validation for {client_bytes} received"
        );
        let path = std::env::temp_dir().join(format!("quill-relay-{}.jsonl", std::process::id()));
        cap.write_jsonl(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text.lines().count(), cap.records.len() + 1);
    }
}
