"""What the command line prints, and where: the consoles, the one error handler, progress, tables, results.

- **stdout carries results only** (summaries, tables, result paths, the ``--json`` document);
  progress, logs, warnings and errors go to **stderr** (:data:`err_console`).
- **User text is printed as it is.** Both consoles are made with markup and highlighting off,
  so ``console.print(some_string)`` never reads ``[day 2]`` or ``[/]`` as rich markup; styled
  parts are :class:`rich.text.Text` (``styled``), which holds text literally, and table cells
  are made :class:`~rich.text.Text` by :func:`print_table`.
- **Tables are never cut**: on a terminal they fit its width (cells fold), elsewhere (a pipe, a
  file, CI) they print in full as a Markdown table (:func:`markdown_table`).
- :class:`Output` is what a command's ``--quiet`` and ``--json`` choose between.

:func:`user_errors` is the one place that turns the package's errors into a one-line message and an
exit code (no traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from studio_sep.util.errors import OutputError, StudioSepError
from studio_sep.util.jsonfile import dumps_json
from studio_sep.util.notices import report_warnings

#: Results (stdout). Paths and one-line messages are never folded (soft wrap).
console = Console(soft_wrap=True, markup=False, highlight=False)
#: Progress, logs, warnings and errors (stderr).
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)

#: A table cell with no number (None, NaN, ±inf): the JSON files hold null there.
NO_VALUE = "—"


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line of literal text with styled parts: ``styled("separated ", (name, "bold"))``."""
    return Text.assemble(*parts)


@contextlib.contextmanager
def user_errors(folder: Path | None = None) -> Iterator[None]:
    """Turn a :class:`StudioSepError`, or an ``OSError`` of a file that cannot be written
    or read (disk full, read-only folder; ``folder`` names the place when the error names
    no file), into ``error: <one line>`` and its exit code; print the library's warnings
    (a state file found invalid and ignored) as ``warning: <one line>``."""
    try:
        with report_warnings(print_warning):
            yield
    except (StudioSepError, OSError) as exc:
        error = exc if isinstance(exc, StudioSepError) else \
            OutputError.from_os_error(exc, None if exc.filename else folder)
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None


@contextlib.contextmanager
def existing_run(manifest: Path, out: Path, output: Output) -> Iterator[tuple[Any, Any]]:
    """For a command that works on a run's outputs (evaluate, report): the session of
    ``manifest`` (its warnings printed) and a progress callback, with the run's folder under
    ``out`` locked (it must exist) and errors turned into one line by :func:`user_errors`."""
    from studio_sep.session import load_session
    from studio_sep.stages import session_lock

    with user_errors(out):
        session = load_session(manifest)
        print_session_warnings(session)
        with session_lock(out / session.name, create=False), output.progress() as progress:
            yield session, progress


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, the message (user text) printed as it is."""
    err_console.print(styled(("error:", "bold red"), " ", message))


def print_session_warnings(session) -> None:
    """The session's own warnings (a digitally silent mic), one ``warning:`` line each."""
    for warning in session.warnings:
        print_warning(warning)


def print_warning(message: str) -> None:
    err_console.print(styled(("warning:", "yellow"), " ", message))


# ----------------------------------------------------------------------------- tables


def cell(value: Any, spec: str = "") -> str:
    """A number formatted by ``spec``, or :data:`NO_VALUE` for None, NaN and ±inf."""
    if value is None or (isinstance(value, float) and (value != value or value in (float("inf"), float("-inf")))):
        return NO_VALUE
    return format(value, spec)


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[str | Text]], *,
                notes: Iterable[str] = ()) -> None:
    """A table on stdout, every cell as written: fitted to a terminal (cells fold, never cut
    with "…"), in full as Markdown anywhere else; then ``notes``, one line each."""
    rows = [list(row) for row in rows]
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
        console.print(table)
    else:
        console.print(markdown_table(title, header, rows) + "\n")  # a blank line closes a Markdown table
    for note in notes:
        console.print(note)


