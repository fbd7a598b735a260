"""The per-row helpers the fused CPU kernels share: ỹ for one (bin, mic) along frames, and
the W/H/G ratios from it (:mod:`studio_sep.separation.host_kernels`,
:mod:`studio_sep.separation.spatial_kernels`)."""

from __future__ import annotations

import numpy as np
from numba import njit

#: Reassociation (vectorised sums) and fused multiply-add; no approximate division or
#: infinities assumed away.
FASTMATH = {"contract", "reassoc", "nsz"}

# The kernels take a range of bins [f0, f1) and are compiled with ``parallel=True`` but
# run on one numba thread per call (``HostState._split``): numba's lowering of the prange
# loop vectorises the loops over frames where the plain serial njit of the same code does
# not (G's sums 4.2 against 6.9 ms, the log-likelihood 13.6 against 16.4 ms: float64, 1
# thread, paper configuration, 2026-12-02).


@njit(inline="always", fastmath=FASTMATH)
def model_row(lam_NFT, G_NM, f, m, y_T):
    """y_T = ỹ_f·m = Σ_n g_nm λ_nf·, one row of frames."""
    N, _, T = lam_NFT.shape
    g = G_NM[0, m]
    for t in range(T):
        y_T[t] = g * lam_NFT[0, f, t]
    for n in range(1, N):
        g = G_NM[n, m]
        for t in range(T):
            y_T[t] += g * lam_NFT[n, f, t]


@njit(inline="always", fastmath=FASTMATH)
def ratio_row(Qx_FMT, f, m, y_T, a_T):
    """y_T ← 1/ỹ, a_T ← (x̃ / ỹ) / ỹ in the storage dtype. Two loops: with reassociation
    allowed, one loop would form x̃·(1/ỹ²), and 1/ỹ² overflows float32 where λ is near
    its floor (then 0·inf = NaN); LLVM does not fuse the loops back."""
    one = np.ones(1, y_T.dtype)[0]  # a literal 1 would make the division float64
    for t in range(y_T.shape[0]):
        inv = one / y_T[t]
        y_T[t] = inv
        a_T[t] = Qx_FMT[f, m, t] * inv
    for t in range(y_T.shape[0]):
        a_T[t] *= y_T[t]


@njit(inline="always", fastmath=FASTMATH)
def source_ratios_row(Qx_FMT, lam_NFT, G_NM, f, y_T, a_T, A_NT, B_NT):
    """A_n· = Σ_m g_nm x̃_f·m / ỹ_f·m², B_n· = Σ_m g_nm / ỹ_f·m for bin f (the W and H updates'
    per-source ratios), into A_NT and B_NT (zeroed here); y_T and a_T are work rows."""
    N = lam_NFT.shape[0]
    M = G_NM.shape[1]
    T = y_T.shape[0]
    A_NT[:, :] = 0
    B_NT[:, :] = 0
    for m in range(M):
        model_row(lam_NFT, G_NM, f, m, y_T)
        ratio_row(Qx_FMT, f, m, y_T, a_T)
        for n in range(N):
            g = G_NM[n, m]
            for t in range(T):
                A_NT[n, t] += g * a_T[t]
            for t in range(T):
                B_NT[n, t] += g * y_T[t]
