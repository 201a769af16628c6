//! The 32-byte secret files of `quill server --reset-key FILE` and `--retry-key FILE`:
//! every server of a fleet (and a restarted server) given the same files produces and
//! accepts the same stateless resets and Retry tokens.
//!
//! A secret file holds exactly 32 bytes, nothing else: `quill keygen --secret -o FILE`
//! writes one (created new, mode 0600), and so does
//! `(umask 077; head -c 32 /dev/urandom > FILE)`. Like the host key, a file that group
//! or others may read or write is refused, and the bytes live in zeroized memory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use quill_crypto::random::{OsRandom, Random};
use zeroize::Zeroizing;

use crate::exit::{CliError, CliResult};
use crate::output::say;

/// Length of a secret file.
pub const SECRET_LEN: usize = 32;

/// Reads the secret of `option` (`--reset-key` or `--retry-key`) from `path`.
pub fn read_secret(option: &str, path: &Path) -> Result<Zeroizing<[u8; SECRET_LEN]>, CliError> {
    let shown = path.display();
    let fail = |why: String| CliError::usage(format!("{option} {shown}: {why}"));
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o177 != 0 {
        return Err(fail(format!(
            "permissions {:04o} are too open for a secret; run `chmod 600 {shown}`",
            mode & 0o7777
        )));
    }
    if meta.len() != SECRET_LEN as u64 {
        return Err(fail(format!(
            "a secret file holds exactly {SECRET_LEN} bytes, this one {}; create one with \
             `quill keygen --secret -o FILE`",
            meta.len()
        )));
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    file.take(SECRET_LEN as u64)
        .read_exact(&mut *secret)
        .map_err(|e| fail(e.to_string()))?;
    Ok(secret)
}

/// `quill keygen --secret -o PATH`: writes 32 random bytes to a new file, mode 0600.
/// A failed write leaves no file behind.
pub fn write_secret(path: &Path) -> CliResult {
    let shown = path.display();
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    OsRandom::new()
        .fill(&mut *secret)
        .map_err(|e| CliError::usage(format!("cannot draw a secret: {e}")))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::usage(format!(
                "{shown} already exists; remove it first or choose another path with -o"
            )),
            _ => CliError::usage(format!("cannot create {shown}: {e}")),
        })?;
    if let Err(e) = file.write_all(&*secret).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(CliError::usage(format!("cannot write {shown}: {e}")));
    }
    say!("secret: {shown} ({SECRET_LEN} bytes, mode 0600)")?;
    Ok(())
}
