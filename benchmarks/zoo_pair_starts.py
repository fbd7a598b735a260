#!/usr/bin/env python
"""Two spatial starts on a spaced pair, ranked by the model's log-likelihood: the geometric
start (typed positions) and the start from the mixture's two strongest GCC-PHAT peaks
(``zoo_pair_delays.measured_delay_start``), each fitted as the default fits (an ensemble of
3, ``--iterations auto``, outputs named as the start names them). The question: does the
likelihood rank these starts as it ranks the geometric and spot-mic starts
(``zoo_spot_start.py``)? One JSON line per scene; ``--report`` prints the table.

Usage::

    python benchmarks/zoo_pair_starts.py 20,25,27,0,4,7,9 > a.jsonl
    python benchmarks/zoo_pair_starts.py --report a.jsonl [b.jsonl …]
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
sys.path.insert(0, str(HERE))

from common import ZooScene  # noqa: E402
from zoo_pair_delays import measured_delay_start  # noqa: E402
from zoo_spot_start import run_ensemble  # noqa: E402


def main(argv=None) -> int:
    from studio_sep.separation import fastmnmf2
    from studio_sep.separation.initial import demixer_power, spectral_from_power

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", nargs="?")
    p.add_argument("--report", type=Path, nargs="+")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    if args.report:
        rows = [json.loads(line) for f in args.report for line in f.read_text().splitlines() if line]
        print("| scene | geometry | measured delays | log-lik. geometry / measured | kept |\n|---:|---:|---:|---|---:|")
        kept = []
        for r in sorted(rows, key=lambda r: r["index"]):
            g, m = np.mean(r["ll_geometry"]), np.mean(r["ll_measured"])
            kept.append(r["measured"] if m > g else r["geometry"])
            print(f"| {r['index']} | {r['geometry']:+.2f} | {r['measured']:+.2f} | {g:.3f} / {m:.3f} | {kept[-1]:+.2f} |")
        for name, v in (("geometry", [r["geometry"] for r in rows]), ("measured", [r["measured"] for r in rows]),
                        ("higher log-likelihood", kept)):
            print(f"\n{name}: median {np.median(v):+.2f}, p10 {np.percentile(v, 10):+.2f}, worst {min(v):+.2f}", end="")
        print()
        return 0
    for index in (int(s) for s in args.scenes.split(",")):
        t0 = time.perf_counter()
        scene = ZooScene(args.work, index)
        start = measured_delay_start(scene)[2]
        Q, G = start.Q_FMM, start.G_NM
        N, s = len(scene.session.sources), scene.settings

        def measured(k):
            rng = np.random.default_rng([s.seed, 1] if k == 0 else [s.seed, 1, k])
            return spectral_from_power(demixer_power(scene.X, Q, N), fastmnmf2.Params(Q, G, None, None),
                                       n_basis=s.n_basis, rng=rng)

        row = {"index": index}
        row["geometry"], row["its_geometry"], row["ll_geometry"] = run_ensemble(scene, scene.initial_model,
                                                                                spot_naming=False)
        row["measured"], row["its_measured"], row["ll_measured"] = run_ensemble(scene, measured, spot_naming=False)
        row["s"] = round(time.perf_counter() - t0)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
