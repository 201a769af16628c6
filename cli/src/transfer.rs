//! `quill send LOCAL ADDR:REMOTE` and `quill get ADDR:REMOTE LOCAL`: file transfer over
//! the PUT/GET services (`service.rs`) with an end-to-end SHA-256 check.
//!
//! `get` writes `LOCAL.quill-partial` in the same directory, checks size and SHA-256,
//! syncs, and only then renames it to `LOCAL`; on any failure, and on Ctrl-C
//! (`interrupt.rs`), the partial file is removed, so a truncated file never appears
//! under the final name. `get ADDR:REMOTE -` writes the bytes to standard output as
//! they arrive (the exit status says whether the SHA-256 matched) and its summary line
//! to standard error.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use quill_transport::driver::blocking::BlockingStream;

use crate::args::{GetArgs, SendArgs};
use crate::client::{
    net_err, open_request, open_target, parse_remote, read_chunks, read_line, Session, Target,
};
use crate::exit::{CliError, CliResult, CONNECTION, INTEGRITY, USAGE};
use crate::files;
use crate::interrupt;
use crate::output::{note, out_bytes, say};
use quill_transport::service::{self, hex, Answer, Request};

const CHUNK: usize = 64 * 1024;

/// A one-line message for a local file error: what happened and what to do.
pub fn local_err(action: &str, path: &Path, e: &io::Error) -> CliError {
    let p = path.display();
    let msg = if e.raw_os_error() == Some(libc::ENOSPC) {
        format!("disk full while {action} {p}: free some space and try again")
    } else {
        match e.kind() {
            io::ErrorKind::NotFound => {
                format!("{p} does not exist: check the path ({action})")
            }
            io::ErrorKind::PermissionDenied => {
                format!(
                    "permission denied {action} {p}: check the file's and directory's permissions"
                )
            }
            io::ErrorKind::IsADirectory => format!("{p} is a directory, not a file"),
            _ => format!("error {action} {p}: {e}"),
        }
    };
    CliError::new(USAGE, msg)
}

/// Progress display: a bar on a terminal, one summary line otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
}

impl Progress {
    /// Starts a display for `total` bytes.
    pub fn new(total: u64, label: &str) -> Progress {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            start: Instant::now(),
        }
    }

    /// `n` more bytes moved.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Elapsed time; clears the bar.
    pub fn finish(self) -> Duration {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
        self.start.elapsed()
    }
}

/// `1048576 bytes in 0.25 s (4.19 MB/s)`.
pub fn rate_line(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!(
        "{bytes} bytes in {:.2} s ({:.2} MB/s)",
        secs,
        bytes as f64 / secs / 1e6
    )
}

/// SHA-256 and size of a file.
fn hash_file(path: &Path) -> Result<(u64, String), CliError> {
    let (_, size, sha) = service::hash_file(path).map_err(|e| local_err("reading", path, &e))?;
    Ok((size, sha))
}

/// A server's `ERR <message>` line (or anything unexpected) as an exit-3 error.
pub fn server_refused(line: &str) -> CliError {
    match line.strip_prefix("ERR") {
        // A server older than this client (docs/SPEC.md §10).
        Some(msg) if msg.contains("unknown request") || msg.contains("PUT needs a size") => {
            CliError::connection(format!(
                "the server is older than this client and cannot do this ({}); upgrade it",
                msg.trim()
            ))
        }
        Some(msg) => CliError::connection(format!("the server refused: {}", msg.trim())),
        None => CliError::connection(format!(
            "unexpected answer from the server: '{}'",
            line.chars().take(80).collect::<String>()
        )),
    }
}

/// After a failed write: the server's answer if it sent one (a refusal, which ends the
/// upload early), else `err`.
pub fn answer_or(stream: &mut BlockingStream, err: CliError) -> CliError {
    match read_line(stream) {
        Ok(line) => server_refused(&line),
        Err(_) => err,
    }
}

/// The remote of a transfer, and a check that the local side is not a directory
/// (`hint` says what to give instead).
fn remote_and_file(remote: &str, local: &Path, hint: &str) -> Result<(Target, String), CliError> {
    let parsed = parse_remote(remote)?;
    if local.is_dir() {
        return Err(CliError::usage(format!(
            "{} is a directory; {hint}",
            local.display()
        )));
    }
    Ok(parsed)
}

