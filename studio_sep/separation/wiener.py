"""The fitted model's output: every source's image at every mic by multichannel Wiener
filtering (:func:`source_images`), or, for several fits of one mixture, the mean of
their images (:func:`ensemble_images`)."""

from __future__ import annotations

from collections.abc import Sequence

from studio_sep.dsp.backend import get_xp
from studio_sep.separation.params import Params


def _filters(X_FTM, params: Params):
    """``Q_f x_ft``, ``Q_f^{-T}``, and source n's real mask on ``Q_f x_ft`` as a function."""
    xp = get_xp(X_FTM)
    F, T, M = X_FTM.shape
    Q, G, W, H = params.Q_FMM, params.G_NM, params.W_NFK, params.H_NKT
    lam = xp.matmul(W, H)  # (N, F, T)
    N = G.shape[0]
    inv_Y = 1.0 / xp.matmul(lam.reshape(N, -1).T, G).reshape(F, T, M)
    Qx = xp.matmul(X_FTM, Q.transpose(0, 2, 1))
    Q_inv_T = xp.linalg.inv(Q).transpose(0, 2, 1)
    return Qx, Q_inv_T, lambda n: lam[n][:, :, None] * G[n][None, None, :] * inv_Y


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
    Qx, Q_inv_T, mask = _filters(X_FTM, params)
    for n in range(params.G_NM.shape[0]):
        yield get_xp(X_FTM).matmul(Qx * mask(n), Q_inv_T)


def source_image(X_FTM, params: Params, n: int):
    """Source ``n``'s image at every mic (see :func:`source_images`)."""
    for k, image in enumerate(source_images(X_FTM, params)):
        if k == n:
            return image
    raise IndexError(f"source {n} of {params.G_NM.shape[0]}")


def ensemble_images(X_FTM, members: Sequence[Params]):
    """Every source's image at every mic from several fits of one mixture (``members``,
    their outputs in the same order): the mean of the members' Wiener images, one source
    at a time.

    Each member's images sum to ``X_FTM``, so their mean does too. (The mean of the
    members' per-mic power shares, a mask on each mic, won on two-mic zoo scenes but lost
    3.4 dB on the rendered trio, where the multichannel filters do the work:
    benchmarks/README.md, "Ensemble".)

    Memory: one (F, T, M) complex accumulator over the single-fit case; every member's
    filters are remade for every source (N·K times the Wiener set-up).

    Yields
    ------
    S_FTM : array, shape (F, T, M), complex, same backend as ``X_FTM``, for n = 0 … N−1
    """
    xp = get_xp(X_FTM)
    for n in range(members[0].G_NM.shape[0]):
        total = xp.zeros_like(X_FTM)
        for params in members:
            Qx, Q_inv_T, mask = _filters(X_FTM, params)
            total += xp.matmul(Qx * mask(n), Q_inv_T)
            del Qx, Q_inv_T, mask
        total /= len(members)
        yield total
        del total
