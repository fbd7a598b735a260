#!/usr/bin/env python
"""A spatial start from the recording for a spaced pair (a diagnostic, not in the pipeline):
the N strongest GCC-PHAT peaks of the two mics' mixture (within the pair's physical lags,
1.3 × spacing / c), given to the sources in the order of their typed inter-mic delays (the
typed coordinates may be off by 10+ samples; which source is left of which survives), the
steering vectors' phases from those delays and their magnitudes from the typed geometry;
FastMNMF2 100 iterations from that demixer. Scores: SDR at the reference mic, one JSON line
per scene (``start``: the start's own images, ``fit``: after the fit).

Usage::

    python benchmarks/zoo_pair_delays.py 20,25,27,0,4,7,9,14,16,22,30,35,37 [--work ~/.cache/studio-sep/zoo/20261201-15s]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import ZooScene  # noqa: E402


def measured_delay_start(scene: ZooScene):
    """The start: the pair's measured delays (samples at the processing rate) for the
    typed-delay order, and the initial model; with the implied delays, for the record.
    The pipeline's own code (``stages.prior.measured_pair_delays`` picks the peaks,
    ``initial.pair_transfer`` builds the steering vectors): the results committed on
    2026-12-01 came from this script's earlier copy of that code, whose peak picking
    differed only at the lag window's edges."""
    from studio_sep.dsp import geometry as spatial
    from studio_sep.dsp.delays import arrival_times_s
    from studio_sep.separation import fastmnmf2
    from studio_sep.separation.initial import demixer_power, geometry_init, pair_transfer, spectral_from_power
    from studio_sep.stages.prior import measured_pair_delays

    session, settings, X = scene.session, scene.settings, scene.X
    rate, n_fft, N = settings.processing_sample_rate, settings.n_fft, len(session.sources)
    mics = np.array([m.position_m for m in session.mics])
    sources = [s.position_m for s in session.sources]
    t = np.asarray(arrival_times_s(mics, sources))  # (M, N)
    implied = (t[1] - t[0]) * rate
    measured = measured_pair_delays(session, settings, scene.x_proc)
    freqs = np.arange(X.shape[0]) * rate / n_fft
    typed = spatial.steering_vectors(mics, sources, freqs, patterns=[m.pattern for m in session.mics],
                                     aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics])
    A = pair_transfer(typed, implied, measured, n_fft=n_fft)
    tau = np.empty(N)
    tau[np.argsort(implied, kind="stable")] = np.sort(measured)
    Q, G = geometry_init(A)
    init = spectral_from_power(demixer_power(X, Q, N), fastmnmf2.Params(Q, G, None, None), n_basis=8,
                               rng=np.random.default_rng([0, 1]))
    return implied, tau, init


def main(argv=None) -> int:
    from studio_sep.separation import fastmnmf2, wiener

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", help="comma-separated indices of two-mic zoo scenes")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    for index in (int(s) for s in args.scenes.split(",")):
        scene = ZooScene(args.work, index)
        implied, tau, init = measured_delay_start(scene)

        def sdr(params) -> float:
            return round(scene.sdr([S[:, :, 0] for S in wiener.source_images(scene.X, params)]), 2)

        fit = fastmnmf2.fit(scene.X, n_sources=len(scene.session.sources), n_basis=8, n_iter=100, init=init,
                            rng=np.random.default_rng([0, 2]), log_likelihood_every=100)
        print(json.dumps({"index": index, "implied": np.round(implied, 1).tolist(),
                          "measured": np.round(tau, 1).tolist(), "start": sdr(init), "fit": sdr(fit.params)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
