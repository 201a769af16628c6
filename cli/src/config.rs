//! The client configuration file, `~/.quill/config` (`$QUILL_HOME/config`), in the
//! style of ssh_config(5):
//!
//! ```text
//! # comment
//! Host work *.example.org !old.example.org
//!     HostName 10.0.0.2
//!     User alice
//!     Port 4434
//!     IdentityFile ~/.quill/id_work
//!     StrictHostKeyChecking accept-new
//! ```
//!
//! - Keywords are case-insensitive; a value follows after spaces or `=`, and may be in
//!   double quotes. Lines before the first `Host` apply to every host.
//! - `Host` takes patterns matched against the host as typed (case-insensitive, `*`
//!   and `?` wildcards); a `!pattern` excludes. As in ssh, the first value found for a
//!   keyword wins, so put specific blocks before `Host *`.
//! - `IdentityFile`: `~/` is the home directory, a relative path is relative to the
//!   file's directory, `none` means no default identity (a password is asked for).
//! - `StrictHostKeyChecking` (or `HostKeyPolicy`): `yes` (never add an unknown host),
//!   `ask` (the default: ask on the terminal) or `accept-new` (add unknown hosts
//!   without asking). A changed host key is always refused, so `no` is not accepted.
//! - Any other keyword, a bad value, or a file that others may write is an error that
//!   names the file and line: nothing is silently skipped.

use std::path::{Path, PathBuf};

use crate::exit::CliError;

/// Largest config file read; anything near it is not a hand-written config.
const MAX_FILE: u64 = 1024 * 1024;

/// The keywords, as listed in errors.
const KEYWORDS: &str = "Host, HostName, User, Port, IdentityFile, StrictHostKeyChecking \
                        (or HostKeyPolicy)";

/// What to do with a server whose address has no line in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Refuse it, saying how to trust it (`yes`).
    Strict,
    /// Show its fingerprint and ask yes/no on the terminal; refuse off a terminal
    /// (`ask`, the default).
    Ask,
    /// Record it without asking (`accept-new`, `--accept-new-host`).
    AcceptNew,
}

