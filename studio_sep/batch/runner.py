"""Whole-session batch runs: every stage of every session, resumable, one failure
never stopping the rest.

The unit of work is a :class:`SessionJob`: one session manifest in (with the audio it
names), one output folder out (``<out>/<session>/``). :func:`run_session` does the
whole job and returns a :class:`SessionOutcome`; both are plain picklable data, and
:func:`run_session` needs nothing from the process that submits it but the files.
:func:`run_batch` hands jobs to any :class:`concurrent.futures.Executor`-like object
(``submit(fn, *args) → future``): a local process pool for ``--jobs N``, or the
client of a distributed engine whose workers see the same file system (see
docs/batch.md).

Stages per session: validate → prior → separate → images → mix (remix + DAW export,
per preset) → evaluate (when the session has ground truth) → report (the HTML page;
:mod:`studio_sep.stages.report_html`). A batch also gets ``<out>/index.html`` linking
every session's report. Each stage's result is
recorded with a fingerprint in ``run.json`` (:mod:`studio_sep.stages.runrecord`); a rerun
skips what is current and continues an interrupted fit from its checkpoint.

This module imports no numpy at import time, so a process pool worker can set its
BLAS thread count before numpy loads.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio_sep.util.errors import InputError, OutputError, StudioSepError
from studio_sep.util.notices import report_warnings

#: ``emit(event)``: a dict with ``type`` (session_start, stage, progress, info,
#: session_end), ``index`` (the job's position in the batch) and the event's fields.
EventSink = Callable[[dict], None]

STATUS_DONE, STATUS_CURRENT, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_NOT_RUN = (
    "done", "up to date", "failed", "interrupted", "not run")


@dataclass(frozen=True)
class RunOptions:
    """What every session of a batch is run with."""

    separation: object  #: studio_sep.stages.SeparationOptions
    presets: tuple[Path, ...] = ()
    force: bool = False
    evaluate: bool = True  #: score against the ground truth when the session has one
    reference_mic: str | None = None
    blas_threads: int | None = None  #: per job; None leaves the BLAS default


@dataclass(frozen=True)
class SessionJob:
    """One session: files in (``manifest`` and its audio), files out (``out_root/<name>/``)."""

    index: int
    manifest: Path
    out_root: Path
    options: RunOptions


@dataclass
class SessionOutcome:
    """How one session went; what the summary table shows."""

    index: int
    manifest: str
    name: str
    status: str
    elapsed_s: float = 0.0
    duration_s: float | None = None
    sdr_db: float | None = None
    folder: str | None = None
    reason: str | None = None
    log: str | None = None
    stages: dict[str, str] = field(default_factory=dict)  #: stage → ran / skipped / failed
    remixes: list[str] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)
    memory_plan: str | None = None
    report: str | None = None  #: the session's HTML report (``report/index.html``)
    worker: str | None = None  #: the Dask worker that ran it (--cluster)
    #: source → why its prior was replaced by its stem mic's power (run.json ``separation.prior.rejected``)
    prior_replaced: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- finding sessions


def find_sessions(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Manifests from files, folders (a ``session.toml`` in it, else in its subfolders)
    and glob patterns, in the order given, without duplicates. A path that exists is
    taken as written, not as a pattern.

    Raises
    ------
    InputError
        A path that is neither a file, a folder holding sessions, nor a pattern that
        matches one.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        text = str(raw)
        # a path that exists is taken as written, even when it holds glob characters ("[day 2]")
        pattern = glob.has_magic(text) and not Path(text).exists()
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))] if pattern else [Path(text)]
        if not matches:
            raise InputError(None, "sessions", f"{text!r} matches no file or folder",
                             "give session.toml files, folders of sessions or a quoted glob")
        for path in matches:
            if path.is_dir():
                inner = [path / "session.toml"] if (path / "session.toml").is_file() else \
                    sorted(path.glob("*/session.toml"))
                if not inner:
                    raise InputError(path, None, "no session.toml in this folder or its subfolders",
                                     "point at a session.toml or a folder of session folders")
                found.update(dict.fromkeys(p.resolve() for p in inner))
            elif path.is_file():
                found[path.resolve()] = None
            else:
                raise InputError(path, None, "no such file or folder", "check the path")
    return list(found)


def check_unique_names(manifests: Sequence[Path]) -> None:
    """Two sessions of one batch would write the same output folder: refuse up front."""
    seen: dict[str, Path] = {}
    for manifest in manifests:
        name = _session_name(manifest)
        if name in seen:
            raise InputError(manifest, "session.name", f"{name!r} is also the name of {seen[name]}; both would "
                             "write the same output folder", "give every session of a batch its own name")
        seen[name] = manifest


# --------------------------------------------------------------------------- one session


class _SessionLog:
    """The session's log file: every stage, skip, warning and traceback, as it happens.

    Lines before :meth:`open` (or after the file failed: disk full) go nowhere; a log
    never stops a session.
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self.file = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")
        self.path = path

    def __call__(self, message: str) -> None:
        if self.file is None:
            return
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        try:
            self.file.write(f"{stamp} {message}\n")
            self.file.flush()
        except OSError:  # the disk filled up: the session's own error says so
            self.close()

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None


