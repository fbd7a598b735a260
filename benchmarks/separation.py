#!/usr/bin/env python
"""Separation benchmark: studio-sep FastMNMF2 against pyroomacoustics' FastMNMF2.

Renders the trio session at two RT60s (15 s, 16 kHz), then, in the same run and on the
same STFT (1024 points, hop 256), separates it with

- ``pra``: ``pyroomacoustics.bss.fastmnmf2`` (blind, identity Q; its outputs come in an
  arbitrary order and are matched to the sources by the best of the 3! permutations on
  mean SDR at mic 1: an oracle matching that favours it);
- studio-sep ``circular`` (blind; outputs assigned by the pipeline's own spot-mic energy
  rule; also scored with the oracle permutation, as pra is), ``geometry`` and
  ``geometry+dictionary``, through ``studio_sep.stages.separate.separate_session``;
- ``oracle``: a multichannel Wiener filter from the true images (``oracle_mwf.py``);

all with M=7, N=3, K=8 and 100 iterations, and prints SDR/SIR/SAR/SI-SDR at mic 1
(``trio_l``) and at each source's spot mic, seconds per iteration, peak memory, and the
ratios to pyroomacoustics. Then it measures peak memory against T and M and a 5-minute
session's peak RSS.

Every method runs in its own subprocess with OMP/OPENBLAS/MKL_NUM_THREADS set before
numpy is imported there (``--threads``), one at a time, so that the time per iteration
is not disturbed by another job and the peak RSS (``VmHWM``, reset after the imports) is
that method's alone. Timing: studio-sep's seconds per iteration are taken from its
progress callback over iterations 2..n (iteration 1 is the warm-up and carries the x·xᴴ
cache set-up); pyroomacoustics' are ``(t(n_iter) - t(0)) / n_iter``, where the
``n_iter=0`` call (set-up and Wiener output only) runs first as its warm-up.

Usage::

    python benchmarks/separation.py [--quick] [--threads N] [--device cpu|cuda] [--dtype float32|float64]
        [--out DIR]

``--device cuda`` runs studio-sep's fits on the GPU (CuPy, ``studio-sep[gpu]``; the same
code as on the CPU); pyroomacoustics and the oracle stay on the CPU. The cost table gives
each method's × real time: the session's 15 s over its fit's seconds (the target of issue
#13 on a GPU: ≥ 100×).

``--quick`` runs one seed and fewer iterations (pyroomacoustics 5, studio-sep 20): the
times per iteration hold, the dB values do not. Renders and separated audio go to
``--work`` (default ``~/.cache/studio-sep/benchmarks``); the table to stdout and to
``<out>/separation-<date>-<commit>[-quick][-float32][-cuda].md`` with a JSON next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_model, jsonable, memory_gib, package_versions

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "NUMBA_NUM_THREADS")

# The paper's configuration.
N_FFT, HOP, N_BASIS, N_SOURCES, SAMPLE_RATE = 1024, 256, 8, 3, 16000
RT60S = (0.3, 0.5)
DURATION_S = 15.0
STUDIO_INITS = {"circular": ("circular",), "geometry": ("geometry",),
                "geometry+dictionary": ("geometry", "dictionary")}
METRICS = ("sdr", "sir", "sar", "si_sdr")
MiB = 1024**2


# ----------------------------------------------------------------------------- workers
# Each worker runs in a fresh interpreter whose thread variables were set by the parent
# before numpy was imported; it writes one JSON result file.


def _proc_status(key: str) -> float:
    """A /proc/self/status field in MiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _thread_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{**{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")},
             "library": Path(d.get("filepath", "")).name} for d in threadpool_info()]


