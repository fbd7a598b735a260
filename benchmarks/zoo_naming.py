#!/usr/bin/env python
"""How the outputs of a zoo run are named, scored: for every session of a ``zoo.py`` run
(``out/<config>/<session>/``), the SDR at the reference mic of the images named as the run
named them, as the spot-mic rule names them (each output to the source whose spot mic takes
the largest share of its energy; only where every source has a spot mic of its own) and with
the best permutation (the truth's: a ceiling). The images are the run's own: naming does not
change them, so the spot-mic column is exactly what the rule gives on that run.

Usage::

    python benchmarks/zoo_naming.py [--config default] [--work ~/.cache/studio-sep/zoo/20261201-15s]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    from scipy.optimize import linear_sum_assignment

    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.io import audio as audio_io
    from studio_sep.separation.initial import assign_outputs
    from studio_sep.session import load_session

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    print("| scene | M | N | spot mics | as run | spot-mic rule | best permutation |\n|---:|---:|---:|---|---:|---:|---:|")
    gains = []
    for manifest in sorted(args.work.glob("zoo_*/session.toml")):
        session = load_session(manifest)
        folder = args.work / "out" / args.config / session.name
        if not (folder / "run.json").is_file() or not all(
                (folder / "images" / s.name / f"{m.name}.wav").is_file() for s in session.sources for m in session.mics):
            continue  # not run, or being written
        index = int(manifest.parent.name.split("_")[-1])
        truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0][0] for s in session.sources])
        images = {s.name: [audio_io.read_audio(folder / "images" / s.name / f"{m.name}.wav")[0][0]
                           for m in session.mics] for s in session.sources}
        est = np.stack([images[s.name][0] for s in session.sources])
        N = len(session.sources)
        sdr = np.stack([bss_metrics(truth, np.repeat(est[j:j + 1], N, axis=0))["sdr"] for j in range(N)], axis=1)
        as_run = float(np.mean(np.diag(sdr)))  # sdr[source n, output j]
        best = float(sdr[linear_sum_assignment(-sdr)].mean())
        spots = [s.spot_mic for s in session.sources]
        own = all(spots) and len(set(spots)) == len(spots)
        rule = as_run
        if own:
            energy = np.array([[np.sum(np.square(x)) for x in images[s.name]] for s in session.sources])
            names = [m.name for m in session.mics]
            order = assign_outputs(energy, [names.index(m) for m in spots])  # output order[n] is source n
            rule = float(np.mean(sdr[np.arange(N), order]))
            gains.append(rule - as_run)
        print(f"| {index} | {len(session.mics)} | {N} | {'own' if own else 'no'} | {as_run:+.2f} | "
              f"{rule:+.2f} | {best:+.2f} |", flush=True)
    if gains:
        print(f"\nWith spot mics of their own: {len(gains)} sessions, the rule changes {sum(g != 0 for g in gains)}, "
              f"by {', '.join(f'{g:+.2f}' for g in gains if g != 0) or 'nothing'}; "
              f"median change {statistics.median(gains):+.2f} dB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
