"""The package's exceptions. Imports nothing of the package (errno and os only).

Every error a user can cause derives from :class:`StudioSepError`; the CLI turns
each into one line (no traceback) and a non-zero exit code. Messages name the file,
the field, the problem and the fix.
"""

from __future__ import annotations

import errno as _errno
import os


#: Control characters as escapes: a message stays one line on a terminal even when it
#: quotes user text (a path holding a newline, a name holding an ANSI escape).
_ONE_LINE = str.maketrans({chr(c): repr(chr(c))[1:-1] for c in (*range(32), 127)})


class StudioSepError(Exception):
    """Base class of every error the user can cause (bad input, bad settings)."""

    exit_code = 2


class InputError(StudioSepError):
    """A file or field given by the user is wrong.

    Parameters
    ----------
    file : str or path-like or None
        The file at fault (a manifest, a preset, an audio file).
    field : str or None
        The dotted field inside that file, e.g. ``mics[2].channel``.
    problem : str
        What is wrong, with the offending value.
    fix : str or None
        What the user should do about it.
    """

    def __init__(self, file, field: str | None, problem: str, fix: str | None = None):
        self.file = None if file is None else str(file)
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        return _one_line(self.file, self.field, self.problem, self.fix)


def _one_line(file: str | None, field: str | None, problem: str, fix: str | None) -> str:
    where = ": ".join(part for part in (file, field) if part)
    text = f"{where}: {problem}" if where else problem
    if fix:
        text += f" (fix: {fix})"
    return text.translate(_ONE_LINE)


class ManifestError(InputError):
    """A session manifest is invalid."""


class AudioError(InputError):
    """An audio file is missing, unreadable or inconsistent with its session."""


class SimulationError(InputError):
    """The reference-session renderer cannot run with the given settings."""


#: errno → (what happened, the fix, exit code) of a file that could not be written.
_WRITE_FAILURES = {
    _errno.ENOSPC: ("no space left on device", "free space and rerun; finished stages are kept", 1),
    _errno.EDQUOT: ("disk quota exceeded", "free space and rerun; finished stages are kept", 1),
    _errno.EROFS: ("read-only file system", "give an --out on a writable file system", 2),
    _errno.EACCES: ("permission denied", "make the folder writable or give another --out", 2),
    _errno.EPERM: ("operation not permitted", "make the folder writable or give another --out", 2),
    _errno.ENAMETOOLONG: ("file name too long", "use a shorter session name or --out path", 2),
    _errno.ENOTDIR: ("a path component is a file, not a folder", "give another --out", 2),
}


class OutputError(StudioSepError):
    """A file could not be written (disk full, read-only or forbidden folder, …).

    One line naming the file, the cause and the fix. Exit code 2 when the place the
    user chose cannot be written (read-only, no permission, name too long), 1 when the
    machine failed (disk full, I/O error): the input was fine.
    """

    def __init__(self, path, problem: str, fix: str | None = None, *, exit_code: int = 1):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        self.exit_code = exit_code
        super().__init__(_one_line(self.path, None, " ".join(problem.split()), fix))

    @classmethod
    def from_os_error(cls, exc: OSError, path=None) -> OutputError:
        """The one-line account of ``exc``; ``path`` names the file when the error does not
        (or names only a temporary sibling of it)."""
        problem, fix, code = _WRITE_FAILURES.get(exc.errno, (None, None, 1))
        if problem is None:
            problem = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__)
            problem = problem[:1].lower() + problem[1:]
        return cls(path if path is not None else exc.filename, problem, fix, exit_code=code)


class FitError(StudioSepError):
    """The separation's fit did not give a usable model for this input (NaN/inf parameters)."""

    exit_code = 1


class ClusterError(StudioSepError):
    """A Dask cluster that cannot run the batch (unreachable scheduler, no workers, a worker
    that cannot see the shared files or declares no resources), found before any work.

    One line naming the scheduler or the worker, the problem and the fix.
    """

    def __init__(self, where: str | None, problem: str, fix: str | None = None):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(_one_line(where, None, problem, fix))
