"""Active audio and scattering: where a stem plays, and its segments placed on a timeline.

- :func:`active_mask` / :func:`extract_active`: a stem's *active audio* (§3.3.2.2), the
  samples where its low-passed magnitude is above a threshold, silences cut out;
- :func:`scatter`: segments of a stem placed bin by bin over an example's timeline
  (§3.3.2.2);
- :func:`to_mono_rate` and :func:`normalise_rms`: the conversions every stem goes
  through.

Axis letters: ``S`` samples, ``C`` channels.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from studio_sep.dsp.resample import resample

__all__ = ["active_mask", "extract_active", "normalise_rms", "scatter", "to_mono_rate"]



def active_mask(w_S: np.ndarray, sample_rate: int, *, cutoff_hz: float = 10.0,
                threshold_db: float = -40.0) -> np.ndarray:
    """Where a stem plays (§3.3.2.2): ``y = lowpass(|w|) > T``.

    ``y`` is ``|w|`` through a 2nd-order Butterworth low-pass at ``cutoff_hz``, run
    forwards and backwards (zero phase, so the envelope is not delayed; its edges
    smear by about ``1 / cutoff_hz``). ``T`` is ``threshold_db`` relative to the peak of
    ``y``.

    Parameters
    ----------
    w_S : ndarray, shape (n_samples,)
    sample_rate : int
        In Hz.

    Returns
    -------
    mask_S : ndarray of bool, shape (n_samples,)
        All False for a silent stem.
    """
    w_S = np.asarray(w_S, dtype=np.float64)
    if w_S.ndim != 1:
        raise ValueError(f"active_mask: expected a mono (n_samples,) signal, got shape {w_S.shape}")
    if w_S.size == 0:
        return np.zeros(0, dtype=bool)
    sos = scipy.signal.butter(2, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    if w_S.size > 3 * 2 * (sos.shape[0] + 1):
        y_S = scipy.signal.sosfiltfilt(sos, np.abs(w_S))
    else:  # too short to filter: the raw magnitude
        y_S = np.abs(w_S)
    peak = float(np.max(y_S))
    if not peak > 0:
        return np.zeros(w_S.size, dtype=bool)
    return y_S > peak * 10.0 ** (threshold_db / 20.0)


def extract_active(w_S: np.ndarray, sample_rate: int, *, cutoff_hz: float = 10.0,
                   threshold_db: float = -40.0) -> np.ndarray:
    """The samples of ``w_S`` where :func:`active_mask` holds, concatenated (as in the
    paper: silences are cut out, the remaining portions joined). float32, 1-D."""
    w_S = np.asarray(w_S)
    return np.ascontiguousarray(w_S[active_mask(w_S, sample_rate, cutoff_hz=cutoff_hz,
                                                threshold_db=threshold_db)], dtype=np.float32)


def to_mono_rate(x_CS: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """The channels' mean (float64), resampled from ``sample_rate`` to ``target_rate``."""
    w_S = np.asarray(x_CS, dtype=np.float64)
    if w_S.ndim == 2:
        w_S = w_S.mean(axis=0)
    if sample_rate != target_rate:  # resample_poly's own length, ceil(S · target / rate)
        w_S = resample(w_S, sample_rate, target_rate, n_samples=-(-w_S.shape[-1] * target_rate // sample_rate))
    return w_S



def normalise_rms(x_S: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """``x_S`` (float64) scaled to an RMS of ``rms_dbfs``; zeros for a silent signal."""
    rms = float(np.sqrt(np.mean(np.square(x_S, dtype=np.float64)))) if x_S.size else 0.0
    if not rms > 0:
        return np.zeros(x_S.shape, dtype=np.float64)
    return x_S.astype(np.float64) * (10.0 ** (rms_dbfs / 20.0) / rms)



def scatter(active_S: np.ndarray, rng: np.random.Generator, *, n_samples: int, sample_rate: int,
            n_bins: int = 5, insert_probability: float = 0.8, min_segment_s: float = 0.5,
            max_segment_s: float = 3.0) -> tuple[np.ndarray, list[tuple[int, int]], list[bool]]:
    """Scatter segments of one stem over a timeline (§3.3.2.2).

    Bin ``b`` covers ``[b, b + 1) * n_samples // n_bins``. In each bin, in order, one
    draw with probability ``insert_probability`` asks for a segment; its length is
    uniform in ``[min_segment_s, max_segment_s]`` (at most the stem's length), its
    source offset uniform in the stem, its start uniform in ``[lo, bin end)`` where
    ``lo`` is the bin start or, when the previous segment reaches into the bin, that
    segment's end (no insertion when it reaches past the bin). The last segment is
    cut at ``n_samples``.

    Returns
    -------
    track_S : ndarray, shape (n_samples,), float64
    insertions : list of (start, stop)
        Sample positions of the placed segments, in order (``stop`` after cutting).
    draws : list of bool, one per bin
        Whether the bin's draw asked for a segment.
    """
    track_S = np.zeros(int(n_samples))
    insertions: list[tuple[int, int]] = []
    draws: list[bool] = []
    n_active = int(active_S.size)
    bin_edges = [b * int(n_samples) // n_bins for b in range(n_bins + 1)]
    previous_end = 0
    for b in range(n_bins):
        lo_bin, hi_bin = bin_edges[b], bin_edges[b + 1]
        wanted = bool(rng.random() < insert_probability)
        draws.append(wanted)
        if not wanted or n_active == 0:
            continue
        length = int(round(rng.uniform(min_segment_s, max_segment_s) * sample_rate))
        length = max(1, min(length, n_active))
        offset = int(rng.integers(0, n_active - length + 1))
        lo = max(lo_bin, previous_end)
        if lo >= hi_bin:
            continue
        start = int(rng.integers(lo, hi_bin))
        stop = min(start + length, int(n_samples))
        track_S[start:stop] = active_S[offset: offset + stop - start]
        insertions.append((start, stop))
        previous_end = start + length  # the uncut end: nothing more fits after n_samples anyway
    return track_S, insertions, draws
