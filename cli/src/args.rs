//! The command line, exactly as users and scripts see it (`quill --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// quill: a post-quantum transport with accounts and login built in.
#[derive(Debug, Parser)]
#[command(name = "quill", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How log lines look on stderr: text, or one JSON object per line (the server
    /// also takes `log-format` in --config). RUST_LOG=FILTER overrides -v/-q.
    #[arg(long, value_enum, global = true)]
    pub log_format: Option<crate::logging::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a host or identity key (private file mode 0600, PATH.pub) and print its fingerprint.
    ///
    /// Example: quill keygen -o ~/.quill/id_ed25519
    Keygen(KeygenArgs),
    /// Run a server.
    ///
    /// Example: quill server --key host.key --accounts accounts.db --root ./files
    Server(ServerArgs),
    /// Administer accounts.
    ///
    /// Example: quill user add alice --accounts accounts.db
    User(UserArgs),
    /// Create an account on a server that allows registration, and log in.
    ///
    /// Example: quill register 127.0.0.1:4433 --user alice
    Register(ClientArgs),
    /// netcat-like: standard input to the server's echo service, the answer to standard output.
    ///
    /// Example: echo hello | quill connect 127.0.0.1:4433 --user alice --identity alice.key
    Connect(ClientArgs),
    /// Upload a file: quill send LOCAL ADDR:REMOTE.
    ///
    /// Example: quill send notes.txt 127.0.0.1:4433:notes.txt --user alice
    Send(SendArgs),
    /// Download a file: quill get ADDR:REMOTE LOCAL (`-` for standard output).
    ///
    /// Example: quill get 127.0.0.1:4433:notes.txt copy.txt --user alice
    Get(GetArgs),
    /// Handshake + login time, then round-trip times of transport PING frames, less
    /// the server's reported ACK delay (--echo: of ECHO requests on a stream).
    ///
    /// Example: quill ping 127.0.0.1:4433 -c 5 -i 200ms --user alice
    Ping(PingArgs),
    /// iperf3-like throughput test against the server's sink/source service.
    ///
    /// Example: quill perf 127.0.0.1:4433 -t 5 -P 2 -R --user alice --json
    Perf(PerfArgs),
    /// Run a whole session on loopback with nothing to set up.
    ///
    /// Example: quill demo --bytes 100000000
    Demo(DemoArgs),
    /// Print the fingerprint of a key file (private key or `.pub`), as the server
    /// prints its own and `--host-key` takes it.
    ///
    /// Example: quill fingerprint ~/.quill/id_ed25519.pub
    Fingerprint(FingerprintArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    ///
    /// Example: quill completions bash > /etc/bash_completion.d/quill
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to standard output.
    ///
    /// Example: quill man | man -l -
    Man(ManArgs),
    /// List a directory of your file space: type, size, modification time (UTC), name.
    ///
    /// Example: quill ls 127.0.0.1:4433:photos --user alice
    Ls(LsArgs),
    /// Create a directory in your file space.
    ///
    /// Example: quill mkdir -p 127.0.0.1:4433:photos/2026 --user alice
    Mkdir(MkdirArgs),
    /// Remove a file, or a directory with -r, from your file space.
    ///
    /// Example: quill rm -r 127.0.0.1:4433:photos/old --user alice
    Rm(RmArgs),
}

/// `quill fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// The key file: a private key from `quill keygen`, or its `.pub`.
    pub file: PathBuf,
}

/// `quill keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PATH.pub gets the public key); a missing
    /// parent directory is created with mode 0700.
    #[arg(short = 'o', long = "output", default_value = "quill_ed25519")]
    pub output: PathBuf,
    /// Write a 32-byte random secret for `quill server --reset-key` / `--retry-key`
    /// (mode 0600) instead of a key pair; give the file with -o.
    #[arg(long)]
    pub secret: bool,
}

