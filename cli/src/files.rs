//! `quill ls`, `quill mkdir`, `quill rm`, and the forms of `send`/`get` beyond one
//! regular file: `-r` for a directory, and `send -` / `send <(...)` streaming standard
//! input or a pipe whose length nobody knows (docs/SPEC.md §10: LIST, MKDIR(S),
//! RM/RMTREE, `PUT * *`).
//!
//! Targets are parsed by the same parser as `send`/`get` ([`parse_remote`]). A
//! recursive copy moves at most [`MAX_ENTRIES`] entries, [`MAX_DEPTH`] directory
//! levels deep, over one connection; each file is a GET or PUT of its own, so each
//! lands whole (renamed into place once its SHA-256 matched) or not at all. Only
//! directories and regular files are copied: symbolic links and special files are
//! skipped with a note on standard error.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use quill_transport::service::space::Kind;
use quill_transport::service::{hex, Answer, ListEntry, Request};

use crate::args::{GetArgs, LoginArgs, LsArgs, MkdirArgs, RmArgs, SendArgs};
use quill_transport::driver::blocking::BlockingStream;

use crate::client::{net_err, open_target, parse_addr, parse_remote, read_line, Session, Target};
use crate::exit::{CliError, CliResult, INTEGRITY};
use crate::output::{note, say};
use crate::transfer::{
    answer_or, fetch, local_err, put_file, rate_line, server_refused, start_upload,
};

/// Deepest directory level `send -r` and `get -r` descend.
pub const MAX_DEPTH: usize = 32;
/// Most entries (files and directories) one `send -r` or `get -r` copies.
pub const MAX_ENTRIES: usize = 10_000;
/// Most entries one LIST answer may announce (the server's limit).
const MAX_LISTED: u64 = quill_transport::service::space::MAX_LIST_ENTRIES as u64;

/// `HOST:PATH` with the path's trailing `/` dropped (`dir/` is `dir`).
fn remote_path(s: &str) -> Result<(Target, String), CliError> {
    let (target, path) = parse_remote(s)?;
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(CliError::usage(format!(
            "'{}' names the top of your file space; name a path under it",
            s.escape_debug()
        )));
    }
    Ok((target, trimmed.to_owned()))
}

/// `HOST:[PATH]` for `ls`: `HOST`, `HOST:`, `HOST:PORT`, `HOST:PORT:` (and a path of
/// `.` or `/`) name the top of the space (`None`). A directory named by digits alone
/// needs the port: `HOST:PORT:123`.
fn remote_dir(s: &str) -> Result<(Target, Option<String>), CliError> {
    let after_host = match s.strip_prefix('[') {
        Some(r) => r.split_once(']').map_or("", |(_, a)| a),
        None => s.split_once(':').map_or("", |(_, a)| a),
    };
    let port_only = after_host
        .strip_prefix(if s.starts_with('[') { ":" } else { "" })
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let bare = !s.contains(':') || (s.starts_with('[') && s.ends_with(']')) || port_only;
    if bare {
        return Ok((parse_addr(s)?, None));
    }
    if let Some(host) = s.strip_suffix(':') {
        return Ok((parse_addr(host)?, None));
    }
    let (target, path) = parse_remote(s)?;
    let trimmed = path.trim_end_matches('/');
    let path = (!trimmed.is_empty() && trimmed != ".").then(|| trimmed.to_owned());
    Ok((target, path))
}

/// Sends `req` (which carries no data), and reads the one-line answer.
fn ask(session: &Session, req: &Request) -> Result<(BlockingStream, String), CliError> {
    let mut stream = session
        .conn
        .open_bi()
        .map_err(|e| net_err("cannot open a stream", e))?;
    // The line is far below any flow-control window, so these never wait for credit;
    // a refusal may still come (with STOP_SENDING) before our FIN: its line says why.
    let sent =
        io::Write::write_all(&mut stream, req.line().as_bytes()).and_then(|()| stream.finish());
    match read_line(&mut stream) {
        Ok(line) => Ok((stream, line)),
        Err(e) => Err(match sent {
            Err(e) => net_err("sending the request failed", e),
            Ok(()) => net_err("waiting for the server", e),
        }),
    }
}

