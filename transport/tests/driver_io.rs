//! Driver I/O over real sockets on 127.0.0.1 and ::1: batched receive and GSO send
//! through `UdpIo`, the re-armed receive buffer regression, send back-pressure, and the
//! worker pool delivering results through a `mio::Waker` while the loop keeps turning.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use quill_transport::driver::{
    JobId, JobPanicked, PoolFull, SendOutcome, UdpConfig, UdpIo, WorkerPool,
};
use quill_transport::driver::{DEFAULT_RX_SLOT_SIZE, MAX_UDP_PAYLOAD};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const A: Token = Token(0);
const B: Token = Token(1);
const WAKER: Token = Token(9);

/// Byte `j` of datagram `seq`: every byte depends on both, so a shifted, truncated or
/// swapped datagram is caught.
fn pattern(seq: usize, j: usize) -> u8 {
    (seq.wrapping_mul(131) ^ j.wrapping_mul(7) ^ (j >> 8)) as u8
}

fn datagram(seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| pattern(seq, j)).collect()
}

fn check(seq: usize, want_len: usize, got: &[u8]) {
    assert_eq!(got.len(), want_len, "datagram {seq}: wrong length");
    for (j, &b) in got.iter().enumerate() {
        assert_eq!(b, pattern(seq, j), "datagram {seq}: byte {j} differs");
    }
}

fn pair(ip: IpAddr, config_a: &UdpConfig, config_b: &UdpConfig) -> (Poll, UdpIo, UdpIo) {
    let poll = Poll::new().unwrap();
    let a = UdpIo::bind((ip, 0).into(), config_a, poll.registry(), A).unwrap();
    let b = UdpIo::bind((ip, 0).into(), config_b, poll.registry(), B).unwrap();
    (poll, a, b)
}

/// One direction of the exchange: what to send and what has arrived.
struct Flow {
    sizes: Vec<usize>,
    sent: usize,
    received: usize,
    blocked: bool,
}

impl Flow {
    /// Sends while fewer than `window` datagrams are in flight (loopback drops what
    /// does not fit in the receiver's buffer, so the window keeps the test lossless).
    fn pump(&mut self, io: &mut UdpIo, dest: SocketAddr, window: usize) {
        while !self.blocked && self.sent < self.sizes.len() && self.sent - self.received < window {
            let data = datagram(self.sent, self.sizes[self.sent]);
            match io.send(dest, &data, None).unwrap() {
                SendOutcome::Sent => self.sent += 1,
                SendOutcome::Queued => {
                    self.sent += 1;
                    self.blocked = true;
                }
                SendOutcome::Full => self.blocked = true,
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8]) {
        assert!(self.received < self.sizes.len(), "more datagrams than sent");
        check(self.received, self.sizes[self.received], data);
        self.received += 1;
    }
}

fn exchange(ip: IpAddr) {
    const N: usize = 10_000;
    const WINDOW: usize = 256;
    let config = UdpConfig::default();
    let (mut poll, mut a, mut b) = pair(ip, &config, &config);
    let (addr_a, addr_b) = (a.local_addr(), b.local_addr());
    let mut rng = SmallRng::seed_from_u64(0x9e37_79b9 ^ u64::from(ip.is_ipv6()));
    let mut sizes = || {
        (0..N)
            .map(|_| rng.random_range(1..=1452))
            .collect::<Vec<_>>()
    };
    let mut a_to_b = Flow {
        sizes: sizes(),
        sent: 0,
        received: 0,
        blocked: false,
    };
    let mut b_to_a = Flow {
        sizes: sizes(),
        sent: 0,
        received: 0,
        blocked: false,
    };

    let mut events = Events::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a_to_b.received < N || b_to_a.received < N {
        assert!(Instant::now() < deadline, "exchange did not finish in 10 s");
        a_to_b.pump(&mut a, addr_b, WINDOW);
        b_to_a.pump(&mut b, addr_a, WINDOW);
        let timeout = if a.rx_pending() || b.rx_pending() {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        poll.poll(&mut events, Some(timeout)).unwrap();
        let mut read_a = a.rx_pending();
        let mut read_b = b.rx_pending();
        for event in events.iter() {
            let (io, flow, read) = match event.token() {
                A => (&mut a, &mut a_to_b, &mut read_a),
                B => (&mut b, &mut b_to_a, &mut read_b),
                t => panic!("unexpected token {t:?}"),
            };
            *read |= event.is_readable();
            if event.is_writable() && io.flush_queued().unwrap() {
                flow.blocked = false;
            }
        }
        if read_b {
            b.recv(|from, d| {
                assert_eq!(from, addr_a);
                a_to_b.on_datagram(d);
            })
            .unwrap();
        }
        if read_a {
            a.recv(|from, d| {
                assert_eq!(from, addr_b);
                b_to_a.on_datagram(d);
            })
            .unwrap();
        }
    }
    assert_eq!((a_to_b.sent, b_to_a.sent), (N, N));
}

#[test]
fn exchange_10000_random_datagrams_ipv4() {
    exchange(Ipv4Addr::LOCALHOST.into());
}

#[test]
fn exchange_10000_random_datagrams_ipv6() {
    exchange(Ipv6Addr::LOCALHOST.into());
}

/// Receives until `n` datagrams have arrived, polling in between.
fn recv_n(poll: &mut Poll, io: &mut UdpIo, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    loop {
        io.recv(|from, d| got.push((from, d.to_vec()))).unwrap();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} datagrams arrived",
            got.len()
        );
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
    }
}

