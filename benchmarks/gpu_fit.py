#!/usr/bin/env python
"""FastMNMF2 fits on a GPU (cupy) against the CPU kernels, from a saved STFT: the GPU table of
issue #13 (× real time of the 15 s paper configuration, target ≥ 100×) in one short call on a
lent device, which has numpy and cupy but not the project's audio stack.

``export`` (here, with the project installed) saves the paper scene's STFT (F=513, T≈941,
M=7, complex64, 27 MB) with a CPU reference: the log-likelihood of a float64 fit of
``REF_ITER`` iterations from the same random start. ``run`` (there: numpy, cupy and this
checkout alone; ``studio_sep.separation`` imports numpy only, and numba and scipy for the
CPU kernels) times, for each device and dtype, the fit per iteration as (t(23) − t(3)) / 20
(each the minimum of ``--repeats`` fits) and a whole fit of 100 iterations; × real time is
the session's 15 s over that fit's seconds. The fit draws its start on the host from the
seeded generator, so every device starts from the same values, and the log-likelihood after
``REF_ITER`` iterations is compared with the reference.

Usage::

    python benchmarks/gpu_fit.py export .gpu/paper.npz          # here (.gpu/ is ignored by git)
    PYTHONPATH=. python3 benchmarks/gpu_fit.py run .gpu/paper.npz --out "$OUT"   # there, carry .gpu
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF_ITER = 20
WHOLE_ITER = 100
TARGET_REAL_TIME = 100.0


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="save the paper scene's STFT and a CPU reference (here)")
    e.add_argument("path", type=Path)
    from common import add_paper_scene_args

    add_paper_scene_args(e)
    r = sub.add_parser("run", help="time the fits on every device there is (there)")
    r.add_argument("path", type=Path)
    r.add_argument("--out", type=Path, default=HERE / "results")
    r.add_argument("--devices", default="cpu,cuda", help="comma-separated, of cpu and cuda")
    r.add_argument("--dtypes", default="float32,float64")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--whole-iter", type=int, default=WHOLE_ITER)
    return p.parse_args(argv)


def git_head() -> str:
    from common import git_short_head

    return git_short_head(HERE)


def export(args) -> int:
    import numpy as np
    import separation as bench

    from studio_sep.separation import fastmnmf2

    X = bench.paper_stft(args, lambda msg: print(msg, file=sys.stderr, flush=True))
    ref = fastmnmf2.fit(X.astype(np.complex128), n_sources=bench.N_SOURCES, n_basis=bench.N_BASIS, n_iter=REF_ITER,
                        rng=np.random.default_rng(0))
    args.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.path.with_name(args.path.name + ".part.npz")
    np.savez(tmp, X=X.astype(np.complex64), ref_log_likelihood=ref.log_likelihood, n_sources=bench.N_SOURCES,
             n_basis=bench.N_BASIS, duration_s=bench.DURATION_S, hop=bench.HOP, n_fft=bench.N_FFT,
             sample_rate=16000, commit=git_head())
    os.replace(tmp, args.path)
    print(f"wrote {args.path} ({args.path.stat().st_size / 2**20:.1f} MiB): X {X.shape}, reference log-likelihood "
          f"after {REF_ITER} iterations {ref.log_likelihood[-1]:.6f}")
    return 0


def device_module(device: str):
    """(array module, synchronise) for ``device``; None where it is not there."""
    import numpy as np

    if device == "cpu":
        return np, lambda: None
    from studio_sep.dsp.backend import cupy_or_none

    cp = cupy_or_none()
    if cp is None:
        return None
    return cp, cp.cuda.Device().synchronize


def timed_fit(X, data, n_iter: int, sync) -> tuple[float, object]:
    import numpy as np

    from studio_sep.separation import fastmnmf2

    sync()
    t0 = time.perf_counter()
    result = fastmnmf2.fit(X, n_sources=int(data["n_sources"]), n_basis=int(data["n_basis"]), n_iter=n_iter,
                           log_likelihood_every=5, rng=np.random.default_rng(0))
    sync()
    return time.perf_counter() - t0, result


def measure(X, data, repeats: int, whole_iter: int, sync) -> dict:
    """Per iteration, a whole fit, and the log-likelihood after REF_ITER iterations."""
    timed_fit(X, data, 3, sync)  # warm-up: kernels compiled or loaded, memory pools filled
    spent = {n: min(timed_fit(X, data, n, sync)[0] for _ in range(repeats)) for n in (3, 23)}
    whole_s, _ = timed_fit(X, data, whole_iter, sync)
    _, ref_fit = timed_fit(X, data, REF_ITER, sync)
    return {"per_iteration_s": (spent[23] - spent[3]) / 20, "whole_s": whole_s,
            "log_likelihood": float(ref_fit.log_likelihood[-1])}


def run(args) -> int:
    import numpy as np

    data = np.load(args.path)
    X_host = data["X"]
    duration = float(data["duration_s"])
    reference = float(data["ref_log_likelihood"][-1])
    rows = []
    for device in args.devices.split(","):
        found = device_module(device)
        for dtype in args.dtypes.split(","):
            row = {"device": device, "dtype": dtype}
            if found is None:
                row["missing"] = "cupy or a CUDA GPU is not available"
                rows.append(row)
                continue
            xp, sync = found
            complex_dtype = np.result_type(np.dtype(dtype), np.complex64)
            X = X_host.astype(complex_dtype) if xp is np else xp.asarray(X_host.astype(complex_dtype))
            try:
                row.update(measure(X, data, args.repeats, args.whole_iter, sync))
            except ImportError as exc:  # e.g. a numba that does not match the device's numpy: the row says so
                row["missing"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                continue
            row["real_time"] = duration / row["whole_s"]
            row["ll_rel_diff"] = abs(row["log_likelihood"] - reference) / abs(reference)
            rows.append(row)
            print(f"  {device} {dtype}: {row['per_iteration_s'] * 1e3:.2f} ms/iteration, {args.whole_iter} iterations "
                  f"in {row['whole_s']:.2f} s = {row['real_time']:.1f}× real time", file=sys.stderr, flush=True)
    result = {"date": dt.date.today().isoformat(), "commit": git_head(), "export_commit": str(data["commit"]),
              "machine": machine(), "shape": list(X_host.shape), "duration_s": duration,
              "whole_iter": args.whole_iter, "reference_log_likelihood": reference, "rows": rows}
    text = markdown(result)
    from common import write_results

    write_results(args.out / f"gpu_fit-{result['date']}-{result['commit']}", text, result)
    print(text)
    return 0


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    from studio_sep.dsp.backend import cupy_or_none

    cp = cupy_or_none()
    if cp is not None:
        props = cp.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        info["cupy"] = cp.__version__
    import numpy as np

    info["numpy"] = np.__version__
    return info


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# FastMNMF2 on each device, {r['date']}", "",
             (f"Paper configuration (F, T, M = {', '.join(map(str, r['shape']))}; N=3, K=8), the {r['duration_s']:g} s "
              f"trio scene's STFT exported at {r['export_commit']}; studio-sep {r['commit']}; "
              f"GPU: {m.get('gpu', 'none')} (cupy {m.get('cupy', '—')}); {m['cpus']} CPUs; numpy {m['numpy']}, "
              f"python {m['python']}. Log-likelihood after {REF_ITER} iterations against the export's float64 CPU "
              f"reference {r['reference_log_likelihood']:.6f}."), "",
             (f"| device | dtype | ms/iteration | {r['whole_iter']} iterations, s | × real time | "
              f"≥ {TARGET_REAL_TIME:g}× | log-likelihood, relative difference |"),
             "|---|---|---:|---:|---:|---|---:|"]
    for row in r["rows"]:
        if "missing" in row:
            lines.append(f"| {row['device']} | {row['dtype']} | — | — | — | — | {row['missing']} |")
            continue
        met = "yes" if row["real_time"] >= TARGET_REAL_TIME else "no"
        lines.append(f"| {row['device']} | {row['dtype']} | {row['per_iteration_s'] * 1e3:.2f} | {row['whole_s']:.2f} | "
                     f"{row['real_time']:.1f} | {met} | {row['ll_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    args = parse(argv)
    return export(args) if args.cmd == "export" else run(args)


if __name__ == "__main__":
    sys.exit(main())
