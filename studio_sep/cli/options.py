"""Options shared by several commands, the parsing of their values, and how ``--help`` shows them.

An option with a fixed set of values shows them as its metavar (``cpu|cuda|auto``); the values
are checked by the library (one ``error: --option: …`` line naming the valid ones), not by click.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import click
import typer

from studio_sep.util.errors import InputError

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no logs: print only warnings, errors "
                                       "and the result path(s).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as one JSON document on stdout and nothing "
                                       "else there (null for a value that is not a finite number).")]

InitOpt = Annotated[str | None, typer.Option(metavar="INIT[,INIT...]", help="Comma-separated inits: circular, geometry, spot (transfer "
                                          "functions measured against every source's spot mic), dictionary, "
                                          "prior (default: geometry).")]
PriorOpt = Annotated[str | None, typer.Option(metavar="classnet|nmf|none", help="Spectral prior: classnet (the CLASS-net network), nmf (class "
                                           "dictionaries) or none (default: manifest, else none).")]
PriorModelOpt = Annotated[str | None, typer.Option(help="CLASS-net checkpoint for --prior classnet (default: the "
                                                "model shipped with studio-sep).")]
ClapCheckpointOpt = Annotated[str | None, typer.Option(help="LAION-CLAP checkpoint (.pt) for a CLAP-conditioned "
                                                    "--prior-model (else $STUDIO_SEP_CLAP_CHECKPOINT, else config).")]
RobertaDirOpt = Annotated[str | None, typer.Option(help="Folder with the roberta-base tokenizer and config for CLAP "
                                                "(else $STUDIO_SEP_ROBERTA_DIR, else config).")]
BlindStartOpt = Annotated[bool | None, typer.Option(
    "--blind-start/--no-blind-start", help="Also fit from the blind start and keep the fit with the higher "
    "log-likelihood (default off; never for sessions separated in time blocks).")]
IterationsOpt = Annotated[str | None, typer.Option(
    metavar="N|auto", help="FastMNMF2 iterations of each fit: N (exactly N) or auto, until the likelihood stops "
    "improving (default auto, at most 100 per fit).")]
EnsembleOpt = Annotated[int | None, typer.Option(help="Fits combined into the images, each from its own random "
                                              "spectral start (default 3; 1 with --blind-start and in time blocks).")]
NBasisOpt = Annotated[int | None, typer.Option(help="NMF bases per source (default 8).")]
NFftOpt = Annotated[int | None, typer.Option(help="STFT window in samples (default: ~64 ms at the processing rate).")]
HopOpt = Annotated[int | None, typer.Option(help="STFT hop in samples (default n_fft/4).")]
DeviceOpt = Annotated[str | None, typer.Option(metavar="cpu|cuda|auto", help="cpu, cuda or auto (default auto: cuda when cupy sees a GPU).")]
DtypeOpt = Annotated[str | None, typer.Option(metavar="float32|float64", help="Storage of the fit: float32 (default, faster) or float64; its sums are float64 either way.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of the random initial values (default 0).")]
RateOpt = Annotated[int | None, typer.Option(help="Separate at this sample rate in Hz, at least 8000; outputs stay "
                                             "at the session's rate (default: manifest, else native).")]
StemMicOpt = Annotated[list[str] | None, typer.Option(metavar="MIC|SOURCE=MIC", help="Mic whose image becomes the stem: MIC for all sources "
                                                      "or SOURCE=MIC; repeatable (default: spot_mic).")]
FormatOpt = Annotated[str, typer.Option(metavar="float32|pcm24|pcm16",
                                       help="Sample format of the written images and stems: float32, pcm24 or "
                                       "pcm16 (TPDF-dithered); the remix and DAW stems follow the preset or "
                                       "mix --format.")]
IMAGE_FORMATS = ("float32", "pcm24", "pcm16")
MaxMemoryOpt = Annotated[str | None, typer.Option(metavar="SIZE", help="Memory budget of the separation, e.g. 8G; above it, long "
                                                  "sessions are separated in overlapping time blocks "
                                                  "(default: from the machine's available memory).")]


def parse_stem_mics(values: list[str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for value in values:
        source, sep, mic = value.partition("=")
        chosen[source if sep else "*"] = mic if sep else source
    return chosen


def separation_options(init, iterations, n_basis, n_fft, hop, device, dtype, seed, processing_rate, stem_mic,
                        format, max_memory=None, prior=None, prior_model=None, clap_checkpoint=None,
                        roberta_dir=None, blind_start=None, ensemble=None):
    from studio_sep.stages import SeparationOptions, parse_size
    from studio_sep.stages.options_check import check_options

    if format == "flac":
        raise InputError(None, "--format", "flac is a format of the remix and DAW stems, not of the images "
                         "(the later stages read them back as WAV)",
                         "use float32, pcm24 or pcm16 here, and `studio-sep mix --format flac`")
    if format not in IMAGE_FORMATS:
        raise InputError(None, "--format", f"{format!r} is not one of {', '.join(IMAGE_FORMATS)}",
                         "pick one of those")
    options = SeparationOptions(
        init=tuple(i.strip() for i in init.split(",") if i.strip()) if init else None,
        n_iter=parse_iterations(iterations), n_basis=n_basis, n_fft=n_fft, hop=hop, device=device, dtype=dtype, seed=seed,
        processing_sample_rate=processing_rate, stem_mics=parse_stem_mics(stem_mic or []), subtype=format,
        max_memory=None if max_memory is None else parse_size(max_memory), prior=prior, prior_model=prior_model,
        clap={k: v for k, v in (("checkpoint", clap_checkpoint), ("roberta", roberta_dir)) if v} or None,
        blind_start=blind_start, ensemble=ensemble)
    check_options(options)
    return options


def parse_iterations(value: str | None) -> int | str | None:
    """``--iterations``: a whole number as an int, anything else as given, lower-cased
    (``auto``; :func:`studio_sep.stages.options_check.check_options` refuses the rest)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value.strip().lower()


