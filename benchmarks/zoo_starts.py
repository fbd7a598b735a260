#!/usr/bin/env python
"""The multi-start lever, measured on a finished zoo run before it is built into the pipeline.

For every scene where ``benchmarks/zoo.py`` ran both the guided default (geometry start) and
the blind start (``--init circular``), this computes what a two-start separation would give:

1. keep the start whose fit ends with the higher log-likelihood (the model's own criterion,
   never the ground truth);
2. when the blind start wins, name its outputs without the spot-mic rule: output k goes to
   the source whose guided-start spectral model ``λ_n = W_n H_n`` its own ``λ_k`` correlates
   with best (:func:`studio_sep.separation.initial.match_outputs`, as the pipeline does).

Both fits are the runs' own (``.studio-sep/fit.npz``), so the result is exactly what the
pipeline would write; only the choice and the naming are computed here. It also reports
the blind start with the best permutation (an oracle: how good the blind fits are when
named right). Scores: SDR at the reference mic (fast-bss-eval, 512 taps), mean over sources.

Usage::

    python benchmarks/zoo_starts.py WORK_DIR [--out FILE]

``WORK_DIR`` is a zoo work folder (``~/.cache/studio-sep/zoo/<seed>-<duration>s``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.io import audio as audio_io
    from studio_sep.separation.initial import match_outputs
    from studio_sep.session import load_session
    from studio_sep.stages.checkpoints import load_params

    rows = []
    for scene in sorted(p for p in args.work.iterdir() if (p / "render.json").is_file()):
        runs = {c: args.work / "out" / c / scene.name for c in ("default", "blind")}
        if not all((r / "run.json").is_file() and (r / ".studio-sep" / "fit.npz").is_file() for r in runs.values()):
            continue
        session = load_session(scene / "session.toml")
        record = {c: json.loads((r / "run.json").read_text()) for c, r in runs.items()}
        if record["default"]["separation"]["init"][0] != "geometry":
            continue  # fewer mics than sources: the default is the blind start already
        ref = session.mics[0].name
        truth = np.stack([audio_io.read_audio(session.truth.images[s.name], channels=[0])[0][0]
                          for s in session.sources])

        def images(run: Path, order: list[int] | None = None) -> np.ndarray:
            names = [s.name for s in session.sources]
            by_output = {}
            assigned = json.loads((run / "run.json").read_text())["separation"]["assignment"]
            for n, name in enumerate(names):  # the file of source n holds output assigned[n]
                by_output[assigned[n]] = audio_io.read_audio(run / "images" / name / f"{ref}.wav")[0][0]
            chosen = order if order is not None else assigned
            return np.stack([by_output[k] for k in chosen])

        def sdr(est: np.ndarray) -> float:
            return float(np.mean(bss_metrics(truth, est)["sdr"]))

        ll = {c: record[c]["log_likelihood"]["final"] for c in runs}
        guided, blind_named = sdr(images(runs["default"])), sdr(images(runs["blind"]))
        order = list(match_outputs(load_params(runs["blind"] / ".studio-sep" / "fit.npz")[0],
                                   load_params(runs["default"] / ".studio-sep" / "fit.npz")[0]))
        blind_by_models = sdr(images(runs["blind"], order))
        blind_oracle = max(sdr(images(runs["blind"], list(p))) for p in itertools.permutations(range(len(order))))
        pick = "blind" if ll["blind"] > ll["default"] else "default"
        rows.append({"scene": scene.name, "guided": guided, "blind_spot_rule": blind_named,
                     "blind_by_models": blind_by_models, "blind_oracle": blind_oracle, "ll": ll, "pick": pick,
                     "two_starts": blind_by_models if pick == "blind" else guided})
        print(f"{scene.name}: guided {guided:+.2f}, blind {blind_named:+.2f} (named by models {blind_by_models:+.2f}, "
              f"oracle {blind_oracle:+.2f}); log-lik {ll['default']:.3f} / {ll['blind']:.3f} → {pick}: "
              f"{rows[-1]['two_starts']:+.2f}", flush=True)
    if not rows:
        print("no scene with both runs", file=sys.stderr)
        return 1

    def q(key: str) -> str:
        v = np.array([r[key] for r in rows])
        return f"{np.median(v):+.2f} | {np.percentile(v, 10):+.2f} | {v.min():+.2f}"

    lines = [f"{len(rows)} scenes ({args.work}); SDR at the reference mic, dB: median | p10 | worst", "",
             "| start | median | p10 | worst |", "|---|---|---|---|"]
    for key, label in (("guided", "guided (the default today)"), ("blind_spot_rule", "blind, named by spot-mic energy"),
                       ("blind_by_models", "blind, named by the guided models"),
                       ("blind_oracle", "blind, best permutation (oracle)"),
                       ("two_starts", "two starts, higher log-likelihood kept")):
        lines.append(f"| {label} | {q(key)} |")
    picks = sum(r["pick"] == "blind" for r in rows)
    right = sum((r["pick"] == "blind") == (r["blind_by_models"] > r["guided"]) for r in rows)
    lines += ["", f"blind kept in {picks}/{len(rows)} scenes; the log-likelihood picked the start with the better "
              f"SDR in {right}/{len(rows)}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text + "\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
