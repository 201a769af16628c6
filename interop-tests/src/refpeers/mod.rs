//! Shared code of the reference peers `quinn-peer` and `quiche-peer`: QUIC stacks that
//! nobody on this team wrote, driven through one command line so that the interop
//! checks ([`crate::reference`]) and the comparison harness (`quill-bench compare`)
//! can run them exactly like `quill`.
//!
//! # Contract (docs: the agreed interface, REFPEERS-INTERFACE)
//!
//! * `PEER server --listen ADDR --cert-dir DIR [--gso on|off] [--gro on|off]` writes a
//!   fresh self-signed certificate for `localhost` into `DIR` (`cert.pem`, `cert.der`,
//!   `key.pem` with mode 0600) unless all three are already there, prints exactly one
//!   line `listening ADDR` on stdout, and serves until SIGTERM, SIGINT or the end of its
//!   standard input (`--ignore-stdin` turns the last one off), then exits 0.
//! * The stream protocol ([`HEADER_LEN`]): on every client-initiated bidirectional
//!   stream the client sends a big-endian `u64` D, then any number of upload bytes, then
//!   FIN; the server discards the upload, then answers with D bytes and FIN.
//! * `PEER client --connect ADDR --ca PATH [--upload N] [--download D] [--connections K]
//!   [--concurrency C] [--timeout-secs S]` runs K connections (at most C at once), one
//!   stream each, verifies the server certificate against PATH for the name
//!   `localhost`, and prints one JSON line ([`ClientReport`]); failures print one line on
//!   stderr and exit [`EXIT_FAILURE`].
//! * Idle mode, `client ... --hold-secs S [--keep-alive-ms MS]`: every connection does
//!   its stream as above and then stays open; once all K have their answers the client
//!   prints `ready K` on stdout, holds them for S seconds with a keep-alive PING every
//!   MS milliseconds (default 5000; the idle timeout is 30 s), then prints the JSON line with the
//!   [`HoldReport`] fields added and closes them (`quill-bench compare --what idle`
//!   reads the server's memory meanwhile).
//! * `PEER probe --connect ADDR [--timeout-secs S]` attempts a QUIC v1 handshake with a
//!   verifier that refuses every certificate and prints one JSON line
//!   ([`ProbeReport`]): exit 0 when the outcome is a version mismatch, 1 otherwise.
//!
//! Both stacks get the same flow-control windows ([`DEFAULT_WINDOW`]), the same maximum
//! UDP payload ([`MAX_UDP_PAYLOAD`]), the same socket buffer request
//! ([`SOCKET_BUFFER`], what quill's driver asks for too), zero-copy stream sends of
//! static data, and ALPN [`ALPN`].
//!
//! # Running
//!
//! ```text
//! cargo build --release -p quill-interop --bins      # quiche needs cmake and libclang
//! target/release/quiche-peer server --cert-dir /tmp/qc < some-pipe &   # "listening 127.0.0.1:PORT"
//! target/release/quiche-peer client --connect 127.0.0.1:PORT --ca /tmp/qc/cert.pem --upload 1GiB
//! target/release/quinn-peer probe --connect 127.0.0.1:4433   # against a quill server
//! ```
//!
//! The server stops when its standard input closes: start it with a pipe (or
//! `--ignore-stdin` and stop it with SIGTERM), not with `< /dev/null`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

pub mod hq;

/// ALPN protocol of the bench stream protocol.
pub const ALPN: &[u8] = b"quill-bench";

/// The server name every certificate is for and every client verifies.
pub const SERVER_NAME: &str = "localhost";

/// Bytes of the download-length header at the start of each stream.
pub const HEADER_LEN: usize = 8;

/// Connection and stream flow-control window given to both stacks (32 MiB).
pub const DEFAULT_WINDOW: u64 = 32 << 20;

