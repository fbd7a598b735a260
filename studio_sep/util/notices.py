"""Warnings the library gives while it works (a state file found invalid and ignored, …).

They go to the standard ``logging`` logger ``studio_sep``; :func:`report_warnings` routes
those of the calling thread to a callable for the duration (the batch runner: the session's
log and its events; a command: one ``warning:`` line on stderr), so sessions run in threads
of one process each get their own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

LOGGER = "studio_sep"


def warn(message: str) -> None:
    """Give a warning (one line)."""
    logging.getLogger(LOGGER).warning(message)


class _ToCallable(logging.Handler):
    def __init__(self, sink: Callable[[str], None], thread: int):
        super().__init__(logging.WARNING)
        self.sink, self.thread = sink, thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.sink(record.getMessage())


@contextlib.contextmanager
def report_warnings(sink: Callable[[str], None]) -> Iterator[None]:
    """Hand this thread's warnings to ``sink(message)`` while the block runs (and keep them
    off Python's last-resort stderr handler)."""
    logger = logging.getLogger(LOGGER)
    handler = _ToCallable(sink, threading.get_ident())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
