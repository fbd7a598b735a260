#!/usr/bin/env python
"""The spot start (``--init spot``: every source's transfer functions measured on the
recording against its spot mic, :func:`studio_sep.separation.initial.spot_transfer`)
against the geometric start (the typed positions and patterns), on zoo sessions where
every source has a spot mic.

Both run as the pipeline runs them: an ensemble of 3 fits (their own random spectral
starts), ``--iterations auto``, the mean of their Wiener images, outputs named by the
spot mics' share of their energy (``assign_outputs``), scored at the reference mic at the
native rate (``ZooScene.sdr``); every fit's final log-likelihood is recorded. One JSON
line per scene.

Usage::

    python benchmarks/zoo_spot_start.py SCENES [--skip-default] [--work ~/.cache/studio-sep/zoo/20261201-15s] > rows.jsonl
    python benchmarks/zoo_spot_start.py --report rows.jsonl [more.jsonl …]     # the table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import ZooScene  # noqa: E402


def run_ensemble(scene: ZooScene, make_start, K: int = 3, *, spot_naming: bool = True
                 ) -> tuple[float, list[int], list[float]]:
    """The ensemble of ``K`` fits from ``make_start(k)`` as the pipeline runs it: its reference-mic
    SDR, every fit's iterations and final log-likelihood. Outputs named by the spot mics'
    energy shares (``spot_naming``), else as the start named them."""
    from studio_sep.separation import fastmnmf2, wiener
    from studio_sep.separation.initial import assign_outputs, match_outputs, reorder_outputs
    from studio_sep.stages.settings import STOP_TOLERANCE

    s, N = scene.settings, len(scene.session.sources)
    members, its, lls = [], [], []
    for k in range(K):
        fit = fastmnmf2.fit(scene.X, n_sources=N, n_basis=s.n_basis, n_iter=100, init=make_start(k),
                            rng=np.random.default_rng([s.seed, 2]), tolerance=STOP_TOLERANCE)
        params = fit.params if not members else reorder_outputs(fit.params, match_outputs(fit.params, members[0]))
        members.append(params)
        its.append(fit.iterations)
        lls.append(round(float(fit.log_likelihood[-1]), 4))
    images = list(wiener.ensemble_images(scene.X, members))
    energy = np.stack([np.sum(np.abs(S) ** 2, axis=(0, 1)) for S in images])  # (N, M)
    names = [m.name for m in scene.session.mics]
    order = assign_outputs(energy, [names.index(src.spot_mic) for src in scene.session.sources]) if spot_naming \
        else np.arange(len(images))
    return round(scene.sdr([images[k][:, :, 0] for k in order]), 2), its, lls


def table(rows: list[dict], work: Path) -> str:
    """Per scene and in distribution: both starts, their difference, and the start with the
    higher mean final log-likelihood (what a two-start rule would keep)."""
    lines = ["| scene | mics | sources | patterns | σ (cm) | geometry | spot | Δ | log-lik. geometry / spot |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    picked = []
    for r in sorted(rows, key=lambda r: r["index"]):
        axes = json.loads(next(work.glob(f"zoo_*_{r['index']:03d}/render.json")).read_text())["key"]["scene"]["axes"]
        ll_g, ll_s = np.mean(r["ll_default"]), np.mean(r["ll_measured"])
        picked.append(r["measured"] if ll_s > ll_g else r["default"])
        lines.append(f"| {r['index']} | {r['M']} | {r['N']} | {axes['patterns']} | {axes['position_error_cm']} | "
                     f"{r['default']:+.2f} | {r['measured']:+.2f} | {r['measured'] - r['default']:+.2f} | "
                     f"{ll_g:.3f} / {ll_s:.3f} |")
    geo, spot = np.array([r["default"] for r in rows]), np.array([r["measured"] for r in rows])
    diff = spot - geo

    def dist(v):
        return f"{np.median(v):+.2f} | {np.percentile(v, 10):+.2f} | {v.min():+.2f}"

    lines += ["", "| start | median | p10 | worst |", "|---|---:|---:|---:|",
              f"| geometry (typed positions and patterns) | {dist(geo)} |", f"| spot | {dist(spot)} |",
              f"| the higher log-likelihood of the two | {dist(np.array(picked))} |",
              "", f"Spot − geometry: median {np.median(diff):+.2f} dB, better on {int((diff > 0.5).sum())}, worse on "
              f"{int((diff < -0.5).sum())} (by > 0.5 dB), of {len(rows)}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    from studio_sep.separation.initial import initial_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", nargs="?")
    p.add_argument("--report", type=Path, nargs="+", help="print the table of these JSON-line files and stop")
    p.add_argument("--skip-default", action="store_true")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    if args.report:
        print(table([json.loads(line) for f in args.report for line in f.read_text().splitlines() if line], args.work))
        return 0
    for index in (int(s) for s in args.scenes.split(",")):
        t0 = time.perf_counter()
        scene = ZooScene(args.work, index)
        names = [m.name for m in scene.session.mics]
        spot = [names.index(src.spot_mic) for src in scene.session.sources]
        s = scene.settings

        def measured(k):
            return initial_model(scene.X, n_sources=len(spot), init_kinds=("spot",), n_basis=s.n_basis, seed=s.seed,
                                 sample_rate=s.processing_sample_rate, n_fft=s.n_fft, spot_mic_index=spot, start=k)[0]

        row = {"index": index, "M": len(names), "N": len(spot)}
        row["measured"], row["its_measured"], row["ll_measured"] = run_ensemble(scene, measured)
        if not args.skip_default:
            row["default"], row["its_default"], row["ll_default"] = run_ensemble(scene, scene.initial_model)
        row["s"] = round(time.perf_counter() - t0)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