/// Largest UDP payload either stack sends (loopback; the QUIC-over-Ethernet value that
/// quinn's path MTU discovery converges to, used from the start by both stacks).
pub const MAX_UDP_PAYLOAD: usize = 1452;

/// `SO_RCVBUF` / `SO_SNDBUF` requested for every socket (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`); the same as quill's driver asks for.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Exit code of a failed client (the `quill` CLI's connection-failure code).
pub const EXIT_FAILURE: u8 = 3;

/// Exit code of a command-line error.
pub const EXIT_USAGE: u8 = 2;

/// A static run of zero bytes used as upload and download content.
pub static ZEROS: [u8; 1 << 20] = [0u8; 1 << 20];

/// The command line shared by both peers.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A reference QUIC peer for quill's interop checks and benchmarks"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the bench stream protocol.
    Server(ServerArgs),
    /// Run bulk transfers or handshakes against a server and print one JSON line.
    Client(ClientArgs),
    /// Attempt a QUIC v1 handshake and report how it ended (version negotiation checks).
    Probe(ProbeArgs),
    /// The interop runner's HTTP/0.9 (ALPN `hq-interop`), for `--suite quic-v1`.
    Hq {
        /// Which role.
        #[command(subcommand)]
        role: hq::HqCommand,
    },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl OnOff {
    /// True for `on`.
    pub fn on(self) -> bool {
        self == OnOff::On
    }
}

/// `server` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Directory holding (or receiving) cert.pem, cert.der and key.pem.
    #[arg(long)]
    pub cert_dir: PathBuf,
    /// Socket offloads and flow-control window.
    #[command(flatten)]
    pub net: NetArgs,
    /// Keep serving when standard input closes (stop only on SIGTERM/SIGINT).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// The socket and flow-control options that server and client share.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// UDP generic segmentation offload for sends.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub gso: OnOff,
    /// UDP generic receive offload.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub gro: OnOff,
    /// Flow-control window (connection and per stream), e.g. 32MiB.
    #[arg(long, value_parser = parse_bytes, default_value = "32MiB")]
    pub window: u64,
}

/// `client` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long)]
    pub connect: SocketAddr,
    /// The server's certificate (cert.pem from its --cert-dir), trusted as the only root.
    #[arg(long)]
    pub ca: PathBuf,
    /// Bytes each connection uploads (e.g. 4194304, 4MiB, 1GiB).
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    pub upload: u64,
    /// Bytes each connection asks the server to send back.
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    pub download: u64,
    /// Number of connections, one after another or C at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Connections in progress at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Give up (exit 3) after this many seconds in total (with --hold-secs: before
    /// every connection has its answer).
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Idle mode: keep every connection open for this many seconds once all have their
    /// answers (prints `ready K` first); 0: close each one as soon as it is done.
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Keep-alive interval of held connections, in milliseconds (below 15000: the idle
    /// timeout is 30 s).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..15_000))]
    pub keep_alive_ms: u64,
    /// Socket offloads and flow-control window.
    #[command(flatten)]
    pub net: NetArgs,
}

impl ClientArgs {
    /// The hold period of idle mode, if `--hold-secs` asks for one.
    pub fn hold(&self) -> Option<Duration> {
        (self.hold_secs > 0).then(|| Duration::from_secs(self.hold_secs))
    }

    /// The keep-alive interval of held connections.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.keep_alive_ms)
    }
}

/// What an idle-mode client adds to its JSON line about the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldReport {
    /// Connections open when the hold began (`ready K`).
    pub held: u32,
    /// Of those, connections that ended before the hold did (must be 0).
    pub lost_while_held: u32,
    /// Keep-alive PINGs sent by the client over the connections' lives.
    pub keep_alives_sent: u64,
    /// The keep-alive interval.
    pub keep_alive_ms: u64,
    /// How long the connections were held.
    pub hold_secs: u64,
}

