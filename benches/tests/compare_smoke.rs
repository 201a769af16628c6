//! Smoke test of `quill-bench compare`: tiny sizes, every measurement, JSON output.
//! Checks the report's structure and that the ratios are the per-round ones; it
//! asserts nothing about timing.
//!
//! quinn and quiche live in another package (quill-interop): they take part only when
//! their executables are next to quill-bench, and the test says so when they are not.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quill-bench"))
}

/// Whether `compare` will find the reference peer `name` (it looks next to itself, or
/// in `$QUILL_BENCH_PEER_DIR`).
fn peer_present(name: &str) -> bool {
    let dir = match std::env::var_os("QUILL_BENCH_PEER_DIR") {
        Some(d) => PathBuf::from(d),
        None => exe().parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    dir.join(name).is_file()
}

fn compare(args: &[&str]) -> Value {
    let out = Command::new(exe())
        .arg("compare")
        .args(args)
        .arg("--json")
        .output()
        .expect("run quill-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {stdout:?}; stderr {stderr}"));
    serde_json::from_str(line).expect("valid JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[test]
fn compare_reports_every_measurement_with_per_round_ratios() {
    let mut stacks = vec!["quill", "tcp", "tcp-tls"];
    for (peer, cross) in [("quinn", "quinn-to-quill"), ("quiche", "quill-to-quiche")] {
        if peer_present(&format!("{peer}-peer")) {
            stacks.extend([peer, cross]);
        } else {
            println!(
                "skipping {peer}: {peer}-peer is not next to quill-bench \
                 (build it with `cargo build -p quill-interop --bins`)"
            );
        }
    }
    let stacks = stacks.join(",");
    let rounds = 2;
    let v = compare(&[
        "--rounds",
        "2",
        "--bytes",
        "262144",
        "--stacks",
        &stacks,
        "--what",
        "bulk,latency,rate,idle,sessions",
        "--latency-samples",
        "1",
        "--handshakes",
        "8",
        "--concurrency",
        "4",
        "--idle",
        "8",
        "--sessions",
        "16",
        "--session-clients",
        "2",
        "--hold-secs",
        "2",
        "--keep-alive-ms",
        "300",
    ]);

    // Bulk: every configuration ran every round, in the order asked for.
    let bulk = &v["bulk"];
    assert_eq!(bulk["bytes_per_run"], 262144);
    let configs = bulk["configurations"].as_array().expect("configurations");
    let names: Vec<&str> = configs
        .iter()
        .map(|c| c["stack"].as_str().unwrap())
        .collect();
    let quill_configs = ["quill-aes256", "quill-aes128", "quill-v1"];
    let cross = ["quill-to-quiche", "quinn-to-quill"];
    let expected: Vec<&str> = [
        "quill-aes256",
        "quill-aes128",
        "quill-v1",
        "quinn",
        "quiche",
        "quill-to-quiche",
        "quinn-to-quill",
        "tcp",
        "tcp-tls",
    ]
    .into_iter()
    .filter(|n| quill_configs.contains(n) || stacks.split(',').any(|s| s == *n))
    .collect();
    assert_eq!(names, expected, "configurations in round order");
    for c in configs {
        assert_eq!(c["available"], true, "{c}");
        let runs = c["runs"].as_array().unwrap();
        assert_eq!(runs.len(), rounds);
        for r in runs {
            assert!(f(&r["goodput_gbps"]) > 0.0, "{r}");
            assert!(f(&r["total_cpu_s_per_gib"]) >= 0.0);
            assert!(r["client_peak_rss_kib"].as_u64().unwrap() > 0);
            assert!(r["server_peak_rss_kib"].as_u64().unwrap() > 0);
        }
        for key in ["goodput_gbps", "total_cpu_s_per_gib", "server_peak_rss_mib"] {
            let s = &c[key];
            assert!(
                f(&s["min"]) <= f(&s["median"]) && f(&s["median"]) <= f(&s["max"]),
                "{key}: {s}"
            );
        }
    }
    let run = |name: &str, i: usize| -> Value {
        configs.iter().find(|c| c["stack"] == name).unwrap()["runs"][i].clone()
    };
    // Which version and application each client spoke.
    for (name, version, alpn) in [
        ("quill-aes256", "quill", Value::Null),
        ("quill-v1", "quic-v1", "quill".into()),
        ("quill-to-quiche", "quic-v1", "quill-bench".into()),
    ] {
        if names.contains(&name) {
            let client = &run(name, 0)["client"];
            assert_eq!(client["version"], version, "{name}: {client}");
            assert_eq!(client["alpn"], alpn, "{name}: {client}");
        }
    }
    // Ratios: quill configurations over every other one but the cross-stack cells,
    // from the per-round values.
    let ratios = bulk["ratios"].as_array().expect("ratios");
    let quills = names.iter().filter(|n| quill_configs.contains(n)).count();
    let crossed = names.iter().filter(|n| cross.contains(n)).count();
    assert_eq!(ratios.len(), quills * (names.len() - quills - crossed));
    for r in ratios {
        let (num, den) = (
            r["numerator"].as_str().unwrap(),
            r["denominator"].as_str().unwrap(),
        );
        for (key, field) in [
            ("goodput", "goodput_gbps"),
            ("total_cpu_s_per_gib", "total_cpu_s_per_gib"),
        ] {
            let per_round: Vec<f64> = r[key]["per_round"]
                .as_array()
                .unwrap()
                .iter()
                .map(f)
                .collect();
            assert_eq!(per_round.len(), rounds);
            for (i, x) in per_round.iter().enumerate() {
                let want = f(&run(num, i)[field]) / f(&run(den, i)[field]);
                assert!(
                    (x - want).abs() <= 1e-9 * want.abs(),
                    "{num}/{den} {key} round {i}: {x} vs {want}"
                );
            }
            assert!((f(&r[key]["median"]) - median(per_round.clone())).abs() < 1e-12);
            assert_eq!(
                f(&r[key]["min"]),
                per_round.iter().copied().fold(f64::INFINITY, f64::min)
            );
        }
    }
    let tls = configs.iter().find(|c| c["stack"] == "tcp-tls").unwrap();
    assert_eq!(
        tls["runs"][0]["client"]["cipher_suite"],
        "TLS13_AES_256_GCM_SHA384"
    );

    // Latency: quill's first byte comes after its handshake, both from process start.
    let lat = v["latency"]["stacks"].as_array().expect("latency");
    let quill = lat
        .iter()
        .find(|s| s["stack"] == "quill")
        .expect("quill latency");
    assert_eq!(quill["available"], true, "{quill}");
    let sample = &quill["samples"][0];
    assert_eq!(sample["login"], "publickey");
    assert!(f(&sample["first_byte_ms"]) >= f(&sample["handshake_ms"]));
    assert!(f(&sample["handshake_ms"]) >= f(&sample["connect_to_established_ms"]));
    assert!(quill["connect_to_established_ms"]["median"].is_number());

    // Rate: every quill handshake logged in with its public key.
    let rate = v["rate"]["stacks"].as_array().expect("rate");
    let quill = rate.iter().find(|s| s["stack"] == "quill").unwrap();
    assert_eq!(quill["available"], true, "{quill}");
    for r in quill["runs"].as_array().unwrap() {
        assert_eq!(r["ok"], 8, "{r}");
    }
    assert!(f(&quill["handshakes_per_sec"]["median"]) > 0.0);
    // ... and over QUIC v1 (ALPN quill: the same public-key login).
    let v1 = rate.iter().find(|s| s["stack"] == "quill-v1").unwrap();
    assert_eq!(v1["available"], true, "{v1}");
    for r in v1["runs"].as_array().unwrap() {
        assert_eq!(r["ok"], 8, "{r}");
    }

    // Idle memory and sessions.
    assert!(
        v["idle"]["server_bytes_per_connection"].is_number(),
        "{}",
        v["idle"]
    );
    let s = &v["sessions"];
    assert_eq!(s["connected"], 16, "{s}");
    assert_eq!(s["lost_while_held"], 0, "{s}");
    assert_eq!(s["clients"].as_array().unwrap().len(), 2);
    assert!(s["keep_alive_samples"].as_u64().unwrap() > 0, "{s}");
    // The server sends keep-alives too: its loop expired timers during the hold.
    let t = &s["server_timer_lateness_ms"];
    assert!(t["count"].as_u64().unwrap() > 0, "{t}");
    assert!(
        f(&t["p99"]) <= f(&t["p999"]) && f(&t["p999"]) <= f(&t["max"]),
        "{t}"
    );
    for key in [
        "keep_alive_rtt_ms",
        "keep_alive_lateness_ms",
        "client_timer_lateness_ms",
        "server_timer_lateness_ms",
    ] {
        let q = &s[key];
        assert!(
            f(&q["p50"]) <= f(&q["p99"]) && f(&q["p99"]) <= f(&q["max"]),
            "{key}: {q}"
        );
    }
}

#[test]
fn a_missing_reference_peer_is_reported_not_fatal() {
    // An empty directory to look for the peers in: quinn-peer is missing there.
    let empty = std::env::temp_dir().join(format!("quill-bench-no-peers-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(exe())
        .args(["compare", "--rounds", "1", "--bytes", "65536"])
        .args(["--stacks", "tcp,quinn", "--what", "bulk", "--json"])
        .env("QUILL_BENCH_PEER_DIR", &empty)
        .output()
        .expect("run quill-bench");
    let _ = std::fs::remove_dir_all(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compare failed: {stderr}");
    assert!(
        stderr.contains("quinn unavailable")
            && stderr.contains("cargo build --release -p quill-interop --bins"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value =
        serde_json::from_str(stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let configs = v["bulk"]["configurations"].as_array().unwrap();
    let quinn = configs.iter().find(|c| c["stack"] == "quinn").unwrap();
    assert_eq!(quinn["available"], false);
    let reason = quinn["reason"].as_str().unwrap();
    assert!(
        reason.contains("cargo build --release -p quill-interop --bins"),
        "{reason}"
    );
    assert_eq!(quinn["runs"][0], Value::Null);
    let tcp = configs.iter().find(|c| c["stack"] == "tcp").unwrap();
    assert_eq!(tcp["available"], true);
    // No ratio without quill; none of the measurements that were not asked for.
    assert!(v["bulk"]["ratios"].as_array().unwrap().is_empty());
    assert!(v["latency"].is_null() && v["sessions"].is_null());
}

/// `--what workers`: quill's server on 1 and 2 event loops, every cell, tiny sizes.
#[test]
fn workers_cell_reports_every_loop_count() {
    let v = compare(&[
        "--what",
        "workers",
        "--rounds",
        "1",
        "--handshakes",
        "8",
        "--concurrency",
        "4",
        "--bytes",
        "262144",
        "--bulk-connections",
        "2",
        "--spread-connections",
        "16",
        "--no-client-gso",
    ]);
    let w = &v["workers"];
    assert_eq!(w["server_workers"], serde_json::json!([1, 2]), "{w}");
    assert_eq!(w["client_gso"], false);
    assert!(
        v["bulk"].is_null() && v["rate"].is_null(),
        "only the workers cell"
    );
    for cell in ["rate", "bulk", "spread"] {
        let cells = w[cell]["cells"].as_array().expect("cells");
        let loops: Vec<u64> = cells.iter().map(|c| c["loops"].as_u64().unwrap()).collect();
        assert_eq!(loops, [1, 2], "{cell}");
        for c in cells {
            assert!(c["errors"].as_array().unwrap().is_empty(), "{cell}: {c}");
            assert_eq!(c["runs"].as_array().unwrap().len(), 1, "{cell}: {c}");
        }
    }
    // Rate: every handshake logged in with its public key; a ratio to one loop.
    for c in w["rate"]["cells"].as_array().unwrap() {
        assert!(f(&c["handshakes_per_sec"]["median"]) > 0.0, "{c}");
        assert_eq!(
            c["runs"][0]["server"]["loops"].as_array().unwrap().len(),
            c["loops"].as_u64().unwrap() as usize
        );
    }
    let ratios = w["rate"]["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 1);
    assert_eq!(
        (
            ratios[0]["numerator_loops"].as_u64(),
            ratios[0]["denominator_loops"].as_u64()
        ),
        (Some(2), Some(1))
    );
    // Bulk: all the bytes arrived, split between the connections.
    for c in w["bulk"]["cells"].as_array().unwrap() {
        assert_eq!(c["runs"][0]["bytes"], 262144, "{c}");
        assert!(f(&c["goodput_gbps"]["median"]) > 0.0, "{c}");
    }
    // Spread: every connection has a loop; without client GSO and with the BPF
    // program attached, no datagram reached the wrong loop.
    for c in w["spread"]["cells"].as_array().unwrap() {
        let run = &c["runs"][0];
        assert_eq!(run["connected"], 16, "{run}");
        let sessions: u64 = run["sessions_per_loop"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .sum();
        assert_eq!(sessions, 16, "{run}");
        if run["steering"] == "bpf" {
            assert_eq!(run["forwarded"], 0, "{run}");
        }
    }
}

#[test]
fn workers_cell_refuses_bad_arguments() {
    for (args, says) in [
        (
            &["compare", "--what", "workers", "--rounds", "0"][..],
            "--rounds must be at least 1",
        ),
        (
            &["compare", "--what", "workers", "--server-workers", "0"],
            "--server-workers",
        ),
        (
            &["server", "--loops", "0", "--ignore-stdin"],
            "--loops is 1 to 256",
        ),
    ] {
        let out = Command::new(exe())
            .args(args)
            .output()
            .expect("run quill-bench");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
