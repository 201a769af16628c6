//! The client's `known_hosts` file: which host key each server address should present.
//!
//! Like SSH's, and for the same reason: quill has no certificate authority, so the
//! client learns a server's host key once (when the user answers `yes` to the CLI's
//! first-contact question, asks it to trust a new host with `--accept-new-host`, or
//! pins the fingerprint with `--host-key`) and from then on
//! refuses any other key for that address, loudly, naming the file and line to fix.
//!
//! # File format
//!
//! One entry per line; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! # comment
//! HOST[:PORT][,NAME[:PORT]...] quill-ed25519 BASE64KEY [comment]
//! ```
//!
//! - The first field is a comma-separated list of addresses, each `host`, `host:port`,
//!   `[ipv6]`, `[ipv6]:port` or a bare IPv6 address (which takes the default port). A
//!   missing port means [`DEFAULT_PORT`] (4433). Every address in the list is matched on
//!   its own, so `10.0.0.2,server.example` covers both spellings at port 4433.
//! - Host names are compared case-insensitively (a trailing dot is ignored); IP
//!   addresses are compared in their canonical form (`::1` and `0::1` are the same).
//!   Matching is by the address the user typed, not by what it resolves to.
//! - The rest of the line is exactly what [`PublicKey::to_openssh_line`] produces: the
//!   algorithm name, the base64 of the key's wire form, and an optional comment.
//! - SSH's hashed host names (`|1|...`) and markers (`@revoked`, `@cert-authority`) are
//!   not supported; such lines are reported as malformed.
//!
//! A host matches if any of its lines carries the presented key
//! ([`Lookup::Match`]); if it has lines but none carries that key, the key has changed
//! ([`Lookup::Mismatch`], naming the first such line); otherwise it is
//! [`Lookup::Unknown`].
//!
//! The file is never rewritten: new hosts are appended one line at a time (and the
//! file fsync-ed), so comments and hand edits survive. A malformed line is a hard
//! error that names the file and line number, never silently skipped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64ct::{Base64Unpadded, Encoding};
use quill_crypto::hostkey::PublicKey;

use crate::proto::HostKeyPolicy;

/// The port a `known_hosts` address without `:PORT` stands for (quill's default port).
pub const DEFAULT_PORT: u16 = 4433;

/// The environment variable that overrides the default `known_hosts` path.
pub const KNOWN_HOSTS_ENV: &str = "QUILL_KNOWN_HOSTS";

/// A `known_hosts` file larger than this is refused rather than read (it would be
/// millions of hosts; something is wrong with it).
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// What can go wrong with a `known_hosts` file, a host name or a fingerprint.
#[derive(Debug)]
pub enum KnownHostsError {
    /// A file operation failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What we were doing ("read", "create", "append to", ...).
        action: &'static str,
        /// The operating system's error.
        error: io::Error,
    },
    /// A line of the file cannot be parsed.
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// A host name or address cannot be recorded or matched.
    BadHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A fingerprint given to pin a host key is not of the form `SHA256:<base64>`.
    BadFingerprint {
        /// The fingerprint as given.
        fingerprint: String,
    },
}

impl fmt::Display for KnownHostsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnownHostsError::Io {
                path,
                action,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
            KnownHostsError::Malformed { path, line, reason } => write!(
                f,
                "{}, line {line}: {reason}; expected `HOST[:PORT][,NAME...] quill-ed25519 \
                 BASE64KEY [comment]` (fix or delete line {line})",
                path.display()
            ),
            KnownHostsError::TooLarge { path, size } => write!(
                f,
                "{} is {size} bytes, more than the {MAX_FILE_SIZE} a known_hosts file may have",
                path.display()
            ),
            KnownHostsError::BadHost { host, reason } => {
                write!(f, "bad host {host:?}: {reason}")
            }
            KnownHostsError::BadFingerprint { fingerprint } => write!(
                f,
                "bad host-key fingerprint {fingerprint:?}: expected `SHA256:` followed by 43 \
                 base64 characters, as printed by `quill fingerprint FILE`"
            ),
        }
    }
}

