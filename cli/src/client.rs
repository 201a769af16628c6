//! What every client command shares — address parsing, login options → [`ClientConfig`],
//! connecting with a clear error — and `quill register` and `quill connect`.
//!
//! Addresses: `HOST:PORT`, `[V6]:PORT`, or a bare `HOST` / `[V6]` / IPv6 literal with
//! the default port [`DEFAULT_PORT`]. For `send`/`get`, `ADDR:REMOTE` puts the remote
//! path after the port's colon (`127.0.0.1:4433:a/b`, `[::1]:4433:a/b`); when the part
//! after the host's colon is not a port number (`host:a/b`) the default port is used and
//! the whole rest is the path.

use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::packet::Suite;
use quill_transport::auth::{
    default_known_hosts_path, known_hosts_policy_with, pinned_policy, TrustMode,
};
use quill_transport::auth::{prompt_password, read_password, Credentials};
use quill_transport::driver::blocking::{
    connect as blocking_connect, BlockingConnection, BlockingStream,
};
use quill_transport::proto::{
    CertificateCheck, HandshakeStage, TransportConfig, Unreachable, Version, ALPN_QUILL,
};
use quill_transport::{ClientConfig, ConnectionError, HostKeyPolicy, Login};
use zeroize::Zeroizing;

use crate::args::{ClientArgs, LoginArgs};
use crate::exit::{CliError, CliResult, CONNECTION};
use crate::interrupt;
use crate::output::{note, out_bytes, say};
use quill_transport::service::Request;

/// Port used when an address has none.
pub const DEFAULT_PORT: u16 = 4433;

/// The key exchange every quill handshake uses (docs/SPEC.md: hybrid ML-KEM-768 + X25519).
pub const KEY_EXCHANGE: &str = "X25519+ML-KEM-768";

/// A server address as the user typed it: host (without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal, without `[]`.
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl Target {
    /// `host:port`, with brackets around IPv6 literals.
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves to the first socket address.
    pub fn resolve(&self) -> Result<SocketAddr, CliError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| {
                CliError::connection(format!(
                    "cannot resolve {}: {e} (check the host name)",
                    self.display()
                ))
            })?
            .next()
            .ok_or_else(|| CliError::connection(format!("{} has no address", self.display())))
    }
}

fn bad_addr(s: &str, why: &str) -> CliError {
    CliError::usage(format!(
        "bad address '{s}': {why}; use HOST:PORT, [IPv6]:PORT or HOST (port {DEFAULT_PORT})"
    ))
}

fn parse_port(s: &str, whole: &str) -> Result<u16, CliError> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad_addr(whole, "the port must be a number 1-65535")),
        Ok(p) => Ok(p),
    }
}

/// Parses `HOST:PORT`, `[V6]:PORT`, `HOST`, `[V6]` or a bare IPv6 literal.
pub fn parse_addr(s: &str) -> Result<Target, CliError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(bad_addr(s, "it is empty"));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad_addr(s, "missing ']'"))?;
        if host.is_empty() {
            return Err(bad_addr(s, "empty host"));
        }
        let port = match after {
            "" => DEFAULT_PORT,
            p => parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| bad_addr(s, "expected ':' after ']'"))?,
                s,
            )?,
        };
        return Ok(Target {
            host: host.to_string(),
            port,
        });
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(Target {
            host: s.to_string(),
            port: DEFAULT_PORT,
        });
    }
    match s.split_once(':') {
        None => Ok(Target {
            host: s.to_string(),
            port: DEFAULT_PORT,
        }),
        Some((host, port)) if !host.is_empty() => Ok(Target {
            host: host.to_string(),
            port: parse_port(port, s)?,
        }),
        Some(_) => Err(bad_addr(s, "empty host")),
    }
}

