"""Short-time Fourier transform and its inverse, on numpy or cupy.

Axis conventions: time signals ``x_CS`` (channels × samples); spectrograms
``X_FTC`` (frequency bins × frames × channels, complex). The inverse is the
least-squares overlap-add (weighted by the window, divided by the summed squared
window), which reconstructs an unmodified STFT exactly, so separated images that sum
to the mixture's STFT sum to the mixture in time too.
"""

from __future__ import annotations

import math

from studio_sep.dsp.backend import get_xp
from studio_sep.util.errors import InputError

PAPER_WINDOW_S = 0.064  #: the paper's window: 1024 points at 16 kHz


def default_fft_size(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` keeping the window near the paper's 64 ms at any rate.

    1024/256 at 16 kHz, 3072/768 at 48 kHz, 2816/704 at 44.1 kHz: the window is the
    nearest multiple of 64 samples to 64 ms, the hop a quarter of it.
    """
    n_fft = max(64, 64 * round(PAPER_WINDOW_S * sample_rate / 64))
    return n_fft, n_fft // 4


def check_fft_settings(n_fft: int, hop: int) -> None:
    """Raise :class:`InputError` unless ``hop`` divides ``n_fft`` and both are sane."""
    if n_fft < 16 or n_fft % 2:
        raise InputError(None, "n_fft", f"must be an even number of at least 16, got {n_fft}",
                         "use e.g. 1024 at 16 kHz or 3072 at 48 kHz")
    if hop < 1 or n_fft % hop or n_fft // hop < 2:
        raise InputError(None, "hop", f"{hop} must divide n_fft ({n_fft}) at least twice",
                         f"use n_fft / 4 = {n_fft // 4}")


def _window(xp, n_fft: int, dtype):
    n = xp.arange(n_fft, dtype=dtype)
    return (0.5 - 0.5 * xp.cos(2 * math.pi * n / n_fft)).astype(dtype)  # periodic Hann


def _layout(n_samples: int, n_fft: int, hop: int) -> tuple[int, int]:
    """Left padding and frame count so that every sample is covered by n_fft/hop frames."""
    pad = n_fft - hop
    n_frames = -(-(n_samples + 2 * pad - n_fft) // hop) + 1
    return pad, n_frames


def n_frames(n_samples: int, *, n_fft: int, hop: int) -> int:
    """Number of STFT frames :func:`stft` gives for ``n_samples`` samples."""
    return _layout(n_samples, n_fft, hop)[1]


def stft(x_CS, *, n_fft: int, hop: int):
    """STFT of real signals.

    Parameters
    ----------
    x_CS : array, shape (n_channels, n_samples), real
    n_fft, hop : int
        Window length and hop in samples (``hop`` divides ``n_fft``).

    Returns
    -------
    X_FTC : array, shape (n_fft // 2 + 1, n_frames, n_channels), complex
    """
    check_fft_settings(n_fft, hop)
    xp = get_xp(x_CS)
    n_channels, n_samples = x_CS.shape
    pad, n_fr = _layout(n_samples, n_fft, hop)
    total = (n_fr - 1) * hop + n_fft
    x_pad = xp.zeros((n_channels, total), dtype=x_CS.dtype)
    x_pad[:, pad:pad + n_samples] = x_CS
    index = (xp.arange(n_fr) * hop)[:, None] + xp.arange(n_fft)[None, :]
    frames_CTN = x_pad[:, index] * _window(xp, n_fft, x_CS.dtype)
    X_CTF = xp.fft.rfft(frames_CTN, axis=-1)
    return xp.ascontiguousarray(X_CTF.transpose(2, 1, 0))


def istft(X_FTC, *, n_fft: int, hop: int, n_samples: int):
    """Inverse of :func:`stft` (least-squares overlap-add).

    Parameters
    ----------
    X_FTC : array, shape (n_fft // 2 + 1, n_frames, n_channels), complex
    n_fft, hop : int
        As given to :func:`stft`.
    n_samples : int
        Length of the signal to return.

    Returns
    -------
    x_CS : array, shape (n_channels, n_samples), real
    """
    check_fft_settings(n_fft, hop)
    xp = get_xp(X_FTC)
    n_bins, n_fr, n_channels = X_FTC.shape
    if n_bins != n_fft // 2 + 1:
        raise ValueError(f"istft: {n_bins} frequency bins do not match n_fft={n_fft}")
    real_dtype = X_FTC.real.dtype
    window = _window(xp, n_fft, real_dtype)
    frames_CTN = xp.fft.irfft(X_FTC.transpose(2, 1, 0), n=n_fft, axis=-1).astype(real_dtype) * window
    ratio = n_fft // hop
    out_CBH = xp.zeros((n_channels, n_fr + ratio - 1, hop), dtype=real_dtype)
    norm_BH = xp.zeros((n_fr + ratio - 1, hop), dtype=real_dtype)
    frames_CTRH = frames_CTN.reshape(n_channels, n_fr, ratio, hop)
    window_sq_RH = (window * window).reshape(ratio, hop)
    for r in range(ratio):
        out_CBH[:, r:r + n_fr, :] += frames_CTRH[:, :, r, :]
        norm_BH[r:r + n_fr, :] += window_sq_RH[r]
    pad, _ = _layout(n_samples, n_fft, hop)
    out_CS = out_CBH.reshape(n_channels, -1)[:, pad:pad + n_samples]
    norm_S = norm_BH.reshape(-1)[pad:pad + n_samples]
    return out_CS / norm_S
