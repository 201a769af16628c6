//! `quill completions SHELL` and `quill man`: shell completion scripts and manual pages
//! generated from the clap definitions in `args.rs`, so they always list the options
//! the program has.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::{Cli, CompletionShell, CompletionsArgs, ManArgs};
use crate::exit::{CliError, CliResult};

/// Writes the completion script for the shell to standard output.
pub fn completions(args: &CompletionsArgs) -> CliResult {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "quill", &mut script);
    crate::output::out_bytes(&script)
}

/// Writes `quill.1` to standard output, or every page (`quill.1`, `quill-server.1`,
/// ...) into `--dir`.
pub fn man(args: &ManArgs) -> CliResult {
    let cmd = Cli::command();
    if let Some(dir) = &args.dir {
        return clap_mangen::generate_to(cmd, dir).map_err(|e| {
            CliError::usage(format!(
                "cannot write manual pages into {}: {e}; give an existing, writable directory",
                dir.display()
            ))
        });
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| CliError::connection(format!("cannot render the manual page: {e}")))?;
    crate::output::out_bytes(&page)
}
