"""The package's exceptions. Imports nothing.

Every error a user can cause derives from :class:`StudioSepError`; the CLI turns
each into one line (no traceback) and a non-zero exit code. Messages name the file,
the field, the problem and the fix.
"""

from __future__ import annotations


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
        where = ": ".join(part for part in (self.file, self.field) if part)
        text = f"{where}: {self.problem}" if where else self.problem
        if self.fix:
            text += f" (fix: {self.fix})"
        return text.translate(_ONE_LINE)


class ManifestError(InputError):
    """A session manifest is invalid."""


class AudioError(InputError):
    """An audio file is missing, unreadable or inconsistent with its session."""


class SimulationError(InputError):
    """The reference-session renderer cannot run with the given settings."""


class FitError(StudioSepError):
    """The separation's fit did not give a usable model for this input (NaN/inf parameters)."""

    exit_code = 1
