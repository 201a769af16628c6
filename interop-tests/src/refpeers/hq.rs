//! The QUIC interop runner's HTTP/0.9 (ALPN `hq-interop`) as the reference peers speak
//! it for `quill-interop run --suite quic-v1`: the shared command line, what each test
//! case asks of an endpoint, the request format and the JSON reports.
//!
//! # Contract
//!
//! The same shape as `quill-interop peer` (so the runner drives both the same way):
//!
//! * `PEER hq server --testcase NAME --listen ADDR --root DIR` prints `listening ADDR`
//!   (or `unsupported REASON` and exits 127 when the stack cannot play the test case),
//!   serves until its standard input closes, then prints one JSON line
//!   `{"role":"server","stack":..,"connections":..,"files_served":..,"retry_sent":..,
//!   "version":..,"alpn":..,"group":..,"cipher":..}`.
//! * `PEER hq client --testcase NAME --connect ADDR --download DIR --files a,b
//!   [--files-from LIST] [--timeout-secs S]` fetches every file (one bidirectional
//!   stream each: `GET /NAME\r\n`, FIN; the answer is the file's bytes, FIN) and prints
//!   one JSON line `{"role":"client","ok":..,"handshakes":..,"files":..,"bytes":..,
//!   "seconds":..,"goodput_bps":..,"retries":..,"key_updates_initiated":..,
//!   "resumed":..|null,"zero_rtt_accepted":..|null,"version":..,
//!   "alpn":..,"group":..,"cipher":..,"error":{"kind":..,"message":..}|null}`.
//!
//! Certificates are made at run time (rcgen) in a temporary directory; clients do not
//! verify them (as the interop runner's endpoints do not).

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

/// ALPN of the interop runner's HTTP/0.9.
pub const ALPN_HQ: &[u8] = b"hq-interop";

/// Exit code of an endpoint asked for a test case it does not support (the interop
/// runner's convention).
pub const EXIT_UNSUPPORTED: u8 = 127;

/// Longest request line a server accepts.
pub const MAX_REQUEST: usize = 4096;

/// Largest file a server serves (read whole).
pub const MAX_FILE: u64 = 64 << 20;

/// `hq server` / `hq client`.
#[derive(Debug, Subcommand)]
pub enum HqCommand {
    /// Serve files from --root over hq-interop.
    Server(HqServerArgs),
    /// Fetch files over hq-interop.
    Client(HqClientArgs),
}

/// `hq server` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HqServerArgs {
    /// The interop test case (decides Retry, ciphers, windows, stream limits).
    #[arg(long, default_value = "handshake")]
    pub testcase: String,
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Directory the files are served from.
    #[arg(long)]
    pub root: PathBuf,
    /// Accepted for command-line compatibility with `quill-interop peer`; unused.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Offer this address in the `preferred_address` transport parameter (RFC 9000
    /// §9.6; preferredaddress: the relay's second port, which forwards to the
    /// listening socket). A stack that cannot offer one says `unsupported`.
    #[arg(long)]
    pub preferred_address: Option<SocketAddr>,
}

/// `hq client` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HqClientArgs {
    /// The interop test case.
    #[arg(long, default_value = "handshake")]
    pub testcase: String,
    /// Server address.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Directory the files are written to.
    #[arg(long)]
    pub download: PathBuf,
    /// The files to fetch.
    #[command(flatten)]
    pub files: FileList,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// `--files` and `--files-from`: the files a client fetches (the same options in
/// `quill-interop peer client` and every reference peer's `hq client`).
#[derive(Debug, Clone, clap::Args)]
pub struct FileList {
    /// Comma-separated file names.
    #[arg(long, value_delimiter = ',')]
    pub files: Vec<String>,
    /// A file with one name per line (added to --files).
    #[arg(long)]
    pub files_from: Option<PathBuf>,
}