/// The settings the file gives for one host (each `None` if no block sets it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `HostName`: the name or address to connect to instead of the one typed.
    pub host_name: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`; `Some(None)` for `IdentityFile none`.
    pub identity_file: Option<Option<PathBuf>>,
    /// `StrictHostKeyChecking` / `HostKeyPolicy`.
    pub host_key_check: Option<HostKeyCheck>,
}

#[derive(Debug, Clone)]
struct Block {
    /// `(excluded, lower-case pattern)`; empty for the lines before the first `Host`.
    patterns: Vec<(bool, String)>,
    settings: HostSettings,
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    blocks: Vec<Block>,
}

/// The default path: `config` in quill's per-user directory.
pub fn default_path() -> Option<PathBuf> {
    quill_transport::auth::quill_home().map(|h| h.join("config"))
}

impl ConfigFile {
    /// Reads the file at [`default_path`]; `None` if there is none.
    pub fn load_default() -> Result<Option<ConfigFile>, CliError> {
        match default_path() {
            Some(p) => ConfigFile::load(&p),
            None => Ok(None),
        }
    }

    /// Reads and parses `path`; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> Result<Option<ConfigFile>, CliError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let cannot =
            |e: std::io::Error| CliError::usage(format!("cannot read {}: {e}", path.display()));
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cannot(e)),
        };
        let meta = file.metadata().map_err(cannot)?;
        if meta.is_dir() {
            return Err(CliError::usage(format!(
                "{} is a directory; the client config must be a file",
                path.display()
            )));
        }
        crate::client::refuse_open_mode(
            path,
            meta.permissions().mode(),
            0o022,
            "may be written by others",
        )?;
        let mut text = String::new();
        file.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(cannot)?;
        if text.len() as u64 > MAX_FILE {
            return Err(CliError::usage(format!(
                "{} is larger than {MAX_FILE} bytes; it is not a quill client config",
                path.display()
            )));
        }
        ConfigFile::parse(path, &text).map(Some)
    }

    /// Parses the text of a config file; `path` names it in errors and anchors
    /// relative `IdentityFile`s.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, CliError> {
        let mut blocks = vec![Block {
            patterns: Vec::new(),
            settings: HostSettings::default(),
        }];
        let dir = path.parent().unwrap_or(Path::new("."));
        for (i, raw) in text.lines().enumerate() {
            let bad = |why: String| CliError::usage(format!("{}:{}: {why}", path.display(), i + 1));
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(line);
            let values = split_values(rest).map_err(|w| bad(w.into()))?;
            let keyword_lc = keyword.to_ascii_lowercase();
            if keyword_lc == "host" {
                if values.is_empty() {
                    return Err(bad("Host needs at least one pattern, e.g. `Host *`".into()));
                }
                let patterns = values
                    .iter()
                    .map(|v| match v.strip_prefix('!') {
                        Some(p) => (true, p.to_ascii_lowercase()),
                        None => (false, v.to_ascii_lowercase()),
                    })
                    .collect();
                blocks.push(Block {
                    patterns,
                    settings: HostSettings::default(),
                });
                continue;
            }
            const KNOWN: [&str; 6] = [
                "hostname",
                "user",
                "port",
                "identityfile",
                "stricthostkeychecking",
                "hostkeypolicy",
            ];
            if !KNOWN.contains(&keyword_lc.as_str()) {
                return Err(bad(format!(
                    "unknown keyword {keyword:?}; quill knows {KEYWORDS}"
                )));
            }
            let value = match values.as_slice() {
                [v] => v.as_str(),
                [] => return Err(bad(format!("{keyword} needs a value"))),
                _ => {
                    return Err(bad(format!(
                        "{keyword} takes one value, got {}",
                        values.len()
                    )))
                }
            };
            let settings = &mut blocks.last_mut().expect("one block").settings;
            match keyword_lc.as_str() {
                "hostname" => {
                    let v = value.trim_start_matches('[').trim_end_matches(']');
                    if v.is_empty() {
                        return Err(bad("HostName is empty".into()));
                    }
                    settings.host_name.get_or_insert_with(|| v.to_string());
                }
                "user" => {
                    if value.chars().any(char::is_control) {
                        return Err(bad("User contains a control character".into()));
                    }
                    settings.user.get_or_insert_with(|| value.to_string());
                }
                "port" => {
                    let port = match value.parse::<u16>() {
                        Ok(p) if p > 0 => p,
                        _ => {
                            return Err(bad(format!("Port {value:?} is not a port number 1-65535")))
                        }
                    };
                    settings.port.get_or_insert(port);
                }
                "identityfile" => {
                    let file = if value.eq_ignore_ascii_case("none") {
                        None
                    } else {
                        Some(expand_path(value, dir).map_err(|w| bad(w.into()))?)
                    };
                    settings.identity_file.get_or_insert(file);
                }
                "stricthostkeychecking" | "hostkeypolicy" => {
                    let check = match value.to_ascii_lowercase().as_str() {
                        "yes" | "strict" => HostKeyCheck::Strict,
                        "ask" => HostKeyCheck::Ask,
                        "accept-new" => HostKeyCheck::AcceptNew,
                        "no" | "off" => {
                            return Err(bad(format!(
                                "{keyword} {value}: quill never connects to a host whose key \
                                 changed; use yes, ask or accept-new"
                            )))
                        }
                        _ => {
                            return Err(bad(format!(
                                "{keyword} {value:?}: use yes, ask or accept-new"
                            )))
                        }
                    };
                    settings.host_key_check.get_or_insert(check);
                }
                _ => unreachable!("checked against KNOWN"),
            }
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            blocks,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings for `host` (as typed): for each keyword, the first value of the
    /// blocks that match it, in file order.
    pub fn lookup(&self, host: &str) -> HostSettings {
        let host = host.to_ascii_lowercase();
        let mut out = HostSettings::default();
        for block in self.blocks.iter().filter(|b| b.matches(&host)) {
            let s = &block.settings;
            if out.host_name.is_none() {
                out.host_name.clone_from(&s.host_name);
            }
            if out.user.is_none() {
                out.user.clone_from(&s.user);
            }
            out.port = out.port.or(s.port);
            if out.identity_file.is_none() {
                out.identity_file.clone_from(&s.identity_file);
            }
            out.host_key_check = out.host_key_check.or(s.host_key_check);
        }
        out
    }
}

impl Block {
    fn matches(&self, host: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let mut any = false;
        for (excluded, pattern) in &self.patterns {
            if glob(pattern.as_bytes(), host.as_bytes()) {
                if *excluded {
                    return false;
                }
                any = true;
            }
        }
        any
    }
}

/// `Keyword value`, `Keyword=value` or `Keyword = value`.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (&line[..end], rest)
}

/// Splits on whitespace, keeping `"quoted values"` whole.
fn split_values(rest: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut value = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err("a quote (\") is not closed"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push(value);
    }
    Ok(out)
}

/// `~/x` under `$HOME`, a relative path under `dir`, an absolute path as is.
fn expand_path(value: &str, dir: &Path) -> Result<PathBuf, &'static str> {
    if let Some(rest) = value.strip_prefix("~/") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or("IdentityFile starts with ~/ but HOME is not set")?;
        return Ok(PathBuf::from(home).join(rest));
    }
    if value.starts_with('~') {
        return Err("only ~/ is understood at the start of a path (not ~user/)");
    }
    let p = Path::new(value);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    })
}

/// Shell-style `*` and `?` matching over bytes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, CliError> {
        ConfigFile::parse(Path::new("/h/.quill/config"), text)
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "anything", true),
            ("*.example.org", "a.example.org", true),
            ("*.example.org", "example.org", false),
            ("h?st", "host", true),
            ("h?st", "hst", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} {t}");
        }
    }

    #[test]
    fn first_value_wins_and_negation_excludes() {
        let c = parse(
            "User everyone\n\
             Host work !old.work *.work\n  HostName=10.0.0.2\n  Port 4434\n  \
             IdentityFile id_work\n\
             Host *\n  User nobody\n  Port 9\n  StrictHostKeyChecking accept-new\n",
        )
        .unwrap();
        let w = c.lookup("WORK");
        assert_eq!(w.host_name.as_deref(), Some("10.0.0.2"));
        assert_eq!(w.user.as_deref(), Some("everyone"));
        assert_eq!(w.port, Some(4434));
        assert_eq!(
            w.identity_file,
            Some(Some(PathBuf::from("/h/.quill/id_work")))
        );
        assert_eq!(w.host_key_check, Some(HostKeyCheck::AcceptNew));
        let old = c.lookup("old.work");
        assert_eq!((old.host_name, old.port), (None, Some(9)));
        assert_eq!(c.lookup("a.work").port, Some(4434));
    }

    #[test]
    fn quotes_none_and_policies() {
        let c = parse(
            "Host \"a b\" x\nIdentityFile none\nHostKeyPolicy yes\nHost y\nIdentityFile \"/k k\"\n",
        )
        .unwrap();
        assert_eq!(c.lookup("x").identity_file, Some(None));
        assert_eq!(c.lookup("x").host_key_check, Some(HostKeyCheck::Strict));
        assert_eq!(
            c.lookup("y").identity_file,
            Some(Some(PathBuf::from("/k k")))
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line, needle) in [
            ("Host a\n  Prot 4433\n", 2, "unknown keyword \"Prot\""),
            ("\n\nPort 0\n", 3, "not a port number"),
            ("Port 70000\n", 1, "not a port number"),
            ("Host\n", 1, "at least one pattern"),
            ("User a b\n", 1, "takes one value"),
            ("User\n", 1, "needs a value"),
            ("StrictHostKeyChecking no\n", 1, "never connects"),
            ("HostKeyPolicy maybe\n", 1, "use yes, ask or accept-new"),
            ("IdentityFile \"x\n", 1, "not closed"),
            ("IdentityFile ~bob/k\n", 1, "only ~/"),
            ("Match host x\n", 1, "unknown keyword"),
        ] {
            let e = parse(text).unwrap_err();
            let prefix = format!("/h/.quill/config:{line}: ");
            assert!(e.message.starts_with(&prefix), "{text:?}: {}", e.message);
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
            assert_eq!(e.message.lines().count(), 1);
        }
    }
}
