"""Sessions on a Dask cluster: ``studio-sep run SESSIONS… --out OUT --cluster ADDRESS``.

``ADDRESS`` is ``local`` / ``local:N`` (a cluster of N worker processes on this machine,
started and stopped with the batch) or ``tcp://host:port`` (a running ``dask scheduler``).
One session is one Dask task, :func:`run_on_worker`, which runs
:func:`studio_sep.batch.runner.run_session` in the worker: files in, files out, so the
session folders and ``OUT`` must be on storage every worker sees at the same path.

:func:`open_cluster` connects and checks the cluster before any work:

- at least one worker declares a ``memory`` resource (and ``GPU`` for ``--device cuda``);
- every worker sees every session folder and ``OUT`` (a probe file written to ``OUT`` here
  must be read back there: the same path on an unshared disk fails too); a miss is one line
  naming the worker and the path;
- each session's task asks for ``resources={"memory": bytes}``: the peak of its memory plan
  (:mod:`studio_sep.stages.memory`), planned for the budget ``--max-memory`` or else the
  largest worker's ``memory``, and ``GPU=1`` with ``--device cuda``. The budget is handed to
  the worker, which plans the same blocks (the fingerprints do not depend on the budget).

BLAS threads: a local cluster's workers get ``OMP/OPENBLAS/MKL_NUM_THREADS`` in their
environment before they start (before numpy loads): ``--blas-threads``, else their share of
the cores. Workers started by hand get Dask's nanny default (one thread, set before the
worker process starts); each session then sets its worker's share (the host's cores over
the worker threads on that host, or ``--blas-threads``) through threadpoolctl.

Progress: the worker sends every event of :func:`run_session` with its name as a Dask event
(:meth:`distributed.Worker.log_event`, topic :data:`TOPIC`); the client receives them through
:meth:`distributed.Client.subscribe_topic` and hands them to the batch's display on the main
thread. A worker that dies mid-session (killed, out of memory) makes the scheduler run the
task again on another worker, which continues from the session's checkpoint.

``distributed`` is imported only here, and only when a cluster is asked for
(``pip install 'studio-sep[cluster]'``).
"""

from __future__ import annotations

import logging
import queue
import re
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from studio_sep.batch.cluster_worker import (
    TOPIC,
    run_on_worker,
    storage_problems,
    usable_cores,
    worker_facts,
)
from studio_sep.batch.runner import (
    STATUS_FAILED,
    EventSink,
    SessionJob,
    SessionOutcome,
    _complete,
    _session_name,
)
from studio_sep.util.errors import ClusterError, InputError, StudioSepError

CONNECT_TIMEOUT_S = 20.0
#: How long a scheduler without workers is waited for.
WORKER_WAIT_S = 30.0
#: How long a finished session waits for its last events before its end is shown.
END_GRACE_S = 2.0
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_HAND_STARTED = ("start workers with `dask worker ADDRESS --nthreads 1 --resources \"memory=16e9\"` "
                 "(add GPU=1 for --device cuda; see docs/cluster.md)")


@dataclass(frozen=True)
class ClusterAddress:
    """``--cluster``: a scheduler's ``address``, or a local cluster of ``n_workers``."""

    address: str | None = None
    n_workers: int | None = None

    @property
    def local(self) -> bool:
        return self.address is None


def parse_cluster(text: str) -> ClusterAddress:
    """``local`` (one worker per core), ``local:N`` or ``tcp://host:port``.

    Raises
    ------
    InputError
        Anything else, or N < 1, or a port outside 1…65535.
    """
    value = text.strip()
    local = re.fullmatch(r"local(?::(\d+))?", value)
    if local:
        n = int(local.group(1)) if local.group(1) else None
        if n is not None and n < 1:
            raise InputError(None, "--cluster", f"{text!r} has no workers", "use local:1 or more")
        return ClusterAddress(n_workers=n)
    remote = re.fullmatch(r"tcp://([A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\]):(\d+)", value)
    if remote and 0 < int(remote.group(2)) < 65536:
        return ClusterAddress(address=value)
    raise InputError(None, "--cluster", f"{text!r} is not local, local:N or tcp://host:port",
                     "e.g. --cluster local:4, or --cluster tcp://10.0.0.5:8786 for a running dask scheduler")


