#!/usr/bin/env python3
"""Interleaved A/B runs of stack variants on one standard workload, for levers measured on a
shared machine: round after round, each variant runs once on a fresh stack (via
`standard.py --runs 1`), so every variant sees the same load over the same window.

    python3 benches/load/interleave.py --workload spread-10000 --rounds 3 \\
        base: one-worker:DAISI_RUN_LOCAL_ROUTER_WORKERS=1,DAISI_RUN_LOCAL_EDGE_WORKERS=1

A variant is `name:` (the stack as is) or `name:NAME=VALUE,...` (variables for the stack's
processes only, `standard.py --stack-env`). Needs release binaries (`make benchmark-load`
or `cargo build --release ...` first). Prints every run and the medians per variant; the raw
reports stay under --out-dir. docs/performance.md is not touched.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="spread-10000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "target", "benchmark-interleave"))
    parser.add_argument("variants", nargs="+", metavar="NAME:[VAR=VALUE,...]")
    args = parser.parse_args()
    variants = []
    for text in args.variants:
        name, sep, envs = text.partition(":")
        if not sep or not name:
            sys.exit(f"variant `{text}`: expected NAME: or NAME:VAR=VALUE,...")
        variants.append((name, [kv for kv in envs.split(",") if kv]))
    results = {}
    for r in range(args.rounds):
        for name, envs in variants:
            out = os.path.join(args.out_dir, f"{name}-{r}")
            command = [sys.executable, os.path.join(ROOT, "benches", "load", "standard.py"),
                       "--only", args.workload, "--no-build", "--runs", "1",
                       "--port-offset", str(args.port_offset), "--out-dir", out,
                       "--doc", os.path.join(out, "performance.md")]
            for kv in envs:
                command += ["--stack-env", kv]
            with open("/proc/loadavg", encoding="utf-8") as f:
                load = float(f.read().split()[0])
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{name} round {r}: failed (see {out})\n{done.stderr[-1000:]}", flush=True)
                continue
            with open(glob.glob(os.path.join(out, f"{args.workload}-1.json"))[0], encoding="utf-8") as f:
                report = json.load(f)
            # Idle and storm runs publish nothing: their deliveries (and CPU per event) are null.
            deliveries = report.get("deliveries") or {}
            row = {
                "cpu_us_per_event": report.get("cpu_us_per_event"),
                "cpu_us_per_delivery": report.get("cpu_us_per_delivery"),
                "frames_per_write": (report.get("edge_writes") or {}).get("frames_per_write"),
                "duplicates": deliveries.get("duplicates"),
                "p50_ms": report["latency"]["p50_ms"] if report.get("latency") else None,
                "p99_ms": report["latency"]["p99_ms"] if report.get("latency") else None,
                "delivered_per_s": deliveries.get("per_second"),
                "lost": deliveries.get("lost"),
                "load_tool_cpu_s": report.get("load_tool_cpu_seconds"),
                "load_average": load,
                **{f"cores_{p['name']}": p["cores"] for p in report.get("processes") or []},
            }
            results.setdefault(name, []).append(row)
            print(f"{name} round {r}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, (int, float))), flush=True)
    for name, rows in results.items():
        keys = [k for k in rows[0] if all(isinstance(x.get(k), (int, float)) for x in rows)]
        medians = {k: statistics.median(x[k] for x in rows) for k in keys}
        print(f"median {name} ({len(rows)} runs): " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items())
              + "; cpu_us_per_event runs " + ", ".join(per_run(x.get("cpu_us_per_event")) for x in rows))


def per_run(value):
    """One run's figure for the list after the medians; `-` where the run has none."""
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"


if __name__ == "__main__":
    main()
