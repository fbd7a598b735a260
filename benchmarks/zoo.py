#!/usr/bin/env python
"""The scene zoo benchmark: studio-sep configurations against pyroomacoustics' FastMNMF2 on
sessions drawn over named axes (``studio_sep.sim.zoo_scenes``), rendered by ``studio_sep.sim.zoo``.

For every scene and configuration, in one run: separate (``separate_session``, 1 BLAS thread,
in a fresh process per job, ``--jobs`` at once) and score at the reference mic (the first mic)
and at every source's stem mic (``evaluate_run``: fast-bss-eval, 512 taps, at the session's
rate). The peer, ``pyroomacoustics.bss.fastmnmf2`` (blind; ``--pra-iterations``, its 1024/256
STFT at 16 kHz, K=8), is scored at the reference mic only, at the session's rate (its output
upsampled as ours is), with the best permutation of its outputs (an oracle matching that
favours it; ours are named by the pipeline's own rules). A configuration that fails on a
session (an error, not a crash) is counted and scored as missing.

Reported per configuration: median, 10th percentile and worst of the session means over sources
(SDR, SI-SDR, ΔSDR at the reference mic; SDR at the stem mics), overall and per axis value, and
the median seconds per iteration.

Usage::

    python benchmarks/zoo.py [--n 40] [--duration 15] [--jobs 2] [--configs default,nmf,...]

Renders go to ``--work`` (default ``~/.cache/studio-sep/zoo``) and are reused; results are
appended to ``<work>/results.jsonl`` (one line per scene and configuration, keyed by the code's
commit), so an interrupted run continues; the table goes to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import cpu_model, git_short_head, jsonable, memory_gib, package_versions, write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

#: studio-sep configurations: SeparationOptions fields ("default": none, what `run` does).
CONFIGS: dict[str, dict] = {
    "default": {},
    "two-starts": {"blind_start": True},  # the guided init and the blind start, the higher log-likelihood kept
    "delays": {"measured_delays": True},  # the geometric start's delays measured on the recording
    "delays+window2x": {"measured_delays": True, "window_scale": 2},
    "wpe": {"wpe": True},  # the model fitted to the mics dereverberated by WPE (nara-wpe)
    "float32": {"dtype": "float32"},  # the default with float32 storage (float64 accumulation)
    "nmf": {"prior": "nmf"},
    "classnet": {"prior": "classnet"},
    "classnet-float32": {"prior": "classnet", "dtype": "float32"},  # the configuration whose float32 fit diverged once
    "blind": {"init": ["circular"]},
    "nfft2048": {"n_fft": 2048, "hop": 512},
    "window2x": {"window_scale": 2},  # twice the default STFT window at the session's rate (128 ms)
    "seed1": {"seed": 1},
    "seed2": {"seed": 2},
    "geometry": {"init": ["geometry"], "prior": "none"},
    "geometry+delays": {"init": ["geometry", "delays"]},  # a pair's two spatial starts, kept by keep_start
    "single": {"ensemble": 1},  # one fit of 100 iterations (the default before the ensemble)
    "ensemble3": {"ensemble": 3},  # three fits of 50 iterations, their images averaged
    "ensemble5": {"ensemble": 5},
}
PEER = "pra"
#: Rows that do not depend on studio-sep's separation code: reused from any commit.
ORACLE = "oracle-mwf"
REFERENCES = (PEER, ORACLE)


# ----------------------------------------------------------------------------- workers


def worker(spec: dict) -> dict:
    """One job in this (fresh) process: render a scene, or separate and score one session."""
    import numpy as np

    if spec["kind"] == "render":
        from studio_sep.sim.zoo import render_scene
        from studio_sep.sim.zoo_scenes import draw_scene

        t0 = time.perf_counter()
        scene = draw_scene(spec["index"], spec["seed"], spec.get("instruments"))
        manifest = render_scene(scene, spec["folder"], duration_s=spec["duration"])
        return {"manifest": str(manifest), "render_s": time.perf_counter() - t0}

    from studio_sep.session import load_session

    session = load_session(spec["manifest"])
    if spec["kind"] == "ours":
        from studio_sep.stages import SeparationOptions, evaluate_run, separate_session

        options = dict(spec["options"])
        if "init" in options:
            options["init"] = tuple(options["init"])
        if "window_scale" in options:  # a multiple of the default window at the rate the fit runs at
            from studio_sep.dsp.stft import default_fft_size

            rate = options.get("processing_sample_rate") or session.processing_sample_rate or session.sample_rate
            n_fft = default_fft_size(rate)[0] * options.pop("window_scale")
            options.update(n_fft=n_fft, hop=n_fft // 4)
        t0 = time.perf_counter()
        result = separate_session(session, spec["out"], SeparationOptions(**options), force=True)
        wall = time.perf_counter() - t0
        metrics = evaluate_run(session, spec["out"], force=True)
        means = metrics["means"]
        sep = result.run["separation"]
        starts = score_starts(session, options, Path(spec["out"]) / session.name)
        return {**starts, "sdr_ref": means["at_reference_mic"]["separated"]["sdr"],
                "si_sdr_ref": means["at_reference_mic"]["separated"]["si_sdr"],
                "delta_sdr_ref": means["at_reference_mic"]["improvement"]["sdr"],
                "sdr_stem": means["at_stem_mic"]["separated"]["sdr"],
                "per_iteration_s": result.run["timings_s"]["per_iteration_s"], "wall_s": wall,
                "init": sep["init"], "n_fft": sep["n_fft"], "n_iter": sep["n_iter"],
                "prior": sep["prior"]["kind"] if isinstance(sep["prior"], dict) else sep["prior"],
                "start_kept": sep.get("start_kept")}

    if spec["kind"] == "oracle":
        return oracle_row(session)

    # the peer: pyroomacoustics' FastMNMF2 at 16 kHz on its own STFT, scored at the reference mic
    import pyroomacoustics as pra

    from studio_sep.dsp import stft
    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.dsp.resample import resample
    from studio_sep.io import audio as audio_io
    from studio_sep.session import load_mics

    rate = 16000
    x_MS = load_mics(session)
    x16 = resample(x_MS, session.sample_rate, rate)
    X_TFM = np.ascontiguousarray(stft.stft(x16, n_fft=1024, hop=256).transpose(1, 0, 2)).astype(np.complex128)
    N = len(session.sources)
    np.random.seed(spec["seed"])  # pyroomacoustics draws its start from the global RNG
    t0 = time.perf_counter()
    Y_TFN = pra.bss.fastmnmf2(X_TFM, n_src=N, n_iter=spec["n_iter"], n_components=8, mic_index=0)
    fit_s = time.perf_counter() - t0
    est_NS = np.stack([resample(stft.istft(Y_TFN[..., n].T[:, :, None], n_fft=1024, hop=256,
                                           n_samples=x16.shape[1])[0], rate, session.sample_rate,
                                n_samples=x_MS.shape[1]) for n in range(N)])
    truth_NS = np.stack([audio_io.read_audio(session.truth.images[s.name], channels=[0])[0][0]
                         for s in session.sources])
    best = None
    for perm in itertools.permutations(range(N)):
        m = bss_metrics(truth_NS, est_NS[list(perm)])
        if best is None or np.mean(m["sdr"]) > np.mean(best["sdr"]):
            best = m
    mix = bss_metrics(truth_NS, np.repeat(x_MS[:1], N, axis=0))
    return {"sdr_ref": float(np.mean(best["sdr"])), "si_sdr_ref": float(np.mean(best["si_sdr"])),
            "delta_sdr_ref": float(np.mean(best["sdr"] - mix["sdr"])), "sdr_stem": None,
            "per_iteration_s": fit_s / spec["n_iter"], "wall_s": fit_s}


def oracle_row(session) -> dict:
    """The oracle full-rank multichannel Wiener filter (``oracle_mwf.py``: every source's
    spatial covariance and power taken from its true images) at the rate and STFT the
    default separation runs at, scored at the reference mic: a ceiling for a Gaussian
    full-rank spatial model at that resolution, which FastMNMF2 approaches from below."""
    import numpy as np
    from oracle_mwf import oracle_wiener

    from studio_sep.dsp import stft
    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.dsp.resample import resample
    from studio_sep.io import audio as audio_io
    from studio_sep.session import load_mics
    from studio_sep.stages.settings import resolve_settings

    settings = resolve_settings(session)
    native, rate = session.sample_rate, settings.processing_sample_rate
    x_MS = load_mics(session)
    x_proc = resample(x_MS, native, rate)
    X = stft.stft(x_proc, n_fft=settings.n_fft, hop=settings.hop)
    images = [audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources]
    C = np.stack([stft.stft(resample(img, native, rate), n_fft=settings.n_fft, hop=settings.hop) for img in images])
    t0 = time.perf_counter()
    S = oracle_wiener(X, C)
    wall = time.perf_counter() - t0
    est = np.stack([resample(stft.istft(S[n][:, :, :1], n_fft=settings.n_fft, hop=settings.hop,
                                        n_samples=x_proc.shape[1])[0], rate, native, n_samples=x_MS.shape[1])
                    for n in range(len(images))])
    truth = np.stack([img[0] for img in images])
    m = bss_metrics(truth, est)
    mix = bss_metrics(truth, np.repeat(x_MS[:1], len(images), axis=0))
    return {"sdr_ref": float(np.mean(m["sdr"])), "si_sdr_ref": float(np.mean(m["si_sdr"])),
            "delta_sdr_ref": float(np.mean(m["sdr"] - mix["sdr"])), "sdr_stem": None, "per_iteration_s": None,
            "wall_s": wall, "processing_sample_rate": rate}


def score_starts(session, options: dict, folder: Path) -> dict:
    """SDR at the reference mic of each start's own fit (``fit-init.npz``: the guided start
    alone, the default before two starts; ``fit-blind.npz`` named as the pipeline names it,
    and with the best permutation), so the two-start lever is measured on the same fits."""
    import itertools

    import numpy as np

    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.io import audio as audio_io
    from studio_sep.separation.initial import match_outputs
    from studio_sep.stages import SeparationOptions
    from studio_sep.stages.checkpoints import load_params
    from studio_sep.stages.images import native_images
    from studio_sep.stages.settings import resolve_settings
    from studio_sep.stages.signals import mic_signals

    work = folder / ".studio-sep"
    if not options.get("blind_start") or not (work / "fit-blind.npz").is_file():
        return {}  # one start (a start file left by an earlier two-start run in this folder is not this run's)
    settings = resolve_settings(session, SeparationOptions(**options))
    x_MS, x_proc, X_host = mic_signals(session, settings)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name], channels=[0])[0][0] for s in session.sources])
    fits = {start: load_params(work / f"fit-{start}.npz")[0] for start in ("init", "blind")}
    ref = {start: np.stack([image[0] for image in native_images(X_host, p, settings, x_proc.shape[1], x_MS.shape[1])])
           for start, p in fits.items()}

    def sdr(est) -> float:
        return float(np.mean(bss_metrics(truth, est)["sdr"]))

    order = match_outputs(fits["blind"], fits["init"])
    named = ref["blind"][order] if "geometry" in settings.init else None
    oracle = max(sdr(ref["blind"][list(p)]) for p in itertools.permutations(range(len(order))))
    return {"sdr_ref_init_start": sdr(ref["init"]), "sdr_ref_blind_start": None if named is None else sdr(named),
            "sdr_ref_blind_oracle": oracle}


#: Rows made from a two-start configuration's own fits (``score_starts``): each start alone.
START_ROWS = {"sdr_ref_init_start": "{c}:init-start", "sdr_ref_blind_start": "{c}:blind-start",
              "sdr_ref_blind_oracle": "{c}:blind-oracle"}


def with_start_rows(rows: list[dict], configs: list[str]) -> tuple[list[dict], list[str]]:
    """``rows`` and ``configs`` with, for each configuration that ran two starts, one more
    configuration per start (its fit scored alone at the reference mic)."""
    extra, names = [], []
    for c in configs:
        if not CONFIGS.get(c, {}).get("blind_start"):
            continue  # rows of single-start runs may carry scores of an earlier run's start files
        for key, label in START_ROWS.items():
            mine = [r for r in rows if r["config"] == c and r.get(key) is not None]
            if mine:
                names.append(label.format(c=c))
                extra += [{"index": r["index"], "config": names[-1], "sdr_ref": r[key]} for r in mine]
    return rows + extra, configs + names


def run_job(spec: dict) -> dict:
    """``worker(spec)`` in a fresh interpreter with one BLAS thread; errors come back as data."""
    env = dict(os.environ, **{v: "1" for v in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": tail[:300]}


# ----------------------------------------------------------------------------- summary


def _quantiles(values: list[float]) -> dict:
    import numpy as np

    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return {"median": None, "p10": None, "worst": None, "n": 0}
    return {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)), "worst": float(v.min()),
            "n": int(len(v))}


def summarise(rows: list[dict], scenes: dict[int, dict], configs: list[str]) -> dict:
    out: dict = {"overall": {}, "axes": {}}
    for c in configs:
        mine = [r for r in rows if r["config"] == c]
        out["overall"][c] = {k: _quantiles([r.get(k) for r in mine])
                             for k in ("sdr_ref", "si_sdr_ref", "delta_sdr_ref", "sdr_stem")}
        out["overall"][c]["failed"] = sum(1 for r in mine if "error" in r)
        out["overall"][c]["per_iteration_s"] = _quantiles([r.get("per_iteration_s") for r in mine])["median"]
    out["paired"] = paired_with_base(rows, configs)
    axes = next(iter(scenes.values()))["axes"].keys() if scenes else []
    for axis in axes:
        values = sorted({str(s["axes"][axis]) for s in scenes.values()}, key=lambda v: (len(v), v))
        out["axes"][axis] = {v: {c: _quantiles([r.get("sdr_ref") for r in rows if r["config"] == c and
                                                str(scenes[r["index"]]["axes"][axis]) == v])
                                 for c in configs} for v in values}
    return out


#: The configuration every other is paired with (same sessions) in the report.
PAIRED_BASE = "default"


def paired_with_base(rows: list[dict], configs: list[str]) -> dict:
    """Each configuration against :data:`PAIRED_BASE` on the sessions both have: the medians,
    the median difference, how many sessions it is better/worse on by more than 0.5 dB, and
    the median and largest absolute difference (for a seed, the spread a user sees)."""
    import numpy as np

    base = {r["index"]: r.get("sdr_ref") for r in rows if r["config"] == PAIRED_BASE}
    out = {}
    for c in configs:
        if c == PAIRED_BASE:
            continue
        pairs = [(r["sdr_ref"], base[r["index"]]) for r in rows if r["config"] == c and r.get("sdr_ref") is not None
                 and base.get(r["index"]) is not None]
        if not pairs:
            continue
        a, b = np.array(pairs).T
        d = a - b
        out[c] = {"n": len(d), "median": float(np.median(a)), "base_median": float(np.median(b)),
                  "median_diff": float(np.median(d)), "better": int((d > 0.5).sum()), "worse": int((d < -0.5).sum()),
                  "median_abs_diff": float(np.median(np.abs(d))), "max_abs_diff": float(np.abs(d).max())}
    return out


def _f(v, fmt="{:+.1f}"):
    return "—" if v is None else fmt.format(v)


def markdown(report: dict) -> str:
    s, configs = report["summary"], report["configs"]
    pool = f", instruments drawn from {', '.join(report['instruments'])} only" if report.get("instruments") else ""
    lines = [f"# Scene zoo: {report['n_scenes']} sessions of {report['duration_s']:g} s (zoo seed {report['seed']}{pool})",
             "", f"{report['date']}, commit {report['commit']} (rows from {', '.join(report['rows_from_commits'])}); "
             f"{report['machine']['cpu']}, one BLAS thread per job, "
             f"{report['jobs']} jobs at once. dB; a session's value is its mean over sources. "
             f"pyroomacoustics: {report['pra_iterations']} iterations, best permutation at the reference mic. "
             "`X:init-start` and `X:blind-start`: configuration X's two fits, each scored alone (the init start "
             "alone is what X did before two starts; the blind one named as the pipeline names it); "
             "`X:blind-oracle`: the blind fit with the best permutation.", "",
             "| configuration | n | SDR ref median | p10 | worst | SI-SDR ref median | p10 | ΔSDR ref median "
             "| SDR stem median | p10 | failed | s/iteration |", "|" + "---|" * 12]
    for c in configs:
        o = s["overall"][c]
        lines.append(f"| {c} | {o['sdr_ref']['n']} | {_f(o['sdr_ref']['median'])} | {_f(o['sdr_ref']['p10'])} | {_f(o['sdr_ref']['worst'])} "
                     f"| {_f(o['si_sdr_ref']['median'])} | {_f(o['si_sdr_ref']['p10'])} "
                     f"| {_f(o['delta_sdr_ref']['median'])} | {_f(o['sdr_stem']['median'])} "
                     f"| {_f(o['sdr_stem']['p10'])} | {o['failed']} | {_f(o['per_iteration_s'], '{:.3f}')} |")
    paired = report["summary"].get("paired", {})
    if paired:
        lines += ["", f"Paired with `{PAIRED_BASE}` on the sessions both have (SDR at the reference mic; better/worse: "
                  "by more than 0.5 dB; spread: median and largest absolute difference):", "",
                  "| configuration | n | its median | base median | median difference | better | worse "
                  "| median abs. difference | largest abs. difference |", "|" + "---|" * 9]
        for c, q in paired.items():
            lines.append(f"| {c} | {q['n']} | {_f(q['median'])} | {_f(q['base_median'])} | {_f(q['median_diff'])} "
                         f"| {q['better']} | {q['worse']} | {_f(q['median_abs_diff'], '{:.1f}')} "
                         f"| {_f(q['max_abs_diff'], '{:.1f}')} |")
    lines += ["", "Median SDR at the reference mic per axis value (sessions with that value in brackets):", "",
              "| axis | value | n | " + " | ".join(configs) + " |", "|" + "---|" * (3 + len(configs))]
    for axis, values in s["axes"].items():
        for v, per in values.items():
            n = max(q["n"] for q in per.values())
            lines.append(f"| {axis} | {v} | {n} | " + " | ".join(_f(per[c]["median"]) for c in configs) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=40, help="sessions (default 40)")
    parser.add_argument("--first", type=int, default=0, help="index of the first scene")
    parser.add_argument("--scenes", default="", help="comma-separated scene indices (instead of --first/--n)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per session (default 15)")
    parser.add_argument("--seed", type=int, default=None, help="zoo seed (default: studio_sep.sim.zoo_scenes.ZOO_SEED)")
    parser.add_argument("--configs", default="default", help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--instruments", default="",
                        help="comma-separated instruments of studio_sep.sim.zoo_scenes.INSTRUMENTS the scenes draw from "
                             "(default: all; e.g. piano,violin,sax for a prior that knows only those), a zoo of its own")
    parser.add_argument("--no-peer", action="store_true", help="skip pyroomacoustics")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: the table of the rows already in results.jsonl (a configuration's "
                             "median over the scenes it has)")
    parser.add_argument("--oracle", action="store_true",
                        help="also the oracle full-rank multichannel Wiener filter (a ceiling, from the true images)")
    parser.add_argument("--pra-iterations", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--with-commits", default="",
                        help="comma-separated earlier commits whose rows count as this one's (for configurations "
                             "whose code path did not change between them); the peer's rows are reused from any commit")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(jsonable(worker(json.loads(args.worker)))))
        return 0

    sys.path.insert(0, str(REPO))
    from studio_sep.sim.zoo_scenes import ZOO_SEED, draw_scene

    seed = ZOO_SEED if args.seed is None else args.seed
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; known: {', '.join(CONFIGS)}")
    if not args.no_peer:
        configs.append(PEER)
    if args.oracle:
        configs.append(ORACLE)
    commit = git_short_head(REPO)
    indices = [int(i) for i in args.scenes.split(",")] if args.scenes else list(range(args.first, args.first + args.n))
    instruments = tuple(x.strip() for x in args.instruments.split(",") if x.strip()) or None
    try:
        scenes = {i: draw_scene(i, seed, instruments).to_dict() for i in indices}
    except ValueError as e:
        parser.error(str(e))
    pool_tag = f"-{'-'.join(instruments)}" if instruments else ""  # a zoo of a few instruments: its own folder and files
    work = args.work / f"{seed}-{args.duration:g}s{pool_tag}"
    results_path = work / "results.jsonl"
    work.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        renders = list(pool.map(lambda i: (i, run_job({"kind": "render", "index": i, "seed": seed,
                                                         "instruments": instruments,
                                                         "folder": str(work / scenes[i]["name"]),
                                                         "duration": args.duration})), indices))
    manifests = {}
    for i, r in renders:
        if "error" in r:
            log(f"scene {i}: render failed: {r['error']}")
        else:
            manifests[i] = r["manifest"]
    log(f"{len(manifests)}/{len(indices)} scenes rendered in {work}")

    done = {}
    if results_path.is_file():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[(row["index"], row["config"], row["commit"])] = row
    same = {commit, *(c.strip() for c in args.with_commits.split(",") if c.strip())}

    def kept(i, c):
        """This scene's row for configuration c from a commit that counts as this one (the peer: any)."""
        rows = [r for (j, cc, k), r in done.items() if j == i and cc == c and (k in same or c in REFERENCES)]
        return rows[-1] if rows else None

    todo = [] if args.report_only else [(i, c) for i in manifests for c in configs if kept(i, c) is None]
    log(f"{len(todo)} jobs to run ({len(done)} results kept)")

    def one(job):
        i, c = job
        spec = ({"kind": "pra", "manifest": manifests[i], "n_iter": args.pra_iterations, "seed": 0} if c == PEER
                else {"kind": "oracle", "manifest": manifests[i]} if c == ORACLE
                else {"kind": "ours", "manifest": manifests[i], "options": CONFIGS[c],
                      "out": str(work / "out" / c)})
        row = {"index": i, "config": c, "commit": commit, **run_job(spec)}
        with open(results_path, "a") as f:
            f.write(json.dumps(jsonable(row)) + "\n")
        log(f"scene {i} {c}: " + (f"SDR ref {row['sdr_ref']:+.2f}" if row.get("sdr_ref") is not None
                                  else row.get("error", "no score")))
        return row

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))
    for line in results_path.read_text().splitlines():
        row = json.loads(line)
        done[(row["index"], row["config"], row["commit"])] = row
    rows = [r for r in (kept(i, c) for i in manifests for c in configs) if r is not None]
    rows, configs = with_start_rows(rows, configs)
    report = {"date": dt.date.today().isoformat(), "commit": commit, "seed": seed, "instruments": instruments,
              "n_scenes": len(manifests),
              "duration_s": args.duration, "jobs": args.jobs, "pra_iterations": args.pra_iterations,
              "configs": configs,
              "rows_from_commits": sorted({r["commit"] for r in rows if "commit" in r}), "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory_gib()},
              "versions": package_versions(["pyroomacoustics", "fast-bss-eval", "scipy"]),
              "summary": summarise(rows, scenes, configs), "scenes": scenes}
    text = markdown(report)
    print(text)
    write_results(args.out / f"zoo-{report['date']}-{commit}-{len(manifests)}x{args.duration:g}s{pool_tag}", text, report,
                  indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
