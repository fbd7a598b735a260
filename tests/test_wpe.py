"""The WPE lever (``wpe = true``): the model is fitted to the dereverberated mics, the
images are still the Wiener filters applied to the recorded mics."""

from __future__ import annotations

import numpy as np
import pytest

from studio_sep.dsp import stft
from studio_sep.stages.signals import fit_spectrogram

pytest.importorskip("nara_wpe")


class _Settings:
    wpe = True


def test_wpe_removes_a_late_tail_and_keeps_the_direct_sound():
    """White noise bursts through a 2-mic exponentially decaying tail (RT60 0.5 s): the
    late part of the tail loses more than 6 dB; the off switch returns the STFT itself."""
    rate, rng = 16000, np.random.default_rng(0)
    dry = rng.standard_normal(rate * 4) * np.repeat(rng.uniform(size=40) > 0.5, rate // 10)
    t = np.arange(int(0.5 * rate)) / rate
    decay = np.exp(-6.9 * t / 0.5)
    late = t > 0.05
    x = []
    for m in range(2):
        h = np.zeros_like(t)
        h[m] = 1.0  # the direct sound
        h[late] = 0.03 * rng.standard_normal(late.sum()) * decay[late]
        x.append(np.convolve(dry, h)[: len(dry)])
    X = stft.stft(np.stack(x), n_fft=1024, hop=256)
    Y = fit_spectrogram(X, _Settings())
    assert Y.shape == X.shape
    direct = stft.stft(np.stack([dry, np.roll(dry, 1)]), n_fft=1024, hop=256)
    err_before = np.sum(np.abs(X - direct) ** 2)
    err_after = np.sum(np.abs(Y - direct) ** 2)
    assert 10 * np.log10(err_before / err_after) > 3.0

    class Off:
        wpe = False

    assert fit_spectrogram(X, Off()) is X
