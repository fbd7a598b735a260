"""benchmarks/classnet_eval.py's statistics: the 95 % interval of a class's mean SDR and the
paired per-class differences between checkpoints that its summary ranks them by."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "classnet_eval.py"
_spec = importlib.util.spec_from_file_location("classnet_eval", _SCRIPT)
classnet_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(classnet_eval)


def _row(id_: str, cls: str, sdr: float, mix: float = -3.0) -> dict:
    return {"id": id_, "class": cls, "level_db": -1.0,
            "est": {"sdr": sdr, "sar": sdr, "si_sdr": sdr - 1.0},
            "mix": {"sdr": mix, "sar": mix, "si_sdr": mix}}


def test_the_interval_of_a_mean_is_students_t() -> None:
    mean, half = classnet_eval.mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764; s = √2.5; n = 5
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.7764451 * np.sqrt(2.5) / np.sqrt(5), rel=1e-6)
    assert np.isnan(classnet_eval.mean_ci95([7.0])[1])
    assert np.isnan(classnet_eval.mean_ci95([])[0])


def test_class_statistics_carry_the_interval_and_leave_out_unscored_examples() -> None:
    rows = [_row("a", "violin", 4.0), _row("b", "violin", 6.0), _row("c", "violin", float("nan"))]
    s = classnet_eval.stats(rows)
    assert s["n"] == 3 and s["unscored"] == 1
    assert s["est_sdr_mean"] == pytest.approx(5.0)
    assert s["est_sdr_ci95"] == pytest.approx(12.7062047 * np.sqrt(2.0) / np.sqrt(2), rel=1e-6)
    assert s["sdri"] == pytest.approx(8.0)


def test_paired_differences_cancel_the_examples_own_spread() -> None:
    # b is a + 0.5 dB on every violin example and a − 1 dB on every piano one, whatever the example's level
    levels = [-6.0, 0.0, 9.0, 2.0]
    a = [_row(f"v{k}", "violin", x) for k, x in enumerate(levels)] + [_row(f"p{k}", "piano", x) for k, x in
                                                                      enumerate(levels)]
    b = [{**r, "est": {**r["est"], "sdr": r["est"]["sdr"] + (0.5 if r["class"] == "violin" else -1.0)}} for r in a]
    b.append(_row("only-in-b", "violin", 40.0))  # no partner: left out
    d = classnet_eval.paired_differences(a, b)
    assert d["violin"][0] == pytest.approx(0.5) and d["violin"][1] == pytest.approx(0.0, abs=1e-12)
    assert d["piano"][0] == pytest.approx(-1.0)
    assert d["all"][0] == pytest.approx(-0.25)


def test_the_summary_ranks_checkpoints_by_their_worst_class() -> None:
    def result(violin: float, piano: float) -> dict:
        rows = [_row(f"v{k}", "violin", violin + k) for k in range(3)] + [
            _row(f"p{k}", "piano", piano + k) for k in range(3)]
        table = {c: classnet_eval.stats([r for r in rows if r["class"] == c]) for c in ("piano", "violin")}
        table["all"] = classnet_eval.stats(rows)
        return {"table": table, "rows": rows,
                "all_targets_met": all(table[c]["meets_target"] for c in ("piano", "violin"))}

    results = {"/x/first.safetensors": result(3.0, 8.0), "/x/second.safetensors": result(5.0, 6.0)}
    lines = classnet_eval.summary_lines(results)
    body = [line for line in lines if line.startswith("| `")]
    assert body[0].startswith("| `second.safetensors` | 7.00 (-2.00 ± 0.00) | 6.00 (+2.00 ± 0.00)")
    assert body[0].endswith("| violin | yes |")  # worst class 6.00 ≥ 4.15
    assert body[1].startswith("| `first.safetensors` | 9.00 | 4.00 |") and body[1].endswith("| violin | no |")
