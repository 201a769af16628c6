//! `quill user` (being written on a branch).
use crate::args::UserArgs;
use crate::exit::{CliError, CliResult};
pub fn run(_: &UserArgs) -> CliResult {
    Err(CliError::usage("user is being built"))
}
