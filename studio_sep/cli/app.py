"""The ``studio-sep`` command line: a thin typer app over the library.

Each command makes one library call; the commands live in one module per group
(sessions, separation, mixing, CLASS-net) and print through :mod:`studio_sep.cli.printing`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from studio_sep import __version__
from studio_sep.cli import classnet_cmds, mixing_cmds, separation_cmds, session_cmds
from studio_sep.cli.printing import console

app = typer.Typer(
    name="studio-sep",
    help="Separate every instrument of a multi-microphone studio session and remix it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


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


# Registered in this order: it is the order of `studio-sep --help`.
app.command()(session_cmds.simulate)
app.command()(classnet_cmds.augment)
app.command()(classnet_cmds.train)
app.command()(session_cmds.validate)
app.command()(separation_cmds.separate)
app.command()(separation_cmds.run)
app.command()(separation_cmds.evaluate)
app.command()(mixing_cmds.mix)
app.command("presets")(mixing_cmds.presets_command)
plugins_app = typer.Typer(help="External VST3 plugins.", no_args_is_help=True)
plugins_app.command("scan")(mixing_cmds.plugins_scan)
app.add_typer(plugins_app, name="plugins")
app.command()(session_cmds.demo)
