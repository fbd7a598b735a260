#!/usr/bin/env python
"""Seconds per FastMNMF2 iteration: the array code (``fastmnmf2._State``, what cupy runs and
what numpy ran before the fused kernels) against the fused CPU kernels
(``host_kernels.HostState``), float64 and float32, and pyroomacoustics' FastMNMF2 — all in
one process, on the same STFT of the rendered trio scene (paper configuration: F=513,
T≈941, M=7, N=3, K=8), so that the ratios hold on a machine shared with other jobs.

Each state first runs a few real iterations (values away from the start: the floors and
tiny λ of a converging fit, not the random start), then the steps are timed interleaved
(array code and fused, float64 and float32, in turn), ``--repeats`` times; the minimum is
kept. An iteration is timed as ``fit`` runs it (W, H, G, Q, x̃) with the log-likelihood
every iteration (``fit``'s default) and without it (the pipeline computes it every 5th).
pyroomacoustics' time per iteration is ``(t(n) - t(0)) / n`` with its own W, H drawn from
the global RNG.

Usage::

    python benchmarks/fit_speed.py [--threads N] [--repeats R] [--pra-iter N] [--out DIR]

Threads (BLAS and numba) are pinned before numpy is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import time
from pathlib import Path

from common import add_paper_scene_args, write_results

HERE = Path(__file__).resolve().parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warm-iterations", type=int, default=10)
    p.add_argument("--pra-iter", type=int, default=2, help="pyroomacoustics iterations timed (0: skip it)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    add_paper_scene_args(p)
    return p.parse_args(argv)


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:  # before numpy is imported anywhere
    for var in THREAD_VARS:
        os.environ[var] = str(ARGS.threads)

STEPS = ("W", "H", "G", "Q (covariances, solves)", "x̃ refresh", "log-likelihood")


def build_states(X_host, N: int, K: int, warm: int):
    """{(code, dtype): state} after ``warm`` iterations from the same circular start."""
    import numpy as np

    from studio_sep.separation import fastmnmf2, host_kernels

    F, T, M = X_host.shape
    states = {}
    for dtype in ("float64", "float32"):
        X = X_host.astype(np.complex128 if dtype == "float64" else np.complex64)
        X = X / np.sqrt(np.mean(np.abs(X) ** 2))
        for code, cls in (("array code", fastmnmf2._State), ("fused", host_kernels.HostState)):
            rng = np.random.default_rng(0)
            p = fastmnmf2.params_to(fastmnmf2.circular_init(F, M, N, K, rng=rng), np, np.dtype(dtype))
            H = rng.uniform(size=(N, K, T)).astype(dtype)
            t0 = time.perf_counter()
            s = cls(np, X, p.Q_FMM.copy(), p.G_NM.copy(), p.W_NFK.copy(), H)
            s.normalize()
            s.refresh_Qx()
            s.refresh_model()
            s.setup_s = time.perf_counter() - t0  # with the kernels' first call (compile or cache load)
            for it in range(1, warm + 1):
                iteration(s, ll=False)
                if it % 10 == 0:
                    s.normalize()
                    s.refresh_Qx()
                    s.refresh_model()
            states[code, dtype] = s
    return states


def q_and_qx(s) -> None:
    """The Q update and x̃ as ``fit`` runs them (one pass where the state has one)."""
    getattr(s, "update_Q_and_Qx", lambda: (s.update_Q(), s.refresh_Qx()))()


def iteration(s, *, ll: bool) -> None:
    s.update_W()
    s.update_H()
    s.update_G()
    q_and_qx(s)
    if ll:
        s.log_likelihood()


def time_states(states: dict, repeats: int) -> dict:
    steps = {"W": lambda s: s.update_W(), "H": lambda s: s.update_H(), "G": lambda s: s.update_G(),
             "Q (covariances, solves)": lambda s: s.update_Q(), "x̃ refresh": lambda s: s.refresh_Qx(),
             "Q and x̃ as fit runs them": q_and_qx,
             "log-likelihood": lambda s: s.log_likelihood(),
             "iteration, log-likelihood every one": lambda s: iteration(s, ll=True),
             "iteration, no log-likelihood": lambda s: iteration(s, ll=False)}
    times = {name: {key: [] for key in states} for name in steps}
    for _ in range(repeats):
        for key, s in states.items():  # as fit runs them: HostState's threads (BLAS on one, bins split)
            with getattr(s, "running", contextlib.nullcontext)():
                iteration(s, ll=True)  # untimed: a new pool thread's first calls (numba, OpenBLAS buffers)
                for name, fn in steps.items():
                    t0 = time.perf_counter()
                    fn(s)
                    times[name][key].append(time.perf_counter() - t0)
    return {name: {f"{code}, {dtype}": min(v) for (code, dtype), v in per.items()} for name, per in times.items()}


FIT_ROW = "fit as the pipeline runs it (log-likelihood every 5th), per iteration"


def time_fits(X_host, N: int, K: int, repeats: int) -> dict:
    """``fastmnmf2.fit`` (the fused state on numpy, with its threads), per iteration as
    (t(23) − t(3)) / 20, each the minimum of at least 3 fits: set-up and the first iterations
    cancel."""
    import numpy as np

    from studio_sep.separation import fastmnmf2

    row = {}
    for dtype in ("float64", "float32"):
        X = X_host.astype(np.complex128 if dtype == "float64" else np.complex64)
        spent = {3: [], 23: []}
        for _ in range(max(3, repeats)):  # the minimum of at least 3 (one sample disagreed with the steps)
            for n in spent:
                t0 = time.perf_counter()
                fastmnmf2.fit(X, n_sources=N, n_basis=K, n_iter=n, log_likelihood_every=5, rng=np.random.default_rng(0))
                spent[n].append(time.perf_counter() - t0)
        row[f"fused, {dtype}"] = (min(spent[23]) - min(spent[3])) / 20
        row[f"array code, {dtype}"] = float("nan")
    return {FIT_ROW: row}


def time_pra(X_host, N: int, K: int, n_iter: int) -> float:
    import numpy as np
    import pyroomacoustics as pra

    X_TFM = np.ascontiguousarray(X_host.astype(np.complex128).transpose(1, 0, 2))
    spent = []
    for n in (0, n_iter):
        np.random.seed(0)
        t0 = time.perf_counter()
        pra.bss.fastmnmf2(X_TFM, n_src=N, n_iter=n, n_components=K, mic_index="all")
        spent.append(time.perf_counter() - t0)
    return (spent[1] - spent[0]) / n_iter


def main() -> int:
    args = ARGS
    sys.path.insert(0, str(HERE))
    import separation as bench

    code = bench.snapshot_code(args.work, "tree")
    sys.path.insert(0, code["path"])
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    machine = bench.machine_info(args.threads)
    X = bench.paper_stft(args, log)
    N, K = bench.N_SOURCES, bench.N_BASIS
    load_before = os.getloadavg()[0]
    states = build_states(X, N, K, args.warm_iterations)
    setup = {f"{c}, {d}": s.setup_s for (c, d), s in states.items()}
    log("  timing the steps …")
    times = time_states(states, args.repeats)
    log("  timing whole fits …")
    times.update(time_fits(X, N, K, args.repeats))
    pra_s = time_pra(X, N, K, args.pra_iter) if args.pra_iter else None
    F, T, M = X.shape
    result = {"date": dt.date.today().isoformat(), "machine": machine, "code": code, "threads": args.threads,
              "shape": {"F": F, "T": T, "M": M, "N": N, "K": K}, "repeats": args.repeats,
              "warm_iterations": args.warm_iterations, "seconds": times, "setup_s": setup,
              "pyroomacoustics_per_iteration_s": pra_s, "pra_iter": args.pra_iter,
              "load_avg_1min": [load_before, os.getloadavg()[0]]}
    text = markdown(result)
    write_results(args.out / f"fit_speed-{result['date']}-{code['git_head']}-{args.threads}thread", text, result, indent=1)
    print(text)
    return 0


def markdown(r: dict) -> str:
    s = r["shape"]
    cols = list(next(iter(r["seconds"].values())))
    lines = [f"# Seconds per FastMNMF2 iteration, {r['date']}", "",
             (f"F={s['F']}, T={s['T']}, M={s['M']}, N={s['N']}, K={s['K']}, cached x·xᴴ; {r['threads']} thread(s) "
              f"(BLAS and numba); {r['machine']['cpu']}, {r['machine']['cpus_usable']} usable CPUs; code "
              f"{r['code']['git_head']} (+ {', '.join(r['code']['modified_vs_head']) or 'nothing'} modified); "
              f"minimum of {r['repeats']} interleaved repeats after {r['warm_iterations']} iterations; 1-minute "
              f"load average {r['load_avg_1min'][0]:.1f} → {r['load_avg_1min'][1]:.1f} (this run alone is about "
              f"{r['threads']})."), "",
             "| step (ms) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, per in r["seconds"].items():
        lines.append(f"| {name} | " + " | ".join("—" if per[c] != per[c] else f"{per[c] * 1e3:.1f}" for c in cols) + " |")
    it = r["seconds"]["iteration, log-likelihood every one"]
    lines += ["", "Ratios (iteration with the log-likelihood):", ""]
    for dtype in ("float64", "float32"):
        lines.append(f"- {dtype}: array code / fused = {it[f'array code, {dtype}'] / it[f'fused, {dtype}']:.2f}")
    lines.append(f"- fused: float64 / float32 = {it['fused, float64'] / it['fused, float32']:.2f}; array code: "
                 f"{it['array code, float64'] / it['array code, float32']:.2f}")
    pra_s = r.get("pyroomacoustics_per_iteration_s")
    if pra_s:
        lines.append(f"- pyroomacoustics FastMNMF2 (float64, {r['pra_iter']} iterations): {pra_s:.2f} s per iteration; "
                     + ", ".join(f"{c}: {pra_s / it[c]:.1f}×" for c in cols))
    fits = r["seconds"].get(FIT_ROW)
    if fits and pra_s:
        lines.append(f"- {FIT_ROW}: " + ", ".join(f"{c}: {pra_s / fits[c]:.1f}× pyroomacoustics" for c in cols
                                                 if fits[c] == fits[c]))
    lines += ["", "Set-up (state, x·xᴴ cache, first kernel calls) s: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["setup_s"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
