//! Helpers shared by several test binaries.
#![allow(dead_code)]

pub mod auth_server;
pub mod datagrams;
pub mod echo;
pub mod relay;

use quill_transport::driver::UdpConfig;
use quill_transport::driver::{Context, EventLoop, Handler};
use quill_transport::proto::{ConnectionHandle, EndpointConfig};
use quill_transport::proto::{Event, ServerConfig};

/// An event loop bound to `addr` (a server with `server`, else a client loop) with
/// `workers` pool threads.
pub fn bind_loop<H: Handler>(
    addr: &str,
    endpoint: EndpointConfig,
    server: Option<ServerConfig>,
    workers: usize,
    handler: H,
) -> EventLoop<H> {
    EventLoop::bind(
        addr.parse().expect("a socket address"),
        &UdpConfig::default(),
        endpoint,
        server,
        workers,
        handler,
    )
    .expect("bind the event loop")
}

/// Polls `done` every 5 ms; panics with `what` if it does not hold within `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A client loop's handler that counts logins and lost connections.
#[derive(Debug, Default)]
pub struct Tally {
    pub connected: usize,
    pub lost: usize,
}

impl Handler for Tally {
    fn on_event(&mut self, _ctx: &mut Context<'_, Self>, _h: ConnectionHandle, event: Event) {
        match event {
            Event::Connected { .. } => self.connected += 1,
            Event::ConnectionLost(_) => self.lost += 1,
            _ => {}
        }
    }
}
