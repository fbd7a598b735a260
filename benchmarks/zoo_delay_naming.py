#!/usr/bin/env python
"""Naming outputs from the recording without spot mics, tried on a zoo run's own images: each
output's time-frequency mask (its share of the images' power, summed over mics) picks the bins
it dominates in the *mixture*, whose inter-mic phases then say where that output comes from.
Two rules name the outputs against the typed geometry (Hungarian assignment):

- ``srp``: the steered response (GCC-PHAT of the masked mixture, every mic pair) evaluated at
  the delays each typed source position implies;
- ``delay``: each output's measured delay on every pair (the masked GCC-PHAT peak within the
  pair's spacing + 0.5 m) against each typed source's implied delay, summed absolute error.

Scored like ``zoo_naming.py``: SDR at the reference mic of the run's images named as run, by
each rule, and by the best permutation (the truth's; a ceiling). Native rate, 2048-point STFT.

Usage::

    python benchmarks/zoo_delay_naming.py [--config default] [--work ~/.cache/studio-sep/zoo/20261201-15s]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

N_FFT = 2048


def scores(session, folder: Path) -> dict:
    from scipy.optimize import linear_sum_assignment
    from scipy.signal import stft

    from studio_sep.dsp.delays import arrival_times_s
    from studio_sep.dsp.geometry import SPEED_OF_SOUND_M_S
    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.io import audio as audio_io
    from studio_sep.session import load_mics

    N, M = len(session.sources), len(session.mics)
    sr = session.sample_rate
    x = load_mics(session)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0][0] for s in session.sources])
    images = np.stack([np.stack([audio_io.read_audio(folder / "images" / s.name / f"{m.name}.wav")[0][0]
                                 for m in session.mics]) for s in session.sources])  # (N, M, S)
    sdr = np.stack([bss_metrics(truth, np.repeat(images[j:j + 1, 0], N, axis=0))["sdr"] for j in range(N)],
                   axis=1)  # [source n, output j]
    spec = lambda a: stft(a, fs=sr, nperseg=N_FFT, noverlap=N_FFT * 3 // 4)[2]  # noqa: E731
    X = spec(x)  # (M, F, T)
    power = np.stack([np.sum(np.abs(spec(images[n])) ** 2, axis=0) for n in range(N)])
    weight = (power / np.maximum(power.sum(axis=0, keepdims=True), 1e-30)) ** 2  # (N, F, T)
    freqs = np.arange(X.shape[1]) * sr / N_FFT
    mics = np.array([m.position_m for m in session.mics])
    implied = arrival_times_s(mics, [s.position_m for s in session.sources])  # (M, N) s
    srp, cost = np.zeros((N, N)), np.zeros((N, N))  # [output, typed source]
    up = 8
    lags = (np.arange(N_FFT * up) - N_FFT * up // 2) / up / sr
    for i in range(M):
        for j in range(i + 1, M):
            cross = X[j] * np.conj(X[i])
            phat = cross / np.maximum(np.abs(cross), 1e-30)
            tdoa = implied[j] - implied[i]  # (N,)
            reach = (np.linalg.norm(mics[i] - mics[j]) + 0.5) / SPEED_OF_SOUND_M_S
            for n in range(N):
                C = np.sum(weight[n] * phat, axis=1) / max(np.sum(weight[n]), 1e-30)
                srp[n] += np.real(np.exp(2j * np.pi * freqs[None, :] * tdoa[:, None]) @ C)
                cc = np.fft.irfft(C, N_FFT * up)
                cc = np.concatenate([cc[-N_FFT * up // 2:], cc[:N_FFT * up // 2]])
                keep = np.abs(lags) <= reach
                cost[n] += np.abs(lags[keep][np.argmax(cc[keep])] - tdoa)

    def named(score):  # output named after typed source p: the assignment's column order
        outputs, typed = linear_sum_assignment(score)
        order = np.empty(N, dtype=int)
        order[typed] = outputs
        return float(np.mean(sdr[np.arange(N), order]))

    return {"as run": float(np.mean(np.diag(sdr))), "srp": named(-srp), "delay": named(cost),
            "best": float(sdr[linear_sum_assignment(-sdr)].mean())}


def main(argv=None) -> int:
    from studio_sep.session import load_session

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="default")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    args = p.parse_args(argv)
    print("| scene | M | N | spot mics | as run | srp | delay | best permutation |\n"
          "|---:|---:|---:|---|---:|---:|---:|---:|")
    rows = []
    for manifest in sorted(args.work.glob("zoo_*/session.toml")):
        session = load_session(manifest)
        folder = args.work / "out" / args.config / session.name
        if not (folder / "run.json").is_file():
            continue
        spots = [s.spot_mic for s in session.sources]
        own = all(spots) and len(set(spots)) == len(spots)
        row = scores(session, folder)
        rows.append(row)
        print(f"| {int(manifest.parent.name.split('_')[-1])} | {len(session.mics)} | {len(session.sources)} | "
              f"{'own' if own else 'no'} | " + " | ".join(f"{row[k]:+.2f}" for k in ("as run", "srp", "delay", "best"))
              + " |", flush=True)
    for key in ("as run", "srp", "delay", "best"):
        values = [r[key] for r in rows]
        print(f"\n{key}: median {statistics.median(values):+.2f}, p10 {np.percentile(values, 10):+.2f}", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
