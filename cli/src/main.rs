//! The `quill` command-line program: keys, a server, accounts, and clients (connect,
//! file transfer, ping, perf), plus `quill demo`, a whole session on loopback.

mod admin;
mod args;
mod client;
mod demo;
mod exit;
mod keygen;
mod perf;
mod ping;
mod server;
mod service;
mod transfer;

use clap::Parser;

use args::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; real usage errors exit with USAGE.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, 2) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
    let result = match &cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Server(a) => server::run(a),
        Command::User(a) => admin::run(a),
        Command::Register(a) => client::register(a),
        Command::Connect(a) => client::connect(a),
        Command::Send(a) => transfer::send(a),
        Command::Get(a) => transfer::get(a),
        Command::Ping(a) => ping::run(a),
        Command::Perf(a) => perf::run(a),
        Command::Demo(a) => demo::run(a),
    };
    if let Err(e) = result {
        eprintln!("quill: {e}");
        std::process::exit(e.code);
    }
}
