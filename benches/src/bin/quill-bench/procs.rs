//! Child processes of the orchestrator: spawn our own executable, read its stdout line
//! by line with a timeout, reap it with `wait4` for its exact CPU time and peak RSS, and
//! sample `/proc/PID/{stat,status}` while it runs. A child that is not reaped by the
//! time its `Proc` is dropped is killed.

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Resource usage of a reaped child (all of its threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    /// Exit code (or 128 + signal).
    pub exit: i32,
}

impl Usage {
    /// User + system CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// The JSON object `run` (one measured run) with the CPU seconds of its two processes
/// as every report gives them: `server_cpu_s` (user + system), `server_user_s`,
/// `server_sys_s`, and the same for `client_`.
pub fn with_cpu(mut run: serde_json::Value, server: &Usage, client: &Usage) -> serde_json::Value {
    for (role, u) in [("server", server), ("client", client)] {
        run[format!("{role}_cpu_s")] = u.cpu_s().into();
        run[format!("{role}_user_s")] = u.user_s.into();
        run[format!("{role}_sys_s")] = u.sys_s.into();
    }
    run
}

/// A running child.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    reaped: bool,
}

impl Proc {
    /// Starts this executable with `args`; stdin and stdout are pipes, stderr is ours.
    pub fn spawn(name: &str, args: &[String]) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        Proc::spawn_exe(name, &exe, args)
    }

    /// Starts the executable `exe` with `args` (pipes as for [`Proc::spawn`]).
    pub fn spawn_exe(name: &str, exe: &std::path::Path, args: &[String]) -> Result<Proc, String> {
        let (mut child, lines) =
            crate::child::spawn_piped(Command::new(exe).args(args), Stdio::inherit())
                .map_err(|e| format!("spawn {name}: {e}"))?;
        let stdin = child.stdin.take();
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            reaped: false,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line of the child's stdout, waiting at most `timeout`.
    pub fn line(&self, timeout: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("{}: no output within {timeout:?}", self.name))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("{}: exited without the expected output", self.name))
            }
        }
    }

    /// The next line that starts with `prefix` (others are skipped), within `timeout`.
    pub fn line_starting(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line(left)?;
            if l.starts_with(prefix) {
                return Ok(l);
            }
        }
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: stdin already closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: write to stdin: {e}", self.name))
    }

    /// Sends the control command `command` and returns the JSON of the answer line
    /// `COMMAND {JSON}` (other lines are skipped), waiting at most `timeout`.
    pub fn query(&mut self, command: &str, timeout: Duration) -> Result<serde_json::Value, String> {
        self.send_line(command)?;
        let prefix = format!("{command} ");
        let l = self.line_starting(&prefix, timeout)?;
        serde_json::from_str(&l[prefix.len()..])
            .map_err(|e| format!("{}: bad {command} JSON {l}: {e}", self.name))
    }

    /// Closes the child's stdin (the server subcommand's shutdown signal).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits at most `timeout` for the `listening ADDR` line a server prints once it is
    /// ready; returns ADDR.
    pub fn listening_addr(&self, timeout: Duration) -> Result<String, String> {
        let line = self.line_starting("listening ", timeout)?;
        Ok(line["listening ".len()..].trim().to_owned())
    }

    /// Closes stdin (every server's shutdown signal), waits at most `timeout` for the
    /// exit, which must be 0, and returns the usage.
    pub fn shut_down(&mut self, timeout: Duration) -> Result<Usage, String> {
        self.close_stdin();
        let u = self.wait(timeout)?;
        if u.exit != 0 {
            return Err(format!("server exited with {}", u.exit));
        }
        Ok(u)
    }

    /// A client's result: the JSON line it prints (within `timeout`), then its exit
    /// (within `shutdown`, and 0) and usage.
    pub fn json_result(
        &mut self,
        timeout: Duration,
        shutdown: Duration,
    ) -> Result<(serde_json::Value, Usage), String> {
        let line = self.line_starting("{", timeout)?;
        let usage = self.wait(shutdown)?;
        if usage.exit != 0 {
            return Err(format!("{} exited with {}", self.name, usage.exit));
        }
        let v = serde_json::from_str(&line)
            .map_err(|e| format!("{}: bad JSON {line}: {e}", self.name))?;
        Ok((v, usage))
    }

    /// Waits for the child to exit (at most `timeout`, then it is killed) and returns
    /// its resource usage from `wait4`.
    pub fn wait(&mut self, timeout: Duration) -> Result<Usage, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(u) = self.try_wait4(libc::WNOHANG)? {
                return Ok(u);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{}: did not exit within {timeout:?}; killed",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn try_wait4(&mut self, flags: libc::c_int) -> Result<Option<Usage>, String> {
        if self.reaped {
            return Err(format!("{}: already reaped", self.name));
        }
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value; wait4 writes into our locals.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own unreaped child; pointers are to live locals.
        let r = unsafe { libc::wait4(self.pid(), &mut status, flags, &mut ru) };
        if r == 0 {
            return Ok(None);
        }
        if r < 0 {
            return Err(format!(
                "{}: wait4: {}",
                self.name,
                std::io::Error::last_os_error()
            ));
        }
        self.reaped = true;
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        let exit = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok(Some(Usage {
            user_s: tv(ru.ru_utime),
            sys_s: tv(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
            exit,
        }))
    }

    /// Kills and reaps the child (no-op once reaped).
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.try_wait4(0);
    }

    /// CPU seconds (user + system, all threads) used so far, from `/proc/PID/stat`.
    pub fn cpu_now(&self) -> Result<f64, String> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| format!("{path}: unparsable"))?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(ticks as f64 / hz.max(1) as f64)
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
    pub fn status_kib(&self, field: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        parse_status_kib(&status, field).ok_or_else(|| format!("{path}: no {field}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may contain spaces, so fields are counted from the
/// last `)`: state is field 3, utime field 14, stime field 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value of a `Name:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (quill bench) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tquill-bench\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn runs_report_the_cpu_of_both_processes() {
        let u = |user_s, sys_s| Usage {
            user_s,
            sys_s,
            ..Usage::default()
        };
        let run = with_cpu(serde_json::json!({ "k": 1 }), &u(1.0, 0.5), &u(0.25, 0.25));
        let want = serde_json::json!({
            "k": 1,
            "server_cpu_s": 1.5, "server_user_s": 1.0, "server_sys_s": 0.5,
            "client_cpu_s": 0.5, "client_user_s": 0.25, "client_sys_s": 0.25,
        });
        assert_eq!(run, want);
    }

    #[test]
    fn own_process_has_cpu_and_rss() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&stat).is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_status_kib(&status, "VmRSS").unwrap() > 0);
    }
}
