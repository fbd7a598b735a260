"""FastMNMF2's elementwise passes fused into numba kernels, for numpy arrays on the CPU.

:class:`HostState` is :class:`studio_sep.separation.state.State` with the passes
over F·T·M arrays (ỹ, x̃/ỹ², 1/ỹ, log ỹ and their sums over mics or frames) done per
frequency bin in one kernel each: ỹ, 1/ỹ and the ratios never leave the cache, and each
update reads x̃ and λ once. x̃ is made from x itself, frames vectorised
(:func:`power_direct`); without the x·xᴴ cache the weighted covariances are made per
frame (:func:`weighted_pairs_direct`). The other matrix products (λ = W H, the W and H
contractions, the covariances from the cached pairs) stay in BLAS. ``fit`` uses it for
numpy input; cupy (and any other array module) runs the plain array code of ``State``,
which is also the reference the tests hold this one to.

Axes as in :mod:`studio_sep.separation.fastmnmf2`, with x̃ stored (F, M, T) here (frames
last: the kernels run along them) and the pairs (F, 2P, T). Sums over frames or bins
accumulate in float64 whatever the storage dtype.

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

from studio_sep.separation.state import State

#: Reassociation (vectorised sums) and fused multiply-add; no approximate division or
#: infinities assumed away.
_FASTMATH = {"contract", "reassoc", "nsz"}

# The kernels take a range of bins [f0, f1) and are compiled with ``parallel=True`` but
# run on one numba thread per call (``HostState._split``): numba's lowering of the prange
# loop vectorises the loops over frames where the plain serial njit of the same code does
# not (G's sums 4.2 against 6.9 ms, the log-likelihood 13.6 against 16.4 ms: float64, 1
# thread, paper configuration, 2026-12-02).


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


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def per_source_ratios(Qx_FMT, lam_NFT, G_NM, A_NFT, B_NFT, f0, f1):
    """A_nft = Σ_m g_nm x̃_ftm / ỹ_ftm², B_nft = Σ_m g_nm / ỹ_ftm (the W and H updates'
    numerator and denominator before the contraction with H or W)."""
    N, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(f0, f1):
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


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def source_mic_sums(Qx_FMT, lam_NFT, G_NM, num_FNM, den_FNM, f0, f1):
    """Per bin f, float64: num_fnm = Σ_t λ_nft x̃_ftm / ỹ_ftm², den_fnm = Σ_t λ_nft / ỹ_ftm
    (the G update's sums, to be summed over f)."""
    N, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(f0, f1):
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


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def data_terms(Qx_FMT, lam_NFT, G_NM, out_F, f0, f1):
    """out_f = Σ_tm x̃_ftm / ỹ_ftm + log ỹ_ftm, float64 (the log-likelihood's data term)."""
    _, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(f0, f1):
        y = np.empty(T, Qx_FMT.dtype)
        acc = 0.0
        for m in range(M):
            _model_row(lam_NFT, G_NM, f, m, y)
            for t in range(T):
                acc += Qx_FMT[f, m, t] / y[t]
            for t in range(T):
                acc += np.log(y[t])
        out_F[f] = acc


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def inverse_model(lam_NFT, G_NM, out_FMT, f0, f1):
    """out_fmt = 1 / ỹ_ftm, frames last (the covariances' weights)."""
    _, F, T = lam_NFT.shape
    M = G_NM.shape[1]
    for f in prange(f0, f1):
        y = np.empty(T, out_FMT.dtype)
        one = np.ones(1, out_FMT.dtype)[0]
        for m in range(M):
            _model_row(lam_NFT, G_NM, f, m, y)
            for t in range(T):
                out_FMT[f, m, t] = one / y[t]


@njit(parallel=True, nogil=True, cache=True)
def upper_pairs(X_FTM, rows, cols, out_FPT, f0, f1):
    """The upper triangle of x_ft x_ftᴴ as reals, frames last: out[f, p, t] =
    Re(x_i x̄_j), out[f, P + p, t] = Im(x_i x̄_j) for (i, j) = (rows[p], cols[p])."""
    F, T, _ = X_FTM.shape
    P = rows.shape[0]
    for f in prange(f0, f1):
        for p in range(P):
            i, j = rows[p], cols[p]
            for t in range(T):
                v = X_FTM[f, t, i] * np.conj(X_FTM[f, t, j])
                out_FPT[f, p, t] = v.real
                out_FPT[f, P + p, t] = v.imag


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def weighted_pairs_direct(X_FTM, inv_FMT, rows, cols, out_FMP, f0, f1):
    """Without the x·xᴴ cache: out[f, m] = Σ_t (1/ỹ_ftm) pairs_ft, the pairs (real parts,
    then imaginary parts of x_i x̄_j over (rows, cols)) made per frame and used at once,
    summed in float64 (as fast as the cached product in float64, 38 against 39 ms for the
    paper configuration on one thread; 31 against 24 ms in float32)."""
    _, T, M = X_FTM.shape
    P = rows.shape[0]
    for f in prange(f0, f1):
        acc = np.zeros((M, 2 * P))
        pair = np.empty(2 * P)
        for t in range(T):
            for p in range(P):
                v = X_FTM[f, t, rows[p]] * np.conj(X_FTM[f, t, cols[p]])
                pair[p] = v.real
                pair[P + p] = v.imag
            for m in range(M):
                w = inv_FMT[f, m, t]
                for k in range(2 * P):
                    acc[m, k] += w * pair[k]
        for m in range(M):
            for k in range(2 * P):
                out_FMP[f, m, k] = acc[m, k]


#: Frames :func:`power_direct` takes at a time (their real and imaginary parts, M rows,
#: stay in the first-level cache).
POWER_FRAMES = 256


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def power_direct(X_FTM, Q_FMM, out_FMT, f0, f1):
    """x̃_ftm = |Σ_i Q_fmi x_fti|², frames last, from x itself: the real and imaginary parts
    of :data:`POWER_FRAMES` frames are laid out mic by mic and each row of Q applied to
    them along frames (vectorised). Reads x once instead of the M(M+1) reals of the cached
    pairs: 14 against 35 ms (float64), 8 against 17 ms (float32), paper configuration."""
    _, T, M = X_FTM.shape
    real = out_FMT.dtype
    for f in prange(f0, f1):
        xr = np.empty((M, POWER_FRAMES), real)
        xi = np.empty((M, POWER_FRAMES), real)
        re = np.empty(POWER_FRAMES, real)
        im = np.empty(POWER_FRAMES, real)
        for t0 in range(0, T, POWER_FRAMES):
            n = min(POWER_FRAMES, T - t0)
            for t in range(n):
                for i in range(M):
                    v = X_FTM[f, t0 + t, i]
                    xr[i, t] = v.real
                    xi[i, t] = v.imag
            for m in range(M):
                re[:n] = 0
                im[:n] = 0
                for i in range(M):
                    qr, qi = Q_FMM[f, m, i].real, Q_FMM[f, m, i].imag
                    for t in range(n):
                        re[t] += qr * xr[i, t] - qi * xi[i, t]
                        im[t] += qr * xi[i, t] + qi * xr[i, t]
                for t in range(n):
                    out_FMT[f, m, t0 + t] = re[t] * re[t] + im[t] * im[t]


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
        if xp is not np:
            raise TypeError("HostState runs on numpy arrays; use State for other array modules")
        super().__init__(xp, X, Q, G, W, H, cache_pairs=False, block_bins=block_bins)
        F, T, M = X.shape
        real = X.real.dtype
        rows, cols = self._rows_cols = tuple(np.ascontiguousarray(a, dtype=np.int64) for a in self.upper)
        self.X = np.ascontiguousarray(X)
        if cache_pairs:
            self.pairs_FPT = np.empty((F, 2 * len(rows), T), dtype=real)
            upper_pairs(self.X, rows, cols, self.pairs_FPT, 0, F)
        else:
            self.pairs_FPT = None
        self.Qx_FMT = np.empty((F, M, T), dtype=real)
        self._A_NFT = np.empty((self.G.shape[0], F, T), dtype=real)
        self._B_NFT = np.empty_like(self._A_NFT)
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
        """x̃ as in ``State.refresh_Qx``, stored (F, M, T), from x itself (:func:`power_direct`:
        faster than the product with the cached pairs, and never below 0)."""
        Q = np.ascontiguousarray(self.Q)
        self._split(self.F, lambda b: power_direct(self.X, Q, self.Qx_FMT, b.start, b.stop))

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
        self._split(self.F, lambda b: per_source_ratios(self.Qx_FMT, self.lam, self.G, self._A_NFT, self._B_NFT,
                                                        b.start, b.stop))
        return self._A_NFT, self._B_NFT

    def update_W(self) -> None:
        A, B = self._per_source_ratios()
        Ht = self.H.transpose(0, 2, 1)
        num, den = np.empty_like(self.W), np.empty_like(self.W)

        def part(bins):
            num[:, bins] = np.matmul(A[:, bins], Ht)
            den[:, bins] = np.matmul(B[:, bins], Ht)

        self._split(self.F, part)
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
        V_all = self.covariances()
        self._split(self.F, lambda bins: self.project_rows(V_all, bins))

    def weighted_pairs(self):
        inv_Y_FMT = np.empty((self.F, self.M, self.T), dtype=self.X.real.dtype)
        R = np.empty((self.F, self.M, 2 * len(self.upper[0])), dtype=self.X.real.dtype)
        rows, cols = self._rows_cols

        def part(bins):  # 1/ỹ of these bins, then their product with the pairs while in cache
            inverse_model(self.lam, self.G, inv_Y_FMT, bins.start, bins.stop)
            if self.pairs_FPT is not None:
                np.matmul(inv_Y_FMT[bins], self.pairs_FPT[bins].transpose(0, 2, 1), out=R[bins])
            else:
                weighted_pairs_direct(self.X, inv_Y_FMT, rows, cols, R, bins.start, bins.stop)

        self._split(self.F, part)
        return R