impl HoldReport {
    /// `report` with this hold's fields added.
    pub fn add_to(&self, mut report: serde_json::Value) -> serde_json::Value {
        report["held"] = self.held.into();
        report["lost_while_held"] = self.lost_while_held.into();
        report["keep_alives_sent"] = self.keep_alives_sent.into();
        report["keep_alive_ms"] = self.keep_alive_ms.into();
        report["hold_seconds"] = self.hold_secs.into();
        report
    }
}

/// Prints `ready K` on stdout and flushes (idle mode: every connection is open).
pub fn print_ready(k: usize) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "ready {k}");
    let _ = out.flush();
}

/// `probe` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Server address.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Report a timeout after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// Parses a byte count: a plain number, or one with a suffix `k`/`K`/`KB` (10^3),
/// `KiB` (2^10), `M`, `MiB`, `G`, `GiB`; an optional space before the suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count; use e.g. 1048576, 4MiB or 1GiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in '{s}'; use B, KiB, MiB, GiB, k, M or G"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// The process's reference instant, taken as early as possible in `main`.
static START: OnceLock<Instant> = OnceLock::new();

/// Records (once) and returns the process's start instant: call first thing in `main`.
pub fn process_start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Milliseconds since [`process_start`] at `t`.
pub fn ms_since_start(t: Instant) -> f64 {
    t.saturating_duration_since(process_start()).as_secs_f64() * 1e3
}

/// The certificate files of a server directory.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate (what clients pass as `--ca`).
    pub cert_pem: PathBuf,
    /// DER certificate.
    pub cert_der: PathBuf,
    /// PEM PKCS#8 private key (mode 0600).
    pub key_pem: PathBuf,
}

impl CertFiles {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            cert_pem: dir.join("cert.pem"),
            cert_der: dir.join("cert.der"),
            key_pem: dir.join("key.pem"),
        }
    }
}

/// Writes a fresh self-signed certificate for [`SERVER_NAME`] into `dir` (created if
/// missing) unless `cert.pem`, `cert.der` and `key.pem` are all there already.
pub fn ensure_certificate(dir: &Path) -> io::Result<CertFiles> {
    let files = CertFiles::in_dir(dir);
    if files.cert_pem.is_file() && files.cert_der.is_file() && files.key_pem.is_file() {
        return Ok(files);
    }
    fs::create_dir_all(dir)?;
    let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| io::Error::other(format!("certificate generation failed: {e}")))?;
    write_private(&files.key_pem, ck.signing_key.serialize_pem().as_bytes())?;
    fs::write(&files.cert_der, ck.cert.der())?;
    fs::write(&files.cert_pem, ck.cert.pem())?;
    Ok(files)
}

/// Bytes of the opaque extension [`ensure_certificate_chain`] puts in each certificate,
/// so that an ECDSA certificate is about as large as the interop runner's RSA-2048 ones
/// (its amplificationlimit test wants ≥ 7500 bytes of server Handshake data from a chain
/// of 9).
const CHAIN_PADDING: usize = 500;

