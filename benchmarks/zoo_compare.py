#!/usr/bin/env python
"""Two zoo rows compared scene by scene: ``CONFIG@COMMIT`` against ``CONFIG@COMMIT`` (rows of
``zoo.py``'s results.jsonl), e.g. the default before and after a change of defaults, or one
commit's default against its ``seed1`` (the seed spread). Prints a markdown table: per scene,
both SDRs at the reference mic and the difference; then n, medians, median difference,
better/worse by more than 0.5 dB, and the median and largest absolute difference.

Usage::

    python benchmarks/zoo_compare.py default@48bf281 default@c3676d7 [--work ~/.cache/studio-sep/zoo/20261201-15s]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def rows_of(results: Path, spec: str) -> dict[int, float]:
    config, _, commit = spec.partition("@")
    rows = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r["config"] == config and (not commit or r["commit"].startswith(commit)) and r.get("sdr_ref") is not None:
            rows[r["index"]] = r["sdr_ref"]  # the latest row of a scene wins
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="CONFIG@COMMIT (commit prefix; no commit: any)")
    p.add_argument("b")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    results = args.work / "results.jsonl"
    a, b = rows_of(results, args.a), rows_of(results, args.b)
    both = sorted(set(a) & set(b))
    if not both:
        print(f"no scene has both {args.a} and {args.b}", file=sys.stderr)
        return 1
    print(f"| scene | {args.a} | {args.b} | difference |\n|---:|---:|---:|---:|")
    for i in both:
        print(f"| {i} | {a[i]:+.2f} | {b[i]:+.2f} | {b[i] - a[i]:+.2f} |")
    diff = [b[i] - a[i] for i in both]
    print(f"\nn = {len(both)}; median {statistics.median(a[i] for i in both):+.2f} → "
          f"{statistics.median(b[i] for i in both):+.2f}; median difference {statistics.median(diff):+.2f}; "
          f"better {sum(d > 0.5 for d in diff)}, worse {sum(d < -0.5 for d in diff)} (by more than 0.5 dB); "
          f"|difference| median {statistics.median(abs(d) for d in diff):.2f}, largest {max(abs(d) for d in diff):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
