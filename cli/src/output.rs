//! Standard output and standard error without panics.
//!
//! Rust ignores SIGPIPE, so writing to a pipe whose reader has gone (`quill ping … |
//! head -1`) fails with EPIPE, and `println!` turns that failure into a panic. Every
//! line the program prints goes through [`out`] instead, which turns EPIPE into
//! [`CliError::closed_pipe`]: the command stops, closes its connection as usual, and
//! exits quietly with status 141 (128 + SIGPIPE, what a shell reports for a program
//! killed by SIGPIPE, as coreutils are). Messages on standard error go through [`err`],
//! which drops a write that fails: there is nowhere left to report it.

use std::fmt::Arguments;
use std::io::{self, Write};

use crate::exit::CliError;

/// Writes one line to standard output and flushes it, so that a closed pipe is noticed
/// at the line that hit it.
pub fn out(line: Arguments<'_>) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(line)
        .and_then(|_| stdout.write_all(b"\n"))
        .and_then(|_| stdout.flush())
        .map_err(stdout_err)
}

/// Writes raw bytes to standard output (file data, echoed data).
pub fn out_bytes(data: &[u8]) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(data)
        .and_then(|_| stdout.flush())
        .map_err(stdout_err)
}

/// A failed write to standard output: quiet exit 141 for a closed pipe, otherwise a
/// one-line error.
pub fn stdout_err(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::closed_pipe()
    } else {
        CliError::usage(format!("cannot write to standard output: {e}"))
    }
}

/// Writes one line to standard error; a failed write is dropped.
pub fn err(line: Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_fmt(line).and_then(|_| stderr.write_all(b"\n"));
}

/// `println!` that returns `Err(CliError)` instead of panicking (see [`out`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::out(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (see [`err`]).
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::err(format_args!($($arg)*))
    };
}

pub(crate) use {note, say};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::CLOSED_PIPE;

    #[test]
    fn broken_pipe_is_a_quiet_141() {
        let e = stdout_err(io::ErrorKind::BrokenPipe.into());
        assert_eq!(e.code, CLOSED_PIPE);
        assert_eq!(CLOSED_PIPE, 128 + libc::SIGPIPE);
        assert!(e.message.is_empty());
        let e = stdout_err(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.code, crate::exit::USAGE);
        assert!(e.message.contains("standard output"), "{}", e.message);
    }
}
