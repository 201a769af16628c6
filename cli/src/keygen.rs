//! `quill keygen`: writes a new Ed25519 host or identity key, or with `--secret` a
//! 32-byte fleet secret ([`crate::secret`]).
//!
//! The private key goes to `PATH` (created new, mode 0600; an existing file is never
//! overwritten) and the public key line to `PATH.pub`; the fingerprint is printed so
//! that it can be pinned on clients (`--host-key`) or checked against `known_hosts`.
//! Both files are written whole or not at all ([`HostKeyPair::write_to`]): a full disk
//! leaves nothing behind, and the same command works again once there is room.

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::random::OsRandom;

use crate::args::KeygenArgs;
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
