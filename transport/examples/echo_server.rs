//! A quill echo server on the event-loop (handler) API.
//!
//! ```text
//! cargo run -p quill-transport --example echo_server [ADDR]   # default 127.0.0.1:4433
//! ```
//!
//! It prints its host key's fingerprint (give it to `blocking_client`), accepts the
//! password login `demo`/`demo` — checked on the worker pool, as a real server would run
//! Argon2id there, never on the loop thread — and echoes every bidirectional stream.
//! Stop it with Ctrl-C.

use std::collections::HashMap;
use std::sync::Arc;

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::OsRandom;
use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Completion, Context, EventLoop, Handler};
use quill_transport::proto::{ConnectionHandle, EndpointConfig};
use quill_transport::proto::{
    Dir, Event, LoginMethod, ReadOutcome, ServerConfig, StreamEvent, StreamId,
};

/// The application: bytes read from each echoed stream and not yet written back.
#[derive(Default)]
struct Echo {
    streams: HashMap<(ConnectionHandle, StreamId), (Vec<u8>, bool)>,
}

impl Handler for Echo {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            // 1. A client wants to log in: verify off the loop, answer on the loop.
            Event::LoginRequested(req) => {
                let verify = move || -> Completion<Echo> {
                    let ok = req.user == "demo"
                        && matches!(&req.method, LoginMethod::Password(p) if p.as_slice() == b"demo");
                    Box::new(move |_: &mut Echo, ctx: &mut Context<'_, Echo>| {
                        let now = ctx.now();
                        if let Some(c) = ctx.connection(h) {
                            if ok {
                                c.accept_login(now, "demo", "welcome to the echo server");
                            } else {
                                c.refuse_login(now, "login refused");
                            }
                        }
                    })
                };
                if ctx.spawn(verify).is_err() {
                    // The pool's queue is full: refuse rather than block the loop.
                    let now = ctx.now();
                    if let Some(c) = ctx.connection(h) {
                        c.refuse_login(now, "server busy");
                    }
                }
            }
            Event::Connected { account, .. } => println!("{h:?} logged in as {account}"),
            // 2. The client opened streams: echo the bidirectional ones.
            Event::Stream(StreamEvent::Opened { .. }) => {
                if let Some(c) = ctx.connection(h) {
                    while let Some(id) = c.accept_stream(Dir::Bi) {
                        self.streams.insert((h, id), (Vec::new(), false));
                    }
                }
            }
            Event::ConnectionLost(e) => println!("{h:?} closed: {e}"),
            _ => {}
        }
    }

    // 3. Once per loop turn: move bytes from each stream's receive side to its send side.
    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let mut buf = [0u8; 16 * 1024];
        self.streams.retain(|&(h, id), (pending, fin)| {
            let Some(c) = ctx.connection(h) else {
                return false; // the connection is gone
            };
            while pending.len() < 1 << 20 && !*fin {
                match c.read(id, &mut buf) {
                    Ok(ReadOutcome::Data(n)) => pending.extend_from_slice(&buf[..n]),
                    Ok(ReadOutcome::Finished) => *fin = true,
                    Ok(ReadOutcome::Blocked) => break,
                    Err(_) => return false, // reset by the peer
                }
            }
            // Whatever flow control does not take now is written on a later turn.
            while let Ok(n @ 1..) = c.write(id, pending) {
                pending.drain(..n);
            }
            if *fin && pending.is_empty() {
                let _ = c.finish(id);
                return false;
            }
            true
        });
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4433".into())
        .parse()?;
    // A fresh host key per run; a real server loads a persistent one from a file.
    let host_key = Arc::new(HostKeyPair::generate(&OsRandom::new())?);
    let fingerprint = host_key.public().fingerprint();
    let mut ev = EventLoop::bind(
        addr,
        &UdpConfig::default(),
        EndpointConfig::default(),
        Some(ServerConfig::new(host_key)),
        2, // worker threads for login checks
        Echo::default(),
    )?;
    println!("listening on {}", ev.local_addr());
    println!("host key fingerprint: {fingerprint}");
    println!(
        "try: cargo run -p quill-transport --example blocking_client {} '{fingerprint}'",
        ev.local_addr()
    );
    ev.run()?; // until a graceful shutdown (LoopHandle::shutdown)
    Ok(())
}
