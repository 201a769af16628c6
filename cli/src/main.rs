//! The `quill` command-line program: keys, a server, accounts, and clients (connect,
//! file transfer, ping, perf), plus `quill demo`, a whole session on loopback.

mod admin;
mod args;
mod client;
mod demo;
mod exit;
mod files;
mod interrupt;
mod keygen;
mod output;
mod perf;
mod ping;
mod serve_files;
mod server;
mod transfer;

use clap::Parser;

use args::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; real usage errors exit with USAGE.
            let code = match e.print() {
                Err(p) if p.kind() == std::io::ErrorKind::BrokenPipe => exit::CLOSED_PIPE,
                _ if e.use_stderr() => exit::USAGE,
                _ => exit::OK,
            };
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
    // Client commands clean up after Ctrl-C (partial files, an application close);
    // the server has its own graceful shutdown, and the rest have nothing to undo.
    if matches!(
        cli.command,
        Command::Register(_)
            | Command::Connect(_)
            | Command::Send(_)
            | Command::Get(_)
            | Command::Ping(_)
            | Command::Perf(_)
            | Command::Demo(_)
            | Command::Ls(_)
            | Command::Mkdir(_)
            | Command::Rm(_)
    ) {
        interrupt::install();
    }
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
        Command::Ls(a) => files::ls(a),
        Command::Mkdir(a) => files::mkdir(a),
        Command::Rm(a) => files::rm(a),
    };
    match result {
        Ok(()) => interrupt::exit(exit::OK),
        Err(e) => {
            if !e.message.is_empty() {
                output::note!("quill: {e}");
            }
            interrupt::exit(e.code)
        }
    }
}
