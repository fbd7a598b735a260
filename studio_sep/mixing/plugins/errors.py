"""The plugin host's errors: a chain refused before rendering, or a render job that failed."""

from __future__ import annotations

from collections.abc import Sequence

from studio_sep.util.errors import InputError, StudioSepError


class PluginError(InputError):
    """A plugin chain is invalid (unknown plugin or parameter, bad value, wrong channel layout)."""


class PluginJobError(StudioSepError):
    """A render job failed while running: a plugin raised, crashed, hung or produced NaN/inf.

    Parameters
    ----------
    plugins : sequence of str
        The plugins of the job (``where`` of each spec, or its name).
    reason : str
        What happened, one line.
    """

    exit_code = 3

    def __init__(self, plugins: Sequence[str], reason: str):
        self.plugins = tuple(plugins)
        self.reason = reason
        names = ", ".join(self.plugins) or "empty chain"
        super().__init__(f"plugin job [{names}] failed: {reason}")


def one_line(exc: BaseException) -> str:
    """An exception as one short line (type and message), for a job's failure reason."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
