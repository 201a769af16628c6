//! `compare --what idle`: server memory per idle connection, quill side by side with
//! quinn and quiche (issue 17).
//!
//! The method, the same for every stack: a fresh server; its resident set (`VmRSS` of
//! `/proc/PID/status`) half a second after it printed its address; then one client
//! process opens `--idle` connections (256 handshakes in flight), each of which does
//! its first exchange (quill: handshake + password login; quinn, quiche: handshake +
//! one empty request and its answer on the reference peers' stream protocol) and then
//! stays open with a keep-alive PING from the client every 5 s (idle timeout 30 s).
//! Once the client says `ready N`, two seconds pass and the server's resident set is
//! read again; (RSS at N − RSS at 0) / N is the figure.
//!
//! What it counts: every page the server touched for the N connections and still
//! holds — the connections' state, the tables that find them, and whatever the
//! allocator kept from the handshakes (freed but not returned to the kernel). It does
//! not count kernel memory (the one UDP socket's buffers are shared by all
//! connections) or pages the server had touched before the first connection.

use std::time::Duration;

use serde_json::{json, Value};

use super::{peer_exe, reference_client, Options, Scratch, Srv, Stack, SHUTDOWN};
use crate::loopback::{self, IdleResult};
use crate::procs::Proc;

/// Handshakes in flight while the idle connections are opened (`quill-bench idle`'s
/// default, given to the reference clients too).
const CONCURRENCY: usize = 256;
/// Seconds the client holds the connections after `ready N`.
const HOLD_SECS: u64 = 5;
/// From `ready N` to the server's RSS reading: pending ACKs sent, handshake state freed.
const SETTLE: Duration = Duration::from_secs(2);

/// One stack's idle-memory run.
pub struct IdleCell {
    /// `quill`, `quinn` or `quiche`.
    pub stack: &'static str,
    /// The measurement, or why the stack is unavailable.
    pub result: Result<IdleResult, String>,
}

/// quill, then the reference stacks among `stacks`, one fresh server each.
pub fn run(o: &Options, stacks: &[Stack], dir: &Scratch) -> Vec<IdleCell> {
    let mut cells = vec![IdleCell {
        stack: "quill",
        result: loopback::idle_run(&o.plan),
    }];
    for &stack in stacks.iter().filter(|s| s.is_reference()) {
        let result = peer_exe(stack).and_then(|_| reference_run(stack, o, dir));
        if let Err(e) = &result {
            eprintln!("idle: {} unavailable: {e}", stack.name());
        }
        cells.push(IdleCell {
            stack: stack.name(),
            result,
        });
    }
    for c in &cells {
        if let Ok(r) = &c.result {
            eprintln!(
                "idle: {:<7} {:.0} B per connection",
                c.stack, r.per_conn_bytes
            );
        }
    }
    cells
}

/// The reference peer's server with `--idle` connections held by its own client in
/// idle mode (`--hold-secs`).
fn reference_run(stack: Stack, o: &Options, dir: &Scratch) -> Result<IdleResult, String> {
    let n = o.plan.idle;
    let server = Srv::start(stack, o, dir, false)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = server.proc.status_kib("VmRSS")?;
    let timeout = Duration::from_secs(60 + n as u64 / 100);
    let exe = peer_exe(stack)?.ok_or("no reference peer")?;
    let args = reference_client(
        &server.addr,
        &dir.ca(),
        &[
            "--connections",
            &n.to_string(),
            "--concurrency",
            &CONCURRENCY.to_string(),
            "--hold-secs",
            &HOLD_SECS.to_string(),
        ],
        &timeout.as_secs().to_string(),
    );
    let mut client = Proc::spawn_exe(&format!("{} idle client", stack.name()), &exe, &args)?;
    let ready = client.line_starting("ready ", timeout + Duration::from_secs(5))?;
    let held: usize = ready["ready ".len()..].trim().parse().unwrap_or(0);
    if held != n {
        return Err(format!("{held} of {n} connections open at `ready`"));
    }
    std::thread::sleep(SETTLE);
    let rss_n = server.proc.status_kib("VmRSS")?;
    let line = client.line_starting("{", Duration::from_secs(HOLD_SECS + 30))?;
    let client_usage = client.wait(SHUTDOWN)?;
    server.stop()?;
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| format!("{}: bad JSON {line}: {e}", stack.name()))?;
    if v["lost_while_held"].as_u64() != Some(0) {
        return Err(format!("connections lost while held: {v}"));
    }
    Ok(IdleResult {
        rss0_kib: rss0,
        rss_n_kib: rss_n,
        per_conn_bytes: (rss_n.saturating_sub(rss0) * 1024) as f64 / n.max(1) as f64,
        client_per_conn_bytes: (client_usage.max_rss_kib * 1024) as f64 / n.max(1) as f64,
        raw: v,
    })
}