def markdown_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str | Text]]) -> str:
    """``title``, a blank line and a Markdown table with columns padded to their widest cell
    (a ``|`` in a cell written ``\\|``, as Markdown needs it); no line is ever cut."""
    def text(c) -> str:
        return (c.plain if isinstance(c, Text) else str(c)).replace("|", "\\|").replace("\n", " ")

    grid = [[text(c) for c in header]] + [[text(c) for c in row] for row in rows]
    widths = [max(cell_len(r[i]) for r in grid if i < len(r)) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c + " " * (w - cell_len(c)) for c, w in zip(r, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([*([title, ""] if title else []), line(grid[0]), rule, *(line(r) for r in grid[1:])])


# ----------------------------------------------------------------------------- output modes


class Output:
    """How one command reports, as chosen by its ``--quiet`` and ``--json``.

    - default: progress and logs on stderr; the results as text (tables, lines) on stdout;
    - ``quiet``: no progress and no logs; stdout gets only the result path(s), one a line;
    - ``json``: no progress and no logs; stdout gets one JSON document on one line (strict
      JSON: null for a value that is not a finite number) and nothing else.

    Warnings and errors go to stderr in every mode; the exit codes do not change.
    """

    def __init__(self, quiet: bool = False, json_: bool = False):
        self.quiet, self.json = quiet, json_

    @property
    def chatty(self) -> bool:
        """Progress and logs are shown."""
        return not (self.quiet or self.json)

    def progress(self) -> StageProgress:
        """The progress display for the library's ``callback`` (stderr; silent unless chatty)."""
        return StageProgress(err_console, enabled=self.chatty)

    def status(self, message: str):
        """A spinner on a terminal's stderr while something without steps runs."""
        if self.chatty and err_console.is_terminal:
            return err_console.status(Text(message))
        return contextlib.nullcontext()

    def log(self, line: str) -> None:
        """A log line (stderr), unless quiet or json."""
        if self.chatty:
            err_console.print(line)

    def result(self, document: Any, *, paths: Iterable[str | Path] = (), show: Callable[[], None] | None = None,
               ) -> None:
        """The command's result: ``document`` as JSON, ``paths`` (quiet), or ``show()`` (text)."""
        if self.json:
            console.file.write(dumps_json(as_document(document)) + "\n")  # one line: `tail -1` and jq read it
            console.file.flush()
        elif self.quiet:
            for path in paths:
                console.print(str(path))
        elif show is not None:
            show()


def batch_display(output: Output, n_sessions: int):
    """The display of a batch run, on stderr: a live display on a terminal, plain lines
    elsewhere (a pipe, ``CI=true``), JSON lines with ``--json``, nothing with ``--quiet``."""
    import os
    import sys

    from studio_sep.batch.display import JsonDisplay, LiveDisplay, PlainDisplay

    if output.json:
        return JsonDisplay(sys.stderr)
    if output.quiet:
        return _NoDisplay()
    if not err_console.is_terminal or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return PlainDisplay(sys.stderr, n_sessions)
    return LiveDisplay(err_console, n_sessions)


class _NoDisplay:
    def __enter__(self) -> _NoDisplay:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, event: dict) -> None:
        pass


def as_document(value: Any) -> Any:
    """A result as plain data for JSON: dataclasses as dicts (recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_document(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: as_document(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_document(v) for v in value]
    return value


class StageProgress:
    """A progress display on stderr fed by the library's ``callback(stage, done, total)``:
    rich bars on a terminal, a plain line at the start, every 10 % and the end elsewhere;
    nothing when not ``enabled`` (``--quiet``, ``--json``)."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True):
        console = console or err_console
        self.progress = Progress(
            TextColumn("{task.description:<20}", markup=False), BarColumn(),
            TextColumn("{task.completed:>5.0f}/{task.total:<5.0f}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), TextColumn("{task.fields[detail]}", markup=False),
            console=console, transient=False, disable=not (enabled and console.is_terminal),
        )
        self.tasks: dict[str, int] = {}
        self.last_plain: dict[str, float] = {}
        self.plain = enabled and not console.is_terminal
        self.console = console

    def __enter__(self) -> StageProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: float, total: float, detail: str = "") -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, detail=detail)
            self.last_plain[stage] = -1.0
        self.progress.update(self.tasks[stage], completed=done, total=total, detail=detail)
        if self.plain:  # not a terminal: a plain line at the start, every 10 %, and the end
            step = int(10 * done / total) if total else 10
            if step > self.last_plain[stage] or done >= total:
                if done >= total and self.last_plain[stage] >= 10:
                    return
                self.last_plain[stage] = 10 if done >= total else step
                self.console.print(f"{stage}: {done:g}/{total:g} {detail}".rstrip())


# ----------------------------------------------------------------------------- results of the commands


