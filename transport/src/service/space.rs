//! Per-account file spaces and the directory requests of the file service (LIST,
//! MKDIR, MKDIRS, RM, RMTREE; docs/SPEC.md §10).
//!
//! Each account sees `ROOT/<account>/` only ([`account_space`]), created mode 0700 on
//! its first request. Every path goes through the same guard as GET and PUT
//! ([`check_relative`]): the parent of the named entry is resolved (symbolic links
//! included) and must stay inside the space; the entry itself is never followed, so
//! `RM link` removes the link, not what it points to.
//!
//! Everything here touches the disk: the server runs it on its worker pool.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::files::{check_relative, is_temp_name};

/// Most entries one LIST answers with; a larger directory is refused (list a
/// subdirectory instead).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Most entries (files, directories, links) one RMTREE removes; a larger tree is
/// refused before anything is removed.
pub const MAX_REMOVE_ENTRIES: usize = 100_000;
/// Deepest directory level RMTREE descends; a deeper tree is refused before anything
/// is removed.
pub const MAX_TREE_DEPTH: usize = 64;

/// The kind of a listed entry, as LIST sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (`f`).
    File,
    /// A directory (`d`).
    Dir,
    /// A symbolic link (`l`), not followed.
    Link,
    /// Anything else: a pipe, socket or device (`o`).
    Other,
}

impl Kind {
    /// The letter on the wire.
    pub fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Link => 'l',
            Kind::Other => 'o',
        }
    }

    fn of(t: fs::FileType) -> Kind {
        if t.is_symlink() {
            Kind::Link
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// One line of a LIST answer: `<kind> <size> <mtime> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (of the link itself for a symbolic link).
    pub size: u64,
    /// Last modification, seconds since the Unix epoch (negative before it).
    pub mtime: i64,
    /// The name: one path component, UTF-8, no control character.
    pub name: String,
}

impl ListEntry {
    /// The line (with its `\n`).
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.kind.letter(),
            self.size,
            self.mtime,
            self.name
        )
    }

    /// Parses a line (without its `\n`). A name that is not one plain path component
    /// (`/`, `.`, `..`, control characters) is refused: a client writes these names
    /// to its disk.
    pub fn parse(line: &str) -> Option<ListEntry> {
        let mut p = line.splitn(4, ' ');
        let kind = match p.next()? {
            "f" => Kind::File,
            "d" => Kind::Dir,
            "l" => Kind::Link,
            "o" => Kind::Other,
            _ => return None,
        };
        let size = p.next()?.parse().ok()?;
        let mtime = p.next()?.parse().ok()?;
        let name = p.next()?;
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.chars().any(char::is_control)
        {
            return None;
        }
        Some(ListEntry {
            kind,
            size,
            mtime,
            name: name.to_owned(),
        })
    }
}

/// The canonical file space of `account` under the canonical `root`: `ROOT/<account>`,
/// created (mode 0700) if missing. Refused if the name is not one plain component or
/// the space is a symbolic link or not a directory.
pub fn account_space(root: &Path, account: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    if account.is_empty()
        || account.starts_with('.')
        || account.contains('/')
        || check_relative(account).is_err()
    {
        return Err(format!(
            "the account name {account:?} cannot name a file space"
        ));
    }
    let space = root.join(account);
    match fs::DirBuilder::new().mode(0o700).create(&space) {
        Ok(()) => tracing::info!("created the file space {}", space.display()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_message("your file space", &e)),
    }
    let meta = space
        .symlink_metadata()
        .map_err(|e| io_message("your file space", &e))?;
    if !meta.is_dir() {
        tracing::warn!(
            "{} is not a directory: account {account} has no file space",
            space.display()
        );
        return Err("your file space is not usable; ask the server's operator".into());
    }
    space
        .canonicalize()
        .map_err(|e| io_message("your file space", &e))
}

/// A clear message for a failed file operation on `what`: not found, permission,
/// exists, not empty, disk full, ...
pub fn io_message(what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            return format!("{what}: the server's disk is full")
        }
        Some(libc::ENOTEMPTY) => {
            return format!("{what} is a directory that is not empty (remove it with -r)")
        }
        Some(libc::ENOTDIR) => return format!("{what}: a part of the path is not a directory"),
        Some(libc::EISDIR) => return format!("{what} is a directory"),
        Some(libc::EROFS) => return format!("{what}: the server's file system is read-only"),
        Some(libc::ENAMETOOLONG) => return format!("{what}: the name is too long"),
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::NotFound => format!("{what}: no such file or directory"),
        io::ErrorKind::PermissionDenied => format!("{what}: permission denied on the server"),
        io::ErrorKind::AlreadyExists => format!("{what} already exists"),
        _ => format!("{what}: {e}"),
    }
}