/// A request answered by `OK` alone (MKDIR, RM).
fn simple(session: &Session, req: &Request) -> Result<(), CliError> {
    let (_, line) = ask(session, req)?;
    match Answer::parse(&line) {
        Some(Answer::Ok) => Ok(()),
        _ => Err(server_refused(&line)),
    }
}

/// LIST: the entries of `path` (`None`: the top of the space), sorted by name.
fn list(session: &Session, path: Option<&str>) -> Result<Vec<ListEntry>, CliError> {
    let req = Request::List {
        path: path.map(str::to_owned),
    };
    let (mut stream, line) = ask(session, &req)?;
    let n = match Answer::parse(&line) {
        Some(Answer::Count(n)) if n <= MAX_LISTED => n,
        Some(Answer::Count(n)) => {
            return Err(CliError::connection(format!(
                "the server announced {n} entries, more than the {MAX_LISTED} a listing holds"
            )))
        }
        _ => return Err(server_refused(&line)),
    };
    let mut entries = Vec::new();
    for _ in 0..n {
        let line = read_line(&mut stream).map_err(|e| net_err("reading the listing", e))?;
        let entry = ListEntry::parse(&line).ok_or_else(|| {
            CliError::connection(format!(
                "the server sent a bad listing line: '{}'",
                line.escape_debug()
                    .to_string()
                    .chars()
                    .take(80)
                    .collect::<String>()
            ))
        })?;
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// `quill ls HOST:[PATH]`: one line per entry, `TYPE SIZE MODIFIED NAME`, sorted by name.
pub fn ls(a: &LsArgs) -> CliResult {
    let (target, path) = remote_dir(&a.remote)?;
    let session = open_target(target, &a.login, None)?;
    let entries = list(&session, path.as_deref())?;
    for e in &entries {
        say!("{}", ls_line(e))?;
    }
    session.conn.close(0, "done");
    Ok(())
}

/// `dir          0  2026-12-03 09:12  photos/`.
fn ls_line(e: &ListEntry) -> String {
    let (kind, suffix) = match e.kind {
        Kind::File => ("file", ""),
        Kind::Dir => ("dir", "/"),
        Kind::Link => ("link", "@"),
        Kind::Other => ("other", ""),
    };
    // Before 1970 shows as 1970.
    let mtime = crate::admin::utc(u64::try_from(e.mtime).unwrap_or(0));
    format!("{kind:<5} {:>12}  {mtime}  {}{suffix}", e.size, e.name)
}

/// `quill mkdir [-p] HOST:PATH`.
pub fn mkdir(a: &MkdirArgs) -> CliResult {
    let parents = a.parents;
    one_request(&a.remote, &a.login, |path| Request::Mkdir { path, parents })
}

/// `quill rm [-r] HOST:PATH`.
pub fn rm(a: &RmArgs) -> CliResult {
    let recursive = a.recursive;
    one_request(&a.remote, &a.login, |path| Request::Remove {
        path,
        recursive,
    })
}

/// Connects and sends the one request `make` builds for the remote path.
fn one_request(remote: &str, login: &LoginArgs, make: impl FnOnce(String) -> Request) -> CliResult {
    let (target, path) = remote_path(remote)?;
    let session = open_target(target, login, None)?;
    simple(&session, &make(path))?;
    session.conn.close(0, "done");
    Ok(())
}

/// Whether `send` streams `local` with unknown length: `-` (standard input), or
/// anything that is not a regular file (a pipe from `<(...)`, a device), whose size
/// says nothing about what it will yield.
pub fn is_stream(local: &Path) -> bool {
    local.as_os_str() == "-" || std::fs::metadata(local).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// `quill send - HOST:PATH` or `quill send <(...) HOST:PATH`: `PUT * *`, the bytes
/// until end of input, then the server's `OK <size> <sha256>` checked against ours.
pub fn send_stream(a: &SendArgs) -> CliResult {
    let stdin = a.local.as_os_str() == "-";
    if stdin && a.login.password_stdin {
        return Err(CliError::usage(
            "`send -` reads the file from standard input, so the password cannot come from \
             there: use --password-file FILE or --identity KEY",
        ));
    }
    let (target, remote) = remote_path(&a.remote)?;
    let mut input: Box<dyn Read> = if stdin {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&a.local).map_err(|e| local_err("reading", &a.local, &e))?)
    };
    let shown = if stdin {
        "standard input".to_owned()
    } else {
        a.local.display().to_string()
    };
    let session = open_target(target, &a.login, None)?;
    let start = Instant::now();
    let req = Request::PutStream {
        path: remote.clone(),
    };
    let mut stream = start_upload(&session, &req)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(local_err("reading", &a.local, &e)),
        };
        if let Err(e) = io::Write::write_all(&mut stream, &buf[..n]) {
            return Err(answer_or(
                &mut stream,
                net_err("sending the data failed", e),
            ));
        }
        ctx.update(&buf[..n]);
        sent += n as u64;
    }
    if let Err(e) = stream.finish() {
        return Err(answer_or(
            &mut stream,
            net_err("sending the data failed", e),
        ));
    }
    let line = read_line(&mut stream).map_err(|e| net_err("waiting for the server", e))?;
    let sha = hex(ctx.finish().as_ref());
    match Answer::parse(&line) {
        Some(Answer::File { size, sha256 }) if size == sent && sha256 == sha => {}
        Some(Answer::File { size, sha256 }) => {
            return Err(CliError::new(
                INTEGRITY,
                format!(
                    "the server stored {size} bytes with SHA-256 {sha256}, but {sent} bytes \
                     with SHA-256 {sha} were sent; send it again"
                ),
            ))
        }
        _ => return Err(server_refused(&line)),
    }
    say!(
        "sent {shown} to {}:{remote}: {}, SHA-256 {sha} verified by the server",
        session.target.display(),
        rate_line(sent, start.elapsed())
    )?;
    session.conn.close(0, "done");
    Ok(())
}

