"""float32 against float64, and the fused kernels against the array code, on the rendered trio
scenes of ``separation.py`` (RT60 0.3 and 0.5 s, 15 s): a blind (circular) fit of N iterations,
Wiener images, mean SDR at mic 1 under the best permutation, and the difference of the outputs.

Usage: ``python benchmarks/fit_dtype_quality.py N_ITER [SCENES_DIR]`` (scenes rendered by
``fit_speed.py`` or ``separation.py``, default ``~/.cache/studio-sep/benchmarks/scenes``)."""
import itertools
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"
import numpy as np
from studio_sep.dsp import stft
from studio_sep.dsp.metrics import bss_metrics
from studio_sep.io import audio as audio_io
from studio_sep.session import load_mics, load_session
from studio_sep.separation import fastmnmf2, wiener
from studio_sep.separation.state import State
n_iter = int(sys.argv[1])
scenes = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.home() / ".cache/studio-sep/benchmarks/scenes"
fused_make = fastmnmf2.make_state
def array_make(xp, X, Q, G, W, H, **kw):
    return State(xp, X, Q, G, W, H, **kw)


for rt in ("0.3", "0.5"):
    session = load_session(scenes / f"seed0-rt60_{rt}-15s" / "session.toml")
    x = load_mics(session)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])  # (N, M, S)
    X = stft.stft(x, n_fft=1024, hop=256)
    res = {}
    for code, make in (("fused", fused_make), ("array", array_make)):
        fastmnmf2.make_state = make
        for dt in ("float64", "float32"):
            Xd = X.astype(np.complex128 if dt == "float64" else np.complex64)
            t0 = time.perf_counter()
            r = fastmnmf2.fit(Xd, n_sources=3, n_basis=8, n_iter=n_iter, rng=np.random.default_rng(0), log_likelihood_every=5)
            el = time.perf_counter() - t0
            S = wiener.source_images(Xd, r.params)  # (N, F, T, M)
            est = np.stack([stft.istft(s, n_fft=1024, hop=256, n_samples=x.shape[1]) for s in S]).astype(np.float64)
            perms = list(itertools.permutations(range(3)))
            sdrs = [bss_metrics(truth[:, 0], est[list(p), 0])["sdr"] for p in perms]
            best = int(np.argmax([np.mean(s) for s in sdrs]))
            res[code, dt] = (np.mean(sdrs[best]), r.log_likelihood[-1], el, est)
            print(f"rt60 {rt} {code:5s} {dt}: mean SDR {res[code, dt][0]:.3f} dB, ll {r.log_likelihood[-1]:.6f}, fit {el:.1f} s", flush=True)
    for code in ("fused", "array"):
        e64, e32 = res[code, "float64"][3], res[code, "float32"][3]
        print(f"rt60 {rt} {code}: float32 - float64 SDR {res[code, 'float32'][0] - res[code, 'float64'][0]:+.3f} dB; "
              f"output difference {10 * np.log10(np.sum((e32 - e64) ** 2) / np.sum(e64 ** 2)):.1f} dB re output")
    print(f"rt60 {rt}: fused vs array float64 output diff {10 * np.log10(np.sum((res['fused', 'float64'][3] - res['array', 'float64'][3]) ** 2) / np.sum(res['array', 'float64'][3] ** 2)):.1f} dB")
fastmnmf2.make_state = fused_make
