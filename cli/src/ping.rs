//! `quill ping` (being written on a branch).
use crate::args::PingArgs;
use crate::exit::{CliError, CliResult};
pub fn run(_: &PingArgs) -> CliResult {
    Err(CliError::usage("ping is being built"))
}
