//! Ctrl-C (SIGINT) and SIGTERM on the client commands: leave nothing half-done behind.
//!
//! [`install`] blocks both signals in the calling thread before any other thread
//! exists (so every thread inherits the mask) and starts one thread that waits for them
//! with `sigwait` (the server's pattern, [`TerminationSignals`]). When one arrives, that
//! thread, holding the state lock so the main thread can neither commit a file nor exit
//! meanwhile:
//!
//! 1. removes every registered partial file (`get`'s `LOCAL.quill-partial`) and
//!    temporary directory (`demo`'s);
//! 2. closes the current connection with an application CONNECTION_CLOSE (code
//!    [`CLOSE_INTERRUPTED`], reason "interrupted"), waiting a bounded time for it to
//!    go out, so the server learns at once and drops an upload's temporary file;
//! 3. puts the terminal back as it was at [`install`] (a password prompt may have
//!    turned echo off);
//! 4. exits with 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.
//!
//! Files are created and committed (renamed into place) under the same lock
//! ([`create_partial`], [`commit`]), so a signal sees each file either registered or
//! finished, never in between. [`exit`] takes the lock too, so a main thread that fails
//! because the handler closed its connection waits for the handler's exit instead of
//! racing it with another status.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use quill_transport::driver::blocking::{BlockingConnection, ConnectionCloser};
use quill_transport::driver::TerminationSignals;

/// Application close code sent when the user interrupted the command (docs/SPEC.md §10).
pub const CLOSE_INTERRUPTED: u64 = 1;

/// How long the handler waits for the CONNECTION_CLOSE to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

struct State {
    /// The handler ran (or runs): the signal number.
    signal: Option<i32>,
    /// Partial files (and temporary directories) to remove.
    partial: Vec<PathBuf>,
    /// The connection to close.
    closer: Option<ConnectionCloser>,
    /// The controlling terminal (`/dev/tty`, where password prompts are) and its
    /// settings at [`install`], if there is one.
    termios: Option<(File, libc::termios)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    signal: None,
    partial: Vec::new(),
    closer: None,
    termios: None,
});

fn lock() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks SIGINT and SIGTERM and starts the handler thread. Call it first, before any
/// other thread is started; calling it again does nothing.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        lock().termios = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()
            .and_then(|tty| saved_termios(&tty).map(|t| (tty, t)));
        let signals = TerminationSignals::block();
        signals.on_signal(handle);
    });
}

fn saved_termios(tty: &File) -> Option<libc::termios> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcgetattr fills the zeroed struct we own; it fails harmlessly when
    // the descriptor is not a terminal.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(tty.as_raw_fd(), &mut t) == 0).then_some(t)
    }
}

fn handle(sig: i32) {
    let mut st = lock();
    st.signal = Some(sig);
    for path in st.partial.drain(..) {
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    if let Some(closer) = st.closer.take() {
        closer.close(CLOSE_INTERRUPTED, "interrupted", CLOSE_WAIT);
    }
    if let Some((tty, saved)) = &st.termios {
        // Only when something (a no-echo prompt) changed it: setting the terminal from
        // a background job would stop the process with SIGTTOU.
        if saved_termios(tty).is_some_and(|now| saved.c_lflag != now.c_lflag) {
            use std::os::fd::AsRawFd;
            // SAFETY: `saved` came from tcgetattr on the same descriptor.
            unsafe {
                libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, saved);
            }
        }
    }
    // On a terminal, off the line that ^C (or a progress bar) left behind.
    let fresh_line = if std::io::stderr().is_terminal() {
        "\n"
    } else {
        ""
    };
    crate::output::note!("{fresh_line}quill: interrupted");
    // Exits with the lock held: nothing else runs to completion after this point.
    std::process::exit(128 + sig);
}

/// Closes `conn` with [`CLOSE_INTERRUPTED`] if a signal arrives (replaces an earlier
/// connection).
pub fn watch(conn: &BlockingConnection) {
    lock().closer = Some(conn.closer());
}

/// Creates (truncating) `path` and registers it for removal on a signal.
pub fn create_partial(path: &Path) -> io::Result<File> {
    let mut st = lock();
    let file = File::create(path)?;
    st.partial.push(path.to_path_buf());
    Ok(file)
}

/// Registers a temporary directory (`quill demo`'s) for removal on a signal.
pub fn remove_on_signal(dir: &Path) {
    lock().partial.push(dir.to_path_buf());
}

/// Renames the partial file `from` to `to` and forgets it.
pub fn commit(from: &Path, to: &Path) -> io::Result<()> {
    let mut st = lock();
    std::fs::rename(from, to)?;
    st.partial.retain(|p| p != from);
    Ok(())
}

/// Removes the partial file `path` (a failed transfer) and forgets it.
pub fn discard(path: &Path) {
    let mut st = lock();
    st.partial.retain(|p| p != path);
    let _ = std::fs::remove_file(path);
}

/// Exits with `code`, or with the signal's status if the handler is running (in
/// which case this waits for the handler to exit the process).
pub fn exit(code: i32) -> ! {
    let st = lock();
    let code = st.signal.map_or(code, |sig| 128 + sig);
    crate::logging::finish();
    std::process::exit(code)
}
