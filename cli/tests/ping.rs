//! `quill ping` as the real binary against a real `quill server` (`tests/common`):
//! transport PINGs printed like ping(8), `--echo`, and a server that dies mid-run.
//! Every command has a timeout; no assertion is about how long a round trip took.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::{stderr, TestServer, PASSWORD, USER};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `quill ping ADDR ARGS --user alice --password-stdin --host-key FP`.
fn ping(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("quill")
        .expect("binary")
        .timeout(TIMEOUT)
        .env_remove("QUILL_KNOWN_HOSTS")
        .args(["ping", &server.addr])
        .args(args)
        .args(["--user", USER, "--password-stdin", "--host-key"])
        .arg(&server.fingerprint)
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap()
}

/// The milliseconds of `line` after `prefix` and before `suffix`, split at `/`.
fn millis(line: &str, prefix: &str, suffix: &str) -> Vec<f64> {
    let rest = line
        .strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix}...{suffix}"));
    rest.split('/')
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{v:?} in {line:?}")))
        .collect()
}

/// Checks the statistics block at the end of `lines`: `answered` out of `sent`.
fn assert_statistics(lines: &[&str], addr: &str, sent: u32, answered: &str) {
    let n = lines.len();
    assert_eq!(lines[n - 4], format!("--- {addr} ping statistics ---"));
    assert_eq!(
        lines[n - 3],
        format!("{sent} sent, {sent} {answered}, 0% lost")
    );
    let rtt = millis(lines[n - 2], "rtt min/avg/max/mdev = ", " ms");
    assert_eq!(rtt.len(), 4, "{}", lines[n - 2]);
    assert!(rtt[0] <= rtt[1] && rtt[1] <= rtt[2], "min/avg/max {rtt:?}");
    assert!(rtt[3] >= 0.0);
    millis(lines[n - 1], "transport smoothed rtt = ", " ms");
}

#[test]
fn transport_pings_print_a_line_each_and_the_statistics() {
    let server = TestServer::start(false);
    let o = ping(&server, &["-c", "3", "-i", "100ms"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(lines[0].starts_with("connected to "), "{out}");
    for (i, l) in lines[1..4].iter().enumerate() {
        let t = millis(l, &format!("seq={} time=", i + 1), " ms");
        assert!(t[0] >= 0.0, "{out}");
    }
    assert_statistics(&lines, &server.addr, 3, "acknowledged");
}

#[test]
fn echo_still_times_stream_round_trips() {
    let server = TestServer::start(false);
    let o = ping(&server, &["-c", "2", "-i", "10ms", "--echo"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    for (i, l) in lines[1..3].iter().enumerate() {
        millis(l, &format!("seq={} time=", i + 1), " ms");
    }
    assert_statistics(&lines, &server.addr, 2, "received");
}

#[test]
fn help_says_what_is_timed() {
    let o = Command::cargo_bin("quill")
        .unwrap()
        .args(["ping", "--help"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.contains("PING frames"), "{out}");
    assert!(out.contains("ACK delay"), "{out}");
    assert!(out.contains("--echo"), "{out}");
}

/// The server is killed after the first answer: the pings after it are reported lost
/// (each after the transport's timeout) and the run ends with the statistics.
#[test]
fn pings_to_a_server_that_died_are_reported_lost_and_the_run_ends() {
    let mut server = TestServer::start(false);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("quill"))
        .env_remove("QUILL_KNOWN_HOSTS")
        .args(["ping", &server.addr, "-c", "3", "-i", "500ms"])
        .args(["--user", USER, "--password-stdin", "--host-key"])
        .arg(&server.fingerprint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !out.iter().any(|l: &String| l.starts_with("seq=1 ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(e) => {
                let _ = child.kill();
                panic!("no first answer ({e}): {out:?}");
            }
        }
    }
    server.kill();
    // Bound: the last ping leaves 1 s after the first and is given up on 1 s (or 3
    // PTOs on this fast path) later.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("quill ping still running 20 s after the server died: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
        out.push(l);
    }
    assert!(out[1].starts_with("seq=1 time="), "{out:?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("seq=3 lost (no ACK within ") && l.ends_with(" ms)")),
        "{out:?}"
    );
    let summary = out
        .iter()
        .find(|l| l.starts_with("3 sent, "))
        .unwrap_or_else(|| panic!("no summary: {out:?}"));
    let answered: u32 = summary["3 sent, ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..3).contains(&answered), "{summary}");
    assert!(summary.ends_with("% lost"), "{summary}");
    // Some pings were answered before the server died: like ping(8), that is success.
    assert_eq!(status.code(), Some(0), "{out:?}");
}
