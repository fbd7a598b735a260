#!/usr/bin/env python
"""How close one studio-sep FastMNMF2 iteration comes to the machine's arithmetic.

Counts the floating-point operations of every update of one iteration (paper config:
F=513, T≈941, M=7, N=3, K=8), times each update on the rendered trio scene (RT60 0.5 s,
15 s, 16 kHz), and compares the rate with the machine's float64 peak, estimated from a
large matrix product (``numpy.matmul``, OpenBLAS dgemm) timed here, and with the
elementwise bandwidth (a ``multiply`` over arrays of the size of x̃).

The updates are driven through the state ``fit`` builds (``fastmnmf2.make_state``: with numpy the
fused kernels of ``host_kernels.HostState``; private: the benchmark needs the steps one by one;
``fit`` runs exactly this sequence).

Usage::

    python benchmarks/arithmetic.py [--threads N] [--repeats R] [--out DIR]

Threads are pinned (OMP/OPENBLAS/MKL_NUM_THREADS) before numpy is imported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from common import add_paper_scene_args, median_time

HERE = Path(__file__).resolve().parent


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed repeats of each step (median kept)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--code", choices=["tree", "head"], default="tree")
    add_paper_scene_args(p)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    return p.parse_args(argv)


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None:  # before numpy is imported anywhere
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)


# ----------------------------------------------------------------------------- the count
# Real floating-point operations: a complex multiply-add is 8, a complex×real one 4;
# a division, square root, logarithm or comparison counts 1 (they cost more: the
# count is of operations, not of cycles). Small terms in F·M³ or N·F·K are kept
# where they are the only cost of a step.


def flop_model(F: int, T: int, M: int, N: int, K: int, *, qx_from_cache: bool = True,
               direct: bool = False) -> dict[str, dict]:
    """Flops of each step. ``qx_from_cache``: x̃ as one real matmul of the cached x·xᴴ
    pairs (studio-sep from d312b94 on), else as complex products Q_f x_ft. ``direct``: the
    CPU kernels without a cache (studio-sep from 41f0def on): x̃ from the split x, and the
    pairs made per frame in cache before their weighted sums."""
    FT, P = F * T, M * (M + 1) // 2
    if direct:
        qx_from_cache = False
    if qx_from_cache:
        qx = {"flops": 2 * FT * (2 * P) * M + FT * M + F * M * P * 10,
              "what": "(F,T,M(M+1))@(F,M(M+1),M) real from the cached pairs, max(·,0); Q_mi Q̄_mj"}
    else:
        qx = {"flops": 8 * FT * M * M + 3 * FT * M, "what": "Q_f x_ft for all (f,t) (complex), |·|²"}
    ratios = 3 * FT * M  # 1/ỹ, x̃/ỹ, ·/ỹ
    per_source = 2 * FT * M * N  # Σ_m g_nm A_ftm: (FT, M) @ (M, N)
    refresh_model = 2 * N * F * K * T + 2 * FT * N * M  # λ = W H, ỹ = λᵀ G
    steps = {
        "W": {"flops": ratios + 2 * per_source + 2 * (2 * N * F * T * K) + 4 * N * F * K + refresh_model,
              "what": "x̃/ỹ², 1/ỹ; Σ_m g·(…) ×2; (N,F,T)@(N,T,K) ×2; λ, ỹ"},
        "H": {"flops": ratios + 2 * per_source + 2 * (2 * N * K * F * T) + 4 * N * K * T + refresh_model,
              "what": "as W, with Wᵀ@(…)"},
        "G": {"flops": ratios + 2 * (2 * N * FT * M) + 4 * N * M + refresh_model,
              "what": "x̃/ỹ², 1/ỹ; λ@(…) ×2 over all (f,t); λ, ỹ"},
        "Q: covariances": (
            {"flops": FT * M + 2 * FT * N * M + 6 * FT * P + 2 * FT * M * (2 * P - M) + 2 * F * M * P,
             "what": "1/ỹ; the pairs x_i x̄_j of every frame; Σ_t (1/ỹ_m) pairs per (m, pair), per bin in cache"}
            if direct else
            {"flops": FT * M + 2 * F * M * T * (2 * P) + 2 * F * M * P,
             "what": "1/ỹ; (F,M,T)@(F,T,M(M+1)) real, from the cached x·xᴴ upper triangle"}),
        "Q: M solves": {"flops": M * F * (8 * M**3 + 8 * M**3 // 3 + 8 * M**2 + 8 * M**2 + 4 * M)
                        + F * M * M * M * 2,
                        "what": "per row m: Q_f V_fm (M³ cMAC), LU solve (M³/3 cMAC), qᴴVq, scale; loading"},
        "x̃ refresh": qx,
        "log-likelihood": {"flops": 4 * FT * M + F * (8 * M**3 // 3),
                           "what": "x̃/ỹ + log ỹ, sum; slogdet Q_f (fit's default: every iteration)"},
        "normalize (every 10th, /10)": {
            "flops": (3 * F * M * M + 4 * N * F * K + qx["flops"] + refresh_model) / 10,
            "what": "rescale Q, G, W, H; x̃ and λ, ỹ again"},
    }
    return steps


def pyroomacoustics_flops(F: int, T: int, M: int, N: int, K: int) -> float:
    """The same count for ``pyroomacoustics.bss.fastmnmf2`` 0.10 (its einsums as written,
    ``accelerate=True``): W and H share one x̃/ỹ², 1/ỹ; G as here; every row m of Q
    contracts the full x·xᴴ (F,T,M,M, complex) with 1/ỹ_m (complex×real, 4 flops a
    term) and then recomputes all of x̃ (M complex products Q_f x_ft, |·|²), so the Q
    update is M times the x̃ refresh plus M weighted covariances."""
    FT = F * T
    w_h = 3 * FT * M + 2 * (2 * FT * M * N) + 2 * (2 * N * F * T * K) + 2 * (2 * N * K * F * T)
    model = 2 * N * F * K * T + 2 * FT * N * M  # λ, ỹ
    g = 3 * FT * M + 2 * (2 * N * FT * M) + 2 * FT * N * M
    q = M * (FT + 4 * FT * M * M + M * F * 12 * M**2 + 8 * FT * M * M + 5 * FT * M)
    return w_h + model + g + q


def covariances_streamed(state, block: int):
    """``state.covariances()`` without the x·xᴴ cache: the upper-triangle pairs are
    rebuilt for ``block`` frequency bins at a time (F·T·M(M+1)/2 complex products per
    call, about 6 flops each) and multiplied at once, as the cached path does."""
    import numpy as np

    X, F, T, M = state.X, state.F, state.T, state.M
    u0, u1 = state.upper
    P = len(u0)
    inv_Y_FMT = np.ascontiguousarray((1.0 / state.model(slice(None))).transpose(0, 2, 1))
    R = np.empty((F, M, 2 * P), dtype=X.real.dtype)
    for f0 in range(0, F, block):
        Xb = X[f0:f0 + block]
        xx = Xb[:, :, u0] * Xb[:, :, u1].conj()
        pairs = np.concatenate([xx.real, xx.imag], axis=2)
        np.matmul(inv_Y_FMT[f0:f0 + block], pairs, out=R[f0:f0 + block])
    R /= T
    upper = R[:, :, :P] + 1j * R[:, :, P:]
    V = np.zeros((F, M, M, M), dtype=state.Q.dtype)
    V[:, :, u0, u1] = upper
    V[:, :, u1, u0] = upper.conj()
    return V


# ----------------------------------------------------------------------------- timing


def machine_peak(repeats: int = 3) -> dict:
    """float64 GFLOP/s of a large dgemm and GB/s of elementwise multiplies."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 3072
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    t = min(median_time(lambda: a @ b, 1) for _ in range(repeats))
    zn = 1536
    za = rng.standard_normal((zn, zn)) + 1j * rng.standard_normal((zn, zn))
    tz = min(median_time(lambda: za @ za, 1) for _ in range(repeats))
    out = {"dgemm_n": n, "dgemm_s": t, "dgemm_gflops": 2 * n**3 / t / 1e9,
           "zgemm_n": zn, "zgemm_gflops": 8 * zn**3 / tz / 1e9}
    for label, size in (("x̃-sized (27 MB)", 513 * 941 * 7), ("DRAM (800 MB)", 10**8)):
        x, y = np.ones(size), np.ones(size)
        z = np.empty(size)
        tm = min(median_time(lambda: np.multiply(x, y, out=z), 1) for _ in range(repeats))
        out.setdefault("multiply_gbs", {})[label] = 3 * 8 * size / tm / 1e9
    return out


