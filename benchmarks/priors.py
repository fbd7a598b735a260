#!/usr/bin/env python
"""Spectral-prior benchmark: the paper's §4.2 comparison of inits and priors.

Renders the trio session (``studio_sep.sim.trio``) at RT60 0.3 and 0.5 s for a few
composition seeds (20 s at 16 kHz, the processing rate: no resampling), then runs
FastMNMF2 through ``studio_sep.stages.separate.separate_session`` (M=7, N=3, K=8, 1024/256,
float64, CPU, separation seed 0) in these configurations:

====================================  ===========================  ==========
row                                   init                         prior
====================================  ===========================  ==========
blind                                 circular                     none
geometry                              geometry                     none
dictionary                            circular + dictionary        none
geometry+dictionary                   geometry + dictionary        none
nmf                                   circular                     nmf
geometry+nmf                          geometry                     nmf
geometry+dictionary+nmf               geometry + dictionary        nmf
nmf (GM-note dictionaries)            circular                     nmf, no solo takes
geometry+nmf (GM-note dictionaries)   geometry                     nmf, no solo takes
classnet / geometry+classnet /        (as above)                   classnet
geometry+dictionary+classnet
====================================  ===========================  ==========

and scores each run with ``studio_sep.stages.evaluate.evaluate_run`` (fast-bss-eval, 512-tap
filter): SDR/SIR/SAR/SI-SDR at mic 1 (``trio_l``) and at each source's spot mic, mean
over the 3 sources, then over the sessions; ΔSDR vs blind (paired per session, then
averaged); the lowest and highest per-session mean.

The ``nmf`` prior learns each source's dictionary from its solo reference take when the
manifest has one. The "GM-note dictionaries" rows run on a copy of the manifest with the
``reference`` keys removed (same audio), so the dictionaries come from General-MIDI
renders of the class's notes (``studio_sep.priors.nmf.class_notes``). ``--cross-soundfont SF2``
adds those rows again with the notes rendered from another SoundFont (through
``$STUDIO_SEP_SOUNDFONT``; the sessions stay rendered with ``--soundfont``).

The classnet rows need ``--classnet-model PATH`` (a checkpoint from ``studio-sep
train``); without it, or when the file is missing, they are skipped with a note.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/priors.py [--quick] [--iterations N] [--seeds 0 1] [--rt60 0.3 0.5] \\
            [--classnet-model PATH] [--cross-soundfont SF2] [--out WORKDIR]

``--quick``: one seed, 10 s, 30 iterations (a smoke run: the dB values are not the
benchmark's). The thread variables default to 1 here when unset (set before numpy is
imported). Runs are one at a time, in this process. Results go to
``benchmarks/results/priors-<date>-<commit>[-quick].{md,json}`` (``--results`` to change).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from common import cpu_model, jsonable, memory_gib, package_versions  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

METRICS = ("sdr", "sir", "sar", "si_sdr")
SAMPLE_RATE = 16000  # the manifest's processing_sample_rate: rendered at it, no resampling
N_FFT, HOP, N_BASIS = 1024, 256, 8
BLIND = "blind"

#: row → (init, prior, variant); variant "noref": the manifest without solo takes
CONFIGS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "blind": (("circular",), "none", "full"),
    "geometry": (("geometry",), "none", "full"),
    "dictionary": (("circular", "dictionary"), "none", "full"),
    "geometry+dictionary": (("geometry", "dictionary"), "none", "full"),
    "nmf": (("circular",), "nmf", "full"),
    "geometry+nmf": (("geometry",), "nmf", "full"),
    "geometry+dictionary+nmf": (("geometry", "dictionary"), "nmf", "full"),
    "nmf (GM-note dictionaries)": (("circular",), "nmf", "noref"),
    "geometry+nmf (GM-note dictionaries)": (("geometry",), "nmf", "noref"),
    "classnet": (("circular",), "classnet", "full"),
    "geometry+classnet": (("geometry",), "classnet", "full"),
    "geometry+dictionary+classnet": (("geometry", "dictionary"), "classnet", "full"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine


def _git(*cmd: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True).stdout.strip()


def machine_info() -> dict:
    cpu, mem_gib = cpu_model(), memory_gib()
    versions = package_versions(("scipy", "torch", "fast-bss-eval", "pyroomacoustics", "pyfluidsynth"))
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", "studio_sep").splitlines()]
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_gib": mem_gib, "platform": platform.platform(terse=True), "versions": versions,
            "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS")},
            "git_commit": _git("rev-parse", "--short", "HEAD"), "studio_sep_modified": dirty}


# ----------------------------------------------------------------------------- sessions


def render(work: Path, *, seed: int, rt60_s: float, duration_s: float, soundfont: str,
           reference_duration_s: float) -> dict:
    """Render one session; return its manifest and a copy without solo takes."""
    from studio_sep.session import dump_session, load_session
    from studio_sep.sim import SimulationSettings, simulate_session

    folder = work / "scenes" / f"seed{seed}-rt60_{rt60_s:g}-{duration_s:g}s-{SAMPLE_RATE}Hz-{Path(soundfont).stem}"
    t0 = time.perf_counter()
    res = simulate_session(folder, SimulationSettings(seed=seed, duration_s=duration_s, sample_rate=SAMPLE_RATE,
                                                      rt60_s=rt60_s, soundfont=Path(soundfont),
                                                      reference_duration_s=reference_duration_s))
    log(f"scene {folder.name}: {'reused' if res.reused else 'rendered'} ({time.perf_counter() - t0:.1f} s), "
        f"measured RT60 {res.rt60_measured_s:.3f} s")
    session = load_session(res.manifest, check_audio=False)
    noref = replace(session, sources=tuple(replace(s, reference=None) for s in session.sources))
    noref_path = dump_session(noref, folder / "session-noref.toml")
    return {"seed": seed, "rt60_s": rt60_s, "manifest": str(res.manifest), "manifest_noref": str(noref_path),
            "rt60_measured_s": res.rt60_measured_s, "folder": str(folder)}


# ----------------------------------------------------------------------------- one run


def run_one(scene: dict, row: str, *, init, prior: str, variant: str, n_iter: int, work: Path,
            classnet_model: str | None, notes_soundfont: str | None) -> dict:
    from studio_sep.priors import nmf as nmf_prior
    from studio_sep.session import load_session
    from studio_sep.stages import SeparationOptions, evaluate_run, separate_session

    manifest = scene["manifest_noref"] if variant == "noref" else scene["manifest"]
    session = load_session(manifest)
    tag = row.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")
    out_root = work / "out" / f"seed{scene['seed']}-rt60_{scene['rt60_s']:g}" / f"{tag}-{n_iter}it"
    # the nmf prior's note renders use $STUDIO_SEP_SOUNDFONT (or the first GM SoundFont found);
    # class_notes caches per (class, rate, soundfont argument), so clear it when that changes
    previous_env = os.environ.get("STUDIO_SEP_SOUNDFONT")
    if notes_soundfont:
        os.environ["STUDIO_SEP_SOUNDFONT"] = notes_soundfont
    else:
        os.environ.pop("STUDIO_SEP_SOUNDFONT", None)
    if previous_env != os.environ.get("STUDIO_SEP_SOUNDFONT"):
        nmf_prior.class_notes.cache_clear()
    options = SeparationOptions(init=tuple(init), prior=prior, prior_model=classnet_model, n_iter=n_iter,
                                n_basis=N_BASIS, n_fft=N_FFT, hop=HOP, device="cpu", dtype="float64", seed=0,
                                processing_sample_rate=SAMPLE_RATE)
    stage_times: dict[str, list[float]] = {}

    def on_progress(stage, done, total, detail=""):
        now = time.perf_counter()
        stage_times.setdefault(stage, [now, now])[1] = now

    t0 = time.perf_counter()
    result = separate_session(session, out_root, options, callback=on_progress)
    separate_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = evaluate_run(session, out_root)
    evaluate_s = time.perf_counter() - t1
    ref_mic = metrics["reference_mic"]
    stem = metrics["stem_mics"]
    per_source = {s: {"mic1": metrics["separated"][s][ref_mic], "spot": metrics["separated"][s][stem[s]]}
                  for s in metrics["separated"]}
    means = metrics["means"]
    return {
        "row": row, "seed": scene["seed"], "rt60_s": scene["rt60_s"], "n_iter": n_iter, "init": list(init),
        "prior": prior, "variant": variant, "notes_soundfont": notes_soundfont,
        "spectral_init": result.run.get("separation", {}).get("spectral_init"),
        "mic1": means["at_reference_mic"]["separated"], "spot": means["at_stem_mic"]["separated"],
        "mic1_improvement": means["at_reference_mic"]["improvement"],
        "spot_improvement": means["at_stem_mic"]["improvement"],
        "mixture": {"mic1": means["at_reference_mic"]["mixture"], "spot": means["at_stem_mic"]["mixture"]},
        "per_source": per_source,
        "prior_record": result.run.get("separation", {}).get("prior"),
        "timings_s": {**(result.run.get("timings_s") or {}),
                      "prior_s": (stage_times["prior"][1] - stage_times["prior"][0]) if "prior" in stage_times
                      else None},
        "separate_s": separate_s, "evaluate_s": evaluate_s, "out": str(out_root),
    }


# ----------------------------------------------------------------------------- summary


def _mean(values):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def summarise(runs: list[dict]) -> dict:
    rows = list(dict.fromkeys(r["row"] for r in runs))
    rt60s = sorted({r["rt60_s"] for r in runs})
    blind = {(r["seed"], r["rt60_s"]): r for r in runs if r["row"] == BLIND}
    out = {}
    for row in rows:
        mine = [r for r in runs if r["row"] == row]
        s = {"n_sessions": len(mine), "init": mine[0]["init"], "prior": mine[0]["prior"],
             "variant": mine[0]["variant"], "notes_soundfont": mine[0]["notes_soundfont"],
             "spectral_init": mine[0]["spectral_init"],
             "fit_s": _mean([(r["timings_s"] or {}).get("fit_s") for r in mine]),
             "prior_s": _mean([(r["timings_s"] or {}).get("prior_s") for r in mine]),
             "separate_s": _mean([r["separate_s"] for r in mine])}
        for where in ("mic1", "spot"):
            q = {k: _mean([r[where][k] for r in mine]) for k in METRICS}
            sdrs = [r[where]["sdr"] for r in mine]
            q["sdr_min"], q["sdr_max"] = min(sdrs), max(sdrs)
            q["improvement_sdr"] = _mean([r[f"{where}_improvement"]["sdr"] for r in mine])
            deltas = [r[where]["sdr"] - blind[(r["seed"], r["rt60_s"])][where]["sdr"] for r in mine
                      if (r["seed"], r["rt60_s"]) in blind]
            q["delta_sdr_vs_blind"] = _mean(deltas) if deltas else None
            q["delta_sdr_vs_blind_min"] = min(deltas) if deltas else None
            q["delta_sdr_vs_blind_max"] = max(deltas) if deltas else None
            q["per_rt60"] = {}
            for rt in rt60s:
                at = [r for r in mine if r["rt60_s"] == rt]
                if at:
                    v = [r[where]["sdr"] for r in at]
                    d = [r[where]["sdr"] - blind[(r["seed"], rt)][where]["sdr"] for r in at
                         if (r["seed"], rt) in blind]
                    q["per_rt60"][str(rt)] = {"sdr": _mean(v), "sdr_min": min(v), "sdr_max": max(v),
                                              "delta_sdr_vs_blind": _mean(d) if d else None,
                                              **{k: _mean([r[where][k] for r in at]) for k in METRICS}}
            s[where] = q
        out[row] = s
    return out


def target(summary: dict, need_db: float = 3.0) -> dict:
    guided = {k: v for k, v in summary.items() if k != BLIND and v["mic1"]["delta_sdr_vs_blind"] is not None}
    if not guided:
        return {"text": "the best guided configuration ≥ 3 dB SDR above blind, mean over sources",
                "best": None, "met": None}
    best = max(guided, key=lambda k: guided[k]["mic1"]["delta_sdr_vs_blind"])
    d1 = guided[best]["mic1"]["delta_sdr_vs_blind"]
    best_spot = max(guided, key=lambda k: guided[k]["spot"]["delta_sdr_vs_blind"])
    return {"text": "the best guided configuration ≥ 3 dB SDR above blind, mean over sources",
            "best": best, "delta_mic1": d1, "delta_spot_of_best": guided[best]["spot"]["delta_sdr_vs_blind"],
            "best_at_spot": best_spot, "delta_spot": guided[best_spot]["spot"]["delta_sdr_vs_blind"],
            "met": d1 >= need_db}


def _f(v, fmt="{:+.2f}"):
    return "—" if v is None else fmt.format(v)


def markdown(report: dict) -> str:
    m, summary, a = report["machine"], report["summary"], report["settings"]
    rt60s = [str(r) for r in a["rt60"]]
    lines = [f"# Spectral-prior benchmark (§4.2), {report['date']}"
             + (" (--quick: a smoke run, the dB values are not the benchmark's)" if a["quick"] else ""), "",
             f"Machine: {m['cpu']}, {m['cpus_usable']} usable of {m['logical_cpus']} logical CPUs, "
             f"{m['memory_gib']} GiB; {m['platform']}; threads {m['threads']}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
             + f"; studio-sep at {m['git_commit']}"
             + (f" (studio_sep/ modified: {', '.join(m['studio_sep_modified'])})" if m["studio_sep_modified"]
                else "") + ".", "",
             f"Sessions: `simulate_session` trio, composition seeds {a['seeds']}, RT60 "
             + " and ".join(f"{r} s" for r in rt60s)
             + f", {a['duration_s']:g} s at {SAMPLE_RATE} Hz (= processing rate), SoundFont "
             f"`{Path(a['soundfont']).name}`, solo takes {a['reference_duration_s']:g} s. FastMNMF2: M=7, N=3, "
             f"K={N_BASIS}, STFT {N_FFT}/{HOP}, {a['iterations']} iterations, float64, CPU, separation seed 0. "
             f"Values: mean over the 3 sources, then over the {len(a['seeds']) * len(rt60s)} sessions; "
             "ΔSDR vs blind is paired per session; 'range' is the lowest … highest per-session mean. "
             f"Total run time {report['total_s'] / 60:.1f} min.", ""]
    if a.get("classnet_model_sha256"):
        lines += [f"CLASS-net checkpoint: `{a['classnet_model']}` (sha256 {a['classnet_model_sha256'][:16]}…).", ""]
    if report.get("skipped"):
        lines += ["Skipped: " + "; ".join(report["skipped"]), ""]
    for where, title in (("mic1", "At mic 1 (trio_l)"), ("spot", "At each source's spot mic")):
        mix = _mean([r["mixture"][where]["sdr"] for r in report["runs"] if r["row"] == BLIND])
        lines += [f"## {title}", "",
                  f"Unprocessed mic SDR: {_f(mix)} dB.", "",
                  "| configuration | SDR | SIR | SAR | SI-SDR | ΔSDR vs blind | ΔSDR vs blind range | SDR range | "
                  + " | ".join(f"SDR RT60 {r} (range)" for r in rt60s) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(rt60s)]
        for row, s in summary.items():
            q = s[where]
            per = [q["per_rt60"].get(r) for r in rt60s]
            lines.append(
                f"| {row} | " + " | ".join(_f(q[k]) for k in METRICS)
                + f" | {_f(q['delta_sdr_vs_blind'])} | {_f(q['delta_sdr_vs_blind_min'])} … "
                f"{_f(q['delta_sdr_vs_blind_max'])} | {_f(q['sdr_min'])} … {_f(q['sdr_max'])} | "
                + " | ".join("—" if p is None else f"{_f(p['sdr'])} ({_f(p['sdr_min'])} … {_f(p['sdr_max'])})"
                             for p in per) + " |")
        lines.append("")
    lines += ["## Starts and cost", "",
              "| configuration | init | prior | spectral start (run.json) | prior+init stage s | fit s | separate s (all stages) |",
              "|---|---|---|---|---:|---:|---:|"]
    for row, s in summary.items():
        prior = s["prior"] + (" (no solo takes)" if s["variant"] == "noref" else "") + (
            f", notes from {Path(s['notes_soundfont']).name}" if s["notes_soundfont"] else "")
        lines.append(f"| {row} | {'+'.join(s['init'])} | {prior} | {s['spectral_init'] or '—'} | "
                     f"{_f(s['prior_s'], '{:.1f}')} | {_f(s['fit_s'], '{:.1f}')} | {_f(s['separate_s'], '{:.1f}')} |")
    t = report["target"]
    lines += ["", "## Target", "", f"\"{t['text']}\": "]
    if t["best"] is None:
        lines[-1] += "no guided row ran."
    else:
        lines[-1] += (f"best guided configuration at mic 1 is **{t['best']}**, {_f(t['delta_mic1'])} dB over blind "
                      f"({_f(t['delta_spot_of_best'])} dB at the spot mics; best there: {t['best_at_spot']}, "
                      f"{_f(t['delta_spot'])} dB) — **{'met' if t['met'] else 'not met'}**"
                      + (" (--quick: not a measurement of the target)." if a["quick"] else "."))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, 10 s, 30 iterations (smoke run)")
    p.add_argument("--iterations", type=int, help="FastMNMF2 iterations (default 100; --quick 30)")
    p.add_argument("--seeds", type=int, nargs="+", help="composition seeds (default 0 1; --quick 0)")
    p.add_argument("--rt60", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--duration", type=float, help="session length in s (default 20; --quick 10)")
    p.add_argument("--reference-duration", type=float, default=10.0, help="solo takes, s")
    p.add_argument("--soundfont", default="/usr/share/sounds/sf2/FluidR3_GM.sf2", help="renders the sessions")
    p.add_argument("--classnet-model", help="CLASS-net checkpoint for the classnet rows (skipped without)")
    p.add_argument("--cross-soundfont", help="also run the GM-note rows with the notes rendered from this SF2")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="rows to run (default all)")
    p.add_argument("--out", type=Path, help="work folder for renders and runs (default a temp dir)")
    p.add_argument("--results", type=Path, default=HERE / "results", help="where the .md and .json go")
    args = p.parse_args(argv)
    n_iter = args.iterations or (30 if args.quick else 100)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1])
    duration = args.duration or (10.0 if args.quick else 20.0)
    work = args.out or Path(tempfile.mkdtemp(prefix="studio-sep-priors-"))
    work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    date = dt.date.today().isoformat()
    machine = machine_info()
    log(f"work folder {work}; machine {machine}")

    rows = list(args.configs or CONFIGS)
    skipped = []
    classnet_model = args.classnet_model
    if any(CONFIGS[r][1] == "classnet" for r in rows):
        if not classnet_model:
            skipped.append("classnet rows: no --classnet-model given")
        elif not Path(classnet_model).is_file():
            skipped.append(f"classnet rows: {classnet_model} not found")
        if skipped:
            rows = [r for r in rows if CONFIGS[r][1] != "classnet"]
            log("skipping " + skipped[-1])
    if BLIND not in rows:
        rows.insert(0, BLIND)  # the reference of every Δ
    jobs = [(r, *CONFIGS[r], None) for r in rows]
    if args.cross_soundfont:
        for r in rows:
            init, prior, variant = CONFIGS[r]
            if variant == "noref" and prior == "nmf":
                jobs.append((r.replace("GM-note", f"{Path(args.cross_soundfont).stem}-note"), init, prior, variant,
                             str(Path(args.cross_soundfont).resolve())))

    scenes = [render(work, seed=s, rt60_s=rt, duration_s=duration, soundfont=args.soundfont,
                     reference_duration_s=args.reference_duration)
              for rt in args.rt60 for s in seeds]
    runs = []
    total = len(scenes) * len(jobs)
    for scene in scenes:
        for row, init, prior, variant, notes_sf in jobs:
            t0 = time.perf_counter()
            r = run_one(scene, row, init=init, prior=prior, variant=variant, n_iter=n_iter, work=work,
                        classnet_model=classnet_model, notes_soundfont=notes_sf)
            runs.append(r)
            (work / "runs-partial.json").write_text(json.dumps(jsonable(runs)))  # survives an interruption
            log(f"[{len(runs)}/{total}] seed {scene['seed']} RT60 {scene['rt60_s']:g} {row:<38} "
                f"SDR mic1 {r['mic1']['sdr']:+6.2f}  spot {r['spot']['sdr']:+6.2f}  "
                f"({time.perf_counter() - t0:.1f} s)")
    summary = summarise(runs)
    settings = {"quick": args.quick, "iterations": n_iter, "seeds": seeds, "rt60": args.rt60,
                "duration_s": duration, "reference_duration_s": args.reference_duration,
                "soundfont": args.soundfont, "classnet_model": classnet_model,
                "classnet_model_sha256": (__import__("hashlib").sha256(Path(classnet_model).read_bytes()).hexdigest()
                                          if classnet_model and Path(classnet_model).is_file() else None),
                "cross_soundfont": args.cross_soundfont, "work": str(work), "rows": [j[0] for j in jobs]}
    report = {"date": date, "machine": machine, "settings": settings, "skipped": skipped, "scenes": scenes,
              "runs": runs, "summary": summary, "target": target(summary)}
    report["total_s"] = time.perf_counter() - started
    stem = args.results / f"priors-{date}-{machine['git_commit']}{'-quick' if args.quick else ''}"
    text = markdown(report)
    Path(str(stem) + ".json").write_text(json.dumps(jsonable(report), indent=1))
    Path(str(stem) + ".md").write_text(text)
    print(text)
    log(f"wrote {stem}.md and .json ({report['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
