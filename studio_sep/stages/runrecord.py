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
from studio_sep.io.audio import audio_info
from studio_sep.stages.checkpoints import load_params
from studio_sep.util.atomic import file_sha256
from studio_sep.util.errors import StudioSepError
from studio_sep.util.jsonfile import write_json_atomic
from studio_sep.util.notices import warn

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
    atomically. What is read is checked: an unreadable file counts as no record, a stage
    entry of the wrong shape (or whose sections are missing) as no record of that stage,
    each said once in a warning; the stage is then redone.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / RUN_FILE
        self._warned: set[str] = set()

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warn(message)

    def load(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
            self._warn(f"{self.path}: unreadable ({_first_line(exc)}); treated as no record: every stage is redone")
            return {}
        if not isinstance(data, dict):
            self._warn(f"{self.path}: not a JSON object; treated as no record: every stage is redone")
            return {}
        stages = data.get("stages", {})
        if not isinstance(stages, dict):
            self._warn(f"{self.path}: 'stages' is not an object; treated as no record: every stage is redone")
            data["stages"] = {}
            return data
        for name, entry in list(stages.items()):
            problem = _stage_problem(entry, data)
            if problem:
                self._warn(f"{self.path}: stages.{name} {problem}; treated as no record: the stage is redone")
                del stages[name]
        return data

    def _save(self, data: dict) -> None:
        write_json_atomic(self.path, data)

    def stage(self, name: str) -> dict | None:
        return self.load().get("stages", {}).get(name)

    def is_current(self, name: str, fp: str) -> bool:
        """The stage finished with this fingerprint and its files are still there, whole
        (the size recorded, and a WAV, .npz or JSON file readable)."""
        record = self.stage(name)
        if not record or record.get("fingerprint") != fp:
            return False
        sizes = record.get("sizes", {})
        for rel in record.get("outputs", []):
            problem = output_problem(self.folder / rel, sizes.get(rel))
            if problem:
                self._warn(f"{self.folder / rel}: {problem}; the {name} stage is redone")
                return False
        return True

    def begin(self, name: str) -> None:
        """Forget the stage's record before its files start to change."""
        data = self.load()
        if name in data.get("stages", {}):
            del data["stages"][name]
            self._save(data)

    def finish(self, name: str, fp: str, outputs: Iterable[str | os.PathLike], *, elapsed_s: float,
               sections: Mapping[str, Any] | None = None, **extra: Any) -> dict:
        """Record a finished stage (and top-level ``sections``) once its files are written, with
        the process's peak resident memory so far (``peak_rss_bytes``: VmHWM, None off Linux; a
        process that ran earlier sessions counts their peak too)."""
        from studio_sep.stages.memory import peak_rss_bytes

        paths = {str(Path(p).resolve().relative_to(self.folder.resolve())): Path(p) for p in outputs}
        rel = sorted(paths)
        record = {"fingerprint": fp, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "elapsed_s": round(elapsed_s, 3), "peak_rss_bytes": peak_rss_bytes(), "outputs": rel,
                  "sizes": {r: paths[r].stat().st_size for r in rel},
                  **({"sections": sorted(sections)} if sections else {}), **extra}
        data = self.load()
        data.update(sections or {})
        data.setdefault("stages", {})[name] = record
        self._save(data)
        return record

    def separation(self) -> dict | None:
        """The ``separation`` section the images stage wrote (stem mics, init, prior), or None."""
        data = self.load()
        if "images" not in data.get("stages", {}) or _section_problem("separation", data.get("separation")):
            return None
        return data["separation"]


#: What the top-level sections that later stages read must hold.
_SECTION_FIELDS = {"separation": {"stem_mics": dict, "init": list}, "session": {"name": str}}


def _section_problem(name: str, section: Any) -> str | None:
    if section is None:
        return f"needs the section {name!r}, which is missing"
    if name not in _SECTION_FIELDS:
        return None
    if not isinstance(section, dict):
        return f"needs the section {name!r} as an object"
    for key, kind in _SECTION_FIELDS.get(name, {}).items():
        if not isinstance(section.get(key), kind):
            return f"needs {name}.{key}, which is missing or not a {kind.__name__}"
    if name == "separation" and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in section["stem_mics"].items()):
        return "needs separation.stem_mics to map source names to mic names"
    return None


def _stage_problem(entry: Any, data: dict) -> str | None:
    """Why a stage's entry in ``run.json`` cannot be trusted, or None."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    if not isinstance(entry.get("fingerprint"), str):
        return "has no fingerprint"
    outputs = entry.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o and not Path(o).is_absolute()
                                                and ".." not in Path(o).parts for o in outputs):
        return "has no valid list of its files"
    sizes = entry.get("sizes", {})
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in sizes.values()):
        return "has invalid file sizes"
    sections = entry.get("sections", [])
    if not isinstance(sections, list) or not all(isinstance(name, str) for name in sections):
        return "has an invalid list of sections"
    for name in sections:
        problem = _section_problem(name, data.get(name))
        if problem:
            return problem
    return None


def output_problem(path: Path, size: int | None = None) -> str | None:
    """Why a stage's output file cannot be taken as written by it, or None: missing, not the
    size recorded (truncated), or unreadable as an audio (WAV, FLAC), .npz or JSON file."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes where {size} were written (truncated or changed)"
    try:
        if path.suffix in (".wav", ".flac"):
            audio_info(path)
        elif path.suffix == ".npz":
            load_params(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (StudioSepError, OSError, ValueError) as exc:
        return f"unreadable ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _valid_hash_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
            and isinstance(entry.get("stamp"), list) and len(entry["stamp"]) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in entry["stamp"]))


class FileHashes:
    """Content hashes of input files, remembered by (size, mtime) so a 2 GB recording
    is hashed once, not on every run. An unreadable cache, or an entry of the wrong
    shape, is dropped with a warning (the file is hashed again)."""

    def __init__(self, cache_file: str | os.PathLike):
        self.cache_file = Path(cache_file)
        self.dirty = False
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError, RecursionError) as exc:
            warn(f"{self.cache_file}: unreadable ({_first_line(exc)}); ignored: inputs are hashed again")
            data, self.dirty = {}, True
        if not isinstance(data, dict):
            warn(f"{self.cache_file}: not a JSON object; ignored: inputs are hashed again")
            data, self.dirty = {}, True
        self.known = {k: v for k, v in data.items() if _valid_hash_entry(v)}
        if len(self.known) != len(data):
            warn(f"{self.cache_file}: {len(data) - len(self.known)} invalid entries ignored: those inputs are "
                 "hashed again")
            self.dirty = True

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
            write_json_atomic(self.cache_file, self.known, indent=1)
            self.dirty = False


class SessionBusyError(StudioSepError):
    """Another studio-sep process is writing the same session output folder."""

    exit_code = 1


@contextmanager
def session_lock(folder: str | os.PathLike, *, create: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on a session's output folder for the duration.

    The lock dies with the process (SIGKILL included), so a killed run never blocks
    the next one. Leftover temporary files of a killed run (``.<name>.*.part``) are
    removed once the lock is held. ``create=False`` (a command that only reads and adds
    to an existing run: mix, evaluate) takes no lock and writes nothing where no run has
    been: the command then stops with its own "no separation run" error.
    """
    folder = Path(folder)
    work = folder / WORK_DIR
    if not create and not work.is_dir():
        yield
        return
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
