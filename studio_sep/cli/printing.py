"""What the command line prints: the consoles, the one error handler, progress, result summaries.

User text (paths, names) is printed with ``highlight=False``; :func:`user_errors` is the one place
that turns the package's errors into a one-line message and an exit code (no traceback).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from studio_sep.util.errors import OutputError, StudioSepError
from studio_sep.util.notices import report_warnings

console = Console(soft_wrap=True)  # paths and one-line messages are never folded
err_console = Console(stderr=True)


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


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, the message (user text) printed as it is."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def print_session_warnings(session) -> None:
    """The session's own warnings (a digitally silent mic), one ``warning:`` line each."""
    for warning in session.warnings:
        print_warning(warning)


def print_warning(message: str) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False, soft_wrap=True)


class StageProgress:
    """A rich progress display fed by the library's ``callback(stage, done, total)``."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description:<20}"), BarColumn(), TextColumn("{task.completed:>5.0f}/{task.total:<5.0f}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
            console=console, transient=False,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, int] = {}
        self.last_plain: dict[str, float] = {}
        self.plain = not console.is_terminal
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
                self.console.print(f"{stage}: {done:g}/{total:g} {detail}".rstrip(), highlight=False, markup=False)


def print_separation(result) -> None:
    from studio_sep.stages import prior_label

    sep = result.run["separation"]
    ll = result.run["log_likelihood"]
    t = result.run["timings_s"]
    console.print(
        f"separated [bold]{escape(result.run['session']['name'])}[/] → {escape(str(result.folder))}: "
        f"init {'+'.join(sep['init'])}, "
        f"{iterations_label(sep)} on {sep['device']} ({sep['dtype']}), {t['per_iteration_s']:.3f} s/iteration, "
        f"log-likelihood {ll['initial']:.3f} → {ll['final']:.3f}", highlight=False)
    console.print(f"prior: {prior_label(sep['prior'])}; spectral init: {sep['spectral_init']}", highlight=False)
    kept = sep.get("start_kept") or {}
    if len(kept.get("log_likelihood") or {}) > 1:
        lls = ", ".join(f"{start} {value:.3f}" for start, value in kept["log_likelihood"].items())
        console.print(f"starts: final log-likelihood {lls}; kept the {kept['start']} start's fit", highlight=False)
    spatial = sep.get("spatial_starts")
    if spatial:
        spread = spatial.get("spread") or {}
        lls = ", ".join(f"{start} {value:.3f}" + (f" ± {spread[start]:.3f}" if start in spread else "")
                        for start, value in spatial["log_likelihood"].items())
        console.print(f"spatial starts: mean final log-likelihood {lls}; kept the {spatial['kept']} start's fits",
                      highlight=False)
    for source, why in (sep["prior"].get("rejected") or {}).items() if isinstance(sep["prior"], dict) else ():
        console.print(f"  {source}: {why}", highlight=False, markup=False)


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
    from studio_sep.stages import METRICS_HEADER, metrics_rows

    table = Table(*METRICS_HEADER, title=f"separation metrics (dB): {metrics['session']}", title_justify="left")
    for row in metrics_rows(metrics):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {report_dir / 'metrics.md'}, {report_dir / 'metrics.json'}", highlight=False,
                  markup=False)


def print_simulation(result) -> None:
    verb = "reused" if result.reused else "rendered"
    console.print(
        f"{verb} [bold]{escape(str(result.manifest))}[/] — RT60 requested {result.rt60_requested_s:.2f} s, "
        f"measured {result.rt60_measured_s:.2f} s", highlight=False,
    )


def print_session(session) -> None:
    fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    console.print(
        f"[bold]{session.name}[/]: {len(session.sources)} sources, {len(session.mics)} mics, "
        f"{session.duration_s:.2f} s at {session.sample_rate} Hz ({session.n_samples} samples)"
        + (f", processing at {session.processing_sample_rate} Hz" if session.processing_sample_rate else ""),
        highlight=False,
    )
    sources = Table("source", "prompt", "position (m)", "spot mic", "reference", title="sources", title_justify="left")
    for s in session.sources:
        sources.add_row(s.name, escape(s.prompt), fmt(s.position_m), s.spot_mic or "-",
                        "yes" if s.reference else "-")
    mics = Table("mic", "pattern", "position (m)", "aim az/el (deg)", "signal", title="mics", title_justify="left")
    for m in session.mics:
        aim = "-" if m.pattern == "omni" else f"{m.aim_azimuth_deg:.0f} / {m.aim_elevation_deg:.0f}"
        mics.add_row(m.name, m.pattern, fmt(m.position_m), aim, escape(f"{m.file.name}:{m.channel}"))
    console.print(sources)
    console.print(mics)
    truth = "yes" if session.truth is not None and session.truth.images else "no"
    room = session.room
    room_text = "unknown" if room is None or room.dimensions_m is None else \
        f"{fmt(room.dimensions_m)} m" + (f", RT60 {room.rt60_s:g} s" if room.rt60_s else "")
    console.print(f"room: {room_text}; ground truth: {truth}", highlight=False)
    for warning in session.warnings:
        err_console.print("[yellow]warning:[/] " + escape(warning), highlight=False, soft_wrap=True)


def print_mix(outcome) -> None:
    r = outcome.report
    console.print(f"remix: {outcome.remix} ({r['loudness_out_lufs']} LUFS, true peak {r['true_peak_out_dbtp']} dBTP, "
                  f"gain {r['gain_db']:+.2f} dB)", highlight=False, markup=False)
    console.print(f"DAW project: {outcome.project} ({len(outcome.stems)} stems)", highlight=False, markup=False)
    for warning in r["warnings"]:
        print_warning(warning)


def print_plugin(info) -> None:
    if info.error:
        console.print(f"[bold]{escape(str(info.path))}[/]: [red]failed[/] ({escape(str(info.error))})",
                      highlight=False)
        return
    channels = "/".join(str(c) for c in info.channel_counts) or "?"
    table = Table("parameter", "range", "default", "units", "settable",
                  title=f"{escape(info.name)} — {escape(str(info.path))} ({channels} ch, latency "
                        f"{info.latency_samples} samples)",
                  title_justify="left")
    for p in info.parameters:
        low, high = p.min_value, p.max_value
        span = f"{low:g} … {high:g}" if low is not None and high is not None else \
            (", ".join(map(str, p.valid_values[:4])) + (" …" if len(p.valid_values) > 4 else "")
             if p.valid_values else "-")
        default = f"{p.default:g}" if isinstance(p.default, (int, float)) else str(p.default)
        table.add_row(p.name, span, default, p.label or "", "yes" if p.writable else "no (meter/host)")
    console.print(table)


def print_geometry(report) -> None:
    """The geometry check: measured against implied delays per (source, mic), each mic's
    error, and one warning line per mic that looks misplaced (on stderr)."""
    fmt = lambda v, spec: "—" if v is None or v != v else format(v, spec)  # noqa: E731 - NaN: not measured
    table = Table("source", "reference mic", "mic", "implied (ms)", "measured (ms)", "Δ (cm)", "peak",
                  title="delays against each source's reference mic (GCC-PHAT)", title_justify="left")
    for row in report.rows:
        table.add_row(escape(row["source"]), escape(row["reference_mic"]), escape(row["mic"]),
                      fmt(row["implied_ms"], "+.3f"), fmt(row["measured_ms"], "+.3f"), fmt(row["error_cm"], "+.1f"),
                      fmt(row["peak"], ".2f"))
    console.print(table)
    errors = ", ".join(f"{name} {fmt(cm, '.1f')}" for name, cm in report.mic_error_cm.items())
    console.print(f"distance error per mic (cm, low median over sources): {errors}", highlight=False, markup=False)
    for warning in report.warnings:
        err_console.print("[yellow]warning:[/] " + escape(warning), highlight=False, soft_wrap=True)
    if not report.warnings:
        console.print("geometry: every mic agrees with the recording within 10 cm", highlight=False)