fn gso_batch(ip: IpAddr, gso: bool) {
    let config = UdpConfig {
        gso,
        ..UdpConfig::default()
    };
    let (mut poll, mut a, mut b) = pair(ip, &config, &UdpConfig::default());
    eprintln!(
        "{ip}: max_gso_segments {} (gso {gso}), receiver gro_segments {}",
        a.max_gso_segments(),
        b.gro_segments()
    );
    if !gso {
        assert_eq!(a.max_gso_segments(), 1);
    }
    // Ten segments in one call: nine full ones and a shorter last one.
    let seg = 1200;
    let sizes: Vec<usize> = (0..10).map(|i| if i == 9 { 700 } else { seg }).collect();
    let batch: Vec<u8> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &len)| datagram(i, len))
        .collect();
    assert_eq!(
        a.send(b.local_addr(), &batch, Some(seg)).unwrap(),
        SendOutcome::Sent
    );
    let got = recv_n(&mut poll, &mut b, 10);
    assert_eq!(got.len(), 10, "the receiver must see ten datagrams");
    for (i, (from, data)) in got.iter().enumerate() {
        assert_eq!(*from, a.local_addr());
        check(i, sizes[i], data);
    }
}

#[test]
fn gso_batch_arrives_as_ten_datagrams_ipv4() {
    gso_batch(Ipv4Addr::LOCALHOST.into(), true);
}

#[test]
fn gso_batch_arrives_as_ten_datagrams_ipv6() {
    gso_batch(Ipv6Addr::LOCALHOST.into(), true);
}

#[test]
fn gso_batch_without_gso_falls_back_to_single_sends() {
    gso_batch(Ipv4Addr::LOCALHOST.into(), false);
}

