"""Time differences of arrival: measured on a recording (GCC-PHAT) and implied by a geometry.

Conventions: a delay ``tau`` of ``y`` relative to ``x`` is positive when ``y`` hears a
sound later than ``x``; delays are in samples unless the name says ``_s``; positions in
metres (the package's convention, :mod:`studio_sep.dsp.geometry`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from studio_sep.dsp.geometry import SPEED_OF_SOUND_M_S

#: Frame of the averaged cross-spectrum: long enough for any studio's inter-mic delay
#: (±2048 samples), short enough to average over many frames.
GCC_FRAME = 4096
#: Interpolation of the cross-correlation: delays resolved to 1/8 sample.
GCC_UPSAMPLE = 8


def cross_correlation_phat(x_S: np.ndarray, y_S: np.ndarray, *, frame: int = GCC_FRAME,
                           upsample: int = GCC_UPSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """GCC-PHAT of ``y`` against ``x``: the phase transform of their cross-spectrum, averaged
    over half-overlapping Hann frames, back in time at ``upsample`` points per sample.

    Returns
    -------
    lags : ndarray, shape (L,)
        Lags in samples (fractional), from ``-frame/2`` to ``frame/2``.
    cc : ndarray, shape (L,)
        The correlation at those lags (1 at a single clean delay).
    """
    x = np.asarray(x_S, dtype=np.float64)
    y = np.asarray(y_S, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"cross_correlation_phat needs two signals of one length, got {x.shape} and {y.shape}")
    frame = min(frame, 1 << int(np.log2(max(len(x), 2))))
    hop = frame // 2
    window = np.hanning(frame)
    starts = range(0, max(len(x) - frame, 0) + 1, hop)
    G = np.zeros(frame // 2 + 1, dtype=np.complex128)
    for s in starts:
        X = np.fft.rfft(window * x[s:s + frame])
        Y = np.fft.rfft(window * y[s:s + frame])
        G += Y * np.conj(X)
    magnitude = np.abs(G)
    G = np.where(magnitude > 1e-12 * max(magnitude.max(), 1e-300), G / np.maximum(magnitude, 1e-300), 0.0)
    n = frame * upsample
    cc = np.fft.irfft(G, n) * upsample
    cc = np.concatenate([cc[-n // 2:], cc[:n // 2]])  # lags -frame/2 … frame/2
    lags = (np.arange(n) - n // 2) / upsample
    return lags, cc


def _peak(lags: np.ndarray, cc: np.ndarray, window: tuple[float, float] | None) -> int | None:
    """Index of the largest ``|cc|`` at lags within ``window`` (all lags for None); None if none is."""
    keep = np.flatnonzero(np.ones_like(lags, dtype=bool) if window is None else
                          (lags >= window[0]) & (lags <= window[1]))
    return int(keep[np.argmax(np.abs(cc[keep]))]) if len(keep) else None


def gcc_phat_delay(x_S: np.ndarray, y_S: np.ndarray, *, window: tuple[float, float] | None = None,
                   frame: int = GCC_FRAME, upsample: int = GCC_UPSAMPLE) -> tuple[float, float]:
    """The delay of ``y`` relative to ``x`` (samples) at the GCC-PHAT peak, and the peak's height
    (negative when ``y`` has the opposite polarity: a figure-8 mic's rear lobe).

    ``window = (low, high)`` restricts the search to lags in that range (samples): with
    several sources, each has its own peak, and the geometry says near where to look.
    """
    lags, cc = cross_correlation_phat(x_S, y_S, frame=frame, upsample=upsample)
    i = _peak(lags, cc, window)
    if i is None:
        raise ValueError(f"no lag within {window} samples (the frame covers ±{frame // 2})")
    return float(lags[i]), float(cc[i])


def gcc_phat_peaks(x_S: np.ndarray, y_S: np.ndarray, count: int, *, max_lag: float,
                   min_distance: float = 1.0) -> np.ndarray:
    """The delays (samples) of ``y`` relative to ``x`` at the ``count`` highest GCC-PHAT peaks
    within ±``max_lag``, at least ``min_distance`` samples apart, highest first: where the
    recording shows a source to a pair of mics. Fewer peaks than ``count``: the highest
    is repeated."""
    from scipy.signal import find_peaks

    lags, cc = cross_correlation_phat(x_S, y_S)
    keep = np.flatnonzero(np.abs(lags) <= max_lag)
    lags, cc = lags[keep], cc[keep]
    peaks, _ = find_peaks(np.concatenate([[-np.inf], cc, [-np.inf]]), distance=max(int(min_distance * GCC_UPSAMPLE), 1))
    peaks = peaks - 1
    top = peaks[np.argsort(cc[peaks], kind="stable")[::-1]][:count]
    return lags[np.resize(top, count)] if len(top) else np.zeros(count)


def arrival_times_s(mic_positions_m, source_positions_m, *,
                    speed_of_sound_m_s: float = SPEED_OF_SOUND_M_S) -> np.ndarray:
    """Direct-path travel time from every source to every mic, ``(M, N)`` seconds."""
    mics = np.asarray(mic_positions_m, dtype=float)
    sources = np.asarray(source_positions_m, dtype=float)
    return np.linalg.norm(mics[:, None, :] - sources[None, :, :], axis=-1) / speed_of_sound_m_s


def _low_median(values: np.ndarray) -> float:
    """The lower middle value (NaN for none)."""
    return float(np.sort(values)[(len(values) - 1) // 2]) if len(values) else float("nan")


@dataclass(frozen=True)
class DelayCheck:
    """Measured against implied delays of every source, from its reference mic to every mic.

    ``implied_s[m, n]`` and ``measured_s[m, n]``: delay at mic m relative to source n's
    reference mic ``reference[n]`` (NaN at the reference mic itself). ``range_error_m``:
    ``c · (measured − implied)`` with, for each source, the median over mics taken out (so
    that an error of the reference mic itself, common to the source's every pair, does not
    count against the others). ``mic_error_m[m]``: the low median over sources of the
    absolute range error at mic m (of two values, the smaller: one source's weak peak, lost
    in another's, does not decide alone), a lower bound on how far the mic is from where the
    manifest says; NaN where no source could be measured.
    ``peak[m, n]``: the GCC-PHAT peak height (a weak one is a less certain measurement).
    """

    reference: tuple[int, ...]
    implied_s: np.ndarray
    measured_s: np.ndarray
    peak: np.ndarray
    range_error_m: np.ndarray
    mic_error_m: np.ndarray


def check_delays(x_MS: np.ndarray, sample_rate: int, mic_positions_m, source_positions_m, reference: list[int], *,
                 usable: np.ndarray | None = None, search_m: float = 0.5,
                 speed_of_sound_m_s: float = SPEED_OF_SOUND_M_S) -> DelayCheck:
    """Compare the delays a recording shows with those its geometry implies.

    For every source n, the delay of each mic against the source's reference mic (its spot
    mic, or the mic nearest to it: where it dominates) is measured by GCC-PHAT within
    ``± search_m / c`` of the implied delay, so each source's own peak is found. A peak that
    lies nearer to another source's implied delay on the same pair of mics than to source
    n's is not source n's: that measurement is left out (NaN), not misattributed. So is every
    pair whose ``usable[m, n]`` is False (a mic that does not hear the source's direct sound:
    the null of its pattern).
    """
    x = np.asarray(x_MS, dtype=np.float64)
    M, N = x.shape[0], len(reference)
    tau = arrival_times_s(mic_positions_m, source_positions_m, speed_of_sound_m_s=speed_of_sound_m_s)
    implied = np.full((M, N), np.nan)
    measured = np.full((M, N), np.nan)
    peak = np.full((M, N), np.nan)
    half = search_m / speed_of_sound_m_s * sample_rate
    correlations: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for n, r in enumerate(reference):
        for m in range(M):
            if m == r:
                continue
            implied[m, n] = tau[m, n] - tau[r, n]
            if usable is not None and not (usable[m, n] and usable[r, n]):
                continue
            if (r, m) not in correlations:
                correlations[r, m] = cross_correlation_phat(x[r], x[m])
            lags, cc = correlations[r, m]
            centre = implied[m, n] * sample_rate
            i = _peak(lags, cc, (centre - half, centre + half))
            if i is None:
                continue
            others = (tau[m] - tau[r]) * sample_rate  # every source's implied delay on this pair
            if not np.isclose(others[np.argmin(np.abs(others - lags[i]))], centre):
                continue  # the peak lies nearer another source's delay: it is that source's
            measured[m, n], peak[m, n] = lags[i] / sample_rate, cc[i]
    error = speed_of_sound_m_s * (measured - implied)
    with warnings.catch_warnings():  # a source measured at no mic (a silent mic): its column stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        if M > 2:
            error = error - np.nanmedian(error, axis=0, keepdims=True)
    mic_error = np.array([_low_median(np.abs(row[np.isfinite(row)])) for row in error])
    return DelayCheck(reference=tuple(reference), implied_s=implied, measured_s=measured, peak=peak,
                      range_error_m=error, mic_error_m=mic_error)
