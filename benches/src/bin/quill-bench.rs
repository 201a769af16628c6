//! `quill-bench`: loopback benchmarks with real processes and real UDP sockets.
//!
//! - `server`: a quill server (event loop + handler) that sinks unidirectional streams,
//!   echoes bidirectional ones and accepts the password `bench`;
//! - `client`, `handshakes`, `idle`: the clients of the three measurements;
//! - `loopback`: the orchestrator that runs server and clients as separate processes
//!   and measures CPU time and memory from the kernel's accounting;
//! - `compare`: quill side by side with quinn, quiche, TCP and TCP + TLS (issue 8),
//!   with `tcp-server` / `tcp-client` as the TCP ends.
//!
//! Everything runs on loopback addresses only; every wait has a timeout.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quill_bench::common;

/// Child processes' pipes read line by line (the interop suite's module; this crate
/// cannot depend on that one).
#[path = "../../../interop-tests/src/child.rs"]
#[allow(dead_code)]
mod child;
#[path = "quill-bench/clients.rs"]
mod clients;
#[path = "quill-bench/compare.rs"]
mod compare;
#[path = "quill-bench/loopback.rs"]
mod loopback;
#[path = "quill-bench/procs.rs"]
mod procs;
#[path = "quill-bench/server.rs"]
mod server;
#[path = "quill-bench/server_loops.rs"]
mod server_loops;
#[path = "quill-bench/stats.rs"]
mod stats;
#[path = "quill-bench/tcp.rs"]
mod tcp;
#[path = "quill-bench/workers.rs"]
mod workers;

