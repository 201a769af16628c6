//! The scenario runner end to end: the real runner code path ([`runner::run`]) with the
//! real peer executables, server peer ↔ relay ↔ client peer on loopback.
//!
//! The quick subset runs by default (well under two minutes on two busy cores); the
//! whole matrix is `#[ignore]`d: `cargo test --release -p quill-interop --test scenarios
//! -- --ignored`, or better `cargo run --release -p quill-interop -- run --scenario all`.

use std::path::PathBuf;
use std::process::Command;

use quill_interop::runner::{self, Cell, FaultSpec, Outcome, RunOptions};

fn options(scenarios: &[&str], results: &std::path::Path) -> RunOptions {
    let mut o = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_quill-interop-peer")));
    o.scenarios = scenarios.iter().map(|s| s.to_string()).collect();
    o.results = results.to_path_buf();
    o.previous_release = false;
    o.seed = 7;
    o
}

/// Options for `scenario` alone with `fault` (`name` on `side`).
fn with_fault(scenario: &str, side: &str, name: &str, results: &std::path::Path) -> RunOptions {
    let mut o = options(&[scenario], results);
    o.fault = Some(FaultSpec {
        side: side.into(),
        name: name.into(),
    });
    o
}

/// Runs the one scenario of `o`, which must fail; returns why.
fn failure_reason(o: &RunOptions) -> String {
    let cells = runner::run(o);
    assert_eq!(cells.len(), 1);
    match &cells[0].outcome {
        Outcome::Fail(reason) => reason.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn show(cells: &[Cell], o: &RunOptions) -> String {
    runner::markdown(cells, o)
}

#[test]
fn quick_subset_passes() {
    let dir = tempfile::tempdir().unwrap();
    let o = options(
        &[
            "handshake",
            "transferloss",
            "retry",
            "rebind-port",
            "keepalive",
        ],
        dir.path(),
    );
    let cells = runner::run(&o);
    let table = show(&cells, &o);
    assert_eq!(cells.len(), 5, "{table}");
    for c in &cells {
        assert!(
            matches!(c.outcome, Outcome::Pass(_)),
            "{} failed: {}\n{table}",
            c.scenario,
            c.outcome.reason()
        );
    }
}

#[test]
fn ignoring_path_challenge_turns_rebind_port_red() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = with_fault("rebind-port", "client", "ignore-path-challenge", dir.path());
    // The broken client stalls behind the server's anti-amplification limit; do not
    // wait the full timeout for it.
    o.timeout_factor = 0.3;
    let reason = failure_reason(&o);
    assert!(
        reason.contains("validated no new path"),
        "unexpected reason: {reason}"
    );
    // The failed cell's capture is kept for inspection.
    assert!(dir
        .path()
        .join("captures/rebind-port__quill__quill.jsonl")
        .is_file());
}

#[test]
fn truncated_download_fails_the_sha256_rule() {
    let dir = tempfile::tempdir().unwrap();
    let o = with_fault("handshake", "server", "truncate-file", dir.path());
    let reason = failure_reason(&o);
    assert!(
        reason.contains("SHA-256 mismatch") && reason.contains("9999 bytes received"),
        "unexpected reason: {reason}"
    );
}

#[test]
fn runner_cli_writes_results_and_refuses_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_quill-interop");
    let peer = env!("CARGO_BIN_EXE_quill-interop-peer");
    for bad in [
        vec!["run", "--scenario", "nosuch"],
        vec!["run", "--seed", "x"],
        vec!["run", "--peers", "tcp"],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = Command::new(bin).args(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{bad:?}: {err}");
    }
    let out = Command::new(peer)
        .args(["client", "--connect", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin)
        .args(["peer", "server", "--root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "run",
            "--scenario",
            "handshake",
            "--no-previous",
            "--quiet",
            "--json",
        ])
        .args(["--peer-bin", peer, "--results"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cells"][0]["scenario"], "handshake");
    assert_eq!(v["cells"][0]["result"], "pass");
    let md = std::fs::read_to_string(dir.path().join("matrix.md")).unwrap();
    assert!(md.contains("| handshake | pass"), "{md}");
    assert!(dir.path().join("matrix.json").is_file());
}

/// The whole matrix (several minutes): `cargo test --release -p quill-interop --test
/// scenarios -- --ignored`.
#[test]
#[ignore]
fn full_matrix_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&[], dir.path());
    o.scenarios = runner::SCENARIOS
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    o.previous_release = true;
    o.verbose = true;
    let cells = runner::run(&o);
    let table = show(&cells, &o);
    println!("{table}");
    assert!(
        !cells.iter().any(|c| matches!(c.outcome, Outcome::Fail(_))),
        "{table}"
    );
}