/// `quill server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "[::]:4433")]
    pub listen: SocketAddr,
    /// Host key file (from `quill keygen`; mode 0600).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Account database: a SQLite file (created if missing) or a PostgreSQL URL
    /// (postgres://USER@HOST[:PORT]/DB).
    #[arg(long)]
    pub accounts: Option<PathBuf>,
    /// Stateless-reset secret (32 bytes, mode 0600; `quill keygen --secret -o FILE`):
    /// servers of a fleet given the same file reset each other's connections
    /// [default: derived from the host key].
    #[arg(long)]
    pub reset_key: Option<PathBuf>,
    /// Retry-token secret (32 bytes, mode 0600): servers of a fleet given the same
    /// file, and a restarted server, accept each other's Retry tokens [default: random
    /// per run].
    #[arg(long)]
    pub retry_key: Option<PathBuf>,
    /// Directory for file put/get (paths may not escape it).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Largest file a client may send (e.g. 500M, 2G; bytes without a suffix);
    /// larger uploads are refused before any data moves.
    #[arg(long, value_parser = parse_size)]
    pub max_upload_size: Option<u64>,
    /// Let clients create accounts.
    #[arg(long)]
    pub allow_register: bool,
    /// Keep-alive interval (e.g. 10s); off by default on the server.
    #[arg(long, value_parser = parse_duration)]
    pub keep_alive: Option<std::time::Duration>,
    /// Idle timeout (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,
    /// A client's handshake and login must be done within this long, or its session is
    /// dropped (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub handshake_timeout: Option<std::time::Duration>,
    /// When to ask clients to prove their address with a Retry.
    #[arg(long, value_enum, default_value_t = RetryArg::Auto)]
    pub retry: RetryArg,
    /// Write a qlog trace of every connection to DIR (one DIR/<odcid>_server.sqlog
    /// each; open them in qvis).
    #[arg(long, value_name = "DIR")]
    pub qlog_dir: Option<PathBuf>,
    /// Most logged-in connections one account may hold at once (0: no cap) [default: 16].
    #[arg(long)]
    pub max_connections_per_user: Option<usize>,
    /// Most connections one client address may hold at once (0: no cap) [default: 32].
    #[arg(long)]
    pub max_connections_per_address: Option<usize>,
    /// Most registrations one client address may attempt per hour (0: no limit)
    /// [default: 5].
    #[arg(long)]
    pub max_registrations_per_address: Option<u32>,
    /// Most handshakes one client address may have in progress at once (0: no cap)
    /// [default: 32]. When all 4,096 places are taken, a new client evicts the oldest
    /// handshake of the address holding the most.
    #[arg(long)]
    pub max_half_open_per_address: Option<usize>,
    /// Speak quill's own version only: QUIC v1 clients get Version Negotiation.
    #[arg(long, conflicts_with_all = ["cert", "cert_key"])]
    pub no_quic_v1: bool,
    /// Do not offer QUIC v2 (RFC 9369): a QUIC v1 client that lists v2 stays on v1.
    /// By default such a client is moved to v2 (RFC 9368 compatible negotiation).
    #[arg(long)]
    pub no_quic_v2: bool,
    /// QUIC v1 clients (`--quic-v1`): present this CA-issued certificate chain (PEM,
    /// leaf first) instead of the self-signed certificate over the host key; needs
    /// --cert-key.
    #[arg(long, requires = "cert_key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, requires = "cert")]
    pub cert_key: Option<PathBuf>,
    /// Also serve the QUIC interop runner's HTTP/0.9 (ALPN hq-interop, `GET /PATH`) to
    /// QUIC v1 clients: anonymous, read-only downloads of every file under --root.
    /// Only for a root that holds nothing private.
    #[arg(long, conflicts_with = "no_quic_v1")]
    pub hq_interop: bool,
    /// Event loops (threads), each with its own socket on --listen (SO_REUSEPORT);
    /// the kernel steers each datagram to the loop named in its connection ID
    /// [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// This server's QUIC-LB server ID, carried in its connection IDs so that a
    /// QUIC-LB-aware load balancer routes by it: 0x and 1 to 15 bytes of hex (0x0a01)
    /// or a decimal integer (2 bytes) [default: 0x0000]. Give each server of a fleet
    /// its own.
    #[arg(long)]
    pub server_id: Option<String>,
    /// Configuration file (TOML-like `key = value` lines with the long option names).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `--retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryArg {
    /// Every connection.
    Always,
    /// When many handshakes are in progress.
    Auto,
    /// Never.
    Never,
}

