//! `quill-bench`: loopback benchmarks with real processes and real UDP sockets.
//!
//! - `server`: a quill server (event loop + handler) that sinks unidirectional streams,
//!   echoes bidirectional ones and accepts the password `bench`;
//! - `client`, `handshakes`, `idle`: the clients of the three measurements;
//! - `loopback`: the orchestrator that runs server and clients as separate processes
//!   and measures CPU time and memory from the kernel's accounting.
//!
//! Everything runs on loopback addresses only; every wait has a timeout.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[path = "quill-bench/clients.rs"]
mod clients;
#[path = "quill-bench/common.rs"]
mod common;
#[path = "quill-bench/loopback.rs"]
mod loopback;
#[path = "quill-bench/procs.rs"]
mod procs;
#[path = "quill-bench/server.rs"]
mod server;
#[path = "quill-bench/stats.rs"]
mod stats;

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
        /// Worker threads for login verification.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Keep running when stdin closes (stop with SIGINT/SIGTERM).
        #[arg(long)]
        ignore_stdin: bool,
        /// Check logins against this SQLite account database (created if missing,
        /// with the benchmark user) instead of a plain comparison.
        #[arg(long)]
        accounts: Option<std::path::PathBuf>,
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
    },
    /// Run every measurement with server and clients as separate processes.
    Loopback {
        /// Bytes per bulk run.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Rounds; each runs AES-256-GCM then AES-128-GCM.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Handshakes to measure (0 skips).
        #[arg(long, default_value_t = 5000)]
        handshakes: usize,
        /// Handshakes in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Idle connections to measure memory with (0 skips).
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Server worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Server {
            listen,
            workers,
            ignore_stdin,
            accounts,
        } => server::run(listen, workers, ignore_stdin, accounts.as_deref()),
        Command::Client {
            addr,
            bytes,
            suite,
            timeout_secs,
        } => clients::bulk(addr, bytes, suite, Duration::from_secs(timeout_secs)),
        Command::Handshakes {
            addr,
            count,
            concurrency,
            timeout_secs,
            login,
        } => clients::handshakes(
            addr,
            count,
            concurrency,
            Duration::from_secs(timeout_secs),
            login,
        ),
        Command::Idle {
            addr,
            count,
            concurrency,
            hold_secs,
            timeout_secs,
        } => clients::idle(
            addr,
            count,
            concurrency,
            Duration::from_secs(hold_secs),
            Duration::from_secs(timeout_secs),
        ),
        Command::Loopback {
            bytes,
            rounds,
            handshakes,
            concurrency,
            idle,
            workers,
            json,
        } => loopback::run(&loopback::Plan {
            bytes,
            rounds,
            handshakes,
            concurrency,
            idle,
            workers,
            json,
        }),
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
            Command::Loopback {
                bytes,
                rounds,
                json,
                idle,
                ..
            } => {
                assert_eq!((bytes, rounds, json, idle), (1 << 30, 3, true, 10_000));
            }
            _ => panic!("wrong subcommand"),
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
