"""Mixing commands: mix, presets, plugins scan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studio_sep.cli.options import DEFAULT_PRESETS_DIR, JsonOpt, QuietOpt, find_preset, parse_levels
from studio_sep.cli.printing import (
    Output,
    console,
    print_mix,
    print_plugin,
    print_session_warnings,
    styled,
    user_errors,
)


def mix(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root given to separate.")],
    preset: Annotated[Path, typer.Option(help="Mixing preset: a .toml path or a name from presets/.")] = DEFAULT_PRESETS_DIR / "paper.toml",
    from_: Annotated[str, typer.Option("--from", metavar="run|truth", help="Mix the separated images (run) or the ground truth (truth).")] = "run",
    gain: Annotated[list[str] | None, typer.Option(metavar="SOURCE=DB", help="SOURCE=DB fader gain, e.g. sax=+3; repeatable.")] = None,
    pan: Annotated[list[str] | None, typer.Option(metavar="SOURCE=PAN", help="SOURCE=PAN, -1 left … 1 right; repeatable.")] = None,
    mute: Annotated[list[str] | None, typer.Option(metavar="SOURCE", help="Mute a source; repeatable.")] = None,
    unmute: Annotated[list[str] | None, typer.Option(metavar="SOURCE", help="Unmute a source the preset mutes; repeatable.")] = None,
    solo: Annotated[list[str] | None, typer.Option(metavar="SOURCE", help="Solo a source; repeatable.")] = None,
    format: Annotated[str | None, typer.Option(metavar="pcm24|pcm16|float32|flac",
                                               help="Sample format of the remix and DAW stems: pcm24, pcm16 "
                                               "(TPDF-dithered), float32 or flac (24-bit; default: the preset's).")] = None,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Render a stereo remix, DAW stems, a REAPER project and a DAWproject from a preset."""
    from studio_sep.mixing.presets import GAIN_DB_MAX, GAIN_DB_MIN
    from studio_sep.mixing.routing import Overrides
    from studio_sep.session import load_session
    from studio_sep.stages import mix_session, session_lock

    output = Output(quiet, json_)
    with user_errors(out):
        overrides = Overrides(gain_db=parse_levels(gain or [], "--gain", low=GAIN_DB_MIN, high=GAIN_DB_MAX),
                              pan=parse_levels(pan or [], "--pan", low=-1.0, high=1.0),
                              mute=frozenset(mute or []), unmute=frozenset(unmute or []), solo=frozenset(solo or []))
        session = load_session(manifest)
        print_session_warnings(session)
        with session_lock(out / session.name, create=from_ == "truth"), output.progress() as progress:
            outcome = mix_session(session, out, find_preset(preset), source=from_, overrides=overrides,
                                  callback=progress, format=format)
    output.result(outcome, paths=[outcome.remix, outcome.project, outcome.dawproject], show=lambda: print_mix(outcome))


def presets_command(
    folder: Annotated[Path, typer.Argument(help="Folder of presets.")] = DEFAULT_PRESETS_DIR,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """List the mixing presets in a folder, one line each."""
    from studio_sep.mixing.presets import list_presets

    output = Output(quiet, json_)
    with user_errors():
        found = list_presets(folder)

    def show() -> None:
        for preset in found:
            console.print(styled((preset.name, "bold"), f"  {preset.description}  ({preset.path})"))
        if not found:
            console.print(f"no presets in {folder}")

    output.result([{"name": p.name, "description": p.description, "path": str(p.path)} for p in found],
                  paths=[p.path for p in found], show=show)


def plugins_scan(
    directories: Annotated[list[Path] | None, typer.Argument(help="Folders or .vst3 bundles to scan (default: the standard VST3 folders).")] = None,
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """List installed VST3 plugins and their parameters."""
    from studio_sep.mixing.plugins.host import scan_plugins

    output = Output(quiet, json_)
    with user_errors():
        with output.status("loading plugins in worker processes…"):
            infos = scan_plugins(directories or None)

    def show() -> None:
        for info in infos:
            print_plugin(info)
        if not infos:
            console.print("no VST3 plugins found")

    output.result([info.to_dict() for info in infos], paths=[info.path for info in infos if not info.error],
                  show=show)