def worker(spec: dict) -> None:
    import numpy as np

    from studio_sep.dsp import stft
    from studio_sep.session import load_mics, load_session
    from studio_sep.stages import SeparationOptions, separate_session

    if spec["kind"] == "pra":
        import pyroomacoustics as pra
    if spec["kind"] == "oracle":
        sys.path.insert(0, str(HERE))
        from oracle_mwf import oracle_wiener
    if spec["kind"] == "fit_memory":
        from studio_sep.separation import fastmnmf2

    result: dict = {"kind": spec["kind"], "threads": _thread_info()}
    peak_reset = _reset_peak()
    result["baseline_rss_mib"] = _proc_status("VmRSS")
    wall = time.perf_counter()

    if spec["kind"] == "studio_sep":
        session = load_session(spec["session"])
        stamps: list[float] = []

        def on_progress(stage, done, total, detail=""):
            if stage == "separate":
                stamps.append(time.perf_counter())

        options = SeparationOptions(init=tuple(spec["init"]), n_iter=spec["n_iter"], n_basis=N_BASIS,
                                    n_fft=N_FFT, hop=HOP, device=spec.get("device", "cpu"),
                                    dtype=spec.get("dtype", "float64"),
                                    seed=spec["seed"], processing_sample_rate=SAMPLE_RATE)
        run = separate_session(session, spec["out"], options, callback=on_progress).run
        n = spec["n_iter"]
        # stamps[0]: before the fit; stamps[i]: after iteration i
        result["per_iteration_s"] = (stamps[n] - stamps[1]) / (n - 1) if n >= 2 else None
        result["first_iteration_s"] = stamps[1] - stamps[0] if n >= 1 else None
        result["fit_s"] = run["timings_s"]["fit_s"]
        if spec.get("device") == "cuda":
            import cupy

            result["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        result["timings_s"] = run["timings_s"]
        result["shape_FTM"] = run["separation"]["shape_FTM"]
        ll = run["log_likelihood"]  # older runs: "per_iteration"; now "iterations" + "values"
        result["log_likelihood"] = ll.get("values", ll.get("per_iteration"))
        result["images"] = str(Path(spec["out"]) / session.name)

    elif spec["kind"] == "pra":
        session = load_session(spec["session"])
        x_MS = load_mics(session)
        X_FTM = stft.stft(x_MS, n_fft=N_FFT, hop=HOP).astype(np.complex128)
        X_TFM = np.ascontiguousarray(X_FTM.transpose(1, 0, 2))  # pyroomacoustics' axis order
        np.random.seed(spec["seed"])  # pyroomacoustics draws W, H from the global RNG
        t0 = time.perf_counter()
        pra.bss.fastmnmf2(X_TFM, n_src=N_SOURCES, n_iter=0, n_components=N_BASIS, mic_index="all")
        setup_s = time.perf_counter() - t0  # also the warm-up
        np.random.seed(spec["seed"])
        t0 = time.perf_counter()
        Y_MTFN = pra.bss.fastmnmf2(X_TFM, n_src=N_SOURCES, n_iter=spec["n_iter"], n_components=N_BASIS,
                                   mic_index="all")
        run_s = time.perf_counter() - t0
        result["per_iteration_s"] = (run_s - setup_s) / spec["n_iter"]
        result["fit_s"] = run_s
        result["setup_s"] = setup_s
        result["shape_FTM"] = list(X_FTM.shape)
        images = np.stack([stft.istft(Y_MTFN[..., n].transpose(2, 1, 0), n_fft=N_FFT, hop=HOP,
                                      n_samples=x_MS.shape[1]) for n in range(Y_MTFN.shape[-1])])
        np.save(spec["out"], images.astype(np.float32))
        result["images"] = spec["out"]

    elif spec["kind"] == "oracle":
        from studio_sep.io import audio as audio_io

        session = load_session(spec["session"])
        x_MS = load_mics(session)
        X_FTM = stft.stft(x_MS, n_fft=N_FFT, hop=HOP)
        C_NFTM = np.stack([stft.stft(audio_io.read_audio(session.truth.images[s.name])[0], n_fft=N_FFT, hop=HOP)
                           for s in session.sources])
        t0 = time.perf_counter()
        S_NFTM = oracle_wiener(X_FTM, C_NFTM)
        result["fit_s"] = time.perf_counter() - t0
        result["per_iteration_s"] = None
        result["shape_FTM"] = list(X_FTM.shape)
        images = np.stack([stft.istft(S, n_fft=N_FFT, hop=HOP, n_samples=x_MS.shape[1]) for S in S_NFTM])
        np.save(spec["out"], images.astype(np.float32))
        result["images"] = spec["out"]

    elif spec["kind"] == "fit_memory":
        # Peak memory of fastmnmf2.fit alone, on the first T frames and M mics of a saved STFT.
        X_all = np.load(spec["stft"], mmap_mode="r")
        X = np.array(X_all[:, :spec["frames"], :spec["mics"]], dtype=spec.get("complex_dtype", "complex128"))
        del X_all
        _reset_peak()
        result["baseline_rss_mib"] = _proc_status("VmRSS")
        result["shape_FTM"] = list(X.shape)
        result["cache_bytes"] = fastmnmf2.covariance_cache_bytes(X.shape, X.real.dtype)
        result["cached"] = result["cache_bytes"] <= fastmnmf2.COVARIANCE_CACHE_BYTES
        t0 = time.perf_counter()
        fastmnmf2.fit(X, n_sources=N_SOURCES, n_basis=N_BASIS, n_iter=spec["n_iter"],
                      rng=np.random.default_rng(0))
        result["fit_s"] = time.perf_counter() - t0

    elif spec["kind"] == "stft_dump":
        session = load_session(spec["session"])
        X = stft.stft(load_mics(session), n_fft=N_FFT, hop=HOP).astype(np.complex128)
        np.save(spec["out"], X)

    result["wall_s"] = time.perf_counter() - wall
    result["peak_rss_mib"] = _proc_status("VmHWM")
    result["peak_reset"] = peak_reset
    Path(spec["result"]).write_text(json.dumps(result))


def run_worker(spec: dict, *, threads: int, work: Path, log) -> dict:
    """Run one worker in a fresh interpreter with pinned threads; return its result."""
    spec = dict(spec, result=str(work / "worker-result.json"))
    Path(spec["result"]).unlink(missing_ok=True)
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join([CODE["path"], env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['kind']} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(Path(spec["result"]).read_text())
    result["process_s"] = time.perf_counter() - started
    # 1-minute load average before and after: above the method's own threads, something
    # else shared the CPUs and the timing is suspect
    result["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    log(f"    {spec['kind']:<10} {spec.get('label', '')}: {result['wall_s']:.1f} s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    return result


# ----------------------------------------------------------------------------- scoring


def score(truth_NMS, est_NMS, spot_index: list[int], *, ref_mic: int = 0) -> dict:
    """Metrics of every source at mic ``ref_mic`` and at its own spot mic.

    As ``studio_sep.stages.evaluate.evaluate_run``: at each mic, all sources are scored
    together (SIR needs the others' true images at that mic).
    """
    from studio_sep.dsp.metrics import bss_metrics

    N = truth_NMS.shape[0]
    at = {m: bss_metrics(truth_NMS[:, m], est_NMS[:, m]) for m in dict.fromkeys([ref_mic, *spot_index])}
    return {"mic1": {k: [float(at[ref_mic][k][n]) for n in range(N)] for k in METRICS},
            "spot": {k: [float(at[spot_index[n]][k][n]) for n in range(N)] for k in METRICS}}


def best_permutation(truth_NMS, est_NMS, *, ref_mic: int = 0) -> tuple[int, ...]:
    """The order of the estimates that maximises the mean SDR at ``ref_mic``."""
    import numpy as np

    from studio_sep.dsp.metrics import bss_metrics

    N = truth_NMS.shape[0]
    perms = list(itertools.permutations(range(N)))
    sdr = [np.mean(bss_metrics(truth_NMS[:, ref_mic], est_NMS[list(p), ref_mic])["sdr"]) for p in perms]
    return perms[int(np.argmax(sdr))]


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _mean(values):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


# ----------------------------------------------------------------------------- code

#: The studio_sep code every process of this run imports (set by :func:`snapshot_code`).
CODE: dict = {"path": str(REPO)}


def snapshot_code(work: Path, which: str) -> dict:
    """Copy ``studio_sep/`` (the working tree, or ``git HEAD``) to ``work/code/<sha>`` so
    that every worker of a long run imports the same code even if the tree changes."""
    import hashlib
    import shutil
    import tempfile

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True).stdout.strip()

    work.mkdir(parents=True, exist_ok=True)  # the first run on a machine
    tmp = Path(tempfile.mkdtemp(dir=work))
    if which == "head":
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "studio_sep"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    else:
        shutil.copytree(REPO / "studio_sep", tmp / "studio_sep", ignore=shutil.ignore_patterns("__pycache__"))
    h = hashlib.sha256()
    for f in sorted((tmp / "studio_sep").rglob("*.py")):
        h.update(str(f.relative_to(tmp)).encode() + b"\0" + f.read_bytes())
    digest = h.hexdigest()[:12]
    dest = work / "code" / digest
    if dest.exists():
        shutil.rmtree(tmp)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)
    modified = git("status", "--porcelain", "--", "studio_sep").splitlines() if which == "tree" else []
    CODE.update(path=str(dest), which=which, sha256_12=digest, git_head=git("rev-parse", "--short", "HEAD"),
                modified_vs_head=[line[3:] for line in modified])
    return dict(CODE)


# ----------------------------------------------------------------------------- machine


def machine_info(threads: int) -> dict:
    cpu, mem_gib = cpu_model(), memory_gib()
    versions = package_versions(("scipy", "pyroomacoustics", "fast-bss-eval", "threadpoolctl"))
    blas = _thread_info()
    if not blas:
        blas = [{"internal_api": "see numpy.show_config()"}]
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_gib": mem_gib, "platform": platform.platform(terse=True), "blas": blas,
            "threads_per_method": threads, "versions": versions}