/// `quill send LOCAL ADDR:REMOTE`; `-r` for a directory (`files.rs`), and standard
/// input (`-`) or a pipe (`<(...)`) streamed with unknown length.
pub fn send(a: &SendArgs) -> CliResult {
    if a.recursive {
        return files::send_tree(a);
    }
    if files::is_stream(&a.local) {
        return files::send_stream(a);
    }
    let (target, remote) = remote_and_file(&a.remote, &a.local, "add -r to send a directory")?;
    let session = open_target(target, &a.login, None)?;
    let (size, sha, elapsed) = put_file(&session, &a.local, &remote)?;
    say!(
        "sent {} to {}:{}: {}, SHA-256 {sha} verified by the server",
        a.local.display(),
        session.target.display(),
        remote,
        rate_line(size, elapsed)
    )?;
    session.conn.close(0, "done");
    Ok(())
}

/// Uploads the regular file `local` as `remote` on a stream of `session`: its size
/// and SHA-256, the time it took.
pub fn put_file(
    session: &Session,
    local: &Path,
    remote: &str,
) -> Result<(u64, String, Duration), CliError> {
    let (size, sha) = hash_file(local)?;
    let mut file = File::open(local).map_err(|e| local_err("reading", local, &e))?;
    let req = Request::Put {
        size,
        sha256: sha.clone(),
        path: remote.to_owned(),
    };
    let mut stream = start_upload(session, &req)?;
    let progress = Progress::new(size, "send");
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < size {
        let n = file
            .read(&mut buf)
            .map_err(|e| local_err("reading", local, &e))?;
        if n == 0 {
            break;
        }
        if let Err(e) = stream.write_all(&buf[..n]) {
            progress.finish();
            return Err(answer_or(
                &mut stream,
                net_err("sending the file failed", e),
            ));
        }
        sent += n as u64;
        progress.inc(n as u64);
    }
    if let Err(e) = stream.finish() {
        progress.finish();
        return Err(answer_or(
            &mut stream,
            net_err("sending the file failed", e),
        ));
    }
    let answer = read_line(&mut stream).map_err(|e| net_err("waiting for the server", e))?;
    let elapsed = progress.finish();
    if answer != "OK" {
        return Err(server_refused(&answer));
    }
    if sent != size {
        return Err(CliError::new(
            INTEGRITY,
            format!(
                "{} changed while it was sent ({sent} of {size} bytes); send it again",
                local.display()
            ),
        ));
    }
    Ok((size, sha, elapsed))
}

/// Opens a stream for an upload and sends its request line. The server answers before
/// the end only to refuse, and then stops reading the stream (docs/SPEC.md §10): a
/// write fails at once, and the answer says why.
pub fn start_upload(session: &Session, req: &Request) -> Result<BlockingStream, CliError> {
    let mut stream = session
        .conn
        .open_bi()
        .map_err(|e| net_err("cannot open a stream", e))?;
    stream.fail_writes_on_answer();
    if let Err(e) = stream.write_all(req.line().as_bytes()) {
        return Err(answer_or(
            &mut stream,
            net_err("sending the request failed", e),
        ));
    }
    Ok(stream)
}

/// `LOCAL.quill-partial`, in the same directory as `LOCAL`.
pub fn partial_path(local: &Path) -> PathBuf {
    let mut name = local
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".quill-partial");
    local.with_file_name(name)
}

/// Removes the partial file unless the transfer was committed.
struct PartialGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for PartialGuard {
    fn drop(&mut self) {
        if !self.keep {
            interrupt::discard(&self.path);
        }
    }
}

/// Where `get` puts the bytes: a partial file renamed when complete, or stdout (`-`).
enum Sink {
    File {
        file: File,
        partial: PathBuf,
        guard: PartialGuard,
    },
    Stdout,
}

impl Sink {
    fn write(&mut self, data: &[u8]) -> Result<(), CliError> {
        match self {
            Sink::File { file, partial, .. } => file
                .write_all(data)
                .map_err(|e| local_err("writing", partial, &e)),
            Sink::Stdout => out_bytes(data),
        }
    }

    /// Syncs and renames the partial file to `local`.
    fn commit(self, local: &Path) -> Result<(), CliError> {
        let Sink::File {
            file,
            partial,
            mut guard,
        } = self
        else {
            return Ok(());
        };
        file.sync_all()
            .map_err(|e| local_err("writing", &partial, &e))?;
        drop(file);
        interrupt::commit(&partial, local).map_err(|e| local_err("renaming to", local, &e))?;
        guard.keep = true;
        Ok(())
    }
}

/// Parses `OK <size> <sha256-hex>`.
fn parse_get_answer(line: &str) -> Result<(u64, String), CliError> {
    match Answer::parse(line) {
        Some(Answer::File { size, sha256 }) => Ok((size, sha256)),
        _ => Err(server_refused(line)),
    }
}

