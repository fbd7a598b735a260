"""Test-only fault injection for the plugin host's worker processes.

:func:`inject` makes the host start its workers through :func:`worker_main` here instead
of the real entry point; this wrapper fails a render job on purpose and otherwise runs
the real :func:`studio_sep.mixing.plugins.runtime.worker_main`, so the host's own crash,
timeout and read-back detection is what the tests exercise. Describe jobs (plugin
scans and validation) always run normally.

Faults (``FAULT_ENV``, read in the worker):

- ``exit``: the worker exits with status 3 before rendering;
- ``segv``: the worker kills itself with SIGSEGV;
- ``hang``: the worker sleeps for an hour;
- ``crosstalk``: after every instance is loaded and set, the last VST3 instance's raw
  parameter values are copied into the first instance of the same plugin (the swap
  seen with several instances in one process), so read-back must catch it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from studio_sep.mixing.plugins import runtime, workers

FAULT_ENV = "STUDIO_SEP_PLUGIN_HOST_TEST_FAULT"
FAULTS = ("exit", "segv", "hang", "crosstalk")


def inject(monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """Make every render worker started from now on (until ``monkeypatch`` undoes it) fail with ``fault``."""
    assert fault in FAULTS, fault
    monkeypatch.setattr(workers, "WORKER_ENTRY", (__name__, "worker_main"))
    monkeypatch.setenv(FAULT_ENV, fault)


def worker_main(job_dir: str) -> None:
    """Worker entry point with a fault: fail a render or stream job as ``FAULT_ENV`` says, then the real main."""
    fault = os.environ.get(FAULT_ENV, "")
    kind = json.loads((Path(job_dir) / "job.json").read_text())["kind"]
    if kind in ("render", "stream"):
        if fault == "exit":
            os._exit(3)
        elif fault == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif fault == "hang":
            time.sleep(3600)
        elif fault == "crosstalk":
            real = runtime._instantiate_chain

            def instantiate_with_crosstalk(spec_dicts, n_channels, infos):
                stages = real(spec_dicts, n_channels, infos)
                _simulate_crosstalk(spec_dicts, stages)
                return stages

            runtime._instantiate_chain = instantiate_with_crosstalk
    runtime.worker_main(job_dir)


def _simulate_crosstalk(spec_dicts: list[dict], stages: list[list]) -> None:
    """Copy the last VST3 instance's raw values into the first one, when both are the same plugin."""
    vst3 = [(spec, inst) for spec, instances in zip(spec_dicts, stages) if spec["kind"] == "vst3"
            for inst in instances]
    if len(vst3) < 2:
        return
    first, last = vst3[0], vst3[-1]
    if first[0]["path"] == last[0]["path"]:
        for cpp_first, cpp_last in zip(first[1]._parameters, last[1]._parameters):
            if cpp_first.is_automatable:
                cpp_first.raw_value = cpp_last.raw_value
