//! A userspace UDP relay that plays a NAT rebinding: one client's datagrams go to the
//! server from one upstream socket after another.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A relay for one client that sends the client's datagrams to `server` from the first
/// of `ports` upstream sockets, moving to the next one every `every` datagrams and
/// staying on the last: a NAT that rebinds `ports - 1` times. Answers from any upstream
/// socket go to the client. It runs on its own thread for at most 120 s, or until the
/// returned flag is set. Returns the address clients send to.
pub fn rebinding(server: SocketAddr, ports: usize, every: usize) -> (SocketAddr, Arc<AtomicBool>) {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ups: Vec<UdpSocket> = (0..ports.max(1))
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    front.set_nonblocking(true).unwrap();
    for s in &ups {
        s.set_nonblocking(true).unwrap();
    }
    let addr = front.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let mut client = None;
        let mut sent = 0usize;
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            let mut idle = true;
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                idle = false;
                client = Some(from);
                let up = &ups[(sent / every.max(1)).min(ups.len() - 1)];
                let _ = up.send_to(&buf[..n], server);
                sent += 1;
            }
            for up in &ups {
                while let Ok((n, _)) = up.recv_from(&mut buf) {
                    idle = false;
                    if let Some(c) = client {
                        let _ = front.send_to(&buf[..n], c);
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    (addr, stop)
}
