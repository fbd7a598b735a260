"""FastMNMF2's elementwise passes fused into numba kernels, for numpy arrays on the CPU.

:class:`HostState` is :class:`studio_sep.separation.state.State` with the passes
over F·T·M arrays (ỹ, x̃/ỹ², 1/ỹ, log ỹ and their sums over mics or frames) done per
frequency bin in one kernel each: ỹ, 1/ỹ and the ratios never leave the cache, each
update reads x̃ and λ once, and the bins are shared among threads. The matrix products
(λ = W H, the W and H contractions, x̃ and the weighted covariances from the cached
x·xᴴ pairs) stay in BLAS. ``fit`` uses it for numpy input; cupy (and any other array
module) runs the plain array code of ``State``, which is also the reference the tests
hold this one to.

Axes as in :mod:`studio_sep.separation.fastmnmf2`, with x̃ stored (F, M, T) here (frames
last: the kernels run along them) and the pairs (F, 2P, T). Sums over frames or bins
accumulate in float64 whatever the storage dtype.

Threads: the kernels use numba's threads, capped at the BLAS pool's size (so a process
limited to one BLAS thread, as the benchmarks and the batch workers are, runs the
kernels on one thread too); kernels and BLAS calls never run at the same time.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba import njit, prange

from studio_sep.separation.state import State

#: Reassociation (vectorised sums) and fused multiply-add; no approximate division or
#: infinities assumed away.
_FASTMATH = {"contract", "reassoc", "nsz"}


@njit(inline="always", fastmath=_FASTMATH)
def _model_row(lam_NFT, G_NM, f, m, y_T):
    """y_T = ỹ_f·m = Σ_n g_nm λ_nf·, one row of frames."""
    N, _, T = lam_NFT.shape
    g = G_NM[0, m]
    for t in range(T):
        y_T[t] = g * lam_NFT[0, f, t]
    for n in range(1, N):
        g = G_NM[n, m]
        for t in range(T):
            y_T[t] += g * lam_NFT[n, f, t]


@njit(inline="always", fastmath=_FASTMATH)
def _ratio_row(Qx_FMT, f, m, y_T, a_T):
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


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def per_source_ratios(Qx_FMT, lam_NFT, G_NM, A_NFT, B_NFT):
    """A_nft = Σ_m g_nm x̃_ftm / ỹ_ftm², B_nft = Σ_m g_nm / ỹ_ftm (the W and H updates'
    numerator and denominator before the contraction with H or W)."""
    N, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(F):
        y = np.empty(T, Qx_FMT.dtype)  # ỹ, then 1/ỹ
        a = np.empty(T, Qx_FMT.dtype)
        A_NFT[:, f, :] = 0
        B_NFT[:, f, :] = 0
        for m in range(M):
            _model_row(lam_NFT, G_NM, f, m, y)
            _ratio_row(Qx_FMT, f, m, y, a)
            for n in range(N):
                g = G_NM[n, m]
                for t in range(T):
                    A_NFT[n, f, t] += g * a[t]
                for t in range(T):
                    B_NFT[n, f, t] += g * y[t]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def source_mic_sums(Qx_FMT, lam_NFT, G_NM, num_FNM, den_FNM):
    """Per bin f, float64: num_fnm = Σ_t λ_nft x̃_ftm / ỹ_ftm², den_fnm = Σ_t λ_nft / ỹ_ftm
    (the G update's sums, to be summed over f)."""
    N, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(F):
        y = np.empty(T, Qx_FMT.dtype)
        a = np.empty(T, Qx_FMT.dtype)
        for m in range(M):
            _model_row(lam_NFT, G_NM, f, m, y)
            _ratio_row(Qx_FMT, f, m, y, a)
            for n in range(N):
                s_num = 0.0
                s_den = 0.0
                for t in range(T):
                    s_num += lam_NFT[n, f, t] * a[t]
                    s_den += lam_NFT[n, f, t] * y[t]
                num_FNM[f, n, m] = s_num
                den_FNM[f, n, m] = s_den


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def data_terms(Qx_FMT, lam_NFT, G_NM, out_F):
    """out_f = Σ_tm x̃_ftm / ỹ_ftm + log ỹ_ftm, float64 (the log-likelihood's data term)."""
    _, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(F):
        y = np.empty(T, Qx_FMT.dtype)
        acc = 0.0
        for m in range(M):
            _model_row(lam_NFT, G_NM, f, m, y)
            for t in range(T):
                acc += Qx_FMT[f, m, t] / y[t]
            for t in range(T):
                acc += np.log(y[t])
        out_F[f] = acc


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def inverse_model(lam_NFT, G_NM, out_FMT):
    """out_fmt = 1 / ỹ_ftm, frames last (the covariances' weights)."""
    _, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(F):
        y = np.empty(T, out_FMT.dtype)
        one = np.ones(1, out_FMT.dtype)[0]
        for m in range(M):
            _model_row(lam_NFT, G_NM, f, m, y)
            for t in range(T):
                out_FMT[f, m, t] = one / y[t]


@njit(parallel=True, cache=True)
def upper_pairs(X_FTM, rows, cols, out_FPT):
    """The upper triangle of x_ft x_ftᴴ as reals, frames last: out[f, p, t] =
    Re(x_i x̄_j), out[f, P + p, t] = Im(x_i x̄_j) for (i, j) = (rows[p], cols[p])."""
    F, T, _ = X_FTM.shape
    P = rows.shape[0]
    for f in prange(F):
        for p in range(P):
            i, j = rows[p], cols[p]
            for t in range(T):
                v = X_FTM[f, t, i] * np.conj(X_FTM[f, t, j])
                out_FPT[f, p, t] = v.real
                out_FPT[f, P + p, t] = v.imag


def kernel_threads() -> int:
    """Threads for the kernels: numba's, at most as many as the BLAS pool's (threadpoolctl's
    view; numba's alone where threadpoolctl is missing)."""
    n = numba.config.NUMBA_NUM_THREADS
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's stack
        return n
    blas = [d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"]
    return max(1, min([n, *blas]))


@contextlib.contextmanager
def threads(n: int):
    """Run numba's parallel kernels on ``n`` threads inside the block (restored after)."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class HostState(State):
    """``State`` with fused kernels (numpy arrays only). x̃ is ``Qx_FMT`` (F, M, T)."""

    def __init__(self, xp, X, Q, G, W, H, *, cache_pairs: bool = True, block_bins: int | None = None):
        if xp is not np:
            raise TypeError("HostState runs on numpy arrays; use State for other array modules")
        super().__init__(xp, X, Q, G, W, H, cache_pairs=False, block_bins=block_bins)
        F, T, M = X.shape
        real = X.real.dtype
        rows, cols = (np.ascontiguousarray(a, dtype=np.int64) for a in self.upper)
        if cache_pairs:
            self.pairs_FPT = np.empty((F, 2 * len(rows), T), dtype=real)
            upper_pairs(np.ascontiguousarray(X), rows, cols, self.pairs_FPT)
        else:
            self.pairs_FPT = None
        self.Qx_FMT = np.empty((F, M, T), dtype=real)
        self._A_NFT = np.empty((self.G.shape[0], F, T), dtype=real)
        self._B_NFT = np.empty_like(self._A_NFT)
        self.threads = kernel_threads()

    def refresh_Qx(self) -> None:
        """x̃ as in ``State.refresh_Qx``, stored (F, M, T): one BLAS product (F,M,2P)@(F,2P,T)."""
        if self.pairs_FPT is None:
            Qx = np.matmul(self.X, self.Q.transpose(0, 2, 1))  # (F, T, M)
            self.Qx_FMT[:] = (Qx.real**2 + Qx.imag**2).transpose(0, 2, 1)
            return
        np.matmul(self.pair_coefficients(), self.pairs_FPT, out=self.Qx_FMT)
        np.maximum(self.Qx_FMT, 0.0, out=self.Qx_FMT)  # rounding can dip below 0 where x̃ ≈ 0

    def log_likelihood(self):
        data_F = np.empty(self.F)
        with threads(self.threads):
            data_terms(self.Qx_FMT, self.lam, self.G, data_F)
        _, logabsdet = np.linalg.slogdet(self.Q)
        return (-data_F.sum() + 2 * self.T * logabsdet.sum(dtype=np.float64)) / (self.F * self.T)

    def _per_source_ratios(self):
        with threads(self.threads):
            per_source_ratios(self.Qx_FMT, self.lam, self.G, self._A_NFT, self._B_NFT)
        return self._A_NFT, self._B_NFT

    def update_W(self) -> None:
        A, B = self._per_source_ratios()
        Ht = self.H.transpose(0, 2, 1)
        self.W = np.maximum(self.W * np.sqrt(np.matmul(A, Ht) / np.matmul(B, Ht)), self.floor)
        self.refresh_model()

    def update_H(self) -> None:
        A, B = self._per_source_ratios()
        Wt = self.W.transpose(0, 2, 1)
        self.H = np.maximum(self.H * np.sqrt(np.matmul(Wt, A) / np.matmul(Wt, B)), self.floor)
        self.refresh_model()

    def update_G(self) -> None:
        num, den = (np.empty((self.F, *self.G.shape)) for _ in range(2))
        with threads(self.threads):
            source_mic_sums(self.Qx_FMT, self.lam, self.G, num, den)
        ratio = (num.sum(axis=0) / den.sum(axis=0)).astype(self.G.dtype)
        self.G = np.maximum(self.G * np.sqrt(ratio), self.floor)

    def weighted_pairs(self):
        inv_Y_FMT = np.empty((self.F, self.M, self.T), dtype=self.X.real.dtype)
        with threads(self.threads):
            inverse_model(self.lam, self.G, inv_Y_FMT)
        if self.pairs_FPT is not None:
            return np.matmul(inv_Y_FMT, self.pairs_FPT.transpose(0, 2, 1))
        R = np.empty((self.F, self.M, 2 * len(self.upper[0])), dtype=self.X.real.dtype)
        for bins in self.blocks():
            R[bins] = np.matmul(inv_Y_FMT[bins], self._pairs(bins))
        return R