/// The canonical parent of `rel`, which must stay in `space`, and that parent joined
/// with the last component, which is not resolved (it may not exist yet, or be a
/// link that is acted on itself).
pub(super) fn resolve_entry(space: &Path, rel: &str) -> Result<(PathBuf, PathBuf), String> {
    check_relative(rel)?;
    let joined = space.join(rel);
    let name = joined
        .file_name()
        .ok_or_else(|| format!("malformed path '{rel}'"))?
        .to_owned();
    let parent = joined
        .parent()
        .unwrap_or(space)
        .canonicalize()
        .map_err(|e| io_message(&format!("the directory of {rel}"), &e))?;
    if !parent.starts_with(space) {
        return Err(format!("{rel} leaves your file space"));
    }
    let entry = parent.join(name);
    Ok((parent, entry))
}

/// LIST: the entries of the directory `rel` (`None`: the space itself), sorted by
/// name; anything but a directory is refused. Names that are not UTF-8, hold control characters
/// or are uploads in progress are left out. Refused above [`MAX_LIST_ENTRIES`].
pub fn list(space: &Path, rel: Option<&str>) -> Result<Vec<ListEntry>, String> {
    let (shown, path) = match rel {
        None => ("/".to_owned(), space.to_path_buf()),
        Some(rel) => {
            check_relative(rel)?;
            let path = space
                .join(rel)
                .canonicalize()
                .map_err(|e| io_message(rel, &e))?;
            if !path.starts_with(space) {
                return Err(format!("{rel} leaves your file space"));
            }
            (rel.to_owned(), path)
        }
    };
    let meta = path.metadata().map_err(|e| io_message(&shown, &e))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let mut out = Vec::new();
    for item in fs::read_dir(&path).map_err(|e| io_message(&shown, &e))? {
        let item = item.map_err(|e| io_message(&shown, &e))?;
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if name.chars().any(char::is_control) || is_temp_name(&name) {
            continue;
        }
        if out.len() == MAX_LIST_ENTRIES {
            return Err(format!(
                "{shown} has more than {MAX_LIST_ENTRIES} entries; list a subdirectory"
            ));
        }
        // Gone since read_dir: leave it out.
        let Ok(meta) = item.metadata() else {
            continue;
        };
        out.push(entry(name, &meta, Kind::of(meta.file_type())));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn entry(name: String, meta: &fs::Metadata, kind: Kind) -> ListEntry {
    let mtime = match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    };
    ListEntry {
        kind,
        size: if kind == Kind::Dir { 0 } else { meta.len() },
        mtime,
        name,
    }
}

/// MKDIR (`parents` false: the parent must exist and `rel` must not) or MKDIRS
/// (`parents` true: missing parents are created, an existing directory is fine).
/// Directories are created mode 0700.
pub fn make_dir(space: &Path, rel: &str, parents: bool) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    check_relative(rel)?;
    if !parents {
        let (_, path) = resolve_entry(space, rel)?;
        return fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| io_message(rel, &e));
    }
    // One component at a time, each resolved again: a symbolic link on the way must
    // not lead out of the space.
    let mut done = String::new();
    for part in rel.split('/') {
        if !done.is_empty() {
            done.push('/');
        }
        done.push_str(part);
        let (_, path) = resolve_entry(space, &done)?;
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A link to a directory inside the space is fine; the next step resolves it.
                let target = path.canonicalize().map_err(|e| io_message(&done, &e))?;
                if !target.starts_with(space) {
                    return Err(format!("{done} leaves your file space"));
                }
                if !target.is_dir() {
                    return Err(format!("{done} exists and is not a directory"));
                }
            }
            Err(e) => return Err(io_message(&done, &e)),
        }
    }
    Ok(())
}

/// RM (`recursive` false: a file, a symbolic link or an empty directory) or RMTREE
/// (`recursive` true: a directory and everything in it, refused before anything is
/// removed when it holds more than [`MAX_REMOVE_ENTRIES`] entries or is deeper than
/// [`MAX_TREE_DEPTH`]). Symbolic links are removed, never followed.
pub fn remove(space: &Path, rel: &str, recursive: bool) -> Result<(), String> {
    let (_, path) = resolve_entry(space, rel)?;
    let meta = path.symlink_metadata().map_err(|e| io_message(rel, &e))?;
    if !meta.is_dir() {
        return fs::remove_file(&path).map_err(|e| io_message(rel, &e));
    }
    if !recursive {
        return fs::remove_dir(&path).map_err(|e| io_message(rel, &e));
    }
    count_tree(&path, rel)?;
    // std's remove_dir_all does not follow symbolic links, even when the tree changes
    // while it runs (it works with directory descriptors).
    fs::remove_dir_all(&path).map_err(|e| io_message(rel, &e))
}

