//! The sans-IO core without sockets: bulk STREAM packets between two in-memory
//! connections, and the CPU cost of a handshake on each side.
//!
//! Run: `cargo bench -p quill-bench --bench transport -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quill_bench::common;
use quill_crypto::packet::Suite;
use quill_transport::proto::{
    ClientConfig, Connection, Dir, Event, ReadOutcome, ServerConfig, StreamEvent, StreamId,
};
use quill_transport::wire::{parse_header, ConnectionId, QUILL_VERSION};

const CLIENT: &str = "10.0.0.1:40000";
const SERVER: &str = "10.0.0.2:4433";

/// `quill-bench`'s client configuration (password login, the server's host key
/// pinned, only `suite`) and a server with that host key; the server accepts every
/// login (see [`handshake`]).
fn configs(suite: Suite) -> (ClientConfig, ServerConfig) {
    (
        common::client_config(suite, None),
        ServerConfig::new(common::host_key()),
    )
}

/// Time spent inside each side's calls.
#[derive(Default)]
struct Cpu {
    client: Duration,
    server: Duration,
}

/// Runs a handshake + login between two fresh connections; returns the pair.
fn handshake(cpu: &mut Cpu, suite: Suite) -> (Connection, Connection) {
    let (client_cfg, server_cfg) = configs(suite);
    let (caddr, saddr): (SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let mut buf = vec![0u8; 2048];
    let t = Instant::now();
    let mut client = Connection::client(
        client_cfg,
        t,
        saddr,
        ConnectionId::from_slice(&[1; 8]).unwrap(),
        ConnectionId::from_slice(&[2; 8]).unwrap(),
    )
    .unwrap();
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    while let Some(tx) = client.poll_transmit(Instant::now(), &mut buf) {
        to_server.push(buf[..tx.size].to_vec());
    }
    cpu.client += t.elapsed();
    let t = Instant::now();
    let first = parse_header(&to_server[0], 8).unwrap();
    let mut server = Connection::server(
        QUILL_VERSION,
        server_cfg,
        t,
        caddr,
        ConnectionId::from_slice(&[3; 8]).unwrap(),
        first.dcid,
        first.scid.unwrap(),
        None,
        None,
    )
    .unwrap();
    cpu.server += t.elapsed();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        for mut d in to_server.drain(..) {
            server.handle_datagram(Instant::now(), caddr, &mut d);
        }
        while let Some(ev) = server.poll_event() {
            if let Event::LoginRequested(req) = ev {
                server.accept_login(Instant::now(), &req.user, "");
            }
        }
        while let Some(tx) = server.poll_transmit(Instant::now(), &mut buf) {
            to_client.push(buf[..tx.size].to_vec());
        }
        cpu.server += t.elapsed();
        let t = Instant::now();
        for mut d in to_client.drain(..) {
            client.handle_datagram(Instant::now(), saddr, &mut d);
        }
        while client.poll_event().is_some() {}
        while let Some(tx) = client.poll_transmit(Instant::now(), &mut buf) {
            to_server.push(buf[..tx.size].to_vec());
        }
        cpu.client += t.elapsed();
        if client.is_established() && server.is_established() && to_server.is_empty() {
            break;
        }
    }
    assert!(client.is_established() && server.is_established());
    (client, server)
}

/// Moves `bytes` over one stream from client to server, everything in memory.
fn bulk(
    client: &mut Connection,
    server: &mut Connection,
    stream: StreamId,
    bytes: u64,
    buf: &mut [u8],
    rx: &mut [u8],
) {
    let (caddr, saddr): (SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let data = vec![0x5a_u8; 256 * 1024];
    let mut written = 0u64;
    let mut read = 0u64;
    while read < bytes {
        let now = Instant::now();
        while written < bytes {
            let n = ((bytes - written) as usize).min(data.len());
            match client.write(stream, &data[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => written += k as u64,
            }
        }
        let mut sent = 0;
        while let Some(tx) = client.poll_transmit(now, buf) {
            server.handle_datagram(now, caddr, &mut buf[..tx.size]);
            sent += 1;
            if sent == 64 {
                break;
            }
        }
        while let Some(ev) = server.poll_event() {
            let id = match ev {
                Event::Stream(StreamEvent::Readable(id)) => id,
                Event::Stream(StreamEvent::Opened { .. }) => match server.accept_stream(Dir::Uni) {
                    Some(id) => id,
                    None => continue,
                },
                _ => continue,
            };
            while let Ok(ReadOutcome::Data(n)) = server.read(id, rx) {
                read += n as u64;
            }
        }
        while let Some(tx) = server.poll_transmit(now, buf) {
            client.handle_datagram(now, saddr, &mut buf[..tx.size]);
        }
        for c in [&mut *client, &mut *server] {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
    }
}

fn bench_bulk(c: &mut Criterion) {
    const CHUNK: u64 = 8 << 20;
    let mut group = c.benchmark_group("bulk_in_memory");
    group.throughput(Throughput::Bytes(CHUNK));
    for suite in [Suite::Aes256Gcm, Suite::Aes128Gcm, Suite::ChaCha20Poly1305] {
        let mut cpu = Cpu::default();
        let (mut client, mut server) = handshake(&mut cpu, suite);
        let stream = client.open_stream(Dir::Uni).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut rx = vec![0u8; 256 * 1024];
        let name = suite.name().to_lowercase().replace('-', "");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    bulk(&mut client, &mut server, stream, CHUNK, &mut buf, &mut rx);
                }
                t.elapsed()
            })
        });
        // Keep the stream going across iterations; report the MTU the pair settled on.
        eprintln!("{}: path MTU {} bytes", suite.name(), client.mtu());
    }
    group.finish();
}

fn bench_handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    // Each side's CPU time, measured over the same handshakes.
    for (name, server) in [("server_cpu", true), ("client_cpu", false)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut cpu = Cpu::default();
                for _ in 0..iters {
                    black_box(handshake(&mut cpu, Suite::Aes256Gcm));
                }
                if server {
                    cpu.server
                } else {
                    cpu.client
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_bulk, bench_handshake);
criterion_main!(benches);
