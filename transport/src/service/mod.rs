//! The file service of docs/SPEC.md §10: its requests, its answers and the guard every
//! path passes, in one place for `quill server` and the interop peer.
//!
//! A client opens a bidirectional stream and writes one request line, terminated by
//! `\n`, at most [`MAX_LINE`] bytes:
//!
//! | request | then the client sends | the server answers |
//! |---|---|---|
//! | `ECHO` | any bytes, then FIN | the same bytes, then FIN |
//! | `PUT <size> <sha256-hex> <path>` | exactly `size` bytes, FIN | `OK` or `ERR <message>` line, FIN |
//! | `GET <path>` | FIN | `OK <size> <sha256-hex>` line then the bytes, FIN; or `ERR <message>` |
//! | `SINK` | any bytes, then FIN | `OK <bytes>` line, FIN |
//! | `SOURCE <bytes>` | FIN | `bytes` bytes, FIN |
//! | `STATS` | FIN | one [`ServerStats`] line (`OK key=value ...`), FIN |
//! | `PUT * * <path>` | any bytes, FIN | `OK <size> <sha256-hex>` of what was stored, or `ERR` |
//! | `LIST` / `LIST <path>` | FIN | `OK <n>` then `n` [`ListEntry`] lines, FIN; or `ERR` |
//! | `MKDIR <path>` / `MKDIRS <path>` | FIN | `OK` or `ERR <message>` |
//! | `RM <path>` / `RMTREE <path>` | FIN | `OK` or `ERR <message>` |
//!
//! A logged-in account's paths are relative to its own space, `ROOT/<account>/`
//! ([`account_space`]); the directory requests are in [`space`].
//!
//! Paths are relative to the server's root, `/`-separated; `..`, absolute paths,
//! control characters, the names of uploads in progress and anything that would leave
//! the root are refused with `ERR` ([`check_relative`], [`resolve_get`],
//! [`resolve_put`]). The server writes a PUT to a temporary file ([`Upload`]) and
//! renames it only after the SHA-256 matched; [`sweep_temp_files`] removes what a
//! killed server left. An `ERR` sent before the client finished is followed by
//! STOP_SENDING: the client's writes fail at once and it reads the `ERR`.
//!
//! This module does file I/O: it sits beside [`crate::driver`], outside the sans-IO
//! core. How streams are scheduled (budgets, the worker pool) is the server's business.

mod echo;
mod files;
pub mod space;
mod stats;

pub use echo::{Echo, Pumped};

pub use files::{
    check_relative, has_control_chars, hash_file, resolve_get, resolve_put, sweep_temp_files,
    Files, Upload, CHUNK, MAX_PATH_LEN,
};
pub use space::{account_space, ListEntry};
pub use stats::ServerStats;

/// Longest request or answer line.
pub const MAX_LINE: usize = 4096;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Echo everything back.
    Echo,
    /// Upload a file.
    Put {
        /// Exact size.
        size: u64,
        /// SHA-256 of the content, lowercase hex.
        sha256: String,
        /// Path below the root.
        path: String,
    },
    /// Download a file.
    Get {
        /// Path below the root.
        path: String,
    },
    /// Swallow bytes (perf upload).
    Sink,
    /// Produce bytes (perf download).
    Source {
        /// How many.
        bytes: u64,
    },
    /// The server's figures of this connection's perf test (`STATS`), answered with
    /// a [`ServerStats`] line.
    Stats,
    /// Upload a file of unknown length (`PUT * * <path>`): what comes before the FIN.
    PutStream {
        /// Path below the root.
        path: String,
    },
    /// List a directory (`None`: the space itself) or describe one file.
    List {
        /// Path below the root.
        path: Option<String>,
    },
    /// Create a directory; with `parents`, missing parents too (`MKDIRS`).
    Mkdir {
        /// Path below the root.
        path: String,
        /// `MKDIRS`: create missing parents, an existing directory is fine.
        parents: bool,
    },
    /// Remove a file, link or empty directory; with `recursive`, a whole tree
    /// (`RMTREE`).
    Remove {
        /// Path below the root.
        path: String,
        /// `RMTREE`.
        recursive: bool,
    },
}

impl Request {
    /// The request line (with its `\n`).
    pub fn line(&self) -> String {
        match self {
            Request::Echo => "ECHO\n".into(),
            Request::Put { size, sha256, path } => format!("PUT {size} {sha256} {path}\n"),
            Request::Get { path } => format!("GET {path}\n"),
            Request::Sink => "SINK\n".into(),
            Request::Source { bytes } => format!("SOURCE {bytes}\n"),
            Request::Stats => "STATS\n".into(),
            Request::PutStream { path } => format!("PUT * * {path}\n"),
            Request::List { path: None } => "LIST\n".into(),
            Request::List { path: Some(path) } => format!("LIST {path}\n"),
            Request::Mkdir { path, parents } => {
                format!("{} {path}\n", if *parents { "MKDIRS" } else { "MKDIR" })
            }
            Request::Remove { path, recursive } => {
                format!("{} {path}\n", if *recursive { "RMTREE" } else { "RM" })
            }
        }
    }