# ----------------------------------------------------------------------------- benchmark


def render(work: Path, *, rt60_s: float, seed: int, duration_s: float, soundfont: str, log) -> Path:
    from studio_sep.sim import SimulationSettings, simulate_session

    folder = work / "scenes" / f"seed{seed}-rt60_{rt60_s:g}-{duration_s:g}s"
    t0 = time.perf_counter()
    res = simulate_session(folder, SimulationSettings(seed=seed, duration_s=duration_s, sample_rate=SAMPLE_RATE,
                                                      rt60_s=rt60_s, soundfont=soundfont))
    log(f"  scene {folder.name}: {'reused' if res.reused else 'rendered'} "
        f"({time.perf_counter() - t0:.1f} s), measured RT60 {res.rt60_measured_s:.3f} s")
    return res.manifest


def paper_stft(args, log):
    """The STFT (F, T, M) of the paper configuration's trio scene at ``args.rt60`` (rendered
    with ``args.soundfont`` into ``args.work``, reused when there), as the per-step timers
    (``arithmetic.py``, ``fit_speed.py``) take it."""
    from studio_sep.dsp import stft
    from studio_sep.session import load_mics, load_session

    manifest = render(args.work, rt60_s=args.rt60, seed=0, duration_s=DURATION_S, soundfont=args.soundfont, log=log)
    return stft.stft(load_mics(load_session(manifest)), n_fft=N_FFT, hop=HOP)


