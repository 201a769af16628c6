//! README.md's Quick start, run line by line as a user would type it, so that the
//! README cannot drift from the program again.
//!
//! The code block under "Quick start" is fed one line at a time to one `bash` in an
//! empty directory, with the `quill` just built first on `PATH` and `HOME` in that
//! directory (for `~/.quill/known_hosts`). Each line must exit 0. Two things a person at
//! a terminal does without thinking are done by the test: after a line that starts the
//! server in the background (`&`) it waits until the server says `listening`, and the
//! port 4433 is replaced by a free one (the server line gets `--listen 127.0.0.1:PORT`)
//! so that the test does not depend on 4433 being free. Every wait is bounded.

/// Child-process helpers (shared with the interop suite).
#[path = "../../interop-tests/src/child.rs"]
#[allow(dead_code)]
mod child;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on one line (a handshake, a transfer of a few bytes, 3 pings).
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// The README's quick-start lines.
fn quick_start() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let from = readme
        .find("Quick start")
        .expect("README.md has a Quick start");
    let rest = &readme[from..];
    let start = rest
        .find("```sh\n")
        .expect("a ```sh block after Quick start")
        + 6;
    let end = rest[start..].find("```").expect("the block ends") + start;
    rest[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `line` with the README's port replaced by `port`, and `--listen` on the server line.
fn adapt(line: &str, port: u16) -> String {
    let line = line.replace("127.0.0.1:4433", &format!("127.0.0.1:{port}"));
    if !line.trim_start().starts_with("quill server") {
        return line;
    }
    let (command, comment) = match line.find(" #") {
        Some(i) => line.split_at(i),
        None => (line.as_str(), ""),
    };
    let command = command.trim_end();
    let (command, background) = match command.strip_suffix('&') {
        Some(c) => (c.trim_end(), " &"),
        None => (command, ""),
    };
    format!("{command} --listen 127.0.0.1:{port}{background}{comment}")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// The shell and everything it started (one process group): killed on drop.
struct Shell(Child);

impl Drop for Shell {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created for the shell.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

const MARK: &str = "__quickstart_status=";

#[test]
fn readme_quick_start_runs_line_by_line() {
    let lines = quick_start();
    assert!(lines.len() >= 5, "quick start too short: {lines:?}");
    assert!(
        lines.iter().any(|l| l.trim_end().ends_with('&')),
        "the quick start starts a server in the background"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_quill"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = free_udp_port();
    let mut child = Command::new("bash")
        .args(["--norc", "--noprofile", "-s"])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HOME", dir.path())
        .env_remove("QUILL_KNOWN_HOSTS")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let mut stdin = child.stdin.take().expect("stdin");
    let out = child::lines(child.stdout.take().expect("stdout"));
    let err = child::lines(child.stderr.take().expect("stderr"));
    let mut shell = Shell(child);
    let mut transcript = String::new();
    let drain = |transcript: &mut String| {
        for l in err.try_iter() {
            transcript.push_str(&format!("  (stderr) {l}\n"));
        }
    };

    for line in &lines {
        let line = adapt(line, port);
        transcript.push_str(&format!("$ {line}\n"));
        // Nothing on a line may read the lines that follow it from the shell's input.
        writeln!(stdin, "{{ {line}\n}} </dev/null\necho \"{MARK}$?\"").expect("write to bash");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + LINE_TIMEOUT;
        let status = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match out.recv_timeout(left) {
                Ok(l) => match l.strip_prefix(MARK) {
                    Some(code) => break code.to_string(),
                    None => transcript.push_str(&format!("  {l}\n")),
                },
                Err(_) => {
                    drain(&mut transcript);
                    panic!("no answer within {LINE_TIMEOUT:?}:\n{transcript}");
                }
            }
        };
        if line.trim_end().ends_with('&') {
            // A person waits for the server to come up before typing the next line.
            let mut up = false;
            while let Ok(l) = err.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                transcript.push_str(&format!("  (stderr) {l}\n"));
                if l.starts_with("listening ") {
                    up = true;
                    break;
                }
            }
            assert!(up, "the server did not start listening:\n{transcript}");
        }
        drain(&mut transcript);
        assert_eq!(status, "0", "a quick-start line failed:\n{transcript}");
    }

    // The last line stopped the server; the shell waits for it and ends.
    writeln!(stdin, "wait\nexit 0").expect("write to bash");
    drop(stdin);
    let deadline = Instant::now() + LINE_TIMEOUT;
    loop {
        if let Some(status) = shell.0.try_wait().expect("try_wait") {
            assert!(status.success(), "bash: {status}\n{transcript}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after the quick start's last line:\n{transcript}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for file in [
        "host.key",
        "host.key.pub",
        "alice.key",
        "copy.txt",
        "files/alice/notes.txt",
    ] {
        assert!(
            dir.path().join(file).exists(),
            "{file} missing:\n{transcript}"
        );
    }
}

#[test]
fn the_server_line_gets_the_test_port() {
    assert_eq!(
        adapt("quill server --key k --root ./files &   # note", 5000),
        "quill server --key k --root ./files --listen 127.0.0.1:5000 & # note"
    );
    assert_eq!(
        adapt("quill ping 127.0.0.1:4433 -c 3", 5000),
        "quill ping 127.0.0.1:5000 -c 3"
    );
}