/// Regression for the buffer-shrink freeze: a receive buffer that lost capacity on
/// every receive eventually had no room and the session waited forever. 100,000
/// receives in a row must each hand the kernel the full slot, and maximum-size
/// datagrams sent late in the run must still arrive whole.
#[test]
fn receive_buffers_never_shrink_over_100000_receives() {
    const RECEIVES: usize = 100_000;
    let config = UdpConfig::default();
    let (mut poll, mut a, mut b) = pair(Ipv4Addr::LOCALHOST.into(), &config, &config);
    let dest = b.local_addr();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut big = 0;
    for seq in 0..RECEIVES {
        let late_big = seq >= RECEIVES - 10_000 && seq % 500 == 0;
        let len = if late_big {
            big += 1;
            MAX_UDP_PAYLOAD
        } else {
            rng.random_range(1..=1452)
        };
        assert_eq!(
            a.send(dest, &datagram(seq, len), None).unwrap(),
            SendOutcome::Sent
        );
        let mut got = 0;
        while got == 0 {
            got = b.recv(|_, d| check(seq, len, d)).unwrap();
            assert_eq!(b.rx_capacity(), DEFAULT_RX_SLOT_SIZE, "receive {seq}");
            if got == 0 {
                assert!(Instant::now() < deadline, "stalled at receive {seq}");
                poll.poll(&mut events, Some(Duration::from_millis(20)))
                    .unwrap();
            }
        }
        assert_eq!(got, 1, "receive {seq}");
    }
    assert_eq!(big, 20);
}

/// `WouldBlock` is back-pressure: the datagrams the kernel refuses are queued and all
/// arrive once the socket is writable; when the queue is full the caller is told and
/// keeps its datagram.
#[test]
fn back_pressure_queues_and_never_drops() {
    const LEN: usize = 1200;
    let sender = UdpConfig {
        send_buffer: 4096,
        send_queue_bytes: 64 * 1024,
        ..UdpConfig::default()
    };
    let (mut poll, mut a, mut b) = pair(Ipv4Addr::LOCALHOST.into(), &sender, &UdpConfig::default());
    assert!(
        a.send_buffer_size() < b.send_buffer_size(),
        "small SO_SNDBUF"
    );
    let dest = b.local_addr();
    // Loopback never returns WouldBlock (the kernel frees a UDP sender's buffer as soon
    // as loopback delivers), so the kernel's refusal is simulated at the sendmsg
    // boundary after 20 datagrams.
    a.throttle_sends(Some(20));

    let mut accepted = 0;
    let mut outcomes = HashMap::new();
    loop {
        let outcome = a.send(dest, &datagram(accepted, LEN), None).unwrap();
        *outcomes.entry(outcome).or_insert(0) += 1;
        if outcome == SendOutcome::Full {
            break; // the caller keeps datagram `accepted` and stops producing
        }
        accepted += 1;
        assert!(accepted < 10_000, "the queue must be bounded");
    }
    assert_eq!(outcomes[&SendOutcome::Sent], 20);
    assert!(outcomes[&SendOutcome::Queued] > 0);
    assert!(a.queued_bytes() <= 64 * 1024 + LEN);
    assert_eq!(
        a.send(dest, &datagram(accepted, LEN), None).unwrap(),
        SendOutcome::Full,
        "still full: nothing drained yet"
    );

    let mut next = 0;
    let mut receive = |poll: &mut Poll, b: &mut UdpIo, upto: usize| {
        for (_, d) in recv_n(poll, b, upto - next) {
            check(next, LEN, &d);
            next += 1;
        }
        assert_eq!(next, upto);
    };
    // The peer drains what the kernel took; nothing more is there.
    receive(&mut poll, &mut b, 20);

    // The kernel takes ten more, then pushes back again.
    a.throttle_sends(Some(10));
    assert!(!a.flush_queued().unwrap());
    receive(&mut poll, &mut b, 30);

    // The kernel takes everything: the writable event drives the flush.
    a.throttle_sends(None);
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut drained = false;
    while !drained {
        assert!(Instant::now() < deadline, "no writable event");
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        for event in events.iter() {
            if event.token() == A && event.is_writable() {
                drained = a.flush_queued().unwrap();
            }
        }
        if !drained && events.is_empty() {
            // No new edge after the simulated refusal: the loop flushes on its own turn.
            drained = a.flush_queued().unwrap();
        }
    }
    assert_eq!(a.queued_bytes(), 0);
    receive(&mut poll, &mut b, accepted);

    // The refused datagram goes out now, and nothing else arrives.
    assert_eq!(
        a.send(dest, &datagram(accepted, LEN), None).unwrap(),
        SendOutcome::Sent
    );
    receive(&mut poll, &mut b, accepted + 1);
}

