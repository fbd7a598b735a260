#!/usr/bin/env python
"""The stopping rule of ``--iterations auto``, measured on zoo sessions: each scene's three
ensemble members (the default start, member k's own spectral start) are fitted 100
iterations with the parameters kept every 5; from the members' own log-likelihood curves
the rule (:func:`studio_sep.separation.fastmnmf2.converged`) gives each member's stopping
iteration for every (gain counted since, tolerance) tried, at most 100 iterations, and the ensemble of those snapshots (the
mean of their Wiener images, outputs matched as ``separate`` matches them) is scored at
the reference mic (native rate, fast-bss-eval, mean over sources). Also scored: the fixed
counts (3 × 50, the default before; 3 × 100) and member 0 alone at 25/50/75/100.

One JSON line per scene is appended to ``WORK/stopping.jsonl`` (a scene found there is
not redone); the table is printed from those lines.

Usage::

    python benchmarks/zoo_stopping.py 7,0,16,2 [--work ~/.cache/studio-sep/zoo/20261201-15s]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import ZooScene, cpu_model  # noqa: E402

#: (gain counted since iteration, tolerance): the rule as adopted (since 5) and as first tried (since 0)
RULES = ((0, 0.003), (5, 0.02), (5, 0.03), (5, 0.05))
MEMBERS, LONGEST, EVERY = 3, 100, 5


def stop_at(ll, since: int, tolerance: float, maximum: int = LONGEST) -> int:
    """Where the rule stops a fit whose log-likelihood after 0, 5, 10, … iterations is ``ll``."""
    from studio_sep.separation.fastmnmf2 import converged

    its = list(range(0, LONGEST + 1, EVERY))
    for j in range(1, len(its)):
        if its[j] >= maximum:
            return maximum
        if converged(ll[:j + 1], its[:j + 1], tolerance, since=since):
            return its[j]
    return maximum


def run_scene(scene: ZooScene) -> dict:
    from studio_sep.separation import fastmnmf2, wiener
    from studio_sep.separation.initial import match_outputs, reorder_outputs

    s, N = scene.settings, len(scene.session.sources)
    snapshots, curves, clock = [], [], time.perf_counter()
    for k in range(MEMBERS):
        kept = {}
        fit = fastmnmf2.fit(scene.X, n_sources=N, n_basis=s.n_basis, n_iter=LONGEST, init=scene.initial_model(k),
                            normalize_every=s.normalize_every, rng=np.random.default_rng([s.seed, 2]),
                            log_likelihood_every=EVERY, checkpoint_every=EVERY,
                            on_checkpoint=lambda c, kept=kept: kept.__setitem__(c.iteration, c.params))
        kept[LONGEST] = fit.params
        snapshots.append(kept)
        curves.append([float(v) for v in fit.log_likelihood])
    fit_s = time.perf_counter() - clock
    scores: dict[tuple, float] = {}

    def ensemble(stops) -> float:
        key = tuple(stops)
        if key not in scores:
            members = [snapshots[k][i] for k, i in enumerate(stops)]
            members = [members[0]] + [reorder_outputs(m, match_outputs(m, members[0])) for m in members[1:]]
            images = wiener.ensemble_images(scene.X, members) if len(members) > 1 else \
                wiener.source_images(scene.X, members[0])
            scores[key] = round(scene.sdr([S[:, :, 0] for S in images]), 3)
        return scores[key]

    rules = {}
    for since, tolerance in RULES:
        stops = [stop_at(curve, since, tolerance) for curve in curves]
        rules[f"{since}/{tolerance}"] = {"stops": stops, "sdr": ensemble(stops)}
    return {"index": scene.index, "M": len(scene.session.mics), "N": N,
            "fixed": {str(n): ensemble([n] * MEMBERS) for n in (50, 100)},
            "member0": {str(n): round(scene.sdr([S[:, :, 0] for S in wiener.source_images(scene.X, snapshots[0][n])]),
                                      3) for n in (25, 50, 75, 100)},
            "rules": rules, "log_likelihood": curves, "fit_s": round(fit_s, 1)}


def table(rows: list[dict]) -> str:
    lines = [f"{len(rows)} zoo scenes; SDR at the reference mic, dB; iterations: the 3 fits' total "
             f"({cpu_model()}).", "",
             "| rule (gain since iteration / tolerance; at most 100 per fit) | median iterations | median Δ vs 3 × 50 | p10 Δ | worst Δ | "
             "best Δ | within 0.2 dB | median Δ vs 3 × 100 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    base50 = [r["fixed"]["50"] for r in rows]
    base100 = [r["fixed"]["100"] for r in rows]
    configs = [("fixed 3 × 50", lambda r: (150, r["fixed"]["50"])), ("fixed 3 × 100", lambda r: (300, r["fixed"]["100"]))]
    configs += [(f"auto {key}", lambda r, key=key: (sum(r["rules"][key]["stops"]), r["rules"][key]["sdr"]))
                for key in rows[0]["rules"]]
    for name, get in configs:
        its, sdr = zip(*(get(r) for r in rows))
        d50 = np.array(sdr) - base50
        d100 = np.array(sdr) - base100
        lines.append(f"| {name} | {statistics.median(its):.0f} | {np.median(d50):+.2f} | "
                     f"{np.percentile(d50, 10):+.2f} | {d50.min():+.2f} | {d50.max():+.2f} | "
                     f"{int(np.sum(np.abs(d50) <= 0.2))}/{len(rows)} | {np.median(d100):+.2f} |")
    lines += ["", "| scene | M | N | 3 × 50 | 3 × 100 | " + " | ".join(f"auto {k}" for k in rows[0]["rules"]) + " |",
              "|---:|---:|---:|---:|---:|" + "---:|" * len(rows[0]["rules"])]
    for r in sorted(rows, key=lambda r: r["index"]):
        cells = " | ".join(f"{v['sdr']:+.2f} ({'/'.join(str(s) for s in v['stops'])})" for v in r["rules"].values())
        lines.append(f"| {r['index']} | {r['M']} | {r['N']} | {r['fixed']['50']:+.2f} | {r['fixed']['100']:+.2f} | "
                     f"{cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", help="comma-separated scene indices")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    cache = args.work / "stopping.jsonl"
    rows = {json.loads(line)["index"]: json.loads(line) for line in cache.read_text().splitlines()} \
        if cache.is_file() else {}
    for index in (int(s) for s in args.scenes.split(",")):
        if index in rows:
            continue
        rows[index] = run_scene(ZooScene(args.work, index))
        with open(cache, "a") as f:
            f.write(json.dumps(rows[index]) + "\n")
        print(f"scene {index}: {rows[index]['fit_s']} s of fits", file=sys.stderr, flush=True)
    wanted = [rows[int(s)] for s in args.scenes.split(",")]
    print(table(wanted), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
