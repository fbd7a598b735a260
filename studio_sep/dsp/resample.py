"""Sample-rate conversion: the one resampler of the package (polyphase, scipy)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def resample(x_CS: np.ndarray, from_sr: int, to_sr: int, *, n_samples: int | None = None) -> np.ndarray:
    """Polyphase resampling of ``(C, S)`` (or ``(S,)``) signals along the last axis.

    The result has ``n_samples`` samples (cut, or padded with zeros), by default
    ``round(S · to_sr / from_sr)``. Identity (apart from the length) when the rates match.
    """
    if from_sr == to_sr:
        return x_CS if n_samples is None else fit_length(x_CS, n_samples)
    from scipy.signal import resample_poly

    ratio = Fraction(int(to_sr), int(from_sr))
    y = resample_poly(x_CS, ratio.numerator, ratio.denominator, axis=-1)
    return fit_length(y, n_samples if n_samples is not None else round(x_CS.shape[-1] * to_sr / from_sr))


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples along its last axis."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.concatenate([x, np.zeros(x.shape[:-1] + (n - x.shape[-1],))], axis=-1)