def _session_name(manifest: Path) -> str:
    """The manifest's ``name`` if it can be read cheaply and is a valid name, else its
    folder's name made safe (:func:`studio_sep.util.names.safe_name`): a session whose name
    the manifest check will refuse still gets a log folder of a usable name."""
    from studio_sep.util.names import name_problem, safe_name

    try:
        import tomllib

        head = tomllib.loads(manifest.read_text(encoding="utf-8")).get("session")
        name = head.get("name") if isinstance(head, dict) else None
        if isinstance(name, str) and name_problem(name) is None:
            return name
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return safe_name(manifest.parent.name or manifest.stem)


def run_session(job: SessionJob, emit: EventSink | None = None) -> SessionOutcome:
    """Run every stage of one session; never raises for a problem of the session.

    Errors the user can fix (:class:`StudioSepError`) end the session with their
    one-line message; anything else with its type and message, the traceback going
    to the session's log. ``KeyboardInterrupt`` is recorded and re-raised.
    """
    emit = emit or (lambda event: None)
    options = job.options
    if options.blas_threads:
        _limit_blas_threads(options.blas_threads)
    started = time.perf_counter()
    name = _session_name(job.manifest)
    folder = job.out_root / name
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log = _SessionLog()
    outcome = SessionOutcome(index=job.index, manifest=str(job.manifest), name=name, status=STATUS_FAILED,
                             folder=str(folder))
    current = {"stage": "validate"}

    def event(kind: str, **fields) -> None:
        emit({"type": kind, "index": job.index, "name": name, **fields})

    def stage_start(stage: str) -> None:
        current["stage"] = stage
        log(f"{stage}: start")
        event("stage", stage=stage, status="start")

    def stage_end(stage: str, status: str, detail: str = "") -> None:
        outcome.stages[stage] = status
        log(f"{stage}: {status}" + (f" ({detail})" if detail else ""))
        event("stage", stage=stage, status=status, detail=detail)

    def progress(stage: str, done: float, total: float, detail: str = "") -> None:
        event("progress", stage=stage, done=done, total=total, detail=detail)

    def warn(message: str) -> None:  # a state file found invalid and ignored, …
        log(f"warning: {message}")
        event("info", message=f"warning: {message}")

    event("session_start", manifest=str(job.manifest), folder=str(folder))
    try:  # everything that touches the session's folder is inside its failure isolation
        _open_log(log, folder / "logs" / f"run-{stamp}-{os.getpid()}.log")
        outcome.log = str(log.path)
        log(f"studio-sep run: {job.manifest} → {folder}")
        from studio_sep.stages import session_lock

        with session_lock(folder), report_warnings(warn):
            _run_stages(job, folder, outcome, log, stage_start, stage_end, progress, event)
        redone = [stage for stage, status in outcome.stages.items() if stage != "validate" and status != "skipped"]
        outcome.status = STATUS_DONE if redone else STATUS_CURRENT
    except KeyboardInterrupt:
        outcome.status, outcome.reason = STATUS_INTERRUPTED, f"interrupted during {current['stage']}"
        outcome.stages[current["stage"]] = "interrupted"
        log(f"{current['stage']}: interrupted")
        raise
    except (StudioSepError, OSError) as exc:
        error = exc if isinstance(exc, StudioSepError) else \
            OutputError.from_os_error(exc, None if exc.filename else folder)
        outcome.reason = str(error)
        outcome.stages[current["stage"]] = "failed"
        log(f"{current['stage']}: failed: {error}")
    except Exception as exc:  # noqa: BLE001 — one bad session must not stop the batch
        outcome.reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        outcome.stages[current["stage"]] = "failed"
        log(f"{current['stage']}: failed with an unexpected error:\n{traceback.format_exc()}")
    finally:
        outcome.elapsed_s = round(time.perf_counter() - started, 3)
        log(f"session {outcome.status} in {outcome.elapsed_s:.1f} s" + (f": {outcome.reason}" if outcome.reason else ""))
        log.close()
        event("session_end", outcome=asdict(outcome))
    return outcome