/// Like [`ensure_certificate`], with a chain of `len` certificates in `cert.pem`: the
/// leaf for [`SERVER_NAME`] (whose key is `key.pem` and DER `cert.der`), then `len - 1`
/// CA certificates up to a self-signed root, each padded with a non-critical private
/// extension of [`CHAIN_PADDING`] bytes. The interop runner's amplificationlimit test
/// case serves such a chain so that the server's first flight is far more than three
/// times the client's Initial. `len` ≤ 1 is [`ensure_certificate`].
pub fn ensure_certificate_chain(dir: &Path, len: usize) -> io::Result<CertFiles> {
    if len <= 1 {
        return ensure_certificate(dir);
    }
    let files = CertFiles::in_dir(dir);
    fs::create_dir_all(dir)?;
    let err = |e: rcgen::Error| io::Error::other(format!("certificate generation failed: {e}"));
    let padded = |mut p: rcgen::CertificateParams, cn: String| {
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        // OID 1.3.6.1.4.1.55555.1 (private), value an OCTET STRING of zeros.
        let mut value = vec![0x04, 0x82];
        value.extend_from_slice(&(CHAIN_PADDING as u16).to_be_bytes());
        value.resize(4 + CHAIN_PADDING, 0);
        p.custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 55555, 1],
                value,
            ));
        p
    };
    let ca_params = |i: usize| -> Result<rcgen::CertificateParams, rcgen::Error> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ok(padded(p, format!("quill interop CA {i}")))
    };
    // Root first, then each CA signed by the one before; PEM order is leaf first.
    let mut pems = Vec::with_capacity(len);
    let root_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut issuer =
        rcgen::CertifiedIssuer::self_signed(ca_params(0).map_err(err)?, root_key).map_err(err)?;
    pems.push(issuer.pem());
    for i in 1..len - 1 {
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let next = rcgen::CertifiedIssuer::signed_by(ca_params(i).map_err(err)?, key, &issuer)
            .map_err(err)?;
        pems.push(next.pem());
        issuer = next;
    }
    let leaf_key = rcgen::KeyPair::generate().map_err(err)?;
    let leaf_params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(err)?;
    let leaf = padded(leaf_params, SERVER_NAME.to_string())
        .signed_by(&leaf_key, &issuer)
        .map_err(err)?;
    pems.push(leaf.pem());
    pems.reverse();
    write_private(&files.key_pem, leaf_key.serialize_pem().as_bytes())?;
    fs::write(&files.cert_der, leaf.der())?;
    fs::write(&files.cert_pem, pems.concat())?;
    Ok(files)
}

/// Writes `bytes` to a new file of mode 0600 (replacing any old one).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Timings of one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnTiming {
    /// When the connection attempt started.
    pub connect_start: Instant,
    /// When the handshake completed.
    pub established: Instant,
    /// When the first byte of the request was handed to the stack.
    pub transfer_start: Instant,
    /// When the first response byte (or the FIN of an empty response) arrived.
    pub first_byte: Instant,
    /// When the response's FIN arrived.
    pub transfer_end: Instant,
    /// Response bytes received.
    pub downloaded: u64,
}

/// The client's one JSON line.
#[derive(Debug, Clone)]
pub struct ClientReport {
    /// `"quinn"` or `"quiche"`.
    pub stack: &'static str,
    /// Connections completed.
    pub connections: u32,
    /// Bytes uploaded per connection.
    pub upload_bytes: u64,
    /// Bytes downloaded per connection.
    pub download_bytes: u64,
    /// First connection: process start to handshake complete.
    pub handshake_ms: f64,
    /// Median over connections of connect start to established.
    pub handshake_ms_median: f64,
    /// Process start to the first response byte (or FIN) of the first connection.
    pub first_byte_ms: f64,
    /// First connection: first request byte sent to the response's FIN.
    pub seconds: f64,
    /// `(upload + download) * 8 / seconds`.
    pub goodput_bps: f64,
    /// Connections per second of total wall time.
    pub handshakes_per_sec: f64,
}

