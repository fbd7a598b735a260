"""Spectral initialisations of FastMNMF2: dictionaries from solo takes, activations by NNLS.

Host (numpy) code: these run once before the fit, on small arrays, and their results
are moved to the fit's backend with the other initial values.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from .errors import InputError


def nmf(
    power_FT: np.ndarray, *, n_basis: int, n_iter: int = 200, rng: np.random.Generator, eps: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    """NMF of a power spectrogram (KL divergence, multiplicative updates).

    Parameters
    ----------
    power_FT : ndarray, shape (F, T), non-negative
        A power spectrogram (``|STFT|²``).
    n_basis : int
        K, number of bases.
    n_iter : int
        Multiplicative-update iterations.
    rng : numpy.random.Generator
        Initial values.

    Returns
    -------
    W_FK : ndarray, shape (F, K)
        Bases, each column summing to 1, ordered by decreasing total activation.
    H_KT : ndarray, shape (K, T)
        Activations, in the scale of ``power_FT``.
    """
    V = np.asarray(power_FT, dtype=np.float64)
    if V.ndim != 2 or np.any(V < 0) or not np.all(np.isfinite(V)):
        raise InputError(None, "spectrogram", "NMF data must be a finite non-negative (F, T) array")
    F, T = V.shape
    if T < n_basis:
        raise InputError(None, "reference", f"{T} frames for {n_basis} bases",
                         "use a longer recording or fewer bases")
    scale = max(V.mean(), eps)
    V = V / scale + eps
    W = rng.uniform(0.5, 1.5, size=(F, n_basis))
    H = rng.uniform(0.5, 1.5, size=(n_basis, T))
    for _ in range(n_iter):
        WH = W @ H + eps
        H *= (W.T @ (V / WH)) / (W.sum(axis=0)[:, None] + eps)
        WH = W @ H + eps
        W *= ((V / WH) @ H.T) / (H.sum(axis=1)[None, :] + eps)
        norm = W.sum(axis=0)
        W /= norm
        H *= norm[:, None]
    order = np.argsort(-H.sum(axis=1))
    return W[:, order], H[order] * scale


def learn_dictionary(
    power_FT: np.ndarray, *, n_basis: int, n_iter: int = 200, rng: np.random.Generator,
) -> np.ndarray:
    """NMF bases ``W_FK`` of a solo take's power spectrogram (see :func:`nmf`)."""
    return nmf(power_FT, n_basis=n_basis, n_iter=n_iter, rng=rng)[0]


def nnls_activations(V_FT: np.ndarray, W_FK: np.ndarray) -> np.ndarray:
    """Activations of a spectral estimate on a fixed dictionary (paper eq. 11).

    ``h_t = argmin_{h ≥ 0} ||v_t − W h||²`` for every frame t.

    Returns
    -------
    H_KT : ndarray, shape (K, T)
    """
    V = np.asarray(V_FT, dtype=np.float64)
    W = np.asarray(W_FK, dtype=np.float64)
    if V.shape[0] != W.shape[0]:
        raise ValueError(f"nnls_activations: {V.shape[0]} bins in V, {W.shape[0]} in W")
    H = np.empty((W.shape[1], V.shape[1]))
    for t in range(V.shape[1]):
        H[:, t], _ = nnls(W, V[:, t])
    return H
