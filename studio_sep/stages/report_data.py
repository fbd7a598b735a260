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


def leakage_db(stem_S: np.ndarray, others_KS: np.ndarray) -> float | None:
    """Reference-free leakage estimate of one stem, in dB: the share of its energy that the
    other sources' images at the same mic explain (least-squares projection of the stem
    on them), ``10·log10(‖P s‖² / ‖s‖²)``. −20 dB: a hundredth of the stem's energy
    follows the other sources. An estimate, not a BSS Eval metric: it does not see bleed
    that the separation put in no other image. None for a silent stem or no other source.
    """
    s = np.asarray(stem_S, dtype=np.float64)
    others = np.atleast_2d(np.asarray(others_KS, dtype=np.float64))
    energy = float(np.dot(s, s))
    if energy <= 0 or others.shape[0] == 0:
        return None
    coef, *_ = np.linalg.lstsq(others.T, s, rcond=None)
    explained = float(np.sum((others.T @ coef) ** 2))
    return round(10 * math.log10(max(explained / energy, 1e-12)), 3)


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


def spectrogram_db(x_S: np.ndarray, sample_rate: int, *, max_frames: int = 800) -> tuple[np.ndarray, np.ndarray,
                                                                                         np.ndarray]:
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
    return S_db, np.fft.rfftfreq(n_fft, 1 / sample_rate), (np.arange(n_frames) * hop + n_fft / 2) / sample_rate
