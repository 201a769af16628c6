//! `quill keygen`: writes a new Ed25519 host or identity key, or with `--secret` a
//! 32-byte fleet secret ([`crate::secret`]).
//!
//! The private key goes to `PATH` (created new, mode 0600; an existing file is never
//! overwritten) and the public key line to `PATH.pub`; the fingerprint is printed so
//! that it can be pinned on clients (`--host-key`) or checked against `known_hosts`.
//! Both files are written whole or not at all ([`HostKeyPair::write_to`]): a full disk
//! leaves nothing behind, and the same command works again once there is room. A
//! missing parent directory is created with mode 0700 (so `-o ~/.quill/id_ed25519`
//! works on a fresh account).
//!
//! `quill fingerprint FILE` prints the fingerprint of an existing key file.

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::random::OsRandom;

use crate::args::{FingerprintArgs, KeygenArgs};
use crate::exit::{CliError, CliResult};
use crate::output::say;

/// Runs `quill keygen`.
pub fn run(args: &KeygenArgs) -> CliResult {
    let path = &args.output;
    if args.secret {
        if args.output.as_os_str() == "quill_ed25519" {
            return Err(CliError::usage(
                "quill keygen --secret needs -o FILE (e.g. -o reset.key)",
            ));
        }
        return crate::secret::write_secret(path);
    }
    // `write_to` refuses an existing file too; checking first gives the better message
    // and leaves an existing `PATH.pub` alone.
    if path.symlink_metadata().is_ok() {
        return Err(CliError::usage(format!(
            "{} already exists; remove it first or choose another path with -o",
            path.display()
        )));
    }
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let key = HostKeyPair::generate(&OsRandom::new())
        .map_err(|e| CliError::usage(format!("cannot generate a key: {e}")))?;
    key.write_to(path)
        .map_err(|e| CliError::usage(format!("cannot write the key: {e}")))?;
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    say!("private key: {} (mode 0600)", path.display())?;
    say!("public key:  {}", std::path::Path::new(&public).display())?;
    say!("fingerprint: {}", key.public().fingerprint())?;
    Ok(())
}

/// Runs `quill fingerprint FILE`: the fingerprint (`SHA256:...`, as the server prints
/// its own and `--host-key` takes it) of a public key line (`.pub`) or a private key
/// file (which must be mode 0600, as everywhere).
pub fn fingerprint(args: &FingerprintArgs) -> CliResult {
    let path = &args.file;
    let cannot =
        |e: &dyn std::fmt::Display| CliError::usage(format!("cannot read {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| cannot(&e))?;
    if meta.is_dir() {
        return Err(CliError::usage(format!(
            "{} is a directory; pass a key file (from `quill keygen -o PATH`)",
            path.display()
        )));
    }
    // A public key file is one short line; read a little more to tell.
    let mut head = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| cannot(&e))?,
            16 * 1024,
        ),
        &mut head,
    )
    .map_err(|e| cannot(&e))?;
    let text = String::from_utf8_lossy(&head);
    let key = if text.trim_start().starts_with("-----BEGIN") {
        HostKeyPair::read_from(path)
            .map_err(|e| CliError::usage(e.to_string()))?
            .public()
    } else {
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        PublicKey::from_openssh_line(line)
            .map_err(|e| {
                CliError::usage(format!(
                    "{}: not a quill key file ({e}); pass a private key from `quill keygen` \
                     or its .pub",
                    path.display()
                ))
            })?
            .0
    };
    say!("{}", key.fingerprint())?;
    Ok(())
}
