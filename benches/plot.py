#!/usr/bin/env python3
"""Plots of `quill-bench compare --json` results (issue 17); not part of CI.

Reads one or more JSON files that `compare --json` wrote and draws PNGs into --out:

- bulk_rounds.png: goodput (Gbit/s) and total CPU-s per GiB of every bulk configuration,
  per round (the rounds of several files are numbered on, in the order given);
- sessions_cost.png: the cost curve, server RSS (MiB) and server CPU (% of a core) as
  idle quill sessions grow, from every file's `sessions_curve` (or `sessions`);
- idle_memory.png: server bytes per idle connection per stack (the last file that has
  an `idle` measurement).

A plot whose data no file has is skipped, with a line saying so.

Setup (matplotlib, once, outside the repository):

    python3 -m venv /tmp/quill-plot && /tmp/quill-plot/bin/pip install matplotlib

Run:

    target/release/quill-bench compare --what bulk --json > bulk.json
    target/release/quill-bench compare --what idle,sessions \\
        --sessions-sizes 1000,10000,100000 --json > idle.json
    /tmp/quill-plot/bin/python benches/plot.py bulk.json idle.json --out docs/plots
"""

import argparse
import json
import sys
from pathlib import Path


def load(paths):
    """Every file's JSON object (the line of a file that starts with '{')."""
    out = []
    for p in paths:
        try:
            text = Path(p).read_text()
        except OSError as e:
            sys.exit(f"plot.py: cannot read {p}: {e.strerror}")
        line = next((l for l in text.splitlines() if l.startswith("{")), None)
        if line is None:
            sys.exit(f"plot.py: {p} holds no JSON object; pass what `compare --json` printed")
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"plot.py: {p}: bad JSON ({e}); pass what `compare --json` printed")
    return out


def bulk_series(results):
    """{configuration: [(round, goodput Gbit/s, CPU-s/GiB)]} over all files' rounds."""
    series = {}
    first_round = 1
    for r in results:
        bulk = r.get("bulk")
        if not bulk:
            continue
        for c in bulk["configurations"]:
            for i, run in enumerate(c["runs"]):
                if run:
                    series.setdefault(c["stack"], []).append(
                        (first_round + i, run["goodput_gbps"], run["total_cpu_s_per_gib"])
                    )
        first_round += bulk["rounds"]
    return series


def sessions_points(results):
    """[(sessions, server RSS MiB, server CPU %)] sorted by size; later files win."""
    points = {}
    for r in results:
        curve = r.get("sessions_curve")
        if curve is None and r.get("sessions"):
            curve = [r["sessions"]]
        for p in curve or []:
            if "error" in p:
                continue
            points[p["sessions"]] = (
                p["server_rss_kib"] / 1024.0,
                p["server_cpu_percent_of_a_core"],
            )
    return [(n, rss, cpu) for n, (rss, cpu) in sorted(points.items())]


def idle_bars(results):
    """[(stack, server bytes per connection)] of the last file with `idle`."""
    bars = []
    for r in results:
        idle = r.get("idle")
        if not idle:
            continue
        stacks = idle.get("stacks") or [dict(idle, stack="quill", available=True)]
        bars = [
            (s["stack"], s["server_bytes_per_connection"])
            for s in stacks
            if s.get("available") and "server_bytes_per_connection" in s
        ]
    return bars


def save(fig, path):
    """Writes `fig` to `path` and says so."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="+", help="files written by `quill-bench compare --json`")
    ap.add_argument("--out", default="docs/plots", help="directory for the PNGs")
    a = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(
            "plot.py: matplotlib is missing: python3 -m venv /tmp/quill-plot && "
            "/tmp/quill-plot/bin/pip install matplotlib, then run this with /tmp/quill-plot/bin/python"
        )
    results = load(a.json)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    series = bulk_series(results)
    if series:
        fig, (g, c) = plt.subplots(1, 2, figsize=(12, 4.5))
        for stack, pts in series.items():
            rounds = [p[0] for p in pts]
            g.plot(rounds, [p[1] for p in pts], marker="o", label=stack)
            c.plot(rounds, [p[2] for p in pts], marker="o", label=stack)
        g.set(title="Bulk upload goodput per round", xlabel="round", ylabel="Gbit/s")
        c.set(title="CPU per GiB (client + server) per round", xlabel="round", ylabel="CPU-s / GiB")
        for ax in (g, c):
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            ax.xaxis.get_major_locator().set_params(integer=True)
        g.legend(fontsize="small")
        save(fig, out / "bulk_rounds.png")
    else:
        print("no bulk results: bulk_rounds.png skipped")

    pts = sessions_points(results)
    if pts:
        fig, (m, c) = plt.subplots(1, 2, figsize=(12, 4.5))
        n = [p[0] for p in pts]
        m.plot(n, [p[1] for p in pts], marker="o", color="tab:blue")
        c.plot(n, [p[2] for p in pts], marker="o", color="tab:red")
        m.set(title="quill server RSS with idle sessions (one loop)", ylabel="MiB")
        c.set(title="quill server CPU over the hold (keep-alives)", ylabel="% of a core")
        for ax in (m, c):
            ax.set(xscale="log", xlabel="idle sessions")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3, which="both")
        save(fig, out / "sessions_cost.png")
    else:
        print("no sessions results: sessions_cost.png skipped")

    bars = idle_bars(results)
    if bars:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [b[0] for b in bars]
        values = [b[1] for b in bars]
        ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:green"][: len(bars)])
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
        ax.set(title="Server memory per idle connection", ylabel="bytes (RSS delta / N)")
        ax.grid(alpha=0.3, axis="y")
        save(fig, out / "idle_memory.png")
    else:
        print("no idle results: idle_memory.png skipped")


if __name__ == "__main__":
    main()
