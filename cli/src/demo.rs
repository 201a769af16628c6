//! `quill demo` (being written on a branch).
use crate::args::DemoArgs;
use crate::exit::{CliError, CliResult};
pub fn run(_: &DemoArgs) -> CliResult {
    Err(CliError::usage("demo is being built"))
}
