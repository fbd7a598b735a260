#!/usr/bin/env python
"""One thread against two for whole FastMNMF2 fits, in one process, alternated, so that a
machine whose speed drifts (a shared host) moves both alike; and pyroomacoustics on one
thread in the same run.

A fit per iteration is ``(t(23) − t(3)) / 20`` (set-up and the first iterations cancel),
log-likelihood every 5th iteration as the pipeline runs it, on the same STFT of the trio
scene as ``fit_speed.py`` (paper configuration: F=513, T≈941, M=7, N=3, K=8). The thread
count of a fit is set with threadpoolctl around it (``fit`` takes its thread count from
the BLAS pool: ``host_kernels.kernel_threads``). Each configuration keeps its minimum over
``--repeats`` rounds; the speed-up is also given per round (its median).

Usage::

    python benchmarks/fit_threads.py [--repeats R] [--pra-iter N] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

from common import add_paper_scene_args, write_results

HERE = Path(__file__).resolve().parent
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "2"  # the pools' size; each fit is limited to 1 or 2 inside it


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pra-iter", type=int, default=10, help="pyroomacoustics iterations timed (0: skip it)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    add_paper_scene_args(p)
    return p.parse_args(argv)


def per_iteration(X, N: int, K: int, threads: int) -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from studio_sep.separation import fastmnmf2

    spent = {}
    with threadpool_limits(threads, user_api="blas"):
        for n in (3, 23):
            t0 = time.perf_counter()
            fastmnmf2.fit(X, n_sources=N, n_basis=K, n_iter=n, log_likelihood_every=5, rng=np.random.default_rng(0))
            spent[n] = time.perf_counter() - t0
    return (spent[23] - spent[3]) / 20


def main() -> int:
    args = parse()
    sys.path.insert(0, str(HERE))
    import numpy as np
    import separation as bench
    from fit_speed import time_pra

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    code = bench.snapshot_code(args.work, "tree")
    sys.path.insert(0, code["path"])
    X_host = bench.paper_stft(args, log)
    N, K = bench.N_SOURCES, bench.N_BASIS
    X = {"float64": X_host.astype(np.complex128), "float32": X_host.astype(np.complex64)}
    load_before = os.getloadavg()[0]
    for dtype in X:  # warm-up: compile or load the kernels, start the pools; and one whole-size round, whose
        per_iteration(X[dtype][:, :200], N, K, 2)  # 3-iteration fit alone gets fresh pages from the kernel
        per_iteration(X[dtype], N, K, 1)  # (glibc then keeps the freed arrays): it made round 1 look fast
    rounds = {(dtype, n): [] for dtype in X for n in (1, 2)}
    for r in range(args.repeats):
        for dtype in X:
            for n in (1, 2):
                rounds[dtype, n].append(per_iteration(X[dtype], N, K, n))
        log(f"  round {r + 1}/{args.repeats}: " + ", ".join(f"{d} {n}t {v[-1] * 1e3:.1f} ms"
                                                           for (d, n), v in rounds.items()))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        pra_s = time_pra(X_host, N, K, args.pra_iter) if args.pra_iter else None
    F, T, M = X_host.shape
    result = {"date": dt.date.today().isoformat(), "machine": bench.machine_info(2), "code": code,
              "shape": {"F": F, "T": T, "M": M, "N": N, "K": K}, "repeats": args.repeats,
              "seconds": {f"{d}, {n} thread(s)": v for (d, n), v in rounds.items()},
              "pyroomacoustics_per_iteration_s_1thread": pra_s, "pra_iter": args.pra_iter,
              "load_avg_1min": [load_before, os.getloadavg()[0]]}
    text = markdown(result)
    write_results(args.out / f"fit_threads-{result['date']}-{code['git_head']}", text, result, indent=1)
    print(text)
    return 0


def markdown(r: dict) -> str:
    s, sec, pra_s = r["shape"], r["seconds"], r["pyroomacoustics_per_iteration_s_1thread"]
    lines = [f"# One thread against two, whole fits, {r['date']}", "",
             (f"F={s['F']}, T={s['T']}, M={s['M']}, N={s['N']}, K={s['K']}; {r['machine']['cpu']}, "
              f"{r['machine']['cpus_usable']} usable CPUs; code {r['code']['git_head']} "
              f"(+ {', '.join(r['code']['modified_vs_head']) or 'nothing'} modified); {r['repeats']} alternated rounds; "
              f"1-minute load average {r['load_avg_1min'][0]:.1f} → {r['load_avg_1min'][1]:.1f}."), "",
             "| dtype | 1 thread, ms/iteration (min) | 2 threads (min) | speed-up of the minima | speed-up per round "
             "(median, range) | ÷ pyroomacoustics on 1 thread: 1 thread | 2 threads |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for dtype in ("float64", "float32"):
        one, two = sec[f"{dtype}, 1 thread(s)"], sec[f"{dtype}, 2 thread(s)"]
        per_round = [a / b for a, b in zip(one, two)]
        ratio = (f"{pra_s / min(one):.1f}×", f"{pra_s / min(two):.1f}×") if pra_s else ("—", "—")
        lines.append(f"| {dtype} | {min(one) * 1e3:.1f} | {min(two) * 1e3:.1f} | {min(one) / min(two):.2f} | "
                     f"{statistics.median(per_round):.2f} ({min(per_round):.2f}–{max(per_round):.2f}) | "
                     f"{ratio[0]} | {ratio[1]} |")
    if pra_s:
        lines += ["", f"pyroomacoustics FastMNMF2, float64, 1 thread, {r['pra_iter']} iterations: {pra_s:.3f} s per "
                  "iteration."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
