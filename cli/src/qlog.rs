//! `--qlog-dir DIR`: one qlog trace per connection, written by the transport's
//! [`QlogDir`] on its own thread. The directory is opened once per process (a bad
//! one is a one-line usage error at startup) and [`finish`] gives the writer a
//! bounded time to write the last records before the process exits.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use quill_transport::driver::qlog::QlogDir;
use quill_transport::proto::QlogSink;

use crate::exit::CliError;

/// How long [`finish`] waits for the last records.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

static DIR: OnceLock<Arc<QlogDir>> = OnceLock::new();

/// The sink for `--qlog-dir dir` (the first one opened in this process).
pub fn sink(dir: &Path) -> Result<Arc<dyn QlogSink>, CliError> {
    if let Some(d) = DIR.get() {
        return Ok(d.clone());
    }
    let d = QlogDir::create(dir).map_err(|e| {
        CliError::usage(format!(
            "--qlog-dir {}: {e}; choose a directory you can write to",
            dir.display()
        ))
    })?;
    Ok(DIR.get_or_init(|| d).clone())
}

/// Before exiting: waits (bounded) until every traced connection's records are on
/// disk; says so on stderr if they are not.
pub fn finish() {
    if let Some(d) = DIR.get() {
        if !d.finish(FINISH_TIMEOUT) {
            tracing::warn!(
                "qlog: traces in {} were still being written after {FINISH_TIMEOUT:?}; the last \
                 records may be missing",
                d.dir().display()
            );
        }
    }
}