/// Checks RMTREE's bounds: entries and depth of the tree at `dir`.
fn count_tree(dir: &Path, rel: &str) -> Result<(), String> {
    let mut seen = 0usize;
    let mut dirs = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = dirs.pop() {
        for item in fs::read_dir(&d).map_err(|e| io_message(rel, &e))? {
            let item = item.map_err(|e| io_message(rel, &e))?;
            seen += 1;
            if seen > MAX_REMOVE_ENTRIES {
                return Err(format!(
                    "{rel} holds more than {MAX_REMOVE_ENTRIES} entries; nothing was removed, \
                     remove its subdirectories first"
                ));
            }
            if item.file_type().is_ok_and(|t| t.is_dir()) {
                if depth + 1 >= MAX_TREE_DEPTH {
                    return Err(format!(
                        "{rel} is deeper than {MAX_TREE_DEPTH} levels; nothing was removed"
                    ));
                }
                dirs.push((item.path(), depth + 1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let d = std::env::temp_dir().join(format!("quill-space-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TempDir(d.canonicalize().unwrap())
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Asserts that `r` failed with `needle` in its message.
    #[track_caller]
    fn fails<T: std::fmt::Debug>(r: Result<T, String>, needle: &str) {
        let e = r.unwrap_err();
        assert!(e.contains(needle), "wanted '{needle}' in: {e}");
    }

    fn space() -> (TempDir, PathBuf) {
        let dir = TempDir::new();
        let space = account_space(dir.path(), "alice").unwrap();
        (dir, space)
    }

    #[test]
    fn spaces_are_private_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let root = dir.path().to_path_buf();
        let a = account_space(&root, "alice").unwrap();
        assert_eq!(a, root.join("alice"));
        let mode = fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(account_space(&root, "alice").unwrap(), a, "second use");
        for bad in ["", "..", ".", "a/b", ".hidden", "a\nb"] {
            assert!(account_space(&root, bad).is_err(), "{bad:?}");
        }
        // A space that is a link (to another space, say) is refused.
        std::os::unix::fs::symlink(&a, root.join("mallory")).unwrap();
        assert!(account_space(&root, "mallory").is_err());
    }

    #[test]
    fn list_is_sorted_and_skips_what_cannot_be_named() {
        let (_d, s) = space();
        fs::write(s.join("b.txt"), b"12345").unwrap();
        fs::create_dir(s.join("a")).unwrap();
        fs::write(s.join(".f.quill-1-2.tmp"), b"half").unwrap();
        fs::write(s.join("tab\there"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.join("c")).unwrap();
        let got = list(&s, None).unwrap();
        let names: Vec<_> = got.iter().map(|e| (e.kind, e.name.as_str())).collect();
        assert_eq!(
            names,
            [(Kind::Dir, "a"), (Kind::File, "b.txt"), (Kind::Link, "c")]
        );
        assert_eq!(got[1].size, 5);
        assert!(got[1].mtime > 1_600_000_000);
        fails(list(&s, Some("b.txt")), "not a directory");
        assert!(list(&s, Some("a")).unwrap().is_empty());
        fails(list(&s, Some("c")), "leaves");
        fails(list(&s, Some("missing")), "no such file");
        for e in &got {
            assert_eq!(ListEntry::parse(e.line().trim_end()), Some(e.clone()));
        }
        for bad in [
            "f 1 2 ../x",
            "f 1 2 a/b",
            "f 1 2 ..",
            "x 1 2 a",
            "f a 2 n",
            "f 1 2 ",
        ] {
            assert_eq!(ListEntry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn mkdir_and_remove_with_their_failures() {
        let (_d, s) = space();
        make_dir(&s, "x", false).unwrap();
        fails(make_dir(&s, "x", false), "already exists");
        fails(make_dir(&s, "p/q", false), "no such file");
        make_dir(&s, "p/q/r", true).unwrap();
        make_dir(&s, "p/q/r", true).unwrap();
        assert!(s.join("p/q/r").is_dir());
        fs::write(s.join("p/q/r/f"), b"x").unwrap();
        fails(make_dir(&s, "p/q/r/f/g", true), "not a directory");
        fails(remove(&s, "p", false), "not empty");
        remove(&s, "p", true).unwrap();
        assert!(!s.join("p").exists());
        fails(remove(&s, "p", false), "no such file");
        remove(&s, "x", false).unwrap();
        for bad in ["..", "../x", "/etc", "a/../../b"] {
            assert!(make_dir(&s, bad, true).is_err(), "{bad}");
            assert!(remove(&s, bad, true).is_err(), "{bad}");
        }
        let long = "a".repeat(crate::service::MAX_PATH_LEN + 1);
        fails(make_dir(&s, &long, false), "longer");
    }

    #[test]
    fn links_are_removed_not_followed_and_never_lead_out() {
        let (_d, s) = space();
        let outside = TempDir::new();
        fs::write(outside.path().join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), s.join("out")).unwrap();
        fails(make_dir(&s, "out/new", true), "leaves");
        fails(remove(&s, "out/keep", false), "leaves");
        fails(list(&s, Some("out")), "leaves");
        fs::create_dir(s.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), s.join("d/link")).unwrap();
        remove(&s, "d", true).unwrap();
        remove(&s, "out", false).unwrap();
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn big_trees_are_refused_whole() {
        let (_d, s) = space();
        let mut deep = String::from("t");
        for _ in 0..MAX_TREE_DEPTH {
            deep.push_str("/t");
        }
        make_dir(&s, &deep, true).unwrap();
        fails(remove(&s, "t", true), "deeper");
        assert!(s.join(&deep).is_dir(), "nothing removed");
    }

    #[test]
    fn disk_errors_read_clearly() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(io_message("f", &full).contains("disk is full"));
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert!(io_message("f", &denied).contains("permission denied"));
    }
}
