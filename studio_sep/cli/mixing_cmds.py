"""Mixing commands: mix, presets, plugins scan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from studio_sep.cli.options import DEFAULT_PRESETS_DIR, find_preset, parse_levels
from studio_sep.cli.printing import (
    StageProgress,
    console,
    print_mix,
    print_plugin,
    print_session_warnings,
    user_errors,
)


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
    format: Annotated[str | None, typer.Option(help="Sample format of the remix and DAW stems: pcm24, pcm16 "
                                               "(TPDF-dithered), float32 or flac (24-bit; default: the preset's).",
                                               metavar="[pcm24|pcm16|float32|flac]")] = None,
) -> None:
    """Render a stereo remix, DAW stems, a REAPER project and a DAWproject from a preset."""
    from studio_sep.mixing.presets import GAIN_DB_MAX, GAIN_DB_MIN
    from studio_sep.mixing.routing import Overrides
    from studio_sep.session import load_session
    from studio_sep.stages import mix_session, session_lock

    with user_errors(out):
        overrides = Overrides(gain_db=parse_levels(gain or [], "--gain", low=GAIN_DB_MIN, high=GAIN_DB_MAX),
                              pan=parse_levels(pan or [], "--pan", low=-1.0, high=1.0),
                              mute=frozenset(mute or []), unmute=frozenset(unmute or []), solo=frozenset(solo or []))
        session = load_session(manifest)
        print_session_warnings(session)
        with session_lock(out / session.name, create=from_ == "truth"), StageProgress(console) as progress:
            outcome = mix_session(session, out, find_preset(preset), source=from_, overrides=overrides,
                                  callback=progress, format=format)
    print_mix(outcome)


def presets_command(
    folder: Annotated[Path, typer.Argument(help="Folder of presets.")] = DEFAULT_PRESETS_DIR,
) -> None:
    """List the mixing presets in a folder, one line each."""
    from studio_sep.mixing.presets import list_presets

    with user_errors():
        found = list_presets(folder)
    for preset in found:
        console.print(f"[bold]{preset.name}[/]  {escape(preset.description)}  ({escape(str(preset.path))})",
                      highlight=False)
    if not found:
        console.print(f"no presets in {folder}", highlight=False, markup=False)


def plugins_scan(
    directories: Annotated[list[Path] | None, typer.Argument(help="Folders or .vst3 bundles to scan (default: the standard VST3 folders).")] = None,
) -> None:
    """List installed VST3 plugins and their parameters."""
    from studio_sep.mixing.plugins.host import scan_plugins

    with user_errors():
        with console.status("loading plugins in worker processes…"):
            infos = scan_plugins(directories or None)
    for info in infos:
        print_plugin(info)
    if not infos:
        console.print("no VST3 plugins found", highlight=False)
