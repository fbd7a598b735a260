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
from studio_sep.separation.state import BLOCK_BYTES, FACTOR_FLOOR, State, default_block_bins  # noqa: F401 (re-exported)
from studio_sep.util.errors import InputError



#: Largest x xᴴ cache :func:`fit` keeps by default (bytes).
COVARIANCE_CACHE_BYTES = 2 * 1024**3

#: The stopping rule (``tolerance``) looks at the log-likelihood gained over this many
#: iterations.
STOP_WINDOW = 10
#: … against what it gained since this iteration (:func:`converged`).
STOP_SINCE = 5


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
        For the array code (cupy, :class:`~studio_sep.separation.state.State`): keep the
        upper triangle of every ``x_ft x_ftᴴ`` (F·T·M(M+1) reals), so that the Q update
        runs as one real matrix product. Default: cache when that takes at most
        :data:`COVARIANCE_CACHE_BYTES`; otherwise rebuild it every iteration in blocks of
        frequency bins. The CPU kernels (numpy) make the pairs from x in cache and ignore it.
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
    state = make_state(xp, X, p.Q_FMM.copy(), p.G_NM.copy(), p.W_NFK.copy(), H, cache_pairs=cache_covariance,
                       block_bins=block_bins)
    with state.running():  # the CPU state's threads (HostState.running), for every step
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
            state.update_Q_and_Qx()
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
    state = make_state(xp, X_FTM / xp.sqrt(scale2), p.Q_FMM.copy(), p.G_NM.copy(), W, H, cache_pairs=False,
                       block_bins=block_bins)
    with state.running():
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


def make_state(xp, X, Q, G, W, H, *, cache_pairs: bool = True, block_bins: int | None = None) -> State:
    """The fit's state for these arrays: with numpy, the fused CPU kernels
    (:class:`studio_sep.separation.host_kernels.HostState`, same arithmetic to rounding);
    with any other array module (cupy), the array code of
    :class:`studio_sep.separation.state.State`."""
    if xp is np:
        from studio_sep.separation.host_kernels import HostState

        return HostState(xp, X, Q, G, W, H, cache_pairs=cache_pairs, block_bins=block_bins)
    return State(xp, X, Q, G, W, H, cache_pairs=cache_pairs, block_bins=block_bins)


#: The array-code state under its former name (benchmarks and tests drive its steps one by one).
_State = State
