//! The `quill` command-line program: keys, a server, accounts, and clients (connect,
//! file transfer, ping, perf), plus `quill demo`, a whole session on loopback.

mod admin;
mod args;
mod client;
mod config;
mod demo;
mod docs;
mod exit;
mod files;
mod interrupt;
mod keygen;
mod logging;
mod output;
mod perf;
mod ping;
mod qlog;
mod secret;
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
    // The server logs its connection events at `info`; clients stay quiet unless asked.
    // Its configuration file may set `log-format` and `log-level` (the command line
    // and RUST_LOG win); read it before the logger exists.
    let (default_level, configured) = match &cli.command {
        Command::Server(a) => match server::log_settings(a) {
            Ok(c) => (tracing::Level::INFO, c),
            Err(e) => {
                output::note!("quill: {e}");
                std::process::exit(e.code);
            }
        },
        _ => (tracing::Level::WARN, Default::default()),
    };
    let choice = logging::LevelChoice {
        default: default_level,
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    let format = cli.log_format.or(configured.format).unwrap_or_default();
    let logs = logging::init(choice, configured.level.as_deref(), format);
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
        Command::Server(a) => server::run(a, logs),
        Command::User(a) => admin::run(a),
        Command::Register(a) => client::register(a),
        Command::Connect(a) => client::connect(a),
        Command::Send(a) => transfer::send(a),
        Command::Get(a) => transfer::get(a),
        Command::Ping(a) => ping::run(a),
        Command::Perf(a) => perf::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Fingerprint(a) => keygen::fingerprint(a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
        Command::Ls(a) => files::ls(a),
        Command::Mkdir(a) => files::mkdir(a),
        Command::Rm(a) => files::rm(a),
    };
    qlog::finish();
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
