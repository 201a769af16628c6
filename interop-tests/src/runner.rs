//! The interop scenario runner: `quill-interop run [--scenario NAME|all] [--peers ...]
//! [--json] [--seed N] [--results DIR]`.
//!
//! For each scenario and each client/server pairing the runner starts the server peer,
//! an in-process [`Relay`] with the scenario's impairments (seeded), and the client
//! peer; it waits (always with a timeout) for the client's result line, stops the
//! server (stdin closed; it prints its totals), stops the relay and judges the cell by
//! the scenario's written pass rule ([`SCENARIOS`]): byte-exact files by SHA-256, the
//! peers' reports, and the relay's capture where the scenario is about the wire.
//! Children are killed when their guard is dropped, whatever happens.
//!
//! The results matrix (scenario × pairing → pass / fail / unsupported with a reason)
//! is printed and written as `matrix.json` and `matrix.md` under the results
//! directory; the capture of every failed cell is written beside them.
//!
//! Reproducibility: each cell's relay seed is derived from `--seed`, the scenario name
//! and the run index, and the relay's decisions depend only on the seed and datagram
//! index, so the same seed gives the same impairments.
//!
//! Pairings: quill (this tree) ↔ quill (this tree); quill ↔ the previous release tag
//! when one exists whose tree has the peer (built in a temporary `git worktree`);
//! other `--peers` (quinn, quiche) come from [`RunOptions::external`], a function the
//! reference-peer checks plug in.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quill_crypto::packet::{HeaderKey, Labels, Suite};
use quill_transport::wire::{parse_header, LongType, PacketKind};
use serde_json::{json, Value};

use crate::capture::{Action, Capture, Direction, HeaderInfo};
use crate::relay::{Relay, RelayConfig};

/// Exit code for bad command-line input.
pub const USAGE: i32 = 2;

pub mod quic_v1;
mod scenarios;
pub use scenarios::{Scenario, SCENARIOS};

/// The verdict of one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The pass rule held; a short note (numbers).
    Pass(String),
    /// The pass rule failed; why.
    Fail(String),
    /// The pairing cannot run this scenario; why.
    Unsupported(String),
}

impl Outcome {
    /// `pass`, `fail` or `unsupported`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Unsupported(_) => "unsupported",
        }
    }

    /// The note or reason.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Pass(s) | Outcome::Fail(s) | Outcome::Unsupported(s) => s,
        }
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Scenario (or reference check) name.
    pub scenario: String,
    /// Client implementation, e.g. `quill`.
    pub client: String,
    /// Server implementation.
    pub server: String,
    /// The verdict.
    pub outcome: Outcome,
    /// Wall time of the cell.
    pub seconds: f64,
    /// Numbers worth keeping (peers' reports, capture figures).
    pub metrics: Value,
}

impl Cell {
    /// `client → server`.
    pub fn pairing(&self) -> String {
        format!("{} → {}", self.client, self.server)
    }

    /// The cell as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "client": self.client,
            "server": self.server,
            "result": self.outcome.label(),
            "reason": self.outcome.reason(),
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "metrics": self.metrics,
        })
    }
}

/// Cells for a non-quill peer (`quinn`, `quiche`): the reference-peer checks plug in
/// here (`interop-tests/src/reference.rs`).
pub type ExternalChecks = fn(peer: &str, opts: &RunOptions) -> Vec<Cell>;

/// A fault to inject into one side (hidden `--fault client:NAME` / `server:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// `client` or `server`.
    pub side: String,
    /// The peer's `--fault` value.
    pub name: String,
}

/// What to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Scenario names, in order.
    pub scenarios: Vec<String>,
    /// Implementations to pair with quill: `quill` (always run), `quinn`, `quiche`.
    pub peers: Vec<String>,
    /// Base seed of the impairments.
    pub seed: u64,
    /// Where matrix.json, matrix.md and failed captures go.
    pub results: PathBuf,
    /// The current tree's peer: `quill-interop-peer`, or `quill-interop` itself with
    /// [`RunOptions::peer_prefix`] `["peer"]`.
    pub peer_bin: PathBuf,
    /// Arguments put before the peer's own (`["peer"]` for `quill-interop peer`).
    pub peer_prefix: Vec<String>,
    /// Print JSON instead of the table.
    pub json: bool,
    /// Fault injection.
    pub fault: Option<FaultSpec>,
    /// Multiplies every timeout (tests shorten the ones they expect to hit).
    pub timeout_factor: f64,
    /// Also pair with the previous release tag (when one exists).
    pub previous_release: bool,
    /// The reference-peer checks, once plugged in.
    pub external: Option<ExternalChecks>,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// `quill` (quill's own version, the default) or `quic-v1` ([`quic_v1`]).
    pub suite: String,
    /// quic-v1: only the cells where this stack is the client or the server.
    pub with: Option<String>,
}

impl RunOptions {
    /// Every scenario, quill only, seed 1, results in `interop-results`, the peer next
    /// to the running executable.
    pub fn new(peer_bin: PathBuf) -> RunOptions {
        RunOptions {
            scenarios: SCENARIOS.iter().map(|s| s.name.to_string()).collect(),
            peers: vec!["quill".into()],
            seed: 1,
            results: PathBuf::from("interop-results"),
            peer_bin,
            peer_prefix: Vec::new(),
            json: false,
            fault: None,
            timeout_factor: 1.0,
            previous_release: true,
            external: None,
            verbose: false,
            suite: "quill".into(),
            with: None,
        }
    }
}

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// The scenario table of a suite.
fn table(suite: &str) -> &'static [Scenario] {
    if suite == "quic-v1" {
        quic_v1::SCENARIOS
    } else {
        SCENARIOS
    }
}

