//! Client credentials: where the password or identity key of a [`Login`] comes from.
//!
//! Three sources, as for SSH-like tools:
//! - an interactive prompt that does not echo ([`Credentials::from_prompt`]), which
//!   needs a terminal;
//! - the first line of standard input ([`Credentials::from_stdin`], the CLI's
//!   `--password-stdin`), for scripts;
//! - an Ed25519 identity file ([`Credentials::from_identity_file`]), read with
//!   [`HostKeyPair::read_from`], which refuses files readable by anyone but the owner.
//!
//! Every password lives in [`Zeroizing`] buffers from the moment it is read, and
//! nothing here prints a secret (errors never contain one).

use std::fmt;
use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::sync::Arc;

use quill_crypto::hostkey::HostKeyPair;
use zeroize::{Zeroize, Zeroizing};

use crate::proto::Login;

/// Longest password accepted, in bytes (the Login message carries it in an `opaque16`,
/// docs/SPEC.md §4.7; anything near that is a mistake, such as piping a file).
pub const MAX_PASSWORD_LEN: usize = 4096;

/// Longest account name, in bytes (`user opaque8` in the Login message, docs/SPEC.md §4.7).
pub const MAX_USER_LEN: usize = 255;

/// Why credentials could not be obtained. Never contains a secret.
#[derive(Debug)]
pub enum CredentialsError {
    /// A prompt was asked for but the process has no terminal.
    NotATerminal,
    /// Reading the password failed.
    Io(io::Error),
    /// No password: standard input was empty or its first line was.
    EmptyPassword,
    /// The password is longer than [`MAX_PASSWORD_LEN`].
    PasswordTooLong,
    /// The password is not valid UTF-8.
    PasswordNotUtf8,
    /// The account name is empty, too long or contains control characters.
    BadUser(&'static str),
    /// The identity file could not be used (the message names the file, and the
    /// `chmod 600` that fixes a too-open one).
    Identity(quill_crypto::Error),
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::NotATerminal => f.write_str(
                "cannot prompt for a password: no terminal (/dev/tty); use --password-stdin \
                 or --password-file FILE, or an identity key (-i FILE)",
            ),
            CredentialsError::Io(e) => write!(f, "cannot read the password: {e}"),
            CredentialsError::EmptyPassword => f.write_str("empty password"),
            CredentialsError::PasswordTooLong => {
                write!(f, "password longer than {MAX_PASSWORD_LEN} bytes")
            }
            CredentialsError::PasswordNotUtf8 => f.write_str("password is not valid UTF-8"),
            CredentialsError::BadUser(why) => write!(f, "bad user name: {why}"),
            CredentialsError::Identity(e) => write!(f, "cannot use the identity file: {e}"),
        }
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CredentialsError::Io(e) => Some(e),
            CredentialsError::Identity(e) => Some(e),
            _ => None,
        }
    }
}

/// Builders of [`Login`] values from the places credentials come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials;

impl Credentials {
    /// Password login, prompting `Password for USER: ` on the terminal without echo.
    /// Fails with [`CredentialsError::NotATerminal`] when there is no terminal (use
    /// [`from_stdin`](Self::from_stdin) there).
    pub fn from_prompt(user: &str) -> Result<Login, CredentialsError> {
        Self::from_prompt_text(user, &format!("Password for {user}: "))
    }

    /// Like [`from_prompt`](Self::from_prompt) with the prompt `prompt`.
    pub fn from_prompt_text(user: &str, prompt: &str) -> Result<Login, CredentialsError> {
        check_user(user)?;
        let password = prompt_password(prompt)?;
        Ok(Login::Password {
            user: user.to_string(),
            password,
        })
    }

    /// Password login with the first line of `reader` as the password (`\n` or `\r\n`
    /// stripped). Reads byte by byte, so nothing after the first line is consumed.
    pub fn from_stdin(user: &str, reader: impl Read) -> Result<Login, CredentialsError> {
        check_user(user)?;
        let password = read_password(reader)?;
        Ok(Login::Password {
            user: user.to_string(),
            password,
        })
    }

    /// Public-key login with the Ed25519 identity key at `path` (which must not be
    /// readable by group or others).
    pub fn from_identity_file(user: &str, path: &Path) -> Result<Login, CredentialsError> {
        check_user(user)?;
        let key = HostKeyPair::read_from(path).map_err(CredentialsError::Identity)?;
        Ok(Login::PublicKey {
            user: user.to_string(),
            key: Arc::new(key),
        })
    }

    /// A registration: create `user` with `password` (and optionally authorise `key`
    /// for later public-key logins), where the server allows open registration.
    pub fn register(
        user: &str,
        password: Zeroizing<String>,
        key: Option<Arc<HostKeyPair>>,
    ) -> Result<Login, CredentialsError> {
        check_user(user)?;
        if password.is_empty() {
            return Err(CredentialsError::EmptyPassword);
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Err(CredentialsError::PasswordTooLong);
        }
        Ok(Login::Register {
            user: user.to_string(),
            password,
            key,
        })
    }
}

