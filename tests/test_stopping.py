"""``--iterations auto``: each fit stops when its log-likelihood stops improving (the rule
itself, on known curves and a synthetic mixture: tests/test_fastmnmf2.py); here the
setting from the command line and the manifest, and what a run records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studio_sep.session import load_session
from studio_sep.stages import SeparationOptions, separate_session
from studio_sep.stages.checkpoints import load_params
from studio_sep.stages.settings import DEFAULT_ITERATIONS, STOP_TOLERANCE, resolve_settings
from studio_sep.util.errors import InputError


def _with_separation(manifest: Path, name: str, line: str) -> Path:
    text = manifest.read_text()
    out = manifest.parent / name
    out.write_text(text + f"\n[separation]\n{line}\n" if "[separation]" not in text else
                   text.replace("[separation]", f"[separation]\n{line}"))
    return out


def test_iterations_in_the_manifest(rendered_session: Path) -> None:
    auto = resolve_settings(load_session(_with_separation(rendered_session, "auto.toml", 'n_iter = "auto"')),
                            SeparationOptions(ensemble=1))
    assert auto.iterations == "auto" and auto.stop_tolerance == STOP_TOLERANCE and auto.n_iter == DEFAULT_ITERATIONS
    fixed = load_session(_with_separation(rendered_session, "fixed.toml", "n_iter = 40"))
    assert resolve_settings(fixed).iterations == 40
    # the command line over the manifest, both ways
    assert resolve_settings(fixed, SeparationOptions(n_iter="auto")).iterations == "auto"
    with pytest.raises(InputError, match=r"separation\.n_iter.*'fast'.*n_iter = \"auto\"") as err:
        load_session(_with_separation(rendered_session, "bad.toml", 'n_iter = "fast"'))
    assert "bad.toml" in str(err.value)


def test_a_bad_iterations_option_is_one_line_before_any_work(rendered_session: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "studio_sep.cli", "separate", str(rendered_session), "--out", str(out),
                           "--iterations", "lots"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert "--iterations" in text and "'lots'" in text and "--iterations auto" in text
    assert "Traceback" not in text and not out.exists()


def test_an_auto_run_records_how_many_iterations_each_fit_ran(rendered_session: Path, tmp_path: Path) -> None:
    """Every fit of the default ensemble runs at most its maximum and stops at an iteration where
    its own log-likelihood met the rule or at the maximum; run.json says how many, matching the
    saved fits; the progress bar ends full."""
    from studio_sep.separation import fastmnmf2

    session = load_session(rendered_session)
    seen = []
    result = separate_session(session, tmp_path, SeparationOptions(n_iter="auto"),
                              callback=lambda stage, done, total, detail="": seen.append((stage, done, total)))
    sep = result.run["separation"]
    assert sep["iterations"] == "auto" and sep["stop_tolerance"] == STOP_TOLERANCE
    counts = sep["iterations_run"]  # per spatial start (every source has a spot mic), per member
    assert set(counts) == {"geometry", "spot"}
    work = tmp_path / session.name / ".studio-sep"
    for start, members in counts.items():
        assert len(members) == 3 and all(10 <= c <= sep["n_iter"] for c in members)
        for k, count in enumerate(members):
            name = f"fit-member-{k}.npz" if start == "geometry" else f"fit-spot-member-{k}.npz"
            _, extra = load_params(work / name)
            its, ll = [int(i) for i in extra["ll_iterations"]], extra["log_likelihood"]
            assert its[-1] == count
            assert count == sep["n_iter"] or fastmnmf2.converged(ll, its, STOP_TOLERANCE)
    separate = [(done, total) for stage, done, total in seen if stage == "separate"]
    assert separate[-1][0] == separate[-1][1] == 2 * 3 * sep["n_iter"]
    record = json.loads((tmp_path / session.name / "run.json").read_text())
    assert record["stages"]["separate"]["resumed_from_iteration"] == 0
    assert np.isfinite(record["timings_s"]["per_iteration_s"])
