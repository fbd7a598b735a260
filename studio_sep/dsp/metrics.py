"""Separation metrics against ground truth: SDR, SIR, SAR (BSS Eval v4 style, with a
distortion filter) and SI-SDR, computed by fast-bss-eval (its correlation statistics
blockwise here, :func:`lag_correlations`).

Pure array code: references and estimates in, numbers out. Sources are matched by
name (the separation names its outputs), so no permutation is searched here.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("sdr", "sir", "sar", "si_sdr")

#: Highest ratio reported as a number, in dB. Above it the ratio's error term is at the
#: rounding floor of the computation (float64 correlations and Toeplitz solves; float32
#: or 24-bit files), not in the signals: the unprocessed mixture's SAR, whose artefact term
#: is zero because a mic is exactly the sum of the sources' images, comes out anywhere
#: from +142 dB to +inf depending on the signals and on how the files were rounded
#: (measured on noise, tones, low-passed and sparse signals). Such a ratio is returned as
#: +inf ("no measurable error"), written as null in JSON and "—" in tables.
NUMERICAL_CEILING_DB = 100.0


def bss_metrics(ref_NS: np.ndarray, est_NS: np.ndarray, *, filter_length: int = 512) -> dict[str, np.ndarray]:
    """SDR, SIR, SAR and SI-SDR of each estimate against its own reference.

    Parameters
    ----------
    ref_NS, est_NS : ndarray, shape (N, S)
        True and estimated signals of N sources at one mic, in the same order.
    filter_length : int
        Length of the distortion filter allowed by SDR/SIR/SAR (BSS Eval uses 512).

    Returns
    -------
    dict mapping each of ``METRICS`` to an array of shape (N,), in dB; a ratio above
    :data:`NUMERICAL_CEILING_DB` (an error term at the rounding floor, e.g. the SAR of
    an unprocessed mixture that is exactly the sum of the references) is +inf.
    """
    # fast-bss-eval's top-level SI-SDR needs torch; its numpy submodule does not.
    from fast_bss_eval.numpy import si_bss_eval_sources
    from fast_bss_eval.numpy.metrics import _base_metrics_bss_eval

    ref = np.asarray(ref_NS, dtype=np.float64)
    est = np.asarray(est_NS, dtype=np.float64)
    if ref.shape != est.shape or ref.ndim != 2:
        raise ValueError(f"bss_metrics: shapes differ or are not (N, S): {ref.shape} vs {est.shape}")
    with np.errstate(divide="ignore"):  # a perfect or artefact-free estimate gives +inf dB
        neg_sdr, neg_sir, neg_sar = _base_metrics_bss_eval(*_square_cosines(ref, est, filter_length))
        si_sdr = si_bss_eval_sources(ref, est, compute_permutation=False)[0]
    metrics = {"sdr": -neg_sdr, "sir": -neg_sir, "sar": -neg_sar, "si_sdr": si_sdr}
    return {k: np.where(np.asarray(v, dtype=np.float64) > NUMERICAL_CEILING_DB, np.inf, v)
            for k, v in metrics.items()}


def _square_cosines(ref_NS: np.ndarray, est_NS: np.ndarray, filter_length: int) -> tuple[np.ndarray, np.ndarray]:
    """fast-bss-eval 0.1.4's ``square_cosine_metrics`` (non-pairwise, direct solves), whose
    cost is its correlation statistics: FFTs of twice the signal's length for only
    ``filter_length`` lags. Here the lags come from :func:`lag_correlations` (blocks of
    8192 points, ≈ 9× faster on 2^20 samples); the rest is its code, so the metrics are
    its own to rounding (tested against ``fast_bss_eval.numpy.bss_eval_sources``)."""
    from fast_bss_eval.numpy.helpers import _normalize
    from fast_bss_eval.numpy.linalg import block_toeplitz, toeplitz

    if filter_length == 1:
        from fast_bss_eval.numpy.metrics import square_cosine_metrics

        return square_cosine_metrics(ref_NS, est_NS, filter_length=1, pairwise=False)
    est, ref, L = _normalize(est_NS, axis=-1), _normalize(ref_NS, axis=-1), filter_length
    R_LNN = lag_correlations(ref, ref, L + 1)
    # the references' correlations at lags 0..L-1 and -L..-1, [lag, c, d] = Σ_n ref_c[n + lag] ref_d[n]
    acf = np.concatenate([R_LNN[:L].transpose(0, 2, 1), R_LNN[L:0:-1]], axis=0)
    xcorr = lag_correlations(ref, est, L)  # [lag, c, d] = Σ_n ref_c[n] est_d[n + lag]
    diag = list(range(ref.shape[-2]))
    acf_sdr = acf[..., diag, diag].swapaxes(-2, -1)[..., :L]
    xcorr_sdr = xcorr[..., :, diag, diag].swapaxes(-2, -1)
    coh_sdr = np.einsum("...l,...l->...", xcorr_sdr, np.linalg.solve(toeplitz(acf_sdr), xcorr_sdr))
    xcorr = xcorr.reshape(xcorr.shape[:-3] + (-1,) + xcorr.shape[-1:])
    coh_sar = np.einsum("...lc,...lc->...c", xcorr, np.linalg.solve(block_toeplitz(acf), xcorr))
    return coh_sdr, coh_sar


def lag_correlations(a_IS: np.ndarray, b_JS: np.ndarray, n_lags: int) -> np.ndarray:
    """``R[l, i, j] = Σ_m a_i[m] · b_j[m + l]`` for lags ``l = 0 … n_lags - 1`` (zero
    outside the signals), from FFTs of 8192-point blocks (or 2·n_lags) summed in the
    frequency domain: one small inverse FFT instead of one of twice the signal's length.

    Parameters
    ----------
    a_IS, b_JS : ndarray, shape (I, S) and (J, S)
    n_lags : int

    Returns
    -------
    R_LIJ : ndarray, shape (n_lags, I, J)
    """
    from scipy import fft

    S = a_IS.shape[-1]
    F = max(8192, 2 ** math.ceil(math.log2(2 * n_lags)))
    hop = F - n_lags  # a block of a holds `hop` samples; its partner in b, hop + n_lags - 1 < F
    K = -(-S // hop)
    a = np.zeros((a_IS.shape[0], K * hop))
    a[:, :S] = a_IS
    b = np.zeros((b_JS.shape[0], K * hop + F))
    b[:, :S] = b_JS
    a_blocks = fft.rfft(a.reshape(a.shape[0], K, hop), n=F, axis=-1)
    b_blocks = fft.rfft(b[:, np.arange(K)[:, None] * hop + np.arange(hop + n_lags - 1)], n=F, axis=-1)
    return fft.irfft(np.einsum("ikf,jkf->fij", a_blocks.conj(), b_blocks), n=F, axis=0)[:n_lags]


def bss_sdr(ref_NS: np.ndarray, est_NS: np.ndarray, *, filter_length: int = 512) -> np.ndarray:
    """SDR alone (BSS Eval v4: the estimate projected on its own reference through a
    ``filter_length``-tap filter), in dB, shape (N,): :func:`bss_metrics`'s ``"sdr"`` without
    the joint projection on every source that SIR and SAR need (a Toeplitz solve of
    ``filter_length`` per source, not one of ``N·filter_length``). For framewise scores.
    A silent reference or estimate gives NaN."""
    from scipy.linalg import solve_toeplitz

    ref = np.asarray(ref_NS, dtype=np.float64)
    est = np.asarray(est_NS, dtype=np.float64)
    if ref.shape != est.shape or ref.ndim != 2:
        raise ValueError(f"bss_sdr: shapes differ or are not (N, S): {ref.shape} vs {est.shape}")
    out = np.full(ref.shape[0], np.nan)
    for n in range(ref.shape[0]):
        r_norm, e_norm = np.linalg.norm(ref[n]), np.linalg.norm(est[n])
        if r_norm == 0 or e_norm == 0:
            continue
        r, e = ref[n:n + 1] / r_norm, est[n:n + 1] / e_norm
        acf = lag_correlations(r, r, filter_length)[:, 0, 0]
        xcorr = lag_correlations(r, e, filter_length)[:, 0, 0]
        coh = float(np.clip(xcorr @ solve_toeplitz(acf, xcorr), 0.0, 1.0))
        with np.errstate(divide="ignore"):
            out[n] = 10 * np.log10(coh / (1 - coh)) if coh < 1 else np.inf
    return out


def si_sdr(ref_S: np.ndarray, est_S: np.ndarray) -> float:
    """Scale-invariant SDR of one estimate, in dB (a direct formula, no filter)."""
    ref = np.asarray(ref_S, dtype=np.float64)
    est = np.asarray(est_S, dtype=np.float64)
    alpha = np.dot(est, ref) / np.dot(ref, ref)
    target = alpha * ref
    return float(10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2)))
