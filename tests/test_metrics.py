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


@pytest.mark.parametrize("signal", ["noise", "tones", "lowpass"])
def test_the_sar_of_an_exact_sum_is_not_a_number_but_a_separation_keeps_its_sar(signal: str) -> None:
    """A mixture that is exactly the sum of the references has no artefact term: its SAR came
    out as +142 … +inf dB (rounding), and is reported as +inf (null in JSON), also when the
    sum was rounded to float32 as a WAV file would hold it; an estimate with artefacts keeps
    its finite SAR, and the mixture its finite SDR and SIR."""
    from scipy.signal import butter, lfilter

    from studio_sep.dsp.metrics import NUMERICAL_CEILING_DB

    rng = np.random.default_rng(3)
    n = 16000
    ref = {"noise": lambda: rng.standard_normal((3, n)),
           "tones": lambda: np.stack([np.sin(2 * np.pi * f * np.arange(n) / 16000) * (1 + 0.1 * rng.standard_normal(n))
                                      for f in (220, 330, 440)]),
           "lowpass": lambda: lfilter(*butter(4, 0.05), rng.standard_normal((3, n)), axis=1)}[signal]()
    for mix in (ref.sum(axis=0), ref.astype(np.float32).sum(axis=0)):
        metrics = bss_metrics(ref, np.repeat(mix[None], 3, axis=0).astype(np.float64))
        assert np.all(metrics["sar"] == np.inf), metrics["sar"]
        assert np.all(np.isfinite(metrics["sdr"])) and np.all(metrics["sdr"] < 0)  # two others interfere
        assert np.allclose(metrics["sdr"], metrics["sir"], atol=1e-6)
    est = ref + 0.05 * np.std(ref) * rng.standard_normal(ref.shape)
    sar = bss_metrics(ref, est)["sar"]
    assert np.all(np.isfinite(sar)) and np.all(sar < NUMERICAL_CEILING_DB)
