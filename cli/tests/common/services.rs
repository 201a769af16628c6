//! TEMPORARY (cli-client branch): a minimal server offering the stream services of
//! `cli/src/service.rs` (ECHO, PUT, GET, SINK, SOURCE), with logins verified against an
//! account database on the worker pool. The client tests run against it, and the
//! temporary `cli/src/server.rs` includes it for `quill demo`, until the server
//! helper's `quill server` lands; then the tests switch to the real binary.
//!
//! The protocol is the one documented in `cli/src/service.rs`; it is restated here so
//! this file compiles on its own inside a test crate.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::auth::accounts::SqliteStore;
use quill_transport::auth::login::LoginVerifier;
use quill_transport::driver::event_loop::{Context, EventLoop, Handler, LoopHandle};
use quill_transport::driver::login::verify_on_pool;
use quill_transport::driver::socket::UdpConfig;
use quill_transport::proto::endpoint::{ConnectionHandle, EndpointConfig, RetryPolicy};
use quill_transport::proto::{Dir, Event, ReadOutcome, ServerConfig, StreamEvent, StreamId};
use quill_transport::TransportConfig;

/// Longest request line.
const MAX_LINE: usize = 4096;
/// Bytes queued per stream before the server stops reading or producing.
const OUT_CAP: usize = 256 * 1024;

/// What to run.
pub struct ServiceOptions {
    /// Listen address.
    pub listen: SocketAddr,
    /// Host key.
    pub host_key: Arc<HostKeyPair>,
    /// Account database (created if missing).
    pub accounts: PathBuf,
    /// Root for PUT/GET; `None` refuses them.
    pub root: Option<PathBuf>,
    /// Let clients register.
    pub allow_register: bool,
    /// Transport behaviour.
    pub transport: TransportConfig,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// A server running on its own thread.
pub struct Running {
    /// Bound address.
    pub addr: SocketAddr,
    /// Host key fingerprint.
    pub fingerprint: String,
    handle: LoopHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Drains connections and waits for the loop thread.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown();
            let _ = t.join();
        }
    }
}

/// Starts the server.
pub fn start(opts: ServiceOptions) -> Result<Running, String> {
    let store = SqliteStore::open(&opts.accounts)
        .map_err(|e| format!("account database {}: {e}", opts.accounts.display()))?;
    let verifier = Arc::new(LoginVerifier::new(Arc::new(store), opts.allow_register));
    let fingerprint = opts.host_key.public().fingerprint();
    let mut config = ServerConfig::new(opts.host_key.clone());
    config.allow_register = opts.allow_register;
    config.transport = Arc::new(opts.transport);
    let endpoint = EndpointConfig {
        retry: opts.retry,
        ..EndpointConfig::default()
    };
    let handler = Services {
        verifier,
        root: opts.root,
        streams: HashMap::new(),
        buf: vec![0u8; 64 * 1024],
    };
    let mut ev = EventLoop::bind(
        opts.listen,
        &UdpConfig::default(),
        endpoint,
        Some(config),
        2,
        handler,
    )
    .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = ev.local_addr();
    let handle = ev.handle();
    let thread = std::thread::Builder::new()
        .name("quill-server".into())
        .spawn(move || ev.run())
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    Ok(Running {
        addr,
        fingerprint,
        handle,
        thread: Some(thread),
    })
}

/// What a stream is doing.
enum Service {
    /// Still reading the request line.
    Request(Vec<u8>),
    Echo,
    Put {
        file: File,
        tmp: PathBuf,
        dest: PathBuf,
        size: u64,
        sha256: String,
        got: u64,
        hash: Box<ring::digest::Context>,
    },
    Get {
        file: File,
        left: u64,
    },
    Sink(u64),
    Source(u64),
    /// Answered (or failed): input is discarded.
    Discard,
}

struct StreamState {
    service: Service,
    out: Vec<u8>,
    /// The peer's FIN was read.
    read_done: bool,
    /// FIN once `out` is flushed.
    finish: bool,
    /// FIN was sent.
    finished: bool,
}

struct Services {
    verifier: Arc<LoginVerifier>,
    root: Option<PathBuf>,
    streams: HashMap<(ConnectionHandle, StreamId), StreamState>,
    buf: Vec<u8>,
}