/// `quill get ADDR:REMOTE LOCAL`; `-r` for a directory (`files.rs`).
pub fn get(a: &GetArgs) -> CliResult {
    if a.recursive {
        return files::get_tree(a);
    }
    let (target, remote) = remote_and_file(
        &a.remote,
        &a.local,
        "give the file name to write, or add -r",
    )?;
    let to_stdout = a.local.as_os_str() == "-";
    let session = open_target(target, &a.login, None)?;
    let (size, sha, elapsed) = fetch(&session, &remote, &a.local)?;
    let summary = format!(
        "got {}:{} into {}: {}, SHA-256 {sha} verified",
        session.target.display(),
        remote,
        if to_stdout {
            "standard output".into()
        } else {
            a.local.display().to_string()
        },
        rate_line(size, elapsed)
    );
    if to_stdout {
        note!("quill: {summary}");
    } else {
        say!("{summary}")?;
    }
    session.conn.close(0, "done");
    Ok(())
}

/// Downloads `remote` on a stream of `session` into `local` (`-`: standard output)
/// through a partial file renamed once verified: its size and SHA-256, the time it
/// took.
pub fn fetch(
    session: &Session,
    remote: &str,
    local: &Path,
) -> Result<(u64, String, Duration), CliError> {
    let to_stdout = local.as_os_str() == "-";
    let get = Request::Get {
        path: remote.to_owned(),
    };
    let mut stream = open_request(&session.conn, &get)?;
    stream
        .finish()
        .map_err(|e| net_err("sending the request failed", e))?;
    let answer = read_line(&mut stream).map_err(|e| net_err("waiting for the server", e))?;
    let (size, sha) = parse_get_answer(&answer)?;
    let mut sink = if to_stdout {
        Sink::Stdout
    } else {
        let partial = partial_path(local);
        let file =
            interrupt::create_partial(&partial).map_err(|e| local_err("creating", &partial, &e))?;
        Sink::File {
            file,
            guard: PartialGuard {
                path: partial.clone(),
                keep: false,
            },
            partial,
        }
    };
    let progress = Progress::new(size, "get");
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0u64;
    read_chunks(&mut stream, "receiving the file failed", |chunk| {
        got += chunk.len() as u64;
        if got > size {
            return Err(CliError::new(
                INTEGRITY,
                format!("the server sent more than the announced {size} bytes; try again"),
            ));
        }
        ctx.update(chunk);
        sink.write(chunk)?;
        progress.inc(chunk.len() as u64);
        Ok(())
    })?;
    let elapsed = progress.finish();
    if got < size {
        return Err(CliError::new(
            CONNECTION,
            format!("the transfer ended early ({got} of {size} bytes); try again"),
        ));
    }
    let digest = hex(ctx.finish().as_ref());
    if digest != sha {
        return Err(CliError::new(
            INTEGRITY,
            format!(
                "SHA-256 mismatch: the server announced {sha}, received {digest}; {}",
                if to_stdout {
                    "what went to standard output is damaged, try again"
                } else {
                    "nothing was written, try again"
                }
            ),
        ));
    }
    sink.commit(local)?;
    Ok((size, sha, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_is_beside_the_target() {
        assert_eq!(
            partial_path(Path::new("/tmp/x/copy.txt")),
            PathBuf::from("/tmp/x/copy.txt.quill-partial")
        );
        assert_eq!(
            partial_path(Path::new("copy")),
            PathBuf::from("copy.quill-partial")
        );
    }

    #[test]
    fn get_answers() {
        let sha = "ab".repeat(32);
        assert_eq!(
            parse_get_answer(&format!("OK 12 {sha}")).unwrap(),
            (12, sha.clone())
        );
        let e = parse_get_answer("ERR no such file").unwrap_err();
        assert_eq!(e.code, CONNECTION);
        assert!(e.message.contains("no such file"), "{}", e.message);
        assert!(parse_get_answer("OK x y").is_err());
        assert!(parse_get_answer(&format!("OK 1 {sha} extra")).is_err());
    }

    #[test]
    fn local_errors_say_what_happened() {
        let e = local_err(
            "writing",
            Path::new("f"),
            &io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(e.message.contains("disk full"), "{}", e.message);
        let e = local_err("reading", Path::new("f"), &io::ErrorKind::NotFound.into());
        assert!(e.message.contains("does not exist"), "{}", e.message);
        let e = local_err(
            "reading",
            Path::new("f"),
            &io::ErrorKind::PermissionDenied.into(),
        );
        assert!(e.message.contains("permission denied"), "{}", e.message);
    }

    #[test]
    fn partial_guard_removes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.quill-partial");
        std::fs::write(&p, b"half").unwrap();
        drop(PartialGuard {
            path: p.clone(),
            keep: false,
        });
        assert!(!p.exists());
        std::fs::write(&p, b"whole").unwrap();
        drop(PartialGuard {
            path: p.clone(),
            keep: true,
        });
        assert!(p.exists());
    }
}