def main() -> int:
    args = ARGS
    sys.path.insert(0, str(HERE))
    import separation as bench

    code = bench.snapshot_code(args.work, args.code)
    sys.path.insert(0, code["path"])
    import numpy as np

    from studio_sep.separation import fastmnmf2

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    machine = bench.machine_info(args.threads)
    X = bench.paper_stft(args, log).astype(np.complex128 if args.dtype == "float64" else np.complex64)
    F, T, M = X.shape
    N, K = bench.N_SOURCES, bench.N_BASIS
    rng = np.random.default_rng(0)

    # The state as fit() builds it (circular start; the cost does not depend on it).
    p = fastmnmf2.params_to(fastmnmf2.circular_init(F, M, N, K, rng=rng), np, np.dtype(args.dtype))
    H = rng.uniform(size=(N, K, T)).astype(args.dtype)
    Xn = X / np.sqrt(np.mean(np.abs(X) ** 2))
    t0 = time.perf_counter()
    make = getattr(fastmnmf2, "make_state", fastmnmf2._State)  # the fused CPU state, where the code has one
    state = make(np, Xn, p.Q_FMM.copy(), p.G_NM.copy(), p.W_NFK.copy(), H, cache_pairs=True)
    setup_s = time.perf_counter() - t0
    state.normalize()
    state.refresh_Qx()
    state.refresh_model()
    for _ in range(3):  # a few real iterations first: values away from the start
        state.update_W(); state.update_H(); state.update_G(); state.update_Q(); state.refresh_Qx()  # noqa: E702

    def normalize():
        state.normalize(); state.refresh_Qx(); state.refresh_model()  # noqa: E702

    def iteration():  # as fit runs it: the Q update and x̃ in one pass where the state has one
        state.update_W(); state.update_H(); state.update_G()  # noqa: E702
        getattr(state, "update_Q_and_Qx", lambda: (state.update_Q(), state.refresh_Qx()))()
        state.log_likelihood()

    timed = {
        "W": state.update_W, "H": state.update_H, "G": state.update_G,
        "Q: covariances": state.covariances, "Q (all)": state.update_Q,
        "x̃ refresh": state.refresh_Qx, "log-likelihood": state.log_likelihood,
        "normalize (every 10th, /10)": normalize, "iteration (as fit, without normalize)": iteration,
    }
    times = {}
    for name, fn in timed.items():
        times[name] = median_time(fn, args.repeats)
        log(f"  {name}: {times[name] * 1e3:.1f} ms")
    times["Q: M solves"] = times["Q (all)"] - times["Q: covariances"]
    # What-ifs, benchmark-only: the covariances without a cache, the x·xᴴ pairs rebuilt
    # per block of frequency bins (small enough to stay in cache), against the cached
    # product and the uncached per-mic complex products fit() falls back to.
    V_ref = state.covariances()
    for block in (8, 32):
        V_alt = covariances_streamed(state, block)
        assert np.allclose(V_alt, V_ref, rtol=1e-9 if args.dtype == "float64" else 1e-3,
                           atol=1e-12 * np.abs(V_ref).max()), "streamed covariances differ"
        times[f"what-if: covariances, pairs rebuilt per {block} bins (no cache)"] = median_time(
            lambda: covariances_streamed(state, block), args.repeats)
    cache = "pairs_FPT" if hasattr(state, "pairs_FPT") else "pairs"  # the fused state keeps them frames last
    pairs = getattr(state, cache)
    setattr(state, cache, None)  # fit(cache_covariance=False)'s path
    times["what-if: covariances, uncached path of fit"] = median_time(state.covariances, max(3, args.repeats // 2))
    setattr(state, cache, pairs)
    for name in [k for k in times if k.startswith("what-if")]:
        log(f"  {name}: {times[name] * 1e3:.1f} ms")
    times["normalize (every 10th, /10)"] /= 10
    log("  machine peak …")
    peak = machine_peak()

    qx_from_cache = hasattr(state, "pair_weights")  # x̃ from the pairs (studio-sep ≥ d312b94)
    direct = hasattr(state, "X_F2MT")  # the CPU kernels read the split x, no cache (studio-sep ≥ 41f0def)
    model = flop_model(F, T, M, N, K, qx_from_cache=qx_from_cache, direct=direct)
    rows = []
    for name, m in model.items():
        rows.append({"step": name, "what": m["what"], "mflop": m["flops"] / 1e6, "ms": times[name] * 1e3,
                     "gflops": m["flops"] / times[name] / 1e9,
                     "pct_peak": 100 * m["flops"] / times[name] / 1e9 / peak["dgemm_gflops"]})
    total_flops = sum(m["flops"] for m in model.values())
    total_s = sum(times[name] for name in model)
    measured_iter = times["iteration (as fit, without normalize)"] + times["normalize (every 10th, /10)"]
    pra_flops = pyroomacoustics_flops(F, T, M, N, K)
    result = {"date": dt.date.today().isoformat(), "machine": machine, "code": code, "threads": args.threads,
              "shape": {"F": F, "T": T, "M": M, "N": N, "K": K}, "cache_setup_s": setup_s, "peak": peak,
              "rows": rows, "total_mflop": total_flops / 1e6, "sum_of_steps_s": total_s, "direct": direct,
              "iteration_s": measured_iter, "iteration_gflops": total_flops / measured_iter / 1e9,
              "iteration_pct_peak": 100 * total_flops / measured_iter / 1e9 / peak["dgemm_gflops"],
              "pyroomacoustics_mflop": pra_flops / 1e6}
    result["load_avg_1min_at_end"] = os.getloadavg()[0]
    result["what_if_ms"] = {k: v * 1e3 for k, v in times.items() if k.startswith("what-if")}
    result["dtype"] = args.dtype
    text = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"arithmetic-{result['date']}-{code['git_head']}{'' if code['which'] == 'head' else '-tree'}"
                       f"-{args.threads}thread{'' if args.dtype == 'float64' else '-' + args.dtype}")
    Path(str(stem) + ".json").write_text(json.dumps(result, indent=1))
    Path(str(stem) + ".md").write_text(text)
    print(text)
    return 0


def markdown(r: dict) -> str:
    s, pk = r["shape"], r["peak"]
    lines = [f"# Arithmetic of one FastMNMF2 iteration, {r['date']}", "",
             f"F={s['F']}, T={s['T']}, M={s['M']}, N={s['N']}, K={s['K']}, {r.get('dtype', 'float64')}, "
             f"{'no x·xᴴ cache (the kernels read the split x)' if r.get('direct') else 'cached x·xᴴ'}; "
             f"{r['threads']} thread(s); {r['machine']['cpu']}; "
             f"{bench_code_line(r['code'])}; 1-minute load average at the end "
             f"{r.get('load_avg_1min_at_end', float('nan')):.1f} (the run itself is about 1 per thread).", "",
             f"Machine: dgemm n={pk['dgemm_n']} {pk['dgemm_gflops']:.1f} GFLOP/s (taken as peak), zgemm "
             f"{pk['zgemm_gflops']:.1f} GFLOP/s; elementwise multiply "
             + ", ".join(f"{v:.1f} GB/s on {k}" for k, v in pk["multiply_gbs"].items()) + ".", "",
             "| step | what | MFLOP | ms | GFLOP/s | % of peak |", "|---|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['step']} | {row['what']} | {row['mflop']:.1f} | {row['ms']:.1f} | "
                     f"{row['gflops']:.2f} | {row['pct_peak']:.1f} |")
    lines += [f"| **iteration** | sum of the steps | {r['total_mflop']:.0f} | {r['sum_of_steps_s'] * 1e3:.0f} | "
              f"{r['total_mflop'] / 1e3 / r['sum_of_steps_s']:.2f} | "
              f"{100 * r['total_mflop'] / 1e3 / r['sum_of_steps_s'] / pk['dgemm_gflops']:.1f} |",
              f"| **iteration** | timed as fit runs it | {r['total_mflop']:.0f} | {r['iteration_s'] * 1e3:.0f} | "
              f"{r['iteration_gflops']:.2f} | {r['iteration_pct_peak']:.1f} |", "",
              ("State set-up (once per fit: the split copy of x, the kernels' first calls): "
               if r.get("direct") else "x·xᴴ cache set-up (once per fit): ")
              + f"{r['cache_setup_s'] * 1e3:.0f} ms. "
              f"pyroomacoustics' iteration, counted the same way: {r['pyroomacoustics_mflop']:.0f} MFLOP.", "",
              "What-ifs (benchmark-only code, same state; compare with 'Q: covariances' above):", ""]
    lines += [f"- {k.removeprefix('what-if: ')}: {v:.1f} ms" for k, v in r.get("what_if_ms", {}).items()]
    lines.append("")
    return "\n".join(lines)


def bench_code_line(code: dict) -> str:
    sys.path.insert(0, str(HERE))
    import separation as bench

    return bench._code_line(code)


if __name__ == "__main__":
    sys.exit(main())
