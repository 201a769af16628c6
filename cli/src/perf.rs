//! `quill perf` (being written on a branch).
use crate::args::PerfArgs;
use crate::exit::{CliError, CliResult};
pub fn run(_: &PerfArgs) -> CliResult {
    Err(CliError::usage("perf is being built"))
}
