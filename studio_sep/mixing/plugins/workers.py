"""Worker processes, parent side: a job folder per job, starting the worker, waiting for it,
and saying why one died.

A worker is a fresh ``python -c`` process running :data:`WORKER_ENTRY` (the code in
:mod:`.runtime`) on one job folder: ``job.json`` says what to do, ``input.npy`` holds the
audio of a render job, and the worker writes ``result.json`` and ``output.npy`` (render)
or ``describe.jsonl`` (describe). A stream job (:class:`StreamWorker`) exchanges blocks
of audio with its worker through stdin and stdout instead, one block in memory at a time. Its stderr goes to ``stderr.txt``, whose last line
becomes part of the failure reason when it dies without a result.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studio_sep.mixing.plugins.errors import PluginJobError
from studio_sep.mixing.plugins.spec import PluginSpec

WORKER_ENTRY = ("studio_sep.mixing.plugins.runtime", "worker_main")
"""(module, function) a worker process runs with the job folder as its only argument."""


def start_worker(job: Path, *, pipes: bool = False) -> tuple[subprocess.Popen, Any]:
    """Start ``python -c`` on :data:`WORKER_ENTRY` for the job folder; stderr goes to a file
    (stdin and stdout are pipes for a stream job, ``pipes=True``)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    stderr = open(job / "stderr.txt", "wb")  # noqa: SIM115 - closed by the caller
    module, function = WORKER_ENTRY
    code = f"import sys; from {module} import {function}; {function}(sys.argv[1])"
    stdio = subprocess.PIPE if pipes else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-c", code, str(job)], stdin=stdio,
                            stdout=stdio, stderr=stderr, env=env, cwd=str(job))
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


class StreamWorker:
    """A chain with VST3 plugins rendering a signal block by block in one worker process
    (``runtime._worker_stream``), the plugins' state kept across blocks.

    The worker loads the plugins and checks their parameters before the first block,
    and again after the last; ``push`` and ``finish`` behave as
    :class:`studio_sep.mixing.plugins.runtime.StageStream`'s. Every exchange has
    ``timeout_s``; a failure, crash or timeout raises :class:`PluginJobError` (the
    worker is killed), and the worker is stopped when this object goes away.
    """

    def __init__(self, specs: Sequence[PluginSpec], sample_rate: float, n_channels: int, *,
                 infos: dict[str, dict[str, Any]], names: list[str], timeout_s: float):
        self._names, self._timeout_s, self._n_channels = names, timeout_s, n_channels
        self._tmp = tempfile.TemporaryDirectory(prefix="studio-sep-stream-")
        self._job = Path(self._tmp.name)
        (self._job / "job.json").write_text(json.dumps({
            "kind": "stream", "specs": [spec.to_dict() for spec in specs], "infos": infos,
            "sample_rate": sample_rate, "n_channels": n_channels, "started_at": time.time()}))
        self._proc, stderr = start_worker(self._job, pipes=True)
        os.set_blocking(self._proc.stdin.fileno(), False)
        self._stop = weakref.finalize(self, _stop_worker, self._proc, stderr, self._tmp)
        self._receive()  # ready: plugins loaded, parameters set and read back

    def push(self, x_CB: np.ndarray) -> np.ndarray:
        self._send(struct.pack("<q", x_CB.shape[1]) + np.ascontiguousarray(x_CB, dtype="<f8").tobytes())
        return self._receive()

    def finish(self) -> np.ndarray:
        self._send(struct.pack("<q", -1))
        rest = self._receive()
        try:
            self._proc.wait(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            pass
        self._stop()
        return rest

    def _send(self, data: bytes) -> None:
        deadline, view, fd = time.monotonic() + self._timeout_s, memoryview(data), self._proc.stdin.fileno()
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                self._fail(f"timed out after {self._timeout_s:g} s (worker killed)")
            try:
                view = view[os.write(fd, view[:1 << 16]):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                self._fail()

    def _receive(self) -> np.ndarray:
        n = struct.unpack("<q", self._read(8))[0]
        return np.frombuffer(self._read(8 * self._n_channels * n), dtype="<f8").reshape(self._n_channels, n)

    def _read(self, n_bytes: int) -> bytes:
        deadline, parts, got, fd = time.monotonic() + self._timeout_s, [], 0, self._proc.stdout.fileno()
        while got < n_bytes:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail(f"timed out after {self._timeout_s:g} s (worker killed)")
            part = os.read(fd, min(n_bytes - got, 1 << 20))
            if not part:
                self._fail()
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _fail(self, reason: str | None = None) -> None:
        """Stop the worker and raise why it failed (its result, its death, or ``reason``)."""
        if reason is None:
            try:
                returncode = self._proc.wait(timeout=self._timeout_s)
            except subprocess.TimeoutExpired:
                returncode, reason = None, f"timed out after {self._timeout_s:g} s (worker killed)"
            result_path = self._job / "result.json"
            result = json.loads(result_path.read_text()) if result_path.exists() else None
            if result is not None and not result["ok"]:
                names = result.get("plugins") or self._names
                self._stop()
                raise PluginJobError(names, result["error"])
            if reason is None:
                reason = death_reason(returncode, self._job / "stderr.txt")
        self._stop()
        raise PluginJobError(self._names, reason)


def _stop_worker(proc: subprocess.Popen, stderr, tmp: tempfile.TemporaryDirectory) -> None:
    """Kill a stream worker that is still running, close its files, remove its job folder."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stdout, stderr):
        try:
            f.close()
        except OSError:
            pass
    tmp.cleanup()
