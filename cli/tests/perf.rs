//! `quill perf` as iperf3 users expect it (issue 16): the real binary against a real
//! `quill server` (`tests/common`). No timing assertions: counts, shapes and whose
//! figures are whose.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command;
use common::{child, stderr, TestServer, PASSWORD, USER};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// `quill perf ADDR ARGS --user alice --password-stdin --host-key FP`.
fn perf(server: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("quill").expect("binary");
    c.timeout(TIMEOUT)
        .env_remove("QUILL_KNOWN_HOSTS")
        .args(["perf", &server.addr])
        .args(args)
        .args(["--user", USER, "--password-stdin", "--host-key"])
        .arg(&server.fingerprint)
        .write_stdin(format!("{PASSWORD}\n"));
    c
}

/// Runs `perf ... --json`, expects success and one JSON object on stdout.
fn perf_json(server: &TestServer, args: &[&str]) -> Value {
    let o = perf(server, args).arg("--json").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

#[test]
fn json_has_iperf3_shape_intervals_and_both_ends() {
    let server = TestServer::start(false);
    let v = perf_json(&server, &["-t", "2", "-i", "1"]);
    let start = &v["start"]["test_start"];
    assert_eq!(start["num_streams"], 1, "{v}");
    assert_eq!(start["reverse"], 0, "{v}");
    assert_eq!(start["duration"], 2.0, "{v}");
    assert!(v["start"]["version"]
        .as_str()
        .unwrap()
        .starts_with("quill "));
    let intervals = v["intervals"].as_array().expect("intervals");
    assert!((1..=3).contains(&intervals.len()), "{v}");
    for i in intervals {
        assert_eq!(i["streams"].as_array().unwrap().len(), 1, "{i}");
        for key in ["start", "end", "seconds", "bytes", "bits_per_second"] {
            assert!(i["sum"][key].is_number(), "{key} in {i}");
        }
    }
    let end = &v["end"];
    for key in [
        "host_total",
        "host_user",
        "host_system",
        "remote_total",
        "remote_user",
        "remote_system",
    ] {
        assert!(
            end["cpu_utilization_percent"][key].is_number(),
            "{key}: {v}"
        );
    }
    assert_eq!(end["server_figures"], "available", "{v}");
    assert_eq!(end["sum_sent"]["side"], "client");
    assert_eq!(end["sum_received"]["side"], "server");
    assert_eq!(end["lost_packets_side"], "client");
    assert!(end["remote_rtt_ms"].is_number(), "{v}");
    // The server's count of what its sink received is what the client sent.
    assert_eq!(
        end["server"]["bytes_received"], end["sum_sent"]["bytes"],
        "{v}"
    );
}

#[test]
fn bytes_bound_tests_move_exactly_n_both_ways() {
    let server = TestServer::start(false);
    let n = 3 * 1024 * 1024;
    for reverse in [false, true] {
        let mut args = vec!["-n", "3M", "-P", "2"];
        if reverse {
            args.push("-R");
        }
        let v = perf_json(&server, &args);
        let end = &v["end"];
        assert_eq!(end["sum_sent"]["bytes"], n, "{v}");
        assert_eq!(end["sum_received"]["bytes"], n, "{v}");
        assert_eq!(v["start"]["test_start"]["bytes"], n, "{v}");
        assert_eq!(v["bytes"], n, "quill's flat field: {v}");
        let sender = if reverse { "server" } else { "client" };
        assert_eq!(end["sum_sent"]["side"], sender, "{v}");
        assert_eq!(end["lost_packets_side"], sender, "{v}");
        assert!(end["lost_packets"].is_number(), "{v}");
        if reverse {
            // The sender's count is the server's, not the client's.
            assert_eq!(end["lost_packets"], end["server"]["packets_lost"], "{v}");
            assert_eq!(end["server"]["bytes_sent"], n, "{v}");
        } else {
            assert_eq!(end["lost_packets"], end["client"]["packets_lost"], "{v}");
            assert_eq!(end["server"]["bytes_received"], n, "{v}");
        }
    }
}

#[test]
fn parallel_streams_appear_in_every_interval_both_ways() {
    let server = TestServer::start(false);
    for reverse in [false, true] {
        let mut args = vec!["-t", "1", "-i", "500ms", "-P", "3"];
        if reverse {
            args.push("-R");
        }
        let v = perf_json(&server, &args);
        assert_eq!(v["start"]["test_start"]["num_streams"], 3, "{v}");
        let intervals = v["intervals"].as_array().expect("intervals");
        assert!(!intervals.is_empty(), "{v}");
        for i in intervals {
            assert_eq!(i["streams"].as_array().unwrap().len(), 3, "{i}");
            let sum: u64 = i["streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["bytes"].as_u64().unwrap())
                .sum();
            assert_eq!(i["sum"]["bytes"], sum, "{i}");
        }
        let end = &v["end"];
        let sent = end["sum_sent"]["bytes"].as_u64().expect("sender's bytes");
        let received = end["sum_received"]["bytes"].as_u64().unwrap();
        if reverse {
            // The server handed at least what arrived to its connection.
            assert!(sent >= received, "{v}");
            assert_eq!(end["lost_packets_side"], "server", "{v}");
            assert!(end["lost_packets"].is_number(), "{v}");
        } else {
            assert_eq!(sent, received, "every stream's count was confirmed: {v}");
        }
    }
}

#[test]
fn human_report_has_units_sides_and_whose_cpu() {
    let server = TestServer::start(false);
    let o = perf(&server, &["-n", "2M", "-R"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "[ ID] Interval           Transfer     Bitrate",
        "2.00 MBytes",
        "bits/sec",
        "sender (server)",
        "receiver (client)",
        "CPU client ",
        "% user, ",
        ", server ",
        "RTT client ",
    ] {
        assert!(out.contains(want), "missing '{want}' in:\n{out}");
    }
    assert!(!out.contains("unavailable"), "{out}");
}

#[test]
fn bad_input_is_a_one_line_error() {
    let server = TestServer::start(false);
    for (args, needle) in [
        (&["-n", "10Q"][..], "'10Q' is not a byte count"),
        (&["-n", "0"][..], "at least 1"),
        (&["-P", "0"][..], "-P/--parallel must be 1 to 64"),
        (&["-P", "65"][..], "-P/--parallel must be 1 to 64"),
        (&["-t", "0"][..], "-t/--time must be more than 0"),
        (&["-t", "ten"][..], "is not a duration"),
        (&["-t", "1", "-n", "1M"][..], "cannot be used with"),
        (&["-i", "10ms", "-n", "1M"][..], "at least 100ms"),
    ] {
        let o = perf(&server, args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains(needle), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_refused_login_fails_without_a_report() {
    let server = TestServer::start(false);
    let mut c = Command::cargo_bin("quill").expect("binary");
    let o = c
        .timeout(TIMEOUT)
        .args(["perf", &server.addr, "-n", "1M", "--json"])
        .args(["--user", USER, "--password-stdin", "--host-key"])
        .arg(&server.fingerprint)
        .write_stdin("not the password\n")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn a_server_killed_mid_test_ends_the_test_with_an_error() {
    for reverse in [false, true] {
        let mut server = TestServer::start(false);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quill"));
        cmd.args(["perf", &server.addr, "-t", "60", "-i", "200ms"])
            .args(["--user", USER, "--password-stdin", "--host-key"])
            .arg(&server.fingerprint)
            .env_remove("QUILL_KNOWN_HOSTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if reverse {
            cmd.arg("-R");
        }
        let mut client = cmd.spawn().unwrap();
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
        drop(stdin);
        let lines = child::lines(client.stdout.take().unwrap());
        let errs = child::reader(client.stderr.take());
        // The first interval line says data moves; then the server dies.
        let mut seen = String::new();
        while !seen.contains("sec ") {
            match lines.recv_timeout(TIMEOUT) {
                Ok(l) => seen = l,
                Err(e) => {
                    child::kill(&mut client);
                    panic!("no interval line ({e}); stderr: {:?}", errs.recv().ok());
                }
            }
        }
        server.kill();
        let status = child::wait_or_kill(&mut client, TIMEOUT)
            .expect("the client gives up within its bound after the server died");
        let err = errs.recv_timeout(TIMEOUT).unwrap_or_default();
        assert!(!status.success(), "reverse {reverse}: {err}");
        assert!(err.contains("quill: "), "reverse {reverse}: {err}");
    }
}