def separation_benchmark(args, log) -> dict:
    import numpy as np

    from studio_sep.io import audio as audio_io
    from studio_sep.session import load_mics, load_session
    from studio_sep.stages import read_images

    work = args.work
    studio_iter = args.n_iter or (20 if args.quick else 100)
    pra_iter = args.pra_iter or (5 if args.quick else 100)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    pra_seeds = args.pra_seeds if args.pra_seeds is not None else seeds
    runs: list[dict] = []
    scenes: list[dict] = []
    for rt60 in args.rt60:
        manifest = render(work, rt60_s=rt60, seed=args.scene_seed, duration_s=DURATION_S,
                          soundfont=args.soundfont, log=log)
        session = load_session(manifest)
        names = [s.name for s in session.sources]
        mic_names = [m.name for m in session.mics]
        spot = [mic_names.index(s.spot_mic) for s in session.sources]
        truth = np.stack([audio_io.read_audio(session.truth.images[n])[0] for n in names])
        mix = load_mics(session)
        scene = {"rt60_s": rt60, "manifest": str(manifest), "sources": names, "ref_mic": mic_names[0],
                 "spot_mics": [mic_names[i] for i in spot], "n_samples": int(mix.shape[1])}
        scene["mixture"] = score(truth, np.repeat(mix[None], len(names), axis=0), spot)
        scenes.append(scene)
        tag = f"rt60_{rt60:g}"

        jobs = []
        for seed in sorted(set(seeds) | set(pra_seeds)):
            if seed in pra_seeds and "pra" in args.methods:
                jobs.append(("pra", seed))
            for method in STUDIO_INITS:
                if seed in seeds and method in args.methods:
                    jobs.append((method, seed))
        if "oracle" in args.methods:
            jobs.append(("oracle", None))
        for method, seed in jobs:
            label = f"{tag}/{method}/seed{seed}"
            base = {"session": str(manifest), "seed": seed, "label": label}
            if method == "pra":
                out = work / "out" / tag / f"pra-seed{seed}.npy"
                out.parent.mkdir(parents=True, exist_ok=True)
                res = run_worker(dict(base, kind="pra", n_iter=pra_iter, out=str(out)),
                                 threads=args.threads, work=work, log=log)
                est = np.load(res["images"]).astype(np.float64)
                n_iter = pra_iter
            elif method == "oracle":
                out = work / "out" / tag / "oracle.npy"
                out.parent.mkdir(parents=True, exist_ok=True)
                res = run_worker(dict(base, kind="oracle", out=str(out)), threads=args.threads, work=work, log=log)
                est = np.load(res["images"]).astype(np.float64)
                n_iter = None
            else:
                out = work / "out" / tag / f"{method}-seed{seed}"
                res = run_worker(dict(base, kind="studio_sep", init=list(STUDIO_INITS[method]), n_iter=studio_iter,
                                      out=str(out), device=args.device, dtype=args.dtype),
                                 threads=args.threads, work=work, log=log)
                est = read_images(Path(res["images"]), session)
                n_iter = studio_iter
            entry = {"scene": rt60, "method": method, "seed": seed, "n_iter": n_iter,
                     **{k: res.get(k) for k in ("per_iteration_s", "first_iteration_s", "fit_s", "setup_s",
                                                "wall_s", "peak_rss_mib", "baseline_rss_mib", "shape_FTM",
                                                "threads", "log_likelihood", "load_avg_1min", "gpu")}}
            if method in ("pra", "circular"):
                perm = best_permutation(truth, est)
                if method == "pra":
                    entry["matching"] = "best permutation (SDR at mic 1)"
                    entry["permutation"] = list(perm)
                    entry["metrics"] = score(truth, est[list(perm)], spot)
                else:
                    entry["matching"] = "own (spot-mic energy share)"
                    entry["metrics"] = score(truth, est, spot)
                    runs.append(entry)
                    entry = dict(entry, method="circular (best perm)", matching="best permutation (SDR at mic 1)",
                                 permutation=list(perm), metrics=score(truth, est[list(perm)], spot))
            else:
                entry["matching"] = "by geometry" if method.startswith("geometry") else "—"
                entry["metrics"] = score(truth, est, spot)
            runs.append(entry)
            m = entry["metrics"]
            log(f"      SDR mic1 {_mean(m['mic1']['sdr']):+.2f} dB, spot {_mean(m['spot']['sdr']):+.2f} dB"
                + (f", {entry['per_iteration_s']:.3f} s/iter" if entry.get("per_iteration_s") else ""))
    return {"scenes": scenes, "runs": runs, "studio_iter": studio_iter, "pra_iter": pra_iter,
            "seeds": seeds, "pra_seeds": pra_seeds}


