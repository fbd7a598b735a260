"""The numbers of the HTML session report (:mod:`studio_sep.stages.report_html`): loudness of
each player's signal and the volumes that match them, a reference-free leakage estimate,
framewise SDR over 1 s windows (as museval), and a spectrogram for display.

Pure array code: signals in, numbers out.
"""

from __future__ import annotations

import math

import numpy as np

#: Framewise metrics: window and hop of SiSEC 2018 / museval (1 s, no overlap).
FRAME_S = 1.0


def loudness_lufs(x_S: np.ndarray, sample_rate: int) -> float | None:
    """Integrated loudness (ITU-R BS.1770, pyloudnorm) of a mono signal, in LUFS; None when
    the signal is shorter than one 400 ms block or silent below the absolute gate."""
    import pyloudnorm

    x = np.asarray(x_S, dtype=np.float64)
    if x.shape[-1] < int(0.4 * sample_rate) + 1:
        return None
    with np.errstate(divide="ignore"):
        value = pyloudnorm.Meter(sample_rate).integrated_loudness(x)
    return round(float(value), 3) if math.isfinite(value) and value > -70.0 else None


def matched_volumes(levels_lufs: dict[str, float | None]) -> dict[str, float]:
    """Player volumes (0..1, an ``<audio>`` element's ``volume``) that bring every signal to
    the loudness of the quietest one: ``10 ** ((min − L) / 20)``. A signal without a
    measured loudness (silent, too short) plays at full volume."""
    finite = [v for v in levels_lufs.values() if v is not None]
    target = min(finite) if finite else 0.0
    return {key: 1.0 if level is None else round(10 ** ((target - level) / 20), 6)
            for key, level in levels_lufs.items()}


#: Longest delay (s) between another source's stem and its bleed into a stem that the leakage
#: estimate's filter spans: 20 ms, 6.9 m of path difference between two stem mics.
LEAKAGE_SPAN_S = 0.02

#: Lowest leakage estimate reported (a share of 1e-4: −40 dB).
LEAKAGE_FLOOR = 1e-4

#: Most unknowns of the leakage estimate's least-squares problem (filter taps × other stems).
_LEAKAGE_MAX_TAPS = 4096


def leakage_db(stem_S: np.ndarray, others_KS: np.ndarray, sample_rate: int) -> float | None:
    """Reference-free leakage estimate of one stem, in dB: the share of its energy that a
    causal filter (:data:`LEAKAGE_SPAN_S` long) of the other sources' stems explains,
    ``10·log10(‖Σ_k h_k ∗ s_k‖² / ‖s‖²)`` with the filters ``h_k`` fitted by least squares.

    Each other stem is taken at its own stem mic, where that source is loudest and arrives
    first: its bleed into this stem is a delayed, filtered copy of it (a causal filter
    reaches it), while this source's own bleed into the other stem arrives there later
    (a causal filter cannot use it to explain this stem). −20 dB: a hundredth of the
    stem's energy follows the other sources. An estimate, not a BSS Eval metric: the other
    stems stand in for the true sources, and two stems at one mic see each other's errors.
    The share that the filter's taps would explain of an unrelated signal is taken off
    (adjusted R²); the result is at least −40 dB (:data:`LEAKAGE_FLOOR`). None for a silent
    stem or no other stem.
    """
    from scipy.linalg import solve

    from studio_sep.dsp.metrics import lag_correlations

    s = np.asarray(stem_S, dtype=np.float64)
    others = np.atleast_2d(np.asarray(others_KS, dtype=np.float64))
    K = others.shape[0]
    s_norm, o_norm = np.linalg.norm(s), np.linalg.norm(others, axis=-1)
    if s_norm == 0 or K == 0 or not np.any(o_norm > 0):
        return None
    others = others[o_norm > 0] / o_norm[o_norm > 0, None]
    K = others.shape[0]
    L = max(1, min(int(LEAKAGE_SPAN_S * sample_rate), _LEAKAGE_MAX_TAPS // K))
    R_LKK = lag_correlations(others, others, L)  # [l, i, j] = Σ_m o_i[m] o_j[m + l]
    c_LK = lag_correlations(others, s[None, :] / s_norm, L)[:, :, 0]  # [a, i] = Σ_m o_i[m] s[m + a]
    a, b = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    lag = np.abs(a - b)
    # A[(i, a), (j, b)] = Σ_m o_i[m - a] o_j[m - b]: R[a - b, i, j] when a ≥ b, else R[b - a, j, i]
    A = np.where((a >= b)[:, :, None, None], R_LKK[lag], R_LKK[lag].transpose(0, 1, 3, 2))  # (a, b, i, j)
    A = A.transpose(2, 0, 3, 1).reshape(K * L, K * L)
    c = c_LK.T.reshape(K * L)
    h = solve(A + 1e-9 * np.eye(K * L), c, assume_a="pos")
    # K·L free taps explain K·L/S of any signal by chance (of an independent white one,
    # exactly on average): that share is taken off (adjusted R²), the rest floored at −40 dB
    explained = float(c @ h) - K * L / s.shape[-1]
    return round(10 * math.log10(min(max(explained, LEAKAGE_FLOOR), 1.0)), 3)


def framewise_sdr(ref_NS: np.ndarray, est_NS: np.ndarray, sample_rate: int, *, frame_s: float = FRAME_S,
                  filter_length: int = 512) -> np.ndarray:
    """SDR of every source in consecutive windows of ``frame_s`` (hop = window, full windows
    only, as museval), BSS Eval v4 with a ``filter_length`` distortion filter; ``(N, W)``
    in dB. A window where any reference or estimate is silent is NaN (museval's rule)."""
    from studio_sep.dsp.metrics import bss_sdr

    win = int(round(frame_s * sample_rate))
    n_windows = ref_NS.shape[-1] // win
    out = np.full((ref_NS.shape[0], n_windows), np.nan)
    for w in range(n_windows):
        ref, est = ref_NS[:, w * win:(w + 1) * win], est_NS[:, w * win:(w + 1) * win]
        if not (np.all(np.any(ref != 0, axis=-1)) and np.all(np.any(est != 0, axis=-1))):
            continue
        sdr = bss_sdr(ref, est, filter_length=min(filter_length, win // 4))
        out[:, w] = np.where(np.isfinite(sdr), sdr, np.nan)
    return out


def spectrogram_db(x_S: np.ndarray, sample_rate: int, *,
                   max_frames: int = 800) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A display spectrogram: power in dB (re full scale) of Hann frames of ~43 ms, at most
    ``max_frames`` frames (the hop grows with the signal's length); returns ``(S_db_FT,
    freqs_hz, times_s)``."""
    n_fft = 2 ** int(round(math.log2(max(256, 0.043 * sample_rate))))
    x = np.asarray(x_S, dtype=np.float64)
    hop = max(n_fft // 4, -(-max(len(x) - n_fft, 1) // max_frames))
    n_frames = max(1, 1 + (len(x) - n_fft) // hop) if len(x) >= n_fft else 1
    x = np.pad(x, (0, max(0, n_fft - len(x))))
    frames = np.lib.stride_tricks.as_strided(x, (n_frames, n_fft), (x.strides[0] * hop, x.strides[0]))
    window = np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2 / np.sum(window) ** 2 * 4
    S_db = 10 * np.log10(np.maximum(power.T, 1e-12))
    times_s = (np.arange(n_frames) * hop + n_fft / 2) / sample_rate
    return S_db, np.fft.rfftfreq(n_fft, 1 / sample_rate), times_s