def check_cluster_options(cluster: str | None, *, jobs: int, blas_threads: int | None) -> ClusterAddress | None:
    """``--cluster`` parsed (None without it), refused beside ``--jobs``; ``--blas-threads`` ≥ 1.

    Raises
    ------
    InputError
        Naming the option and the fix.
    """
    if blas_threads is not None and blas_threads < 1:
        raise InputError(None, "--blas-threads", f"{blas_threads} is not a number of threads", "use 1 or more")
    if cluster is None:
        return None
    if jobs != 1:
        raise InputError(None, "--jobs", "--jobs and --cluster do not go together: the cluster's workers run the "
                         "sessions", "drop --jobs (for a local cluster of N workers: --cluster local:N)")
    return parse_cluster(cluster)


def _require_distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError(None, "--cluster needs Dask distributed, which is not installed",
                           "pip install 'studio-sep[cluster]'") from None
    return distributed


# --------------------------------------------------------------------------- the client


class ClusterBatch:
    """A cluster connected and checked for one batch; :meth:`run` runs it, :meth:`close`
    lets go of it (and stops a local cluster)."""

    def __init__(self, client, cluster, jobs: list[SessionJob], requests: list[dict], shares: dict[str, int],
                 notes: list[str]):
        self.client, self.cluster, self.jobs, self.requests = client, cluster, jobs, requests
        self.shares, self.notes = shares, notes

    def __enter__(self) -> ClusterBatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def run(self, emit: EventSink | None = None) -> list[SessionOutcome]:
        """Every session as one task; one outcome per job, in the jobs' order, like
        :func:`studio_sep.batch.runner.run_batch` (``KeyboardInterrupt`` cancels the
        tasks not yet finished and is re-raised with ``exc.outcomes``)."""
        events: queue.Queue = queue.Queue()
        self.client.subscribe_topic(TOPIC, lambda event: events.put(event[1]))
        tracker = _Tracker(emit or (lambda event: None))
        outcomes: dict[int, SessionOutcome] = {}
        futures = {}
        try:
            for job, request in zip(self.jobs, self.requests):
                key = f"studio-sep-{job.index}-{uuid.uuid4().hex[:8]}"
                futures[self.client.submit(run_on_worker, job, self.shares, key=key, resources=request,
                                           pure=False)] = job
            pending = set(futures)
            while pending or tracker.waiting():
                tracker.drain(events, timeout=0.2)
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    outcome = _outcome(future, futures[future])
                    outcomes[outcome.index] = outcome
                    tracker.finished(outcome)
                tracker.flush()
        except KeyboardInterrupt as exc:
            self.client.cancel(list(futures))
            exc.outcomes = _complete(self.jobs, outcomes, interrupted=True)
            raise
        finally:
            self.client.unsubscribe_topic(TOPIC)
        return _complete(self.jobs, outcomes)


def _outcome(future, job: SessionJob) -> SessionOutcome:
    try:
        return future.result()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 — e.g. KilledWorker: every worker that ran it died
        reason = f"worker process failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return SessionOutcome(index=job.index, manifest=str(job.manifest), name=_session_name(job.manifest),
                              status=STATUS_FAILED, reason=reason)


class _Tracker:
    """Hands the workers' events to the display in order: a session's end only once its
    task is done (its outcome is the task's result) and its own end event came, or
    :data:`END_GRACE_S` passed; a session started again elsewhere is said so."""

    def __init__(self, emit: EventSink):
        self.emit = emit
        self.worker: dict[int, str] = {}  #: session → the name of the worker running it
        self.address: dict[int, str] = {}  #: and its address
        self.ended: set[int] = set()
        self.done: dict[int, tuple[SessionOutcome, float]] = {}

    def drain(self, events: queue.Queue, timeout: float) -> None:
        try:
            event = events.get(timeout=timeout)
            while True:
                self.event(event)
                event = events.get_nowait()
        except queue.Empty:
            return

    def event(self, event: dict) -> None:
        index, kind = event.get("index"), event.get("type")
        if kind == "session_end":
            self.ended.add(index)
            return
        self.emit(event)
        if kind == "session_start":
            before, now = self.worker.get(index), event.get("worker_name")
            self.worker[index], self.address[index] = now, event.get("worker")
            if before is not None:
                self.emit({"type": "info", "index": index, "name": event["name"], "worker_name": now,
                           "worker": event.get("worker"),
                           "message": f"started again on worker {now} (worker {before} was lost); it continues "
                                      "from its checkpoint"})

    def finished(self, outcome: SessionOutcome) -> None:
        self.done[outcome.index] = (outcome, time.monotonic())

    def waiting(self) -> bool:
        return bool(self.done)

    def flush(self) -> None:
        for index, (outcome, at) in list(self.done.items()):
            if index in self.ended or time.monotonic() - at > END_GRACE_S:
                del self.done[index]
                self.emit({"type": "session_end", "index": index, "name": outcome.name,
                           "worker_name": outcome.worker or self.worker.get(index),
                           "worker": self.address.get(index), "outcome": asdict(outcome)})


