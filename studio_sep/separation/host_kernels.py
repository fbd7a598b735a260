"""FastMNMF2's elementwise passes fused into numba kernels, for numpy arrays on the CPU.

:class:`HostState` is :class:`studio_sep.separation.state.State` with the passes
over F·T·M arrays (ỹ, x̃/ỹ², 1/ỹ, log ỹ and their sums over mics or frames) done per
frequency bin in one kernel each: ỹ, 1/ỹ and the ratios never leave the cache, and each
update reads x̃ and λ once. The kernels read x split into real and imaginary parts with
frames last (``X_F2MT``, made once): x̃ = |Q x|² (:func:`power_split`) and the M weighted
covariances (:func:`weighted_pairs_split`: 1/ỹ, the upper triangle of x xᴴ and their
products summed along frames, per bin in cache) are made from it every iteration, which is
faster than reading a cached x·xᴴ (F·T·M(M+1) reals) and needs no such cache. ``fit`` runs
the Q update and the x̃ refresh as one pass per bin (:func:`update_Q_and_power`: the pairs,
the rows projected in compiled complex128 code, then x̃ while x is in cache), and W's sums
per bin (:func:`basis_sums`). λ = W H and H's product over bins stay in BLAS. ``fit`` uses it for
numpy input; cupy (and any other array module) runs the plain array code of ``State``,
which is also the reference the tests hold this one to.

Axes as in :mod:`studio_sep.separation.fastmnmf2`, with x̃ stored (F, M, T) here (frames
last: the kernels run along them). The sums of the W and G updates and of the
log-likelihood accumulate in float64 whatever the storage dtype; H's product over bins (BLAS)
and the covariances' sums (vectorised along frames) run in the storage dtype, as the array
code's BLAS products do.

Threads: inside :meth:`HostState.running` (what ``fit`` wraps its iterations in), a fit
with more than one thread holds BLAS to one thread and splits every step — the kernels
and the matrix products — into consecutive slices of bins (frames for H's product), one
per thread of a small pool; each kernel runs on one numba thread and releases the GIL.
So each step is one parallel region with no switch between numba's and BLAS's thread
pools (which made two threads slower than one: benchmarks/README.md, "Fused CPU
kernels"). The thread count is numba's, capped at the BLAS pool's size, so a process
limited to one BLAS thread (the benchmarks, the batch workers) runs on one.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from studio_sep.separation.kernel_rows import FASTMATH, model_row, ratio_row, source_ratios_row
from studio_sep.separation.spatial_kernels import (
    power_split,
    split_frames_last,
    update_Q_and_power,
    weighted_pairs_split,
)
from studio_sep.separation.state import State


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def per_source_ratios(Qx_FMT, lam_NFT, G_NM, A_FNT, B_FNT, f0, f1):
    """A_fnt = Σ_m g_nm x̃_ftm / ỹ_ftm², B_fnt = Σ_m g_nm / ỹ_ftm (the H update's numerator
    and denominator before the contraction with W), bins first: each bin's (N, T) block is
    contiguous, which the row loops need to be vectorised (a strided (N, T) view of an
    (N, F, T) array made H's update 1.9x slower)."""
    N, F, T = lam_NFT.shape
    for f in prange(f0, f1):
        y = np.empty(T, Qx_FMT.dtype)  # ỹ, then 1/ỹ
        a = np.empty(T, Qx_FMT.dtype)
        source_ratios_row(Qx_FMT, lam_NFT, G_NM, f, y, a, A_FNT[f], B_FNT[f])


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def basis_sums(Qx_FMT, lam_NFT, G_NM, H_NKT, num_NFK, den_NFK, f0, f1):
    """The W update's sums for bins [f0, f1): num_nfk = Σ_t A_nft h_nkt, den_nfk = Σ_t B_nft
    h_nkt with A, B of :func:`per_source_ratios` made per bin and contracted with H at once
    (never written out), the sums along frames in float64."""
    N, F, T = lam_NFT.shape
    K = H_NKT.shape[1]
    for f in prange(f0, f1):
        y = np.empty(T, Qx_FMT.dtype)
        a = np.empty(T, Qx_FMT.dtype)
        A = np.empty((N, T), Qx_FMT.dtype)
        B = np.empty((N, T), Qx_FMT.dtype)
        source_ratios_row(Qx_FMT, lam_NFT, G_NM, f, y, a, A, B)
        for n in range(N):
            for k in range(K):
                s_num = 0.0
                s_den = 0.0
                for t in range(T):
                    s_num += A[n, t] * H_NKT[n, k, t]
                    s_den += B[n, t] * H_NKT[n, k, t]
                num_NFK[n, f, k] = s_num
                den_NFK[n, f, k] = s_den


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def source_mic_sums(Qx_FMT, lam_NFT, G_NM, num_FNM, den_FNM, f0, f1):
    """Per bin f, float64: num_fnm = Σ_t λ_nft x̃_ftm / ỹ_ftm², den_fnm = Σ_t λ_nft / ỹ_ftm
    (the G update's sums, to be summed over f)."""
    N, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(f0, f1):
        y = np.empty(T, Qx_FMT.dtype)
        a = np.empty(T, Qx_FMT.dtype)
        for m in range(M):
            model_row(lam_NFT, G_NM, f, m, y)
            ratio_row(Qx_FMT, f, m, y, a)
            for n in range(N):
                s_num = 0.0
                s_den = 0.0
                for t in range(T):
                    s_num += lam_NFT[n, f, t] * a[t]
                    s_den += lam_NFT[n, f, t] * y[t]
                num_FNM[f, n, m] = s_num
                den_FNM[f, n, m] = s_den


#: Mics whose ỹ :func:`data_terms` multiplies before one logarithm: 4 factors of ỹ ≥ 1e-36
#: (the floors of W, H and G) stay far inside float64's range.
LOG_GROUP = 4


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def data_terms(Qx_FMT, lam_NFT, G_NM, out_F, f0, f1):
    """out_f = Σ_tm x̃_ftm / ỹ_ftm + log ỹ_ftm, float64, with one logarithm per
    :data:`LOG_GROUP` mics: Σ_m log ỹ_ftm = Σ_groups log Π_m ỹ_ftm, the products in float64
    (the logarithms were most of this kernel's time: 7.5 against 4.1 ms for the array code)."""
    _, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(f0, f1):
        y = np.empty(T, Qx_FMT.dtype)
        prod = np.ones(T)
        acc = 0.0
        for m in range(M):
            model_row(lam_NFT, G_NM, f, m, y)
            for t in range(T):
                acc += Qx_FMT[f, m, t] / y[t]
            for t in range(T):
                prod[t] *= y[t]
            if (m + 1) % LOG_GROUP == 0 or m == M - 1:
                for t in range(T):
                    acc += np.log(prod[t])
                    prod[t] = 1.0
        out_F[f] = acc


def kernel_threads() -> int:
    """Threads for a fit's steps: numba's thread count, at most as many as the BLAS pool's
    (threadpoolctl's view; numba's alone where threadpoolctl is missing), so a process
    limited to one BLAS thread, as the benchmarks and the batch workers are, runs on one."""
    n = numba.config.NUMBA_NUM_THREADS
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's stack
        return n
    blas = [d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"]
    return max(1, min([n, *blas]))


class HostState(State):
    """``State`` with fused kernels (numpy arrays only). x̃ is ``Qx_FMT`` (F, M, T).

    Inside :meth:`running` (what ``fit`` wraps its iterations in) with more than one thread,
    BLAS runs on one thread and every matrix product and Q projection is split into
    ``threads`` slices of bins (or frames) run at once on a pool of threads, so both cores
    work on one parallel step with no switch between numba's and BLAS's thread pools;
    outside it, the kernels run on one thread and the products whole in BLAS's own threads.
    """

    def __init__(self, xp, X, Q, G, W, H, *, cache_pairs: bool = True, block_bins: int | None = None):
        """As ``State``; ``cache_pairs`` is ignored (the kernels need no x·xᴴ cache)."""
        if xp is not np:
            raise TypeError("HostState runs on numpy arrays; use State for other array modules")
        super().__init__(xp, X, Q, G, W, H, cache_pairs=False, block_bins=block_bins)
        F, T, M = X.shape
        real = X.real.dtype
        self._rows_cols = tuple(np.ascontiguousarray(a, dtype=np.int64) for a in self.upper)
        self.X_F2MT = np.empty((F, 2, M, T), dtype=real)  # x split, frames last: what the kernels read
        split_frames_last(np.ascontiguousarray(X), self.X_F2MT, 0, F)
        self.Qx_FMT = np.empty((F, M, T), dtype=real)
        self._A_FNT = np.empty((F, self.G.shape[0], T), dtype=real)
        self._B_FNT = np.empty_like(self._A_FNT)
        self.lam = None  # λ (N, F, T), allocated once by refresh_model
        self.threads = kernel_threads()
        self._pool: ThreadPoolExecutor | None = None

    @contextlib.contextmanager
    def running(self):
        """BLAS on one thread and the products split among ``threads`` pool threads (the
        class docstring); nothing changes with one thread."""
        if self.threads < 2:
            yield
            return
        from threadpoolctl import threadpool_limits

        pool = ThreadPoolExecutor(self.threads - 1, initializer=numba.set_num_threads, initargs=(1,))
        with threadpool_limits(1, user_api="blas"), pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def _split(self, n: int, fn) -> None:
        """``fn(part)`` for ``threads`` consecutive slices of ``range(n)`` at once (the first
        in this thread), inside :meth:`running`; ``fn(slice(0, n))`` outside it. The kernels
        called by ``fn`` run on one numba thread either way."""
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            if self._pool is None:
                fn(slice(0, n))
                return
            edges = np.linspace(0, n, self.threads + 1).astype(int)
            parts = [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
            futures = [self._pool.submit(fn, part) for part in parts[1:]]
            fn(parts[0])
            for future in futures:
                future.result()
        finally:
            numba.set_num_threads(before)

    def refresh_Qx(self) -> None:
        """x̃ as in ``State.refresh_Qx``, stored (F, M, T), from the split x (:func:`power_split`:
        faster than the product with the cached pairs, and never below 0)."""
        Q = np.ascontiguousarray(self.Q)
        self._split(self.F, lambda b: power_split(self.X_F2MT, Q, self.Qx_FMT, b.start, b.stop))

    def refresh_model(self) -> None:
        """λ = W H into one (N, F, T) array, split over bins."""
        N, F, _ = self.W.shape
        if self.lam is None:
            self.lam = np.empty((N, F, self.T), dtype=self.W.dtype)

        def part(bins):
            np.matmul(self.W[:, bins], self.H, out=self.lam[:, bins])

        self._split(F, part)

    def log_likelihood(self):
        data_F = np.empty(self.F)
        self._split(self.F, lambda b: data_terms(self.Qx_FMT, self.lam, self.G, data_F, b.start, b.stop))
        _, logabsdet = np.linalg.slogdet(self.Q)
        return (-data_F.sum() + 2 * self.T * logabsdet.sum(dtype=np.float64)) / (self.F * self.T)

    def _per_source_ratios(self):
        self._split(self.F, lambda b: per_source_ratios(self.Qx_FMT, self.lam, self.G, self._A_FNT, self._B_FNT,
                                                        b.start, b.stop))
        return self._A_FNT.transpose(1, 0, 2), self._B_FNT.transpose(1, 0, 2)  # (N, F, T) views

    def update_W(self) -> None:
        """W's numerator and denominator per bin in one kernel (:func:`basis_sums`)."""
        num, den = np.empty_like(self.W), np.empty_like(self.W)
        H = np.ascontiguousarray(self.H)
        self._split(self.F, lambda b: basis_sums(self.Qx_FMT, self.lam, self.G, H, num, den, b.start, b.stop))
        self.W = np.maximum(self.W * np.sqrt(num / den), self.floor)
        self.refresh_model()

    def update_H(self) -> None:
        A, B = self._per_source_ratios()
        Wt = self.W.transpose(0, 2, 1)
        num, den = np.empty_like(self.H), np.empty_like(self.H)

        def part(frames):
            num[:, :, frames] = np.matmul(Wt, A[:, :, frames])
            den[:, :, frames] = np.matmul(Wt, B[:, :, frames])

        self._split(self.T, part)
        self.H = np.maximum(self.H * np.sqrt(num / den), self.floor)
        self.refresh_model()

    def update_G(self) -> None:
        num, den = (np.empty((self.F, *self.G.shape)) for _ in range(2))
        self._split(self.F, lambda b: source_mic_sums(self.Qx_FMT, self.lam, self.G, num, den, b.start, b.stop))
        ratio = (num.sum(axis=0) / den.sum(axis=0)).astype(self.G.dtype)
        self.G = np.maximum(self.G * np.sqrt(ratio), self.floor)

    def update_Q(self) -> None:
        """``State.update_Q``: the numpy projections of the array code, from the covariances
        of :meth:`weighted_pairs` (the fit itself runs :meth:`update_Q_and_Qx`)."""
        V_all = self.covariances()
        self._split(self.F, lambda bins: self.project_rows(V_all, bins))

    def update_Q_and_Qx(self) -> None:
        """The Q update and the x̃ refresh in one pass over the bins
        (:func:`update_Q_and_power`): each bin's x is read once for both, and its rows are
        projected in a compiled loop instead of M batched LAPACK solves."""
        rows, cols = self._rows_cols
        self.Q = np.ascontiguousarray(self.Q)
        self._split(self.F, lambda b: update_Q_and_power(self.X_F2MT, self.lam, self.G, rows, cols, self.loading,
                                                         self.Q, self.Qx_FMT, b.start, b.stop))

    def weighted_pairs(self):
        R = np.empty((self.F, self.M, 2 * len(self.upper[0])), dtype=self.X.real.dtype)
        rows, cols = self._rows_cols
        self._split(self.F, lambda b: weighted_pairs_split(self.X_F2MT, self.lam, self.G, rows, cols, R,
                                                           b.start, b.stop))
        return R