impl FileList {
    /// Every file to fetch: `--files`, then `--files-from`; an error if there is none.
    pub fn all(&self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = self
            .files
            .iter()
            .filter(|f| !f.is_empty())
            .cloned()
            .collect();
        if let Some(list) = &self.files_from {
            let text = fs::read_to_string(list)
                .map_err(|e| format!("cannot read {}: {e}", list.display()))?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
        if out.is_empty() {
            return Err("no files to fetch; pass --files or --files-from".into());
        }
        Ok(out)
    }
}

impl HqClientArgs {
    /// Every file to fetch: `--files`, then `--files-from`.
    pub fn all_files(&self) -> Result<Vec<String>, String> {
        self.files.all()
    }

    /// The client's overall bound.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// What a test case asks of an endpoint (the interop runner's `TESTCASE` variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The server sends a Retry to every new connection.
    pub retry: bool,
    /// Only TLS_CHACHA20_POLY1305_SHA256 is offered / accepted.
    pub chacha20: bool,
    /// Small flow-control windows ([`SMALL_STREAM_WINDOW`], [`SMALL_CONN_WINDOW`]).
    pub small_windows: bool,
    /// One connection per file, one after another (handshakeloss, handshakecorruption).
    pub connection_per_file: bool,
    /// The client initiates a key update once the handshake is confirmed.
    pub key_update: bool,
    /// The server's `initial_max_streams_bidi`.
    pub max_streams_bidi: u64,
    /// QUIC v2 by compatible version negotiation (RFC 9368/9369): the client starts in
    /// v1 listing v2, the server upgrades.
    pub v2: bool,
    /// preferredaddress: the client moves to the server's preferred address.
    pub preferred_address: bool,
    /// connectionmigration (the interop runner's rule): the client moves to a new
    /// local port on its own initiative mid-transfer (RFC 9000 §9.2); the server
    /// plays transfer.
    pub active_migration: bool,
    /// Certificates in the server's chain (`refpeers::ensure_certificate_chain`): 9 in
    /// amplificationlimit, as the interop runner serves, 1 otherwise.
    pub cert_chain_len: usize,
    /// resumption, zerortt: the client fetches the first file over one connection and
    /// the others over a second one that resumes the first's TLS session.
    pub resume: bool,
    /// zerortt: the second connection sends its requests in 0-RTT; the server
    /// accepts early data.
    pub zero_rtt: bool,
}

/// Stream window of the `transfer` test case.
pub const SMALL_STREAM_WINDOW: u64 = 64 << 10;
/// Connection window of the `transfer` test case.
pub const SMALL_CONN_WINDOW: u64 = 128 << 10;
/// Stream and connection window otherwise.
pub const DEFAULT_HQ_WINDOW: u64 = 16 << 20;

impl Profile {
    /// The profile of test case `name`, or `None` for one no peer here knows.
    pub fn for_testcase(name: &str) -> Option<Profile> {
        let mut p = Profile {
            retry: false,
            chacha20: false,
            small_windows: false,
            connection_per_file: false,
            key_update: false,
            max_streams_bidi: 1000,
            v2: false,
            preferred_address: false,
            active_migration: false,
            cert_chain_len: 1,
            resume: false,
            zero_rtt: false,
        };
        match name {
            "handshake" | "transferloss" | "transfercorruption" | "blackhole" | "longrtt"
            | "goodput" | "ipv6" | "rebind-port" | "multiplexing" | "rebind-addr" | "ecn" => {}
            "transfer" => p.small_windows = true,
            // The interop runner's endpoints play "transfer" here, with its chain of 9.
            "amplificationlimit" => {
                p.small_windows = true;
                p.cert_chain_len = 9;
            }
            "retry" => p.retry = true,
            "chacha20" => p.chacha20 = true,
            "keyupdate" => p.key_update = true,
            "v2" => p.v2 = true,
            "handshakeloss" | "handshakecorruption" => p.connection_per_file = true,
            "preferredaddress" => p.preferred_address = true,
            "connectionmigration" => {
                p.small_windows = true;
                p.active_migration = true;
            }
            "resumption" => p.resume = true,
            "zerortt" => {
                p.resume = true;
                p.zero_rtt = true;
            }
            _ => return None,
        }
        Some(p)
    }

