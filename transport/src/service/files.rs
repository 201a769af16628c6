//! The path guard, uploads through temporary files and the start-up sweep of the file
//! service (docs/SPEC.md §10).

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::space::resolve_entry;
use super::{hex, Answer};

/// Longest request path, in bytes (the request line is bounded too, by `MAX_LINE`).
pub const MAX_PATH_LEN: usize = 1024;

/// One file read or write.
pub const CHUNK: usize = 64 * 1024;

/// Checks a request path's form: at most [`MAX_PATH_LEN`] bytes, relative,
/// `/`-separated, no empty, `.` or `..` part, no control character, no name reserved for
/// the server's temporary files.
pub fn check_relative(rel: &str) -> Result<(), String> {
    if rel.len() > MAX_PATH_LEN {
        return Err(format!("the path is longer than {MAX_PATH_LEN} bytes"));
    }
    if rel.starts_with('/') {
        return Err("absolute paths are refused; give a path under the server's root".into());
    }
    if has_control_chars(rel) {
        return Err("control characters (newline, tab, NUL, ...) are refused in paths".into());
    }
    for part in rel.split('/') {
        match part {
            ".." => return Err("'..' is refused: paths may not leave the server's root".into()),
            "" | "." => return Err(format!("malformed path '{rel}'")),
            _ if is_temp_name(part) => {
                return Err(format!(
                    "'{part}' is the name of an upload in progress; choose another name"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `s` holds a control character (a newline would end the request line early
/// and smuggle in another request; a `\r` or tab would name another file). Clients
/// check it before sending a path.
pub fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The name of an upload's temporary file: `.NAME.quill-PID-N.tmp`.
fn temp_name(name: &str, pid: u32, n: u64) -> String {
    format!(".{name}.quill-{pid}-{n}.tmp")
}

/// Whether `name` has the form of [`temp_name`]; returns the PID in it.
fn temp_name_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (base, tail) = inner.rsplit_once(".quill-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if base.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

pub(super) fn is_temp_name(name: &str) -> bool {
    temp_name_pid(name).is_some()
}

/// Most directory levels [`sweep_temp_files`] descends.
const SWEEP_DEPTH: usize = 32;
/// Most directory entries [`sweep_temp_files`] looks at (a start-up cost bound).
const SWEEP_ENTRIES: usize = 1_000_000;

/// Removes the temporary files that uploads of a server killed without cleanup
/// (kill -9, power loss) left under `root`: those whose PID is ours (a previous
/// process of the same PID, as in a container) or no longer runs. Symbolic links are
/// not followed. Returns how many were removed.
pub fn sweep_temp_files(root: &Path) -> usize {
    let own = std::process::id();
    let mut removed = 0;
    let mut seen = 0;
    let mut dirs = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > SWEEP_ENTRIES {
                tracing::warn!("temporary file sweep stopped after {SWEEP_ENTRIES} entries");
                return removed;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < SWEEP_DEPTH {
                    dirs.push((entry.path(), depth + 1));
                }
                continue;
            }
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temp_name_pid) else {
                continue;
            };
            if kind.is_file()
                && (pid == own || !process_alive(pid))
                && std::fs::remove_file(entry.path()).is_ok()
            {
                tracing::info!("removed stale upload {}", entry.path().display());
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a process with this PID exists (kill(2) with signal 0).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The canonical file a GET names, which must be a regular file under `root`.
pub fn resolve_get(root: &Path, rel: &str) -> Result<PathBuf, String> {
    check_relative(rel)?;
    let path = root
        .join(rel)
        .canonicalize()
        .map_err(|e| super::space::io_message(rel, &e))?;
    if !path.starts_with(root) {
        return Err(format!("{rel} leaves the server's root"));
    }
    // Also through a symbolic link: an upload in progress is never served.
    if path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_temp_name)
    {
        return Err(format!("{rel} is an upload in progress"));
    }
    if !path.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    Ok(path)
}

/// The canonical destination of a PUT: its parent directory must exist and be under
/// `root` after resolving symbolic links; the name itself may not be a symbolic link
/// or a directory.
pub fn resolve_put(root: &Path, rel: &str) -> Result<(PathBuf, PathBuf), String> {
    let (parent, dest) = resolve_entry(root, rel)?;
    if let Ok(meta) = dest.symlink_metadata() {
        if meta.file_type().is_symlink() {
            return Err(format!("{rel} is a symbolic link; refusing to replace it"));
        }
        if meta.is_dir() {
            return Err(format!("{rel} is a directory"));
        }
    }
    Ok((parent, dest))
}

/// The file service's settings, as GET and PUT see them.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    /// Canonical root (see [`Path::canonicalize`]); `None` disables PUT and GET.
    pub root: Option<&'a Path>,
    /// Largest PUT accepted, in bytes.
    pub max_upload_size: Option<u64>,
}

impl Files<'_> {
    /// The file a GET names ([`resolve_get`]).
    pub fn get(&self, rel: &str) -> Result<PathBuf, String> {
        resolve_get(self.root.ok_or("file service disabled")?, rel)
    }

    /// Starts a PUT: refused above the upload cap before any data moves, else its
    /// temporary file is created ([`Upload::start`]).
    pub fn put(&self, rel: &str, size: u64, sha256: String) -> Result<Upload, String> {
        let root = self.root.ok_or("file service disabled")?;
        if let Some(max) = self.max_upload_size.filter(|&max| size > max) {
            return Err(format!(
                "the file is {size} bytes; this server takes at most {max} bytes per upload"
            ));
        }
        Upload::start(root, rel, size, sha256)
    }
}

/// A PUT in progress, written to a temporary file next to its destination. Dropping it
/// before [`Upload::commit`] removes the temporary file.
pub struct Upload {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    /// The announced size, or for a streamed PUT (`PUT * *`) the most it may take.
    size: u64,
    /// Whether `size` was announced (a `PUT <size> <sha256>`).
    sized: bool,
    received: u64,
    /// The announced SHA-256; empty for a streamed PUT.
    sha256: String,
    hash: ring::digest::Context,
    committed: bool,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Upload {
    /// Creates the temporary file next to the destination.
    pub fn start(root: &Path, rel: &str, size: u64, sha256: String) -> Result<Upload, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (parent, dest) = resolve_put(root, rel)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(temp_name(
            &name,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| format!("cannot create a file in the directory of {rel}: {e}"))?;
        Ok(Upload {
            file: Some(file),
            tmp,
            dest,
            size,
            sized: true,
            received: 0,
            sha256,
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            committed: false,
        })
    }

    /// Appends received bytes: never more than the announced size.
    pub fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        if self.received + data.len() as u64 > self.size {
            return Err(if self.sized {
                format!("more data than the announced {} bytes", self.size)
            } else {
                format!("this server takes at most {} bytes per upload", self.size)
            });
        }
        let file = self.file.as_mut().ok_or("upload already closed")?;
        file.write_all(data)
            .map_err(|e| format!("writing the file failed: {e}"))?;
        self.hash.update(data);
        self.received += data.len() as u64;
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Checks, once the client finished, that every announced byte came and that the
    /// SHA-256 matches.
    pub fn verify(&self) -> Result<(), String> {
        if !self.sized {
            return Ok(());
        }
        if self.received < self.size {
            return Err(format!(
                "upload ended after {} of {} bytes",
                self.received, self.size
            ));
        }
        if hex(self.hash.clone().finish().as_ref()) != self.sha256 {
            return Err("SHA-256 mismatch: the upload was corrupted; send it again".into());
        }
        Ok(())
    }

    /// Makes a complete, verified upload durable and gives it its name (an fsync: run
    /// it off the event loop). Returns the answer for the client: `OK`, or for a
    /// streamed PUT `OK <size> <sha256-hex>` of what was stored.
    pub fn commit(mut self) -> Result<Answer, String> {
        let answer = if self.sized {
            Answer::Ok
        } else {
            Answer::File {
                size: self.received,
                sha256: hex(self.hash.clone().finish().as_ref()),
            }
        };
        let file = self.file.take().ok_or("internal error")?;
        file.sync_all()
            .map_err(|e| format!("writing the file failed: {e}"))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| format!("cannot rename the upload into place: {e}"))?;
        self.committed = true;
        // The rename is durable once the directory is synced.
        if let Some(dir) = self.dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        tracing::info!("stored {} ({} bytes)", self.dest.display(), self.received);
        Ok(answer)
    }

    /// Starts a streamed PUT (`PUT * * <path>`): its length is known only at the
    /// client's FIN, and at most `max` bytes are taken.
    pub fn start_streamed(root: &Path, rel: &str, max: u64) -> Result<Upload, String> {
        let mut up = Upload::start(root, rel, max, String::new())?;
        up.sized = false;
        Ok(up)
    }
}

/// Hashes a file for GET and rewinds it for sending: the open file, its size and its
/// SHA-256 in hex (reads the whole file: run it off the event loop).
pub fn hash_file(path: &Path) -> io::Result<(File, u64, String)> {
    let mut file = File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    file.rewind()?;
    Ok((file, size, hex(ctx.finish().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quill-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    #[test]
    fn relative_paths_only() {
        assert!(check_relative("a/b.txt").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
        for bad in ["in.txt\nGET ../x", "a\rb", "a\tb", "a\0", "a\u{1b}[2J"] {
            let e = check_relative(bad).unwrap_err();
            assert!(e.contains("control characters"), "{bad:?}: {e}");
        }
        for temp in [".f.quill-12-0.tmp", "d/.a b.quill-1-99.tmp"] {
            let e = check_relative(temp).unwrap_err();
            assert!(e.contains("upload in progress"), "{temp}: {e}");
        }
    }

    #[test]
    fn temp_names_are_recognised() {
        let name = temp_name("f.txt", 4321, 7);
        assert_eq!(name, ".f.txt.quill-4321-7.tmp");
        assert_eq!(temp_name_pid(&name), Some(4321));
        assert_eq!(temp_name_pid(".x.quill-1-2-3.tmp.quill-5-6.tmp"), Some(5));
        for not in [
            "f.quill-1-2.tmp",
            "..quill-1-2.tmp",
            ".f.quill-1-.tmp",
            ".f.quill--2.tmp",
            ".f.quill-a-2.tmp",
            ".f.quill-1-2.tmpx",
            ".f.tmp",
        ] {
            assert_eq!(temp_name_pid(not), None, "{not}");
        }
    }

    #[test]
    fn sweep_removes_only_stale_temp_files() {
        let root = temp_root("sweep");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        // PIDs above the kernel's limit (at most 2^22) never run; ours is "stale" too,
        // as for a restarted container whose server is always PID 1.
        let dead = [
            root.join(temp_name("x", 999_999_999, 0)),
            root.join("a/b").join(temp_name("y", 999_999_998, 3)),
            root.join(temp_name("z", std::process::id(), 1)),
        ];
        // PID 1 runs (init): a server of another process may be writing that one.
        let live = root.join(temp_name("w", 1, 0));
        let keep = [root.join("x"), root.join("a/.hidden.tmp"), live.clone()];
        for f in dead.iter().chain(&keep) {
            std::fs::write(f, b"partial").unwrap();
        }
        assert_eq!(sweep_temp_files(&root), dead.len());
        for f in &dead {
            assert!(!f.exists(), "{} left", f.display());
        }
        for f in &keep {
            assert!(f.exists(), "{} removed", f.display());
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn temp_files_are_never_served() {
        let root = temp_root("noserve");
        let tmp = temp_name("secret", 999_999_999, 0);
        std::fs::write(root.join(&tmp), b"half").unwrap();
        assert!(resolve_get(&root, &tmp).is_err());
        assert!(resolve_put(&root, &tmp).is_err());
        // Nor through a symbolic link with an innocent name.
        std::os::unix::fs::symlink(root.join(&tmp), root.join("innocent")).unwrap();
        let e = resolve_get(&root, "innocent").unwrap_err();
        assert!(e.contains("upload in progress"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let root = temp_root("escape");
        let outside = temp_root("outside");
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::fs::write(outside.join("secret"), b"x").unwrap();
        assert!(resolve_put(&root, "link/new")
            .unwrap_err()
            .contains("leaves"));
        assert!(resolve_get(&root, "link/secret")
            .unwrap_err()
            .contains("leaves"));
        std::fs::create_dir(root.join("sub")).unwrap();
        let (parent, dest) = resolve_put(&root, "sub/new").unwrap();
        assert_eq!(parent, root.join("sub"));
        assert_eq!(dest, root.join("sub/new"));
        assert!(resolve_put(&root, "missing/new").is_err());
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }

    #[test]
    fn the_upload_cap_and_a_disabled_service_refuse() {
        let root = temp_root("cap");
        let files = Files {
            root: Some(&root),
            max_upload_size: Some(4),
        };
        let e = files.put("f", 5, "00".repeat(32)).err().unwrap();
        assert!(e.contains("at most 4 bytes"), "{e}");
        assert!(files.put("f", 4, "00".repeat(32)).is_ok());
        let off = Files {
            root: None,
            max_upload_size: None,
        };
        assert_eq!(off.get("f").unwrap_err(), "file service disabled");
        assert!(off.put("f", 1, "00".repeat(32)).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn upload_is_bounded_and_cleaned_up() {
        let root = temp_root("upload");
        let mut up = Upload::start(&root, "f", 3, "00".repeat(32)).unwrap();
        let tmp = up.tmp.clone();
        assert!(tmp.exists());
        up.write(b"ab").unwrap();
        assert!(up.write(b"cd").is_err());
        drop(up);
        assert!(!tmp.exists());
        assert!(!root.join("f").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn verify_then_commit_renames_into_place() {
        let root = temp_root("commit");
        let hello = crate::service::sha256_hex(b"hello");
        let mut up = Upload::start(&root, "f", 5, hello.clone()).unwrap();
        up.write(b"hell").unwrap();
        assert!(up.verify().unwrap_err().contains("after 4 of 5 bytes"));
        up.write(b"o").unwrap();
        up.verify().unwrap();
        let tmp = up.tmp.clone();
        up.commit().unwrap();
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"hello");
        assert!(!tmp.exists());
        let (_, size, sha) = hash_file(&root.join("f")).unwrap();
        assert_eq!((size, sha), (5, hello.clone()));
        let mut corrupted = Upload::start(&root, "g", 5, hello).unwrap();
        corrupted.write(b"HELLO").unwrap();
        assert!(corrupted.verify().unwrap_err().contains("SHA-256 mismatch"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