def print_separation(result) -> None:
    from studio_sep.stages import prior_label

    sep = result.run["separation"]
    ll = result.run["log_likelihood"]
    t = result.run["timings_s"]
    console.print(styled(
        "separated ", (result.run["session"]["name"], "bold"), f" → {result.folder}: ",
        f"init {'+'.join(sep['init'])}, {iterations_label(sep)} on {sep['device']} ({sep['dtype']}), "
        f"{t['per_iteration_s']:.3f} s/iteration, log-likelihood {ll['initial']:.3f} → {ll['final']:.3f}"))
    console.print(f"prior: {prior_label(sep['prior'])}; spectral init: {sep['spectral_init']}")
    kept = sep.get("start_kept") or {}
    if len(kept.get("log_likelihood") or {}) > 1:
        lls = ", ".join(f"{start} {value:.3f}" for start, value in kept["log_likelihood"].items())
        console.print(f"starts: final log-likelihood {lls}; kept the {kept['start']} start's fit")
    spatial = sep.get("spatial_starts")
    if spatial:
        spread = spatial.get("spread") or {}
        lls = ", ".join(f"{start} {value:.3f}" + (f" ± {spread[start]:.3f}" if start in spread else "")
                        for start, value in spatial["log_likelihood"].items())
        console.print(f"spatial starts: mean final log-likelihood {lls}; kept the {spatial['kept']} start's fits")
    for line in prior_by_source_lines(sep["prior"]):
        console.print(line)


def prior_by_source_lines(prior) -> list[Text]:
    """The prior each source used, one line per source, when a source's prior was replaced
    (``run.json`` → ``separation.prior``: ``used_by_source``, ``rejected``): the replaced
    ones in yellow with the reason. Nothing when every source used the prior asked for
    (or the run had none)."""
    if not isinstance(prior, dict) or not prior.get("rejected"):
        return []
    used = prior.get("used_by_source") or {source: "stem_mic_power" for source in prior["rejected"]}
    lines = [Text("prior used per source:")]
    for source, kind in used.items():
        why = prior["rejected"].get(source)
        lines.append(styled(f"  {source}: ", (kind.replace("_", " "), "yellow" if why else ""),
                            f" ({why})" if why else ""))
    return lines


def iterations_label(sep: dict) -> str:
    """The iterations a run's fits ran: "100 iterations", "3 fits of 50 iterations",
    "auto: 35 iterations (at most 100)", "auto: 40, 50, 35 iterations (3 fits, at most 50 each)"."""
    run = sep.get("iterations_run")
    counts = list(run.values()) if isinstance(run, dict) else run if isinstance(run, list) else [run or sep["n_iter"]]
    counts = [c for group in counts for c in (group if isinstance(group, list) else [group])]  # per spatial start
    if sep.get("iterations") != "auto":
        return f"{len(counts)} fits of {counts[0]} iterations" if len(counts) > 1 else f"{counts[0]} iterations"
    ran = f"auto: {', '.join(str(c) for c in counts)} iterations"
    return f"{ran} ({len(counts)} fits, at most {sep['n_iter']} each)" if len(counts) > 1 else \
        f"{ran} (at most {sep['n_iter']})"


def print_metrics(metrics: dict, report_dir: Path) -> None:
    """The metrics table; under it what a "—" means (a null in metrics.json) and the report's files."""
    from studio_sep.stages import METRICS_HEADER, metrics_rows

    rows = metrics_rows(metrics)
    notes = [f"{NO_VALUE}: {metrics['null']}"] if metrics.get("null") and any(NO_VALUE in r for r in rows) else []
    print_table(f"separation metrics (dB): {metrics['session']}", METRICS_HEADER, rows, notes=notes)
    console.print(f"report: {report_dir / 'metrics.md'}, {report_dir / 'metrics.json'}")


def print_simulation(result) -> None:
    verb = "reused" if result.reused else "rendered"
    console.print(styled(f"{verb} ", (str(result.manifest), "bold"), f" — RT60 requested "
                         f"{result.rt60_requested_s:.2f} s, measured {result.rt60_measured_s:.2f} s"))


def print_session(session) -> None:
    fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    console.print(styled(
        (session.name, "bold"), f": {len(session.sources)} sources, {len(session.mics)} mics, "
        f"{session.duration_s:.2f} s at {session.sample_rate} Hz ({session.n_samples} samples)"
        + (f", processing at {session.processing_sample_rate} Hz" if session.processing_sample_rate else "")))
    print_table("sources", ["source", "prompt", "position (m)", "spot mic", "reference"],
                [[s.name, s.prompt, fmt(s.position_m), s.spot_mic or "-", "yes" if s.reference else "-"]
                 for s in session.sources])
    print_table("mics", ["mic", "pattern", "position (m)", "aim az/el (deg)", "signal"],
                [[m.name, m.pattern, fmt(m.position_m),
                  "-" if m.pattern == "omni" else f"{m.aim_azimuth_deg:.0f} / {m.aim_elevation_deg:.0f}",
                  f"{m.file.name}:{m.channel}"] for m in session.mics])
    truth = "yes" if session.truth is not None and session.truth.images else "no"
    room = session.room
    room_text = "unknown" if room is None or room.dimensions_m is None else \
        f"{fmt(room.dimensions_m)} m" + (f", RT60 {room.rt60_s:g} s" if room.rt60_s else "")
    console.print(f"room: {room_text}; ground truth: {truth}")
    print_session_warnings(session)


