//! `quill keygen` (being written on a branch).
use crate::args::KeygenArgs;
use crate::exit::{CliError, CliResult};
pub fn run(_: &KeygenArgs) -> CliResult {
    Err(CliError::usage("keygen is being built"))
}
