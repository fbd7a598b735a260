"""FastMNMF2 maths on small synthetic mixtures with known answers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from studio_sep.dsp import geometry as spatial
from studio_sep.dsp.backend import get_xp, to_host
from studio_sep.dsp.stft import default_fft_size, istft, stft
from studio_sep.separation import fastmnmf2, wiener
from studio_sep.separation.initial import geometry_init

from . import strict_xp

N_FFT, HOP = 256, 64


def _mixture(seed: int = 0, *, n_sources: int = 3, n_mics: int = 5, seconds: float = 2.0, sr: int = 8000,
             noise: float = 3e-2):
    """Sources with distinct on/off envelopes, mixed by random short filters, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    env = rng.uniform(size=(n_sources, n // 200)) ** 3
    sources = rng.standard_normal((n_sources, n)) * np.repeat(env, 200, axis=1)
    filters = rng.standard_normal((n_mics, n_sources, 8)) * np.exp(-np.arange(8) / 2.0)
    images = np.stack([[np.convolve(sources[s], filters[m, s])[:n] for m in range(n_mics)]
                       for s in range(n_sources)])  # (N, M, S)
    x = images.sum(axis=0) + noise * rng.standard_normal((n_mics, n))
    return x, images


@pytest.fixture(scope="module")
def mixture():
    return _mixture()


def test_log_likelihood_never_decreases_float64(mixture) -> None:
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    result = fastmnmf2.fit(X, n_sources=3, n_basis=4, n_iter=40, normalize_every=7, rng=np.random.default_rng(1))
    ll = result.log_likelihood
    assert ll.shape == (41,)
    steps = np.diff(ll)
    assert steps.min() >= -1e-9 * np.abs(ll).max(), steps.min()
    assert ll[-1] > ll[1] + 0.1  # and it actually climbs


def test_normalisation_leaves_the_likelihood_unchanged(mixture) -> None:
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP) / 3.0
    state = fastmnmf2._State(np, X, *_random_params(X.shape, 3, 4))
    state.refresh_Qx()
    state.refresh_model()
    before = float(state.log_likelihood())
    state.normalize()
    state.refresh_Qx()
    state.refresh_model()
    assert float(state.log_likelihood()) == pytest.approx(before, rel=1e-10)
    np.testing.assert_allclose(state.G.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.einsum("fij,fij->f", state.Q, state.Q.conj()).real, X.shape[2])


def _random_params(shape, n_sources, n_basis, seed=3):
    F, T, M = shape
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((F, M, M)) + 1j * rng.standard_normal((F, M, M))
    G = rng.uniform(0.1, 1, (n_sources, M))
    W = rng.uniform(0.1, 1, (n_sources, F, n_basis))
    H = rng.uniform(0.1, 1, (n_sources, n_basis, T))
    return Q, G, W, H


def test_images_sum_to_the_mixture(mixture) -> None:
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    result = fastmnmf2.fit(X, n_sources=3, n_basis=4, n_iter=5, rng=np.random.default_rng(0))
    images = [istft(wiener.source_image(X, result.params, n), n_fft=N_FFT, hop=HOP, n_samples=x.shape[1])
              for n in range(3)]
    np.testing.assert_allclose(np.sum(images, axis=0), x, atol=1e-10 * np.abs(x).max())
    for image in images:  # and no source is trivially everything or nothing
        assert 0.01 < np.sum(image**2) / np.sum(x**2) < 0.99


def test_separates_a_known_mixture_far_beyond_the_mixture(mixture) -> None:
    from studio_sep.dsp.metrics import si_sdr

    x, truth = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    result = fastmnmf2.fit(X, n_sources=3, n_basis=4, n_iter=60, rng=np.random.default_rng(0))
    est = np.stack([istft(wiener.source_image(X, result.params, n), n_fft=N_FFT, hop=HOP,
                          n_samples=x.shape[1]) for n in range(3)])
    gains = []
    for s in range(3):  # best matching output for each true source, at mic 0
        sep = max(si_sdr(truth[s, 0], est[k, 0]) for k in range(3))
        gains.append(sep - si_sdr(truth[s, 0], x[0]))
    assert np.mean(gains) > 6.0, gains


def test_float32_and_float64_agree(mixture) -> None:
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    r64 = fastmnmf2.fit(X, n_sources=3, n_basis=4, n_iter=15, rng=np.random.default_rng(2))
    r32 = fastmnmf2.fit(X.astype(np.complex64), n_sources=3, n_basis=4, n_iter=15, rng=np.random.default_rng(2))
    assert r32.params.W_NFK.dtype == np.float32 and r32.params.Q_FMM.dtype == np.complex64
    np.testing.assert_allclose(r32.log_likelihood, r64.log_likelihood, rtol=2e-3, atol=2e-3)
    s64 = istft(wiener.source_image(X, r64.params, 0), n_fft=N_FFT, hop=HOP, n_samples=x.shape[1])
    s32 = istft(wiener.source_image(X.astype(np.complex64), r32.params, 0), n_fft=N_FFT, hop=HOP,
                n_samples=x.shape[1])
    assert s32.dtype == np.float32
    assert np.sum((s32 - s64) ** 2) / np.sum(s64**2) < 1e-3


def test_strict_device_arrays_run_the_same_code(mixture) -> None:
    """Like cupy, the strict module refuses implicit numpy conversion: a stray np. call fails."""
    x, _ = mixture
    X_host = stft(x[:, :4000], n_fft=N_FFT, hop=HOP)
    X_dev = strict_xp.asarray(X_host)
    assert get_xp(X_dev) is strict_xp.module
    with pytest.raises(TypeError):
        np.asarray(X_dev)
    with pytest.raises(TypeError):
        np.sqrt(X_dev)
    init = fastmnmf2.Params(*geometry_init(
        spatial.steering_vectors(np.random.default_rng(0).uniform(0, 2, (5, 3)), [[3, 0, 1], [3, 1, 1], [3, -1, 1]],
                                 np.arange(X_host.shape[0]) * 8000 / N_FFT)))
    kwargs = dict(n_sources=3, n_basis=3, n_iter=4, init=init)
    host = fastmnmf2.fit(X_host, rng=np.random.default_rng(5), **kwargs)
    dev = fastmnmf2.fit(X_dev, rng=np.random.default_rng(5), block_bins=5, **kwargs)  # blocks on device arrays
    assert isinstance(dev.params.Q_FMM, strict_xp.StrictArray)
    np.testing.assert_allclose(dev.log_likelihood, host.log_likelihood, rtol=1e-12)
    image_dev = istft(wiener.source_image(X_dev, dev.params, 1), n_fft=N_FFT, hop=HOP, n_samples=4000)
    image_host = istft(wiener.source_image(X_host, host.params, 1), n_fft=N_FFT, hop=HOP, n_samples=4000)
    np.testing.assert_allclose(to_host(image_dev), image_host, rtol=1e-9, atol=1e-12)


def test_geometry_init_diagonalises_the_steering_vectors() -> None:
    rng = np.random.default_rng(0)
    mics = rng.uniform(0, 3, (7, 3))
    sources = rng.uniform(3, 6, (3, 3))
    A = spatial.steering_vectors(mics, sources, np.linspace(0, 8000, 33),
                                 patterns=["cardioid"] * 3 + ["omni"] * 4, aims_deg=[(0, 0)] * 7)
    Q, G = geometry_init(A)
    QA = Q @ A  # (F, M, N): the first N rows pick out one source each, the rest see none
    for f in range(33):
        D = QA[f, :3] / np.diag(QA[f, :3])[None, :]
        np.testing.assert_allclose(D, np.eye(3), atol=1e-9)
        np.testing.assert_allclose(QA[f, 3:], 0, atol=1e-9)
    assert G.shape == (3, 7) and np.all(np.argmax(G, axis=1) == np.arange(3))


def test_pattern_gain_of_first_order_mics() -> None:
    ahead, side, behind = (1, 0, 0), (0, 1, 0), (-1, 0, 0)
    assert spatial.pattern_gain("cardioid", ahead, ahead) == pytest.approx(1.0)
    assert spatial.pattern_gain("cardioid", ahead, side) == pytest.approx(0.5)
    assert spatial.pattern_gain("cardioid", ahead, behind) == pytest.approx(0.0)
    assert spatial.pattern_gain("figure8", ahead, behind) == pytest.approx(-1.0)
    assert spatial.pattern_gain("omni", ahead, behind) == pytest.approx(1.0)


def test_default_fft_size_keeps_the_paper_window() -> None:
    assert default_fft_size(16000) == (1024, 256)
    assert default_fft_size(48000) == (3072, 768)
    n_fft, hop = default_fft_size(44100)
    assert abs(n_fft / 44100 - 0.064) < 0.002 and n_fft == 4 * hop


def test_stft_round_trip_odd_length() -> None:
    x = np.random.default_rng(0).standard_normal((2, 12345))
    for n_fft, hop in ((1024, 256), (3072, 768), (64, 32)):
        y = istft(stft(x, n_fft=n_fft, hop=hop), n_fft=n_fft, hop=hop, n_samples=x.shape[1])
        np.testing.assert_allclose(y, x, atol=1e-12)


def test_pure_modules_import_nothing_heavy() -> None:
    code = ("import sys, studio_sep.separation.fastmnmf2, studio_sep.dsp.stft, studio_sep.dsp.geometry, studio_sep.separation.nmf, "
            "studio_sep.separation.initial, "
            "studio_sep.dsp.metrics; heavy = {'torch', 'pedalboard', 'soundfile', 'cupy', 'pyroomacoustics'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cached_and_streamed_covariances_agree(mixture) -> None:
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    kwargs = dict(n_sources=3, n_basis=4, n_iter=6)
    cached = fastmnmf2.fit(X, cache_covariance=True, rng=np.random.default_rng(4), **kwargs)
    streamed = fastmnmf2.fit(X, cache_covariance=False, rng=np.random.default_rng(4), **kwargs)
    np.testing.assert_allclose(cached.log_likelihood, streamed.log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(cached.params.Q_FMM, streamed.params.Q_FMM, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("cache_covariance", [True, False])
def test_block_size_does_not_change_the_fit(mixture, cache_covariance) -> None:
    """The elementwise steps run over blocks of bins; one bin, an uneven block and all
    bins at once give the same fit (to rounding)."""
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    kwargs = dict(n_sources=3, n_basis=4, n_iter=5, cache_covariance=cache_covariance)
    fits = [fastmnmf2.fit(X, block_bins=b, rng=np.random.default_rng(6), **kwargs) for b in (1, 7, X.shape[0])]
    for other in fits[1:]:
        np.testing.assert_allclose(other.log_likelihood, fits[0].log_likelihood, rtol=1e-12)
        for name in ("Q_FMM", "G_NM", "W_NFK", "H_NKT"):
            np.testing.assert_allclose(getattr(other.params, name), getattr(fits[0].params, name), rtol=1e-8,
                                       atol=1e-12, err_msg=name)


def test_resuming_from_a_checkpoint_equals_the_uninterrupted_fit(mixture) -> None:
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    kwargs = dict(n_sources=3, n_basis=4, n_iter=12, normalize_every=5, log_likelihood_every=3)
    checkpoints = []
    whole = fastmnmf2.fit(X, rng=np.random.default_rng(8), checkpoint_every=4, on_checkpoint=checkpoints.append,
                          **kwargs)
    assert [c.iteration for c in checkpoints] == [4, 8]  # none after the last iteration
    assert list(checkpoints[1].ll_iterations) == [0, 3, 6]
    resumed = fastmnmf2.fit(X, rng=np.random.default_rng(99), resume=checkpoints[1], **kwargs)
    for name in ("Q_FMM", "G_NM", "W_NFK", "H_NKT"):
        np.testing.assert_array_equal(getattr(resumed.params, name), getattr(whole.params, name), err_msg=name)
    np.testing.assert_array_equal(resumed.log_likelihood, whole.log_likelihood)
    np.testing.assert_array_equal(resumed.ll_iterations, whole.ll_iterations)


def test_activations_under_a_fixed_model_carry_it_to_new_data(mixture) -> None:
    """The block carry: H refitted on the second half under the first half's Q, G, W
    models it about as well as the first half's own fit, with sources in the same order."""
    x, images = mixture
    half = x.shape[1] // 2
    first = fastmnmf2.fit(stft(x[:, :half], n_fft=N_FFT, hop=HOP), n_sources=3, n_basis=4, n_iter=40,
                          rng=np.random.default_rng(1))
    X2 = stft(x[:, half:], n_fft=N_FFT, hop=HOP)
    H = fastmnmf2.fit_activations(X2, first.params, n_iter=20)
    assert H.shape == (3, 4, X2.shape[1]) and np.all(H > 0)
    carried = fastmnmf2.Params(first.params.Q_FMM, first.params.G_NM, first.params.W_NFK, H)
    est_carried = [istft(S, n_fft=N_FFT, hop=HOP, n_samples=x.shape[1] - half)[0]
                   for S in wiener.source_images(X2, carried)]
    est_first = [istft(S, n_fft=N_FFT, hop=HOP, n_samples=half)[0]
                 for S in wiener.source_images(stft(x[:, :half], n_fft=N_FFT, hop=HOP), first.params)]
    # output n of the carried model is the same true source as output n of the first half's fit
    best = lambda est, part: [int(np.argmax([abs(np.corrcoef(e, images[k, 0, part])[0, 1]) for k in range(3)]))  # noqa: E731
                              for e in est]
    assert best(est_carried, slice(half, None)) == best(est_first, slice(0, half))
    # and the same code runs on a strict (cupy-like) module
    H_dev = fastmnmf2.fit_activations(strict_xp.asarray(X2), first.params, n_iter=20)
    assert isinstance(H_dev, strict_xp.StrictArray)
    np.testing.assert_allclose(to_host(H_dev), H, rtol=1e-8, atol=1e-12)


def test_the_stopping_rule_on_known_likelihood_curves() -> None:
    """``converged``: the gain over the last 10 iterations against the gain since iteration 5."""
    its = [0, 5, 10, 15, 20]
    # since iteration 5 it gained 2.0, over the last 10 iterations 0.1: 5 %
    assert fastmnmf2.converged([0.0, 8.0, 9.9, 9.98, 10.0], its, 0.06)
    assert not fastmnmf2.converged([0.0, 8.0, 9.9, 9.98, 10.0], its, 0.04)
    # the first iterations' jump from the start does not count: the demo's curve (a prior start)
    # has gained 414 since the start but 2.0 since iteration 5, 0.86 of it in the last 10
    demo = [-376.139, 35.648, 36.822, 37.341, 37.684]
    assert fastmnmf2.converged(demo, its, 0.003, since=0)  # counted from the start: stopped at 20
    assert not fastmnmf2.converged(demo, its, 0.03)
    # never before iteration 15, never without a value 10 iterations back, never with tolerance 0
    assert not fastmnmf2.converged([0.0, 9.0, 10.0], [0, 5, 10], 0.9)
    assert not fastmnmf2.converged([0.0, 9.0, 10.0, 10.0], [0, 7, 14, 21], 0.5)
    assert not fastmnmf2.converged([0.0, 8.0, 9.9, 9.98, 10.0], its, 0.0)
    # a fit that gained nothing has nothing more to gain; the scale and the offset do not matter
    assert fastmnmf2.converged([-5.0, 5.0, 5.0, 5.0], [0, 5, 10, 15], 0.01)
    assert fastmnmf2.converged([-1e3 + 1e3 * v for v in (0.0, 8.0, 9.9, 9.98, 10.0)], its, 0.06)


def test_with_a_tolerance_the_fit_stops_early_and_resumes_to_the_same_stop(mixture) -> None:
    """``tolerance``: the fit ends at the first recorded iteration where the rule holds (not
    before, and the rule really holds there), well short of the maximum; without one it runs
    exactly ``n_iter``; a fit resumed from a checkpoint stops where the uninterrupted one did,
    with the same numbers."""
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP)
    kwargs = dict(n_sources=3, n_basis=4, n_iter=300, log_likelihood_every=5)
    checkpoints = []
    auto = fastmnmf2.fit(X, rng=np.random.default_rng(3), tolerance=0.03, checkpoint_every=10,
                         on_checkpoint=checkpoints.append, **kwargs)
    its, ll = list(auto.ll_iterations), auto.log_likelihood
    assert 15 <= auto.iterations < 300 and its[-1] == auto.iterations
    assert fastmnmf2.converged(ll, its, 0.03)
    assert not any(fastmnmf2.converged(ll[:k + 1], its[:k + 1], 0.03) for k in range(len(its) - 1))
    fixed = fastmnmf2.fit(X, rng=np.random.default_rng(3), **{**kwargs, "n_iter": auto.iterations + 7})
    assert fixed.iterations == auto.iterations + 7  # no tolerance: exactly n_iter
    np.testing.assert_array_equal(fixed.log_likelihood[:len(ll)], ll)  # the same path up to the stop
    resumed = fastmnmf2.fit(X, rng=np.random.default_rng(99), tolerance=0.03, resume=checkpoints[-1], **kwargs)
    assert resumed.iterations == auto.iterations
    np.testing.assert_array_equal(resumed.log_likelihood, auto.log_likelihood)
    np.testing.assert_array_equal(resumed.params.Q_FMM, auto.params.Q_FMM)


def test_a_row_whose_projection_is_undefined_keeps_its_value(mixture) -> None:
    """Eq. 16 divides by √(qᴴ V q). Where rounding leaves that at 0 or below (a float32 fit on
    the zoo, scene 13, made Q NaN this way), the row keeps its previous value; every other bin
    is projected as usual, in complex128 whatever the storage."""
    x, _ = mixture
    X = stft(x, n_fft=N_FFT, hop=HOP).astype(np.complex64)
    Q, G, W, H = (a.astype(np.complex64 if np.iscomplexobj(a) else np.float32)
                  for a in _random_params(X.shape, 3, 4))
    state = fastmnmf2._State(np, X, Q.copy(), G, W, H)
    state.refresh_model()
    V = state.covariances()
    V[0] = -np.eye(X.shape[2], dtype=V.dtype)  # negative definite: qᴴ V q < 0 for every row
    state.project_rows(V, slice(None))
    assert state.Q.dtype == np.complex64 and np.isfinite(state.Q).all()
    np.testing.assert_array_equal(state.Q[0], Q[0])
    assert np.abs(state.Q[1:] - Q[1:]).max() > 0.1 * np.abs(Q).max()
    # the projected bins: each row normalised, q_mᴴ V_m q_m = 1
    norms = np.einsum("fmi,fmij,fmj->fm", state.Q[1:], V[1:], state.Q[1:].conj()).real  # row m is q_mᴴ
    np.testing.assert_allclose(norms, 1.0, rtol=5e-3)  # Q and V rounded to complex64
