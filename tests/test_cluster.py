"""`studio-sep run --cluster`: a local Dask cluster and a scheduler with workers started by
hand (separate processes, loopback only, bounded timeouts): the same files as a local run,
failure isolation, the shared-storage check, a worker killed mid-separation."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from studio_sep.batch.cluster import _check_resources, _requests, open_cluster, parse_cluster  # noqa: E402
from studio_sep.batch.runner import RunOptions, SessionJob  # noqa: E402
from studio_sep.io import audio as audio_io  # noqa: E402
from studio_sep.stages import SeparationOptions  # noqa: E402
from studio_sep.util.errors import ClusterError, InputError  # noqa: E402
from tests.small_sessions import batch_with_a_broken_session  # noqa: E402

#: Small and quick: one spatial start, one fit of 20 iterations (a checkpoint at 10) at 8 kHz,
#: one BLAS thread everywhere (the same arithmetic to the bit).
FAST = ("--init", "geometry", "--iterations", "20", "--ensemble", "1", "--no-evaluate", "--processing-rate",
        "8000", "--blas-threads", "1")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio_sep.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sessions(rendered_session: Path, tmp_path_factory) -> Path:
    """alpha and charlie (copies of the rendered trio) and bravo, whose audio is gone."""
    return batch_with_a_broken_session(rendered_session, tmp_path_factory.mktemp("cluster-sessions"))


@pytest.fixture(scope="module")
def reference(sessions: Path, tmp_path_factory) -> Path:
    """alpha and charlie run here, one after the other (`--jobs 1`)."""
    out = tmp_path_factory.mktemp("reference")
    done = _cli("run", str(sessions / "alpha"), str(sessions / "charlie"), "--out", str(out), *FAST, "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _same_audio(a: Path, b: Path, pattern: str = "*.wav") -> int:
    """Every WAV under ``a`` has the same samples under ``b``; how many."""
    files = [p for p in sorted(a.rglob(pattern)) if not p.name.startswith(".")]
    for path in files:
        np.testing.assert_array_equal(audio_io.read_audio(path)[0], audio_io.read_audio(b / path.relative_to(a))[0],
                                      err_msg=str(path.relative_to(a)))
    return len(files)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_cluster_addresses_and_options_are_checked_before_any_work(sessions: Path, tmp_path: Path) -> None:
    assert parse_cluster("local").n_workers is None and parse_cluster("local:3").n_workers == 3
    assert parse_cluster("tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    for bad in ("local:0", "lokal", "tcp://host", "tcp://h:99999", "http://h:80"):
        with pytest.raises(InputError, match="--cluster"):
            parse_cluster(bad)
    out = tmp_path / "out"
    bad = _cli("run", str(sessions / "alpha"), "--out", str(out), "--cluster", "local:2", "--jobs", "2")
    assert bad.returncode == 2 and "--jobs and --cluster do not go together" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not out.exists()
    # a worker with no memory resource gets no session; with none at all, no batch
    workers = {"tcp://a:1": {"name": "a", "nthreads": 1, "resources": {"memory": 8e9}},
               "tcp://b:1": {"name": "b", "nthreads": 2, "resources": {}}}
    notes = _check_resources(workers, "tcp://s:1", "cpu")
    assert any("worker b (tcp://b:1) declares no memory resource" in n for n in notes)
    assert any("runs 2 sessions at once" in n for n in notes)
    with pytest.raises(ClusterError, match="no worker declares a memory resource and a GPU resource"):
        _check_resources(workers, "tcp://s:1", "cuda")
    # each task asks for its session's planned peak (at most the budget) and, on cuda, one GPU
    job = SessionJob(0, sessions / "alpha" / "session.toml", tmp_path, RunOptions(SeparationOptions()))
    for device, gpu in (("cpu", None), ("cuda", 1)):
        jobs, requests = _requests([job], workers, device)
        assert jobs[0].options.separation.max_memory == int(8e9)  # the largest worker's memory is the budget
        assert 1e6 < requests[0]["memory"] < 8e9 and requests[0].get("GPU") == gpu
    # nothing listens there: one line naming the address, within the timeout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = SessionJob(0, sessions / "alpha" / "session.toml", tmp_path, RunOptions(SeparationOptions()))
    started = time.monotonic()
    with pytest.raises(ClusterError, match=rf"tcp://127.0.0.1:{port}: cannot reach the Dask scheduler"):
        open_cluster(f"tcp://127.0.0.1:{port}", [job], connect_timeout_s=2)
    assert time.monotonic() - started < 30


def test_a_local_cluster_writes_the_same_files_as_a_local_run(sessions: Path, reference: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _cli("run", str(sessions / "alpha"), str(sessions / "charlie"), "--out", str(out), *FAST,
                "--cluster", "local:2", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    events = _events(done.stderr) + _events(done.stdout)  # progress on stderr, the summary on stdout
    summary = events[-1]
    assert summary["type"] == "summary" and summary["failed"] == 0
    assert {s["name"]: s["status"] for s in summary["sessions"]} == {"alpha": "done", "charlie": "done"}
    assert {s["worker"] for s in summary["sessions"]} <= {"local-0", "local-1"}
    # every stage of every session came back from its worker, named
    stages = [e for e in events if e["type"] == "stage" and e["status"] == "start"]
    assert {(e["name"], e["stage"]) for e in stages} >= {(n, s) for n in ("alpha", "charlie")
                                                          for s in ("validate", "prior", "separate", "images",
                                                                    "mix:paper")}
    assert all(e["worker_name"] in ("local-0", "local-1") and e["worker"].startswith("tcp://127.0.0.1:")
               for e in events[:-1])
    assert [e["type"] for e in events].count("session_end") == 2
    # images, stems, remix and DAW stems: the same samples as one after the other in one process
    assert _same_audio(reference, out) > 60


def test_the_live_display_shows_the_worker_and_a_session_started_again_once() -> None:
    """Events as they come back from the workers: the worker's name beside the stage, and a
    session started again on another worker keeps one bar."""
    import io

    from rich.console import Console

    from studio_sep.batch.display import LiveDisplay, PlainDisplay

    start = {"type": "session_start", "index": 0, "name": "take[1]", "manifest": "m", "folder": "f"}
    stage = {"type": "stage", "index": 0, "name": "take[1]", "stage": "separate", "status": "start"}
    progress = {"type": "progress", "index": 0, "name": "take[1]", "stage": "separate", "done": 3, "total": 20,
                "detail": "log-lik 1.0"}
    end = {"type": "session_end", "index": 0, "name": "take[1]", "worker_name": "w2",
           "outcome": {"status": "done", "elapsed_s": 1.0, "folder": "f", "sdr_db": None}}
    buffer = io.StringIO()
    with LiveDisplay(Console(file=buffer, force_terminal=True, width=160), 1) as live:
        for worker in ("w1", "w2"):
            for event in (start, stage, progress):
                live({**event, "worker_name": worker})
            bars = [t for t in live.progress.tasks if t.id != live.overall]
            assert len(bars) == 1 and bars[0].fields["detail"] == f"log-lik 1.0 on worker {worker}"
        live(end)
    assert "take[1]: done in 1.0 s" in buffer.getvalue()
    plain = io.StringIO()
    display = PlainDisplay(plain, 1)
    for event in (start, stage):
        display({**event, "worker_name": "w1"})
    display(stage)  # a local run's events: no worker
    assert plain.getvalue().splitlines() == ["[1/1] take[1]: start on worker w1 (m → f)",
                                             "[1/1] take[1]: separate … on worker w1", "[1/1] take[1]: separate …"]


class _Processes:
    """Processes of one test, each stopped at the end (SIGKILL after a grace), whatever happens."""

    def __init__(self) -> None:
        self.all: list[subprocess.Popen] = []

    def start(self, *args: str, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, *args], env=ENV, **kwargs)
        self.all.append(process)
        return process

    def stop(self) -> None:
        for process in self.all:
            if process.poll() is None:
                process.terminate()
        for process in self.all:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _start_cluster(processes: _Processes, folder: Path) -> tuple[str, dict[str, subprocess.Popen]]:
    """`dask scheduler` and two `dask worker`s (w1, w2) on 127.0.0.1, no nanny (a kill is a
    kill); each stops by itself once the scheduler is gone or idle."""
    from distributed import Client

    scheduler_file = folder / "scheduler.json"
    processes.start("-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(scheduler_file), "--idle-timeout", "600",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not scheduler_file.is_file():
        assert time.monotonic() < deadline, "the scheduler did not start"
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    workers = {name: processes.start("-m", "dask", "worker", address, "--name", name, "--nthreads", "1",
                                     "--no-nanny", "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0",
                                     "--resources", "memory=4e9", "--death-timeout", "60",
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for name in ("w1", "w2")}
    with Client(address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
    return address, workers


def _kill_during_separation(process: subprocess.Popen, workers: dict[str, subprocess.Popen],
                            checkpoint: Path) -> tuple[str, list[dict]]:
    """Read the run's JSON lines (progress, on stderr) until its separation is past its first
    checkpoint, then SIGKILL the worker that runs it; its name and every event of the run, the
    summary (stdout) last."""
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr if line.startswith("{")],
                              daemon=True)
    reader.start()
    events, killed = [], None
    deadline = time.monotonic() + 240
    while killed is None:
        assert time.monotonic() < deadline, "the separation never passed its first checkpoint"
        try:
            events.append(json.loads(lines.get(timeout=1)))
        except queue.Empty:
            assert process.poll() is None, "the run ended before a worker could be killed"
            continue
        event = events[-1]
        if event["type"] == "progress" and event["stage"] == "separate" and event["done"] > 10 \
                and checkpoint.is_file():
            killed = event["worker_name"]
            workers[killed].send_signal(signal.SIGKILL)
    summary = process.stdout.read()
    assert process.wait(timeout=240) == 0, summary
    reader.join(timeout=10)
    while not lines.empty():
        events.append(json.loads(lines.get()))
    return killed, [*events, json.loads(summary)]


def test_a_scheduler_and_workers_started_by_hand(sessions: Path, reference: Path, tmp_path: Path) -> None:
    processes = _Processes()
    try:
        address, workers = _start_cluster(processes, tmp_path)
        # the shared-storage check: a folder a worker cannot see, named with the worker, before any work
        gone = tmp_path / "elsewhere" / "session.toml"
        job = SessionJob(0, gone, tmp_path / "out0", RunOptions(SeparationOptions()))
        with pytest.raises(ClusterError, match=rf"^worker w[12] \(tcp://127\.0\.0\.1:\d+\): cannot see "
                                               rf"{re.escape(str(gone.parent))}: no such file or directory \(fix: "):
            open_cluster(address, [job])
        assert not list((tmp_path / "out0").iterdir())  # the probe file is gone

        out = tmp_path / "out"
        first = _cli("run", str(sessions), "--out", str(out), *FAST, "--no-mix", "--cluster", address, "--json")
        assert first.returncode == 1, first.stdout + first.stderr
        summary = json.loads(first.stdout)  # the summary document, alone on stdout
        by_name = {s["name"]: s for s in summary["sessions"]}
        assert summary["failed"] == 1 and by_name["bravo"]["status"] == "failed"
        assert "mics.wav" in by_name["bravo"]["reason"]
        assert {by_name[n]["status"] for n in ("alpha", "charlie")} == {"done"}
        assert {s["worker"] for s in summary["sessions"]} <= {"w1", "w2"}
        for name in ("alpha", "charlie"):
            assert _same_audio(reference / name / "images", out / name / "images") >= 21

        # a second batch: the worker running the separation is killed; the other one continues it
        out = tmp_path / "killed"
        checkpoint = out / "alpha" / ".studio-sep" / "fit-checkpoint.npz"
        run = processes.start("-m", "studio_sep.cli", "run", str(sessions / "alpha"), "--out", str(out), *FAST,
                              "--no-mix", "--cluster", address, "--json", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        killed, events = _kill_during_separation(run, workers, checkpoint)
        starts = [e["worker_name"] for e in events if e["type"] == "session_start"]
        assert starts[0] == killed and starts[-1] == ({"w1", "w2"} - {killed}).pop(), starts
        assert any("started again on worker" in e.get("message", "") for e in events)
        assert events[-1]["type"] == "summary" and events[-1]["sessions"][0]["status"] == "done"
        record = json.loads((out / "alpha" / "run.json").read_text())
        assert record["stages"]["separate"]["resumed_from_iteration"] == 10
        assert _same_audio(reference / "alpha" / "images", out / "alpha" / "images") >= 21
        assert not checkpoint.exists() and not list((out / "alpha").rglob(".*.part"))
    finally:
        processes.stop()
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