/// Splits `ADDR:REMOTE` into the server and the remote path (see the module doc).
pub fn parse_remote(s: &str) -> Result<(Target, String), CliError> {
    // Escaped, so that the message stays one line whatever was typed.
    let shown = s.escape_debug();
    let usage = |why: &str| {
        CliError::usage(format!(
            "bad remote '{shown}': {why}; use HOST:PORT:PATH, [IPv6]:PORT:PATH or HOST:PATH"
        ))
    };
    let (host, rest) = if let Some(r) = s.strip_prefix('[') {
        let (host, after) = r.split_once(']').ok_or_else(|| usage("missing ']'"))?;
        let after = after
            .strip_prefix(':')
            .ok_or_else(|| usage("expected ':' after ']'"))?;
        (host, after)
    } else {
        s.split_once(':')
            .ok_or_else(|| usage("no ':' before the path"))?
    };
    if host.is_empty() {
        return Err(usage("empty host"));
    }
    let (port, path) = match rest.split_once(':') {
        Some((p, path)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (parse_port(p, s)?, path)
        }
        _ => (DEFAULT_PORT, rest),
    };
    if path.is_empty() {
        return Err(usage("empty remote path"));
    }
    // A newline would end the request line early and smuggle in another request.
    if quill_transport::service::has_control_chars(path) {
        return Err(usage(
            "the path contains a control character (newline, tab, ...), which the server refuses",
        ));
    }
    Ok((
        Target {
            host: host.to_string(),
            port,
        },
        path.to_string(),
    ))
}

/// The account name: `--user`, else `$USER`.
pub fn user_name(login: &LoginArgs) -> Result<String, CliError> {
    login
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .ok_or_else(|| CliError::usage("no account name: pass --user NAME"))
}

fn cred_err(e: impl std::fmt::Display) -> CliError {
    CliError::usage(e.to_string())
}

/// The first line of a `--password-file`, which nobody but its owner may read (the
/// rule key files follow: group or other permission bits are refused).
fn open_password_file(path: &std::path::Path) -> Result<std::fs::File, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let mode = file
        .metadata()
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CliError::usage(format!(
            "{} is readable by others (mode {:o}); run chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(file)
}

/// The login for an existing account: `--identity` key, else the password from
/// `--password-file`, else from `--password-stdin` (first line of standard input),
/// else a prompt.
pub fn login_from_args(login: &LoginArgs) -> Result<Login, CliError> {
    let user = user_name(login)?;
    if let Some(path) = &login.identity {
        return Credentials::from_identity_file(&user, path).map_err(cred_err);
    }
    if let Some(path) = &login.password_file {
        return Credentials::from_stdin(&user, open_password_file(path)?)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())));
    }
    if login.password_stdin {
        return Credentials::from_stdin(&user, io::stdin()).map_err(cred_err);
    }
    Credentials::from_prompt(&user).map_err(cred_err)
}

/// A registration: the password from `--password-file`, `--password-stdin` or typed
/// twice; `--identity`
/// authorises that key for later public-key logins.
pub fn register_login(login: &LoginArgs) -> Result<Login, CliError> {
    let user = user_name(login)?;
    let password: Zeroizing<String> = if let Some(path) = &login.password_file {
        read_password(open_password_file(path)?)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
    } else if login.password_stdin {
        read_password(io::stdin()).map_err(cred_err)?
    } else {
        let first = prompt_password(&format!("New password for {user}: ")).map_err(cred_err)?;
        let again = prompt_password("Retype the password: ").map_err(cred_err)?;
        if *first != *again {
            return Err(CliError::usage(
                "the passwords do not match; run the command again",
            ));
        }
        first
    };
    let key = match &login.identity {
        Some(path) => Some(Arc::new(HostKeyPair::read_from(path).map_err(|e| {
            CliError::usage(format!("cannot use the identity file: {e}"))
        })?)),
        None => None,
    };
    Credentials::register(&user, password, key).map_err(cred_err)
}

