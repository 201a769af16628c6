//! `quill register` and `quill connect` (being written on a branch).
use crate::args::ClientArgs;
use crate::exit::{CliError, CliResult};
pub fn register(_: &ClientArgs) -> CliResult {
    Err(CliError::usage("register is being built"))
}
pub fn connect(_: &ClientArgs) -> CliResult {
    Err(CliError::usage("connect is being built"))
}
