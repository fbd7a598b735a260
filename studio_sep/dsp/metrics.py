"""Separation metrics against ground truth: SDR, SIR, SAR (BSS Eval v4 style, with a
distortion filter) and SI-SDR, computed by fast-bss-eval.

Pure array code: references and estimates in, numbers out. Sources are matched by
name (the separation names its outputs), so no permutation is searched here.
"""

from __future__ import annotations

import numpy as np

METRICS = ("sdr", "sir", "sar", "si_sdr")


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
    dict mapping each of ``METRICS`` to an array of shape (N,), in dB.
    """
    # fast-bss-eval's top-level SI-SDR needs torch; its numpy submodule does not.
    from fast_bss_eval.numpy import bss_eval_sources, si_bss_eval_sources

    ref = np.asarray(ref_NS, dtype=np.float64)
    est = np.asarray(est_NS, dtype=np.float64)
    if ref.shape != est.shape or ref.ndim != 2:
        raise ValueError(f"bss_metrics: shapes differ or are not (N, S): {ref.shape} vs {est.shape}")
    with np.errstate(divide="ignore"):  # a perfect or artefact-free estimate gives +inf dB
        sdr, sir, sar = bss_eval_sources(ref, est, filter_length=filter_length, compute_permutation=False)[:3]
        si_sdr = si_bss_eval_sources(ref, est, compute_permutation=False)[0]
    return {"sdr": sdr, "sir": sir, "sar": sar, "si_sdr": si_sdr}


def si_sdr(ref_S: np.ndarray, est_S: np.ndarray) -> float:
    """Scale-invariant SDR of one estimate, in dB (a direct formula, no filter)."""
    ref = np.asarray(ref_S, dtype=np.float64)
    est = np.asarray(est_S, dtype=np.float64)
    alpha = np.dot(est, ref) / np.dot(ref, ref)
    target = alpha * ref
    return float(10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2)))