/// Builds a pool whose waker is registered with `poll`.
fn pool<R: Send + 'static>(poll: &Poll, threads: usize, capacity: usize) -> WorkerPool<R> {
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
    WorkerPool::with_capacity(threads, capacity, waker).unwrap()
}

#[test]
fn worker_pool_results_come_back_through_the_waker() {
    const JOBS: u64 = 100;
    const PANICS: u64 = 13;
    let mut poll = Poll::new().unwrap();
    let pool = pool::<u64>(&poll, 2, 128);
    // Loop turns that timed out (the "timer") while jobs were outstanding.
    let ticks = Arc::new(AtomicUsize::new(0));
    let mut ids = HashMap::new();
    for i in 0..JOBS {
        let ticks = Arc::clone(&ticks);
        let id = pool
            .submit(move || {
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if i % 10 == 5 {
                    // Finishes only once the loop has ticked three times while this
                    // job was running: proof that the loop was not waiting on it.
                    let until = Instant::now() + Duration::from_secs(10);
                    while ticks.load(Ordering::SeqCst) < 3 && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                if i == PANICS {
                    panic!("job {i} fails on purpose");
                }
                i * 2
            })
            .unwrap();
        ids.insert(id, i);
    }

    let mut results: HashMap<JobId, Result<u64, JobPanicked>> = HashMap::new();
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(10);
    while results.len() < JOBS as usize {
        assert!(Instant::now() < deadline, "results missing after 10 s");
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        if events.is_empty() {
            ticks.fetch_add(1, Ordering::SeqCst);
        }
        for event in events.iter() {
            assert_eq!(event.token(), WAKER);
            pool.drain_results(|id, r| assert!(results.insert(id, r).is_none()));
        }
    }
    assert!(ticks.load(Ordering::SeqCst) >= 3);
    assert_eq!(pool.outstanding(), 0);
    for (id, result) in results {
        let i = ids[&id];
        match result {
            Ok(v) => assert_eq!(v, i * 2),
            Err(e) => {
                assert_eq!(i, PANICS);
                assert!(e.message.contains("fails on purpose"), "{e}");
            }
        }
    }

    // Both workers survived the panic: two jobs that each wait for the other can only
    // finish if they run at the same time.
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    let meet = |tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>| {
        move || {
            tx.send(()).unwrap();
            u64::from(rx.recv_timeout(Duration::from_secs(5)).is_ok())
        }
    };
    pool.submit(meet(tx1, rx2)).unwrap();
    pool.submit(meet(tx2, rx1)).unwrap();
    let mut met = Vec::new();
    while met.len() < 2 {
        assert!(Instant::now() < deadline, "meeting jobs did not finish");
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        pool.drain_results(|_, r| met.push(r.unwrap()));
    }
    assert_eq!(met, vec![1, 1]);
}

#[test]
fn worker_pool_submit_fails_fast_when_full() {
    let mut poll = Poll::new().unwrap();
    let pool = pool::<usize>(&poll, 1, 4);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    pool.submit(move || {
        // Holds the only worker until the test releases it.
        let _ = release_rx.recv_timeout(Duration::from_secs(10));
        0
    })
    .unwrap();
    for i in 1..4 {
        pool.submit(move || i).unwrap();
    }
    // Full: this returns at once (if it blocked, the release below would never come).
    assert_eq!(pool.submit(|| 99), Err(PoolFull));
    assert_eq!(pool.outstanding(), 4);
    drop(release_tx);

    let mut got = Vec::new();
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 4 {
        assert!(Instant::now() < deadline, "results missing");
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        pool.drain_results(|_, r| got.push(r.unwrap()));
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
    // Room again.
    assert!(pool.submit(|| 5).is_ok());
}
