"""The fused CPU kernels (``host_kernels.HostState``) against the paper's formulae written
plainly with einsum, and against the array code that cupy runs (``fastmnmf2._State``)."""

from __future__ import annotations

import numpy as np
import pytest

from studio_sep.separation import fastmnmf2, host_kernels

F, T, M, N, K = 17, 60, 4, 3, 5


def _problem(seed: int = 0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    complex_dtype = np.result_type(dtype, np.complex64)
    X = (rng.standard_normal((F, T, M)) + 1j * rng.standard_normal((F, T, M))).astype(complex_dtype)
    Q = (rng.standard_normal((F, M, M)) + 1j * rng.standard_normal((F, M, M))).astype(complex_dtype)
    G = rng.uniform(0.1, 1, (N, M)).astype(dtype)
    W = rng.uniform(0.1, 1, (N, F, K)).astype(dtype)
    H = rng.uniform(0.1, 1, (N, K, T)).astype(dtype)
    return X, Q, G, W, H


class _Reference:
    """One iteration's W, H, G updates and the log-likelihood from the formulae (paper eqs.
    13–15), every quantity over all (f, t) at once."""

    def __init__(self, X, Q, G, W, H):
        self.X, self.Q, self.G, self.W, self.H = X, Q, G, W, H

    def Qx(self):
        return np.abs(np.einsum("fmi,fti->ftm", self.Q, self.X)) ** 2

    def Y(self):
        return np.einsum("nfk,nkt,nm->ftm", self.W, self.H, self.G)

    def update_W(self):
        Qx, Y = self.Qx(), self.Y()
        num = np.einsum("nm,ftm,nkt->nfk", self.G, Qx / Y**2, self.H)
        den = np.einsum("nm,ftm,nkt->nfk", self.G, 1 / Y, self.H)
        self.W = np.maximum(self.W * np.sqrt(num / den), fastmnmf2.FACTOR_FLOOR)

    def update_H(self):
        Qx, Y = self.Qx(), self.Y()
        num = np.einsum("nm,ftm,nfk->nkt", self.G, Qx / Y**2, self.W)
        den = np.einsum("nm,ftm,nfk->nkt", self.G, 1 / Y, self.W)
        self.H = np.maximum(self.H * np.sqrt(num / den), fastmnmf2.FACTOR_FLOOR)

    def update_G(self):
        Qx, Y = self.Qx(), self.Y()
        lam = np.einsum("nfk,nkt->nft", self.W, self.H)
        num = np.einsum("nft,ftm->nm", lam, Qx / Y**2)
        den = np.einsum("nft,ftm->nm", lam, 1 / Y)
        self.G = np.maximum(self.G * np.sqrt(num / den), fastmnmf2.FACTOR_FLOOR)

    def log_likelihood(self):
        Qx, Y = self.Qx(), self.Y()
        logdet = np.log(np.abs(np.linalg.det(self.Q)))
        return (-(Qx / Y + np.log(Y)).sum() + 2 * T * logdet.sum()) / (F * T)


def test_fused_updates_equal_the_formulae() -> None:
    X, Q, G, W, H = _problem()
    ref = _Reference(X, Q, G, W, H)
    state = host_kernels.HostState(np, X, Q.copy(), G.copy(), W.copy(), H.copy())
    state.refresh_Qx()
    state.refresh_model()
    np.testing.assert_allclose(state.Qx_FMT.transpose(0, 2, 1), ref.Qx(), rtol=1e-12, atol=1e-12 * ref.Qx().max())
    assert float(state.log_likelihood()) == pytest.approx(ref.log_likelihood(), rel=1e-12)
    for name in ("update_W", "update_H", "update_G"):
        getattr(state, name)()
        getattr(ref, name)()
    np.testing.assert_allclose(state.W, ref.W, rtol=1e-12)
    np.testing.assert_allclose(state.H, ref.H, rtol=1e-12)
    np.testing.assert_allclose(state.G, ref.G, rtol=1e-12)
    assert float(state.log_likelihood()) == pytest.approx(ref.log_likelihood(), rel=1e-12)
    # the covariances: (1/T) Σ_t x xᴴ / ỹ_m
    V_ref = np.einsum("fti,ftj,ftm->fmij", X, X.conj(), 1 / ref.Y()) / T
    np.testing.assert_allclose(state.covariances(), V_ref, rtol=1e-10, atol=1e-13 * np.abs(V_ref).max())


def test_a_fused_fit_equals_the_array_code_fit() -> None:
    """Whole iterations (Q included, normalisation every 3rd), float64: the fused state and
    the array code cupy runs agree to rounding."""
    X, Q, G, W, H = _problem(1)
    states = [cls(np, X, Q.copy(), G.copy(), W.copy(), H.copy()) for cls in (fastmnmf2._State, host_kernels.HostState)]
    lls = [[], []]
    for s, ll in zip(states, lls):
        s.normalize()
        s.refresh_Qx()
        s.refresh_model()
        for it in range(1, 7):
            s.update_W()
            s.update_H()
            s.update_G()
            s.update_Q_and_Qx()  # the fused state: one compiled pass; the array code: LAPACK, then x̃
            if it % 3 == 0:
                s.normalize()
                s.refresh_Qx()
                s.refresh_model()
            ll.append(float(s.log_likelihood()))
    np.testing.assert_allclose(lls[1], lls[0], rtol=1e-12)
    assert lls[0][-1] > lls[0][0]
    for name in ("Q", "G", "W", "H"):
        a, b = getattr(states[0], name), getattr(states[1], name)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12 * np.abs(a).max(), err_msg=name)