impl std::error::Error for KnownHostsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KnownHostsError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The answer of [`KnownHosts::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No line names this address.
    Unknown,
    /// This line names the address with the presented key.
    Match {
        /// 1-based line number.
        line: usize,
    },
    /// The address is known with a different key: the host key has changed.
    Mismatch {
        /// 1-based number of the first line naming the address.
        line: usize,
        /// Fingerprint of the key on that line.
        expected_fingerprint: String,
    },
}

/// One address of an entry: a normalised host and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    host: String,
    port: u16,
}

#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    patterns: Vec<HostPattern>,
    key: PublicKey,
}

/// A loaded `known_hosts` file (see the [module documentation](self) for the format).
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Lines in the file as loaded, plus the ones we appended since.
    lines: usize,
}

impl KnownHosts {
    /// Reads and parses `path`. A missing file is an empty list (it is created by the
    /// first [`append`](Self::append)); a malformed line is an error naming the file
    /// and the line.
    pub fn load(path: &Path) -> Result<Self, KnownHostsError> {
        let io_err = |error| KnownHostsError::Io {
            path: path.to_path_buf(),
            action: "read",
            error,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(KnownHosts {
                    path: path.to_path_buf(),
                    entries: Vec::new(),
                    lines: 0,
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(KnownHostsError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            KnownHostsError::Malformed {
                path: path.to_path_buf(),
                line,
                reason: "not valid UTF-8".into(),
            }
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a `known_hosts` file; `path` is only used in errors and for
    /// later appends.
    pub fn parse(path: &Path, text: &str) -> Result<Self, KnownHostsError> {
        let mut entries = Vec::new();
        let mut lines = 0;
        for (i, raw) in text.lines().enumerate() {
            lines = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_entry(line).map_err(|reason| KnownHostsError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            })?;
            entries.push(Entry {
                line: i + 1,
                patterns: entry.0,
                key: entry.1,
            });
        }
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
            lines,
        })
    }

    /// The file this list was loaded from and is appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries (lines that name hosts).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any line names the address `host`:`port` (whatever its key): `false`
    /// means a first contact.
    pub fn knows(&self, host: &str, port: u16) -> bool {
        let Ok(target) = normalize_host(host) else {
            return false;
        };
        self.entries.iter().any(|e| {
            e.patterns
                .iter()
                .any(|p| p.port == port && p.host == target)
        })
    }

    /// Checks `key` for the address `host`:`port` as the user typed it.
    pub fn lookup(&self, host: &str, port: u16, key: &PublicKey) -> Lookup {
        let Ok(target) = normalize_host(host) else {
            return Lookup::Unknown;
        };
        let mut mismatch = None;
        for e in &self.entries {
            if !e
                .patterns
                .iter()
                .any(|p| p.port == port && p.host == target)
            {
                continue;
            }
            if e.key == *key {
                return Lookup::Match { line: e.line };
            }
            mismatch.get_or_insert(Lookup::Mismatch {
                line: e.line,
                expected_fingerprint: e.key.fingerprint(),
            });
        }
        mismatch.unwrap_or(Lookup::Unknown)
    }

    /// Records `key` for `host`:`port`: appends one line to the file (creating the
    /// file with mode 0600 and missing parent directories with mode 0700), fsyncs it,
    /// and adds the entry to this list. Returns the new line's number.
    ///
    /// The number is counted from the file as loaded plus our own appends; another
    /// process appending in between would shift it.
    pub fn append(
        &mut self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<usize, KnownHostsError> {
        let pattern = HostPattern {
            host: normalize_host(host).map_err(|reason| KnownHostsError::BadHost {
                host: host.to_string(),
                reason,
            })?,
            port,
        };
        if port == 0 {
            return Err(KnownHostsError::BadHost {
                host: host.to_string(),
                reason: "port 0 cannot be connected to",
            });
        }
        let text = format!("{} {}\n", format_pattern(&pattern), key.to_openssh_line(""));
        let path = self.path.clone();
        let err = |action, error| KnownHostsError::Io {
            path: path.clone(),
            action,
            error,
        };

        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::DirBuilderExt;
                    b.mode(0o700);
                }
                b.create(parent).map_err(|error| KnownHostsError::Io {
                    path: parent.to_path_buf(),
                    action: "create directory",
                    error,
                })?;
            }
        }

        let mut opts = OpenOptions::new();
        opts.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&self.path).map_err(|e| err("open", e))?;
        let len = f.metadata().map_err(|e| err("read", e))?.len();
        let mut out = String::with_capacity(text.len() + 1);
        if len > 0 {
            // Never glue our line onto a last line that lacks its newline.
            let mut last = [0u8; 1];
            f.seek(SeekFrom::End(-1))
                .and_then(|_| f.read_exact(&mut last))
                .map_err(|e| err("read", e))?;
            if last[0] != b'\n' {
                out.push('\n');
            }
        }
        out.push_str(&text);
        // O_APPEND: the write lands at the end whatever the read position.
        f.write_all(out.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err("append to", e))?;
        if len == 0 {
            // A new file: make its directory entry durable too (best effort).
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if let Ok(d) = File::open(parent) {
                    let _ = d.sync_all();
                }
            }
        }

        self.lines += 1;
        self.entries.push(Entry {
            line: self.lines,
            patterns: vec![pattern],
            key: key.clone(),
        });
        Ok(self.lines)
    }
}

/// Parses `HOSTS KEYLINE` into its addresses and key.
fn parse_entry(line: &str) -> Result<(Vec<HostPattern>, PublicKey), String> {
    if line.starts_with('@') {
        return Err("markers such as @revoked are not supported".into());
    }
    if line.starts_with('|') {
        return Err("hashed host names are not supported".into());
    }
    let (hosts, key) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| "missing host key after the host list".to_string())?;
    let patterns = hosts
        .split(',')
        .map(|p| parse_pattern(p).map_err(|r| format!("bad address {p:?}: {r}")))
        .collect::<Result<Vec<_>, _>>()?;
    let (key, _comment) =
        PublicKey::from_openssh_line(key.trim()).map_err(|e| format!("bad host key: {e}"))?;
    Ok((patterns, key))
}

/// Parses one address: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn parse_pattern(s: &str) -> Result<HostPattern, &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing `]`")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("expected `:PORT` after `]`")?,
                ),
            ),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            // Zero or several colons: a host name or a bare IPv6 address.
            _ => (s, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err("port must be a number from 1 to 65535"),
        },
    };
    Ok(HostPattern {
        host: normalize_host(host)?,
        port,
    })
}

/// The form hosts are compared in: canonical IP addresses, lower-case names without a
/// trailing dot. Refuses what cannot be written back into the file unambiguously.
fn normalize_host(host: &str) -> Result<String, &'static str> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("empty host");
    }
    if host.len() > 255 {
        return Err("host longer than 255 bytes");
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if host.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, ',' | '#' | '[' | ']' | ':' | '|' | '@')
    }) {
        return Err("host contains a character not allowed in a host name");
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err("empty host");
    }
    Ok(host.to_ascii_lowercase())
}

/// The file form of an address: the port only when it is not the default, IPv6
/// addresses in brackets when a port follows.
fn format_pattern(p: &HostPattern) -> String {
    match (p.port == DEFAULT_PORT, p.host.contains(':')) {
        (true, _) => p.host.clone(),
        (false, true) => format!("[{}]:{}", p.host, p.port),
        (false, false) => format!("{}:{}", p.host, p.port),
    }
}

/// `host:port` for messages (`[v6]:port` for IPv6).
fn display_addr(host: &str, port: u16) -> String {
    let host = normalize_host(host).unwrap_or_else(|_| host.to_string());
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What [`known_hosts_policy`] does with a host that has no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustMode {
    /// Refuse it (the default): the user must pin its fingerprint or ask to trust it.
    Strict,
    /// Trust it on first use and record its key (`--accept-new-host`). A known host
    /// whose key changed is still refused.
    AcceptNew,
}

/// The message for a changed host key: loud, with both fingerprints and what to do.
fn mismatch_message(
    path: &Path,
    addr: &str,
    line: usize,
    expected: &str,
    presented: &str,
) -> String {
    format!(
        "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for {addr}! The server presented \
         host key {presented}, but line {line} of {file} records {expected}. Someone may be \
         intercepting this connection (man-in-the-middle), or the server's host key was \
         replaced. If the change is expected, remove line {line} of {file} and connect \
         again with --accept-new-host (or pin the new key with --host-key {presented}).",
        file = path.display()
    )
}

/// A [`HostKeyPolicy::Verify`] that checks the server at `host`:`port` against the
/// `known_hosts` file at `path`; notes about newly added hosts go to `tracing`.
/// See [`known_hosts_policy_with`].
pub fn known_hosts_policy(
    path: &Path,
    host: &str,
    port: u16,
    mode: TrustMode,
) -> Result<HostKeyPolicy, KnownHostsError> {
    known_hosts_policy_with(path, host, port, mode, |note| tracing::warn!("{note}"))
}

/// A [`HostKeyPolicy::Verify`] that checks the server at `host`:`port` (the address as
/// the user typed it) against the `known_hosts` file at `path`:
///
/// - a line with the presented key: accepted;
/// - lines for the address but with another key: refused, with a message that names
///   the file, the line to remove if the change is expected, and both fingerprints;
/// - no line, [`TrustMode::Strict`]: refused, saying how to trust or pin the host;
/// - no line, [`TrustMode::AcceptNew`]: one line is appended to the file and the key
///   accepted; `note` is told ("Permanently added ..."). If the line cannot be
///   written, the key is still accepted for this connection (as SSH does) and `note`
///   gets a warning saying why it was not recorded.
///
/// The file is loaded here, once (so a malformed file fails before connecting). The
/// verifier runs on the event-loop thread: a lookup is a scan of the entries in
/// memory, and the only I/O is the one small append + fsync, which happens once per
/// new host; later connections through the same policy see the added entry.
pub fn known_hosts_policy_with(
    path: &Path,
    host: &str,
    port: u16,
    mode: TrustMode,
    note: impl Fn(&str) + Send + Sync + 'static,
) -> Result<HostKeyPolicy, KnownHostsError> {
    normalize_host(host).map_err(|reason| KnownHostsError::BadHost {
        host: host.to_string(),
        reason,
    })?;
    if port == 0 {
        return Err(KnownHostsError::BadHost {
            host: host.to_string(),
            reason: "port 0 cannot be connected to",
        });
    }
    let known = Mutex::new(KnownHosts::load(path)?);
    let host = host.to_string();
    let addr = display_addr(&host, port);
    Ok(HostKeyPolicy::Verify(Arc::new(move |key: &PublicKey| {
        let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
        let presented = key.fingerprint();
        match known.lookup(&host, port, key) {
            Lookup::Match { .. } => Ok(()),
            Lookup::Mismatch {
                line,
                expected_fingerprint,
            } => Err(mismatch_message(
                known.path(),
                &addr,
                line,
                &expected_fingerprint,
                &presented,
            )),
            Lookup::Unknown => match mode {
                TrustMode::Strict => Err(format!(
                    "unknown host {addr}: it is not in {}; connect with --accept-new-host to \
                     trust it, or pin its fingerprint with --host-key {presented}",
                    known.path().display()
                )),
                TrustMode::AcceptNew => {
                    match known.append(&host, port, key) {
                        Ok(line) => note(&format!(
                            "Permanently added {addr} ({presented}) to the list of known \
                             hosts (line {line} of {}).",
                            known.path().display()
                        )),
                        Err(e) => note(&format!(
                            "Warning: accepted the host key of {addr} ({presented}) for this \
                             connection but could not record it: {e}"
                        )),
                    }
                    Ok(())
                }
            },
        }
    })))
}

/// Checks a fingerprint given on the command line (`SHA256:` + unpadded base64 of 32
/// bytes; padding `=` and the case of the `SHA256` prefix are tolerated) and returns
/// it in canonical form.
pub fn parse_fingerprint(fingerprint: &str) -> Result<String, KnownHostsError> {
    // docs/SPEC.md §4.5: "The fingerprint of a key is `"SHA256:" || base64(SHA-256(PublicKey
    // wire form))` without padding." A SHA-256 digest is 32 bytes: 43 base64 characters.
    let bad = || KnownHostsError::BadFingerprint {
        fingerprint: fingerprint.to_string(),
    };
    let s = fingerprint.trim();
    let body = match s.split_once(':') {
        Some((prefix, body)) if prefix.eq_ignore_ascii_case("SHA256") => body,
        _ => return Err(bad()),
    };
    let body = body.trim_end_matches('=');
    if body.len() != 43 {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    match Base64Unpadded::decode(body, &mut digest) {
        Ok(d) if d.len() == 32 => {}
        _ => return Err(bad()),
    }
    Ok(format!("SHA256:{}", Base64Unpadded::encode_string(&digest)))
}

/// A [`HostKeyPolicy::Pinned`] accepting only the key with `fingerprint`
/// (`--host-key SHA256:...`), after checking its form with [`parse_fingerprint`].
pub fn pinned_policy(fingerprint: &str) -> Result<HostKeyPolicy, KnownHostsError> {
    Ok(HostKeyPolicy::Pinned(vec![parse_fingerprint(fingerprint)?]))
}

/// The environment variable that names quill's per-user directory (default
/// `$HOME/.quill`): `known_hosts`, the client `config` and the default identity
/// `id_ed25519` live there.
pub const QUILL_HOME_ENV: &str = "QUILL_HOME";

/// quill's per-user directory: `$QUILL_HOME` if set and non-empty, else
/// `$HOME/.quill`; `None` if neither variable is set.
pub fn quill_home() -> Option<PathBuf> {
    home_from_env(std::env::var_os(QUILL_HOME_ENV), std::env::var_os("HOME"))
}

/// The default `known_hosts` path: `$QUILL_KNOWN_HOSTS` if set and non-empty, else
/// `known_hosts` in [`quill_home`]; `None` if no variable says where that is.
pub fn default_known_hosts_path() -> Option<PathBuf> {
    path_from_env(
        std::env::var_os(KNOWN_HOSTS_ENV),
        std::env::var_os(QUILL_HOME_ENV),
        std::env::var_os("HOME"),
    )
}

fn home_from_env(
    quill_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(p) = quill_home.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = home.filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".quill"))
}

