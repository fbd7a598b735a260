"""FastMNMF2's state: the parameters and the derived quantities the updates share, and the
updates themselves (paper eqs. 13–16), as array code that runs on any array module
(numpy, cupy). :func:`studio_sep.separation.fastmnmf2.fit` drives it;
:class:`studio_sep.separation.host_kernels.HostState` is the same with fused CPU kernels.
Axes and names as in :mod:`studio_sep.separation.fastmnmf2`."""

from __future__ import annotations

import contextlib

import numpy as np

#: Floor on the non-negative factors W, H, G, relative to the unit-power data,
#: so that a factor driven to zero by a silent region never divides by zero.
FACTOR_FLOOR = 1e-12

#: On the CPU the elementwise steps run over blocks of frequency bins whose ỹ
#: (T·M reals per bin) takes about this many bytes, so that ỹ, 1/ỹ and the ratios stay
#: in cache (and, without the x xᴴ cache, the rebuilt products: small blocks were 2.7×
#: faster than 128 MiB ones; benchmarks/arithmetic.py).
BLOCK_BYTES = 512 * 1024


def default_block_bins(shape_FTM, real_dtype, xp) -> int:
    """Bins per block: cache-sized on the CPU (numpy), every bin at once elsewhere (a
    GPU gains nothing from small blocks and pays a kernel launch per operation)."""
    F, T, M = shape_FTM
    if xp is not np:
        return F
    return max(1, BLOCK_BYTES // (T * M * np.dtype(real_dtype).itemsize))


class State:
    """Parameters and the derived quantities the updates share.

    x̃ (``Qx_power``) and λ (``lam``) are kept whole; ỹ, 1/ỹ and the ratios are made
    for one block of frequency bins at a time and used at once. On the CPU a block is
    small enough (:data:`BLOCK_BYTES`) for these temporaries to stay in cache, so each
    update reads x̃ once instead of streaming half a dozen F·T·M arrays through
    memory; on a GPU one block holds every bin.
    """

    def __init__(self, xp, X, Q, G, W, H, *, cache_pairs: bool = True, block_bins: int | None = None):
        self.xp, self.X, self.Q, self.G, self.W, self.H = xp, X, Q, G, W, H
        self.F, self.T, self.M = X.shape
        self.floor = FACTOR_FLOOR
        self.loading = 1e-10 if X.real.dtype == np.float64 else 1e-6
        if block_bins is None:
            block_bins = default_block_bins(X.shape, X.real.dtype, xp)
        self.block_bins = max(1, min(int(block_bins), self.F))
        # the upper triangle of x xᴴ, constant over iterations (see covariances)
        self.upper = tuple(xp.asarray(i) for i in np.triu_indices(self.M))
        self.pairs = self._pairs(slice(None)) if cache_pairs else None
        self.pair_weights = xp.asarray(np.where(np.equal(*np.triu_indices(self.M)), 1.0, 2.0).astype(X.real.dtype))

    def running(self):
        """Context of a fit's iterations (:class:`HostState` sets up its threads there)."""
        return contextlib.nullcontext()

    def blocks(self):
        """Slices of consecutive frequency bins, ``block_bins`` at a time."""
        for f0 in range(0, self.F, self.block_bins):
            yield slice(f0, min(f0 + self.block_bins, self.F))

    def _pairs(self, bins: slice):
        """Upper triangle of x_ft x_ftᴴ as reals: (F', T, 2P) [real parts, imaginary parts]."""
        X = self.X[bins]
        xx = X[:, :, self.upper[0]] * X[:, :, self.upper[1]].conj()  # (F', T, P)
        return self.xp.concatenate([xx.real, xx.imag], axis=2)

    # derived quantities ------------------------------------------------------
    def refresh_Qx(self) -> None:
        """x̃_ftm = |q_fmᴴ x_ft|².

        With the x xᴴ cache this is one real matmul: |Σ_i Q_mi x_i|² =
        Σ_{i≤j} w_ij Re(Q_mi conj(Q_mj) x_i conj(x_j)), w = 1 on the diagonal, 2 above it.
        """
        xp = self.xp
        if self.pairs is None:
            Qx = xp.matmul(self.X, self.Q.transpose(0, 2, 1))  # (F, T, M): row m is q_fm^H x_ft
            self.Qx_power = Qx.real**2 + Qx.imag**2
            return
        C_T = xp.ascontiguousarray(self.pair_coefficients().transpose(0, 2, 1))
        power = xp.matmul(self.pairs, C_T)  # (F, T, M)
        self.Qx_power = xp.maximum(power, 0.0, out=power)  # rounding can dip below 0 where x̃ ≈ 0

    def pair_coefficients(self):
        """(F, M, 2P): the real coefficients C with x̃_ftm = Σ_k C_fmk pairs_ftk, from
        B = Q_i conj(Q_j) over the upper-triangle pairs (i, j): [Re B·w, −Im B·w]."""
        i, j = self.upper
        B = self.Q[:, :, i] * self.Q[:, :, j].conj()  # (F, M, P)
        return self.xp.concatenate([B.real * self.pair_weights, -B.imag * self.pair_weights], axis=2)

    def refresh_model(self) -> None:
        """λ = W H, after W or H changed (ỹ is made per block from λ and G)."""
        self.lam = self.xp.matmul(self.W, self.H)  # (N, F, T)

    def model(self, bins: slice):
        """ỹ_ftm = Σ_n λ_nft g_nm for a block of bins, (F', T, M)."""
        lam = self.lam[:, bins]
        N, n_bins = lam.shape[:2]
        return self.xp.matmul(lam.reshape(N, -1).T, self.G).reshape(n_bins, self.T, self.M)

    def log_likelihood(self):
        """Σ_ft [-Σ_m (x̃/ỹ + log ỹ) + log|det Q_f|²] / (F T); a device scalar."""
        xp = self.xp
        data = 0.0
        for bins in self.blocks():
            Y = self.model(bins)
            data = data - ((self.Qx_power[bins] / Y).sum() + xp.log(Y).sum())
        _, logabsdet = xp.linalg.slogdet(self.Q)
        return (data + 2 * self.T * logabsdet.sum()) / (self.F * self.T)

    # multiplicative (MM) updates, paper eqs. 13–15 -----------------------------
    def _ratios(self, bins: slice):
        """x̃/ỹ² and 1/ỹ for a block of bins."""
        inv_Y = 1.0 / self.model(bins)
        num = self.Qx_power[bins] * inv_Y
        num *= inv_Y
        return num, inv_Y

    def _per_source(self, A_FTM):
        """Σ_m g_nm A_ftm as (N, F', T)."""
        N = self.G.shape[0]
        n_bins = A_FTM.shape[0]
        # G @ Aᵀ is C-contiguous (N, F'·T): the batched matmuls that follow stay in BLAS
        # (a strided (N, F', T) view would make them several times slower)
        return self.xp.matmul(self.G, A_FTM.reshape(-1, self.M).T).reshape(N, n_bins, self.T)

    def update_W(self) -> None:
        xp = self.xp
        num, den = xp.empty_like(self.W), xp.empty_like(self.W)
        Ht = self.H.transpose(0, 2, 1)
        for bins in self.blocks():
            num_FTM, den_FTM = self._ratios(bins)
            num[:, bins] = xp.matmul(self._per_source(num_FTM), Ht)
            den[:, bins] = xp.matmul(self._per_source(den_FTM), Ht)
        self.W = xp.maximum(self.W * xp.sqrt(num / den), self.floor)
        self.refresh_model()

    def update_H(self) -> None:
        xp = self.xp
        num, den = xp.zeros_like(self.H), xp.zeros_like(self.H)
        for bins in self.blocks():
            num_FTM, den_FTM = self._ratios(bins)
            Wt = self.W[:, bins].transpose(0, 2, 1)
            num += xp.matmul(Wt, self._per_source(num_FTM))
            den += xp.matmul(Wt, self._per_source(den_FTM))
        self.H = xp.maximum(self.H * xp.sqrt(num / den), self.floor)
        self.refresh_model()

    def update_G(self) -> None:
        xp = self.xp
        num, den = xp.zeros_like(self.G), xp.zeros_like(self.G)
        N = self.G.shape[0]
        for bins in self.blocks():
            num_FTM, den_FTM = self._ratios(bins)
            lam = self.lam[:, bins].reshape(N, -1)
            num += xp.matmul(lam, num_FTM.reshape(-1, self.M))
            den += xp.matmul(lam, den_FTM.reshape(-1, self.M))
        self.G = xp.maximum(self.G * xp.sqrt(num / den), self.floor)

    # iterative projection, paper eq. 16 ----------------------------------------
    def covariances(self):
        """``V_fm = (1/T) Σ_t x_ft x_ftᴴ / ỹ_ftm`` for every m, as (F, M, M, M) [f, m, i, j].

        With the upper triangle of ``x xᴴ`` stored as real and imaginary parts
        (``pairs``), all M weighted covariances are one real batched matmul per block
        of bins; without the cache (to save F·T·M(M+1)·itemsize bytes) the products
        are made again every iteration, one block at a time.
        """
        xp, F, T, M = self.xp, self.F, self.T, self.M
        P = len(self.upper[0])
        R = self.weighted_pairs()
        R /= T
        upper = R[:, :, :P] + 1j * R[:, :, P:]
        V = xp.zeros((F, M, M, M), dtype=self.Q.dtype)
        V[:, :, self.upper[0], self.upper[1]] = upper
        V[:, :, self.upper[1], self.upper[0]] = upper.conj()
        return V

    def weighted_pairs(self):
        """``Σ_t (1/ỹ_ftm) pairs_ft`` as (F, M, 2P): the covariances before /T."""
        xp, F, M = self.xp, self.F, self.M
        R = xp.empty((F, M, 2 * len(self.upper[0])), dtype=self.X.real.dtype)
        for bins in self.blocks():
            inv_Y_FMT = xp.ascontiguousarray((1.0 / self.model(bins)).transpose(0, 2, 1))
            pairs = self.pairs[bins] if self.pairs is not None else self._pairs(bins)
            R[bins] = xp.matmul(inv_Y_FMT, pairs)
        return R

    def update_Q(self) -> None:
        """Update every row of Q in turn. x̃ is not needed between rows: refresh after."""
        self.project_rows(self.covariances(), slice(None))

    def update_Q_and_Qx(self) -> None:
        """:meth:`update_Q`, then x̃ for the new Q (what a fit's iteration does; the CPU
        kernels do both in one pass)."""
        self.update_Q()
        self.refresh_Qx()

    def project_rows(self, V_all, bins: slice) -> None:
        """Paper eq. 16 for the bins ``bins``: every row of ``Q[bins]`` in turn, from their
        weighted covariances ``V_all[bins]`` (F', M, M, M). Bins are independent.

        The M×M solves and the norms run in complex128 whatever the storage: in complex64,
        ``q_fmᴴ V_fm q_fm`` of a badly conditioned ``V`` rounded to 0 or below on the zoo
        (scene 13, spot start) and its square root made Q NaN. A row whose norm is still not
        positive and finite keeps its previous value (the likelihood then does not change
        for that row), so no bin's Q ever becomes NaN here."""
        xp = self.xp
        work = xp.complex128
        V_all, Q = V_all[bins].astype(work), self.Q[bins].astype(work)
        # Diagonal loading far below the data (relative LOADING of the mean power):
        # keeps the solve defined when mics are linearly dependent (a duplicated
        # channel, digital silence in a bin) and is invisible otherwise.
        eye = xp.eye(self.M, dtype=work)
        trace = xp.trace(V_all, axis1=2, axis2=3).real  # (F', M)
        V_all = V_all + (self.loading * trace / self.M)[:, :, None, None] * eye
        for m in range(self.M):
            V = V_all[:, m]
            b = xp.ascontiguousarray(xp.broadcast_to(eye[:, m:m + 1], (Q.shape[0], self.M, 1)))
            q = xp.linalg.solve(xp.matmul(Q, V), b)  # (F', M, 1)
            norm = xp.matmul(xp.matmul(q.conj().transpose(0, 2, 1), V), q).real[:, 0, 0]  # (F',)
            valid = xp.logical_and(xp.logical_and(norm > 0, xp.isfinite(norm)), xp.isfinite(q).all(axis=(1, 2)))
            q = q[:, :, 0] / xp.sqrt(xp.where(valid, norm, 1.0))[:, None]
            Q[:, m, :] = xp.where(valid[:, None], q.conj(), Q[:, m, :])
        self.Q[bins] = Q

    def normalize(self) -> None:
        """Scale Q to tr(Q Qᴴ) = M, rows of G to sum 1, columns of W to sum 1 (eq. 10)."""
        xp = self.xp
        phi = (self.Q.real**2 + self.Q.imag**2).sum(axis=(1, 2)) / self.M  # (F,)
        self.Q = self.Q / xp.sqrt(phi)[:, None, None].astype(self.Q.dtype)
        self.W = self.W / phi[None, :, None]
        mu = self.G.sum(axis=1)
        self.G = self.G / mu[:, None]
        self.W = self.W * mu[:, None, None]
        nu = self.W.sum(axis=1)
        self.W = self.W / nu[:, None, :]
        self.H = self.H * nu[:, :, None]
