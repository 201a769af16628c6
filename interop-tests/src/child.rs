//! Child processes that never outlive their caller: a bounded wait, SIGTERM, and
//! SIGKILL when late.
//!
//! Used by the runner and the reference-peer checks, and (through `#[path]`) by the
//! CLI's integration tests and `quill-bench`, which cannot depend on this crate: this
//! file uses only `std` and `libc`.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads the lines of a child's `pipe` on a thread, sending each on the channel. The
/// pipe is drained to its end even when nobody listens any more, so that the child
/// never blocks on a full pipe; the thread ends when the child closes it (exits).
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts `cmd` as a child driven through pipes: its standard input is a pipe (left in
/// the child: closing it is how servers are asked to stop) and its standard output is
/// read line by line ([`lines`]); `stderr` goes where the caller says.
pub fn spawn_piped(
    cmd: &mut Command,
    stderr: Stdio,
) -> io::Result<(Child, mpsc::Receiver<String>)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let lines = match child.stdout.take() {
        Some(out) => lines(out),
        None => mpsc::channel().1,
    };
    Ok((child, lines))
}

/// Waits at most `limit` for `child` to exit; `None` if it still runs (it is left
/// running) or cannot be waited for.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Kills and reaps `child`.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits at most `limit` for `child` to exit, then kills it.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let status = wait_for(child, limit);
    if status.is_none() {
        kill(child);
    }
    status
}

/// Sends SIGTERM and waits at most `limit` for `child` to exit; `None` if it still
/// runs (it is left running).
pub fn terminate(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    wait_for(child, limit)
}

/// SIGTERM, at most `limit` to exit, then SIGKILL.
pub fn stop(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let status = terminate(child, limit);
    if status.is_none() {
        kill(child);
    }
    status
}