def _open_log(log: _SessionLog, path: Path) -> None:
    """Open the session's log, making its folder: the first write under OUT/<session>/."""
    try:
        log.open(path)
    except ValueError as exc:  # a NUL in the session's name
        shown = str(path.parent.parent).encode("unicode_escape").decode()
        raise OutputError(shown, f"cannot make the session's folder ({exc})",
                          "give the session a name without control characters", exit_code=2) from exc


def _run_stages(job: SessionJob, folder: Path, outcome: SessionOutcome, log, stage_start, stage_end, progress,
                event) -> None:
    from studio_sep.session import load_session
    from studio_sep.stages import (
        WORK_DIR,
        FileHashes,
        evaluate_run,
        mix_session,
        resolve_settings,
        separate_session,
    )
    from studio_sep.stages.geometry import check_geometry
    from studio_sep.stages.report_html import build_report

    options = job.options
    stage_start("validate")
    session = load_session(job.manifest)
    outcome.duration_s = round(session.duration_s, 3)
    settings = resolve_settings(session, options.separation)
    for preset in options.presets:
        check_preset_routes(session, preset, settings.stem_mics)
    # the audio's (a silent mic), then typed coordinates against the recording, once a run
    for warning in (*session.warnings, *check_geometry(session).warnings):
        log(f"warning: {warning}")
        event("info", message=f"warning: {warning}")
    stage_end("validate", "ran")

    hashes = FileHashes(folder / WORK_DIR / "hashes.json")
    names = ("prior", "separate", "images")
    started: set[str] = set()

    def on_progress(stage: str, done: float, total: float, detail: str = "") -> None:
        if stage == "memory":  # the plan the separation uses, before it starts
            outcome.memory_plan = detail
            log(f"memory: {detail}")
            event("info", message=f"memory: {detail}")
            return
        if stage in names and stage not in started:  # the pipeline moved on to this stage
            started.add(stage)
            stage_start(stage)
        progress(stage, done, total, detail)

    result = separate_session(session, job.out_root, options.separation, callback=on_progress,
                              force=options.force, hashes=hashes)
    prior = result.run["separation"].get("prior")
    outcome.prior_replaced = dict(prior.get("rejected") or {}) if isinstance(prior, dict) else {}
    for stage in names:  # what each stage did (a skipped stage reports no progress)
        if stage not in started:
            stage_start(stage)
        stage_end(stage, result.stages.get(stage, "ran"))

    for preset in options.presets:
        stage = f"mix:{Path(preset).stem}"
        stage_start(stage)
        mixed = mix_session(session, job.out_root, preset, callback=progress, force=options.force,
                            hashes=hashes)
        outcome.remixes.append(str(mixed.remix))
        outcome.projects.append(str(mixed.project))
        stage_end(stage, "skipped" if mixed.skipped else "ran", f"remix {mixed.remix}")

    if options.evaluate and session.has_truth_images:
        stage_start("evaluate")
        metrics = evaluate_run(session, job.out_root, reference_mic=options.reference_mic,
                               max_memory=options.separation.max_memory,
                               callback=progress, force=options.force, hashes=hashes)
        outcome.sdr_db = metrics["means"]["at_reference_mic"]["separated"]["sdr"]
        stage_end("evaluate", "skipped" if metrics.get("skipped") else "ran",
                  f"mean SDR at {metrics['reference_mic']} {outcome.sdr_db} dB")

    stage_start("report")
    built = build_report(session, job.out_root, callback=progress, force=options.force, hashes=hashes)
    outcome.report = str(built.path)
    stage_end("report", "skipped" if built.skipped else "ran", f"report {built.path}")


def check_preset_routes(session, preset_path: Path, stem_mics) -> None:
    """The preset's routing fits this session (source names, @spot/@position mics)."""
    from studio_sep.mixing.presets import load_preset
    from studio_sep.mixing.routing import resolve_routes

    resolve_routes(session, load_preset(preset_path), stem_mics, sample_rate=session.sample_rate)