# --------------------------------------------------------------------------- opening a cluster


def open_cluster(cluster: str | ClusterAddress, jobs: Sequence[SessionJob], *, blas_threads: int | None = None,
                 device: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 worker_wait_s: float = WORKER_WAIT_S) -> ClusterBatch:
    """Start (``local``) or reach (``tcp://``) the cluster and check it for these jobs.

    Raises
    ------
    ClusterError
        Dask missing, the scheduler unreachable, no worker, no worker with the resources
        the sessions need, a worker that cannot see a session folder or ``OUT``.
    """
    spec = parse_cluster(cluster) if isinstance(cluster, str) else cluster
    _require_distributed()
    if device is None and jobs:
        device = jobs[0].options.separation.device
    local = client = None
    try:
        if spec.local:
            local = _start_local(spec.n_workers or usable_cores(), device=device, blas_threads=blas_threads)
        address = local.scheduler_address if local else spec.address
        client = _connect(address, connect_timeout_s)
        workers = _workers(client, address, worker_wait_s)
        notes = _check_resources(workers, address, device)
        _check_storage(client, workers, jobs)
        jobs, requests = _requests(jobs, workers, device)
        facts = client.run(worker_facts)
        notes += [f"worker {workers[a]['name']} ({a}) has MALLOC_TRIM_THRESHOLD_ set (Dask's nanny default): "
                  "sessions run about 1.5x slower there; unset it as docs/cluster.md shows"
                  for a, f in sorted(facts.items()) if a in workers and f["malloc_trim"] is not None]
        shares = _shares(workers, facts, blas_threads)
    except BaseException:
        if client is not None:
            client.close()
        if local is not None:
            local.close()
        raise
    return ClusterBatch(client, local, list(jobs), requests, shares, notes)


