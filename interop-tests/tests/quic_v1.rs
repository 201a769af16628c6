//! `--suite quic-v1` end to end: quill (`quill-interop-peer hq`) and reference QUIC
//! stacks that nobody here wrote (quinn, quiche, aioquic from PyPI, ngtcp2 from Debian's
//! libngtcp2 under our C peer) fetch files from
//! each other over hq-interop through the relay on the interop runner's default link,
//! judged by the suite's pass rules.
//!
//! quill runs handshake, transfer and retry with every reference stack in both roles;
//! the control cells run peer ↔ peer in both directions. aioquic is installed on first use by `interop-tests/peers/setup.sh` (a venv,
//! pip, a few seconds), ngtcp2 by `setup.sh ngtcp2` (apt, cc, a few seconds); where that
//! cannot work their cells say `unsupported` and the test fails, because CI (`.ci/deps`)
//! installs both.

use std::path::PathBuf;

use quill_interop::runner::{self, quic_v1, Outcome, RunOptions};

fn options(scenarios: &[&str], results: &std::path::Path) -> RunOptions {
    let mut o = RunOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_quill-interop-peer")));
    o.suite = "quic-v1".into();
    o.scenarios = scenarios.iter().map(|s| s.to_string()).collect();
    o.results = results.to_path_buf();
    o.previous_release = false;
    o.seed = 3;
    o
}

#[test]
fn quill_and_the_reference_stacks_pass_handshake_transfer_and_retry_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let o = options(&["handshake", "transfer", "retry"], dir.path());
    let pairs = [
        ("quill", "quinn"),
        ("quinn", "quill"),
        ("quill", "quiche"),
        ("quiche", "quill"),
        ("quill", "aioquic"),
        ("aioquic", "quill"),
        ("quinn", "quiche"),
        ("quiche", "quinn"),
        ("aioquic", "quinn"),
        ("quinn", "aioquic"),
        ("aioquic", "quiche"),
        ("quiche", "aioquic"),
        ("quill", "ngtcp2"),
        ("ngtcp2", "quill"),
        ("ngtcp2", "quinn"),
        ("quinn", "ngtcp2"),
        ("ngtcp2", "quiche"),
        ("quiche", "ngtcp2"),
        ("ngtcp2", "aioquic"),
        ("aioquic", "ngtcp2"),
    ];
    let cells = quic_v1::run_pairs(&o, &pairs);
    let table = runner::markdown(&cells, &o);
    assert_eq!(cells.len(), 3 * pairs.len(), "{table}");
    for c in &cells {
        assert!(
            matches!(c.outcome, Outcome::Pass(_)),
            "{} ({}): {:?}\n{table}",
            c.scenario,
            c.pairing(),
            c.outcome
        );
        // Every peer reported what it negotiated: QUIC v1 and hq-interop.
        for side in ["client", "server"] {
            let r = &c.metrics[side];
            assert_eq!(r["version"], "0x00000001", "{side} of {}: {r}", c.pairing());
            assert_eq!(r["alpn"], "hq-interop", "{side} of {}: {r}", c.pairing());
        }
        if c.scenario == "retry" {
            assert!(
                c.outcome.reason().contains("token echoed"),
                "{:?}",
                c.outcome
            );
            assert!(c.metrics["server"]["retry_sent"].as_u64() >= Some(1));
        }
    }
}

/// QUIC v2 by compatible version negotiation: quill ↔ quill and quill ↔ aioquic
/// (aioquic 1.7.2 speaks v2) pass the interop runner's v2 rule both ways and report
/// v2; quinn and quiche have no v2 and say so.
#[test]
fn v2_upgrade_passes_with_quill_and_aioquic_and_is_unsupported_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let o = options(&["v2"], dir.path());
    // client > server
    let pairs: Vec<(&str, &str)> =
        "quill>quill quill>aioquic aioquic>quill quill>quinn quiche>quill"
            .split(' ')
            .filter_map(|p| p.split_once('>'))
            .collect();
    let cells = quic_v1::run_pairs(&o, &pairs);
    let table = runner::markdown(&cells, &o);
    assert_eq!(cells.len(), pairs.len(), "{table}");
    for c in &cells {
        if c.client == "quinn" || c.server == "quinn" || c.client == "quiche" {
            match &c.outcome {
                Outcome::Unsupported(why) => assert!(why.contains("has no QUIC v2"), "{why}"),
                other => panic!("{}: {other:?}\n{table}", c.pairing()),
            }
            continue;
        }
        assert!(
            matches!(c.outcome, Outcome::Pass(_)),
            "{}: {:?}\n{table}",
            c.pairing(),
            c.outcome
        );
        for side in ["client", "server"] {
            let r = &c.metrics[side];
            assert_eq!(r["version"], "0x6b3343cf", "{side} of {}: {r}", c.pairing());
        }
    }
}

#[test]
fn cells_a_stack_cannot_play_are_unsupported_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let o = options(&["chacha20", "handshake"], dir.path());
    let cells = quic_v1::run_pairs(&o, &[("quiche", "quinn"), ("quill", "quinn")]);
    let table = runner::markdown(&cells, &o);
    let cell = |sc: &str, client: &str| {
        cells
            .iter()
            .find(|c| c.scenario == sc && c.client == client)
            .unwrap_or_else(|| panic!("no {sc} cell for {client}\n{table}"))
    };
    // quiche's client cannot restrict BoringSSL's TLS 1.3 suites: the peer says so.
    match &cell("chacha20", "quiche").outcome {
        Outcome::Unsupported(why) => assert!(why.contains("ChaCha20"), "{why}"),
        other => panic!("{other:?}\n{table}"),
    }
    assert!(
        matches!(cell("handshake", "quiche").outcome, Outcome::Pass(_)),
        "{table}"
    );
    // quill's client offers TLS_CHACHA20_POLY1305_SHA256 alone, and the server
    // (quinn) must pick it.
    match &cell("chacha20", "quill").outcome {
        Outcome::Pass(_) => {}
        other => panic!("{other:?}\n{table}"),
    }
    assert!(
        matches!(cell("handshake", "quill").outcome, Outcome::Pass(_)),
        "{table}"
    );
}

#[test]
fn bad_suite_or_peer_is_a_usage_error() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        runner::main_with(&args(&["run", "--suite", "quic-v2"]), None),
        runner::USAGE
    );
    assert_eq!(
        runner::main_with(
            &args(&["run", "--suite", "quic-v1", "--peers", "msquic"]),
            None
        ),
        runner::USAGE
    );
    assert_eq!(
        runner::main_with(
            &args(&["run", "--suite", "quic-v1", "--scenario", "login"]),
            None
        ),
        runner::USAGE
    );
}
