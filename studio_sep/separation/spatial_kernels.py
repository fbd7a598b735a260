"""The spatial side of the fused CPU kernels: x split into real and imaginary parts with
frames last, x̃ = |Q x|² from it, the M weighted covariances of the Q update made per bin in
cache, and the Q update with the x̃ refresh in one pass per bin
(:class:`studio_sep.separation.host_kernels.HostState` runs them)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from studio_sep.separation.kernel_rows import FASTMATH, model_row


@njit(parallel=True, nogil=True, cache=True)
def split_frames_last(X_FTM, out_F2MT, f0, f1):
    """out[f, 0, i, t] = Re x_fti, out[f, 1, i, t] = Im x_fti: x with frames last, real and
    imaginary parts apart, the layout the kernels below run along frames in."""
    F, T, M = X_FTM.shape
    for f in prange(f0, f1):
        for t in range(T):
            for i in range(M):
                v = X_FTM[f, t, i]
                out_F2MT[f, 0, i, t] = v.real
                out_F2MT[f, 1, i, t] = v.imag


@njit(inline="always", fastmath=FASTMATH)
def _pairs_bin(xr, xi, lam_NFT, G_NM, f, rows, cols, w, re, im, out_MP):
    """out[m] = Σ_t (1/ỹ_ftm) [Re x_i x̄_j, …, Im x_i x̄_j, …] for bin f over the pairs
    (rows, cols), from its split x (xr, xi: (M, T)); w (M, T), re and im (T) are work
    buffers. 1/ỹ is made from λ and G, each pair's products along frames, then one sum along
    frames per (m, pair), all in cache; the imaginary parts of the diagonal pairs are 0. Sums
    in the storage dtype, vectorised along frames, as BLAS's product with the cached pairs
    summed them."""
    M, T = w.shape
    P = rows.shape[0]
    one = np.ones(1, w.dtype)[0]
    zero = np.zeros(1, w.dtype)[0]
    for m in range(M):
        model_row(lam_NFT, G_NM, f, m, w[m])
        for t in range(T):
            w[m, t] = one / w[m, t]
    for p in range(P):
        i, j = rows[p], cols[p]
        if i == j:
            for t in range(T):
                re[t] = xr[i, t] * xr[i, t] + xi[i, t] * xi[i, t]
            for m in range(M):
                s = zero
                for t in range(T):
                    s += w[m, t] * re[t]
                out_MP[m, p] = s
                out_MP[m, P + p] = zero
            continue
        for t in range(T):
            re[t] = xr[i, t] * xr[j, t] + xi[i, t] * xi[j, t]
            im[t] = xi[i, t] * xr[j, t] - xr[i, t] * xi[j, t]
        for m in range(M):
            s_re = zero
            s_im = zero
            for t in range(T):
                s_re += w[m, t] * re[t]
                s_im += w[m, t] * im[t]
            out_MP[m, p] = s_re
            out_MP[m, P + p] = s_im


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _power_bin(xr, xi, Q_MM, re, im, out_MT):
    """out[m] = |Σ_i Q_mi x_i|² along frames for one bin from its split x (re, im: work).
    Compiled once, not inlined, so that :func:`power_split` (a resumed fit's first x̃) and
    :func:`update_Q_and_power` (the uninterrupted fit's) run the same machine code."""
    M, T = out_MT.shape
    for m in range(M):
        qr, qi = Q_MM[m, 0].real, Q_MM[m, 0].imag
        for t in range(T):
            re[t] = qr * xr[0, t] - qi * xi[0, t]
            im[t] = qr * xi[0, t] + qi * xr[0, t]
        for i in range(1, M):
            qr, qi = Q_MM[m, i].real, Q_MM[m, i].imag
            for t in range(T):
                re[t] += qr * xr[i, t] - qi * xi[i, t]
                im[t] += qr * xi[i, t] + qi * xr[i, t]
        for t in range(T):
            out_MT[m, t] = re[t] * re[t] + im[t] * im[t]


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def weighted_pairs_split(Xs_F2MT, lam_NFT, G_NM, rows, cols, out_FMP, f0, f1):
    """out[f] = :func:`_pairs_bin` for bins [f0, f1): the M weighted covariances before /T."""
    _, _, M, T = Xs_F2MT.shape
    real = out_FMP.dtype
    for f in prange(f0, f1):
        w = np.empty((M, T), real)
        re = np.empty(T, real)
        im = np.empty(T, real)
        _pairs_bin(Xs_F2MT[f, 0], Xs_F2MT[f, 1], lam_NFT, G_NM, f, rows, cols, w, re, im, out_FMP[f])


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def power_split(Xs_F2MT, Q_FMM, out_FMT, f0, f1):
    """x̃_ftm = |Σ_i Q_fmi x_fti|², frames last, from the split x: each row of Q applied
    along frames (vectorised), x read once."""
    _, _, M, T = Xs_F2MT.shape
    real = out_FMT.dtype
    for f in prange(f0, f1):
        re = np.empty(T, real)
        im = np.empty(T, real)
        _power_bin(Xs_F2MT[f, 0], Xs_F2MT[f, 1], Q_FMM[f], re, im, out_FMT[f])


@njit(nogil=True, cache=True)
def _solve_unit(A, m, q):
    """q ← A⁻¹ e_m by Gaussian elimination with partial pivoting on |Re|+|Im| (as LAPACK's
    zgesv), A (M, M) overwritten; False where a pivot is exactly 0 (A singular)."""
    M = A.shape[0]
    for i in range(M):
        q[i] = 0
    q[m] = 1
    for k in range(M):
        piv, best = k, abs(A[k, k].real) + abs(A[k, k].imag)
        for i in range(k + 1, M):
            size = abs(A[i, k].real) + abs(A[i, k].imag)
            if size > best:
                piv, best = i, size
        if best == 0:
            return False
        if piv != k:
            for j in range(M):
                A[k, j], A[piv, j] = A[piv, j], A[k, j]
            q[k], q[piv] = q[piv], q[k]
        inv = 1 / A[k, k]
        for i in range(k + 1, M):
            lik = A[i, k] * inv
            for j in range(k + 1, M):
                A[i, j] -= lik * A[k, j]
            q[i] -= lik * q[k]
    for k in range(M - 1, -1, -1):
        acc = q[k]
        for j in range(k + 1, M):
            acc -= A[k, j] * q[j]
        q[k] = acc / A[k, k]
    return True


@njit(nogil=True, cache=True)
def _project_bin(R_MP, rows, cols, n_frames, loading, Q_MM):
    """``State.project_rows`` for one bin, in complex128, from its weighted pairs R (M, 2P):
    V_m = R_m / T as a Hermitian matrix plus the diagonal loading, q = (Q V_m)⁻¹ e_m, and the
    row m of Q becomes q̄ / √(qᴴ V_m q) where that norm is positive and finite and q finite
    (else it keeps its value). Q_MM (storage dtype) is updated in place."""
    M = Q_MM.shape[0]
    P = rows.shape[0]
    Qw = np.empty((M, M), np.complex128)
    V = np.empty((M, M), np.complex128)
    A = np.empty((M, M), np.complex128)
    q = np.empty(M, np.complex128)
    for a in range(M):
        for b in range(M):
            Qw[a, b] = Q_MM[a, b]
    for m in range(M):
        for p in range(P):
            v = complex(R_MP[m, p] / n_frames, R_MP[m, P + p] / n_frames)
            V[rows[p], cols[p]] = v
            V[cols[p], rows[p]] = v.conjugate()
        trace = 0.0
        for i in range(M):
            trace += V[i, i].real
        for i in range(M):
            V[i, i] += loading * trace / M
        for a in range(M):
            for b in range(M):
                acc = 0j
                for c in range(M):
                    acc += Qw[a, c] * V[c, b]
                A[a, b] = acc
        if not _solve_unit(A, m, q):
            continue
        norm = 0.0
        finite = True
        for a in range(M):
            acc = 0j
            for b in range(M):
                acc += V[a, b] * q[b]
            norm += (q[a].conjugate() * acc).real
            finite = finite and np.isfinite(q[a].real) and np.isfinite(q[a].imag)
        if finite and norm > 0 and np.isfinite(norm):
            scale = 1 / np.sqrt(norm)
            for b in range(M):
                Qw[m, b] = q[b].conjugate() * scale
    for a in range(M):
        for b in range(M):
            Q_MM[a, b] = Qw[a, b]


@njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def update_Q_and_power(Xs_F2MT, lam_NFT, G_NM, rows, cols, loading, Q_FMM, Qx_FMT, f0, f1):
    """The Q update and the x̃ refresh after it, one bin at a time while its x is in cache:
    the weighted pairs (:func:`_pairs_bin`), every row of Q_f projected (:func:`_project_bin`),
    then x̃_f from the new Q_f (:func:`_power_bin`). Q_FMM and Qx_FMT are updated in place."""
    _, _, M, T = Xs_F2MT.shape
    P = rows.shape[0]
    real = Qx_FMT.dtype
    for f in prange(f0, f1):
        w = np.empty((M, T), real)
        re = np.empty(T, real)
        im = np.empty(T, real)
        R = np.empty((M, 2 * P), real)
        xr, xi = Xs_F2MT[f, 0], Xs_F2MT[f, 1]
        _pairs_bin(xr, xi, lam_NFT, G_NM, f, rows, cols, w, re, im, R)
        _project_bin(R, rows, cols, T, loading, Q_FMM[f])
        _power_bin(xr, xi, Q_FMM[f], re, im, Qx_FMT[f])
