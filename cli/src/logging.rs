//! Log output on standard error: `tracing` events through a filter and a formatter
//! (text or JSON lines), written by a writer thread so that no thread that logs — the
//! server's event loop above all — ever waits for standard error.
//!
//! The filter, from the first that is set: `RUST_LOG` (an `EnvFilter` directive such
//! as `info` or `warn,quill::login=info`), `-q`/`-v`, the server's `log-level` config
//! key, the command's default (`info` for `quill server`, whose connection events are
//! its log; `warn` for the rest). The filter can be replaced while running
//! ([`Logs::set_level`], `quill server` on SIGHUP).
//!
//! Colour only when standard error is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>): files, pipes and journald get plain text.
//!
//! The writer: [`tracing_appender::non_blocking`], a bounded queue of
//! [`LOG_QUEUE_LINES`] lines in front of a thread that writes them to standard error.
//! When standard error does not keep up (a full pipe nobody reads) and the queue is
//! full, new lines are **dropped**, not waited for; [`finish`] counts them and says so
//! on the way out. [`finish`] (called by `interrupt::exit` before the process exits)
//! flushes what is queued, waiting at most about a second.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Most log lines queued for the writer thread; beyond that, lines are dropped.
pub const LOG_QUEUE_LINES: usize = 16 * 1024;

/// How log lines look (`--log-format`, the server's `log-format` config key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL message key=value ...`, one line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the
    /// event's fields).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("log-format is text or json, not '{s}'")),
        }
    }
}

/// Where the level comes from, weakest first.
#[derive(Debug, Clone)]
pub struct LevelChoice {
    /// `info` for the server, `warn` otherwise.
    pub default: tracing::Level,
    /// `-v` count (each one step more verbose than `default`).
    pub verbose: u8,
    /// `-q`: errors only.
    pub quiet: bool,
}

impl LevelChoice {
    /// The filter directive: `RUST_LOG` if set and non-empty, else `-q`/`-v`, else
    /// `configured` (the server's `log-level`), else the default. The second value
    /// says where it came from.
    pub fn directive(&self, configured: Option<&str>) -> (String, &'static str) {
        match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => (env, "RUST_LOG"),
            _ => self.without_env(configured),
        }
    }

    /// [`LevelChoice::directive`] as if `RUST_LOG` were unset.
    fn without_env(&self, configured: Option<&str>) -> (String, &'static str) {
        if self.quiet {
            return ("error".into(), "-q");
        }
        if self.verbose > 0 {
            let levels = [
                tracing::Level::ERROR,
                tracing::Level::WARN,
                tracing::Level::INFO,
                tracing::Level::DEBUG,
                tracing::Level::TRACE,
            ];
            let at = levels.iter().position(|l| *l == self.default).unwrap_or(1);
            let level = levels[(at + self.verbose as usize).min(levels.len() - 1)];
            return (level.to_string().to_lowercase(), "-v");
        }
        match configured {
            Some(c) => (c.to_owned(), "the configuration file"),
            None => (self.default.to_string().to_lowercase(), "the default"),
        }
    }
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `log-level` value: a level (`off`, `error`, `warn`, `info`, `debug`,
/// `trace`) or comma-separated `TARGET=LEVEL` directives beside one (`warn,quill::login=info`).
pub fn check_level(value: &str) -> Result<(), String> {
    let ok = !value.trim().is_empty()
        && value.split(',').all(|part| {
            let level = part.rsplit_once('=').map_or(part, |(_, l)| l).trim();
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        });
    if !ok {
        return Err(format!(
            "'{value}' is not a log level: one of {} or a filter like warn,quill::login=info",
            LEVELS.join(", ")
        ));
    }
    parse_filter(value).map(|_| ())
}

/// Checks a `log-level` value (an `EnvFilter` directive: `info`, `debug`,
/// `warn,quill::login=info`, ...).
pub fn parse_filter(directive: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| format!("'{directive}' is not a log filter ({e})"))
}