impl ClientReport {
    /// Builds the report from per-connection timings (`timings[0]` is the first
    /// connection) and the wall time of the whole run.
    pub fn from_timings(
        stack: &'static str,
        upload: u64,
        download: u64,
        timings: &[ConnTiming],
        wall: Duration,
    ) -> Option<ClientReport> {
        let first = timings.first()?;
        let mut hs: Vec<f64> = timings
            .iter()
            .map(|t| {
                t.established
                    .saturating_duration_since(t.connect_start)
                    .as_secs_f64()
                    * 1e3
            })
            .collect();
        hs.sort_by(f64::total_cmp);
        let median = if hs.len() % 2 == 1 {
            hs[hs.len() / 2]
        } else {
            (hs[hs.len() / 2 - 1] + hs[hs.len() / 2]) / 2.0
        };
        let seconds = first
            .transfer_end
            .saturating_duration_since(first.transfer_start)
            .as_secs_f64()
            .max(1e-9);
        Some(ClientReport {
            stack,
            connections: timings.len() as u32,
            upload_bytes: upload,
            download_bytes: download,
            handshake_ms: ms_since_start(first.established),
            handshake_ms_median: median,
            first_byte_ms: ms_since_start(first.first_byte),
            seconds,
            goodput_bps: (upload + download) as f64 * 8.0 / seconds,
            handshakes_per_sec: timings.len() as f64 / wall.as_secs_f64().max(1e-9),
        })
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stack": self.stack,
            "connections": self.connections,
            "upload_bytes": self.upload_bytes,
            "download_bytes": self.download_bytes,
            "handshake_ms": self.handshake_ms,
            "handshake_ms_median": self.handshake_ms_median,
            "first_byte_ms": self.first_byte_ms,
            "seconds": self.seconds,
            "goodput_bps": self.goodput_bps,
            "handshakes_per_sec": self.handshakes_per_sec,
        })
    }
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The server answered with a Version Negotiation listing no version we speak.
    VersionMismatch,
    /// The handshake went through (not expected against quill).
    Connected,
    /// Nothing conclusive within the time limit.
    Timeout,
    /// Any other failure.
    Error,
}

impl ProbeOutcome {
    /// The JSON name.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeOutcome::VersionMismatch => "version_mismatch",
            ProbeOutcome::Connected => "connected",
            ProbeOutcome::Timeout => "timeout",
            ProbeOutcome::Error => "error",
        }
    }
}

/// The probe's one JSON line.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// `"quinn"` or `"quiche"`.
    pub stack: &'static str,
    /// How it ended.
    pub outcome: ProbeOutcome,
    /// What the stack said.
    pub detail: String,
}

impl ProbeReport {
    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stack": self.stack,
            "outcome": self.outcome.name(),
            "detail": self.detail,
        })
    }

    /// Prints the JSON line and returns the process exit code (0 for a version
    /// mismatch, 1 otherwise).
    pub fn emit(&self) -> u8 {
        print_json_line(&self.to_json());
        u8::from(self.outcome != ProbeOutcome::VersionMismatch)
    }
}