/// The host-key policy: `--host-key` pinned, else the known_hosts file (`--known-hosts`
/// or the default path) in accept-new mode with `--accept-new-host`, strict otherwise.
pub fn host_key_policy(login: &LoginArgs, target: &Target) -> Result<HostKeyPolicy, CliError> {
    if let Some(fp) = &login.host_key {
        return pinned_policy(fp).map_err(|e| {
            CliError::usage(format!(
                "{e} (expected SHA256: followed by 43 base64 characters)"
            ))
        });
    }
    let path: PathBuf = match &login.known_hosts {
        Some(p) => p.clone(),
        None => default_known_hosts_path().ok_or_else(|| {
            CliError::usage(
                "no known_hosts file: set HOME or QUILL_KNOWN_HOSTS, or pass --known-hosts FILE \
                 or --host-key FINGERPRINT",
            )
        })?,
    };
    let mode = if login.accept_new_host {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        TrustMode::AcceptNew
    } else {
        TrustMode::Strict
    };
    known_hosts_policy_with(&path, &target.host, target.port, mode, |note| {
        note!("quill: {note}")
    })
    .map_err(|e| CliError::usage(e.to_string()))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            CliError::usage(format!(
                "cannot create {} for known_hosts: {e}",
                dir.display()
            ))
        })
}

/// A logged-in connection and how long the handshake (with login) took.
pub struct Session {
    /// The connection.
    pub conn: BlockingConnection,
    /// Handshake + login time.
    pub handshake: Duration,
    /// The server as typed.
    pub target: Target,
}

/// Connects `target` with `config`, timing the handshake and login.
pub fn connect_config(target: Target, mut config: ClientConfig) -> Result<Session, CliError> {
    if config.server_name.is_empty() {
        // SNI, and the name a CA-issued certificate is checked against (`--ca`).
        config.server_name = target.host.clone();
    }
    let addr = target.resolve()?;
    let start = Instant::now();
    let conn = blocking_connect(addr, config).map_err(|e| {
        use quill_transport::driver::blocking::ConnectError;
        let shown = if addr.to_string() == target.display() {
            target.display()
        } else {
            format!("{} ({addr})", target.display())
        };
        match &e {
            ConnectError::Connection(ConnectionError::Unreachable(why)) => {
                return CliError::connection(match why {
                    Unreachable::Refused => format!(
                        "connection refused by {shown}: nothing listens there \
                         (check that the server runs and the port is right)"
                    ),
                    other => format!("{shown} is unreachable: {other}"),
                });
            }
            ConnectError::Connection(ConnectionError::HandshakeTimedOut { after, stage }) => {
                let after = seconds(*after);
                return CliError::connection(match stage {
                    HandshakeStage::NoAnswer => format!(
                        "no answer from {shown} within {after}: check that the server runs, \
                         the address is right and UDP is not blocked (--connect-timeout \
                         waits longer)"
                    ),
                    HandshakeStage::KeyExchange => format!(
                        "no complete handshake with {shown} within {after}: the server \
                         answered but the handshake did not finish (heavy packet loss?)"
                    ),
                    HandshakeStage::Login => format!(
                        "no login verdict from {shown} within {after}: the server may be \
                         overloaded; try again or raise --connect-timeout"
                    ),
                });
            }
            _ => {}
        }
        // A Version Negotiation means a QUIC server answered: it runs, but is not quill.
        let foreign = matches!(
            &e,
            quill_transport::driver::blocking::ConnectError::Connection(
                quill_transport::ConnectionError::VersionMismatch { .. }
            )
        );
        let mut err = CliError::from(e);
        if err.code == CONNECTION {
            let hint = if foreign {
                "it is a QUIC server but not a quill server; check the address and port"
            } else {
                "check that the server runs and the address is right"
            };
            err.message = format!("{shown}: {}; {hint}", err.message);
        }
        err
    })?;
    interrupt::watch(&conn);
    let session = Session {
        conn,
        handshake: start.elapsed(),
        target,
    };
    tracing::info!(
        "connected to {} over {} ({}, key exchange {})",
        session.target.display(),
        if session.conn.version() == quill_transport::wire::QUIC_V1 {
            "QUIC v1"
        } else {
            "quill's own version"
        },
        session.conn.suite().map_or("unknown suite", Suite::name),
        session.key_exchange()
    );
    Ok(session)
}

impl Session {
    /// The key exchange used: the negotiated TLS group on QUIC v1 (`X25519MLKEM768`
    /// between quills), [`KEY_EXCHANGE`] on quill's own version.
    pub fn key_exchange(&self) -> String {
        match self.conn.key_exchange_group() {
            Some(g) => format!("{g:?}"),
            None => KEY_EXCHANGE.to_owned(),
        }
    }
}

