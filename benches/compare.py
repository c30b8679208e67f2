#!/usr/bin/env python3
"""Fails when a criterion benchmark regressed against the saved baseline.

`make benchmark-compare` runs the criterion benches with `--baseline main`; criterion then
writes `change/estimates.json` (relative change of this run against the baseline) next to
each benchmark under target/criterion. This reads the ones written by that run (newer than
the --since stamp) and exits 1 when a median got slower by more than --threshold percent and
criterion's confidence interval excludes no change (so noise alone does not fail it).
"""

import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="target/criterion")
    parser.add_argument("--threshold", type=float, default=10.0, help="percent")
    parser.add_argument("--since", help="only change files newer than this file")
    args = parser.parse_args()
    since = os.path.getmtime(args.since) if args.since else 0.0
    rows = []
    for directory, _, files in os.walk(args.root):
        if os.path.basename(directory) != "change" or "estimates.json" not in files:
            continue
        path = os.path.join(directory, "estimates.json")
        if os.path.getmtime(path) < since:
            continue
        with open(path, encoding="utf-8") as f:
            median = json.load(f)["median"]
        name = os.path.relpath(os.path.dirname(directory), args.root)
        change = median["point_estimate"] * 100
        low = median["confidence_interval"]["lower_bound"] * 100
        high = median["confidence_interval"]["upper_bound"] * 100
        regressed = change > args.threshold and low > 0
        rows.append((name, change, low, high, regressed))
    if not rows:
        print(
            f"no comparison found under {args.root}: run `make benchmark-baseline` first",
            file=sys.stderr,
        )
        return 2
    width = max(len(r[0]) for r in rows)
    for name, change, low, high, regressed in sorted(rows):
        mark = "REGRESSED" if regressed else "ok"
        print(f"{name:<{width}}  {change:+7.1f} %  [{low:+.1f}, {high:+.1f}]  {mark}")
    failed = [r[0] for r in rows if r[4]]
    if failed:
        print(
            f"{len(failed)} benchmark(s) slower than the baseline by more than "
            f"{args.threshold:g} %: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    print(f"{len(rows)} benchmarks within {args.threshold:g} % of the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
