"""benchmarks/gpu_fit.py, the script a session with a GPU runs for issue #13's table: on a
machine without cupy its ``run`` times the CPU rows, matches the exported reference
log-likelihood, says why the cuda rows are empty, and writes the table and its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from studio_sep.dsp.backend import cupy_or_none
from studio_sep.separation import fastmnmf2

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def gpu_fit(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_fit as module

    yield module
    sys.modules.pop("gpu_fit", None)


@pytest.mark.skipif(cupy_or_none() is not None, reason="with a GPU the cuda rows are timed, not refused")
def test_run_times_the_cpu_and_matches_the_reference(gpu_fit, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((9, 40, 3)) + 1j * rng.standard_normal((9, 40, 3))).astype(np.complex64)
    ref = fastmnmf2.fit(X.astype(np.complex128), n_sources=2, n_basis=3, n_iter=gpu_fit.REF_ITER,
                        rng=np.random.default_rng(0))
    path = tmp_path / "tiny.npz"
    np.savez(path, X=X, ref_log_likelihood=ref.log_likelihood, n_sources=2, n_basis=3, duration_s=1.0, hop=256,
             n_fft=1024, sample_rate=16000, commit="test")
    out = tmp_path / "out"
    assert gpu_fit.main(["run", str(path), "--out", str(out), "--dtypes", "float64", "--repeats", "1",
                         "--whole-iter", "5"]) == 0
    (md,) = out.glob("gpu_fit-*.md")
    (js,) = out.glob("gpu_fit-*.json")
    rows = {r["device"]: r for r in json.loads(js.read_text())["rows"]}
    assert rows["cpu"]["per_iteration_s"] > 0 and rows["cpu"]["whole_s"] > 0
    assert rows["cpu"]["real_time"] == pytest.approx(1.0 / rows["cpu"]["whole_s"])
    assert rows["cpu"]["ll_rel_diff"] < 1e-8  # the same start and arithmetic as the exported reference
    assert rows["cuda"]["missing"] == "cupy or a CUDA GPU is not available"
    text = md.read_text()
    assert "| cpu | float64 |" in text and "| cuda | float64 | — |" in text