/// `10 s`, `1.5 s`, `250 ms`: a duration as a person writes it.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A client configuration for `login`'s options: `--connect-timeout` bounds the
/// handshake and login.
pub fn client_config(
    creds: Login,
    policy: HostKeyPolicy,
    login: &LoginArgs,
) -> Result<ClientConfig, CliError> {
    let t = login.connect_timeout;
    if t < Duration::from_millis(100) || t > Duration::from_secs(3600) {
        return Err(CliError::usage(format!(
            "--connect-timeout {} is out of range; use 100ms to 1h",
            seconds(t)
        )));
    }
    let mut config = ClientConfig::new(creds, policy);
    config.transport = Arc::new(TransportConfig {
        handshake_timeout: t,
        qlog: login
            .qlog_dir
            .as_deref()
            .map(crate::qlog::sink)
            .transpose()?,
        ..TransportConfig::default()
    });
    if login.quic_v1 {
        config.version = Version::QuicV1 {
            alpn: vec![ALPN_QUILL.to_vec()],
        };
    }
    if let Some(ca) = &login.ca {
        let roots = quill_crypto::tls::load_roots(ca)
            .map_err(|e| CliError::usage(format!("--ca {}: {e}", ca.display())))?;
        config.certificate = CertificateCheck::Roots(Arc::new(roots));
    }
    Ok(config)
}

/// Parses `addr`, reads the credentials and the host-key policy, and connects.
/// `suites`, when given, replaces the offered AEAD suites.
pub fn open_session(
    addr: &str,
    login: &LoginArgs,
    suites: Option<Vec<Suite>>,
) -> Result<Session, CliError> {
    let target = parse_addr(addr)?;
    open_target(target, login, suites)
}

/// Like [`open_session`] with an already parsed target.
pub fn open_target(
    target: Target,
    login: &LoginArgs,
    suites: Option<Vec<Suite>>,
) -> Result<Session, CliError> {
    let policy = host_key_policy(login, &target)?;
    let creds = login_from_args(login)?;
    let mut config = client_config(creds, policy, login)?;
    if let Some(s) = suites {
        config.suites = s;
    }
    connect_config(target, config)
}

/// Maps an I/O error on the connection to exit code 3 with context.
pub fn net_err(what: &str, e: io::Error) -> CliError {
    CliError::connection(format!("{what}: {e} (the connection was lost; try again)"))
}

/// Reads `r` to its end, handing each chunk to `each`; a read error is a [`net_err`]
/// saying `what` failed.
pub fn read_chunks(
    r: &mut impl Read,
    what: &str,
    mut each: impl FnMut(&[u8]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(|e| net_err(what, e))?;
        if n == 0 {
            return Ok(());
        }
        each(&buf[..n])?;
    }
}

/// Opens a bidirectional stream and sends a request line on it (docs/SPEC.md §10).
pub fn open_request(conn: &BlockingConnection, req: &Request) -> Result<BlockingStream, CliError> {
    let mut stream = conn
        .open_bi()
        .map_err(|e| net_err("cannot open a stream", e))?;
    stream
        .write_all(req.line().as_bytes())
        .map_err(|e| net_err("sending the request failed", e))?;
    Ok(stream)
}

/// Reads one `\n`-terminated line (without it) of at most
/// [`MAX_LINE`](quill_transport::service::MAX_LINE) bytes, byte by byte so that nothing after it
/// is consumed.
pub fn read_line(r: &mut impl Read) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server ended the stream without an answer",
                ))
            }
            _ if b[0] == b'\n' => break,
            _ => {
                if line.len() >= quill_transport::service::MAX_LINE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server's answer line is too long",
                    ));
                }
                line.push(b[0]);
            }
        }
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "answer is not UTF-8"))
}

/// `quill register ADDR --user NAME`.
pub fn register(a: &ClientArgs) -> CliResult {
    let target = parse_addr(&a.addr)?;
    let policy = host_key_policy(&a.login, &target)?;
    let login = register_login(&a.login)?;
    let session = connect_config(target, client_config(login, policy, &a.login)?)?;
    let account = session.conn.account().to_string();
    let message = session.conn.message().to_string();
    say!("registered and logged in as {account}")?;
    if !message.is_empty() {
        say!("{message}")?;
    }
    session.conn.close(0, "done");
    Ok(())
}