/// `quill user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// Account database: a SQLite file or a PostgreSQL URL
    /// (postgres://USER@HOST[:PORT]/DB).
    #[arg(long, global = true)]
    pub accounts: Option<PathBuf>,
    /// Read the password from standard input instead of prompting.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    #[command(subcommand)]
    pub action: UserAction,
}

/// `quill user ACTION`.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create an account (asks for a password unless --no-password).
    Add {
        /// Account name.
        name: String,
        /// Create it without a password (public-key login only).
        #[arg(long)]
        no_password: bool,
        /// Authorise this public key file (`.pub`).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Delete an account.
    Del {
        /// Account name.
        name: String,
    },
    /// List accounts.
    List,
    /// Set an account's password.
    Passwd {
        /// Account name.
        name: String,
    },
    /// Disable an account (logins refused).
    Disable {
        /// Account name.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Account name.
        name: String,
    },
    /// Authorise a public key (`.pub` file) for an account.
    AddKey {
        /// Account name.
        name: String,
        /// Public key file.
        key: PathBuf,
    },
    /// Remove an authorised key by fingerprint (`SHA256:...`).
    DelKey {
        /// Account name.
        name: String,
        /// Fingerprint.
        fingerprint: String,
    },
}

/// Login and host-key options shared by every client command.
///
/// `-l`, `-p` and `-i` are ssh's letters; see README.md, "ssh habits", for the
/// defaults (`user@host`, `~/.quill/config`, `~/.quill/id_ed25519`).
#[derive(Debug, Args, Clone)]
pub struct LoginArgs {
    /// Account name (or `USER@HOST`); default: the config file's User, else your
    /// local user name.
    #[arg(short = 'l', long)]
    pub user: Option<String>,
    /// Server port (or `HOST:PORT`); default: the config file's Port, else 4433.
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Read the password from standard input (first line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Read the password from the first line of this file (mode 0600), leaving standard
    /// input to the command.
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Log in with this identity key file instead of a password (default: the config
    /// file's IdentityFile, else ~/.quill/id_ed25519 if it exists and no password
    /// option is given).
    #[arg(short = 'i', long)]
    pub identity: Option<PathBuf>,
    /// known_hosts file (default: $QUILL_KNOWN_HOSTS or ~/.quill/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the server's host key if it is not known yet, without asking.
    #[arg(long)]
    pub accept_new_host: bool,
    /// Accept only this host key fingerprint (SHA256:...).
    #[arg(long)]
    pub host_key: Option<String>,
    /// Give up if the handshake and login are not done within this long (100ms..1h).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: std::time::Duration,
    /// Speak QUIC v1 (TLS 1.3, X25519MLKEM768 preferred; ALPN `quill`, the login on
    /// the first stream) instead of quill's own version.
    #[arg(long)]
    pub quic_v1: bool,
    /// QUIC v1: verify the server's certificate chain against these CA certificates
    /// (PEM) and the host name, instead of its host key.
    #[arg(long, requires = "quic_v1")]
    pub ca: Option<PathBuf>,
    /// Write a qlog trace of the connection to DIR (DIR/<odcid>_client.sqlog; open it
    /// in qvis).
    #[arg(long, value_name = "DIR")]
    pub qlog_dir: Option<PathBuf>,
}

/// `quill register` and `quill connect`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server: [USER@]HOST[:PORT] (IPv6 in brackets: [::1]:4433).
    pub addr: String,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Local file; `-` for standard input (a pipe or `<(...)` is streamed too).
    pub local: PathBuf,
    /// [USER@]HOST[:PORT]:REMOTE, e.g. 127.0.0.1:4433:notes.txt, alice@host:notes.txt
    /// or [::1]:4433:dir/file.
    pub remote: String,
    /// Send a directory: REMOTE becomes a copy of LOCAL.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// [USER@]HOST[:PORT]:REMOTE.
    pub remote: String,
    /// Local file (written under a temporary name, renamed when complete), or `-` for
    /// standard output.
    pub local: PathBuf,
    /// Get a directory: LOCAL becomes a copy of REMOTE.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill ping`. `-i` is the interval here, as in ping(8); the identity is
/// `--identity`.
#[derive(Debug, Args)]
#[command(mut_arg("identity", |a| a.short(None)))]
pub struct PingArgs {
    /// Server: [USER@]HOST[:PORT].
    pub addr: String,
    /// Number of PINGs.
    #[arg(short = 'c', long = "count", default_value_t = 5)]
    pub count: u32,
    /// Wait between PINGs (e.g. 200ms).
    #[arg(short = 'i', long, value_parser = parse_duration, default_value = "1s")]
    pub interval: std::time::Duration,
    /// Time ECHO round trips on a stream (the application's view: both ends' stream
    /// handling included) instead of PING frames.
    #[arg(long)]
    pub echo: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill perf`, with iperf3's letters. `-i` is the report interval here, as in
/// iperf3; the identity is `--identity`.
#[derive(Debug, Args)]
#[command(mut_arg("identity", |a| a.short(None)))]
pub struct PerfArgs {
    /// Server: [USER@]HOST[:PORT].
    pub addr: String,
    /// Run for this long: seconds (10) or a duration (500ms, 2m) [default: 10] ...
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "duration",
        value_parser = parse_duration,
        conflicts_with = "bytes"
    )]
    pub duration: Option<std::time::Duration>,
    /// ... or move this many bytes: a number, or with K, M, G or T, powers of 1024 as
    /// in iperf3 (10M = 10485760).
    #[arg(short = 'n', long, value_parser = crate::perf::parse_bytes)]
    pub bytes: Option<u64>,
    /// Parallel streams (1 to 64).
    #[arg(
        short = 'P',
        long = "parallel",
        visible_alias = "streams",
        default_value_t = 1
    )]
    pub streams: u32,
    /// Reverse mode: the server sends, the client receives.
    #[arg(short = 'R', long)]
    pub reverse: bool,
    /// Time between interval reports (seconds or e.g. 500ms; 0 for none).
    #[arg(short = 'i', long, value_parser = parse_duration, default_value = "1")]
    pub interval: std::time::Duration,
    /// One JSON object on stdout, in iperf3's shape (the report lines go to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// HOST:[PATH]: the directory to list; HOST, HOST: or HOST:PORT: for the top of
    /// your file space.
    pub remote: String,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill mkdir`. `-p` is mkdir(1)'s "parents" here; the port is `--port` (or
/// `HOST:PORT` in the target).
#[derive(Debug, Args)]
#[command(mut_arg("port", |a| a.short(None)))]
pub struct MkdirArgs {
    /// HOST:PATH of the new directory.
    pub remote: String,
    /// Create missing parent directories too; an existing directory is no error.
    #[arg(short = 'p', long)]
    pub parents: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// HOST:PATH of a file, link or empty directory.
    pub remote: String,
    /// Remove a directory and everything in it.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// `quill demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Bytes to transfer.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub bytes: u64,
}

/// Parses `500ms`, `10s`, `2m`, `1h` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; use e.g. 500ms, 10s, 2m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in '{s}'; use ms, s, m or h")),
    };
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("duration '{s}' is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A byte count: digits, optionally followed by K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a size; use bytes or e.g. 64K, 500M, 2G");
    let (num, shift) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 0),
        Some((i, _)) => match s[i..].trim_end_matches(['B', 'b', 'i']) {
            "K" | "k" => (&s[..i], 10),
            "M" | "m" => (&s[..i], 20),
            "G" | "g" => (&s[..i], 30),
            "T" | "t" => (&s[..i], 40),
            _ => return Err(bad()),
        },
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("10s").unwrap().as_secs(), 10);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("7").unwrap().as_secs(), 7);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}

/// `quill completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells `quill completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// bash (source it, or put it in /etc/bash_completion.d/quill).
    Bash,
    /// zsh (put it in a directory of $fpath as _quill).
    Zsh,
    /// fish (put it in ~/.config/fish/completions/quill.fish).
    Fish,
}

/// `quill man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (quill.1, quill-server.1, ...) into this directory
    /// instead of printing quill.1.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}
