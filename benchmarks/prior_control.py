#!/usr/bin/env python
"""Control for the spectral-prior benchmark: the stem mic's own power as the "prior".

The classnet and nmf priors are single-channel estimates from each source's stem mic,
and a collapsed prior falls back to that mic's power (``studio_sep.priors.spec.PRIOR_FLOOR_DB``).
This control gives *every* source its stem mic's power as the prior (no network, no
dictionary), through the same initial-model code, so the priors' gains can be told
apart from what the spot mics alone give. Runs on the sessions ``priors.py`` rendered.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/prior_control.py SCENES_DIR [--iterations 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path, help="priors.py's <out>/scenes folder")
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()

    import studio_sep.priors
    from studio_sep.priors.spec import PriorResult
    from studio_sep.session import load_session
    from studio_sep.stages import SeparationOptions, evaluate_run, separate_session

    def mic_power_prior(spec, session, settings, x_proc_MS, X_FTM, *, callback=None):
        index = {m.name: i for i, m in enumerate(session.mics)}
        V = np.stack([np.abs(X_FTM[:, :, index[settings.stem_mics[s.name]]]) ** 2 for s in session.sources])
        return PriorResult(V, {**spec.describe(), "control": "stem mic power"})

    studio_sep.priors.compute_prior = mic_power_prior  # the control replaces the prior, nothing else
    rows = []
    for manifest in sorted(args.scenes.glob("*/session.toml")):
        session = load_session(manifest)
        for init in (("circular",), ("geometry",)):
            with tempfile.TemporaryDirectory() as out:
                separate_session(session, out, SeparationOptions(init=init, prior="nmf", n_iter=args.iterations,
                                                                 device="cpu"))
                means = evaluate_run(session, out)["means"]
            row = {"scene": manifest.parent.name, "init": "+".join(init),
                   "mic1": means["at_reference_mic"]["separated"]["sdr"],
                   "spot": means["at_stem_mic"]["separated"]["sdr"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for init in ("circular", "geometry"):
        sel = [r for r in rows if r["init"] == init]
        print(f"{init}+stem-mic-power prior: SDR mic 1 {np.mean([r['mic1'] for r in sel]):+.2f} dB, "
              f"spot {np.mean([r['spot'] for r in sel]):+.2f} dB over {len(sel)} sessions")


if __name__ == "__main__":
    sys.exit(main())
