//! Exit codes (documented in README.md) and the one-line error every failure prints.

use std::fmt;

/// Success.
pub const OK: i32 = 0;
/// Bad command line, bad file, bad configuration.
pub const USAGE: i32 = 2;
/// Could not connect, timed out, connection lost, version mismatch, I/O failure.
pub const CONNECTION: i32 = 3;
/// The server refused the login.
pub const LOGIN_REFUSED: i32 = 4;
/// The server's host key is not the expected one (or unknown in strict mode).
pub const HOST_KEY: i32 = 5;
/// A transfer's SHA-256 did not match.
pub const INTEGRITY: i32 = 6;
// Ctrl-C exits with 128 + SIGINT = 130 and SIGTERM with 143 (`interrupt.rs`), what a
// shell reports for a program those signals killed.

/// Standard output is a pipe nobody reads any more: 128 + SIGPIPE, quietly.
pub const CLOSED_PIPE: i32 = 128 + libc::SIGPIPE;

/// A failure: what happened and what to do, in one line, with its exit code.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// The line printed on stderr (after "quill: "); empty for none.
    pub message: String,
}

impl CliError {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: USAGE,
            message: message.into(),
        }
    }
    /// A connection or I/O error.
    pub fn connection(message: impl Into<String>) -> Self {
        CliError {
            code: CONNECTION,
            message: message.into(),
        }
    }
    /// Standard output was closed under us (EPIPE): exit [`CLOSED_PIPE`] without a
    /// message, as a program killed by SIGPIPE would.
    pub fn closed_pipe() -> Self {
        CliError {
            code: CLOSED_PIPE,
            message: String::new(),
        }
    }
    /// An error with an explicit code.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<quill_transport::driver::blocking::ConnectError> for CliError {
    fn from(e: quill_transport::driver::blocking::ConnectError) -> Self {
        use quill_transport::driver::blocking::ConnectError;
        use quill_transport::ConnectionError as E;
        match e {
            // The generic refusal says nothing more (docs/SPEC.md §4.8); the others
            // (a limit, registration closed, a taken name, ...) say what to do.
            ConnectError::Connection(E::LoginRefused { reason })
                if reason == quill_transport::auth::REFUSED =>
            {
                CliError::new(
                    LOGIN_REFUSED,
                    format!("login refused: {reason} (check the user name and password or key)"),
                )
            }
            ConnectError::Connection(E::LoginRefused { reason }) => {
                CliError::new(LOGIN_REFUSED, format!("login refused: {reason}"))
            }
            ConnectError::Connection(E::HostKeyRejected {
                fingerprint,
                reason,
            }) => CliError::new(
                HOST_KEY,
                format!("server host key {fingerprint} rejected: {reason}"),
            ),
            ConnectError::Connection(e) => CliError::connection(format!("connection failed: {e}")),
            ConnectError::Config(e) => CliError::usage(format!("bad configuration: {e}")),
            ConnectError::Io(e) => CliError::connection(format!("network error: {e}")),
        }
    }
}

/// Result of a subcommand.
pub type CliResult = Result<(), CliError>;
