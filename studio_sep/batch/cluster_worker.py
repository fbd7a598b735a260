"""What runs inside a Dask worker for ``studio-sep run --cluster`` (:mod:`studio_sep.batch.cluster`):
the session task, and the checks the client runs on every worker before any work.

Pickled by reference: a worker needs studio-sep installed, the same version as the client.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio_sep.batch.runner import SessionJob, SessionOutcome, _limit_blas_threads, run_session

#: The Dask event topic the workers send the sessions' progress on.
TOPIC = "studio-sep"


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_on_worker(job: SessionJob, shares: dict[str, int]) -> SessionOutcome:
    """One session in a Dask worker: its BLAS threads (``job.options.blas_threads``, else
    ``shares[worker address]``), every event sent to the client as a Dask event with the
    worker's name (``worker_name``; the scheduler adds its address as ``worker``), the
    outcome marked with the name."""
    from distributed import get_worker

    worker = get_worker()
    name = str(worker.name)
    threads = (job.options.blas_threads or shares.get(worker.address)
               or max(1, usable_cores() // worker.state.nthreads))
    _limit_blas_threads(threads)

    def emit(event: dict) -> None:
        worker.log_event(TOPIC, _plain({**event, "worker_name": name}))  # the scheduler adds "worker": address

    outcome = run_session(job, emit)
    outcome.worker = name
    return outcome


def _plain(event: dict) -> dict:
    """The event as msgpack can carry it (numpy numbers as Python numbers)."""
    return json.loads(json.dumps(event, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def storage_problems(paths: list[str], probe: str, token: str) -> list[str]:
    """In each worker: what it cannot see, ``path: problem`` per path."""
    problems = []
    for path in paths:
        try:
            os.stat(path)
        except OSError as exc:
            problems.append(f"{path}: {(exc.strerror or type(exc).__name__).lower()}")
    try:
        same = Path(probe).read_text() == token
    except OSError:
        same = False
    if not same and not problems:
        problems.append(f"{Path(probe).parent}: another folder than the client's (a probe file written there is "
                        "missing)")
    return problems


def worker_facts() -> dict:
    """In each worker: its cores and its ``MALLOC_TRIM_THRESHOLD_``."""
    return {"cores": usable_cores(), "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_")}