impl Handler for Services {
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, h: ConnectionHandle, event: Event) {
        match event {
            Event::LoginRequested(req) => {
                let v = self.verifier.clone();
                verify_on_pool(ctx, &v, h, req, |_, _, _| {});
            }
            Event::Stream(StreamEvent::Opened { .. }) => {
                let Some(c) = ctx.connection(h) else { return };
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    self.streams.insert(
                        (h, id),
                        StreamState {
                            service: Service::Request(Vec::new()),
                            out: Vec::new(),
                            read_done: false,
                            finish: false,
                            finished: false,
                        },
                    );
                }
                while let Some(id) = c.accept_stream(Dir::Uni) {
                    let _ = c.stop_sending(id, 1);
                }
            }
            Event::ConnectionLost(_) => {
                self.streams.retain(|k, s| {
                    if k.0 == h {
                        if let Service::Put { tmp, .. } = &s.service {
                            let _ = std::fs::remove_file(tmp);
                        }
                        false
                    } else {
                        true
                    }
                });
            }
            _ => {}
        }
    }

    fn on_turn(&mut self, ctx: &mut Context<'_, Self>) {
        let buf = &mut self.buf;
        let root = self.root.as_deref();
        self.streams.retain(|&(h, id), st| {
            let Some(c) = ctx.connection(h) else {
                return false;
            };
            while !st.read_done && st.out.len() < OUT_CAP {
                match c.read(id, buf) {
                    Ok(ReadOutcome::Data(n)) => st.feed(&buf[..n], root),
                    Ok(ReadOutcome::Finished) => {
                        st.read_done = true;
                        st.on_fin();
                    }
                    Ok(ReadOutcome::Blocked) => break,
                    Err(_) => return false,
                }
            }
            st.produce();
            while !st.out.is_empty() {
                match c.write(id, &st.out) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        st.out.drain(..n);
                    }
                }
            }
            if st.finish && !st.finished && st.out.is_empty() {
                let _ = c.finish(id);
                st.finished = true;
            }
            !(st.finished && st.read_done)
        });
    }
}

impl StreamState {
    fn fail(&mut self, msg: &str) {
        if let Service::Put { tmp, .. } = &self.service {
            let _ = std::fs::remove_file(tmp);
        }
        self.out.clear();
        self.out
            .extend_from_slice(format!("ERR {msg}\n").as_bytes());
        self.finish = true;
        self.service = Service::Discard;
    }

