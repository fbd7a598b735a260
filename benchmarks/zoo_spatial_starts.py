#!/usr/bin/env python
"""Which start, and can the model's own likelihood pick it? Several spatial (and spectral)
starts of FastMNMF2 on zoo sessions, each fitted, its log-likelihood followed and its
separation scored at the reference mic.

Candidates (every one made without the truth, from the manifest and the recording):

- ``geometry``: the default start (the manifest's positions and patterns);
- ``omni``: the same with every mic taken as omnidirectional (patterns typed wrong);
- ``delays``: the manifest's delays replaced by GCC-PHAT's on every measured pair;
- ``jitter1..J``: mic and source positions moved by σ = ``--jitter-cm`` (coordinates typed wrong);
- ``reseed1..S``: the default spatial start with another random spectral start;
- ``blind``: the circular start.

Each candidate is fitted for ``n_iter`` iterations (the log-likelihood every 5) and
scored; the table then compares picking by the log-likelihood at iteration k with the
default and with the best candidate (the oracle pick, a ceiling of the lever).

Usage::

    python benchmarks/zoo_spatial_starts.py [--work ~/.cache/studio-sep/zoo/20261201-15s] [--scenes 0,1,4]
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


def candidate_inits(session, settings, X, x_proc, *, jitter: int, reseed: int, jitter_m: float):
    from studio_sep.separation.initial import initial_model
    from studio_sep.stages.geometry import session_delays

    M = len(session.mics)
    base = dict(n_sources=len(session.sources), n_basis=settings.n_basis, sample_rate=settings.processing_sample_rate,
                n_fft=settings.n_fft, aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics])
    mics = np.array([m.position_m for m in session.mics])
    sources = np.array([s.position_m for s in session.sources])
    patterns = [m.pattern for m in session.mics]

    def geometric(seed=settings.seed, mics=mics, sources=sources, patterns=patterns, corrections=None):
        return initial_model(X, init_kinds=("geometry",), seed=seed, mic_positions=mics, source_positions=sources,
                             patterns=patterns, delay_corrections_s=corrections, **base)[0]

    out = {"geometry": geometric()}
    if any(p != "omni" for p in patterns):
        out["omni"] = geometric(patterns=["omni"] * M)
    check = session_delays(session, x_proc, settings.processing_sample_rate, stem_mics=settings.stem_mics)
    out["delays"] = geometric(corrections=np.nan_to_num(check.measured_s - check.implied_s, nan=0.0))
    rng = np.random.default_rng([settings.seed, 7])
    for j in range(1, jitter + 1):
        out[f"jitter{j}"] = geometric(mics=mics + rng.normal(0, jitter_m, mics.shape),
                                      sources=sources + rng.normal(0, jitter_m, sources.shape))
    for s in range(1, reseed + 1):
        out[f"reseed{s}"] = geometric(seed=settings.seed + 100 * s)
    out["blind"] = initial_model(X, init_kinds=("circular",), seed=settings.seed, **base)[0]
    return out


def main(argv=None) -> int:
    from common import ZooScene, cpu_model

    from studio_sep.separation import fastmnmf2, wiener
    from studio_sep.separation.initial import match_outputs, reorder_outputs
    from studio_sep.session import load_session

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    p.add_argument("--scenes", default="", help="comma-separated scene indices (default: every scene with ≤ 4 mics)")
    p.add_argument("--max-mics", type=int, default=4)
    p.add_argument("--jitter", type=int, default=3)
    p.add_argument("--jitter-cm", type=float, default=10.0)
    p.add_argument("--reseed", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON lines, one per (scene, candidate)")
    args = p.parse_args(argv)
    wanted = {int(s) for s in args.scenes.split(",") if s}
    out = open(args.out, "a") if args.out else None
    print(f"machine: {cpu_model()}; {args.work}", file=sys.stderr)
    for manifest in sorted(args.work.glob("zoo_*/session.toml")):
        seed, index = (int(part) for part in manifest.parent.name.split("_")[1:])
        session = load_session(manifest)
        if (wanted and index not in wanted) or (not wanted and len(session.mics) > args.max_mics):
            continue
        if len(session.sources) > len(session.mics):
            continue
        scene = ZooScene(args.work, index)
        settings, X, x_proc = scene.settings, scene.X, scene.x_proc

        def sdr(params) -> float:
            return scene.sdr([S[:, :, 0] for S in wiener.source_images(X, params)])

        inits = candidate_inits(session, settings, X, x_proc, jitter=args.jitter, reseed=args.reseed,
                                jitter_m=args.jitter_cm / 100)
        reference = None
        for name, init in inits.items():
            t0 = time.perf_counter()
            fit = fastmnmf2.fit(X, n_sources=len(session.sources), n_basis=settings.n_basis, n_iter=settings.n_iter,
                                init=init, rng=np.random.default_rng([settings.seed, 2]), log_likelihood_every=5)
            params = fit.params
            if reference is None:
                reference = params
            elif name == "blind":
                params = reorder_outputs(params, match_outputs(params, reference))
            row = {"index": index, "start": name, "M": len(session.mics), "N": len(session.sources),
                   "sdr_ref": sdr(params), "start_sdr_ref": sdr(init) if name != "blind" else None,
                   "ll": [float(v) for v in fit.log_likelihood], "ll_iterations": [int(i) for i in fit.ll_iterations],
                   "fit_s": time.perf_counter() - t0}
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
                              if k not in ("ll", "ll_iterations")} | {"ll_final": round(row["ll"][-1], 4),
                                                                     "ll_20": round(row["ll"][4], 4)}), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
