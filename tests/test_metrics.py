"""BSS Eval metrics: the blockwise correlation statistics against direct sums, and the
metrics against fast-bss-eval's own ``bss_eval_sources`` (the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from studio_sep.dsp.metrics import bss_metrics, lag_correlations


@pytest.mark.parametrize(("n_samples", "n_lags"), [(1, 3), (700, 5), (9000, 513), (20000, 4096)])
def test_lag_correlations_equal_direct_sums(n_samples: int, n_lags: int) -> None:
    rng = np.random.default_rng(n_samples)
    a, b = rng.standard_normal((2, n_samples)), rng.standard_normal((3, n_samples))
    R = lag_correlations(a, b, n_lags)
    assert R.shape == (n_lags, 2, 3)
    for lag in (0, 1, n_lags - 1):
        direct = a[:, :max(n_samples - lag, 0)] @ b[:, lag:].T
        np.testing.assert_allclose(R[lag], direct, rtol=0, atol=1e-10 * max(n_samples, 1))


@pytest.mark.parametrize(("n_samples", "filter_length"), [(3001, 512), (2**16 + 17, 512), (40000, 64)])
def test_bss_metrics_equal_fast_bss_eval(n_samples: int, filter_length: int) -> None:
    from fast_bss_eval.numpy import bss_eval_sources

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((3, n_samples))
    ref[1, : n_samples // 2] = 0.0  # a source silent for half the time
    est = ref + 0.3 * rng.standard_normal((3, 3)) @ ref + 0.1 * rng.standard_normal((3, n_samples))
    ours = bss_metrics(ref, est, filter_length=filter_length)
    sdr, sir, sar = bss_eval_sources(ref, est, filter_length=filter_length, compute_permutation=False)[:3]
    for name, theirs in (("sdr", sdr), ("sir", sir), ("sar", sar)):
        np.testing.assert_allclose(ours[name], theirs, rtol=0, atol=1e-9, err_msg=name)