    fn feed(&mut self, data: &[u8], root: Option<&Path>) {
        match &mut self.service {
            Service::Request(line) => {
                let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                    line.extend_from_slice(data);
                    if line.len() > MAX_LINE {
                        self.fail("request line too long");
                    }
                    return;
                };
                line.extend_from_slice(&data[..nl]);
                let text = String::from_utf8_lossy(line).into_owned();
                self.start(&text, root);
                let rest = &data[nl + 1..];
                if !rest.is_empty() {
                    self.feed(rest, root);
                }
            }
            Service::Echo => self.out.extend_from_slice(data),
            Service::Put {
                file,
                size,
                got,
                hash,
                ..
            } => {
                *got += data.len() as u64;
                if *got > *size {
                    self.fail("more bytes than announced");
                    return;
                }
                hash.update(data);
                if let Err(e) = file.write_all(data) {
                    self.fail(&format!("cannot write: {e}"));
                }
            }
            Service::Sink(n) => *n += data.len() as u64,
            Service::Get { .. } | Service::Source(_) | Service::Discard => {}
        }
    }

    fn start(&mut self, line: &str, root: Option<&Path>) {
        let mut parts = line.splitn(2, ' ');
        let verb = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("");
        match verb {
            "ECHO" => self.service = Service::Echo,
            "SINK" => self.service = Service::Sink(0),
            "SOURCE" => match rest.parse() {
                Ok(n) => self.service = Service::Source(n),
                Err(_) => self.fail("SOURCE needs a byte count"),
            },
            "GET" => {
                let path = match resolve(root, rest) {
                    Ok(p) => p,
                    Err(e) => return self.fail(&e),
                };
                match hash_file(&path) {
                    Ok((size, sha)) => match File::open(&path) {
                        Ok(file) => {
                            self.out
                                .extend_from_slice(format!("OK {size} {sha}\n").as_bytes());
                            self.service = Service::Get { file, left: size };
                        }
                        Err(e) => self.fail(&format!("cannot open {rest}: {e}")),
                    },
                    Err(e) => self.fail(&format!("cannot read {rest}: {e}")),
                }
            }
            "PUT" => {
                let mut p = rest.splitn(3, ' ');
                let size = p.next().and_then(|s| s.parse::<u64>().ok());
                let sha = p.next().map(str::to_ascii_lowercase);
                let path = p.next().unwrap_or("");
                let (Some(size), Some(sha256)) = (size, sha) else {
                    return self.fail("PUT needs a size, a SHA-256 and a path");
                };
                let dest = match resolve(root, path) {
                    Ok(p) => p,
                    Err(e) => return self.fail(&e),
                };
                if let Some(parent) = dest.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let tmp = dest.with_extension("quill-upload");
                match File::create(&tmp) {
                    Ok(file) => {
                        self.service = Service::Put {
                            file,
                            tmp,
                            dest,
                            size,
                            sha256,
                            got: 0,
                            hash: Box::new(ring::digest::Context::new(&ring::digest::SHA256)),
                        }
                    }
                    Err(e) => self.fail(&format!("cannot create {path}: {e}")),
                }
            }
            _ => self.fail("unknown request"),
        }
    }

    fn on_fin(&mut self) {
        match std::mem::replace(&mut self.service, Service::Discard) {
            Service::Request(_) => self.fail("no request"),
            Service::Echo | Service::Discard => self.finish = true,
            Service::Sink(n) => {
                self.out.extend_from_slice(format!("OK {n}\n").as_bytes());
                self.finish = true;
            }
            Service::Put {
                file,
                tmp,
                dest,
                size,
                sha256,
                got,
                hash,
            } => {
                let digest = hex(hash.finish().as_ref());
                let ok = got == size && digest == sha256 && file.sync_all().is_ok();
                drop(file);
                if !ok {
                    let _ = std::fs::remove_file(&tmp);
                    self.out.extend_from_slice(
                        format!(
                            "ERR upload incomplete or SHA-256 mismatch ({got} of {size} bytes)\n"
                        )
                        .as_bytes(),
                    );
                } else if let Err(e) = std::fs::rename(&tmp, &dest) {
                    let _ = std::fs::remove_file(&tmp);
                    self.out
                        .extend_from_slice(format!("ERR cannot store: {e}\n").as_bytes());
                } else {
                    self.out.extend_from_slice(b"OK\n");
                }
                self.finish = true;
            }
            s @ (Service::Get { .. } | Service::Source(_)) => self.service = s,
        }
    }

    fn produce(&mut self) {
        match &mut self.service {
            Service::Source(left) => {
                let n = (*left).min(OUT_CAP.saturating_sub(self.out.len()) as u64) as usize;
                self.out.resize(self.out.len() + n, 0x5a);
                *left -= n as u64;
                if *left == 0 {
                    self.finish = true;
                }
            }
            Service::Get { file, left } => {
                while *left > 0 && self.out.len() < OUT_CAP {
                    let mut chunk = [0u8; 16 * 1024];
                    let want = (*left).min(chunk.len() as u64) as usize;
                    match file.read(&mut chunk[..want]) {
                        Ok(0) | Err(_) => {
                            // The file shrank: end the stream early; the client's
                            // size and SHA-256 checks catch it.
                            *left = 0;
                        }
                        Ok(n) => {
                            self.out.extend_from_slice(&chunk[..n]);
                            *left -= n as u64;
                        }
                    }
                }
                if *left == 0 {
                    self.finish = true;
                }
            }
            _ => {}
        }
    }
}

/// A path below the root: relative, `/`-separated, no `..`.
fn resolve(root: Option<&Path>, path: &str) -> Result<PathBuf, String> {
    let root = root.ok_or("this server has no --root for files")?;
    let p = Path::new(path);
    if path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("path '{path}' escapes the server's root"));
    }
    Ok(root.join(p))
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((size, hex(ctx.finish().as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
