"""The ``studio-sep`` command line: a thin typer app over the library.

Each command makes one library call; :func:`_user_errors` is the one place that turns
the package's errors into a one-line message and an exit code (no traceback).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from studio_sep import __version__
from studio_sep.util.errors import InputError, StudioSepError

app = typer.Typer(
    name="studio-sep",
    help="Separate every instrument of a multi-microphone studio session and remix it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(soft_wrap=True)  # paths and one-line messages are never folded
err_console = Console(stderr=True)

DEFAULT_DEMO_DIR = Path("sessions/ircam_trio")


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn a :class:`StudioSepError` into ``error: <one line>`` and its exit code."""
    try:
        yield
    except StudioSepError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"studio-sep {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Separate every instrument of a multi-microphone studio session and remix it."""


class _StageProgress:
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

    def __enter__(self) -> _StageProgress:
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
                self.console.print(f"{stage}: {done:g}/{total:g} {detail}".rstrip(), highlight=False)


@app.command()
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
) -> None:
    """Render the reference trio session (MIDI → FluidSynth → simulated room) with ground truth."""
    from studio_sep.sim.simulate import SimulationSettings, simulate_session

    with _user_errors():
        settings = SimulationSettings(seed=seed, duration_s=duration, sample_rate=sample_rate, rt60_s=rt60,
                                      soundfont=soundfont, reference_duration_s=reference_duration)
        with _StageProgress(console) as progress:
            result = simulate_session(out_dir, settings, force=force, callback=progress)
    _print_simulation(result)


@app.command()
def augment(
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write (created; an existing one is resumed).")],
    examples: Annotated[int, typer.Option(help="Training examples (10 s each).")] = 1000,
    val: Annotated[int, typer.Option(help="Validation examples.")] = 300,
    test: Annotated[int, typer.Option(help="Held-out test examples.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the stem pool and of every example.")] = 0,
    sessions: Annotated[list[Path] | None, typer.Option("--session", help="A session.toml whose solo reference "
                                                        "takes join the pool (as <class>_rec); repeatable.")] = None,
    slakh: Annotated[Path | None, typer.Option(help="A Slakh2100 split folder (TrackXXXXX/metadata.yaml, "
                                               "stems/); keyword-filtered.")] = None,
    soundfont: Annotated[Path | None, typer.Option(help="General MIDI SoundFont for the rendered phrases "
                                                   "(default: $STUDIO_SEP_SOUNDFONT, then FluidR3_GM).")] = None,
    phrases_per_program: Annotated[int, typer.Option(help="Random phrases rendered per GM program.")] = 8,
    classes: Annotated[str | None, typer.Option(help="Comma-separated instrument classes to render (default: "
                                                "all of studio_sep/instruments.py; interferers come from these "
                                                "too).")] = None,
) -> None:
    """Render CLASS-net training data by the paper's augmentation (§3.3.2): mixture, target,
    10 s reference and a JSON prompt per example."""
    from studio_sep.data.augment import build_stem_pool, generate_dataset

    with _user_errors():
        with _StageProgress(console) as progress:
            chosen = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
            pool = build_stem_pool(soundfont=soundfont, phrases_per_program=phrases_per_program, classes=chosen,
                                   sessions=tuple(sessions or ()), slakh=slakh, seed=seed, progress=progress)
            meta = generate_dataset(out_dir, pool, n_train=examples, n_val=val, n_test=test, seed=seed,
                                    progress=progress)
    console.print(f"dataset {out_dir}: " + ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
                  + f" examples of {meta['duration_s']:g} s at {meta['sample_rate']} Hz", highlight=False)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Dataset folder written by `studio-sep augment`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Training folder: checkpoints, history.json; "
                                      "an existing one is resumed.")],
    steps: Annotated[int, typer.Option(help="Total optimiser steps (a resumed run goes on to this many).")] = 1000,
    model: Annotated[Path | None, typer.Option(help="Checkpoint to start from (a ClassNet: LASS-net or authors' "
                                               "layout converted, or a QueriedClassNet).")] = None,
    width: Annotated[float, typer.Option(help="Channel multiplier of a new network (1.0: LASS-net's 52 M "
                                         "parameters).")] = 0.125,
    depth: Annotated[int, typer.Option(help="Encoder/decoder levels of a new network.")] = 6,
    mode: Annotated[str, typer.Option(help="full, or decoder (decoder-only fine-tuning, paper §3.4).")] = "full",
    query: Annotated[str, typer.Option(help="learned (in-project embeddings, no downloads) or clap.")] = "learned",
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    crop: Annotated[float, typer.Option(help="Training crop of each example, seconds.")] = 3.0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of every batch.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (1 is often fastest on a busy small machine).")] = 1,
    validate_every: Annotated[int | None, typer.Option(help="Steps between validations (default: one epoch).")] = None,
    clap_checkpoint: ClapCheckpointOpt = None, roberta_dir: RobertaDirOpt = None,
) -> None:
    """Train CLASS-net (full or decoder-only), resumable; validation SDR / SI-SDR each epoch."""
    from studio_sep.classnet.train import train as train_classnet

    with _user_errors():
        encoder = None
        if query == "clap":
            from studio_sep.classnet.clap import ClapQuery

            encoder = ClapQuery(checkpoint=clap_checkpoint, roberta=roberta_dir)
        with _StageProgress(console) as progress:
            result = train_classnet(data, out, model=model, width=width, depth=depth, query=query,
                                    query_encoder=encoder, mode=mode, steps=steps, batch_size=batch_size,
                                    crop_s=crop, lr=lr, seed=seed, threads=threads, validate_every=validate_every,
                                    callback=progress, log=lambda line: console.print(line, highlight=False))
    console.print(f"trained {result.steps} steps (resumed from {result.resumed_from}); best validation SI-SDR "
                  f"{result.best_si_sdr:.2f} dB at step {result.best_step}: {result.best_path}", highlight=False)


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(help="The session.toml to check (or its folder).")],
) -> None:
    """Check a session manifest and its audio; print a short summary."""
    from studio_sep.session import load_session

    with _user_errors():
        session = load_session(manifest)
    _print_session(session)