/// Loopback benchmarks of the quill transport.
#[derive(Parser)]
#[command(name = "quill-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark server; prints `listening ADDR` and `fingerprint FP` first.
    /// Exits on SIGINT/SIGTERM or when stdin closes.
    Server {
        /// Address to bind (loopback only).
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// Worker threads for login verification (per event loop).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Serve on this many event loops through the `Workers` of `quill server
        /// --workers N` (sockets steered by connection ID); prints `steering MODE`,
        /// answers `stats` on stdin with `stats {JSON}`, and ends with the loops' counters
        /// as JSON. Default: one loop of its own (the other measurements).
        #[arg(long)]
        loops: Option<usize>,
        /// Keep running when stdin closes (stop with SIGINT/SIGTERM).
        #[arg(long)]
        ignore_stdin: bool,
        /// Check logins against this SQLite account database (created if missing,
        /// with the benchmark user) instead of a plain comparison.
        #[arg(long)]
        accounts: Option<std::path::PathBuf>,
        /// The server's sessions send keep-alives at this interval (ms; at most half
        /// the 30 s idle timeout). Default: none (clients keep the sessions alive).
        #[arg(long)]
        keep_alive_ms: Option<u64>,
        /// QUIC v1 clients get the self-signed "localhost" certificate in this
        /// directory (`cert.pem`, `key.pem`; made when missing, as the reference peers
        /// do) instead of the host-key certificate, so that reference clients given
        /// `--ca DIR/cert.pem` verify it.
        #[arg(long)]
        cert_dir: Option<std::path::PathBuf>,
    },
    /// One connection, one unidirectional stream of N bytes; prints a JSON line.
    Client {
        /// Server address.
        addr: SocketAddr,
        /// Bytes to send.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// The only AEAD suite the client offers.
        #[arg(long, value_enum, default_value = "aes256gcm")]
        suite: common::SuiteArg,
        /// How the client logs in (public-key needs a server with `--accounts`).
        #[arg(long, value_enum, default_value_t = common::LoginArg::Password)]
        login: common::LoginArg,
        /// Instead of the bulk transfer: one byte echoed on a bidirectional stream;
        /// reports handshake and first-byte times from the start of this process.
        #[arg(long)]
        first_byte: bool,
        /// Speak QUIC v1 + TLS 1.3 (ALPN quill: the same login and services).
        #[arg(long)]
        quic_v1: bool,
        /// The server is a reference peer (quinn-peer, quiche-peer): QUIC v1, its
        /// certificate checked against this CA, no login, the peers' bench protocol
        /// (ALPN quill-bench). Bulk runs only.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// N connections (C in flight), each handshake + login then close; prints JSON.
    Handshakes {
        /// Server address.
        addr: SocketAddr,
        /// Connections to open.
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// How each connection logs in.
        #[arg(long, value_enum, default_value_t = common::LoginArg::Password)]
        login: common::LoginArg,
        /// Speak QUIC v1 + TLS 1.3 (ALPN quill: the same login).
        #[arg(long)]
        quic_v1: bool,
        /// Send without UDP GSO (one datagram per send).
        #[arg(long)]
        no_gso: bool,
    },
    /// N idle logged-in connections with keep-alives; prints `ready N`, holds them,
    /// then prints JSON.
    Idle {
        /// Server address.
        addr: SocketAddr,
        /// Connections to hold.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Handshakes in flight while connecting.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds to hold the connections once all are logged in.
        #[arg(long, default_value_t = 5)]
        hold_secs: u64,
        /// Give up connecting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Keep-alive interval in milliseconds (at most 14999: the idle timeout is 30 s).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..15_000))]
        keep_alive_ms: u64,
        /// After `ready N`, wait for a line on stdin before holding.
        #[arg(long)]
        wait_go: bool,
        /// Send without UDP GSO (one datagram per send).
        #[arg(long)]
        no_gso: bool,
    },
    /// quill side by side with quinn, quiche, TCP and TCP + TLS (issue 8): bulk
    /// goodput / CPU / memory with per-round ratios, handshake latency and rate, idle
    /// memory, many idle sessions. quinn/quiche need `cargo build --release -p
    /// quill-interop --bins`.
    Compare(compare::Options),
    /// TCP (or TCP + TLS 1.3 with `--cert-dir`) sink for `compare`; prints
    /// `listening ADDR`, exits when stdin closes.
    TcpServer {
        /// Address to bind (loopback only).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve TLS with a self-signed certificate kept in this directory.
        #[arg(long)]
        cert_dir: Option<std::path::PathBuf>,
    },
    /// One TCP (or TLS) connection sending N bytes; prints a JSON line.
    TcpClient {
        /// Server address.
        addr: SocketAddr,
        /// Bytes to send.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Use TLS 1.3 (rustls, ring, AES-256-GCM); needs `--ca`.
        #[arg(long, requires = "ca")]
        tls: bool,
        /// The server's certificate (PEM, or DER if the name ends in .der).
        #[arg(long, requires = "tls")]
        ca: Option<std::path::PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Run every measurement with server and clients as separate processes.
    Loopback(loopback::Plan),
}

fn main() -> ExitCode {
    common::mark_process_start();
    let result = match Cli::parse().command {
        Command::Server {
            listen,
            workers,
            loops: Some(loops),
            ignore_stdin,
            accounts,
            keep_alive_ms,
            cert_dir,
        } => server::Setup::new(
            accounts.as_deref(),
            keep_alive_ms.map(std::time::Duration::from_millis),
            cert_dir.as_deref(),
        )
        .and_then(|setup| server_loops::run(listen, loops, workers, ignore_stdin, setup)),
        Command::Server {
            listen,
            workers,
            loops: None,
            ignore_stdin,
            accounts,
            keep_alive_ms,
            cert_dir,
        } => server::run(
            listen,
            workers,
            ignore_stdin,
            accounts.as_deref(),
            keep_alive_ms.map(std::time::Duration::from_millis),
            cert_dir.as_deref(),
        ),
        Command::Client {
            addr,
            bytes,
            suite,
            login,
            first_byte,
            quic_v1,
            ca,
            timeout_secs,
        } => {
            let timeout = Duration::from_secs(timeout_secs);
            let wire = common::Wire::from_args(quic_v1, ca);
            if first_byte {
                clients::first_byte(addr, suite, login, &wire, timeout)
            } else {
                clients::bulk(addr, bytes, suite, login, &wire, timeout)
            }
        }
        Command::Handshakes {
            addr,
            count,
            concurrency,
            timeout_secs,
            login,
            quic_v1,
            no_gso,
        } => {
            clients::set_gso(!no_gso);
            clients::handshakes(
                addr,
                count,
                concurrency,
                Duration::from_secs(timeout_secs),
                login,
                &common::Wire::from_args(quic_v1, None),
            )
        }
        Command::Idle {
            addr,
            count,
            concurrency,
            hold_secs,
            timeout_secs,
            keep_alive_ms,
            wait_go,
            no_gso,
        } => {
            clients::set_gso(!no_gso);
            clients::idle(
                addr,
                &clients::IdleOptions {
                    count,
                    concurrency,
                    hold: Duration::from_secs(hold_secs),
                    timeout: Duration::from_secs(timeout_secs),
                    keep_alive: Duration::from_millis(keep_alive_ms),
                    wait_go,
                },
            )
        }
        Command::Compare(o) => compare::run(&o),
        Command::TcpServer { listen, cert_dir } => tcp::server(listen, cert_dir),
        Command::TcpClient {
            addr,
            bytes,
            tls: _,
            ca,
            timeout_secs,
        } => tcp::client(addr, bytes, ca, Duration::from_secs(timeout_secs)),
        Command::Loopback(plan) => loopback::run(&plan),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quill-bench: {e}");
            ExitCode::FAILURE
        }
    }
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
    fn parses_the_loopback_defaults() {
        let cli = Cli::try_parse_from(["quill-bench", "loopback", "--json"]).unwrap();
        match cli.command {
            Command::Loopback(p) => {
                assert_eq!(
                    (p.bytes, p.rounds, p.json, p.idle),
                    (1 << 30, 3, true, 10_000)
                );
            }
            _ => panic!("wrong subcommand"),
        }
    }

    #[test]
    fn parses_compare_sessions_sizes() {
        let parse = |args: &[&str]| {
            let mut all = vec!["quill-bench", "compare", "--what", "sessions"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| match c.command {
                Command::Compare(o) => o,
                _ => panic!("wrong subcommand"),
            })
        };
        let o = parse(&["--sessions-sizes", "1000,10000,100000"]).unwrap();
        assert_eq!(o.sessions_sizes, [1000, 10_000, 100_000]);
        // Without it, the one size is --sessions.
        let o = parse(&["--sessions", "5000"]).unwrap();
        assert!(o.sessions_sizes.is_empty());
        assert_eq!(o.sessions, 5000);
        for bad in ["0", "1000,x", "-5", "1000,,10"] {
            assert!(parse(&["--sessions-sizes", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_compare_stacks_and_measurements() {
        let cli = Cli::try_parse_from([
            "quill-bench",
            "compare",
            "--rounds",
            "2",
            "--stacks",
            "quill,tcp-tls",
            "--what",
            "bulk,sessions",
            "--json",
        ])
        .unwrap();
        match cli.command {
            Command::Compare(o) => {
                assert_eq!(
                    (o.plan.rounds, o.plan.bytes, o.plan.json, o.sessions),
                    (2, 1 << 30, true, 100_000)
                );
                assert_eq!(o.stacks, [compare::Stack::Quill, compare::Stack::TcpTls]);
                assert_eq!(o.what, [compare::What::Bulk, compare::What::Sessions]);
            }
            _ => panic!("wrong subcommand"),
        }
        let cli = Cli::try_parse_from(["quill-bench", "compare"]).unwrap();
        match cli.command {
            Command::Compare(o) => {
                assert_eq!(o.stacks, [compare::Stack::All]);
                assert_eq!(o.what, [compare::What::All]);
            }
            _ => panic!("wrong subcommand"),
        }
    }

    #[test]
    fn parses_the_compare_workers_cell() {
        let cli = Cli::try_parse_from([
            "quill-bench",
            "compare",
            "--what",
            "workers",
            "--server-workers",
            "1,2,4",
            "--bulk-connections",
            "4",
            "--spread-connections",
            "500",
        ])
        .unwrap();
        match cli.command {
            Command::Compare(o) => {
                assert_eq!(o.what, [compare::What::Workers]);
                assert_eq!(o.server_workers, [1, 2, 4]);
                assert_eq!((o.bulk_connections, o.spread_connections), (4, 500));
            }
            _ => panic!("wrong subcommand"),
        }
        let cli = Cli::try_parse_from(["quill-bench", "compare", "--what", "workers"]).unwrap();
        match cli.command {
            Command::Compare(o) => {
                assert_eq!(o.server_workers, [1, 2]);
                assert_eq!((o.bulk_connections, o.spread_connections), (8, 10_000));
            }
            _ => panic!("wrong subcommand"),
        }
        let cli = Cli::try_parse_from(["quill-bench", "server", "--loops", "2"]).unwrap();
        match cli.command {
            Command::Server { loops, workers, .. } => assert_eq!((loops, workers), (Some(2), 1)),
            _ => panic!("wrong subcommand"),
        }
        for args in [
            &["quill-bench", "compare", "--server-workers", "0"][..],
            &["quill-bench", "compare", "--server-workers", "1,257"],
            &["quill-bench", "compare", "--server-workers", "one"],
            &["quill-bench", "compare", "--bulk-connections", "0"],
            &["quill-bench", "compare", "--spread-connections", "-1"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn rejects_bad_compare_and_tcp_arguments() {
        for args in [
            &["quill-bench", "compare", "--stacks", "msquic"][..],
            &["quill-bench", "compare", "--what", "everything"],
            &["quill-bench", "compare", "--keep-alive-ms", "15000"],
            &["quill-bench", "tcp-client", "127.0.0.1:1", "--tls"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn rejects_an_unknown_suite() {
        assert!(
            Cli::try_parse_from(["quill-bench", "client", "127.0.0.1:1", "--suite", "rc4"])
                .is_err()
        );
    }
}
