//! The `quill` command-line program. Subcommands arrive with the CLI issue.

fn main() {
    eprintln!("quill: no subcommands yet; the command-line program is being built (see README.md)");
    std::process::exit(2);
}
