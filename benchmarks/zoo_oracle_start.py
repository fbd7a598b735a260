#!/usr/bin/env python
"""Is it the start or the model? FastMNMF2 started from the oracle on the zoo's two-mic,
two-source scenes, against the default's fit of the same session.

On a pair (M = N = 2) two full-rank spatial covariances are exactly jointly diagonalisable,
so the oracle start is exact in FastMNMF2's own terms: ``Q_f`` from the generalised
eigenvectors of the sources' true covariances (``oracle_mwf.py``'s ``R_nf``), ``G`` from the
diagonals they give, and ``W, H`` an NMF of each source's true power. Scored at the reference
mic at that start and after 100 iterations (studio-sep's fit, the default's rate and STFT),
with the final log-likelihood next to the default fit's (``run.json`` of a ``zoo.py`` run:
the same STFT, and the fit normalises the data the same way, so the values compare).

Usage::

    python benchmarks/zoo_oracle_start.py [--work ~/.cache/studio-sep/zoo/20261201-15s] [--config default]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.linalg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def oracle_start(C_NFTM: np.ndarray, *, n_basis: int, rng: np.random.Generator):
    """FastMNMF2 parameters from the true images of two sources at two mics."""
    from studio_sep.separation import fastmnmf2, nmf

    N, F, T, M = C_NFTM.shape
    v = (np.abs(C_NFTM) ** 2).mean(axis=3)
    R = np.einsum("nftm,nftk->nfmk", C_NFTM, C_NFTM.conj()) / np.maximum(v.sum(axis=2), 1e-300)[:, :, None, None]
    Q = np.empty((F, M, M), complex)
    loading = 1e-9 * np.eye(M)
    for f in range(F):
        Q[f] = scipy.linalg.eigh(R[0, f] + loading, R[0, f] + R[1, f] + loading)[1].conj().T
    D = np.real(np.einsum("fmk,nfkl,fml->nfm", Q, R, Q.conj()))  # each source's diagonal in Q's basis
    G = D.mean(axis=1)
    G /= G.sum(axis=1, keepdims=True)
    W, H = zip(*(nmf.nmf(v[n] * D[n].sum(axis=1)[:, None] / M, n_basis=n_basis, n_iter=100, rng=rng)
                 for n in range(N)))
    return fastmnmf2.Params(Q, G, np.stack(W), np.stack(H))


def main(argv=None) -> int:
    from common import cpu_model

    from studio_sep.dsp import stft
    from studio_sep.dsp.metrics import bss_metrics
    from studio_sep.dsp.resample import resample
    from studio_sep.io import audio as audio_io
    from studio_sep.separation import fastmnmf2, wiener
    from studio_sep.session import load_mics, load_session
    from studio_sep.sim.zoo_scenes import draw_scene
    from studio_sep.stages.settings import resolve_settings

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "studio-sep" / "zoo" / "20261201-15s")
    p.add_argument("--config", default="default", help="the zoo.py configuration to compare with")
    p.add_argument("--spatial-only", action="store_true",
                   help="only Q and G from the oracle; W and H by NMF of the oracle demixer's output power, as the "
                        "geometric start makes them from its demixer (is it the spatial or the spectral start?)")
    args = p.parse_args(argv)
    rows = {}
    results = args.work / "results.jsonl"
    for line in results.read_text().splitlines() if results.is_file() else []:
        r = json.loads(line)
        if r["config"] == args.config and r.get("sdr_ref") is not None:
            rows[r["index"]] = r
    print(f"machine: {cpu_model()}; {args.work}", file=sys.stderr)
    print("| scene | axes | default SDR | default final LL | oracle start SDR | after 100 it. SDR | final LL |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for manifest in sorted(args.work.glob("zoo_*/session.toml")):
        session = load_session(manifest)
        if len(session.mics) != 2 or len(session.sources) != 2:
            continue
        seed, index = (int(part) for part in manifest.parent.name.split("_")[1:])
        settings = resolve_settings(session)
        native, rate, n_fft, hop = session.sample_rate, settings.processing_sample_rate, settings.n_fft, settings.hop
        x = load_mics(session)
        x_proc = resample(x, native, rate)
        X = stft.stft(x_proc, n_fft=n_fft, hop=hop)
        images = [audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources]
        C = np.stack([stft.stft(resample(img, native, rate), n_fft=n_fft, hop=hop) for img in images])
        truth = np.stack([img[0] for img in images])

        def sdr(params) -> float:
            est = [resample(stft.istft(S[:, :, :1], n_fft=n_fft, hop=hop, n_samples=x_proc.shape[1])[0], rate, native,
                            n_samples=x.shape[1]) for S in wiener.source_images(X, params)]
            return float(np.mean(bss_metrics(truth, np.stack(est))["sdr"]))

        start = oracle_start(C, n_basis=settings.n_basis, rng=np.random.default_rng(0))
        if args.spatial_only:
            from studio_sep.separation.initial import demixer_power, spectral_from_power

            spatial = fastmnmf2.Params(start.Q_FMM, start.G_NM, None, None)
            own = demixer_power(X, start.Q_FMM, 2)[np.argmax(start.G_NM, axis=1)]  # each source's own channel
            start = spectral_from_power(own, spatial, n_basis=settings.n_basis,
                                        rng=np.random.default_rng([settings.seed, 1]))
        fit = fastmnmf2.fit(X, n_sources=2, n_basis=settings.n_basis, n_iter=settings.n_iter, init=start,
                            rng=np.random.default_rng(1), log_likelihood_every=settings.n_iter)
        run = args.work / "out" / args.config / session.name / "run.json"
        default_ll = None
        if run.is_file():
            default_ll = json.loads(run.read_text()).get("log_likelihood", {}).get("final")
        axes = draw_scene(index, seed).to_dict()["axes"]
        label = ", ".join(f"{k}={axes[k]}" for k in ("rt60", "patterns", "position_error_cm") if k in axes)
        d = rows.get(index, {}).get("sdr_ref")
        print(f"| {index} | {label} | {'—' if d is None else f'{d:+.1f}'} | "
              f"{'—' if default_ll is None else f'{default_ll:.3f}'} | {sdr(start):+.1f} | {sdr(fit.params):+.1f} | "
              f"{float(fit.log_likelihood[-1]):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