/// Checks what the client can check of an account name; the server applies its own
/// naming rules on top.
fn check_user(user: &str) -> Result<(), CredentialsError> {
    if user.is_empty() {
        return Err(CredentialsError::BadUser("empty"));
    }
    if user.len() > MAX_USER_LEN {
        return Err(CredentialsError::BadUser("longer than 255 bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err(CredentialsError::BadUser("contains control characters"));
    }
    Ok(())
}

/// Prompts on the terminal without echo: the controlling terminal (`/dev/tty`), as
/// SSH does, so that standard input may be a pipe carrying the command's data. Fails
/// with [`CredentialsError::NotATerminal`] when the process has no terminal.
pub fn prompt_password(prompt: &str) -> Result<Zeroizing<String>, CredentialsError> {
    if !has_terminal() {
        return Err(CredentialsError::NotATerminal);
    }
    let password =
        Zeroizing::new(rpassword::prompt_password(prompt).map_err(CredentialsError::Io)?);
    if password.is_empty() {
        return Err(CredentialsError::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(CredentialsError::PasswordTooLong);
    }
    Ok(password)
}

/// Whether the process has a controlling terminal to prompt on (`/dev/tty` opens and
/// is a terminal; on other systems, whether standard input is one).
pub fn has_terminal() -> bool {
    #[cfg(unix)]
    {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_ok_and(|t| t.is_terminal())
    }
    #[cfg(not(unix))]
    {
        io::stdin().is_terminal()
    }
}

/// Reads a password from the first line of `reader`: up to the first `\n` (a `\r`
/// before it is stripped too) or the end of input. Reads one byte at a time into a
/// buffer allocated once, so no copy of the secret is left behind by a reallocation
/// and nothing past the first line is consumed. (A buffered `reader` such as
/// `StdinLock` keeps its own copy in its buffer; that is the caller's to manage.)
pub fn read_password(mut reader: impl Read) -> Result<Zeroizing<String>, CredentialsError> {
    // One byte more than the limit, to tell "exactly the limit" from "too long".
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD_LEN + 2));
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                if byte[0] == b'\n' {
                    break;
                }
                if buf.len() > MAX_PASSWORD_LEN {
                    byte.zeroize();
                    return Err(CredentialsError::PasswordTooLong);
                }
                buf.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                byte.zeroize();
                return Err(CredentialsError::Io(e));
            }
        }
    }
    byte.zeroize();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.is_empty() {
        return Err(CredentialsError::EmptyPassword);
    }
    if buf.len() > MAX_PASSWORD_LEN {
        return Err(CredentialsError::PasswordTooLong);
    }
    // Move the bytes into the String without copying; on failure the bytes come back
    // and are wiped.
    match String::from_utf8(std::mem::take(&mut *buf)) {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            Err(CredentialsError::PasswordNotUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password_of(login: &Login) -> &str {
        match login {
            Login::Password { password, .. } | Login::Register { password, .. } => password,
            Login::PublicKey { .. } => panic!("not a password login"),
        }
    }

    #[test]
    fn first_line_only_and_line_endings_stripped() {
        for (input, want) in [
            (&b"secret\n"[..], "secret"),
            (b"secret", "secret"),
            (b"secret\r\n", "secret"),
            (b"two words \nnext line\n", "two words "),
        ] {
            let l = Credentials::from_stdin("alice", input).unwrap();
            assert_eq!(password_of(&l), want, "{input:?}");
        }
    }

    #[test]
    fn rest_of_input_is_left_unread() {
        let mut input = &b"pw\nDATA"[..];
        read_password(&mut input).unwrap();
        assert_eq!(input, b"DATA");
    }

    #[test]
    fn empty_long_and_non_utf8_passwords_are_refused() {
        assert!(matches!(
            read_password(&b""[..]),
            Err(CredentialsError::EmptyPassword)
        ));
        assert!(matches!(
            read_password(&b"\r\nx"[..]),
            Err(CredentialsError::EmptyPassword)
        ));
        let exact = vec![b'a'; MAX_PASSWORD_LEN];
        assert_eq!(read_password(&exact[..]).unwrap().len(), MAX_PASSWORD_LEN);
        let long = vec![b'a'; MAX_PASSWORD_LEN + 1];
        assert!(matches!(
            read_password(&long[..]),
            Err(CredentialsError::PasswordTooLong)
        ));
        assert!(matches!(
            read_password(&b"\xff\xfe\n"[..]),
            Err(CredentialsError::PasswordNotUtf8)
        ));
    }

    #[test]
    fn user_names_are_checked() {
        assert!(Credentials::from_stdin("", &b"pw"[..]).is_err());
        assert!(Credentials::from_stdin("a\nb", &b"pw"[..]).is_err());
        assert!(Credentials::from_stdin(&"u".repeat(256), &b"pw"[..]).is_err());
        assert!(Credentials::from_stdin(&"u".repeat(255), &b"pw"[..]).is_ok());
    }

    #[test]
    fn register_carries_password_and_key() {
        let key = Arc::new(HostKeyPair::from_seed(&[5; 32]).unwrap());
        let l =
            Credentials::register("bob", Zeroizing::new("pw".into()), Some(key.clone())).unwrap();
        assert_eq!(password_of(&l), "pw");
        match l {
            Login::Register {
                user, key: Some(k), ..
            } => {
                assert_eq!(user, "bob");
                assert_eq!(k.public(), key.public());
            }
            other => panic!("{other:?}"),
        }
        assert!(Credentials::register("bob", Zeroizing::new(String::new()), None).is_err());
    }

    #[test]
    fn errors_never_contain_the_password() {
        let e = read_password(&b"\xffsecret\n"[..]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("secret"));
    }
}
