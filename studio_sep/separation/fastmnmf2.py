"""FastMNMF2: multichannel NMF with a jointly-diagonalisable spatial model.

Model (paper §3.1, eqs. 8–10; Sekiguchi et al. 2020): the STFT of the mics
``x_ft ∈ C^M`` is zero-mean complex Gaussian with covariance
``Σ_n λ_nft Q_f^{-1} diag(g_n) Q_f^{-H}``, where ``λ_nft = Σ_k w_nkf h_nkt`` (NMF of
each source's power spectrum), ``Q_f`` is a per-frequency diagonaliser shared by all
sources and ``g_n`` a frequency-invariant non-negative weight per source and channel.

Axis names: F frequency bins, T frames, M mics, N sources, K bases per source. Arrays:
``X_FTM`` (mixture STFT), ``Q_FMM`` (row m of ``Q_f`` is ``q_fm^H``), ``G_NM``,
``W_NFK``, ``H_NKT``, ``Qx_power_FTM = |Q_f x_ft|²`` (x̃), ``Y_FTM = Σ_n λ_nft g_nm`` (ỹ).

Every function takes its arrays first and uses their array module (numpy or cupy),
so the one code path runs on CPU and GPU. Nothing here prints, reads files or picks a
device; progress goes through ``callback``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from studio_sep.dsp.backend import get_xp, to_device, to_host
from studio_sep.separation.params import Checkpoint, FitResult, Params, params_to
from studio_sep.util.errors import InputError

#: Floor on the non-negative factors W, H, G, relative to the unit-power data,
#: so that a factor driven to zero by a silent region never divides by zero.
FACTOR_FLOOR = 1e-12


#: Largest x xᴴ cache :func:`fit` keeps by default (bytes).
COVARIANCE_CACHE_BYTES = 2 * 1024**3
#: On the CPU the elementwise steps run over blocks of frequency bins whose ỹ
#: (T·M reals per bin) takes about this many bytes, so that ỹ, 1/ỹ and the ratios stay
#: in cache (and, without the x xᴴ cache, the rebuilt products: small blocks were 2.7×
#: faster than 128 MiB ones; benchmarks/arithmetic.py).
BLOCK_BYTES = 512 * 1024

#: The stopping rule (``tolerance``) looks at the log-likelihood gained over this many
#: iterations.
STOP_WINDOW = 10
#: … against what it gained since this iteration (:func:`converged`).
STOP_SINCE = 5


def default_block_bins(shape_FTM, real_dtype, xp) -> int:
    """Bins per block: cache-sized on the CPU (numpy), every bin at once elsewhere (a
    GPU gains nothing from small blocks and pays a kernel launch per operation)."""
    F, T, M = shape_FTM
    if xp is not np:
        return F
    return max(1, BLOCK_BYTES // (T * M * np.dtype(real_dtype).itemsize))


def covariance_cache_bytes(shape_FTM, real_dtype) -> int:
    """Bytes of the x xᴴ cache for an STFT of this shape (F·T·M(M+1) reals)."""
    F, T, M = shape_FTM
    return F * T * M * (M + 1) * np.dtype(real_dtype).itemsize


def circular_init(
    n_freq: int, n_mics: int, n_sources: int, n_basis: int, *, rng: np.random.Generator,
    dtype=np.float64, g_floor: float = 5e-2,
) -> Params:
    """The blind baseline: ``Q_f = I``, channel m given to source ``m mod N``
    (weight 1, every other weight ``g_floor``), random W and H; as in the reference
    implementations (Sekiguchi et al.; pyroomacoustics).

    Values are drawn on the host from ``rng`` (so numpy and cupy runs start
    identically); move them with :func:`params_to`.
    """
    complex_dtype = np.result_type(dtype, np.complex64)
    Q = np.tile(np.eye(n_mics, dtype=complex_dtype), (n_freq, 1, 1))
    G = np.full((n_sources, n_mics), g_floor, dtype=dtype)
    G[np.arange(n_mics) % n_sources, np.arange(n_mics)] = 1.0
    W = rng.uniform(size=(n_sources, n_freq, n_basis)).astype(dtype)
    H = rng.uniform(size=(n_sources, n_basis, 1)).astype(dtype)  # filled per frame by fit
    return Params(Q_FMM=Q, G_NM=G, W_NFK=W, H_NKT=H)


# Long by its docstring (every parameter) and one iteration loop whose update order is the
# algorithm; splitting the loop would spread that order over several functions.
def fit(
    X_FTM,
    *,
    n_sources: int,
    n_basis: int = 8,
    n_iter: int = 100,
    init: Params | None = None,
    update_W: bool = True,
    normalize_every: int = 10,
    cache_covariance: bool | None = None,
    log_likelihood_every: int = 1,
    block_bins: int | None = None,
    rng: np.random.Generator,
    callback: Callable[[int, int, float], None] | None = None,
    resume: Checkpoint | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    tolerance: float = 0.0,
) -> FitResult:
    """Fit FastMNMF2 to a multichannel STFT.

    Parameters
    ----------
    X_FTM : array (numpy or cupy), shape (F, T, M), complex64 or complex128
        Mixture STFT. The real precision of the fit follows its dtype.
    n_sources : int
        N, number of sources.
    n_basis : int
        K, NMF bases per source.
    n_iter : int
        Number of iterations (each updates W, H, G, then every row of Q); with a
        ``tolerance``, the most.
    init : Params, optional
        Initial parameters (host or device arrays); missing fields come from
        :func:`circular_init`. An ``H_NKT`` with one frame is broadcast over time.
        Their scale is irrelevant: the model is renormalised first.
    update_W : bool
        Update the bases (False keeps a learned dictionary fixed).
    normalize_every : int
        Renormalise Q, G, W (paper: every 10 iterations). Normalising leaves the
        model and its likelihood unchanged.
    cache_covariance : bool, optional
        Keep the upper triangle of every ``x_ft x_ftᴴ`` (F·T·M(M+1) reals): the Q
        update then runs as one real matrix product, about 15× faster. Default: cache
        when that takes at most :data:`COVARIANCE_CACHE_BYTES`; otherwise rebuild it
        every iteration in blocks of frequency bins (bounded memory, more arithmetic).
    rng : numpy.random.Generator
        Source of the random initial values.
    callback : callable, optional
        ``callback(iteration, n_iter, log_likelihood)`` after every iteration, with
        the latest computed log-likelihood.
    log_likelihood_every : int
        Compute the log-likelihood every this many iterations (and after the last):
        it costs about a tenth of an iteration.
    block_bins : int, optional
        Frequency bins per block of the elementwise steps (the result does not depend
        on it). Default: :func:`default_block_bins`.
    resume : Checkpoint, optional
        Continue an interrupted fit of the same data and settings from this state
        (``init`` is then ignored); the result equals an uninterrupted fit's.
    checkpoint_every, on_checkpoint
        Call ``on_checkpoint(Checkpoint)`` every this many iterations (0: never) and
        not after the last one (the result is returned then).
    tolerance : float
        The stopping rule (0: none, exactly ``n_iter`` iterations). Whenever the
        log-likelihood is computed, the fit stops if what it gained over the last
        :data:`STOP_WINDOW` iterations is below ``tolerance`` times what it gained since
        iteration :data:`STOP_SINCE` (:func:`converged`). The rule
        reads only the recorded log-likelihoods, so a resumed fit stops where an
        uninterrupted one does.

    Returns
    -------
    FitResult
    """
    xp = get_xp(X_FTM)
    if X_FTM.ndim != 3:
        raise InputError(None, "X_FTM", f"expected (freq, frames, mics), got shape {X_FTM.shape}")
    n_freq, n_frames, n_mics = X_FTM.shape
    if n_sources < 1 or n_basis < 1 or n_iter < 0:
        raise InputError(None, "settings", f"need n_sources ≥ 1, n_basis ≥ 1, n_iter ≥ 0; got "
                         f"{n_sources}, {n_basis}, {n_iter}")
    if n_frames < n_mics:
        raise InputError(None, "audio", f"{n_frames} STFT frames for {n_mics} mics",
                         "use a longer recording or a shorter hop")
    real_dtype = X_FTM.real.dtype
    if resume is not None:
        _check_shapes(resume.params, n_freq, n_frames, n_mics, n_sources, n_basis)
        p = params_to(resume.params, xp, real_dtype)
        H = p.H_NKT
    else:
        default = circular_init(n_freq, n_mics, n_sources, n_basis, rng=rng, dtype=np.dtype(str(real_dtype)))
        start = init or Params()
        start = Params(*(given if given is not None else fallback
                         for given, fallback in zip(
                             (start.Q_FMM, start.G_NM, start.W_NFK, start.H_NKT),
                             (default.Q_FMM, default.G_NM, default.W_NFK, default.H_NKT))))
        _check_shapes(start, n_freq, n_frames, n_mics, n_sources, n_basis)
        p = params_to(start, xp, real_dtype)
        H = p.H_NKT
        if H.shape[2] == 1:
            H = xp.ascontiguousarray(xp.broadcast_to(H, (n_sources, n_basis, n_frames)))
            if init is None or init.H_NKT is None:  # random activations per frame
                H = to_device(rng.uniform(size=(n_sources, n_basis, n_frames)).astype(str(real_dtype)), xp)

    # Fit on unit-power data: the floors then mean the same thing for every session,
    # and the scale is given back to λ at the end (Q, G and the Wiener filter are
    # scale-free).
    if cache_covariance is None:
        cache_covariance = covariance_cache_bytes(X_FTM.shape, real_dtype) <= COVARIANCE_CACHE_BYTES
    scale = xp.sqrt(xp.mean(xp.abs(X_FTM) ** 2))
    X = X_FTM / scale
    state = _State(xp, X, p.Q_FMM.copy(), p.G_NM.copy(), p.W_NFK.copy(), H, cache_pairs=cache_covariance,
                   block_bins=block_bins)
    if resume is None:
        state.normalize()
        ll, ll_its, first = [], [], 1
    else:  # the state is as the interrupted fit left it after resume.iteration
        ll, ll_its, first = list(resume.log_likelihood), [int(i) for i in resume.ll_iterations], resume.iteration + 1
    state.refresh_Qx()
    state.refresh_model()
    if resume is None:
        ll, ll_its = [state.log_likelihood()], [0]
    latest = float(ll[-1])

    for it in range(first, n_iter + 1):
        if update_W:
            state.update_W()
        state.update_H()
        state.update_G()
        state.update_Q()
        state.refresh_Qx()
        if normalize_every and it % normalize_every == 0:
            state.normalize()
            state.refresh_Qx()
            state.refresh_model()
        if it % max(log_likelihood_every, 1) == 0 or it == n_iter:
            ll.append(state.log_likelihood())
            ll_its.append(it)
        stop = ll_its[-1] == it and it < n_iter and converged(ll, ll_its, tolerance)
        if callback is not None:  # the latest value (a device sync only when it is new)
            if ll_its[-1] == it:
                latest = float(ll[-1])
            callback(it, n_iter, latest)
        if stop:
            break
        if on_checkpoint is not None and checkpoint_every and it % checkpoint_every == 0 and it < n_iter:
            on_checkpoint(Checkpoint(
                iteration=it, params=Params(*(np.array(to_host(a)) for a in (state.Q, state.G, state.W, state.H))),
                log_likelihood=np.array([float(v) for v in ll]), ll_iterations=np.array(ll_its)))
    log_likelihood = np.array([float(v) for v in ll])
    params = Params(Q_FMM=state.Q, G_NM=state.G, W_NFK=state.W * (scale**2), H_NKT=state.H)
    return FitResult(params=params, log_likelihood=log_likelihood, ll_iterations=np.array(ll_its))


def converged(log_likelihood, ll_iterations, tolerance: float, window: int = STOP_WINDOW,
              since: int = STOP_SINCE) -> bool:
    """The stopping rule of :func:`fit`: the log-likelihood gained over the last ``window``
    iterations is below ``tolerance`` times its gain since iteration ``since`` (the first
    recorded value at or after it). Relative to the fit's own gain, so it does not depend on
    the data's scale, the number of bins or the additive constant of the likelihood; counted
    from ``since``, not from the start, because the first iterations jump from wherever the
    start was (the demo's prior start: −376 → +36 nats per bin in 5 iterations, then +2 in the
    next 15; counted from the start that rule stopped the demo at 20 iterations, 1.9 dB below
    three fits of 50). Never true before iteration ``since + window``, without a recorded
    value ``window`` iterations back, or with ``tolerance`` 0."""
    if tolerance <= 0:
        return False
    its = [int(i) for i in ll_iterations]
    back = its[-1] - window
    after = [k for k, i in enumerate(its) if i >= since]
    if back < since or back not in its or not after:
        return False
    latest, earlier = float(log_likelihood[-1]), float(log_likelihood[its.index(back)])
    total = latest - float(log_likelihood[after[0]])
    return total <= 0 or latest - earlier < tolerance * total


def fit_activations(X_FTM, params: Params, *, n_iter: int = 20, block_bins: int | None = None):
    """Activations H for new data under a fixed spatial model and fixed bases.

    Runs ``n_iter`` multiplicative H updates (paper eq. 14) with Q, G and W held, from
    flat activations that give every source an equal share of the mean power. Used to
    carry a fitted model into the next time block of a long session: Q, G and W say
    which source is which, so the block's fit starts with source n where the previous
    block ended it.

    Parameters
    ----------
    X_FTM : array (numpy or cupy), shape (F, T, M), complex
    params : Params
        ``Q_FMM``, ``G_NM`` and ``W_NFK`` (in the scale of ``X_FTM``'s power, as
        :func:`fit` returns them); ``H_NKT`` is ignored.

    Returns
    -------
    H_NKT : array, shape (N, K, T), same backend and real dtype as ``X_FTM``; with
    ``params.W_NFK`` it models the power of ``X_FTM``.
    """
    xp = get_xp(X_FTM)
    F, T, M = X_FTM.shape
    real_dtype = X_FTM.real.dtype
    p = params_to(Params(params.Q_FMM, params.G_NM, params.W_NFK, None), xp, real_dtype)
    N, _, K = p.W_NFK.shape
    scale2 = xp.mean(X_FTM.real**2 + X_FTM.imag**2)
    W = p.W_NFK / scale2
    # flat start: mean λ_n = 1/N of the unit mean power, spread over the K bases
    level = 1.0 / (N * xp.maximum(W.sum(axis=2).mean(axis=1), FACTOR_FLOOR))  # (N,)
    H = xp.ascontiguousarray(xp.broadcast_to(level[:, None, None], (N, K, T))).astype(real_dtype)
    state = _State(xp, X_FTM / xp.sqrt(scale2), p.Q_FMM.copy(), p.G_NM.copy(), W, H, cache_pairs=False,
                   block_bins=block_bins)
    state.refresh_Qx()
    state.refresh_model()
    for _ in range(n_iter):
        state.update_H()
    return state.H


def _check_shapes(p: Params, F: int, T: int, M: int, N: int, K: int) -> None:
    expected = {"Q_FMM": (F, M, M), "G_NM": (N, M), "W_NFK": (N, F, K)}
    for name, shape in expected.items():
        got = tuple(getattr(p, name).shape)
        if got != shape:
            raise InputError(None, f"init.{name}", f"shape {got}, expected {shape}")
    got = tuple(p.H_NKT.shape)
    if got not in {(N, K, T), (N, K, 1)}:
        raise InputError(None, "init.H_NKT", f"shape {got}, expected {(N, K, T)}")


class _State:
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
        i, j = self.upper
        B = self.Q[:, :, i] * self.Q[:, :, j].conj()  # (F, M, P)
        C = xp.concatenate([B.real * self.pair_weights, -B.imag * self.pair_weights], axis=2)  # (F, M, 2P)
        C_T = xp.ascontiguousarray(C.transpose(0, 2, 1))
        power = xp.matmul(self.pairs, C_T)  # (F, T, M)
        self.Qx_power = xp.maximum(power, 0.0, out=power)  # rounding can dip below 0 where x̃ ≈ 0

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
        R = xp.empty((F, M, 2 * P), dtype=self.X.real.dtype)
        for bins in self.blocks():
            inv_Y_FMT = xp.ascontiguousarray((1.0 / self.model(bins)).transpose(0, 2, 1))
            pairs = self.pairs[bins] if self.pairs is not None else self._pairs(bins)
            R[bins] = xp.matmul(inv_Y_FMT, pairs)
        R /= T
        upper = R[:, :, :P] + 1j * R[:, :, P:]
        V = xp.zeros((F, M, M, M), dtype=self.Q.dtype)
        V[:, :, self.upper[0], self.upper[1]] = upper
        V[:, :, self.upper[1], self.upper[0]] = upper.conj()
        return V

    def update_Q(self) -> None:
        """Update every row of Q in turn. x̃ is not needed between rows: refresh after."""
        xp = self.xp
        V_all = self.covariances()
        # Diagonal loading far below the data (relative LOADING of the mean power):
        # keeps the solve defined when mics are linearly dependent (a duplicated
        # channel, digital silence in a bin) and is invisible otherwise.
        eye = xp.eye(self.M, dtype=self.Q.dtype)
        trace = xp.trace(V_all, axis1=2, axis2=3).real  # (F, M)
        V_all = V_all + (self.loading * trace / self.M)[:, :, None, None] * eye
        for m in range(self.M):
            V = V_all[:, m]
            b = xp.ascontiguousarray(xp.broadcast_to(eye[:, m:m + 1], (self.F, self.M, 1)))
            q = xp.linalg.solve(xp.matmul(self.Q, V), b)  # (F, M, 1)
            norm = xp.matmul(xp.matmul(q.conj().transpose(0, 2, 1), V), q).real  # (F, 1, 1)
            q = q / xp.sqrt(norm)
            self.Q[:, m, :] = q[:, :, 0].conj()

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
