"""Spectral initialisations of FastMNMF2: dictionaries from solo takes, activations by NNLS.

Host (numpy) code: these run once before the fit, on small arrays, and their results
are moved to the fit's backend with the other initial values.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from studio_sep.util.errors import InputError


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


def supervised_nmf(
    mag_FT: np.ndarray, dictionaries: list[np.ndarray], *, n_iter: int = 100, eps: float = 1e-12,
) -> list[np.ndarray]:
    """Each source's Wiener share of a magnitude spectrogram, from fixed dictionaries.

    The activations of ``W = [W_1 … W_N]`` are fitted to ``mag_FT`` by KL-NMF
    multiplicative updates with W fixed; source n's share is
    ``W_n H_n / (W H)``, so the shares sum to 1 in every bin.

    Parameters
    ----------
    mag_FT : ndarray, shape (F, T), non-negative
    dictionaries : list of ndarray, shapes (F, K_n)
        One dictionary per source (e.g. from :func:`learn_dictionary`).

    Returns
    -------
    list of ndarray, shape (F, T)
        Masks in [0, 1], one per source, summing to 1.
    """
    V = np.asarray(mag_FT, dtype=np.float64)
    if V.ndim != 2 or np.any(V < 0) or not np.all(np.isfinite(V)):
        raise InputError(None, "spectrogram", "NMF data must be a finite non-negative (F, T) array")
    if any(W.shape[0] != V.shape[0] for W in dictionaries):
        raise ValueError("supervised_nmf: every dictionary needs as many rows as the spectrogram has bins")
    scale = max(V.mean(), eps)
    V = V / scale + eps
    W = np.concatenate(dictionaries, axis=1)
    H = np.full((W.shape[1], V.shape[1]), V.mean() / max(W.sum(axis=0).mean(), eps))
    norm = W.sum(axis=0)[:, None] + eps
    for _ in range(n_iter):
        H *= (W.T @ (V / (W @ H + eps))) / norm
    bounds = np.cumsum([0] + [W_n.shape[1] for W_n in dictionaries])
    parts = [W[:, a:b] @ H[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    total = sum(parts) + eps
    return [p / total for p in parts]