/// A local directory walked for `send -r`: directories (parents first) and regular
/// files, as `/`-separated paths relative to the top.
struct LocalTree {
    dirs: Vec<String>,
    files: Vec<(PathBuf, String)>,
}

/// Walks `top` breadth-first within [`MAX_DEPTH`] and [`MAX_ENTRIES`]; names that a
/// remote path cannot carry (not UTF-8, control characters) are refused, links and
/// special files skipped with a note.
fn walk_local(top: &Path) -> Result<LocalTree, CliError> {
    let mut tree = LocalTree {
        dirs: Vec::new(),
        files: Vec::new(),
    };
    let mut queue = VecDeque::from([(top.to_path_buf(), String::new(), 0usize)]);
    let mut seen = 0usize;
    while let Some((dir, rel, depth)) = queue.pop_front() {
        let mut items = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| local_err("reading", &dir, &e))? {
            let item = item.map_err(|e| local_err("reading", &dir, &e))?;
            items.push(item);
        }
        items.sort_by_key(|i| i.file_name());
        for item in items {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(CliError::usage(format!(
                    "{} holds more than {MAX_ENTRIES} entries; send its subdirectories one by one",
                    top.display()
                )));
            }
            let path = item.path();
            let name = item
                .file_name()
                .into_string()
                .ok()
                .filter(|n| !n.chars().any(char::is_control))
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "{}: the name is not UTF-8 or holds a control character, which a \
                         remote path cannot carry; rename it",
                        path.display()
                    ))
                })?;
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = item
                .file_type()
                .map_err(|e| local_err("reading", &path, &e))?;
            if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(CliError::usage(format!(
                        "{} is more than {MAX_DEPTH} directories deep",
                        top.display()
                    )));
                }
                tree.dirs.push(child.clone());
                queue.push_back((path, child, depth + 1));
            } else if kind.is_file() {
                tree.files.push((path, child));
            } else {
                note!(
                    "quill: skipped {} (not a regular file or directory)",
                    path.display()
                );
            }
        }
    }
    Ok(tree)
}