def parse_levels(values: list[str], option: str, *, low: float, high: float) -> dict[str, float]:
    """``SOURCE=NUMBER`` values, each a finite number in ``low … high``."""
    levels = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            levels[name] = float(number)
        except ValueError:
            raise InputError(None, option, f"{value!r} is not SOURCE=NUMBER", f"write e.g. {option} sax=+3") from None
        if not sep or not name:
            raise InputError(None, option, f"{value!r} is not SOURCE=NUMBER", f"write e.g. {option} sax=+3")
        if not low <= levels[name] <= high:  # also refuses nan
            raise InputError(None, option, f"{value!r}: {number} is not a number from {low:g} to {high:g}",
                             f"use a value from {low:g} to {high:g}")
    return levels


DEFAULT_PRESETS_DIR = Path("presets")
DEFAULT_PRESET = DEFAULT_PRESETS_DIR / "paper.toml"


def find_preset(preset: Path) -> Path:
    """A preset path as given, else ``presets/<name>.toml`` here, else in the source tree."""
    if preset.is_file():
        return preset
    name = preset.name if preset.suffix == ".toml" else f"{preset.name}.toml"
    for folder in (DEFAULT_PRESETS_DIR, Path(__file__).resolve().parents[2] / "presets"):
        if (folder / name).is_file():
            return folder / name
    return preset  # load_preset reports it missing


def tidy_help(command: click.Command) -> None:
    """Make ``--help`` of ``command`` and its subcommands show values, not Python types: a
    flag shows none (typer writes ``<bool>``), a repeatable value its element (``<path>...``,
    not ``<list[Path]>``). Options with choices name them in their metavar (above)."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif (param.multiple or param.nargs == -1) and param.metavar is None and hasattr(param, "display_type"):
            label = re.sub(r"^<list\[(.*)\]>$", lambda m: f"<{m.group(1).lower()}>...", param.display_type(None))
            param.display_type_rich = lambda ctx, label=label: label  # the instance's own, over typer's
    help_option = command.get_help_option

    def get_help_option(ctx, help_option=help_option):  # -h/--help: a flag, made per context by click
        option = help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
