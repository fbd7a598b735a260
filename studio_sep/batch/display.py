"""How a batch run shows itself: a live rich display on a terminal, plain lines
elsewhere (piped, ``CI=true``), JSON lines with ``--json`` (the command line puts all
three on stderr); and the final summary's rows and its JSON document.

Each display is an event sink for :mod:`studio_sep.batch.runner` (``display(event)``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from studio_sep.batch.runner import STATUS_CURRENT, STATUS_DONE, SessionOutcome
from studio_sep.util.jsonfile import dumps_json


def _tag(event: dict, n_sessions: int) -> str:
    return f"[{event['index'] + 1}/{n_sessions}] {event['name']}"


def _on(event: dict) -> str:
    """`` on worker NAME`` for an event from a Dask worker (``--cluster``), else nothing."""
    return f" on worker {event['worker_name']}" if event.get("worker_name") else ""


def _end_line(outcome: dict) -> str:
    if outcome["status"] in (STATUS_DONE, STATUS_CURRENT):
        sdr = f", mean SDR {outcome['sdr_db']:+.2f} dB" if outcome.get("sdr_db") is not None else ""
        return f"{outcome['status']} in {outcome['elapsed_s']:.1f} s{sdr} → {outcome['folder']}"
    text = outcome["status"] + (f": {outcome['reason']}" if outcome.get("reason") else "")
    return text + (f" (log: {outcome['log']})" if outcome.get("log") else "")


class LiveDisplay:
    """One rich display: the sessions bar, then per running session its stage and the
    stage's own bar with ETA; finished sessions and notes print above it."""

    def __init__(self, console: Console, n_sessions: int):
        self.console, self.n = console, n_sessions
        self.progress = Progress(
            TextColumn("{task.description:<34}", markup=False), BarColumn(bar_width=30),
            TextColumn("{task.completed:>6.0f}/{task.total:<6.0f}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), TextColumn("{task.fields[detail]}", markup=False), console=console, transient=True)
        self.overall = self.progress.add_task("sessions", total=n_sessions, detail="")
        self.tasks: dict[int, int] = {}
        self.stage: dict[int, str] = {}

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: dict) -> None:
        kind, index = event["type"], event.get("index")
        if kind == "session_start":
            if index in self.tasks:  # started again on another worker (--cluster)
                self.progress.remove_task(self.tasks.pop(index))
            self.tasks[index] = self.progress.add_task(f"{event['name']}: validate", total=1, detail=_on(event))
        elif kind == "stage" and event["status"] == "start" and index in self.tasks:
            self.stage[index] = event["stage"]
            self.progress.reset(self.tasks[index], total=1, completed=0,
                                description=f"{event['name']}: {event['stage']}", detail=_on(event))
        elif kind == "progress" and index in self.tasks:
            task = self.tasks[index]
            if event["stage"] != self.stage.get(index):  # a sub-stage (e.g. the mixer's master pass)
                self.stage[index] = event["stage"]
                self.progress.reset(task, total=event["total"] or 1, completed=0,
                                    description=f"{event['name']}: {event['stage']}")
            self.progress.update(task, completed=event["done"], total=event["total"] or 1,
                                 detail=event["detail"] + _on(event))
        elif kind == "info":
            self.console.print(Text(f"{_tag(event, self.n)}: {event['message']}"), highlight=False)
        elif kind == "session_end":
            if index in self.tasks:
                self.progress.remove_task(self.tasks.pop(index))
            self.progress.advance(self.overall)
            outcome = event["outcome"]
            colour = "green" if outcome["status"] in (STATUS_DONE, STATUS_CURRENT) else "red"
            self.console.print(Text(f"{_tag(event, self.n)}: {_end_line(outcome)}", style=colour), highlight=False)


class PlainDisplay:
    """Line-by-line output: stage starts and ends, progress at most every ``every_s``
    seconds per stage, one line per finished session. ``quiet``: only the latter."""

    def __init__(self, stream: TextIO, n_sessions: int, *, quiet: bool = False, every_s: float = 5.0):
        self.stream, self.n, self.quiet, self.every_s = stream, n_sessions, quiet, every_s
        self.started: dict[tuple[int, str], float] = {}
        self.last: dict[tuple[int, str], float] = {}

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "session_end":
            self._print(f"{_tag(event, self.n)}: {_end_line(event['outcome'])}")
            return
        if self.quiet:
            return
        tag = _tag(event, self.n)
        if kind == "session_start":
            self._print(f"{tag}: start{_on(event)} ({event['manifest']} → {event['folder']})")
        elif kind == "info":
            self._print(f"{tag}: {event['message']}")
        elif kind == "stage":
            if event["status"] == "start":
                self.started[(event["index"], event["stage"])] = time.monotonic()
                self._print(f"{tag}: {event['stage']} …{_on(event)}")
            else:
                detail = f" ({event['detail']})" if event.get("detail") else ""
                word = "up to date, skipped" if event["status"] == "skipped" else event["status"]
                self._print(f"{tag}: {event['stage']} {word}{detail}")
        elif kind == "progress":
            key, now = (event["index"], event["stage"]), time.monotonic()
            start = self.started.setdefault(key, now)
            done, total = event["done"], event["total"]
            if done < total and now - self.last.get(key, start) < self.every_s:
                return
            self.last[key] = now
            eta = ""
            if 0 < done < total:
                eta = f", eta {(now - start) * (total - done) / done:.0f} s"
            detail = f" {event['detail']}" if event.get("detail") else ""
            self._print(f"{tag}: {event['stage']} {done:g}/{total:g}{detail}{eta}")


class JsonDisplay:
    """Every event as one JSON line (machine-readable progress)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __enter__(self) -> JsonDisplay:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, event: dict) -> None:
        print(dumps_json(event, default=str), file=self.stream, flush=True)


SUMMARY_HEADER = ("session", "status", "duration", "time taken", "SDR (dB)", "output")


def summary_rows(outcomes: Sequence[SessionOutcome]) -> tuple[list[list], list[str]]:
    """The summary's rows (session, status, duration, time taken, SDR, output folder; the
    status a green or red :class:`~rich.text.Text`) and, for under the table, each failure's
    reason and log, and each source whose prior was replaced by its stem mic's power, one
    line each."""
    rows, notes = [], []
    for o in outcomes:
        duration = "—" if o.duration_s is None else f"{o.duration_s:.1f} s"
        sdr = "—" if o.sdr_db is None else f"{o.sdr_db:+.2f}"
        ok = o.status in (STATUS_DONE, STATUS_CURRENT)
        rows.append([Text(o.name), Text(o.status, style="green" if ok else "red"), duration,
                     f"{o.elapsed_s:.1f} s", sdr, Text(o.folder or "—")])
        if not ok and (o.reason or o.log):
            notes.append(f"{o.name}: {o.reason or o.status}" + (f" (log: {o.log})" if o.log else ""))
        notes += [f"{o.name}: {source}'s prior replaced: {why}" for source, why in o.prior_replaced.items()]
    return rows, notes


def summary_document(outcomes: Sequence[SessionOutcome]) -> dict:
    """The summary as data: ``{"type": "summary", "sessions": [outcome…], "failed": n}``."""
    from dataclasses import asdict

    failed = sum(o.status not in (STATUS_DONE, STATUS_CURRENT) for o in outcomes)
    return {"type": "summary", "sessions": [asdict(o) for o in outcomes], "failed": failed}


def summary_json(outcomes: Sequence[SessionOutcome]) -> str:
    """:func:`summary_document` as one line of strict JSON."""
    return dumps_json(summary_document(outcomes))
