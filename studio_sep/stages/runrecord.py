"""What a session's output folder says about the work done in it: ``run.json``.

Every stage (prior, separate, images, mix, evaluate) records, when and only when all
its artifacts are written, a *fingerprint* of everything its result depends on (input
files by content, settings, the upstream stage's fingerprint, studio-sep's version) and
the files it wrote. A later run skips a stage whose recorded fingerprint equals the one
it would write and whose files are all there; it redoes it otherwise. A stage that is
interrupted has no record (its old one is removed when it starts), so nothing
half-done is ever taken for done.

Private working files (the fit's checkpoints, cached hashes) live in
``<session out>/.studio-sep/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studio_sep import __version__
from studio_sep.util.atomic import file_sha256, write_text_atomic
from studio_sep.util.errors import StudioSepError

#: ``callback(stage, done, total, detail="")``: progress of a named stage.
ProgressCallback = Callable[..., None]
RUN_FILE = "run.json"
WORK_DIR = ".studio-sep"


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex, first 16 bytes) of the canonical JSON of ``parts`` and the version."""
    text = json.dumps([__version__, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RunRecord:
    """``run.json`` of one session's output folder: top-level sections plus ``stages``.

    One writer per folder (see :func:`session_lock`); every change is written at once,
    atomically.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / RUN_FILE

    def load(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}  # unreadable: treated as no record, every stage is redone
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict) -> None:
        write_text_atomic(self.path, json.dumps(data, indent=2))

    def stage(self, name: str) -> dict | None:
        return self.load().get("stages", {}).get(name)

    def is_current(self, name: str, fp: str) -> bool:
        """The stage finished with this fingerprint and its files are still there."""
        record = self.stage(name)
        if not record or record.get("fingerprint") != fp:
            return False
        return all((self.folder / rel).is_file() for rel in record.get("outputs", []))

    def begin(self, name: str) -> None:
        """Forget the stage's record before its files start to change."""
        data = self.load()
        if name in data.get("stages", {}):
            del data["stages"][name]
            self._save(data)

    def finish(self, name: str, fp: str, outputs: Iterable[str | os.PathLike], *, elapsed_s: float,
               sections: Mapping[str, Any] | None = None, **extra: Any) -> dict:
        """Record a finished stage (and top-level ``sections``) once its files are written."""
        rel = sorted(str(Path(p).resolve().relative_to(self.folder.resolve())) for p in outputs)
        record = {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "elapsed_s": round(elapsed_s, 3), "outputs": rel, **extra}
        data = self.load()
        data.update(sections or {})
        data.setdefault("stages", {})[name] = record
        self._save(data)
        return record


class FileHashes:
    """Content hashes of input files, remembered by (size, mtime) so a 2 GB recording
    is hashed once, not on every run."""

    def __init__(self, cache_file: str | os.PathLike):
        self.cache_file = Path(cache_file)
        try:
            self.known = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            self.known = {}
        self.dirty = False

    def __call__(self, path: str | os.PathLike) -> str:
        path = Path(path).resolve()
        st = path.stat()
        key, stamp = str(path), [st.st_size, st.st_mtime_ns]
        entry = self.known.get(key)
        if entry and entry["stamp"] == stamp:
            return entry["sha256"]
        digest = file_sha256(path)
        self.known[key] = {"stamp": stamp, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            write_text_atomic(self.cache_file, json.dumps(self.known, indent=1))
            self.dirty = False


class SessionBusyError(StudioSepError):
    """Another studio-sep process is writing the same session output folder."""

    exit_code = 1


@contextmanager
def session_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a session's output folder for the duration.

    The lock dies with the process (SIGKILL included), so a killed run never blocks
    the next one. Leftover temporary files of a killed run (``.<name>.*.part``) are
    removed once the lock is held.
    """
    folder = Path(folder)
    work = folder / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    handle = open(work / "lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise SessionBusyError(f"{folder}: another studio-sep run is writing here ({owner}); "
                                   "wait for it to finish or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        remove_partial_files(folder)
        yield
    finally:
        handle.close()


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left (``.*.part``)."""
    removed = []
    for path in Path(folder).rglob(".*.part"):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed
