//! What every client command shares — address parsing, login options → [`ClientConfig`],
//! connecting with a clear error — and `quill register` and `quill connect`.
//!
//! Addresses: `[USER@]HOST:PORT`, `[USER@][V6]:PORT`, or a bare `HOST` / `[V6]` / IPv6
//! literal with the port from `-p`, the config file or [`DEFAULT_PORT`]. For
//! `send`/`get`, `ADDR:REMOTE` puts the remote path after the port's colon
//! (`127.0.0.1:4433:a/b`, `alice@[::1]:4433:a/b`); when the part after the host's colon
//! is not a port number (`host:a/b`) the port is chosen as for a bare host and the whole
//! rest is the path. [`parse_addr`] and [`parse_remote`] are the parsers every command
//! that takes a server uses; [`open_target`] then applies `-l`/`-p`/`-i`, the config
//! file (`config.rs`) and the defaults, asks about a first-contact host key, and logs in.

use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::packet::Suite;
use quill_transport::auth::{
    default_known_hosts_path, has_terminal, known_hosts_policy_with, parse_fingerprint,
    pinned_policy, KnownHosts, TrustMode,
};
use quill_transport::auth::{prompt_password, read_password, Credentials, CredentialsError};
use quill_transport::driver::blocking::{
    connect as blocking_connect, BlockingConnection, BlockingStream,
};
use quill_transport::proto::{
    CertificateCheck, HandshakeStage, TransportConfig, Unreachable, Version, ALPN_QUILL,
};
use quill_transport::{ClientConfig, ConnectionError, HostKeyPolicy, Login};
use zeroize::Zeroizing;

use crate::args::{ClientArgs, LoginArgs};
use crate::config::{ConfigFile, HostKeyCheck};
use crate::exit::{CliError, CliResult, CONNECTION, HOST_KEY, LOGIN_REFUSED};
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
    /// UDP port ([`DEFAULT_PORT`] when none was typed).
    pub port: u16,
    /// The account typed before `@`, if any.
    pub user: Option<String>,
    /// Whether the port was typed (else `-p` or the config file may choose it).
    pub port_given: bool,
}

impl Target {
    /// `host`:`port`, as if typed without a user.
    pub fn new(host: impl Into<String>, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
            user: None,
            port_given: true,
        }
    }

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
        "bad address '{}': {why}; use [USER@]HOST[:PORT] or [USER@][IPv6][:PORT] \
         (port {DEFAULT_PORT} by default)",
        s.escape_debug()
    ))
}

/// Splits `USER@` off the front of a target: the user is what comes before the last
/// `@` that precedes the host (so a path after the host may contain `@`).
fn split_user(s: &str) -> Result<(Option<String>, &str), &'static str> {
    let host_start = s.find([':', '[']).unwrap_or(s.len());
    match s[..host_start].rfind('@') {
        None => Ok((None, s)),
        Some(0) => Err("empty user name before '@'"),
        Some(at) if s[..at].chars().any(char::is_control) => {
            Err("the user name contains a control character")
        }
        Some(at) => Ok((Some(s[..at].to_string()), &s[at + 1..])),
    }
}

fn parse_port(s: &str, whole: &str) -> Result<u16, CliError> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad_addr(whole, "the port must be a number 1-65535")),
        Ok(p) => Ok(p),
    }
}

/// Parses `[USER@]` followed by `HOST:PORT`, `[V6]:PORT`, `HOST`, `[V6]` or a bare
/// IPv6 literal.
pub fn parse_addr(s: &str) -> Result<Target, CliError> {
    let whole = s.trim();
    let (user, s) = split_user(whole).map_err(|why| bad_addr(whole, why))?;
    let mut target = parse_host_port(s)?;
    target.user = user;
    Ok(target)
}

fn parse_host_port(s: &str) -> Result<Target, CliError> {
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
        return match after {
            "" => Ok(Target::bare(host)),
            p => Ok(Target::new(
                host,
                parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad_addr(s, "expected ':' after ']'"))?,
                    s,
                )?,
            )),
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(Target::bare(s));
    }
    match s.split_once(':') {
        None => Ok(Target::bare(s)),
        Some((host, port)) if !host.is_empty() => Ok(Target::new(host, parse_port(port, s)?)),
        Some(_) => Err(bad_addr(s, "empty host")),
    }
}

impl Target {
    /// `host` with no port typed.
    fn bare(host: &str) -> Target {
        Target {
            port_given: false,
            ..Target::new(host, DEFAULT_PORT)
        }
    }
}

/// Splits `[USER@]ADDR:REMOTE` into the server and the remote path (see the module
/// doc).
pub fn parse_remote(s: &str) -> Result<(Target, String), CliError> {
    // Escaped, so that the message stays one line whatever was typed.
    let shown = s.escape_debug();
    let usage = |why: &str| {
        CliError::usage(format!(
            "bad remote '{shown}': {why}; use [USER@]HOST[:PORT]:PATH or \
             [USER@][IPv6][:PORT]:PATH"
        ))
    };
    let (user, s) = split_user(s).map_err(usage)?;
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
            (Some(parse_port(p, s)?), path)
        }
        _ => (None, rest),
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
    let mut target = match port {
        Some(port) => Target::new(host, port),
        None => Target::bare(host),
    };
    target.user = user;
    Ok((target, path.to_string()))
}

/// Where the account name came from (said in the password prompt and with `-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSource {
    /// `-l` / `--user`.
    Flag,
    /// `USER@` in the target.
    Target,
    /// `User` in the config file.
    Config,
    /// The local user name (ssh's default too).
    Local,
}

/// Where the identity key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// `-i` / `--identity`.
    Flag,
    /// `IdentityFile` in the config file.
    Config,
    /// `~/.quill/id_ed25519`, which exists.
    Default,
}

/// A target with the command line, the config file and the defaults applied: what
/// to connect to, as whom, with what.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Where to connect: the config's `HostName` if any, and the chosen port.
    pub target: Target,
    /// The account name.
    pub user: String,
    /// Where [`Resolved::user`] came from.
    pub user_source: UserSource,
    /// The identity key file for a public-key login, if any.
    pub identity: Option<(PathBuf, IdentitySource)>,
    /// What to do if the server's address is not in known_hosts.
    pub check: HostKeyCheck,
    /// The config file read, if there was one.
    pub config: Option<PathBuf>,
}

/// Applies `-l`/`-p`/`-i`/`--accept-new-host`, `~/.quill/config` (matched against the
/// host as typed) and the defaults to `target`. A user or port given both in the
/// target and by a flag must agree.
pub fn resolve(target: Target, login: &LoginArgs) -> Result<Resolved, CliError> {
    let config = ConfigFile::load_default()?;
    resolve_with(target, login, config.as_ref(), local_user_name)
}

fn resolve_with(
    target: Target,
    login: &LoginArgs,
    config: Option<&ConfigFile>,
    local_user: impl FnOnce() -> Option<String>,
) -> Result<Resolved, CliError> {
    let settings = config.map(|c| c.lookup(&target.host)).unwrap_or_default();
    let (user, user_source) = match (&login.user, &target.user) {
        (Some(flag), Some(typed)) if flag != typed => {
            return Err(CliError::usage(format!(
                "two account names: -l {flag} and {typed}@{}; give one",
                target.host
            )))
        }
        (Some(flag), _) => (flag.clone(), UserSource::Flag),
        (None, Some(typed)) => (typed.clone(), UserSource::Target),
        (None, None) => match settings.user {
            Some(u) => (u, UserSource::Config),
            None => (
                local_user()
                    .ok_or_else(|| CliError::usage("no account name: pass -l USER or USER@HOST"))?,
                UserSource::Local,
            ),
        },
    };
    let port = match (login.port, target.port_given) {
        (Some(flag), true) if flag != target.port => {
            return Err(CliError::usage(format!(
                "two ports: -p {flag} and {}; give one",
                target.display()
            )))
        }
        (Some(flag), _) => flag,
        (None, true) => target.port,
        (None, false) => settings.port.unwrap_or(DEFAULT_PORT),
    };
    let identity = if let Some(p) = &login.identity {
        Some((p.clone(), IdentitySource::Flag))
    } else if login.password_stdin || login.password_file.is_some() {
        None
    } else {
        match settings.identity_file {
            Some(Some(p)) => Some((p, IdentitySource::Config)),
            Some(None) => None,
            None => quill_transport::auth::quill_home()
                .map(|h| h.join(DEFAULT_IDENTITY))
                .filter(|p| p.exists())
                .map(|p| (p, IdentitySource::Default)),
        }
    };
    let check = if login.accept_new_host {
        HostKeyCheck::AcceptNew
    } else {
        settings.host_key_check.unwrap_or(HostKeyCheck::Ask)
    };
    let resolved = Resolved {
        target: Target {
            host: settings.host_name.unwrap_or(target.host),
            port,
            user: None,
            port_given: true,
        },
        user,
        user_source,
        identity,
        check,
        config: config.map(|c| c.path().to_path_buf()),
    };
    tracing::info!(
        "server {}, account {} ({}), {}{}",
        resolved.target.display(),
        resolved.user,
        match resolved.user_source {
            UserSource::Flag => "from -l",
            UserSource::Target => "from USER@HOST",
            UserSource::Config => "from the config file",
            UserSource::Local => "the local user name; -l USER for another",
        },
        match &resolved.identity {
            Some((p, IdentitySource::Flag)) => format!("identity {}", p.display()),
            Some((p, IdentitySource::Config)) => {
                format!("identity {} (config IdentityFile)", p.display())
            }
            Some((p, IdentitySource::Default)) => format!("identity {} (default)", p.display()),
            None => "password login".to_owned(),
        },
        match &resolved.config {
            Some(p) => format!(", config {}", p.display()),
            None => String::new(),
        }
    );
    Ok(resolved)
}

/// The default identity file's name in quill's per-user directory.
pub const DEFAULT_IDENTITY: &str = "id_ed25519";

/// The local user name, as ssh takes it: the password database's name for the real
/// user id, else `$USER`.
pub fn local_user_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of the
    // strings it holds, which are copied out before it is dropped.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    let from_passwd = if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        name.to_str().ok().map(str::to_owned)
    } else {
        None
    };
    from_passwd
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
}

/// A usage error, except Ctrl-C at a password prompt: 130, as for Ctrl-C anywhere.
fn cred_err(e: CredentialsError) -> CliError {
    match &e {
        CredentialsError::Io(io) if io.kind() == io::ErrorKind::Interrupted => {
            CliError::new(128 + libc::SIGINT, "interrupted")
        }
        _ => CliError::usage(e.to_string()),
    }
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
    refuse_open_mode(path, mode, 0o077, "is readable by others")?;
    Ok(file)
}

/// A usage error saying `path` `what` (mode) and the `chmod 600` that fixes it, if
/// `mode` has any of the bits in `mask`.
pub fn refuse_open_mode(path: &std::path::Path, mode: u32, mask: u32, what: &str) -> CliResult {
    if mode & mask == 0 {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "{} {what} (mode {:o}); run chmod 600 {}",
        path.display(),
        mode & 0o777,
        path.display()
    )))
}

/// The login for an existing account: the identity key of `r` (`-i`, the config's
/// IdentityFile or the default one), else the password from `--password-file`, else
/// from `--password-stdin` (first line of standard input), else a prompt on the
/// terminal (`/dev/tty`, so standard input may be a pipe).
pub fn login_from_args(login: &LoginArgs, r: &Resolved) -> Result<Login, CliError> {
    let user = r.user.clone();
    if let Some((path, _)) = &r.identity {
        return Credentials::from_identity_file(&user, path).map_err(cred_err);
    }
    if let Some(path) = &login.password_file {
        return Credentials::from_stdin(&user, open_password_file(path)?)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())));
    }
    if login.password_stdin {
        return Credentials::from_stdin(&user, io::stdin()).map_err(cred_err);
    }
    Credentials::from_prompt_text(&user, &password_prompt(r, "Password")).map_err(cred_err)
}

/// `Password for alice@host: `, saying so when the name is the local user name.
fn password_prompt(r: &Resolved, what: &str) -> String {
    let hint = if r.user_source == UserSource::Local {
        " (your local user name; -l USER for another)"
    } else {
        ""
    };
    format!("{what} for {}@{}{hint}: ", r.user, r.target.host)
}

/// A registration: the password from `--password-file`, `--password-stdin` or typed
/// twice; `--identity`
/// authorises that key for later public-key logins.
pub fn register_login(login: &LoginArgs, r: &Resolved) -> Result<Login, CliError> {
    let user = r.user.clone();
    let password: Zeroizing<String> = if let Some(path) = &login.password_file {
        read_password(open_password_file(path)?)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
    } else if login.password_stdin {
        read_password(io::stdin()).map_err(cred_err)?
    } else {
        let first = prompt_password(&password_prompt(r, "New password")).map_err(cred_err)?;
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
/// or the default path). For an address the file does not know yet, `r.check` says
/// what happens: [`HostKeyCheck::AcceptNew`] records the key; otherwise the key is
/// fetched first ([`first_contact`]) and, with [`HostKeyCheck::Ask`] on a terminal,
/// the user is asked about it before any password is asked for or sent.
pub fn host_key_policy(login: &LoginArgs, r: &Resolved) -> Result<HostKeyPolicy, CliError> {
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
                "no known_hosts file: set HOME, QUILL_HOME or QUILL_KNOWN_HOSTS, or pass \
                 --known-hosts FILE or --host-key FINGERPRINT",
            )
        })?,
    };
    let target = &r.target;
    let mode = if r.check == HostKeyCheck::AcceptNew {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        TrustMode::AcceptNew
    } else {
        TrustMode::Strict
    };
    let policy = known_hosts_policy_with(&path, &target.host, target.port, mode, |note| {
        note!("quill: {note}")
    })
    .map_err(|e| CliError::usage(e.to_string()))?;
    // With --ca the certificate chain is checked instead of the host key.
    if mode == TrustMode::AcceptNew || login.ca.is_some() {
        return Ok(policy);
    }
    let known = KnownHosts::load(&path).map_err(|e| CliError::usage(e.to_string()))?;
    if known.knows(&target.host, target.port) {
        return Ok(policy);
    }
    first_contact(login, r, policy, known)
}

/// A first contact with `r.target`: a handshake that only fetches the host key (the
/// `strict` policy refuses it, so no login is sent), then, with
/// [`HostKeyCheck::Ask`] and a terminal, ssh's question on `/dev/tty`. "yes" records
/// the key in `known` and returns a policy pinned to it; "no", no terminal, or
/// [`HostKeyCheck::Strict`] is the strict policy's refusal (exit 5, saying how to
/// trust the host).
fn first_contact(
    login: &LoginArgs,
    r: &Resolved,
    strict: HostKeyPolicy,
    mut known: KnownHosts,
) -> Result<HostKeyPolicy, CliError> {
    let HostKeyPolicy::Verify(strict) = strict else {
        return Ok(strict);
    };
    let seen: Arc<Mutex<Option<PublicKey>>> = Arc::default();
    let seen_by_probe = seen.clone();
    let probe = HostKeyPolicy::Verify(Arc::new(move |key: &PublicKey| {
        *seen_by_probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        strict(key)?;
        Err("its key was added to known_hosts while connecting; run the command again".into())
    }));
    // Never sent: the probe's policy refuses every key before the login.
    let nobody = Login::Password {
        user: "first-contact".to_owned(),
        password: Zeroizing::new("never sent".to_owned()),
    };
    let mut refusal = match connect_config(r.target.clone(), client_config(nobody, probe, login)?) {
        Ok(session) => {
            session.conn.close(0, "");
            return Err(CliError::connection(
                "the first-contact handshake was not refused",
            ));
        }
        Err(e) => e,
    };
    let key = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(key) = key.filter(|_| refusal.code == HOST_KEY) else {
        return Err(refusal);
    };
    if r.check == HostKeyCheck::Strict {
        return Err(refusal);
    }
    if !has_terminal() {
        refusal
            .message
            .push_str(" (there is no terminal to ask on)");
        return Err(refusal);
    }
    let addr = r.target.display();
    let fingerprint = key.fingerprint();
    if !ask_about_host_key(&addr, &fingerprint)? {
        return Err(CliError::new(
            HOST_KEY,
            format!(
                "host key verification failed: {addr} ({fingerprint}) was not accepted; \
                 nothing was sent to it"
            ),
        ));
    }
    match known.append(&r.target.host, r.target.port, &key) {
        Ok(line) => note!(
            "quill: Permanently added {addr} ({fingerprint}) to the list of known hosts \
             (line {line} of {}).",
            known.path().display()
        ),
        Err(e) => note!(
            "quill: Warning: accepted {addr} ({fingerprint}) for this connection but could \
             not record it: {e}"
        ),
    }
    Ok(HostKeyPolicy::Pinned(vec![fingerprint]))
}