/// quill's bytes per connection over the leaner reference stack's (None without one).
fn ratio_to_leaner(cells: &[IdleCell]) -> Option<(f64, &'static str)> {
    let quill = cells.first()?.result.as_ref().ok()?.per_conn_bytes;
    let (stack, leaner) = cells
        .iter()
        .skip(1)
        .filter_map(|c| Some((c.stack, c.result.as_ref().ok()?.per_conn_bytes)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    (leaner > 0.0).then(|| (quill / leaner, stack))
}

/// The JSON of `compare --json`: quill's fields at the top (as before the reference
/// stacks took part), every stack under `stacks`, and quill over the leaner one.
pub fn json(o: &Options, cells: &[IdleCell]) -> Value {
    let cell = |r: &IdleResult| {
        json!({
            "server_rss_kib_0": r.rss0_kib,
            "server_rss_kib_n": r.rss_n_kib,
            "server_bytes_per_connection": r.per_conn_bytes,
            "client_peak_bytes_per_connection": r.client_per_conn_bytes,
            "client": r.raw,
        })
    };
    let mut out = match cells.first().map(|c| &c.result) {
        Some(Ok(r)) => cell(r),
        Some(Err(e)) => json!({ "error": e }),
        None => json!({}),
    };
    out["connections"] = o.plan.idle.into();
    out["stacks"] = cells
        .iter()
        .map(|c| {
            let mut v = match &c.result {
                Ok(r) => cell(r),
                Err(e) => json!({ "reason": e }),
            };
            v["stack"] = c.stack.into();
            v["available"] = c.result.is_ok().into();
            v
        })
        .collect();
    if let Some((ratio, leaner)) = ratio_to_leaner(cells) {
        out["quill_over_leaner_reference"] = json!({
            "reference": leaner,
            "ratio": ratio,
            // Issue 17's target: at most half of the leaner reference stack.
            "target_at_most": 0.5,
            "holds": ratio <= 0.5,
        });
    }
    out
}

/// The Markdown table.
pub fn table(o: &Options, cells: &[IdleCell]) {
    println!(
        "Idle connections: {} per stack, held with client keep-alives every 5 s; server RSS before and 2 s after all are open",
        o.plan.idle
    );
    println!();
    println!("| stack | server RSS, 0 conns | server RSS, N conns | server bytes/connection | client peak bytes/connection |");
    println!("|---|---|---|---|---|");
    for c in cells {
        match &c.result {
            Ok(r) => println!("| {} | {} |", c.stack, r.cells()),
            Err(e) => println!("| {} | unavailable: {e} | | | |", c.stack),
        }
    }
    if let Some((ratio, leaner)) = ratio_to_leaner(cells) {
        println!(
            "\nquill / {leaner} (the leaner reference) bytes per connection: {ratio:.2} (target ≤ 0.5: {})",
            if ratio <= 0.5 { "holds" } else { "missed" }
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(stack: &'static str, per_conn: Option<f64>) -> IdleCell {
        IdleCell {
            stack,
            result: per_conn.map_or_else(
                || Err("missing".into()),
                |b| {
                    Ok(IdleResult {
                        rss0_kib: 1,
                        rss_n_kib: 2,
                        per_conn_bytes: b,
                        client_per_conn_bytes: 0.0,
                        raw: Value::Null,
                    })
                },
            ),
        }
    }

    #[test]
    fn quill_is_compared_with_the_leaner_reference() {
        let cells = [
            cell("quill", Some(3000.0)),
            cell("quinn", Some(9000.0)),
            cell("quiche", Some(6000.0)),
        ];
        assert_eq!(ratio_to_leaner(&cells), Some((0.5, "quiche")));
        // An unavailable reference is left out; without any there is no ratio.
        let cells = [
            cell("quill", Some(3000.0)),
            cell("quinn", None),
            cell("quiche", Some(4000.0)),
        ];
        assert_eq!(ratio_to_leaner(&cells), Some((0.75, "quiche")));
        assert_eq!(ratio_to_leaner(&cells[..1]), None);
        assert_eq!(
            ratio_to_leaner(&[cell("quill", None), cell("quinn", Some(1.0))]),
            None
        );
    }
}