/// `quill connect ADDR`: standard input to an ECHO stream, the echo to standard output.
pub fn connect(a: &ClientArgs) -> CliResult {
    let session = open_session(&a.addr, &a.login, None)?;
    if io::stderr().is_terminal() {
        note!(
            "quill: connected to {} as {}; end input with Ctrl-D",
            session.target.display(),
            session.conn.account()
        );
    }
    let mut stream = open_request(&session.conn, &Request::Echo)?;
    let mut writer = stream.try_clone();
    let pump = std::thread::spawn(move || -> io::Result<()> {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            writer.write_all(&buf[..n])?;
        }
        writer.finish()
    });
    read_chunks(&mut stream, "reading the echo failed", out_bytes)?;
    // The echo ended, so the server saw our FIN: the stdin thread is done.
    match pump.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(net_err("sending standard input failed", e)),
        Err(_) => return Err(CliError::connection("the input thread failed")),
    }
    session.conn.close(0, "done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::USAGE;

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:5000").unwrap(), t("127.0.0.1", 5000));
        assert_eq!(parse_addr("example.org").unwrap(), t("example.org", 4433));
        assert_eq!(parse_addr("[::1]:7").unwrap(), t("::1", 7));
        assert_eq!(parse_addr("[::1]").unwrap(), t("::1", 4433));
        assert_eq!(parse_addr("::1").unwrap(), t("::1", 4433));
        assert_eq!(t("::1", 7).display(), "[::1]:7");
        for bad in [
            "",
            "host:",
            "host:0",
            "host:99999",
            ":5",
            "[::1",
            "[::1]x",
            "[]:5",
        ] {
            assert_eq!(parse_addr(bad).unwrap_err().code, USAGE, "{bad}");
        }
    }

    #[test]
    fn remotes() {
        let (a, p) = parse_remote("127.0.0.1:4433:a/b").unwrap();
        assert_eq!((a, p.as_str()), (t("127.0.0.1", 4433), "a/b"));
        let (a, p) = parse_remote("[::1]:9:dir/f:x").unwrap();
        assert_eq!((a, p.as_str()), (t("::1", 9), "dir/f:x"));
        let (a, p) = parse_remote("host:a/b").unwrap();
        assert_eq!((a, p.as_str()), (t("host", 4433), "a/b"));
        let (a, p) = parse_remote("[::1]:notes").unwrap();
        assert_eq!((a, p.as_str()), (t("::1", 4433), "notes"));
        for bad in ["nocolon", "host:", "host:4433:", ":x", "[::1]", "[::1]:"] {
            assert!(parse_remote(bad).is_err(), "{bad}");
        }
        for bad in [
            "host:in.txt\nGET ../x",
            "host:1:a\tb",
            "host:a\r",
            "host:a\0",
        ] {
            let e = parse_remote(bad).unwrap_err();
            assert_eq!(e.code, USAGE, "{bad:?}");
            assert!(e.message.contains("control character"), "{}", e.message);
            assert_eq!(e.message.lines().count(), 1, "{}", e.message);
        }
    }

    #[test]
    fn lines_stop_at_newline() {
        let mut r: &[u8] = b"OK 5 abc\nrest";
        assert_eq!(read_line(&mut r).unwrap(), "OK 5 abc");
        assert_eq!(r, b"rest");
        let mut r: &[u8] = b"no newline";
        assert!(read_line(&mut r).is_err());
        let long = vec![b'a'; quill_transport::service::MAX_LINE + 10];
        assert!(read_line(&mut long.as_slice()).is_err());
    }

    #[test]
    fn pinned_fingerprint_is_checked() {
        let login = LoginArgs {
            user: Some("a".into()),
            password_stdin: false,
            password_file: None,
            identity: None,
            known_hosts: None,
            accept_new_host: false,
            host_key: Some("SHA256:short".into()),
            connect_timeout: Duration::from_secs(10),
            quic_v1: false,
            ca: None,
            qlog_dir: None,
        };
        let err = host_key_policy(&login, &t("h", 1)).err().unwrap();
        assert_eq!(err.code, USAGE);
    }
}