    /// The files of each connection, in order: one connection for all, one per file
    /// (handshakeloss), or the first file alone and then the rest (resumption,
    /// zerortt).
    pub fn groups(&self, files: Vec<String>) -> Vec<Vec<String>> {
        if self.connection_per_file {
            files.into_iter().map(|f| vec![f]).collect()
        } else if self.resume && files.len() > 1 {
            let mut files = files;
            let rest = files.split_off(1);
            vec![files, rest]
        } else {
            vec![files]
        }
    }

    /// `(stream window, connection window)`.
    pub fn windows(&self) -> (u64, u64) {
        if self.small_windows {
            (SMALL_STREAM_WINDOW, SMALL_CONN_WINDOW)
        } else {
            (DEFAULT_HQ_WINDOW, DEFAULT_HQ_WINDOW)
        }
    }
}

/// The request for `name`: `GET /name\r\n`.
pub fn request(name: &str) -> Vec<u8> {
    format!("GET /{name}\r\n").into_bytes()
}

/// Reads a request line (`GET /path`, CRLF or LF optional at the end) and returns the
/// file under `root` it names. Paths the file service's guard refuses (`..`, absolute
/// parts, control characters) and requests of more than [`MAX_REQUEST`] bytes are
/// refused.
pub fn resolve(root: &Path, req: &[u8]) -> Result<PathBuf, String> {
    if req.len() > MAX_REQUEST {
        return Err("request too long".into());
    }
    let text = std::str::from_utf8(req).map_err(|_| "request is not UTF-8".to_string())?;
    let line = text.trim_end_matches(['\r', '\n']);
    let path = line
        .strip_prefix("GET /")
        .ok_or_else(|| format!("not a GET request: {:?}", truncate(line)))?;
    // The file service's path guard (docs/SPEC.md §10): one rule for every server here.
    quill_transport::service::check_relative(path)?;
    Ok(root.join(path))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Reads the file a request names (at most [`MAX_FILE`] bytes).
pub fn read_requested(root: &Path, req: &[u8]) -> Result<Vec<u8>, String> {
    let path = resolve(root, req)?;
    let meta = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(format!("{} is not a servable file", path.display()));
    }
    fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a downloaded file under `dir` (names come from our own list; still guarded).
pub fn save(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let rel = Path::new(name);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::other(format!("bad file name {name:?}")));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, data)
}

/// What a connection negotiated, as far as the stack exposes it.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    /// QUIC version.
    pub version: Option<u32>,
    /// ALPN.
    pub alpn: Option<String>,
    /// TLS key-exchange group (IANA name), where the stack exposes it.
    pub group: Option<String>,
    /// TLS cipher suite (IANA name), where the stack exposes it.
    pub cipher: Option<String>,
}

impl Negotiated {
    /// The fields as JSON members.
    pub fn extend(&self, v: &mut Value) {
        v["version"] = json!(self.version.map(|x| format!("0x{x:08x}")));
        v["alpn"] = json!(self.alpn);
        v["group"] = json!(self.group);
        v["cipher"] = json!(self.cipher);
    }
}

/// The client's counters.
#[derive(Debug, Clone, Default)]
pub struct HqClientTally {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Files fetched completely.
    pub files: u64,
    /// Response bytes.
    pub bytes: u64,
    /// Retry packets the client accepted.
    pub retries: u64,
    /// Key updates the client initiated.
    pub key_updates_initiated: u64,
    /// Connections that resumed a TLS session, where the stack says so.
    pub resumed: Option<u64>,
    /// Connections whose 0-RTT the server accepted, where the stack says so.
    pub zero_rtt_accepted: Option<u64>,
    /// Seconds from the first connection attempt to the last file.
    pub seconds: f64,
}