def _start_local(n_workers: int, *, device: str | None, blas_threads: int | None):
    """N nanny-managed worker processes on 127.0.0.1, one task at a time each, with a
    ``memory`` resource of the machine's budget over N, BLAS threads in their environment
    from the start, and (``--device cuda``) ``GPU=1`` on one worker per GPU."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    from studio_sep.stages import default_budget_bytes

    threads = blas_threads or max(1, usable_cores() // n_workers)
    gpus = _count_gpus() if device == "cuda" else 0
    if device == "cuda" and gpus < 1:
        raise ClusterError("--cluster local", "--device cuda but no CUDA GPU is visible here",
                           "run on a machine with a GPU, or drop --device cuda")
    workers = {}
    for i in range(n_workers):
        env = dict.fromkeys(BLAS_VARIABLES, str(threads))
        resources = {"memory": default_budget_bytes() // n_workers}
        if device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(i) if i < gpus else ""
            if i < gpus:
                resources["GPU"] = 1
        workers[f"local-{i}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "resources": resources, "env": env, "host": "127.0.0.1", "memory_limit": 0,
            "dashboard": False, "silence_logs": logging.ERROR}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0, "dashboard": False,
                                               "dashboard_address": None}}
    with dask.config.set(_pre_spawn_environ(threads)):
        return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name="studio-sep")


def _pre_spawn_environ(threads: int) -> dict:
    """What a nanny sets before its worker process starts (before numpy loads): the BLAS
    threads, and not Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's mmap
    threshold at 128 KiB: every large temporary of the fit is then a fresh mmap, and sessions ran
    ~1.5× slower (benchmarks/README.md, "Cluster throughput"). A variable set in this
    process's environment still wins (Dask's rule)."""
    key = "distributed.nanny.pre-spawn-environ"
    return {**{f"{key}.{name}": str(threads) for name in BLAS_VARIABLES}, f"{key}.MALLOC_TRIM_THRESHOLD_": None}


def _count_gpus() -> int:
    from studio_sep.dsp.backend import cupy_or_none

    cupy = cupy_or_none()
    return 0 if cupy is None else int(cupy.cuda.runtime.getDeviceCount())


def _connect(address: str, timeout_s: float):
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ClusterError(address, f"cannot reach the Dask scheduler ({reason})",
                           "start one with `dask scheduler` and give the address it prints, or use --cluster "
                           "local") from None


def _workers(client, address: str, wait_s: float) -> dict[str, dict]:
    """``address → {name, host, nthreads, resources}`` of every worker, once there is one."""
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise ClusterError(address, f"no worker joined the scheduler within {wait_s:g} s", _HAND_STARTED) from None
    info = client.scheduler_info(n_workers=-1)["workers"]
    return {address: {"name": str(w.get("name", address)), "host": w.get("host", address),
                      "nthreads": int(w.get("nthreads", 1)), "resources": dict(w.get("resources") or {})}
            for address, w in info.items()}


def _check_resources(workers: dict[str, dict], address: str, device: str | None) -> list[str]:
    """Refuse a cluster where no worker can take a session; say which workers get none."""
    need = ("memory", "GPU") if device == "cuda" else ("memory",)
    able = [a for a, w in workers.items() if all(w["resources"].get(r, 0) > 0 for r in need)]
    if not able:
        wanted = " and ".join(f"a {r} resource" for r in need)
        raise ClusterError(address, f"no worker declares {wanted}, so none can take a session", _HAND_STARTED)
    notes = [f"worker {w['name']} ({a}) declares no {' or '.join(need)} resource: it gets no session"
             for a, w in sorted(workers.items()) if a not in able]
    notes += [f"worker {w['name']} ({a}) runs {w['nthreads']} sessions at once in threads; start workers with "
              "--nthreads 1 (more workers per machine with --nworkers)" for a, w in sorted(workers.items())
              if w["nthreads"] > 1]
    return notes


def _check_storage(client, workers: dict[str, dict], jobs: Sequence[SessionJob]) -> None:
    """Every worker sees every session folder and ``OUT`` (the same folder: a probe file
    written here is read back there), before any work."""
    outs = sorted({job.out_root for job in jobs})
    paths = [str(p) for p in outs] + sorted({str(job.manifest.parent) for job in jobs})
    token = uuid.uuid4().hex
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    probes = [out / f".studio-sep-cluster-{token}" for out in outs]
    try:
        for probe in probes:
            probe.write_text(token)
        seen = {}
        for probe in probes:
            for address, problems in client.run(storage_problems, paths, str(probe), token).items():
                seen.setdefault(address, []).extend(problems)
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)
    for address, problems in sorted(seen.items()):
        if problems:
            raise ClusterError(f"worker {workers.get(address, {}).get('name', address)} ({address})",
                               f"cannot see {problems[0]}",
                               "put the sessions and --out on storage every worker mounts at the same path "
                               "(docs/cluster.md)")


def _requests(jobs: Sequence[SessionJob], workers: dict[str, dict], device: str | None):
    """The jobs with the batch's memory budget set, and each one's task resources."""
    largest = max(w["resources"].get("memory", 0) for w in workers.values())
    separation = jobs[0].options.separation
    budget = separation.max_memory if separation.max_memory is not None else int(largest)
    if budget > largest:
        from studio_sep.stages.memory import format_size

        raise ClusterError("--max-memory", f"{format_size(budget)} is above every worker's memory resource "
                           f"(largest {format_size(largest)}): no worker could take a session planned for it",
                           f"give --max-memory {format_size(largest).replace(' ', '')} or less, or start larger "
                           "workers")
    options = replace(jobs[0].options, separation=replace(separation, max_memory=int(budget)))
    jobs = [replace(job, options=options) for job in jobs]
    requests = []
    for job in jobs:
        request = {"memory": min(_estimate_bytes(job) or budget, budget)}
        if device == "cuda":
            request["GPU"] = 1
        requests.append(request)
    return jobs, requests


def _estimate_bytes(job: SessionJob) -> int | None:
    """The peak of the session's memory plan for the batch's budget, from its manifest and
    the first mic's header (the prior does not change it: estimated with none); None when
    the session cannot be read here (its task then fails on the worker with the reason)."""
    from studio_sep.io.audio import audio_info
    from studio_sep.session import load_session
    from studio_sep.stages.memory import plan_memory

    try:
        session = load_session(job.manifest, check_audio=False)
        header = audio_info(session.mics[0].file)
        session = replace(session, sample_rate=header.sample_rate, n_samples=header.n_samples)
        separation = job.options.separation
        init = tuple(i for i in (separation.init or session.separation.init or ()) if i != "prior") or None
        cheap = replace(separation, device="cpu", prior="none", init=init)
        return int(plan_memory(session, cheap).block_estimated_bytes)
    except (StudioSepError, OSError, ValueError, TypeError):
        return None


def _shares(workers: dict[str, dict], facts: dict[str, dict], blas_threads: int | None) -> dict[str, int]:
    """BLAS threads per worker: ``blas_threads``, else its host's cores over the worker
    threads on that host."""
    if blas_threads:
        return dict.fromkeys(workers, blas_threads)
    per_host = Counter()
    for w in workers.values():
        per_host[w["host"]] += w["nthreads"]
    return {a: max(1, facts.get(a, {}).get("cores", 1) // per_host[w["host"]]) for a, w in workers.items()}
