//! The services a `quill server` offers on bidirectional streams (docs/SPEC.md §10).
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
//!
//! Paths are relative to the server's `--root`, `/`-separated; `..`, absolute paths,
//! control characters, the names of uploads in progress and anything that would leave
//! the root are refused with `ERR`. The server writes a PUT to a temporary file and
//! renames it only after the SHA-256 matched. An `ERR` sent before the client finished
//! is followed by STOP_SENDING: the client's writes fail at once and it reads the `ERR`.

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
            "SOURCE" => rest
                .parse()
                .map(|bytes| Request::Source { bytes })
                .map_err(|_| "SOURCE needs a byte count".into()),
            "GET" if !rest.is_empty() => Ok(Request::Get { path: rest.into() }),
            "PUT" => {
                let mut p = rest.splitn(3, ' ');
                let size = p
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("PUT needs a size")?;
                let sha256 = p
                    .next()
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
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

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            Request::Get {
                path: "dir/file name.txt".into(),
            },
            Request::Put {
                size: 5,
                sha256: "ab".repeat(32),
                path: "a/b".into(),
            },
        ] {
            let line = r.line();
            assert_eq!(Request::parse(line.trim_end_matches('\n')).unwrap(), r);
        }
        assert!(Request::parse("PUT x y z").is_err());
        assert!(Request::parse("DELETE /").is_err());
        assert!(Request::parse("GET").is_err());
    }
}
