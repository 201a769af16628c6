//! Child processes that never outlive their caller: started with their pipes read on
//! threads, run to the end within a bound, or stopped with SIGTERM and SIGKILL when
//! late.
//!
//! Used by the runner and the reference-peer checks, and (through `#[path]`) by the
//! CLI's integration tests and `quill-bench`, which cannot depend on this crate: this
//! file uses only `std` and `libc`.

use std::io::{self, BufRead, BufReader, Read, Write};
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

/// A finished child process.
pub struct Ran {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its standard output (at most 16 MiB).
    pub stdout: String,
    /// Its standard error (at most 16 MiB).
    pub stderr: String,
}

/// Runs `cmd` with `stdin` as its input, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Result<Ran, String> {
    let name = cmd.get_program().to_string_lossy().to_string();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_or_kill(&mut child, limit);
    let stdout = out.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let stderr = err.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    match status {
        Some(s) => Ok(Ran {
            code: s.code(),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{name} did not finish within {} s (killed); stderr: {}",
            limit.as_secs(),
            stderr.trim()
        )),
    }
}

/// Reads a pipe to the end on a thread; the text arrives on the channel.
pub fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut p) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            // Bounded by the child's lifetime: the pipe closes when it exits or is killed.
            let _ = p.by_ref().take(16 << 20).read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    rx
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