/// The installed logger: change its filter with [`Logs::set_level`].
pub struct Logs {
    filter: reload::Handle<EnvFilter, Registry>,
    choice: LevelChoice,
    /// The directive in force.
    current: Mutex<String>,
}

impl Logs {
    /// Applies `configured` (a `log-level` from a reloaded configuration) unless
    /// `RUST_LOG` or `-q`/`-v` decide. Returns `Some((old, new))` when the filter
    /// changed.
    pub fn set_level(&self, configured: Option<&str>) -> Result<Option<(String, String)>, String> {
        let (directive, _) = self.choice.directive(configured);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *current == directive {
            return Ok(None);
        }
        let filter = parse_filter(&directive)?;
        self.filter
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        let old = std::mem::replace(&mut *current, directive.clone());
        Ok(Some((old, directive)))
    }
}

struct Writer {
    guard: WorkerGuard,
    dropped: ErrorCounter,
}

static WRITER: Mutex<Option<Writer>> = Mutex::new(None);

/// Installs the global logger. `configured` is the server's `log-level` (checked by
/// its caller); a bad `RUST_LOG` is reported and the level falls back to `-q`/`-v` or
/// the default.
pub fn init(choice: LevelChoice, configured: Option<&str>, format: LogFormat) -> Logs {
    let (mut directive, from) = choice.directive(configured);
    let filter = match parse_filter(&directive) {
        Ok(f) => f,
        Err(e) => {
            crate::output::note!("quill: {from}: {e}; ignoring it");
            directive = choice.without_env(configured).0;
            parse_filter(&directive).unwrap_or_else(|_| EnvFilter::new("warn"))
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    // The writer thread starts with every signal blocked: SIGINT, SIGTERM and SIGHUP
    // belong to the threads that wait for them (the server's signal thread,
    // `interrupt`), which block them only later; a signal delivered to this thread
    // would take its default action and end the process.
    let (writer, guard) = with_signals_blocked(|| {
        NonBlockingBuilder::default()
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .lossy(true)
            .thread_name("quill-log")
            .finish(std::io::stderr())
    });
    let dropped = writer.error_counter();
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(colour)
            .with_target(false)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
    *WRITER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Writer { guard, dropped });
    Logs {
        filter: handle,
        choice,
        current: Mutex::new(directive),
    }
}

/// Runs `f` (which spawns a thread) with every signal blocked in the calling thread,
/// so that the new thread inherits the blocked mask; the caller's mask is restored.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigfillset initialises a set we own; pthread_sigmask changes only the
    // calling thread's mask, and the old mask is put back below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    let out = f();
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    out
}

/// Flushes queued log lines (waiting about a second at most) and says how many were
/// dropped because standard error did not keep up. Call before the process exits.
pub fn finish() {
    let writer = WRITER.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(Writer { guard, dropped }) = writer {
        drop(guard);
        let n = dropped.dropped_lines();
        if n > 0 {
            crate::output::note!(
                "quill: {n} log lines were dropped: standard error did not keep up"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_step_from_the_default() {
        let choice = |verbose, quiet| LevelChoice {
            default: tracing::Level::INFO,
            verbose,
            quiet,
        };
        if std::env::var_os("RUST_LOG").is_some() {
            return; // the environment decides; nothing to check here
        }
        assert_eq!(choice(0, false).directive(None).0, "info");
        assert_eq!(choice(1, false).directive(None).0, "debug");
        assert_eq!(choice(9, false).directive(None).0, "trace");
        assert_eq!(choice(0, true).directive(Some("debug")).0, "error");
        assert_eq!(choice(0, false).directive(Some("debug")).0, "debug");
        assert_eq!(choice(1, false).directive(Some("warn")).0, "debug");
    }

    #[test]
    fn config_levels_are_checked() {
        assert!(check_level("info").is_ok());
        assert!(check_level("DEBUG").is_ok());
        assert!(check_level("warn,quill::login=info").is_ok());
        let err = check_level("loud").unwrap_err();
        assert!(err.contains("not a log level"), "{err}");
        assert!(check_level("").is_err());
        assert!(check_level("info,quill=").is_err());
    }
}