def check_presets(presets: Sequence[Path], *, sample_rate: int = 48000) -> None:
    """Load every preset and validate every plugin of it once, before any session runs
    (a bad preset concerns the whole batch: stop before any work)."""
    from studio_sep.mixing.check import check_preset
    from studio_sep.mixing.presets import load_preset

    for path in presets:
        check_preset(load_preset(path), sample_rate=sample_rate)


def _limit_blas_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:  # numpy may already be loaded (a reused worker): limit the live pools too
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's stack
        pass


# --------------------------------------------------------------------------- the batch


def run_batch(jobs: Sequence[SessionJob], *, n_jobs: int = 1, emit: EventSink | None = None,
              executor=None) -> list[SessionOutcome]:
    """Run the jobs; return one outcome per job, in the jobs' order.

    ``n_jobs == 1`` and no ``executor``: in this process, one after the other. Else the
    jobs go to ``executor`` (default: a local process pool of ``n_jobs`` workers) and
    their events come back through a queue. ``KeyboardInterrupt`` stops the batch:
    the running sessions are recorded as interrupted, the rest as not run, and it is
    re-raised with the outcomes attached (``exc.outcomes``).
    """
    emit = emit or (lambda event: None)
    outcomes: dict[int, SessionOutcome] = {}
    try:
        if executor is None and n_jobs <= 1:
            for job in jobs:
                outcomes[job.index] = run_session(job, emit)
        else:
            _run_parallel(jobs, n_jobs, emit, outcomes, executor)
    except KeyboardInterrupt as exc:
        exc.outcomes = _complete(jobs, outcomes, interrupted=True)
        raise
    result = _complete(jobs, outcomes)
    write_indexes(jobs, result)
    return result


def write_indexes(jobs: Sequence[SessionJob], outcomes: Sequence[SessionOutcome]) -> list[Path]:
    """``<out>/index.html`` for every output root of the batch: each session's report, its
    status and mean SDR. A page that cannot be written (disk full) is left out: the
    sessions' own results stand."""
    from studio_sep.stages.report_html import write_batch_index

    written = []
    for root in dict.fromkeys(job.out_root for job in jobs):
        entries = [asdict(o) for job, o in zip(jobs, outcomes) if job.out_root == root]
        try:
            written.append(write_batch_index(root, entries))
        except (OSError, StudioSepError):
            continue
    return written


def _complete(jobs: Sequence[SessionJob], outcomes: dict[int, SessionOutcome], *,
              interrupted: bool = False) -> list[SessionOutcome]:
    result = []
    for job in jobs:
        if job.index not in outcomes:
            status = STATUS_INTERRUPTED if interrupted else STATUS_NOT_RUN
            outcomes[job.index] = SessionOutcome(index=job.index, manifest=str(job.manifest),
                                                 name=_session_name(job.manifest), status=status,
                                                 reason="the batch was interrupted" if interrupted else None)
        result.append(outcomes[job.index])
    return result


def _run_parallel(jobs, n_jobs: int, emit: EventSink, outcomes: dict, executor) -> None:
    import multiprocessing
    import queue as queue_module
    import threading
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    reported: dict[int, SessionOutcome] = {}
    manager = context.Manager()
    events = manager.Queue()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or not events.empty():
            try:
                event = events.get(timeout=0.1)
                if event.get("type") == "session_end":  # kept in case the worker's return is lost
                    reported[event["index"]] = SessionOutcome(**event["outcome"])
                emit(event)
            except queue_module.Empty:
                continue
            except (EOFError, OSError):  # the manager went away (interrupted)
                return

    reader = threading.Thread(target=drain, name="studio-sep-events", daemon=True)
    reader.start()
    own = executor is None
    executor = executor or ProcessPoolExecutor(max_workers=n_jobs, mp_context=context)
    try:
        # a local pool gets the manager queue; a foreign executor's workers may not reach
        # it, so its sessions run without progress events (their outcomes still come back)
        futures = {executor.submit(run_session, job, events.put if own else None): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                outcomes[job.index] = future.result()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 — a worker died (killed, out of memory)
                outcomes[job.index] = SessionOutcome(
                    index=job.index, manifest=str(job.manifest), name=_session_name(job.manifest),
                    status=STATUS_FAILED, reason=f"worker process failed: {type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
        stop.set()
        reader.join(timeout=5)
        manager.shutdown()
        for index, outcome in reported.items():  # e.g. interrupted sessions: their own account
            outcomes.setdefault(index, outcome)