/// Prints the client's JSON line; `error` is `(kind, message)`.
pub fn print_client_report(
    stack: &str,
    t: &HqClientTally,
    n: &Negotiated,
    error: Option<(&str, String)>,
) {
    let mut v = json!({
        "role": "client",
        "stack": stack,
        "ok": error.is_none(),
        "handshakes": t.handshakes,
        "files": t.files,
        "bytes": t.bytes,
        "seconds": t.seconds,
        "goodput_bps": if t.seconds > 0.0 { t.bytes as f64 * 8.0 / t.seconds } else { 0.0 },
        "retries": t.retries,
        "key_updates_initiated": t.key_updates_initiated,
        "resumed": t.resumed,
        "zero_rtt_accepted": t.zero_rtt_accepted,
        "error": error.map(|(kind, message)| json!({"kind": kind, "message": message})),
    });
    n.extend(&mut v);
    super::print_json_line(&v);
}

/// The server's counters.
#[derive(Debug, Clone, Default)]
pub struct HqServerTally {
    /// Connections that completed the handshake.
    pub connections: u64,
    /// Files served completely.
    pub files_served: u64,
    /// Requests refused.
    pub refused: u64,
    /// Retry packets sent.
    pub retry_sent: u64,
}

/// Prints the server's JSON line.
pub fn print_server_report(stack: &str, t: &HqServerTally, n: &Negotiated) {
    let mut v = json!({
        "role": "server",
        "stack": stack,
        "connections": t.connections,
        "files_served": t.files_served,
        "refused": t.refused,
        "retry_sent": t.retry_sent,
    });
    n.extend(&mut v);
    super::print_json_line(&v);
}

/// Prints `unsupported REASON` (what the runner reads instead of `listening ADDR`).
pub fn print_unsupported(reason: &str) {
    use io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "unsupported {reason}");
    let _ = out.flush();
}

/// The IANA name of a TLS 1.3 cipher suite codepoint.
pub fn cipher_name(code: u16) -> String {
    match code {
        0x1301 => "TLS_AES_128_GCM_SHA256".into(),
        0x1302 => "TLS_AES_256_GCM_SHA384".into(),
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256".into(),
        other => format!("0x{other:04x}"),
    }
}

/// The IANA name of a TLS named group codepoint.
pub fn group_name(code: u16) -> String {
    match code {
        0x0017 => "secp256r1".into(),
        0x0018 => "secp384r1".into(),
        0x001d => "X25519".into(),
        0x11ec => "X25519MLKEM768".into(),
        other => format!("0x{other:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_resolve_inside_the_root_only() {
        let root = Path::new("/srv");
        assert_eq!(resolve(root, b"GET /a.bin\r\n"), Ok(root.join("a.bin")));
        assert_eq!(resolve(root, b"GET /d/a\n"), Ok(root.join("d/a")));
        assert_eq!(resolve(root, &request("x")), Ok(root.join("x")));
        for bad in [
            &b"GET /../etc/passwd\r\n"[..],
            b"GET //etc/passwd",
            b"GET /a/../../b",
            b"PUT /a",
            b"GET /",
            b"GET /a\x01b",
            b"\xff\xfe",
        ] {
            assert!(resolve(root, bad).is_err(), "{bad:?}");
        }
        assert!(resolve(root, &vec![b'a'; MAX_REQUEST + 1]).is_err());
    }

    #[test]
    fn every_testcase_of_the_suite_has_a_profile() {
        for t in [
            "handshake",
            "transfer",
            "multiplexing",
            "retry",
            "chacha20",
            "v2",
            "keyupdate",
            "handshakeloss",
            "handshakecorruption",
            "rebind-addr",
            "amplificationlimit",
            "ecn",
        ] {
            assert!(Profile::for_testcase(t).is_some(), "{t}");
        }
        // The interop runner's amplificationlimit serves a chain of 9 with "transfer".
        let amp = Profile::for_testcase("amplificationlimit").unwrap();
        assert_eq!((amp.cert_chain_len, amp.small_windows), (9, true));
        assert_eq!(
            Profile::for_testcase("handshake").unwrap().cert_chain_len,
            1
        );
        assert!(Profile::for_testcase("zerortt").is_some_and(|p| p.resume && p.zero_rtt));
        assert!(Profile::for_testcase("versionnegotiation").is_none());
        assert_eq!(
            Profile::for_testcase("transfer").unwrap().windows(),
            (SMALL_STREAM_WINDOW, SMALL_CONN_WINDOW)
        );
    }
}