/// `quill send -r DIR HOST:PATH`: PATH becomes a copy of DIR (created with its
/// parents; files already there are replaced).
pub fn send_tree(a: &SendArgs) -> CliResult {
    if a.local.as_os_str() == "-" || !a.local.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory; send a file without -r",
            a.local.display()
        )));
    }
    let (target, remote) = remote_path(&a.remote)?;
    let tree = walk_local(&a.local)?;
    let session = open_target(target, &a.login, None)?;
    let start = Instant::now();
    let mkdirs = |path: String| {
        simple(
            &session,
            &Request::Mkdir {
                path,
                parents: true,
            },
        )
    };
    mkdirs(remote.clone())?;
    for d in &tree.dirs {
        mkdirs(format!("{remote}/{d}"))?;
    }
    let mut bytes = 0;
    for (path, rel) in &tree.files {
        let (size, _, _) = put_file(&session, path, &format!("{remote}/{rel}"))?;
        bytes += size;
    }
    say!(
        "sent {} to {}:{remote}: {} files in {} directories, {}, each SHA-256 verified by the server",
        a.local.display(),
        session.target.display(),
        tree.files.len(),
        tree.dirs.len() + 1,
        rate_line(bytes, start.elapsed())
    )?;
    session.conn.close(0, "done");
    Ok(())
}

/// `quill get -r HOST:PATH DIR`: DIR becomes a copy of PATH (created if missing).
pub fn get_tree(a: &GetArgs) -> CliResult {
    if a.local.as_os_str() == "-" {
        return Err(CliError::usage(
            "a directory cannot go to standard output; give a local directory",
        ));
    }
    if a.local.exists() && !a.local.is_dir() {
        return Err(CliError::usage(format!(
            "{} exists and is not a directory",
            a.local.display()
        )));
    }
    let (target, remote) = remote_path(&a.remote)?;
    let session = open_target(target, &a.login, None)?;
    let start = Instant::now();
    let mut queue = VecDeque::from([(remote.clone(), a.local.clone(), 0usize)]);
    let (mut seen, mut files, mut dirs, mut bytes) = (0usize, 0usize, 0usize, 0u64);
    while let Some((rdir, ldir, depth)) = queue.pop_front() {
        let entries = list(&session, Some(&rdir))?;
        std::fs::create_dir_all(&ldir).map_err(|e| local_err("creating", &ldir, &e))?;
        dirs += 1;
        for e in entries {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(CliError::usage(format!(
                    "{remote} holds more than {MAX_ENTRIES} entries; get its subdirectories one by one"
                )));
            }
            // ListEntry::parse let through one plain component only: no `..`, no `/`.
            let (r, l) = (format!("{rdir}/{}", e.name), ldir.join(&e.name));
            match e.kind {
                Kind::Dir if depth + 1 > MAX_DEPTH => {
                    return Err(CliError::usage(format!(
                        "{remote} is more than {MAX_DEPTH} directories deep"
                    )))
                }
                Kind::Dir => queue.push_back((r, l, depth + 1)),
                Kind::File => {
                    let (size, _, _) = fetch(&session, &r, &l)?;
                    bytes += size;
                    files += 1;
                }
                Kind::Link | Kind::Other => {
                    note!("quill: skipped {r} (not a regular file or directory)")
                }
            }
        }
    }
    say!(
        "got {}:{remote} into {}: {files} files in {dirs} directories, {}, each SHA-256 verified",
        session.target.display(),
        a.local.display(),
        rate_line(bytes, start.elapsed())
    )?;
    session.conn.close(0, "done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_lines() {
        let e = ListEntry::parse("d 0 1796288645 photos").unwrap();
        assert_eq!(ls_line(&e), "dir              0  2026-12-03 09:04  photos/");
        let e = ListEntry::parse("f 12 -5 old").unwrap();
        assert_eq!(ls_line(&e), "file            12  1970-01-01 00:00  old");
    }

    #[test]
    fn ls_targets() {
        for (s, path) in [
            ("host", None),
            ("host:", None),
            ("host:4433:", None),
            ("[::1]", None),
            ("[::1]:4433:", None),
            ("host:.", None),
            ("host:a/b/", Some("a/b")),
            ("host:4433:a", Some("a")),
            ("host:4433", None),
            ("[::1]:4433", None),
            ("host:4433:123", Some("123")),
            ("host:a:b", Some("a:b")),
        ] {
            assert_eq!(remote_dir(s).unwrap().1.as_deref(), path, "{s}");
        }
        assert!(remote_dir("host:a\nb").is_err());
        assert!(remote_path("host:4433:/").is_err());
        assert_eq!(remote_path("host:d/").unwrap().1, "d");
    }
}