/// What a peer prints instead of `listening ADDR` or its result line when it cannot
/// play a test case (`unsupported REASON`); carried in run errors with this prefix.
const UNSUPPORTED: &str = "unsupported ";

// ---------------------------------------------------------------------------------
// Command line

fn usage_err(msg: impl std::fmt::Display) -> i32 {
    eprintln!("quill-interop: {msg}");
    USAGE
}

const HELP: &str = "quill-interop: the quill interop scenario runner

usage:
  quill-interop run [--scenario NAME|all]... [--peers quill,quinn,quiche] [--json]
                    [--seed N] [--results DIR] [--peer-bin PATH] [--no-previous]
  quill-interop run --suite quic-v1 [--peers quill,quinn,quiche,aioquic,ngtcp2]
                    [--scenario NAME|all]... [--with STACK] [--json]
                    the interop runner's test cases (--with: only STACK's cells)
  quill-interop list          scenarios and their pass rules
  quill-interop peer server|client ...   the interop peer (same as quill-interop-peer)

Exit code: 0 every cell passed or is unsupported, 1 a cell failed, 2 bad arguments.";

/// Entry point of `quill-interop`; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    main_with(&args, None)
}

/// [`main`] with explicit arguments and an optional reference-peer hook.
pub fn main_with(args: &[String], external: Option<ExternalChecks>) -> i32 {
    match args.first().map(String::as_str) {
        Some("run") => {}
        Some("peer") => {
            let rest =
                std::iter::once("quill-interop peer".to_string()).chain(args[1..].iter().cloned());
            return crate::peer::main_from(rest);
        }
        Some("list") => {
            for s in SCENARIOS.iter().chain(quic_v1::SCENARIOS) {
                println!(
                    "{:<20} network: {}\n{:<20} pass: {}",
                    s.name, s.network, "", s.rule
                );
            }
            return 0;
        }
        Some("-h") | Some("--help") | Some("help") => {
            println!("{HELP}");
            return 0;
        }
        Some(other) => {
            return usage_err(format!(
                "unknown command '{other}'; use `quill-interop run` or `quill-interop list`"
            ))
        }
        None => return usage_err("missing command; use `quill-interop run --scenario all`"),
    }
    // By default the peer is this executable (`quill-interop peer ...`), so that
    // `cargo run -p quill-interop` never pairs the runner with a stale peer.
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("quill-interop"));
    let mut opts = RunOptions::new(me);
    opts.peer_prefix = vec!["peer".into()];
    opts.external = external;
    opts.verbose = true;
    let mut scenarios: Vec<String> = Vec::new();
    // The suite decides which scenario and peer names are valid: read it first.
    for (i, a) in args.iter().enumerate() {
        let v = match a.strip_prefix("--suite=") {
            Some(v) => Some(v.to_string()),
            None if a == "--suite" => args.get(i + 1).cloned(),
            None => None,
        };
        match v.as_deref() {
            None => {}
            Some("quill") | Some("quic-v1") => opts.suite = v.unwrap_or_default(),
            Some(other) => {
                return usage_err(format!("unknown suite '{other}'; use quill or quic-v1"))
            }
        }
    }
    let v1 = opts.suite == "quic-v1";
    if v1 {
        opts.peers = quic_v1::STACKS.iter().map(|s| s.name.to_string()).collect();
        opts.scenarios = quic_v1::SCENARIOS
            .iter()
            .map(|s| s.name.to_string())
            .collect();
    }
    let suite_table = table(&opts.suite);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let r: Result<(), String> = (|| {
            match flag {
                "--suite" => {
                    value("--suite")?;
                }
                "--scenario" | "-s" => {
                    for s in value("--scenario")?.split(',') {
                        if s == "all" {
                            scenarios.extend(suite_table.iter().map(|s| s.name.to_string()));
                        } else if suite_table.iter().any(|t| t.name == s) {
                            scenarios.push(s.to_string());
                        } else {
                            return Err(format!(
                                "unknown scenario '{s}'; `quill-interop list` shows them"
                            ));
                        }
                    }
                }
                "--peers" => {
                    let peers: Vec<String> =
                        value("--peers")?.split(',').map(String::from).collect();
                    for p in &peers {
                        if v1 && quic_v1::stack(p).is_none() {
                            return Err(format!(
                                "unknown peer '{p}'; use quill, quinn, quinn-pq, quiche, aioquic, ngtcp2"
                            ));
                        }
                        if !v1 && !["quill", "quinn", "quiche"].contains(&p.as_str()) {
                            return Err(format!("unknown peer '{p}'; use quill, quinn, quiche"));
                        }
                    }
                    opts.peers = peers;
                }
                "--with" if v1 => {
                    let w = value("--with")?;
                    if quic_v1::stack(&w).is_none() {
                        return Err(format!("unknown stack '{w}' for --with"));
                    }
                    opts.with = Some(w);
                }
                "--seed" => {
                    let v = value("--seed")?;
                    opts.seed = v
                        .parse()
                        .map_err(|_| format!("--seed '{v}' is not a number"))?;
                }
                "--results" => opts.results = PathBuf::from(value("--results")?),
                "--peer-bin" => {
                    opts.peer_bin = PathBuf::from(value("--peer-bin")?);
                    opts.peer_prefix.clear();
                }
                "--json" => opts.json = true,
                "--quiet" => opts.verbose = false,
                "--no-previous" => opts.previous_release = false,
                "--timeout-factor" => {
                    let v = value("--timeout-factor")?;
                    opts.timeout_factor = v
                        .parse::<f64>()
                        .ok()
                        .filter(|f| *f > 0.0 && *f <= 100.0)
                        .ok_or_else(|| format!("--timeout-factor '{v}' must be in (0, 100]"))?;
                }
                "--fault" => {
                    let v = value("--fault")?;
                    let (side, name) = v
                        .split_once(':')
                        .filter(|(s, _)| *s == "client" || *s == "server")
                        .ok_or_else(|| {
                            format!("--fault '{v}' must be client:NAME or server:NAME")
                        })?;
                    opts.fault = Some(FaultSpec {
                        side: side.into(),
                        name: name.into(),
                    });
                }
                _ => return Err(format!("unknown option '{a}'; see `quill-interop --help`")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            return usage_err(e);
        }
    }
    if !scenarios.is_empty() {
        let mut seen = HashSet::new();
        scenarios.retain(|s| seen.insert(s.clone()));
        opts.scenarios = scenarios;
    }
    if !opts.peer_bin.is_file() {
        return usage_err(format!(
            "peer executable {} not found; build it with `cargo build --release -p quill-interop` \
             or pass --peer-bin",
            opts.peer_bin.display()
        ));
    }
    let cells = if v1 { quic_v1::run(&opts) } else { run(&opts) };
    let md = markdown(&cells, &opts);
    if let Err(e) = write_results(&opts, &cells, &md) {
        eprintln!(
            "quill-interop: cannot write results to {}: {e}",
            opts.results.display()
        );
    }
    if opts.json {
        println!("{}", matrix_json(&cells, &opts));
    } else {
        println!("{md}");
    }
    if cells.iter().any(|c| matches!(c.outcome, Outcome::Fail(_))) {
        1
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------
// The matrix

/// Runs every selected scenario for every pairing.
pub fn run(opts: &RunOptions) -> Vec<Cell> {
    let mut cells = Vec::new();
    let current = PeerImpl {
        name: "quill".into(),
        bin: opts.peer_bin.clone(),
        prefix: opts.peer_prefix.clone(),
    };
    let mut pairings = vec![(current.clone(), current.clone())];
    let mut prev_unsupported = None;
    let mut _prev_guard = None;
    if opts.previous_release {
        match previous_release(opts) {
            Ok((prev, guard)) => {
                pairings.push((prev.clone(), current.clone()));
                pairings.push((current.clone(), prev));
                _prev_guard = Some(guard);
            }
            Err(reason) => prev_unsupported = Some(reason),
        }
    }
    for name in &opts.scenarios {
        let Some(sc) = scenario(name) else { continue };
        for (client, server) in &pairings {
            if opts.verbose {
                eprintln!(
                    "quill-interop: {} ({} → {}) ...",
                    sc.name, client.name, server.name
                );
            }
            let cell = run_cell(opts, sc, client, server);
            if opts.verbose {
                eprintln!(
                    "quill-interop: {} ({} → {}): {} {} ({:.1} s)",
                    sc.name,
                    client.name,
                    server.name,
                    cell.outcome.label(),
                    cell.outcome.reason(),
                    cell.seconds
                );
            }
            cells.push(cell);
        }
        if let Some(reason) = &prev_unsupported {
            for (c, s) in [("quill-prev", "quill"), ("quill", "quill-prev")] {
                cells.push(Cell {
                    scenario: sc.name.into(),
                    client: c.into(),
                    server: s.into(),
                    outcome: Outcome::Unsupported(reason.clone()),
                    seconds: 0.0,
                    metrics: Value::Null,
                });
            }
        }
    }
    for peer in opts.peers.iter().filter(|p| *p != "quill") {
        match opts.external {
            Some(f) => cells.extend(f(peer, opts)),
            None => cells.push(Cell {
                scenario: "reference".into(),
                client: peer.clone(),
                server: "quill".into(),
                outcome: Outcome::Unsupported(
                    "reference-peer checks are not plugged into this runner".into(),
                ),
                seconds: 0.0,
                metrics: Value::Null,
            }),
        }
    }
    cells
}

/// The matrix as JSON.
pub fn matrix_json(cells: &[Cell], opts: &RunOptions) -> Value {
    json!({
        "seed": opts.seed,
        "suite": opts.suite,
        "scenarios": table(&opts.suite).iter().filter(|s| opts.scenarios.iter().any(|n| n == s.name))
            .map(|s| json!({"name": s.name, "network": s.network, "rule": s.rule}))
            .collect::<Vec<_>>(),
        "cells": cells.iter().map(Cell::to_json).collect::<Vec<_>>(),
    })
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The matrix as a Markdown table (scenarios down, pairings across) with the reasons.
pub fn markdown(cells: &[Cell], opts: &RunOptions) -> String {
    let mut pairings: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    let mut map: BTreeMap<(String, String), &Cell> = BTreeMap::new();
    for c in cells {
        if !pairings.contains(&c.pairing()) {
            pairings.push(c.pairing());
        }
        if !rows.contains(&c.scenario) {
            rows.push(c.scenario.clone());
        }
        map.insert((c.scenario.clone(), c.pairing()), c);
    }
    let mut out = String::new();
    out.push_str(&format!("seed {} · client → server\n\n", opts.seed));
    out.push_str("| scenario |");
    for p in &pairings {
        out.push_str(&format!(" {p} |"));
    }
    out.push_str("\n|---|");
    for _ in &pairings {
        out.push_str("---|");
    }
    out.push('\n');
    for r in &rows {
        out.push_str(&format!("| {r} |"));
        for p in &pairings {
            let text = match map.get(&(r.clone(), p.clone())) {
                None => "".to_string(),
                Some(c) => match &c.outcome {
                    Outcome::Pass(note) if !note.is_empty() => {
                        format!("pass ({})", md_escape(note))
                    }
                    Outcome::Pass(_) => "pass".into(),
                    Outcome::Fail(r) => format!("**FAIL**: {}", md_escape(r)),
                    Outcome::Unsupported(r) => format!("unsupported: {}", md_escape(r)),
                },
            };
            out.push_str(&format!(" {text} |"));
        }
        out.push('\n');
    }
    let (pass, fail, uns) = cells
        .iter()
        .fold((0, 0, 0), |(p, f, u), c| match c.outcome {
            Outcome::Pass(_) => (p + 1, f, u),
            Outcome::Fail(_) => (p, f + 1, u),
            Outcome::Unsupported(_) => (p, f, u + 1),
        });
    out.push_str(&format!("\n{pass} pass, {fail} fail, {uns} unsupported\n"));
    out
}

fn write_results(opts: &RunOptions, cells: &[Cell], md: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(&opts.results)?;
    std::fs::write(
        opts.results.join("matrix.json"),
        format!("{:#}\n", matrix_json(cells, opts)),
    )?;
    std::fs::write(opts.results.join("matrix.md"), md)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Peers and processes

/// A peer implementation: a name and its `quill-interop-peer` executable.
#[derive(Debug, Clone)]
pub struct PeerImpl {
    /// `quill` or `quill-prev`.
    pub name: String,
    /// The executable.
    pub bin: PathBuf,
    /// Arguments before the peer's own.
    pub prefix: Vec<String>,
}

/// Removes the temporary worktree of the previous release when dropped.
pub struct WorktreeGuard {
    repo: PathBuf,
    dir: PathBuf,
}

impl Drop for WorktreeGuard {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "remove", "--force"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The previous release's peer, built from its tag in a temporary git worktree, or why
/// there is none.
fn previous_release(opts: &RunOptions) -> Result<(PeerImpl, WorktreeGuard), String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let repo = git(&["rev-parse", "--show-toplevel"])
        .ok_or("no previous release tag (not in a git repository)")?;
    // The newest tag that is not the commit under test (a release being tested is
    // compared with the one before it).
    let head = git(&["-C", &repo, "rev-parse", "HEAD"]).unwrap_or_default();
    let tags = git(&["-C", &repo, "tag", "--list", "--sort=-creatordate"]).unwrap_or_default();
    let Some(tag) = tags
        .lines()
        .find(|t| git(&["-C", &repo, "rev-list", "-n", "1", t]).as_deref() != Some(head.as_str()))
        .map(str::to_string)
    else {
        return Err("no previous release tag".into());
    };
    let peer_path = format!("{tag}:interop-tests/src/bin/quill-interop-peer.rs");
    if git(&["-C", &repo, "cat-file", "-e", &peer_path]).is_none() {
        return Err(format!("previous release {tag} has no interop peer"));
    }
    let dir = std::env::temp_dir().join(format!("quill-interop-prev-{}", std::process::id()));
    git(&[
        "-C",
        &repo,
        "worktree",
        "add",
        "--detach",
        &dir.to_string_lossy(),
        &tag,
    ])
    .ok_or_else(|| format!("cannot check out {tag} in a worktree"))?;
    let guard = WorktreeGuard {
        repo: PathBuf::from(&repo),
        dir: dir.clone(),
    };
    if opts.verbose {
        eprintln!("quill-interop: building the peer of {tag} ...");
    }
    let ok = Command::new("cargo")
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "-p",
            "quill-interop",
            "--bin",
            "quill-interop-peer",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let bin = dir.join("target/release/quill-interop-peer");
    if !ok || !bin.is_file() {
        return Err(format!("building the peer of {tag} failed"));
    }
    Ok((
        PeerImpl {
            name: format!("quill-{tag}"),
            bin,
            prefix: Vec::new(),
        },
        guard,
    ))
}

/// A child process killed (and reaped) when dropped; its stdout arrives line by line,
/// the last lines of its stderr are kept for failure reasons.
struct Child {
    proc: std::process::Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Child {
    fn spawn(bin: &Path, args: &[String]) -> Result<Child, String> {
        let mut proc = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let lines = match proc.stdout.take() {
            Some(out) => crate::child::lines(out),
            None => mpsc::channel().1,
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = proc.stderr.take() {
            let keep = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut k) = keep.lock() {
                        if k.len() >= 20 {
                            k.remove(0);
                        }
                        k.push(line);
                    }
                }
            });
        }
        Ok(Child {
            proc,
            lines,
            stderr,
        })
    }

    /// The last stderr line, for reasons.
    fn last_err(&self) -> String {
        self.stderr
            .lock()
            .ok()
            .and_then(|k| k.last().cloned())
            .unwrap_or_default()
    }

    /// Waits at most `limit` for a stdout line.
    fn line(&self, limit: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(limit)
    }

    /// Closes stdin (the server's signal to stop).
    fn close_stdin(&mut self) {
        drop(self.proc.stdin.take());
    }

    /// Waits at most `limit` for the process to exit, then kills it.
    fn finish(&mut self, limit: Duration) {
        crate::child::wait_or_kill(&mut self.proc, limit);
    }

    fn kill(&mut self) {
        crate::child::kill(&mut self.proc);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------
// One run: server, relay, client

/// How one run of a scenario is set up.
#[derive(Clone)]
struct Setup {
    /// Files to create under the server's root: name and size.
    files: Vec<(String, usize)>,
    /// Files the client fetches (a list file is used above 100 names).
    fetch: Vec<String>,
    server_args: Vec<String>,
    client_args: Vec<String>,
    /// Bound on the client's run.
    timeout: Duration,
    ipv6: bool,
    /// Kill the server when the client prints `vanish_now`.
    vanish: bool,
    /// Client user/password override.
    password: Option<String>,
    /// The relay opens a second client-facing port, which the server is told to offer
    /// as its preferred address (`--preferred-address ADDR`, RFC 9000 §9.6).
    preferred_path: bool,
}

impl Setup {
    fn new(files: Vec<(String, usize)>) -> Setup {
        Setup {
            fetch: files.iter().map(|(n, _)| n.clone()).collect(),
            files,
            server_args: Vec::new(),
            client_args: Vec::new(),
            timeout: Duration::from_secs(30),
            ipv6: false,
            vanish: false,
            password: None,
            preferred_path: false,
        }
    }
}

/// What one run produced.
struct RunOutput {
    client: Option<Value>,
    client_failure: Option<String>,
    server: Option<Value>,
    capture: Capture,
    /// Client events and when the runner saw them, relative to the relay's start.
    events: Vec<(String, Duration)>,
    /// When the runner told the server to stop (its standard input closed), relative to
    /// the relay's start; `None` if it never did (killed, or no server).
    server_stopped_at: Option<Duration>,
    /// SHA-256 comparison of every fetched file.
    files_ok: Result<(), String>,
}

/// Deterministic file content.
fn file_bytes(seed: u64, name: &str, size: usize) -> Vec<u8> {
    let mut state = seed ^ fnv(name);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = splitmix(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Compares every fetched file with its source by SHA-256.
pub fn compare_files(root: &Path, download: &Path, names: &[String]) -> Result<(), String> {
    let mut bad = Vec::new();
    for n in names {
        let want = std::fs::read(root.join(n)).map_err(|e| format!("source {n}: {e}"))?;
        match std::fs::read(download.join(n)) {
            Err(_) => bad.push(format!("{n} missing")),
            Ok(got) if sha256(&got) != sha256(&want) => bad.push(format!(
                "{n} SHA-256 mismatch ({} bytes received, {} expected)",
                got.len(),
                want.len()
            )),
            Ok(_) => {}
        }
    }
    match bad.len() {
        0 => Ok(()),
        1 => Err(bad.remove(0)),
        k => Err(format!("{k} files wrong, first: {}", bad[0])),
    }
}

/// Seed of run `run` of scenario `name`.
fn cell_seed(base: u64, name: &str, run: u64) -> u64 {
    splitmix(base ^ fnv(name) ^ splitmix(run))
}

fn execute(
    opts: &RunOptions,
    sc: &Scenario,
    client: &PeerImpl,
    server: &PeerImpl,
    setup: &Setup,
    run: u64,
) -> Result<RunOutput, String> {
    let seed = cell_seed(opts.seed, sc.name, run);
    let work = tempfile::Builder::new()
        .prefix(&format!("quill-interop-{}-", sc.name))
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let root = work.path().join("root");
    let download = work.path().join("download");
    let state = work.path().join("state");
    for d in [&root, &download, &state] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    for (name, size) in &setup.files {
        std::fs::write(root.join(name), file_bytes(opts.seed, name, *size))
            .map_err(|e| format!("writing {name}: {e}"))?;
    }
    let fault_for = |side: &str| -> Vec<String> {
        match &opts.fault {
            Some(f) if f.side == side => vec!["--fault".into(), f.name.clone()],
            _ => Vec::new(),
        }
    };
    let listen = if setup.ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
    let mut sargs: Vec<String> = server.prefix.clone();
    sargs.extend([
        "server".into(),
        "--testcase".into(),
        sc.name.into(),
        "--listen".into(),
        listen.into(),
        "--root".into(),
        root.to_string_lossy().into(),
        "--state-dir".into(),
        state.to_string_lossy().into(),
    ]);
    sargs.extend(setup.server_args.iter().cloned());
    sargs.extend(fault_for("server"));
    // Bound before the server starts, so that it can offer the address.
    let second = if setup.preferred_path {
        let sock =
            std::net::UdpSocket::bind(listen).map_err(|e| format!("relay's second port: {e}"))?;
        let a = sock
            .local_addr()
            .map_err(|e| format!("relay's second port: {e}"))?;
        sargs.extend(["--preferred-address".into(), a.to_string()]);
        Some(sock)
    } else {
        None
    };
    let mut srv = Child::spawn(&server.bin, &sargs)?;
    let addr: SocketAddr = match srv.line(Duration::from_secs(20)) {
        Ok(l) if l.starts_with(UNSUPPORTED) => {
            srv.finish(Duration::from_secs(2));
            return Err(l);
        }
        Ok(l) => l
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| format!("server said '{l}' instead of 'listening ADDR'"))?,
        Err(_) => {
            srv.finish(Duration::from_millis(200));
            return Err(format!("server did not start: {}", srv.last_err()));
        }
    };
    let mut rc = RelayConfig::new(addr);
    rc.seed = seed;
    rc.max_lifetime = setup.timeout.mul_f64(opts.timeout_factor) + Duration::from_secs(60);
    sc.impair(&mut rc);
    let relay_start = Instant::now();
    let relay = match second {
        Some(sock) => Relay::start_with_second_path(rc, sock),
        None => Relay::start(rc),
    }
    .map_err(|e| format!("relay: {e}"))?;
    let timeout = setup.timeout.mul_f64(opts.timeout_factor);
    let mut cargs: Vec<String> = client.prefix.clone();
    cargs.extend([
        "client".into(),
        "--testcase".into(),
        sc.name.into(),
        "--connect".into(),
        relay.addr().to_string(),
        "--download".into(),
        download.to_string_lossy().into(),
        "--timeout-secs".into(),
        timeout.as_secs().max(1).to_string(),
    ]);
    if setup.fetch.len() > 100 {
        let list = work.path().join("files.txt");
        std::fs::write(&list, setup.fetch.join("\n")).map_err(|e| format!("file list: {e}"))?;
        cargs.push("--files-from".into());
        cargs.push(list.to_string_lossy().into());
    } else {
        cargs.push("--files".into());
        cargs.push(setup.fetch.join(","));
    }
    if let Some(pw) = &setup.password {
        cargs.push("--password".into());
        cargs.push(pw.clone());
    }
    cargs.extend(setup.client_args.iter().cloned());
    cargs.extend(fault_for("client"));
    let mut cli = Child::spawn(&client.bin, &cargs)?;
    let deadline = Instant::now() + timeout + Duration::from_secs(10);
    let mut events = Vec::new();
    let mut result = None;
    let mut failure = None;
    let mut server_killed = false;
    while result.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            failure = Some(format!(
                "client gave no result within {} s",
                (timeout + Duration::from_secs(10)).as_secs()
            ));
            break;
        }
        match cli.line(left) {
            Ok(line) if line.starts_with(UNSUPPORTED) => {
                failure = Some(line);
                break;
            }
            Ok(line) => {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(ev) = v.get("event").and_then(Value::as_str) {
                    events.push((ev.to_string(), relay_start.elapsed()));
                    if ev == "vanish_now" && setup.vanish {
                        srv.kill();
                        server_killed = true;
                    }
                } else if v.get("role").and_then(Value::as_str) == Some("client") {
                    result = Some(v);
                }
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                cli.finish(Duration::from_secs(2));
                failure = Some(format!(
                    "client exited without a result: {}",
                    cli.last_err()
                ));
                break;
            }
        }
    }
    cli.finish(Duration::from_secs(5));
    let mut server_report = None;
    let mut server_stopped_at = None;
    if !server_killed {
        server_stopped_at = Some(relay_start.elapsed());
        srv.close_stdin();
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            match srv.line(left) {
                Ok(l) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&l) {
                        if v.get("role").and_then(Value::as_str) == Some("server") {
                            server_report = Some(v);
                            break;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        srv.finish(Duration::from_secs(5));
    }
    let capture = relay.stop();
    let files_ok = compare_files(&root, &download, &setup.fetch);
    // The temporary directory goes when `work` drops; keep the paths for messages.
    let out = RunOutput {
        client: result,
        client_failure: failure,
        server: server_report,
        capture,
        events,
        server_stopped_at,
        files_ok,
    };
    drop(work);
    Ok(out)
}

fn u(v: &Option<Value>, key: &str) -> u64 {
    v.as_ref()
        .and_then(|v| v.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// The client's failure, if it had one, as a reason.
fn client_problem(o: &RunOutput) -> Option<String> {
    if let Some(f) = &o.client_failure {
        return Some(f.clone());
    }
    let c = o.client.as_ref()?;
    if c.get("ok").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let kind = c
        .pointer("/error/kind")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let msg = c
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(format!("client error {kind}: {msg}"))
}

/// Fails unless the client succeeded and every file is byte-exact.
fn basic(o: &RunOutput) -> Result<(), String> {
    let mut reasons = Vec::new();
    if let Some(p) = client_problem(o) {
        reasons.push(p);
    }
    if let Err(e) = &o.files_ok {
        reasons.push(e.clone());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}

fn metrics(o: &RunOutput) -> Value {
    let cap = &o.capture;
    json!({
        "client": o.client,
        "server": o.server,
        "capture": {
            "records": cap.records.len(),
            "truncated": cap.truncated,
            "c2s": cap.dir(Direction::C2S).count(),
            "s2c": cap.dir(Direction::S2C).count(),
            "dropped_c2s": cap.dropped_indices(Direction::C2S).len(),
            "dropped_s2c": cap.dropped_indices(Direction::S2C).len(),
        },
        "events": o.events.iter().map(|(e, t)| json!({"event": e, "t_ms": t.as_millis() as u64})).collect::<Vec<_>>(),
    })
}

/// Writes the capture of a failed cell.
fn save_capture(opts: &RunOptions, sc: &str, client: &str, server: &str, cap: &Capture) {
    let dir = opts.results.join("captures");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = cap.write_jsonl(dir.join(format!("{sc}__{client}__{server}.jsonl")));
    }
}

// ---------------------------------------------------------------------------------
// Wire checks

/// A client Initial read off the capture: its Destination CID, token and packet number
/// (header protection removed with keys derived from that DCID, docs/SPEC.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialInfo {
    /// Destination connection ID.
    pub dcid: Vec<u8>,
    /// Token field.
    pub token: Vec<u8>,
    /// Packet number (full value: Initial numbers stay small).
    pub pn: u64,
}

/// Reads the first packet of a client Initial datagram.
///
/// RFC 9001 §5.4.2: the sample starts 4 bytes after the start of the Packet Number
/// field; the mask's low 4 bits (long header) unprotect the first byte, whose low two
/// bits give the packet number length, and the next bytes unprotect the number.
pub fn client_initial(head: &[u8]) -> Option<InitialInfo> {
    let h = parse_header(head, 0).ok()?;
    if !matches!(h.kind, PacketKind::Long(LongType::Initial)) {
        return None;
    }
    let (client, _) = quill_crypto::schedule::initial_secrets(h.dcid.as_ref());
    let hp = HeaderKey::new(Suite::Aes128Gcm, &client, &Labels::QUILL);
    let sample = head.get(h.pn_offset + 4..h.pn_offset + 4 + 16)?;
    let mask = hp.mask(sample).ok()?;
    let first = head[0] ^ (mask[0] & 0x0f);
    let pn_len = (first & 0x03) as usize + 1;
    let bytes = head.get(h.pn_offset..h.pn_offset + pn_len)?;
    let pn = bytes
        .iter()
        .zip(&mask[1..])
        .fold(0u64, |acc, (b, m)| (acc << 8) | u64::from(b ^ m));
    Some(InitialInfo {
        dcid: h.dcid.as_ref().to_vec(),
        token: h.token.to_vec(),
        pn,
    })
}

/// A server Retry on the capture: `(new SCID, token)`.
pub fn server_retry(head: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let h = parse_header(head, 0).ok()?;
    if !matches!(h.kind, PacketKind::Long(LongType::Retry)) {
        return None;
    }
    Some((h.scid?.as_ref().to_vec(), h.token.to_vec()))
}

/// Connections the client started, as seen on the wire: distinct Destination CIDs of
/// client Initials that are not a CID the server chose (RFC 9000 §7.2: after the
/// server's first Initial or a Retry the client sends to the server's Source CID).
fn initial_dcids(cap: &Capture) -> usize {
    let server_cids: HashSet<Vec<u8>> = cap
        .originals(Direction::S2C)
        .filter_map(|r| match &r.header {
            HeaderInfo::Long { scid, .. } => Some(scid.clone()),
            _ => None,
        })
        .collect();
    cap.originals(Direction::C2S)
        .filter_map(|r| match &r.header {
            HeaderInfo::Long {
                dcid, coalesced, ..
            } if coalesced.contains(&LongType::Initial) && !server_cids.contains(dcid) => {
                Some(dcid.clone())
            }
            _ => None,
        })
        .collect::<HashSet<_>>()
        .len()
}

/// Server datagrams that are Retry packets.
fn retries_on_wire(cap: &Capture) -> usize {
    cap.long_packets(Direction::S2C, LongType::Retry)
}

/// RFC 9000 §8.1 measured strictly: bytes the server sent before the first client
/// Handshake packet that was delivered, against client bytes delivered before it.
pub fn amplification_strict(cap: &Capture) -> (usize, usize) {
    let (mut client, mut server) = (0, 0);
    for r in &cap.records {
        match r.dir {
            Direction::C2S => {
                if !r.action.delivered() {
                    continue;
                }
                if r.header.contains(LongType::Handshake) {
                    break;
                }
                client += r.size;
            }
            Direction::S2C => {
                if r.action != Action::Duplicated {
                    server += r.size;
                }
            }
        }
    }
    (client, server)
}

/// The retry checks on the capture.
fn check_retry_wire(cap: &Capture) -> Result<String, String> {
    let retries: Vec<(Vec<u8>, Vec<u8>)> = cap
        .originals(Direction::S2C)
        .filter_map(|r| r.head.as_deref().and_then(server_retry))
        .collect();
    // The server answers every Initial datagram of the first flight statelessly (the
    // ClientHello with its ML-KEM key share fills two); the client takes the first.
    let Some((new_cid, token)) = retries.first() else {
        return Err("no Retry on the wire".into());
    };
    let initials: Vec<InitialInfo> = cap
        .originals(Direction::C2S)
        .filter_map(|r| r.head.as_deref().and_then(client_initial))
        .collect();
    let Some(first) = initials.first() else {
        return Err("no client Initial on the capture".into());
    };
    let before: Vec<&InitialInfo> = initials.iter().filter(|i| i.dcid == first.dcid).collect();
    // After the Retry every client Initial carries a token; the first goes to the
    // Retry's Source CID (later ones may go to the CID of the server's Initial).
    let after: Vec<&InitialInfo> = initials.iter().filter(|i| !i.token.is_empty()).collect();
    if after.is_empty() {
        return Err("no client Initial echoes a Retry token".into());
    }
    if &after[0].dcid != new_cid {
        return Err(format!(
            "the first client Initial after the Retry went to DCID {} instead of the Retry's SCID",
            quill_transport::service::hex(&after[0].dcid)
        ));
    }
    if after.iter().any(|i| &i.token != token) {
        return Err("a client Initial after the Retry does not echo the Retry token".into());
    }
    if before.is_empty() || before.iter().any(|i| !i.token.is_empty()) {
        return Err("the client's first Initials are missing or carry a token".into());
    }
    let max_before = before.iter().map(|i| i.pn).max().unwrap_or(0);
    let min_after = after[0].pn;
    if min_after <= max_before {
        return Err(format!(
            "client Initial packet numbers restarted after the Retry ({min_after} after {max_before})"
        ));
    }
    Ok(format!(
        "{} Retry on the wire; client Initial pn {}..={} before, from {} after",
        retries.len(),
        before.iter().map(|i| i.pn).min().unwrap_or(0),
        max_before,
        min_after
    ))
}

// ---------------------------------------------------------------------------------
// Scenarios

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

const MB: usize = 1_000_000;

fn run_cell(opts: &RunOptions, sc: &Scenario, client: &PeerImpl, server: &PeerImpl) -> Cell {
    let start = Instant::now();
    let (outcome, metrics) = sc.judge(opts, client, server);
    Cell {
        scenario: sc.name.into(),
        client: client.name.clone(),
        server: server.name.clone(),
        outcome,
        seconds: start.elapsed().as_secs_f64(),
        metrics,
    }
}

/// Runs one setup and judges it with `rule`; saves the capture when it fails.
fn one(
    opts: &RunOptions,
    sc: &Scenario,
    client: &PeerImpl,
    server: &PeerImpl,
    setup: &Setup,
    rule: fn(&RunOutput) -> Result<String, String>,
) -> (Outcome, Value) {
    match execute(opts, sc, client, server, setup, 0) {
        Err(e) => match e.strip_prefix(UNSUPPORTED) {
            Some(why) => (Outcome::Unsupported(why.to_string()), Value::Null),
            None => (Outcome::Fail(e), Value::Null),
        },
        Ok(o) => {
            if let Some(why) = o
                .client_failure
                .as_deref()
                .and_then(|f| f.strip_prefix(UNSUPPORTED))
            {
                return (Outcome::Unsupported(why.to_string()), metrics(&o));
            }
            let m = metrics(&o);
            let outcome = match rule(&o) {
                Ok(note) => Outcome::Pass(note),
                Err(reason) => {
                    save_capture(opts, sc.name, &client.name, &server.name, &o.capture);
                    Outcome::Fail(reason)
                }
            };
            (outcome, m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_reproducible_and_distinct() {
        assert_eq!(cell_seed(1, "retry", 0), cell_seed(1, "retry", 0));
        assert_ne!(cell_seed(1, "retry", 0), cell_seed(2, "retry", 0));
        assert_ne!(cell_seed(1, "retry", 0), cell_seed(1, "handshake", 0));
        assert_ne!(cell_seed(1, "goodput", 0), cell_seed(1, "goodput", 1));
        assert_eq!(file_bytes(3, "a", 100), file_bytes(3, "a", 100));
        assert_ne!(file_bytes(3, "a", 100), file_bytes(3, "b", 100));
        assert_eq!(file_bytes(3, "a", 13).len(), 13);
    }

    #[test]
    fn every_scenario_is_named_once_and_has_a_rule() {
        let names: HashSet<_> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len());
        assert!(SCENARIOS
            .iter()
            .all(|s| !s.rule.is_empty() && !s.network.is_empty()));
    }

    #[test]
    fn compare_files_names_the_bad_file() {
        let root = tempfile::tempdir().unwrap();
        let down = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a"), b"hello").unwrap();
        std::fs::write(root.path().join("b"), b"world").unwrap();
        std::fs::write(down.path().join("a"), b"hello").unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            compare_files(root.path(), down.path(), &names),
            Err("b missing".into())
        );
        std::fs::write(down.path().join("b"), b"worl").unwrap();
        let e = compare_files(root.path(), down.path(), &names).unwrap_err();
        assert!(
            e.contains("b SHA-256 mismatch (4 bytes received, 5 expected)"),
            "{e}"
        );
        std::fs::write(down.path().join("b"), b"world").unwrap();
        assert_eq!(compare_files(root.path(), down.path(), &names), Ok(()));
    }

    #[test]
    fn markdown_has_a_row_per_scenario_and_a_column_per_pairing() {
        let cell = |s: &str, c: &str, o: Outcome| Cell {
            scenario: s.into(),
            client: c.into(),
            server: "quill".into(),
            outcome: o,
            seconds: 0.0,
            metrics: Value::Null,
        };
        let cells = vec![
            cell("handshake", "quill", Outcome::Pass(String::new())),
            cell(
                "handshake",
                "quill-prev",
                Outcome::Unsupported("no tag".into()),
            ),
            cell("retry", "quill", Outcome::Fail("a | b".into())),
        ];
        let md = markdown(&cells, &RunOptions::new(PathBuf::from("x")));
        assert!(
            md.contains("| scenario | quill → quill | quill-prev → quill |"),
            "{md}"
        );
        assert!(
            md.contains("| handshake | pass | unsupported: no tag |"),
            "{md}"
        );
        assert!(md.contains("| retry | **FAIL**: a \\| b |  |"), "{md}");
        assert!(md.contains("1 pass, 1 fail, 1 unsupported"), "{md}");
    }
}