    /// Parses a request line (without its `\n`).
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut parts = line.splitn(2, ' ');
        let verb = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("");
        match verb {
            "ECHO" if rest.is_empty() => Ok(Request::Echo),
            "SINK" if rest.is_empty() => Ok(Request::Sink),
            "STATS" if rest.is_empty() => Ok(Request::Stats),
            "SOURCE" => rest
                .parse()
                .map(|bytes| Request::Source { bytes })
                .map_err(|_| "SOURCE needs a byte count".into()),
            "GET" if !rest.is_empty() => Ok(Request::Get { path: rest.into() }),
            "LIST" if rest.is_empty() => Ok(Request::List { path: None }),
            "LIST" => Ok(Request::List {
                path: Some(rest.into()),
            }),
            "MKDIR" | "MKDIRS" if !rest.is_empty() => Ok(Request::Mkdir {
                path: rest.into(),
                parents: verb == "MKDIRS",
            }),
            "RM" | "RMTREE" if !rest.is_empty() => Ok(Request::Remove {
                path: rest.into(),
                recursive: verb == "RMTREE",
            }),
            "PUT" if rest.starts_with("* * ") && rest.len() > 4 => Ok(Request::PutStream {
                path: rest[4..].into(),
            }),
            "PUT" => {
                let mut p = rest.splitn(3, ' ');
                let size = p
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("PUT needs a size")?;
                let sha256 = p
                    .next()
                    .filter(|h| is_sha256_hex(h))
                    .ok_or("PUT needs a SHA-256 in hex")?;
                let path = p
                    .next()
                    .filter(|p| !p.is_empty())
                    .ok_or("PUT needs a path")?;
                Ok(Request::Put {
                    size,
                    sha256: sha256.to_ascii_lowercase(),
                    path: path.into(),
                })
            }
            _ => Err(format!(
                "unknown request '{}'",
                line.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// A server's answer line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `OK`: a PUT is stored.
    Ok,
    /// `OK <size> <sha256-hex>`: a GET's file follows.
    File {
        /// Bytes that follow.
        size: u64,
        /// Their SHA-256, lowercase hex.
        sha256: String,
    },
    /// `OK <bytes>`: what a SINK counted.
    Count(u64),
    /// `ERR <message>`: a refusal.
    Err(String),
}

impl Answer {
    /// The answer line (with its `\n`).
    pub fn line(&self) -> String {
        match self {
            Answer::Ok => "OK\n".into(),
            Answer::File { size, sha256 } => format!("OK {size} {sha256}\n"),
            Answer::Count(n) => format!("OK {n}\n"),
            Answer::Err(message) => format!("ERR {message}\n"),
        }
    }

    /// Parses an answer line (without its `\n`); `None` for anything else.
    pub fn parse(line: &str) -> Option<Answer> {
        if let Some(message) = line.strip_prefix("ERR") {
            return Some(Answer::Err(message.trim().to_owned()));
        }
        let mut p = line.split(' ');
        match (p.next()?, p.next(), p.next(), p.next()) {
            ("OK", None, None, None) => Some(Answer::Ok),
            ("OK", Some(n), None, None) => n.parse().ok().map(Answer::Count),
            ("OK", Some(size), Some(sha), None) if is_sha256_hex(sha) => Some(Answer::File {
                size: size.parse().ok()?,
                sha256: sha.to_ascii_lowercase(),
            }),
            _ => None,
        }
    }
}

/// Whether `s` is a SHA-256 in hex (either case).
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, lowercase hex (as in `PUT` and `OK <size> <sha256-hex>`).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Echo,
            Request::Sink,
            Request::Source { bytes: 1 << 30 },
            Request::Stats,
            Request::Get {
                path: "dir/file name.txt".into(),
            },
            Request::Put {
                size: 5,
                sha256: "ab".repeat(32),
                path: "a/b".into(),
            },
            Request::PutStream {
                path: "from stdin".into(),
            },
            Request::List { path: None },
            Request::List {
                path: Some("a b/c".into()),
            },
            Request::Mkdir {
                path: "d".into(),
                parents: false,
            },
            Request::Mkdir {
                path: "d/e".into(),
                parents: true,
            },
            Request::Remove {
                path: "f".into(),
                recursive: false,
            },
            Request::Remove {
                path: "d".into(),
                recursive: true,
            },
        ] {
            let line = r.line();
            assert_eq!(Request::parse(line.trim_end_matches('\n')).unwrap(), r);
        }
        assert!(Request::parse("PUT x y z").is_err());
        assert!(Request::parse("DELETE /").is_err());
        assert!(Request::parse("GET").is_err());
        assert!(Request::parse("MKDIR").is_err());
        assert!(Request::parse("RM").is_err());
        assert!(Request::parse("PUT * * ").is_err());
    }

    #[test]
    fn answers_round_trip() {
        for a in [
            Answer::Ok,
            Answer::Count(12),
            Answer::File {
                size: 3,
                sha256: sha256_hex(b"abc"),
            },
            Answer::Err("no such file".into()),
        ] {
            assert_eq!(Answer::parse(a.line().trim_end_matches('\n')), Some(a));
        }
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for bad in ["OK x y", "OK 1 abc", "OK 1 2 3", "YES", ""] {
            assert_eq!(Answer::parse(bad), None, "{bad}");
        }
    }
}