fn path_from_env(
    explicit: Option<std::ffi::OsString>,
    quill_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    Some(home_from_env(quill_home, home)?.join("known_hosts"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_crypto::hostkey::HostKeyPair;

    fn key(seed: u8) -> PublicKey {
        HostKeyPair::from_seed(&[seed; 32]).unwrap().public()
    }

    fn line(hosts: &str, k: &PublicKey) -> String {
        format!("{hosts} {}\n", k.to_openssh_line("a comment"))
    }

    #[test]
    fn patterns_parse_and_format_back() {
        for (text, host, port) in [
            ("example.org", "example.org", 4433),
            ("Example.ORG.:5000", "example.org", 5000),
            ("10.0.0.2:4434", "10.0.0.2", 4434),
            ("::1", "::1", 4433),
            ("[::1]", "::1", 4433),
            ("[0::1]:9", "::1", 9),
        ] {
            let p = parse_pattern(text).unwrap();
            assert_eq!((p.host.as_str(), p.port), (host, port), "{text}");
            assert_eq!(parse_pattern(&format_pattern(&p)).unwrap(), p);
        }
        for bad in [
            "",
            ":4433",
            "host:0",
            "host:x",
            "host:70000",
            "[::1",
            "[::1]x",
            "a b",
            "[]",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lookup_prefers_a_matching_line_over_an_earlier_mismatch() {
        let text = format!("{}{}", line("h", &key(1)), line("h", &key(2)));
        let kh = KnownHosts::parse(Path::new("kh"), &text).unwrap();
        assert_eq!(kh.lookup("h", 4433, &key(2)), Lookup::Match { line: 2 });
        assert_eq!(
            kh.lookup("h", 4433, &key(3)),
            Lookup::Mismatch {
                line: 1,
                expected_fingerprint: key(1).fingerprint()
            }
        );
        assert_eq!(kh.lookup("other", 4433, &key(1)), Lookup::Unknown);
        assert!(kh.knows("H", 4433) && !kh.knows("h", 4434) && !kh.knows("other", 4433));
    }

    #[test]
    fn unsupported_lines_are_errors() {
        for text in [
            "@revoked h quill-ed25519 AAAA",
            "|1|abc|def quill-ed25519 AAAA",
            "hostonly",
            "h quill-ed25519 !!!!",
            "h ssh-rsa AAAA",
        ] {
            let e = KnownHosts::parse(Path::new("kh"), text).unwrap_err();
            assert!(
                matches!(e, KnownHostsError::Malformed { line: 1, .. }),
                "{e}"
            );
        }
    }

    #[test]
    fn fingerprints_are_checked_and_canonicalised() {
        let fp = key(1).fingerprint();
        assert_eq!(parse_fingerprint(&fp).unwrap(), fp);
        let lower = fp.replacen("SHA256", "sha256", 1);
        assert_eq!(parse_fingerprint(&format!(" {lower}= ")).unwrap(), fp);
        for bad in [
            "",
            "SHA256:",
            &fp[..fp.len() - 1],
            &fp.replacen("SHA256", "MD5", 1),
            &format!("{fp}A"),
            "SHA256:!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_path_prefers_the_environment_variable() {
        assert_eq!(
            path_from_env(
                Some("/x/kh".into()),
                Some("/q".into()),
                Some("/home/u".into())
            ),
            Some(PathBuf::from("/x/kh"))
        );
        assert_eq!(
            path_from_env(Some("".into()), None, Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.quill/known_hosts"))
        );
        assert_eq!(
            path_from_env(None, Some("/q".into()), Some("/home/u".into())),
            Some(PathBuf::from("/q/known_hosts"))
        );
        assert_eq!(path_from_env(None, None, None), None);
    }
}
