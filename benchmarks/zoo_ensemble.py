#!/usr/bin/env python
"""Several fits combined, against one: K fits of FastMNMF2 on a zoo session, each from the
geometric start with its own random spectral start (seed k), combined into the images by
the mean of their Wiener images ("ensemble", what ``separate --ensemble K`` does) or by
the mean of their per-mic power shares ("ens_mask"); every prefix of the K fits is
scored too (``img_prefix``/``mask_prefix``: the first k fits), as is each fit alone.

Scores: SDR at the reference mic (fast-bss-eval, 512 taps), mean over sources, the
session's own rate and STFT (the zoo manifests' 16 kHz). One JSON line per scene.

Usage::

    python benchmarks/zoo_ensemble.py SCENES K [ITERATIONS] [--jitter-cm 10] [--work ~/.cache/studio-sep/zoo/20261201-15s]

e.g. ``python benchmarks/zoo_ensemble.py 0,4,7,9 4 50``.
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


def main(argv=None) -> int:
    from studio_sep.separation import fastmnmf2, wiener
    from studio_sep.separation.initial import initial_model, match_outputs, reorder_outputs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes")
    p.add_argument("k", type=int)
    p.add_argument("iterations", type=int, nargs="?", default=50)
    p.add_argument("--jitter-cm", type=float, default=0.0,
                   help="fits 1…K−1 start from mic and source positions moved by this σ (rng 7; fit 0 from the manifest's)")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    for index in (int(s) for s in args.scenes.split(",")):
        scene = ZooScene(args.work, index)
        session, settings, X = scene.session, scene.settings, scene.X
        rate, n_fft = settings.processing_sample_rate, settings.n_fft
        N, M = len(session.sources), len(session.mics)

        def sdr(S_NFT) -> float:  # images at the reference mic, (N, F, T)
            return round(scene.sdr(list(S_NFT)), 2)

        images, finals, reference, t0 = [], [], None, time.perf_counter()
        mics = np.array([m.position_m for m in session.mics])
        sources = np.array([s.position_m for s in session.sources])
        jitter = np.random.default_rng(7)
        for k in range(args.k):
            sigma = args.jitter_cm / 100 if k else 0.0
            init = initial_model(X, n_sources=N, init_kinds=("geometry",), n_basis=settings.n_basis, seed=k,
                                 sample_rate=rate, n_fft=n_fft,
                                 mic_positions=mics + (jitter.normal(0, sigma, mics.shape) if sigma else 0),
                                 source_positions=sources + (jitter.normal(0, sigma, sources.shape) if sigma else 0),
                                 patterns=[m.pattern for m in session.mics],
                                 aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics])[0]
            fit = fastmnmf2.fit(X, n_sources=N, n_basis=settings.n_basis, n_iter=args.iterations, init=init,
                                rng=np.random.default_rng([k, 2]), log_likelihood_every=args.iterations)
            params = fit.params
            if reference is None:
                reference = params
            else:
                params = reorder_outputs(params, match_outputs(params, reference))
            images.append(np.stack([S[:, :, 0] for S in wiener.source_images(X, params)]))
            finals.append(round(float(fit.log_likelihood[-1]), 3))
        shares = [np.abs(S) ** 2 / np.maximum(np.sum(np.abs(S) ** 2, axis=0, keepdims=True), 1e-30) for S in images]
        mask_prefix = {k: sdr(np.mean(shares[:k], axis=0) * X[None, :, :, 0]) for k in range(1, args.k + 1)}
        img_prefix = {k: sdr(np.mean(images[:k], axis=0)) for k in range(2, args.k + 1)}
        singles = [sdr(S) for S in images]
        print(json.dumps({"index": index, "M": M, "N": N, "singles": singles, "lls": finals,
                          "ensemble": img_prefix.get(args.k, singles[0]), "ens_mask": mask_prefix[args.k],
                          "mask_prefix": mask_prefix, "img_prefix": img_prefix,
                          "mean_single": round(float(np.mean(singles)), 2), "s": round(time.perf_counter() - t0)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
