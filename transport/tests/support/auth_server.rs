//! Shared by the accounts-and-login test binaries: a server event loop whose logins
//! are checked against a SQLite account store on the worker pool.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::bind_loop;

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::auth::accounts::{AccountStore, SqliteStore};
use quill_transport::auth::login::LoginVerifier;
use quill_transport::driver::blocking::{self, ConnectError};
use quill_transport::driver::event_loop::{Context, Handler, LoopHandle};
use quill_transport::driver::login::verify_on_pool;
use quill_transport::proto::endpoint::{ConnectionHandle, EndpointConfig};
use quill_transport::proto::{
    ClientConfig, ConnectionError, Event, HostKeyPolicy, Login, ServerConfig, TransportConfig,
};
use zeroize::Zeroizing;

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quill-auth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct AuthServer {
    pub verifier: Arc<LoginVerifier>,
}

impl Handler for AuthServer {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        if let Event::LoginRequested(req) = event {
            verify_on_pool(ctx, &self.verifier, h, req, |_, _, _| {});
        }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    key: Arc<HostKeyPair>,
    handle: LoopHandle,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        bind: &str,
        key: Arc<HostKeyPair>,
        verifier: Arc<LoginVerifier>,
        transport: TransportConfig,
    ) -> Server {
        let mut config = ServerConfig::new(key.clone());
        config.allow_register = verifier.allow_register;
        config.transport = Arc::new(transport);
        // Every test client comes from 127.0.0.1: no per-address limits.
        let endpoint = EndpointConfig {
            per_source_handshakes_per_sec: 0,
            max_half_open_per_address: 0,
            ..EndpointConfig::default()
        };
        let mut ev = bind_loop(bind, endpoint, Some(config), 2, AuthServer { verifier });
        let addr = ev.local_addr();
        let handle = ev.handle();
        let thread = std::thread::spawn(move || ev.run().expect("server loop"));
        Server {
            addr,
            key,
            handle,
            thread: Some(thread),
        }
    }

    /// A server on 127.0.0.1 with the default transport configuration.
    pub fn local(key: Arc<HostKeyPair>, verifier: Arc<LoginVerifier>) -> Server {
        Server::start("127.0.0.1:0", key, verifier, TransportConfig::default())
    }

    /// Logs in with `login`, pinning this server's host key.
    pub fn connect(&self, login: Login) -> Result<blocking::BlockingConnection, ConnectError> {
        blocking::connect(self.addr, client(login, &self.key))
    }

    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

pub fn host_key(seed: u8) -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[seed; 32]).unwrap())
}

pub fn client(login: Login, key: &HostKeyPair) -> ClientConfig {
    ClientConfig::new(
        login,
        HostKeyPolicy::Pinned(vec![key.public().fingerprint()]),
    )
}

pub fn password(user: &str, pw: &str) -> Login {
    Login::Password {
        user: user.into(),
        password: Zeroizing::new(pw.into()),
    }
}

pub fn register(user: &str, pw: &str) -> Login {
    Login::Register {
        user: user.into(),
        password: Zeroizing::new(pw.into()),
        key: None,
    }
}

pub fn store(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(dir.join("accounts.db")).unwrap())
}

/// An account store in a fresh temporary directory `name` holding `user` with
/// `password`.
pub fn store_with(name: &str, user: &str, password: &str) -> Arc<SqliteStore> {
    let st = store(&temp_dir(name));
    st.add_user(user, Some(password.as_bytes()), &[]).unwrap();
    st
}

pub fn refused(r: Result<blocking::BlockingConnection, ConnectError>) -> String {
    match r {
        Err(ConnectError::Connection(ConnectionError::LoginRefused { reason })) => reason,
        Err(e) => panic!("expected a refused login, got {e}"),
        Ok(c) => panic!("expected a refused login, logged in as {}", c.account()),
    }
}

/// A client that logs in once and reports how it went.
struct OneLogin {
    result: Option<Result<String, ConnectionError>>,
}

impl Handler for OneLogin {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::Connected { account, .. } => {
                self.result.get_or_insert(Ok(account));
                let now = ctx.now();
                if let Some(c) = ctx.connection(h) {
                    c.close(now, 0, "done");
                }
            }
            Event::ConnectionLost(e) => {
                self.result.get_or_insert(Err(e));
            }
            _ => {}
        }
    }
}

/// Logs in to `server` from a socket bound to `local_ip` (any 127.0.0.0/8 address
/// works on loopback), then closes. Gives the account, or why the login failed.
/// Bounded: panics if nothing happened within 20 s.
pub fn login_from(
    local_ip: &str,
    server: SocketAddr,
    config: ClientConfig,
) -> Result<String, ConnectionError> {
    let bind = format!("{local_ip}:0");
    let mut ev = bind_loop(
        &bind,
        EndpointConfig::default(),
        None,
        1,
        OneLogin { result: None },
    );
    ev.with_context(|_, ctx| ctx.connect(config, server))
        .expect("connect");
    let done = ev
        .run_until(Duration::from_secs(20), |h, _| h.result.is_some())
        .expect("client loop");
    assert!(done, "the login from {local_ip} did not finish within 20 s");
    let result = ev.handler().result.take().expect("done");
    // Let the CONNECTION_CLOSE go out (bounded).
    let _ = ev.run_until(Duration::from_millis(200), |_, ep| ep.is_empty());
    result
}