def _parse_stem_mics(values: list[str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for value in values:
        source, sep, mic = value.partition("=")
        chosen[source if sep else "*"] = mic if sep else source
    return chosen


InitOpt = Annotated[str | None, typer.Option(help="Comma-separated inits: circular, geometry, dictionary, "
                                          "prior (default: geometry).")]
PriorOpt = Annotated[str | None, typer.Option(help="Spectral prior: classnet (the CLASS-net network), nmf (class "
                                           "dictionaries) or none (default: manifest, else none).")]
PriorModelOpt = Annotated[str | None, typer.Option(help="CLASS-net checkpoint for --prior classnet (default: the "
                                                "model shipped with studio-sep).")]
ClapCheckpointOpt = Annotated[str | None, typer.Option(help="LAION-CLAP checkpoint (.pt) for a CLAP-conditioned "
                                                    "--prior-model (else $STUDIO_SEP_CLAP_CHECKPOINT, else config).")]
RobertaDirOpt = Annotated[str | None, typer.Option(help="Folder with the roberta-base tokenizer and config for CLAP "
                                                "(else $STUDIO_SEP_ROBERTA_DIR, else config).")]
IterationsOpt = Annotated[int | None, typer.Option(help="FastMNMF2 iterations (default 100).")]
NBasisOpt = Annotated[int | None, typer.Option(help="NMF bases per source (default 8).")]
NFftOpt = Annotated[int | None, typer.Option(help="STFT window in samples (default: ~64 ms at the processing rate).")]
HopOpt = Annotated[int | None, typer.Option(help="STFT hop in samples (default n_fft/4).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda or auto (default auto: cuda when cupy sees a GPU).")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32 or float64 (default float64).")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of the random initial values (default 0).")]
RateOpt = Annotated[int | None, typer.Option(help="Separate at this sample rate in Hz; outputs stay at the "
                                             "session's rate (default: manifest, else native).")]
StemMicOpt = Annotated[list[str] | None, typer.Option(help="Mic whose image becomes the stem: MIC for all sources "
                                                      "or SOURCE=MIC; repeatable (default: spot_mic).")]
FormatOpt = Annotated[str, typer.Option(help="Sample format of the written images and stems: float32 or pcm24.")]
MaxMemoryOpt = Annotated[str | None, typer.Option(help="Memory budget of the separation, e.g. 8G; above it, long "
                                                  "sessions are separated in overlapping time blocks "
                                                  "(default: from the machine's available memory).")]


def _separation_options(init, iterations, n_basis, n_fft, hop, device, dtype, seed, processing_rate, stem_mic,
                        format, max_memory=None, prior=None, prior_model=None, clap_checkpoint=None,
                        roberta_dir=None):
    from studio_sep.stages import SeparationOptions, parse_size

    if format not in ("float32", "pcm24"):
        raise InputError(None, "--format", f"{format!r} is not float32 or pcm24", "pick one of those")
    return SeparationOptions(
        init=tuple(i.strip() for i in init.split(",") if i.strip()) if init else None,
        n_iter=iterations, n_basis=n_basis, n_fft=n_fft, hop=hop, device=device, dtype=dtype, seed=seed,
        processing_sample_rate=processing_rate, stem_mics=_parse_stem_mics(stem_mic or []), subtype=format,
        max_memory=None if max_memory is None else parse_size(max_memory), prior=prior, prior_model=prior_model,
        clap={k: v for k, v in (("checkpoint", clap_checkpoint), ("roberta", roberta_dir)) if v} or None)


@app.command()
def separate(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root; results go to OUT/<session>/.")],
    init: InitOpt = None, iterations: IterationsOpt = None, n_basis: NBasisOpt = None, n_fft: NFftOpt = None,
    hop: HopOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None, seed: SeedOpt = None,
    processing_rate: RateOpt = None, stem_mic: StemMicOpt = None, format: FormatOpt = "float32",
    max_memory: MaxMemoryOpt = None, prior: PriorOpt = None, prior_model: PriorModelOpt = None,
    clap_checkpoint: ClapCheckpointOpt = None, roberta_dir: RobertaDirOpt = None,
) -> None:
    """Separate every source at every mic (FastMNMF2); write images, stems and run.json."""
    from studio_sep.session import load_session
    from studio_sep.stages import separate_session

    with _user_errors():
        options = _separation_options(init, iterations, n_basis, n_fft, hop, device, dtype, seed, processing_rate,
                                      stem_mic, format, max_memory, prior, prior_model, clap_checkpoint,
                                      roberta_dir)
        session = load_session(manifest)
        with _StageProgress(console) as progress:
            result = separate_session(session, out, options, callback=progress)
    _print_separation(result)


@app.command()
def run(
    sessions: Annotated[list[str], typer.Argument(help="session.toml files, folders of sessions, or quoted globs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root; each session goes to OUT/<session>/.")],
    preset: Annotated[list[Path] | None, typer.Option(help="Mixing preset (path or name in presets/); repeatable "
                                                      "(default: paper).")] = None,
    no_mix: Annotated[bool, typer.Option("--no-mix", help="Separate (and evaluate) only.")] = False,
    no_evaluate: Annotated[bool, typer.Option("--no-evaluate", help="Do not score against ground truth.")] = False,
    force: Annotated[bool, typer.Option(help="Redo every stage, even those up to date.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Sessions run at once, in a local process pool.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only one line per session and the summary.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Progress and summary as JSON lines on stdout.")] = False,
    init: InitOpt = None, iterations: IterationsOpt = None, n_basis: NBasisOpt = None, n_fft: NFftOpt = None,
    hop: HopOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None, seed: SeedOpt = None,
    processing_rate: RateOpt = None, stem_mic: StemMicOpt = None, format: FormatOpt = "float32",
    max_memory: MaxMemoryOpt = None, prior: PriorOpt = None, prior_model: PriorModelOpt = None,
    clap_checkpoint: ClapCheckpointOpt = None, roberta_dir: RobertaDirOpt = None,
    reference_mic: Annotated[str | None, typer.Option(help="Mic to score at besides each stem mic (default: first).")] = None,
) -> None:
    """Run every stage of every session: validate → prior → separate → images → mix → DAW → evaluate.

    Stages already done with the same inputs and settings are skipped (see run.json);
    an interrupted run continues where it stopped. Exit code 1 if any session failed.
    """
    outcomes = _run_batch(sessions, out, presets=[] if no_mix else (preset or [DEFAULT_PRESET]),
                          evaluate=not no_evaluate, force=force, jobs=jobs, quiet=quiet, json_=json_,
                          options_args=(init, iterations, n_basis, n_fft, hop, device, dtype, seed, processing_rate,
                                        stem_mic, format, max_memory, prior, prior_model, clap_checkpoint,
                                        roberta_dir), reference_mic=reference_mic)
    if any(o.status not in ("done", "up to date") for o in outcomes):
        raise typer.Exit(1)


def _run_batch(sessions, out: Path, *, presets, evaluate: bool, force: bool, jobs: int, quiet: bool, json_: bool,
               options_args: tuple, reference_mic: str | None = None):
    """Check the batch (sessions found, options, presets and their plugins) before any
    work; run it with the right display; print the summary; return the outcomes."""
    import os

    from studio_sep.batch.display import JsonDisplay, LiveDisplay, PlainDisplay, summary_json, summary_table
    from studio_sep.batch.runner import (
        RunOptions,
        SessionJob,
        check_presets,
        check_unique_names,
        find_sessions,
        run_batch,
    )

    with _user_errors():
        if jobs < 1:
            raise InputError(None, "--jobs", f"{jobs} is not a number of processes", "use 1 or more")
        options = _separation_options(*options_args)
        if jobs > 1 and options.max_memory is None:  # the machine's budget, shared by the jobs
            from dataclasses import replace

            from studio_sep.stages import default_budget_bytes

            options = replace(options, max_memory=default_budget_bytes() // jobs)
        manifests = find_sessions(sessions)
        check_unique_names(manifests)
        preset_paths = tuple(_find_preset(p).resolve() for p in presets)
        check_presets(preset_paths)
    cores = os.cpu_count() or 1
    run_options = RunOptions(separation=options, presets=preset_paths, force=force, evaluate=evaluate,
                             reference_mic=reference_mic, blas_threads=max(1, cores // jobs) if jobs > 1 else None)
    job_list = [SessionJob(index=i, manifest=m, out_root=out.resolve(), options=run_options)
                for i, m in enumerate(manifests)]
    plain = quiet or not console.is_terminal or os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if json_:
        display = JsonDisplay(sys.stdout)
    elif plain:
        display = PlainDisplay(sys.stdout, len(job_list), quiet=quiet)
    else:
        display = LiveDisplay(console, len(job_list))
    interrupted = False
    with display:
        try:
            outcomes = run_batch(job_list, n_jobs=jobs, emit=display)
        except KeyboardInterrupt as exc:
            outcomes, interrupted = getattr(exc, "outcomes", []), True
    if json_:
        print(summary_json(outcomes), flush=True)
    else:
        console.print(summary_table(outcomes, plain=plain))
    if interrupted:
        err_console.print("interrupted: finished stages are kept; run the same command again to continue",
                          highlight=False)
        raise typer.Exit(130)
    return outcomes


@app.command()
def evaluate(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder), with [truth.images].")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root given to separate.")],
    reference_mic: Annotated[str | None, typer.Option(help="Mic to score at besides each stem mic (default: first mic).")] = None,
) -> None:
    """Score a separation against the ground truth (SDR, SIR, SAR, SI-SDR; fast-bss-eval)."""
    from studio_sep.session import load_session
    from studio_sep.stages import evaluate_run

    with _user_errors():
        session = load_session(manifest)
        with _StageProgress(console) as progress:
            metrics = evaluate_run(session, out, reference_mic=reference_mic, callback=progress)
    _print_metrics(metrics, Path(out) / session.name / "report")


def _parse_levels(values: list[str], option: str) -> dict[str, float]:
    levels = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            levels[name] = float(number)
        except ValueError:
            raise InputError(None, option, f"{value!r} is not SOURCE=NUMBER", f"write e.g. {option} sax=+3") from None
        if not sep or not name:
            raise InputError(None, option, f"{value!r} is not SOURCE=NUMBER", f"write e.g. {option} sax=+3")
    return levels


DEFAULT_PRESETS_DIR = Path("presets")
DEFAULT_PRESET = DEFAULT_PRESETS_DIR / "paper.toml"


def _find_preset(preset: Path) -> Path:
    """A preset path as given, else ``presets/<name>.toml`` here, else in the source tree."""
    if preset.is_file():
        return preset
    name = preset.name if preset.suffix == ".toml" else f"{preset.name}.toml"
    for folder in (DEFAULT_PRESETS_DIR, Path(__file__).resolve().parents[2] / "presets"):
        if (folder / name).is_file():
            return folder / name
    return preset  # load_preset reports it missing


@app.command()
def mix(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root given to separate.")],
    preset: Annotated[Path, typer.Option(help="Mixing preset: a .toml path or a name from presets/.")] = DEFAULT_PRESETS_DIR / "paper.toml",
    from_: Annotated[str, typer.Option("--from", help="Mix the separated images (run) or the ground truth (truth).")] = "run",
    gain: Annotated[list[str] | None, typer.Option(help="SOURCE=DB fader gain, e.g. sax=+3; repeatable.")] = None,
    pan: Annotated[list[str] | None, typer.Option(help="SOURCE=PAN, -1 left … 1 right; repeatable.")] = None,
    mute: Annotated[list[str] | None, typer.Option(help="Mute a source; repeatable.")] = None,
    unmute: Annotated[list[str] | None, typer.Option(help="Unmute a source the preset mutes; repeatable.")] = None,
    solo: Annotated[list[str] | None, typer.Option(help="Solo a source; repeatable.")] = None,
) -> None:
    """Render a stereo remix, DAW stems and a REAPER project from a preset."""
    from studio_sep.mixing.routing import Overrides
    from studio_sep.session import load_session
    from studio_sep.stages import mix_session

    with _user_errors():
        overrides = Overrides(gain_db=_parse_levels(gain or [], "--gain"), pan=_parse_levels(pan or [], "--pan"),
                              mute=frozenset(mute or []), unmute=frozenset(unmute or []), solo=frozenset(solo or []))
        session = load_session(manifest)
        with _StageProgress(console) as progress:
            outcome = mix_session(session, out, _find_preset(preset), source=from_, overrides=overrides,
                                  callback=progress)
    _print_mix(outcome)


def _print_mix(outcome) -> None:
    r = outcome.report
    console.print(f"remix: {outcome.remix} ({r['loudness_out_lufs']} LUFS, true peak {r['true_peak_out_dbtp']} dBTP, "
                  f"gain {r['gain_db']:+.2f} dB)", highlight=False)
    console.print(f"DAW project: {outcome.project} ({len(outcome.stems)} stems)", highlight=False)
    for warning in r["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command("presets")
def presets_command(
    folder: Annotated[Path, typer.Argument(help="Folder of presets.")] = DEFAULT_PRESETS_DIR,
) -> None:
    """List the mixing presets in a folder, one line each."""
    from studio_sep.mixing.presets import list_presets

    with _user_errors():
        found = list_presets(folder)
    for preset in found:
        console.print(f"[bold]{preset.name}[/]  {preset.description}  ({preset.path})", highlight=False)
    if not found:
        console.print(f"no presets in {folder}", highlight=False)


plugins_app = typer.Typer(help="External VST3 plugins.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")


@plugins_app.command("scan")
def plugins_scan(
    directories: Annotated[list[Path] | None, typer.Argument(help="Folders to scan (default: the standard VST3 folders).")] = None,
) -> None:
    """List installed VST3 plugins and their parameters."""
    from studio_sep.mixing.plugins.host import scan_plugins

    with _user_errors():
        with console.status("loading plugins in worker processes…"):
            infos = scan_plugins(directories or None)
    for info in infos:
        _print_plugin(info)
    if not infos:
        console.print("no VST3 plugins found", highlight=False)


def _print_plugin(info) -> None:
    if info.error:
        console.print(f"[bold]{info.path}[/]: [red]failed[/] ({info.error})", highlight=False)
        return
    channels = "/".join(str(c) for c in info.channel_counts) or "?"
    table = Table("parameter", "range", "default", "units", "settable",
                  title=f"{info.name} — {info.path} ({channels} ch, latency {info.latency_samples} samples)",
                  title_justify="left")
    for p in info.parameters:
        low, high = p.min_value, p.max_value
        span = f"{low:g} … {high:g}" if low is not None and high is not None else \
            (", ".join(map(str, p.valid_values[:4])) + (" …" if len(p.valid_values) > 4 else "")
             if p.valid_values else "-")
        default = f"{p.default:g}" if isinstance(p.default, (int, float)) else str(p.default)
        table.add_row(p.name, span, default, p.label or "", "yes" if p.writable else "no (meter/host)")
    console.print(table)


@app.command()
def demo(
    session_dir: Annotated[Path, typer.Option(help="Where the built-in session lives.")] = DEFAULT_DEMO_DIR,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root.")] = Path("out"),
    duration: Annotated[float, typer.Option(help="Length of the rendered session in seconds.")] = 20.0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate of the rendered session in Hz.")] = 48000,
    iterations: Annotated[int | None, typer.Option(help="FastMNMF2 iterations (default 100).")] = None,
    preset: Annotated[Path, typer.Option(help="Mixing preset.")] = DEFAULT_PRESET,
    prior: Annotated[str, typer.Option(help="Spectral prior (the nmf prior measured best on rendered "
                                       "sessions: benchmarks/README.md).")] = "nmf",
    force: Annotated[bool, typer.Option(help="Redo every stage, even those up to date.")] = False,
) -> None:
    """Render the built-in trio session (if needed), then `run` it: separate, mix, score."""
    import json

    from studio_sep.session import load_session
    from studio_sep.sim.simulate import SimulationSettings, simulate_session

    with _user_errors():
        settings = SimulationSettings(duration_s=duration, sample_rate=sample_rate)
        with _StageProgress(console) as progress:
            rendered = simulate_session(session_dir, settings, callback=progress)
        _print_simulation(rendered)
        _print_session(load_session(rendered.manifest))
    outcomes = _run_batch([str(rendered.manifest)], out, presets=[preset], evaluate=True, force=force, jobs=1,
                          quiet=False, json_=False, options_args=(None, iterations, None, None, None, None, None,
                                                                 None, None, None, "float32", None, prior))
    outcome = outcomes[0]
    if outcome.status not in ("done", "up to date"):
        raise typer.Exit(1)
    folder = Path(outcome.folder)
    _print_metrics(json.loads((folder / "report" / "metrics.json").read_text()), folder / "report")
    console.print(f"stems: {folder / 'stems'}; images: {folder / 'images'}", highlight=False)
    console.print(f"remix: {outcome.remixes[0]}", highlight=False)
    console.print(f"DAW project: {outcome.projects[0]}", highlight=False)


def _print_separation(result) -> None:
    from studio_sep.stages import prior_label

    sep = result.run["separation"]
    ll = result.run["log_likelihood"]
    t = result.run["timings_s"]
    console.print(
        f"separated [bold]{result.run['session']['name']}[/] → {result.folder}: init {'+'.join(sep['init'])}, "
        f"{sep['n_iter']} iterations on {sep['device']} ({sep['dtype']}), {t['per_iteration_s']:.3f} s/iteration, "
        f"log-likelihood {ll['initial']:.3f} → {ll['final']:.3f}", highlight=False)
    console.print(f"prior: {prior_label(sep['prior'])}; spectral init: {sep['spectral_init']}", highlight=False)


def _print_metrics(metrics: dict, report_dir: Path) -> None:
    from studio_sep.stages import METRICS_HEADER, metrics_rows

    table = Table(*METRICS_HEADER, title=f"separation metrics (dB): {metrics['session']}", title_justify="left")
    for row in metrics_rows(metrics):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {report_dir / 'metrics.md'}, {report_dir / 'metrics.json'}", highlight=False)


def _print_simulation(result) -> None:
    verb = "reused" if result.reused else "rendered"
    console.print(
        f"{verb} [bold]{result.manifest}[/] — RT60 requested {result.rt60_requested_s:.2f} s, "
        f"measured {result.rt60_measured_s:.2f} s", highlight=False,
    )


def _print_session(session) -> None:
    fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    console.print(
        f"[bold]{session.name}[/]: {len(session.sources)} sources, {len(session.mics)} mics, "
        f"{session.duration_s:.2f} s at {session.sample_rate} Hz ({session.n_samples} samples)"
        + (f", processing at {session.processing_sample_rate} Hz" if session.processing_sample_rate else ""),
        highlight=False,
    )
    sources = Table("source", "prompt", "position (m)", "spot mic", "reference", title="sources", title_justify="left")
    for s in session.sources:
        sources.add_row(s.name, s.prompt, fmt(s.position_m), s.spot_mic or "-", "yes" if s.reference else "-")
    mics = Table("mic", "pattern", "position (m)", "aim az/el (deg)", "signal", title="mics", title_justify="left")
    for m in session.mics:
        aim = "-" if m.pattern == "omni" else f"{m.aim_azimuth_deg:.0f} / {m.aim_elevation_deg:.0f}"
        mics.add_row(m.name, m.pattern, fmt(m.position_m), aim, f"{m.file.name}:{m.channel}")
    console.print(sources)
    console.print(mics)
    truth = "yes" if session.truth is not None and session.truth.images else "no"
    room = session.room
    room_text = "unknown" if room is None or room.dimensions_m is None else \
        f"{fmt(room.dimensions_m)} m" + (f", RT60 {room.rt60_s:g} s" if room.rt60_s else "")
    console.print(f"room: {room_text}; ground truth: {truth}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
