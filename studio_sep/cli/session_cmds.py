"""Commands on sessions: simulate, validate, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studio_sep.cli.options import DEFAULT_PRESET, IterationsOpt, JsonOpt, QuietOpt
from studio_sep.cli.printing import (
    Output,
    console,
    print_geometry,
    print_metrics,
    print_session,
    print_session_warnings,
    print_simulation,
    print_summary,
    print_warning,
    report_batch,
    session_document,
    user_errors,
)
from studio_sep.cli.separation_cmds import run_batch

DEFAULT_DEMO_DIR = Path("sessions/ircam_trio")


def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Session folder to write (created if needed).")],
    seed: Annotated[int, typer.Option(help="Seed of the composition (same seed, same session).")] = 0,
    duration: Annotated[float, typer.Option(help="Length of the session in seconds.")] = 20.0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate of every file written, in Hz.")] = 48000,
    rt60: Annotated[float, typer.Option(help="Reverberation time of the room in seconds (calibrated).")] = 0.5,
    soundfont: Annotated[Path | None, typer.Option(help="General MIDI SoundFont (.sf2); default: "
                                                   "$STUDIO_SEP_SOUNDFONT, then Debian's FluidR3_GM.")] = None,
    reference_duration: Annotated[float, typer.Option(help="Length of each solo reference take in seconds.")] = 10.0,
    force: Annotated[bool, typer.Option(help="Overwrite a session.toml that differs from the one rendered.")] = False,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Render the reference trio session (MIDI → FluidSynth → simulated room) with ground truth."""
    from studio_sep.sim import SimulationSettings, simulate_session

    output = Output(quiet, json_)
    with user_errors():
        settings = SimulationSettings(seed=seed, duration_s=duration, sample_rate=sample_rate, rt60_s=rt60,
                                      soundfont=soundfont, reference_duration_s=reference_duration)
        with output.progress() as progress:
            result = simulate_session(out_dir, settings, force=force, callback=progress)
    output.result(result, paths=[result.manifest], show=lambda: print_simulation(result))


def validate(
    manifest: Annotated[Path, typer.Argument(help="The session.toml to check (or its folder).")],
    check_geometry: Annotated[bool, typer.Option("--check-geometry", help="Compare the delays between mics that "
                                                 "the recording shows (GCC-PHAT) with those the coordinates "
                                                 "imply; warn about mics that look misplaced.")] = False,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Check a session manifest and its audio; print a short summary."""
    from studio_sep.session import load_session

    output = Output(quiet, json_)
    with user_errors():
        session = load_session(manifest)
    print_session_warnings(session)
    report = None
    if check_geometry:
        from studio_sep.stages.geometry import check_geometry as check

        with user_errors():
            report = check(session)
        for warning in report.warnings:
            print_warning(warning)

    def show() -> None:
        print_session(session)
        if report is not None:
            print_geometry(report)

    output.result(session_document(session) | ({"geometry": report} if report is not None else {}),
                  paths=[session.path], show=show)


def demo(
    session_dir: Annotated[Path, typer.Option(help="Where the built-in session lives.")] = DEFAULT_DEMO_DIR,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root.")] = Path("out"),
    duration: Annotated[float, typer.Option(help="Length of the rendered session in seconds.")] = 20.0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate of the rendered session in Hz.")] = 48000,
    iterations: IterationsOpt = None,
    preset: Annotated[Path, typer.Option(help="Mixing preset.")] = DEFAULT_PRESET,
    prior: Annotated[str, typer.Option(help="Spectral prior (the nmf prior measured best on rendered "
                                       "sessions: benchmarks/README.md).")] = "nmf",
    force: Annotated[bool, typer.Option(help="Redo every stage, even those up to date.")] = False,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Render the built-in trio session (if needed), then `run` it: separate, mix, score, report."""
    import json

    from studio_sep.session import load_session
    from studio_sep.sim import SimulationSettings, simulate_session

    output = Output(quiet, json_)
    with user_errors():
        settings = SimulationSettings(duration_s=duration, sample_rate=sample_rate)
        with output.progress() as progress:
            rendered = simulate_session(session_dir, settings, callback=progress)
        session = load_session(rendered.manifest)
    print_session_warnings(session)
    if output.chatty:
        print_simulation(rendered)
        print_session(session)
    outcomes = run_batch([str(rendered.manifest)], out, presets=[preset], evaluate=True, force=force, jobs=1,
                          output=output, options_args=(None, iterations, None, None, None, None, None,
                                                       None, None, None, "float32", None, prior))
    outcome = outcomes[0]
    if outcome.status not in ("done", "up to date"):
        report_batch(output, outcomes)
        raise typer.Exit(1)
    folder = Path(outcome.folder)
    metrics = json.loads((folder / "report" / "metrics.json").read_text())

    def show() -> None:
        print_summary(outcomes)
        print_metrics(metrics, folder / "report")
        console.print(f"stems: {folder / 'stems'}; images: {folder / 'images'}")
        console.print(f"remix: {outcome.remixes[0]}")
        console.print(f"DAW project: {outcome.projects[0]}")
        console.print(f"HTML report: {outcome.report}")  # last: the page to open

    output.result({"simulation": rendered, "outcome": outcome, "metrics": metrics},
                  paths=[folder, outcome.remixes[0], outcome.projects[0], folder / "report" / "metrics.json", outcome.report],
                  show=show)
