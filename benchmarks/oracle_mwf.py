"""Oracle multichannel Wiener filter from the true source images (benchmark-only).

An upper reference for a Gaussian full-rank spatial model (Duong, Vincent, Gribonval
2010): every source n has, in every frequency bin f, a full-rank spatial covariance
``R_nf`` (M × M) and, in every time-frequency bin, a power ``v_nft``; both are taken
from the true image STFTs ``c_nft`` (M,) instead of being estimated:

- ``v_nft = |c_nft|² / M`` (mean power over mics),
- ``R_nf = Σ_t c_nft c_nftᴴ / Σ_t v_nft`` (power-weighted, so trace R_nf = M; the
  un-weighted ``(1/T) Σ_t c cᴴ / v`` blows up on near-silent frames),

and the estimate is ``ŝ_nft = v_nft R_nf (Σ_n' v_n'ft R_n'f)^{-1} x_ft``. The estimates
sum to the mixture (up to the diagonal loading). No iteration, so no time per iteration.

Pure array code: arrays in, arrays out. Axis letters as in studio-sep: F frequency,
T frames, M mics, N sources.
"""

from __future__ import annotations

import numpy as np

#: Diagonal loading of the mixture covariance, relative to its mean trace per mic.
LOADING = 1e-10


def oracle_wiener(X_FTM: np.ndarray, C_NFTM: np.ndarray, *, loading: float = LOADING) -> np.ndarray:
    """Oracle full-rank multichannel Wiener estimates of every source image.

    Parameters
    ----------
    X_FTM : ndarray, shape (F, T, M), complex
        Mixture STFT.
    C_NFTM : ndarray, shape (N, F, T, M), complex
        STFTs of the true source images at every mic (same STFT as ``X_FTM``).
    loading : float
        Diagonal loading of each ``Σ_ft``, relative to the mean power per mic of the
        mixture in bin f (floored at the smallest normal float, for all-zero bins).

    Returns
    -------
    S_NFTM : ndarray, shape (N, F, T, M), complex
        Estimated images; one frequency bin at a time, so memory stays at a few
        ``(N, T, M, M)`` arrays beyond input and output.
    """
    X = np.asarray(X_FTM)
    C = np.asarray(C_NFTM)
    N, F, T, M = C.shape
    if X.shape != (F, T, M):
        raise ValueError(f"oracle_wiener: X_FTM {X.shape} does not match C_NFTM {C.shape}")
    eye = np.eye(M)
    out = np.empty_like(C)
    for f in range(F):
        c_NTM = C[:, f]
        v_NT = (c_NTM.real**2 + c_NTM.imag**2).mean(axis=2)
        scm_NMM = np.einsum("ntm,ntk->nmk", c_NTM, c_NTM.conj())
        R_NMM = scm_NMM / np.maximum(v_NT.sum(axis=1), 1e-300)[:, None, None]
        cov_NTMM = v_NT[:, :, None, None] * R_NMM[:, None]
        Sigma_TMM = cov_NTMM.sum(axis=0)
        power = (X[f].real**2 + X[f].imag**2).mean()
        Sigma_TMM = Sigma_TMM + loading * max(power, np.finfo(np.float64).tiny) * eye
        z_TM = np.linalg.solve(Sigma_TMM, X[f][:, :, None])  # (T, M, 1)
        out[:, f] = np.matmul(cov_NTMM, z_TM[None])[..., 0]
    return out
