"""Worker processes, parent side: a job folder per job, starting the worker, waiting for it,
and saying why one died.

A worker is a fresh ``python -c`` process running :data:`WORKER_ENTRY` (the code in
:mod:`.runtime`) on one job folder: ``job.json`` says what to do, ``input.npy`` holds the
audio of a render job, and the worker writes ``result.json`` and ``output.npy`` (render)
or ``describe.jsonl`` (describe). Its stderr goes to ``stderr.txt``, whose last line
becomes part of the failure reason when it dies without a result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studio_sep.mixing.plugins.errors import PluginJobError
from studio_sep.mixing.plugins.spec import PluginSpec

WORKER_ENTRY = ("studio_sep.mixing.plugins.runtime", "worker_main")
"""(module, function) a worker process runs with the job folder as its only argument."""


def start_worker(job: Path) -> tuple[subprocess.Popen, Any]:
    """Start ``python -c`` on :data:`WORKER_ENTRY` for the job folder; stderr goes to a file."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    stderr = open(job / "stderr.txt", "wb")  # noqa: SIM115 - closed by the caller
    module, function = WORKER_ENTRY
    code = f"import sys; from {module} import {function}; {function}(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(job)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=str(job))
    return proc, stderr


def death_reason(returncode: int, stderr_path: Path) -> str:
    """Why a worker ended without a result: its signal or exit status, and its last message."""
    if returncode < 0:
        try:
            what = signal.Signals(-returncode).name
        except ValueError:
            what = f"signal {-returncode}"
        reason = f"worker crashed ({what})"
    else:
        reason = f"worker exited with status {returncode} without a result"
    last = [line for line in stderr_path.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("DPF warning")] if stderr_path.exists() else []
    return f"{reason}; last message: {last[-1].strip()[:200]}" if last else reason


def render_in_worker(specs: Sequence[PluginSpec], x_CS: np.ndarray, sample_rate: float, *,
                     infos: dict[str, dict[str, Any]], names: list[str],
                     timeout_s: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one render job in a fresh worker; returns its output and its result record.

    ``infos`` maps each VST3 bundle path to its described ``PluginInfo.to_dict()``;
    ``names`` name the job's plugins in a :class:`PluginJobError`.
    """
    with tempfile.TemporaryDirectory(prefix="studio-sep-render-") as tmp:
        job = Path(tmp)
        np.save(job / "input.npy", x_CS)
        (job / "job.json").write_text(json.dumps({
            "kind": "render", "specs": [spec.to_dict() for spec in specs], "infos": infos,
            "sample_rate": sample_rate, "started_at": time.time()}))
        proc, stderr = start_worker(job)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise PluginJobError(names, f"timed out after {timeout_s:g} s (worker killed)") from None
        finally:
            stderr.close()
        result_path = job / "result.json"
        if returncode != 0 or not result_path.exists():
            raise PluginJobError(names, death_reason(returncode, job / "stderr.txt"))
        result = json.loads(result_path.read_text())
        if not result["ok"]:
            raise PluginJobError(result.get("plugins") or names, result["error"])
        return np.load(job / "output.npy"), result