def session_document(session) -> dict:
    """``validate --json``: the manifest as resolved, the audio's facts and the warnings."""
    from studio_sep.session import session_to_dict

    return {"manifest": str(session.path), "name": session.name, "sample_rate": session.sample_rate,
            "n_samples": session.n_samples, "duration_s": session.duration_s,
            "processing_sample_rate": session.processing_sample_rate,
            "has_truth": bool(session.truth is not None and session.truth.images),
            "warnings": list(session.warnings), "session": session_to_dict(session)}


def print_mix(outcome) -> None:
    r = outcome.report
    console.print(f"remix: {outcome.remix} ({cell(r['loudness_out_lufs'])} LUFS, true peak "
                  f"{cell(r['true_peak_out_dbtp'])} dBTP, gain {cell(r['gain_db'], '+.2f')} dB)")
    console.print(f"DAW project: {outcome.project} ({len(outcome.stems)} stems)")
    if outcome.dawproject is not None:
        console.print(f"DAWproject: {outcome.dawproject}")
    for warning in r["warnings"]:
        print_warning(warning)


def print_plugin(info) -> None:
    if info.error:
        console.print(styled((str(info.path), "bold"), ": ", ("failed", "red"), f" ({info.error})"))
        return
    channels = "/".join(str(c) for c in info.channel_counts) or "?"
    rows = []
    for p in info.parameters:
        low, high = p.min_value, p.max_value
        span = f"{low:g} … {high:g}" if low is not None and high is not None else \
            (", ".join(map(str, p.valid_values[:4])) + (" …" if len(p.valid_values) > 4 else "")
             if p.valid_values else "-")
        default = f"{p.default:g}" if isinstance(p.default, (int, float)) else str(p.default)
        rows.append([p.name, span, default, p.label or "", "yes" if p.writable else "no (meter/host)"])
    print_table(f"{info.name} — {info.path} ({channels} ch, latency {info.latency_samples} samples)",
                ["parameter", "range", "default", "units", "settable"], rows)


def print_geometry(report) -> None:
    """The geometry check: measured against implied delays per (source, mic) and each mic's
    error (the caller prints the warnings, one per mic that looks misplaced, on stderr)."""
    print_table("delays against each source's reference mic (GCC-PHAT)",
                ["source", "reference mic", "mic", "implied (ms)", "measured (ms)", "Δ (cm)", "peak"],
                [[row["source"], row["reference_mic"], row["mic"], cell(row["implied_ms"], "+.3f"),
                  cell(row["measured_ms"], "+.3f"), cell(row["error_cm"], "+.1f"), cell(row["peak"], ".2f")]
                 for row in report.rows])
    errors = ", ".join(f"{name} {cell(cm, '.1f')}" for name, cm in report.mic_error_cm.items())
    console.print(f"distance error per mic (cm, low median over sources): {errors}")
    if not report.warnings:
        console.print("geometry: every mic agrees with the recording within 10 cm")


def print_summary(outcomes) -> None:
    """A batch's summary table, and under it each failure with its reason and log."""
    from studio_sep.batch.display import SUMMARY_HEADER, summary_rows

    rows, notes = summary_rows(outcomes)
    print_table("summary", SUMMARY_HEADER, rows, notes=notes)


def report_batch(output: Output, outcomes) -> None:
    """A batch's result: the summary table (text), the summary document (``--json``), or
    the output folder of each session that finished, with one ``error:`` line on stderr
    per session that did not (``--quiet``)."""
    from studio_sep.batch.display import summary_document
    from studio_sep.batch.runner import STATUS_CURRENT, STATUS_DONE

    finished = [o for o in outcomes if o.status in (STATUS_DONE, STATUS_CURRENT)]
    if output.quiet:
        for o in outcomes:
            if o not in finished:
                print_error(f"{o.name}: {o.reason or o.status}" + (f" (log: {o.log})" if o.log else ""))
    output.result(summary_document(outcomes), paths=[o.folder for o in finished],
                  show=lambda: print_summary(outcomes))