def test_float32_ratios_do_not_overflow_near_the_floor() -> None:
    """Where λ sits at its floor (W and H at 1e-12: ỹ ≈ 1e-24) in silent frames (x̃ = 0),
    1/ỹ² is beyond float32 (1e48): x̃/ỹ² must be formed as (x̃/ỹ)/ỹ, which gives 0 there,
    as the array code does, not 0·inf = NaN."""
    X, Q, G, W, H = _problem(2, np.float32)
    X[:, :5] = 0
    W[:, :3] = fastmnmf2.FACTOR_FLOOR
    H[:, :, :5] = fastmnmf2.FACTOR_FLOOR
    states = [cls(np, X, Q.copy(), G.copy(), W.copy(), H.copy()) for cls in (fastmnmf2._State, host_kernels.HostState)]
    for state in states:
        state.refresh_Qx()
        state.refresh_model()
        for name in ("update_W", "update_H", "update_G"):
            getattr(state, name)()
            for p in ("W", "H", "G"):
                assert np.all(np.isfinite(getattr(state, p))), (type(state).__name__, name, p)
                assert getattr(state, p).dtype == np.float32
    for p in ("W", "H", "G"):
        np.testing.assert_allclose(getattr(states[1], p), getattr(states[0], p), rtol=1e-4, err_msg=p)


def test_the_fused_q_update_equals_the_lapack_one_and_keeps_a_silent_bin() -> None:
    """``update_Q_and_Qx`` (pairs, projections and x̃ per bin in one kernel, the solves by
    its own elimination) against the array code's update_Q (numpy's batched LAPACK solves)
    and refresh_Qx, float64; a bin where x is exactly 0 (its covariances 0, every solve
    singular) keeps its rows in the kernel and stays finite."""
    X, Q, G, W, H = _problem(6)
    states = [cls(np, X, Q.copy(), G.copy(), W.copy(), H.copy()) for cls in (fastmnmf2._State, host_kernels.HostState)]
    for state in states:
        state.refresh_Qx()
        state.refresh_model()
        state.update_Q_and_Qx()
    np.testing.assert_allclose(states[1].Q, states[0].Q, rtol=1e-11, atol=1e-13 * np.abs(states[0].Q).max())
    np.testing.assert_allclose(states[1].Qx_FMT.transpose(0, 2, 1), states[0].Qx_power, rtol=1e-10,
                               atol=1e-13 * states[0].Qx_power.max())
    assert not np.allclose(states[1].Q, Q)  # the rows did move

    X[3] = 0
    state = host_kernels.HostState(np, X, Q.copy(), G.copy(), W.copy(), H.copy())
    state.refresh_Qx()
    state.refresh_model()
    state.update_Q_and_Qx()
    np.testing.assert_array_equal(state.Q[3], Q[3])
    assert np.isfinite(state.Q).all() and np.isfinite(state.Qx_FMT).all()
    assert not np.allclose(state.Q[4], Q[4])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fused_pass_leaves_the_x_power_refresh_qx_makes(dtype) -> None:
    """A fit resumed from a checkpoint makes x̃ with ``refresh_Qx`` where the uninterrupted
    fit had it from ``update_Q_and_Qx``: the two must agree bit for bit."""
    X, Q, G, W, H = _problem(7, dtype)
    state = host_kernels.HostState(np, X, Q, G, W, H)
    state.refresh_Qx()
    state.refresh_model()
    for _ in range(2):
        state.update_Q_and_Qx()
        fused = state.Qx_FMT.copy()
        state.refresh_Qx()
        np.testing.assert_array_equal(state.Qx_FMT, fused)


