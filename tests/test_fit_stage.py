"""The separate stage's fit (stages/fit.py): a float32 fit that diverges is redone in float64."""

from __future__ import annotations

import numpy as np
import pytest

from studio_sep.separation import fastmnmf2
from studio_sep.stages.fit import run_fit
from studio_sep.stages.settings import ResolvedSettings
from studio_sep.util.notices import report_warnings


def _settings(dtype: str) -> ResolvedSettings:
    return ResolvedSettings(init=("geometry",), n_iter=5, n_basis=4, n_fft=128, hop=32, device="cpu", dtype=dtype,
                            seed=0, sample_rate=8000, processing_sample_rate=8000, stem_mics={}, subtype="FLOAT")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow and NaN warnings of the float32 attempt
def test_a_float32_fit_that_diverges_is_fitted_again_in_float64(tmp_path) -> None:
    """A start whose bases overflow float32 (1e39 > 3.4e38) makes the float32 fit NaN at once;
    float64 holds it. The stage warns, fits again from the same start in float64 and returns
    finite parameters equal to a float64 fit's."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((65, 120, 3)) + 1j * rng.standard_normal((65, 120, 3))
    W = rng.uniform(size=(2, 65, 4))
    W[0, 5, 1] = 1e39
    init = fastmnmf2.Params(None, np.full((2, 3), 0.5), W, None)
    warnings: list[str] = []
    with report_warnings(warnings.append):
        fit, first = run_fit(X, init, _settings("float32"), tmp_path, "fp", lambda *a, **k: None, resume=False)
    assert warnings == ["the fit diverged in float32 (NaN/inf after 5 iterations): fitting it again from its "
                        "start in float64"]
    assert first == 0 and fit.params.W_NFK.dtype == np.float64
    assert all(np.isfinite(a).all() for a in (fit.params.Q_FMM, fit.params.G_NM, fit.params.W_NFK, fit.params.H_NKT))
    direct, _ = run_fit(X, init, _settings("float64"), tmp_path / "f64", "fp", lambda *a, **k: None, resume=False)
    np.testing.assert_array_equal(fit.params.W_NFK, direct.params.W_NFK)
    np.testing.assert_array_equal(fit.log_likelihood, direct.log_likelihood)
