//! `quill user`: account administration on the server's account database.
//!
//! Every action opens the store named by `--accounts`: a [`SqliteStore`] file (created,
//! mode 0600, if missing) or a PostgreSQL URL ([`open_store`]). Passwords come from a no-echo prompt (asked twice) or, with
//! `--password-stdin`, from the first line of standard input. Store errors already say
//! what is wrong ("no account named ...", "password refused: ..."): they are printed
//! as they are, with the usage exit code.

use std::io::IsTerminal;
use std::path::Path;

use quill_crypto::hostkey::PublicKey;
use quill_transport::auth::{open_store, Account, StoreError};
use quill_transport::auth::{prompt_password, read_password};
use zeroize::Zeroizing;

use crate::args::{UserAction, UserArgs};
use crate::exit::{CliError, CliResult};
use crate::output::say;

/// Runs `quill user ACTION`.
pub fn run(args: &UserArgs) -> CliResult {
    let db = args.accounts.as_deref().ok_or_else(|| {
        CliError::usage(
            "quill user needs --accounts DB (the server's account database: a file or \
             postgres://USER@HOST/DB)",
        )
    })?;
    let store = open_store(db).map_err(store_err)?;
    match &args.action {
        UserAction::Add {
            name,
            no_password,
            key,
        } => {
            let keys = match key {
                Some(path) => vec![read_public_key(path)?],
                None => Vec::new(),
            };
            if *no_password && keys.is_empty() {
                return Err(CliError::usage(
                    "--no-password needs --key FILE.pub, or nobody could log in to the account",
                ));
            }
            let password = if *no_password {
                None
            } else {
                Some(new_password(args.password_stdin, name)?)
            };
            let account = store
                .add_user(name, password.as_ref().map(|p| p.as_bytes()), &keys)
                .map_err(store_err)?;
            say!("added account {}", account.name)?;
        }
        UserAction::Del { name } => {
            store.remove_user(name).map_err(store_err)?;
            say!("deleted account {name}")?;
        }
        UserAction::List => {
            let accounts = store.list().map_err(store_err)?;
            say!("{}", table(&accounts).trim_end())?;
        }
        UserAction::Passwd { name } => {
            // Fail before asking for a password if the account does not exist.
            if store.get(name).map_err(store_err)?.is_none() {
                return Err(store_err(StoreError::NotFound(name.clone())));
            }
            let password = new_password(args.password_stdin, name)?;
            store
                .set_password(name, password.as_bytes())
                .map_err(store_err)?;
            say!("password changed for {name}")?;
        }
        UserAction::Disable { name } => {
            store.set_disabled(name, true).map_err(store_err)?;
            say!("disabled account {name}")?;
        }
        UserAction::Enable { name } => {
            store.set_disabled(name, false).map_err(store_err)?;
            say!("enabled account {name}")?;
        }
        UserAction::AddKey { name, key } => {
            let key = read_public_key(key)?;
            store.add_key(name, &key).map_err(store_err)?;
            say!("authorised key {} for {name}", key.fingerprint())?;
        }
        UserAction::DelKey { name, fingerprint } => {
            store.remove_key(name, fingerprint).map_err(store_err)?;
            say!("removed key {fingerprint} from {name}")?;
        }
    }
    Ok(())
}

fn store_err(e: StoreError) -> CliError {
    match e {
        // The database server is away: a connection failure, not a usage error.
        StoreError::Postgres { .. } => CliError::connection(e.to_string()),
        _ => CliError::usage(e.to_string()),
    }
}

/// A new password: the first line of stdin, or asked twice on the terminal.
fn new_password(from_stdin: bool, name: &str) -> Result<Zeroizing<String>, CliError> {
    if from_stdin {
        let pw = read_password(std::io::stdin().lock())
            .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?;
        return Ok(pw);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no terminal to ask for the password; pass --password-stdin and write it on standard input",
        ));
    }
    let ask = |prompt: &str| {
        prompt_password(prompt)
            .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))
    };
    let first = ask(&format!("New password for {name}: "))?;
    let second = ask("Repeat the password: ")?;
    if first != second {
        return Err(CliError::usage("the passwords do not match; try again"));
    }
    Ok(first)
}

/// The public key on the first non-empty line of a `.pub` file.
fn read_public_key(path: &Path) -> Result<PublicKey, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| CliError::usage(format!("{} is empty", path.display())))?;
    PublicKey::from_openssh_line(line)
        .map(|(key, _comment)| key)
        .map_err(|e| {
            CliError::usage(format!(
                "{}: {e} (give the .pub file written by quill keygen)",
                path.display()
            ))
        })
}

/// The `quill user list` table.
fn table(accounts: &[Account]) -> String {
    let width = accounts
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<16}  {:<16}  {:<8}  {}\n",
        "NAME", "CREATED", "LAST LOGIN", "DISABLED", "KEYS"
    );
    for a in accounts {
        out.push_str(&format!(
            "{:<width$}  {:<16}  {:<16}  {:<8}  {}\n",
            a.name,
            utc(a.created),
            a.last_login.map_or_else(|| "never".to_string(), utc),
            if a.disabled { "yes" } else { "no" },
            a.keys.len()
        ));
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn table_lists_every_account() {
        let a = Account {
            name: "alice".into(),
            password_phc: None,
            keys: Vec::new(),
            created: 0,
            last_login: None,
            disabled: true,
            failed_attempts: 0,
        };
        let t = table(&[a]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("alice"));
        assert!(lines[1].contains("never"));
        assert!(lines[1].contains("yes"));
    }
}
