"""Time of one BSS Eval scoring (SDR/SIR/SAR, 3 sources, 512-tap filter) of one evaluate
segment: studio-sep's ``bss_metrics`` (blockwise correlation statistics) against its peer,
``fast_bss_eval.numpy.bss_eval_sources``, in the same process, on the same signals;
median of ``--repeats`` after a warm-up, the ratio, and the largest metric difference.
Prints a markdown table with the machine noted and writes it with a JSON to
``benchmarks/results/metrics_speed-<date>-<commit>.{md,json}``.

    OPENBLAS_NUM_THREADS=1 python benchmarks/metrics_speed.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import cpu_model, median_time, memory_gib, write_results

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="262144,1048576", help="segment lengths in samples (2^18: 16 kHz, 2^20: 48 kHz)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from fast_bss_eval.numpy import bss_eval_sources

    from studio_sep.dsp.metrics import bss_metrics

    rng = np.random.default_rng(0)
    rows = []
    for n in [int(v) for v in args.lengths.split(",")]:
        ref = rng.standard_normal((3, n))
        est = ref + 0.3 * rng.standard_normal((3, 3)) @ ref + 0.1 * rng.standard_normal((3, n))
        peer = median_time(lambda r=ref, e=est: bss_eval_sources(r, e, filter_length=512, compute_permutation=False),
                     args.repeats)
        ours = median_time(lambda r=ref, e=est: bss_metrics(r, e, filter_length=512), args.repeats)
        a = bss_eval_sources(ref, est, filter_length=512, compute_permutation=False)[:3]
        b = bss_metrics(ref, est, filter_length=512)
        diff = max(float(np.max(np.abs(x - b[k]))) for x, k in zip(a, ("sdr", "sir", "sar")))
        rows.append({"samples": n, "fast_bss_eval_s": peer, "studio_sep_s": ours, "ratio": peer / ours,
                     "max_abs_diff_db": diff})
        print(rows[-1], flush=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib()} GiB; {platform.platform(terse=True)}; "
               f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; studio-sep {commit}")
    lines = ["# BSS Eval of one segment (3 sources, filter 512): studio-sep vs fast-bss-eval", "",
             f"Machine: {machine}", "",
             ("| samples | fast-bss-eval s | studio-sep s (SDR/SIR/SAR + SI-SDR) | ratio | "
              "max abs difference dB |"), "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['samples']} | {r['fast_bss_eval_s']:.3f} | {r['studio_sep_s']:.3f} | {r['ratio']:.1f} | "
              f"{r['max_abs_diff_db']:.1e} |" for r in rows]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    write_results(args.out / f"metrics_speed-{datetime.date.today().isoformat()}-{commit}", table,
                  {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
