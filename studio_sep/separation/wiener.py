"""The fitted model's output: every source's image at every mic by multichannel Wiener filtering."""

from __future__ import annotations

from studio_sep.dsp.backend import get_xp
from studio_sep.separation.params import Params


def source_images(X_FTM, params: Params):
    """Multichannel Wiener estimates of every source's image at every mic, one by one.

    ``ŝ_n,ft = Q_f^{-1} diag(λ_nft g_n / ỹ_ft) Q_f x_ft``. Summed over n the masks are
    1, so the images sum to ``X_FTM`` exactly (up to rounding): FastMNMF2 has no
    residual. ``Q_f x_ft``, ``Q_f^{-1}``, λ and ỹ are computed once for all sources;
    the images are yielded one at a time so only one is held.

    Yields
    ------
    S_FTM : array, shape (F, T, M), complex, same backend as ``X_FTM``, for n = 0 … N−1
    """
    xp = get_xp(X_FTM)
    F, T, M = X_FTM.shape
    Q, G, W, H = params.Q_FMM, params.G_NM, params.W_NFK, params.H_NKT
    lam = xp.matmul(W, H)  # (N, F, T)
    N = G.shape[0]
    inv_Y = 1.0 / xp.matmul(lam.reshape(N, -1).T, G).reshape(F, T, M)
    Qx = xp.matmul(X_FTM, Q.transpose(0, 2, 1))
    Q_inv_T = xp.linalg.inv(Q).transpose(0, 2, 1)
    for n in range(N):
        mask = lam[n][:, :, None] * G[n][None, None, :] * inv_Y  # real: broadcasts onto Qx
        yield xp.matmul(Qx * mask, Q_inv_T)


def source_image(X_FTM, params: Params, n: int):
    """Source ``n``'s image at every mic (see :func:`source_images`)."""
    for k, image in enumerate(source_images(X_FTM, params)):
        if k == n:
            return image
    raise IndexError(f"source {n} of {params.G_NM.shape[0]}")
