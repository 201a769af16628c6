//! `quill server` (being written on a branch).
use crate::args::ServerArgs;
use crate::exit::{CliError, CliResult};
pub fn run(_: &ServerArgs) -> CliResult {
    Err(CliError::usage("server is being built"))
}