/// ssh's first-contact question on the terminal. `yes` or the fingerprint itself
/// accept; `no`, the end of input or three other answers refuse.
fn ask_about_host_key(addr: &str, fingerprint: &str) -> Result<bool, CliError> {
    let tty_err = |e: io::Error| CliError::usage(format!("cannot ask on the terminal: {e}"));
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(tty_err)?;
    write!(
        tty,
        "The authenticity of host '{addr}' can't be established.\n\
         Its host key fingerprint is {fingerprint}.\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    )
    .map_err(tty_err)?;
    for _ in 0..3 {
        let answer = match read_line(&mut tty) {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(tty_err(e)),
        };
        let answer = answer.trim();
        if answer.eq_ignore_ascii_case("yes") {
            return Ok(true);
        }
        if answer.eq_ignore_ascii_case("no") {
            return Ok(false);
        }
        if answer.starts_with("SHA256:") {
            if parse_fingerprint(answer).is_ok_and(|fp| fp == fingerprint) {
                return Ok(true);
            }
            let _ = writeln!(tty, "The fingerprint you typed is not the host's.");
            return Ok(false);
        }
        write!(tty, "Please type 'yes', 'no' or the fingerprint: ").map_err(tty_err)?;
    }
    Ok(false)
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

/// Parses `addr` ([`parse_addr`]), then as [`open_target`].
/// `suites`, when given, replaces the offered AEAD suites.
pub fn open_session(
    addr: &str,
    login: &LoginArgs,
    suites: Option<Vec<Suite>>,
) -> Result<Session, CliError> {
    let target = parse_addr(addr)?;
    open_target(target, login, suites)
}

/// Applies the options, config file and defaults to `target` ([`resolve`]), settles
/// the host key (asking on a first contact), reads the credentials and connects.
/// `suites`, when given, replaces the offered AEAD suites.
pub fn open_target(
    target: Target,
    login: &LoginArgs,
    suites: Option<Vec<Suite>>,
) -> Result<Session, CliError> {
    let r = resolve(target, login)?;
    let policy = host_key_policy(login, &r)?;
    let creds = login_from_args(login, &r)?;
    let mut config = client_config(creds, policy, login)?;
    if let Some(s) = suites {
        config.suites = s;
    }
    connect_config(r.target.clone(), config).map_err(|mut e| {
        if let (LOGIN_REFUSED, Some((path, IdentitySource::Config | IdentitySource::Default))) =
            (e.code, &r.identity)
        {
            e.message.push_str(&format!(
                " (logged in with the identity {} found by default; to use a password \
                 instead pass --password-file FILE or --password-stdin, or put \
                 `IdentityFile none` in {})",
                path.display(),
                r.config
                    .as_deref()
                    .or(crate::config::default_path().as_deref())
                    .map_or("~/.quill/config".into(), |p| p.display().to_string())
            ));
        }
        e
    })
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
    let mut r = resolve(parse_addr(&a.addr)?, &a.login)?;
    // Only -i counts here: it names the key to authorise, not one to log in with.
    r.identity = r
        .identity
        .filter(|(_, source)| *source == IdentitySource::Flag);
    let policy = host_key_policy(&a.login, &r)?;
    let login = register_login(&a.login, &r)?;
    let session = connect_config(r.target, client_config(login, policy, &a.login)?)?;
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
        Target::new(host, port)
    }

    fn bare(host: &str) -> Target {
        Target::bare(host)
    }

    fn with_user(user: &str, target: Target) -> Target {
        Target {
            user: Some(user.into()),
            ..target
        }
    }

    fn login_args() -> LoginArgs {
        LoginArgs {
            user: None,
            port: None,
            password_stdin: false,
            password_file: None,
            identity: None,
            known_hosts: None,
            accept_new_host: false,
            host_key: None,
            connect_timeout: Duration::from_secs(10),
            quic_v1: false,
            ca: None,
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:5000").unwrap(), t("127.0.0.1", 5000));
        assert_eq!(parse_addr("example.org").unwrap(), bare("example.org"));
        assert_eq!(parse_addr("[::1]:7").unwrap(), t("::1", 7));
        assert_eq!(parse_addr("[::1]").unwrap(), bare("::1"));
        assert_eq!(parse_addr("::1").unwrap(), bare("::1"));
        assert_eq!(
            parse_addr("alice@example.org").unwrap(),
            with_user("alice", bare("example.org"))
        );
        assert_eq!(parse_addr("a@b@h:9").unwrap(), with_user("a@b", t("h", 9)));
        assert_eq!(
            parse_addr("bob@[::1]:7").unwrap(),
            with_user("bob", t("::1", 7))
        );
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
            "@host",
            "alice@",
            "a\nb@host",
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
        assert_eq!((a, p.as_str()), (bare("host"), "a/b"));
        let (a, p) = parse_remote("[::1]:notes").unwrap();
        assert_eq!((a, p.as_str()), (bare("::1"), "notes"));
        let (a, p) = parse_remote("alice@host:dir/x@y:z").unwrap();
        assert_eq!(
            (a, p.as_str()),
            (with_user("alice", bare("host")), "dir/x@y:z")
        );
        let (a, p) = parse_remote("alice@[::1]:5:f").unwrap();
        assert_eq!((a, p.as_str()), (with_user("alice", t("::1", 5)), "f"));
        for bad in [
            "nocolon",
            "host:",
            "host:4433:",
            ":x",
            "[::1]",
            "[::1]:",
            "@host:f",
            "alice@:f",
        ] {
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
            host_key: Some("SHA256:short".into()),
            ..login_args()
        };
        let r = resolve_with(t("h", 1), &login, None, || None).unwrap();
        let err = host_key_policy(&login, &r).err().unwrap();
        assert_eq!(err.code, USAGE);
    }

    #[test]
    fn flags_target_config_and_defaults_combine_like_ssh() {
        let config = ConfigFile::parse(
            std::path::Path::new("/q/config"),
            "Host alias
 HostName 10.0.0.9
 User carol
 Port 4500
 IdentityFile k
             Host *
 StrictHostKeyChecking yes
",
        )
        .unwrap();
        let local = || Some("me".to_owned());
        // Everything from the config.
        let r = resolve_with(bare("alias"), &login_args(), Some(&config), local).unwrap();
        assert_eq!(r.target.display(), "10.0.0.9:4500");
        assert_eq!(
            (r.user.as_str(), r.user_source),
            ("carol", UserSource::Config)
        );
        assert_eq!(
            r.identity,
            Some((PathBuf::from("/q/k"), IdentitySource::Config))
        );
        assert_eq!(r.check, HostKeyCheck::Strict);
        // The target and the flags beat the config; a password option beats its identity.
        let login = LoginArgs {
            port: Some(7),
            password_stdin: true,
            accept_new_host: true,
            ..login_args()
        };
        let r = resolve_with(
            with_user("dave", bare("alias")),
            &login,
            Some(&config),
            local,
        )
        .unwrap();
        assert_eq!((r.target.port, r.user.as_str()), (7, "dave"));
        assert_eq!((r.identity, r.check), (None, HostKeyCheck::AcceptNew));
        // No config: the local user name, port 4433, ask.
        let r = resolve_with(bare("h"), &login_args(), None, local).unwrap();
        assert_eq!((r.user.as_str(), r.user_source), ("me", UserSource::Local));
        assert_eq!((r.target.port, r.check), (4433, HostKeyCheck::Ask));
        assert!(password_prompt(&r, "Password").contains("local user name"));
        // Disagreements are usage errors; no name at all too.
        let l = LoginArgs {
            user: Some("x".into()),
            port: Some(9),
            ..login_args()
        };
        assert!(resolve_with(with_user("y", bare("h")), &l, None, local).is_err());
        assert!(resolve_with(t("h", 8), &l, None, local).is_err());
        assert!(resolve_with(t("h", 9), &l, None, local).is_ok());
        assert!(resolve_with(bare("h"), &login_args(), None, || None).is_err());
    }
}