def memory_benchmark(args, log) -> dict:
    """Peak memory against T and M (fit alone) and a 5-minute session end to end."""
    from studio_sep.separation import fastmnmf2

    work = args.work
    manifest = render(work, rt60_s=0.5, seed=args.scene_seed, duration_s=args.long_s, soundfont=args.soundfont,
                      log=log)
    stft_path = work / "out" / f"stft-{args.long_s:g}s.npy"
    stft_path.parent.mkdir(parents=True, exist_ok=True)
    if not stft_path.is_file():
        run_worker({"kind": "stft_dump", "session": str(manifest), "out": str(stft_path)}, threads=args.threads,
                   work=work, log=log)
    import numpy as np

    F, T_all, M_all = np.load(stft_path, mmap_mode="r").shape
    result: dict = {"long_s": args.long_s, "shape_FTM": [F, T_all, M_all], "scaling": [], "session": []}
    n_iter = 2
    frame_counts = sorted({min(T_all, round(s * SAMPLE_RATE / HOP)) for s in args.scaling_s} | {T_all})
    for M in (3, 5, 7):
        for T in frame_counts:
            if M != M_all and T not in (frame_counts[0], T_all):
                continue  # the M sweep at the shortest and the longest T only
            res = run_worker({"kind": "fit_memory", "stft": str(stft_path), "frames": T, "mics": M,
                              "n_iter": n_iter, "label": f"T={T} M={M}"}, threads=args.threads, work=work, log=log)
            x_bytes = F * T * M * 16
            result["scaling"].append({
                "frames": T, "mics": M, "seconds": T * HOP / SAMPLE_RATE, "n_iter": n_iter,
                "x_mib": x_bytes / MiB, "cache_mib": res["cache_bytes"] / MiB, "cached": res["cached"],
                "baseline_rss_mib": res["baseline_rss_mib"], "peak_rss_mib": res["peak_rss_mib"],
                "fit_extra_mib": res["peak_rss_mib"] - res["baseline_rss_mib"],
                "fit_extra_over_x": (res["peak_rss_mib"] - res["baseline_rss_mib"]) * MiB / x_bytes,
                "fit_s": res["fit_s"]})
    for dtype, init in (("float64", ("geometry", "dictionary")), ("float32", ("geometry", "dictionary"))):
        out = work / "out" / f"long-{dtype}"
        res = run_worker({"kind": "studio_sep", "session": str(manifest), "seed": 0, "init": list(init),
                          "n_iter": args.long_iter, "dtype": dtype, "out": str(out),
                          "label": f"{args.long_s:g} s session, {dtype}"}, threads=args.threads, work=work, log=log)
        shape = res["shape_FTM"]
        result["session"].append({
            "dtype": dtype, "init": "+".join(init), "n_iter": args.long_iter, "shape_FTM": shape,
            "cache_mib": fastmnmf2.covariance_cache_bytes(shape, dtype) / MiB,
            "cached": fastmnmf2.covariance_cache_bytes(shape, dtype) <= fastmnmf2.COVARIANCE_CACHE_BYTES,
            "peak_rss_mib": res["peak_rss_mib"], "baseline_rss_mib": res["baseline_rss_mib"],
            "per_iteration_s": res["per_iteration_s"], "timings_s": res["timings_s"],
            "under_8_gib": res["peak_rss_mib"] < 8 * 1024})
    return result


# ----------------------------------------------------------------------------- report


def summarise(bench: dict) -> dict:
    """Means over sources, scenes and seeds; spread over seeds; ratios to pra."""
    runs = bench["runs"]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    scenes = list(dict.fromkeys(r["scene"] for r in runs))
    summary: dict = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        s: dict = {"matching": mine[0]["matching"], "n_iter": mine[0]["n_iter"],
                   "seeds": sorted({r["seed"] for r in mine if r["seed"] is not None})}
        for where in ("mic1", "spot"):
            s[where] = {k: _mean([v for r in mine for v in r["metrics"][where][k]]) for k in METRICS}
            per_seed = {}
            for r in mine:
                per_seed.setdefault(r["seed"], []).extend(r["metrics"][where]["sdr"])
            seed_means = [_mean(v) for v in per_seed.values()]
            s[where]["sdr_seed_min"], s[where]["sdr_seed_max"] = min(seed_means), max(seed_means)
            s[where]["per_scene_sdr"] = {str(sc): _mean([v for r in mine if r["scene"] == sc
                                                        for v in r["metrics"][where]["sdr"]]) for sc in scenes}
        s["per_iteration_s"] = {str(sc): _mean([r["per_iteration_s"] for r in mine if r["scene"] == sc])
                                for sc in scenes}
        s["fit_s"] = {str(sc): _mean([r["fit_s"] for r in mine if r["scene"] == sc]) for sc in scenes}
        fit_s = _mean(list(s["fit_s"].values()))
        s["real_time_factor"] = DURATION_S / fit_s if fit_s else None
        s["gpu"] = next((r["gpu"] for r in mine if r.get("gpu")), None)
        s["per_iteration_s_range"] = [min((r["per_iteration_s"] for r in mine if r["per_iteration_s"]), default=None),
                                      max((r["per_iteration_s"] for r in mine if r["per_iteration_s"]), default=None)]
        loads = [v for r in mine for v in (r.get("load_avg_1min") or [])]
        s["max_load_avg_1min"] = max(loads) if loads else None
        s["peak_rss_mib"] = max(r["peak_rss_mib"] for r in mine)
        s["rss_over_baseline_mib"] = max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in mine)
        summary[method] = s
    pra = summary.get("pra")
    if pra:
        for method, s in summary.items():
            s["delta_sdr_vs_pra"] = {w: (s[w]["sdr"] - pra[w]["sdr"]) if None not in (s[w]["sdr"], pra[w]["sdr"])
                                     else None for w in ("mic1", "spot")}
            ratios = [pra["per_iteration_s"][sc] / s["per_iteration_s"][sc] for sc in s["per_iteration_s"]
                      if s["per_iteration_s"][sc] and pra["per_iteration_s"].get(sc)]
            s["speedup_vs_pra"] = {"per_scene": ratios, "mean": _mean(ratios)}
            s["rss_ratio_vs_pra"] = s["rss_over_baseline_mib"] / pra["rss_over_baseline_mib"]
    return summary


