"""The fit's starting point, from arrays: the circular, geometric, spot-mic, dictionary and
prior starts of the spatial and spectral model (:func:`initial_model`), the pieces it is
made of, and the assignment of outputs to sources when they are not named by construction.

Arrays in, arrays out: the stages read the audio (mics, solo reference takes) and pass
their spectrograms here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from studio_sep.dsp import geometry as spatial
from studio_sep.dsp.delays import arrival_times_s
from studio_sep.separation import fastmnmf2
from studio_sep.separation import nmf as prior


def initial_model(X_FTM: np.ndarray, *, n_sources: int, init_kinds: Sequence[str], n_basis: int, seed: int,
                  sample_rate: int, n_fft: int, mic_positions=None, source_positions=None, patterns=None,
                  aims_deg=None, reference_power: Sequence[np.ndarray] | None = None,
                  dictionary_iterations: int = 200, prior_V_NFT: np.ndarray | None = None,
                  prior_kind: str = "none", delay_corrections_s: np.ndarray | None = None,
                  spot_mic_index: Sequence[int] | None = None, pair_delays: Sequence[float] | None = None,
                  start: int = 0):
    """The fit's starting point for the chosen init (``init_kinds``), and a description of it.

    ``X_FTM`` is the mics' STFT at the processing ``sample_rate``. ``geometry`` needs the
    mic and source positions (and the mics' patterns and aims; ``delay_corrections_s``,
    ``(M, N)`` seconds, moves each source's delay at each mic to what the recording shows);
    ``spot`` needs every source's spot mic (``spot_mic_index[n]``, a mic index) and makes
    the same demixer from the transfer functions measured on the recording
    (:func:`spot_transfer`) instead of the typed geometry's; ``delays`` (a pair of mics)
    needs the delays measured on the recording (``pair_delays``, samples, mic 1 against
    mic 0, one per source) and puts them in the typed geometry's steering vectors
    (:func:`pair_transfer`); ``dictionary`` needs
    ``reference_power``, the power spectrogram (F, T_n) of every source's solo take at
    the processing rate, from which NMF bases are learned.

    With a prior (``prior_V_NFT``: every source's power spectrogram estimate), the
    spectral model starts from it: H by NNLS on the solo-take dictionary W with
    ``dictionary`` (paper eq. 11), else W and H by NMF of it. With ``geometry`` too,
    the prior is first brought to the demixer's scale in every frequency bin.

    Drawn from its own random stream (``seed``, 1), so a run that reuses a saved
    initial model continues exactly as one that computed it; ``start`` k > 0 (another
    member of an ensemble: the same init, another random start) draws from
    (``seed``, 1, k).
    """
    # One function so that every random draw keeps its place in the one stream.
    rng = np.random.default_rng([seed, 1] if start == 0 else [seed, 1, start])
    F, T, M = X_FTM.shape
    N = n_sources
    init = fastmnmf2.circular_init(F, M, N, n_basis, rng=rng)
    init = fastmnmf2.Params(init.Q_FMM, init.G_NM, init.W_NFK, rng.uniform(size=(N, n_basis, T)))
    spectral_init = "random W and H"
    # the spatial model set last (called with several kinds: the spot start, else the delays')
    spatial_kind = next((kind for kind in ("spot", "delays", "geometry") if kind in init_kinds), None)
    if spatial_kind:
        A = spot_transfer(X_FTM, spot_mic_index) if spatial_kind == "spot" else typed_transfer(
            F, sample_rate=sample_rate, n_fft=n_fft, mic_positions=mic_positions, source_positions=source_positions,
            patterns=patterns, aims_deg=aims_deg, delay_corrections_s=delay_corrections_s,
            pair_delays=pair_delays if spatial_kind == "delays" else None)
        Q, G = geometry_init(A)
        init = fastmnmf2.Params(Q_FMM=Q, G_NM=G)
    demixer = {"geometry": "the geometric demixer", "spot": "the spot mics' demixer",
               "delays": "the measured delays' demixer"}.get(spatial_kind)
    if "dictionary" in init_kinds:
        W = np.stack([prior.learn_dictionary(power, n_basis=n_basis, n_iter=dictionary_iterations, rng=rng)
                      for power in reference_power])
        init = fastmnmf2.Params(init.Q_FMM, init.G_NM, W, rng.uniform(size=(N, n_basis, T)))
        spectral_init = "dictionary W, random H"
    if prior_V_NFT is not None:
        power_NFT = prior_V_NFT
        if spatial_kind:
            # Two independent estimates of each source, one spatial and one spectral: the
            # prior at the demixer's scale in every bin, then their geometric mean.
            # The bases come from the demixer's output (unless a dictionary gives them);
            # the activations from NNLS of that output combined with the prior.
            demixed_NFT = demixer_power(X_FTM, init.Q_FMM, N)
            power_NFT = np.sqrt(demixed_NFT * power_NFT * (
                demixed_NFT.sum(axis=(0, 2)) / np.maximum(power_NFT.sum(axis=(0, 2)), 1e-30))[None, :, None])
            if init.W_NFK is None:
                init = spectral_from_power(demixed_NFT, init, n_basis=n_basis, rng=rng)
        init = spectral_from_power(power_NFT, init, n_basis=n_basis, rng=rng)
        if spatial_kind:
            spectral_init = ("dictionary W" if "dictionary" in init_kinds else
                             f"W by NMF of {demixer}'s output power") + (
                f", H by NNLS of its geometric mean with the {prior_kind} prior")
        else:
            spectral_init = (f"dictionary W, H by NNLS of the {prior_kind} prior" if "dictionary" in init_kinds
                             else f"W, H by NMF of the {prior_kind} prior")
    elif spatial_kind:
        init = spectral_from_power(demixer_power(X_FTM, init.Q_FMM, N), init, n_basis=n_basis, rng=rng)
        spectral_init = (f"dictionary W, H by NNLS of {demixer}'s output power" if "dictionary"
                         in init_kinds else f"W, H by NMF of {demixer}'s output power")
    return init, spectral_init


def typed_transfer(n_bins: int, *, sample_rate: int, n_fft: int, mic_positions, source_positions, patterns=None,
                   aims_deg=None, delay_corrections_s=None, pair_delays=None) -> np.ndarray:
    """The mixing matrix ``(F, M, N)`` the typed geometry implies (spherical-wave steering
    vectors with the mics' patterns), each source's delays moved by ``delay_corrections_s``
    (``(M, N)`` seconds), or, for a pair, set to the ``pair_delays`` measured on the
    recording (:func:`pair_transfer`)."""
    freqs = np.arange(n_bins) * sample_rate / n_fft
    A = spatial.steering_vectors(mic_positions, source_positions, freqs, patterns=patterns, aims_deg=aims_deg)
    if delay_corrections_s is not None:
        A = A * np.exp(-2j * np.pi * freqs[:, None, None] * np.asarray(delay_corrections_s)[None])
    if pair_delays is not None:
        t = arrival_times_s(np.asarray(mic_positions, dtype=float), source_positions)  # (M, N)
        A = pair_transfer(A, (t[1] - t[0]) * sample_rate, pair_delays, n_fft=n_fft)
    return A


def geometry_init(A_FMN, *, g_floor: float = 1e-2):
    """Initial ``Q`` and ``G`` from steering vectors (paper §3.1.2, eq. 12).

    ``Q_f = [A_f^+ ; U_f^H]``: the pseudo-inverse of the mixing matrix (N rows, so the
    n-th output of the diagonaliser is the n-th source), completed by an orthonormal
    basis of the orthogonal complement of the sources' steering vectors (M − N rows).
    Each row is scaled to unit norm so that no channel starts dominant by accident.
    ``G`` is diagonally dominant: ``g_nn = 1``, every other weight ``g_floor``.

    Returns
    -------
    Q_FMM : ndarray, shape (F, M, M), complex128
    G_NM : ndarray, shape (N, M)
    """
    A = np.asarray(A_FMN)
    F, M, N = A.shape
    if N > M:
        raise ValueError(f"geometry init needs at least as many mics as sources (M={M}, N={N})")
    U, s, Vh = np.linalg.svd(A, full_matrices=True)  # A = U[:, :, :N] diag(s) Vh
    s_inv = np.where(s > s.max(axis=1, keepdims=True) * 1e-9, 1.0 / np.maximum(s, 1e-300), 0.0)
    pinv = np.conj(np.swapaxes(Vh, 1, 2)) @ (s_inv[:, :, None] * np.conj(np.swapaxes(U[:, :, :N], 1, 2)))
    null = np.conj(np.swapaxes(U[:, :, N:], 1, 2))  # (F, M-N, M)
    Q = np.concatenate([pinv, null], axis=1)
    Q = Q / np.linalg.norm(Q, axis=2, keepdims=True)
    G = np.full((N, M), g_floor)
    G[np.arange(N), np.arange(N)] = 1.0
    return Q, G


#: A bin counts for a source's transfer functions when its spot mic's share of the spot
#: mics' power there (each mic's power relative to its median in that frequency) is at
#: least this (:func:`spot_transfer`).
SPOT_SHARE = 0.6
#: Fewer dominated frames than this in a frequency: that source's column is its spot mic alone.
SPOT_MIN_FRAMES = 3


def spot_transfer(X_FTM: np.ndarray, spot_mic_index: Sequence[int], *, share: float = SPOT_SHARE) -> np.ndarray:
    """Every source's transfer function to every mic, measured on the recording relative
    to its spot mic: the mixing matrix the geometric start computes from typed positions
    and patterns (:func:`studio_sep.dsp.geometry.steering_vectors`), here from the audio.

    In each frequency, source n's column is ``Σ_t w x_ft conj(x_ft,s) / Σ_t w |x_ft,s|²``
    (s: its spot mic) over the frames where the spot mic is dominated by its own source
    (``w = 1`` where its share of the spot mics' power is at least ``share``, each mic's
    power first divided by its median in that bin so that a hot preamp does not win every
    bin). Where fewer than :data:`SPOT_MIN_FRAMES` frames qualify, the column is the spot
    mic alone (a unit vector). Coordinates and patterns typed wrong do not enter; the
    reverberation within a frame does.

    Returns
    -------
    A_FMN : ndarray, shape (F, M, N), complex
    """
    spot = [int(m) for m in spot_mic_index]
    F, T, M = X_FTM.shape
    P = np.abs(X_FTM[:, :, spot]) ** 2  # (F, T, N)
    P = P / np.maximum(np.median(P, axis=1, keepdims=True), 1e-30)
    ratio = P / np.maximum(P.sum(axis=2, keepdims=True), 1e-30)
    A = np.empty((F, M, len(spot)), dtype=np.result_type(X_FTM.dtype, np.complex64))
    for n, s in enumerate(spot):
        w = (ratio[:, :, n] >= share).astype(X_FTM.real.dtype)
        ref = X_FTM[:, :, s]
        cross = np.einsum("ft,ftm->fm", w * np.conj(ref), X_FTM)
        power = np.einsum("ft,ft->f", w, np.abs(ref) ** 2)
        A[:, :, n] = cross / np.maximum(power, 1e-30)[:, None]
        thin = w.sum(axis=1) < SPOT_MIN_FRAMES
        A[thin, :, n] = 0.0
        A[thin, s, n] = 1.0
    return A


def pair_transfer(A_typed_FMN: np.ndarray, typed_delays: Sequence[float], measured_delays: Sequence[float], *,
                  n_fft: int) -> np.ndarray:
    """Every source's transfer functions to a spaced pair with the delays measured on the
    recording (``measured_delays``, samples, mic 1 against mic 0: the strongest GCC-PHAT
    peaks, :func:`studio_sep.dsp.delays.gcc_phat_peaks`) instead of the typed positions'
    (``typed_delays``): the measured delays go to the sources in the order of their typed
    ones (which source is left of which survives coordinates typed a few centimetres off;
    the delays themselves do not), the magnitudes stay the typed geometry's
    (``A_typed_FMN``, relative to mic 0).

    Returns
    -------
    A_FMN : ndarray, shape (F, 2, N), complex
    """
    F, _, N = A_typed_FMN.shape
    tau = np.empty(N)
    tau[np.argsort(np.asarray(typed_delays), kind="stable")] = np.sort(np.asarray(measured_delays, dtype=float))
    freqs = np.arange(F) / n_fft  # cycles per sample
    magnitude = np.abs(A_typed_FMN) / np.maximum(np.abs(A_typed_FMN[:, :1, :]), 1e-30)
    phase = np.stack([np.ones((len(freqs), N)), np.exp(-2j * np.pi * freqs[:, None] * tau[None])], axis=1)
    return magnitude * phase


def demixer_power(X_FTM: np.ndarray, Q_FMM: np.ndarray, n_sources: int) -> np.ndarray:
    """Output power ``|q_fn^H x_ft|²`` of the first ``n_sources`` rows of a demixer, (N, F, T)."""
    Qx = np.matmul(X_FTM, np.swapaxes(Q_FMM, 1, 2)[:, :, :n_sources])  # (F, T, N)
    return np.moveaxis(np.abs(Qx) ** 2, 2, 0)


def spectral_from_power(power_NFT: np.ndarray, init, *, n_basis: int, rng: np.random.Generator):
    """Start λ from a power estimate of every source (a prior's, or the geometric
    demixer's output, :func:`demixer_power`).

    With a dictionary W, H is its NNLS fit to that power (paper eq. 11); without one,
    W and H are an NMF of it. Either way the spectral model starts consistent with the
    estimate instead of at random.
    """
    N = init.G_NM.shape[0]
    if init.W_NFK is not None:
        H = np.stack([prior.nnls_activations(power_NFT[n], init.W_NFK[n]) for n in range(N)])
        return fastmnmf2.Params(init.Q_FMM, init.G_NM, init.W_NFK, H + 1e-3 * H.mean())
    W, H = zip(*(prior.nmf(power_NFT[n], n_basis=n_basis, n_iter=50, rng=rng) for n in range(N)))
    return fastmnmf2.Params(init.Q_FMM, init.G_NM, np.stack(W), np.stack(H) + 1e-3 * np.mean(H))


def assign_outputs(energy_NM: np.ndarray, stem_mic_index: Sequence[int]) -> np.ndarray:
    """Order of the outputs so that output n is source n, when the init does not name them.

    Each output goes to the source whose stem mic (``stem_mic_index[n]``: the mic index
    of source n's stem mic) takes the largest share of that output's energy (Hungarian
    assignment; ``energy_NM`` is each output's energy at each mic), which does not
    depend on the random start.
    """
    from scipy.optimize import linear_sum_assignment

    N = energy_NM.shape[0]
    share_NM = energy_NM / np.maximum(energy_NM.sum(axis=0, keepdims=True), 1e-30)
    score = np.stack([share_NM[:, m] for m in stem_mic_index], axis=1)
    outputs, sources = linear_sum_assignment(-score)  # score[output, source]
    order = np.empty(N, dtype=int)
    order[sources] = outputs
    return order


def match_outputs(params, reference) -> np.ndarray:
    """Order of ``params``' outputs so that output ``order[n]`` continues ``reference``'s output n.

    Two fits of one mixture from different starts find the sources in any order. Each
    output is matched to the reference output whose spectral model ``log λ = log W H``
    it correlates with best, over all bins (Hungarian assignment on the correlations),
    so a fit from a start that names no sources takes the names of one that does.
    """
    from scipy.optimize import linear_sum_assignment

    def centred_log_lambda(p) -> np.ndarray:
        lam = np.einsum("nfk,nkt->nft", np.asarray(p.W_NFK), np.asarray(p.H_NKT))
        log_lam = np.log(np.maximum(lam, 1e-30)).reshape(len(lam), -1)
        log_lam -= log_lam.mean(axis=1, keepdims=True)
        return log_lam / np.maximum(np.linalg.norm(log_lam, axis=1, keepdims=True), 1e-30)

    corr = centred_log_lambda(params) @ centred_log_lambda(reference).T  # [output k, reference n]
    outputs, references = linear_sum_assignment(-corr)
    order = np.empty(len(references), dtype=int)
    order[references] = outputs
    return order


def reorder_outputs(params, order):
    """``params`` with its outputs in ``order`` (output ``order[n]`` becomes output n)."""
    order = np.asarray(order)
    return fastmnmf2.Params(params.Q_FMM, params.G_NM[order], params.W_NFK[order], params.H_NKT[order])
