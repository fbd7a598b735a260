#!/usr/bin/env python
"""A spatial start from the recording for a spaced pair (a diagnostic, not in the pipeline):
the N strongest GCC-PHAT peaks of the two mics' mixture (within the pair's physical lags,
1.3 × spacing / c), given to the sources in the order of their typed inter-mic delays (the
typed coordinates may be off by 10+ samples; which source is left of which survives), the
steering vectors' phases from those delays and their magnitudes from the typed geometry;
FastMNMF2 100 iterations from that demixer. Scores: SDR at the reference mic, one JSON line
per scene (``start``: the start's own images, ``fit``: after the fit).

Usage::

    python benchmarks/zoo_pair_delays.py 20,25,27,0,4,7,9,14,16,22,30,35,37
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402
from scipy.signal import find_peaks
from studio_sep.dsp import stft
from studio_sep.dsp.delays import cross_correlation_phat, arrival_times_s
from studio_sep.dsp.metrics import bss_metrics
from studio_sep.dsp.resample import resample
from studio_sep.io import audio as audio_io
from studio_sep.separation import fastmnmf2, wiener
from studio_sep.separation.initial import geometry_init, demixer_power, spectral_from_power
from studio_sep.session import load_mics, load_session
from studio_sep.stages.settings import resolve_settings
work = Path.home() / '.cache/studio-sep/zoo/20261201-15s'
for idx in [int(a) for a in sys.argv[1].split(',')]:
    s = load_session(work/f'zoo_20261201_{idx:03d}'/'session.toml')
    st = resolve_settings(s)
    native, rate, n_fft, hop = s.sample_rate, st.processing_sample_rate, st.n_fft, st.hop
    x = load_mics(s); xp = resample(x, native, rate)
    X = stft.stft(xp, n_fft=n_fft, hop=hop)
    truth = np.stack([audio_io.read_audio(s.truth.images[src.name])[0][0] for src in s.sources])
    N = len(s.sources)
    def sdr(params):
        est = [resample(stft.istft(S[:, :, :1], n_fft=n_fft, hop=hop, n_samples=xp.shape[1])[0], rate, native, n_samples=x.shape[1]) for S in wiener.source_images(X, params)]
        return round(float(np.mean(bss_metrics(truth, np.stack(est))['sdr'])), 2)
    mics = np.array([m.position_m for m in s.mics])
    t = np.asarray(arrival_times_s(mics, [src.position_m for src in s.sources]))  # (M, N)
    implied = (t[1] - t[0]) * rate
    d = np.linalg.norm(mics[1] - mics[0]); maxlag = 1.3 * d / 343 * rate + 2
    lags, cc = cross_correlation_phat(xp[0], xp[1])
    keep = np.abs(lags) <= maxlag
    L, C = lags[keep], cc[keep]
    pk, _ = find_peaks(C, distance=8)
    top = pk[np.argsort(C[pk])[::-1][:N]]
    measured = np.sort(L[top])
    order = np.argsort(implied)  # sources from smallest implied delay
    tau = np.empty(N); tau[order] = measured
    freqs = np.arange(X.shape[0]) * rate / n_fft
    from studio_sep.dsp import geometry as spatial
    Ag = spatial.steering_vectors(mics, [src.position_m for src in s.sources], freqs, patterns=[m.pattern for m in s.mics], aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in s.mics])
    mag = np.abs(Ag) / np.abs(Ag[:, :1, :])
    A = mag * np.stack([np.ones((len(freqs), N)), np.exp(-2j * np.pi * freqs[:, None] * tau[None] / rate)], axis=1)  # (F, M, N)
    Q, G = geometry_init(A)
    init = spectral_from_power(demixer_power(X, Q, N), fastmnmf2.Params(Q, G, None, None), n_basis=8, rng=np.random.default_rng([0, 1]))
    fit = fastmnmf2.fit(X, n_sources=N, n_basis=8, n_iter=100, init=init, rng=np.random.default_rng([0, 2]), log_likelihood_every=100)
    print(json.dumps({'index': idx, 'implied': np.round(implied, 1).tolist(), 'measured': np.round(tau, 1).tolist(), 'start': sdr(init), 'fit': sdr(fit.params)}), flush=True)
