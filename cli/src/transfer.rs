//! `quill send` and `quill get` (being written on a branch).
use crate::args::{GetArgs, SendArgs};
use crate::exit::{CliError, CliResult};
pub fn send(_: &SendArgs) -> CliResult {
    Err(CliError::usage("send is being built"))
}
pub fn get(_: &GetArgs) -> CliResult {
    Err(CliError::usage("get is being built"))
}