/// Prints `value` as one line on stdout and flushes.
pub fn print_json_line(value: &serde_json::Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Prints `listening ADDR` on stdout and flushes.
pub fn print_listening(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// Prints `PROG: message` on stderr (one line).
pub fn print_error(prog: &str, message: impl fmt::Display) {
    let line = message.to_string().replace('\n', " ");
    eprintln!("{prog}: {line}");
}

/// The [`hq::Profile`] of `role`'s test case; `None` after telling the runner that
/// `prog` does not know the test case (`unsupported ...`).
pub fn hq_profile(role: &hq::HqCommand, prog: &str) -> Option<hq::Profile> {
    let testcase = match role {
        hq::HqCommand::Server(a) => &a.testcase,
        hq::HqCommand::Client(a) => &a.testcase,
    };
    let profile = hq::Profile::for_testcase(testcase);
    match profile {
        None => hq::print_unsupported(&format!("{prog} does not know test case {testcase}")),
        // quinn-proto 0.11 and quiche 0.30 know no QUIC v2 (0x6b3343cf) and no
        // version_information: nothing to negotiate with.
        Some(p) if p.v2 => {
            hq::print_unsupported(&format!("{prog} has no QUIC v2"));
            return None;
        }
        Some(_) => {}
    }
    profile
}

/// Reads standard input on a background thread and calls `on_eof` when it closes
/// (the server's "stop when my parent goes away" rule).
pub fn watch_stdin(on_eof: impl FnOnce() + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = io::stdin().lock();
            loop {
                match io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            on_eof();
        });
}

/// A UDP socket bound to `addr`, non-blocking, with [`SOCKET_BUFFER`]-sized kernel
/// buffers requested.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these silently; a refusal is not fatal either.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Where a client socket binds to reach `peer`: port 0 on the loopback address of the
/// same family when `peer` is a loopback address, else on the unspecified address.
pub fn local_bind_for(peer: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = match (peer.ip().is_loopback(), peer) {
        (true, SocketAddr::V4(_)) => std::net::Ipv4Addr::LOCALHOST.into(),
        (true, SocketAddr::V6(_)) => std::net::Ipv6Addr::LOCALHOST.into(),
        (false, SocketAddr::V4(_)) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        (false, SocketAddr::V6(_)) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

/// Turns UDP GRO off on `fd` (after quinn-udp turned it on), for `--gro off`.
pub fn disable_gro(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    quill_transport::driver::set_int_option(&fd, libc::SOL_UDP, libc::UDP_GRO, 0)
}

/// Encodes the stream header for a download of `d` bytes.
pub fn encode_header(d: u64) -> [u8; HEADER_LEN] {
    d.to_be_bytes()
}

/// Names a QUIC version number for messages: `QUIC v1`, `QUIC v2`, `draft-29`...,
/// `reserved` (RFC 9000 §15 greasing), `quill`, or `unknown`.
pub fn version_name(v: u32) -> &'static str {
    quill_transport::wire::version_name(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("4194304"), Ok(4 << 20));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("3k"), Ok(3000));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("4 parsecs").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn idle_mode_options() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["peer", "client", "--connect", "127.0.0.1:1", "--ca", "c"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| match c.command {
                Command::Client(a) => a,
                other => panic!("not a client: {other:?}"),
            })
        };
        let a = parse(&[]).expect("defaults");
        assert_eq!((a.hold(), a.keep_alive_ms), (None, 5000));
        let a = parse(&["--hold-secs", "7", "--keep-alive-ms", "250"]).expect("idle mode");
        assert_eq!(a.hold(), Some(Duration::from_secs(7)));
        assert_eq!(a.keep_alive(), Duration::from_millis(250));
        // A keep-alive of 0 or at half the idle timeout and above is refused.
        for bad in ["0", "15000", "soon"] {
            assert!(parse(&["--keep-alive-ms", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--hold-secs", "-1"]).is_err());
        let r = HoldReport {
            held: 3,
            lost_while_held: 0,
            keep_alives_sent: 9,
            keep_alive_ms: 250,
            hold_secs: 7,
        };
        let j = r.add_to(serde_json::json!({ "stack": "quinn" }));
        assert_eq!(j["stack"], "quinn");
        assert_eq!(
            (j["held"].as_u64(), j["keep_alives_sent"].as_u64()),
            (Some(3), Some(9))
        );
        assert_eq!(j["lost_while_held"], 0);
    }

    #[test]
    fn report_fields() {
        let t0 = process_start();
        let t = ConnTiming {
            connect_start: t0,
            established: t0 + Duration::from_millis(2),
            transfer_start: t0 + Duration::from_millis(2),
            first_byte: t0 + Duration::from_millis(3),
            transfer_end: t0 + Duration::from_millis(1002),
            downloaded: 10,
        };
        let r = ClientReport::from_timings("quinn", 1000, 250, &[t, t], Duration::from_secs(2))
            .expect("report");
        let j = r.to_json();
        assert_eq!(j["connections"], 2);
        assert_eq!(j["upload_bytes"], 1000);
        assert!((r.seconds - 1.0).abs() < 1e-6);
        assert!((r.goodput_bps - 10_000.0).abs() < 1e-3);
        assert!((r.handshakes_per_sec - 1.0).abs() < 1e-9);
        assert!((r.handshake_ms_median - 2.0).abs() < 1e-6);
        assert!(ClientReport::from_timings("quinn", 0, 0, &[], Duration::ZERO).is_none());
    }
}