def test_log_likelihood_at_the_floors_with_many_mics() -> None:
    """The fused log-likelihood multiplies ỹ over groups of mics before one logarithm: with
    W, H and G at their floors (ỹ ≈ 1e-36) and 12 mics, the product over all of them
    (1e-432) would underflow float64 to 0 and its logarithm to -inf; the groups keep it
    finite and equal to the array code's sum of logarithms."""
    rng = np.random.default_rng(5)
    M12 = 12
    X = (rng.standard_normal((F, T, M12)) + 1j * rng.standard_normal((F, T, M12))) * 1e-20
    Q = np.tile(np.eye(M12, dtype=complex), (F, 1, 1))
    G = np.full((N, M12), fastmnmf2.FACTOR_FLOOR)
    W = np.full((N, F, K), fastmnmf2.FACTOR_FLOOR)
    H = np.full((N, K, T), fastmnmf2.FACTOR_FLOOR)
    lls = []
    for cls in (fastmnmf2._State, host_kernels.HostState):
        state = cls(np, X, Q.copy(), G.copy(), W.copy(), H.copy())
        state.refresh_Qx()
        state.refresh_model()
        lls.append(float(state.log_likelihood()))
    assert np.isfinite(lls[1])
    assert lls[1] == pytest.approx(lls[0], rel=1e-12)


def test_fit_uses_the_fused_kernels_on_numpy_and_stays_in_float32() -> None:
    X, *_ = _problem(3, np.float32)
    state = fastmnmf2.make_state(np, X, *_problem(3, np.float32)[1:])
    assert isinstance(state, host_kernels.HostState)
    assert state.X_F2MT.dtype == state.Qx_FMT.dtype == state._A_FNT.dtype == np.float32
    result = fastmnmf2.fit(X, n_sources=N, n_basis=K, n_iter=3, rng=np.random.default_rng(0))
    assert result.params.Q_FMM.dtype == np.complex64
    for a in (result.params.G_NM, result.params.W_NFK, result.params.H_NKT):
        assert a.dtype == np.float32


def test_kernel_threads_follow_the_blas_limit() -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        assert host_kernels.kernel_threads() == 1


def test_two_threads_split_the_bins_and_give_the_same_fit() -> None:
    """Inside ``running`` with two threads, BLAS is held to one thread and every step is
    split over bins (or frames) among two threads: the same numbers as one thread, and
    the BLAS limit restored afterwards."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"]

    X, Q, G, W, H = _problem(4)
    states = []
    for n_threads in (1, 2):
        state = host_kernels.HostState(np, X, Q.copy(), G.copy(), W.copy(), H.copy())
        state.threads = n_threads
        before = blas_threads()
        with state.running():
            if n_threads == 2:
                assert set(blas_threads()) == {1}
                assert state._pool is not None
            state.refresh_Qx()
            state.refresh_model()
            for _ in range(3):
                for step in ("update_W", "update_H", "update_G", "update_Q_and_Qx", "update_Q", "refresh_Qx"):
                    getattr(state, step)()
            state.ll = float(state.log_likelihood())
        assert blas_threads() == before and state._pool is None
        states.append(state)
    for name in ("Q", "G", "W", "H", "Qx_FMT", "lam"):
        ref = getattr(states[0], name)
        np.testing.assert_allclose(getattr(states[1], name), ref, rtol=1e-11, atol=1e-12 * np.abs(ref).max(),
                                   err_msg=name)  # x̃ sums terms of both signs: rounding near its zeros
    assert states[1].ll == pytest.approx(states[0].ll, rel=1e-13)