def _f(v, fmt="{:+.2f}", none="—"):
    return none if v is None else fmt.format(v)


def markdown(report: dict) -> str:
    mach, bench, summary = report["machine"], report["separation"], report["summary"]
    scenes = [str(s["rt60_s"]) for s in bench["scenes"]]
    lines = [f"# Separation benchmark, {report['date']}{' (--quick: dB values not comparable)' if report['quick'] else ''}",
             "",
             f"Machine: {mach['cpu']}, {mach['cpus_usable']} usable of {mach['logical_cpus']} logical CPUs, "
             f"{mach['memory_gib']} GiB; {mach['platform']}; BLAS "
             + ", ".join(f"{b.get('internal_api')} {b.get('version') or ''} {b.get('architecture') or ''} "
                         f"(`{b.get('library', '')}`)" for b in mach["blas"])
             + f"; **{mach['threads_per_method']} thread(s) per method** (OMP/OPENBLAS/MKL_NUM_THREADS).",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
             + f"; {_code_line(report['code'])}.",
             "Thread pools in effect inside the method processes (threadpoolctl): "
             + ", ".join(f"{t.get('library')} num_threads={t.get('num_threads')}"
                         for t in (bench["runs"][0].get("threads") or []) if bench["runs"]) + ".",
             "",
             f"Scenes: the rendered trio (`simulate_session`, seed {report['args']['scene_seed']}, "
             f"{DURATION_S:g} s, {SAMPLE_RATE} Hz, RT60 " + " and ".join(f"{s} s" for s in scenes)
             + f"); M=7 mics, N=3 sources, STFT {N_FFT}/{HOP}, K={N_BASIS}; "
             f"studio-sep {bench['studio_iter']} iterations, seeds {bench['seeds']}, {report['args']['dtype']}, "
             + (f"GPU ({next((s['gpu'] for s in summary.values() if s.get('gpu')), 'cuda')})"
                if report["args"]["device"] == "cuda" else "CPU") + "; "
             f"pyroomacoustics {bench['pra_iter']} iterations, seeds {bench['pra_seeds']}. "
             "Every value is the mean over the 3 sources, both scenes and all seeds; "
             "dB from fast-bss-eval (SDR/SIR/SAR with a 512-tap filter, as `studio_sep.dsp.metrics`). "
             "'seed range' is the lowest and highest per-seed mean SDR.",
             ""]
    for where, title in (("mic1", "at mic 1 (trio_l)"), ("spot", "at each source's spot mic")):
        lines += [f"## Quality {title}", "",
                  "| method | outputs matched to sources | SDR | SIR | SAR | SI-SDR | ΔSDR vs pra | SDR seed range | "
                  + " | ".join(f"SDR RT60 {s}" for s in scenes) + " |",
                  "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(scenes)]
        mix = {k: _mean([v for s in bench["scenes"] for v in s["mixture"][where][k]]) for k in METRICS}
        lines.append("| unprocessed mic | — | " + " | ".join(_f(mix[k]) for k in METRICS) + " | | | "
                     + " | ".join(_f(_mean(s["mixture"][where]["sdr"])) for s in bench["scenes"]) + " |")
        for method, s in summary.items():
            q = s[where]
            rng = (f"{q['sdr_seed_min']:+.2f} … {q['sdr_seed_max']:+.2f}" if len(s["seeds"]) > 1 else "—")
            lines.append(f"| {method} | {s['matching']} | " + " | ".join(_f(q[k]) for k in METRICS)
                         + f" | {_f(s.get('delta_sdr_vs_pra', {}).get(where))} | {rng} | "
                         + " | ".join(_f(q["per_scene_sdr"][sc]) for sc in scenes) + " |")
        lines.append("")
    lines += ["## Cost", "",
              "Seconds per iteration (mean over seeds), speed-up = pra's s/iter ÷ the method's on the same scene "
              "and thread count; peak RSS of the method's own process (VmHWM, reset after the imports), and the "
              "part above the post-import baseline. 'max load': the highest 1-minute load average seen at the "
              "start or end of the method's runs (the method itself is 1 per thread; more means another job "
              "shared the CPUs and the times are suspect; not recorded: —).", "",
              "| method | " + " | ".join(f"s/iter RT60 {s}" for s in scenes)
              + " | s/iter range | speed-up vs pra | fit s (mean) | × real time | peak RSS MiB | above baseline MiB "
              "| ÷ pra's | max load |",
              "|---|" + "---:|" * len(scenes) + "---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, s in summary.items():
        if method == "circular (best perm)":
            continue
        sp = s.get("speedup_vs_pra", {})
        lo, hi = s.get("per_iteration_s_range", [None, None])
        lines.append(f"| {method} | " + " | ".join(_f(s["per_iteration_s"][sc], "{:.3f}") for sc in scenes)
                     + f" | {_f(lo, '{:.3f}')}–{_f(hi, '{:.3f}')} | {_f(sp.get('mean'), '{:.1f}×')} | {_f(_mean(list(s['fit_s'].values())), '{:.1f}')}"
                     + f" | {_f(s.get('real_time_factor'), '{:.1f}×')}"
                     + f" | {s['peak_rss_mib']:.0f} | {s['rss_over_baseline_mib']:.0f} | "
                     + f"{_f(s.get('rss_ratio_vs_pra'), '{:.2f}')} | {_f(s.get('max_load_avg_1min'), '{:.1f}')} |")
    lines.append("")
    lines += targets_markdown(report)
    if report.get("memory"):
        lines += memory_markdown(report["memory"])
    return "\n".join(lines) + "\n"


def _code_line(code: dict) -> str:
    if code["which"] == "head":
        return f"studio-sep as committed at {code['git_head']} (studio_sep/*.py sha256 {code['sha256_12']}…)"
    changed = ", ".join(code["modified_vs_head"]) or "none"
    return (f"studio-sep working tree on {code['git_head']} (studio_sep/*.py sha256 {code['sha256_12']}…; "
            f"changed since: {changed})")


def targets_markdown(report: dict) -> list[str]:
    summary = report["summary"]
    pra = summary.get("pra")
    if not pra:
        return []
    out = ["## Targets of the issue", "", "| target | measured | met |", "|---|---|---|"]
    for method in ("circular", "geometry", "geometry+dictionary"):
        if method in summary:
            sp = summary[method]["speedup_vs_pra"]["mean"]
            out.append(f"| s/iter ≥ 10× lower than pyroomacoustics ({method}) | {_f(sp, '{:.1f}×')} | "
                       f"{'yes' if sp and sp >= 10 else 'no'} |")
    for method, need in (("circular", 0.0), ("circular (best perm)", 0.0), ("geometry", 3.0),
                         ("geometry+dictionary", 3.0)):
        if method in summary:
            d = summary[method]["delta_sdr_vs_pra"]["mic1"]
            ds = summary[method]["delta_sdr_vs_pra"]["spot"]
            out.append(f"| mean SDR ≥ pra + {need:g} dB ({method}) | {_f(d)} dB at mic 1, {_f(ds)} dB at spot mics | "
                       f"{'yes' if d is not None and d >= need else 'no'} (mic 1) |")
    if report["args"]["device"] == "cuda":
        for method in ("circular", "geometry", "geometry+dictionary"):
            if method in summary and summary[method].get("real_time_factor"):
                rt = summary[method]["real_time_factor"]
                out.append(f"| GPU fit ≥ 100× real time, 15 s paper configuration ({method}) | {rt:.1f}× | "
                           f"{'yes' if rt >= 100 else 'no'} |")
    mem = report.get("memory")
    if mem:
        for s in mem["session"]:
            out.append(f"| {mem['long_s'] / 60:g}-min 7-mic 16 kHz session < 8 GiB on CPU ({s['dtype']}) | "
                       f"peak RSS {s['peak_rss_mib'] / 1024:.2f} GiB | {'yes' if s['under_8_gib'] else 'no'} |")
    if report["quick"]:
        out.append("")
        out.append("(--quick: fewer iterations, so the dB rows say nothing about the targets.)")
    return out + [""]


def memory_markdown(mem: dict) -> list[str]:
    F = mem["shape_FTM"][0]
    lines = ["## Memory", "",
             f"`fastmnmf2.fit` alone ({mem['scaling'][0]['n_iter']} iterations, float64, circular init) on the "
             f"first T frames and M mics of the {mem['long_s']:g} s render (F={F}); 'above baseline' is peak RSS "
             "minus the RSS with X_FTM already in memory; 'X' is the size of X_FTM (F·T·M·16 bytes); the x·xᴴ "
             "cache (F·T·M(M+1)·8 bytes) is kept when ≤ 2 GiB.", "",
             "| T frames | seconds | M | X MiB | cache MiB | cached | above baseline MiB | ÷ X | fit s |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in mem["scaling"]:
        lines.append(f"| {r['frames']} | {r['seconds']:.0f} | {r['mics']} | {r['x_mib']:.0f} | {r['cache_mib']:.0f} | "
                     f"{'yes' if r['cached'] else 'no'} | {r['fit_extra_mib']:.0f} | {r['fit_extra_over_x']:.1f} | "
                     f"{r['fit_s']:.1f} |")
    lines += ["", f"`separate_session` end to end on the {mem['long_s']:g} s session "
              f"(shape F,T,M = {mem['session'][0]['shape_FTM'] if mem['session'] else '?'}):", "",
              "| dtype | init | iterations | cache MiB | cached | peak RSS GiB | s/iter | fit s | images s |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for s in mem["session"]:
        lines.append(f"| {s['dtype']} | {s['init']} | {s['n_iter']} | {s['cache_mib']:.0f} | "
                     f"{'yes' if s['cached'] else 'no'} | {s['peak_rss_mib'] / 1024:.2f} | "
                     f"{_f(s['per_iteration_s'], '{:.2f}')} | {s['timings_s']['fit_s']:.1f} | "
                     f"{s['timings_s']['images_s']:.1f} |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, 5 pyroomacoustics / 20 studio-sep iterations")
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads per method (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where studio-sep's fits run")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                   help="studio-sep's storage dtype (default float64, as the earlier tables)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where the .md and .json go")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                   / "studio-sep" / "benchmarks", help="renders and separated audio")
    p.add_argument("--soundfont", default="/usr/share/sounds/sf2/FluidR3_GM.sf2")
    p.add_argument("--scene-seed", type=int, default=0, help="composition seed of the rendered scenes")
    p.add_argument("--rt60", type=float, nargs="+", default=list(RT60S))
    p.add_argument("--seeds", type=int, nargs="+", help="separation seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--pra-seeds", type=int, nargs="+", help="pyroomacoustics seeds (default: --seeds)")
    p.add_argument("--n-iter", type=int, help="studio-sep iterations (default 100; --quick: 20)")
    p.add_argument("--pra-iter", type=int, help="pyroomacoustics iterations (default 100; --quick: 5)")
    p.add_argument("--methods", nargs="+", default=["pra", *STUDIO_INITS, "oracle"],
                   choices=["pra", *STUDIO_INITS, "oracle"])
    p.add_argument("--memory", choices=["yes", "no", "only"], default=None,
                   help="the memory part (default: yes, no with --quick)")
    p.add_argument("--long-s", type=float, default=300.0, help="length of the memory-check session (s)")
    p.add_argument("--long-iter", type=int, default=3, help="iterations of the memory-check run")
    p.add_argument("--scaling-s", type=float, nargs="+", default=[15.0, 60.0, 150.0],
                   help="lengths (s) of the T sweep, besides the whole long session")
    p.add_argument("--code", choices=["tree", "head"], default="tree",
                   help="benchmark studio_sep/ as in the working tree (default) or as committed at HEAD; "
                        "either way a snapshot taken at the start, so a long run sees one version")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.device == "cuda":  # before anything runs: the pipeline's own check, as one line
        from studio_sep.dsp.backend import resolve_device
        from studio_sep.util.errors import InputError

        try:
            resolve_device("cuda")
        except InputError as exc:
            sys.exit(f"separation.py: {exc}")
    memory = args.memory or ("no" if args.quick else "yes")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    code = snapshot_code(args.work, args.code)
    sys.path.insert(0, code["path"])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    date = dt.date.today().isoformat()
    report = {"date": date, "quick": args.quick, "machine": machine_info(args.threads), "code": code,
              "args": {k: v for k, v in vars(args).items() if k != "worker"}}
    log(f"code: {code}")
    log(f"machine: {report['machine']}")
    if memory != "only":
        report["separation"] = separation_benchmark(args, log)
        report["summary"] = summarise(report["separation"])
    if memory != "no":
        report["memory"] = memory_benchmark(args, log)
    report["total_s"] = time.perf_counter() - started
    stem = args.out / (f"separation-{date}-{code['git_head']}{'' if code['which'] == 'head' else '-tree'}"
                       f"{'-quick' if args.quick else ''}{'-memory' if memory == 'only' else ''}"
                       f"{'' if args.dtype == 'float64' else '-' + args.dtype}"
                       f"{'' if args.device == 'cpu' else '-' + args.device}")  # runs of one commit kept apart
    if memory == "only":
        text = "\n".join([f"# Memory benchmark, {date}", "", f"Machine: {report['machine']}", "",
                          _code_line(code) + ".", "",
                          *memory_markdown(report["memory"])]) + "\n"
    else:
        text = markdown(report)
    Path(str(stem) + ".json").write_text(json.dumps(jsonable(report), indent=1))
    Path(str(stem) + ".md").write_text(text)
    print(text)
    log(f"wrote {stem}.md and .json ({report['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
