"""The ``studio-sep`` command line: a thin typer app over the library.

Each command makes one library call; the commands live in one module per group
(sessions, separation, mixing, CLASS-net) and print through :mod:`studio_sep.cli.printing`.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import tempfile
import traceback
from typing import Annotated

import typer
from typer.core import TyperGroup

from studio_sep import __version__
from studio_sep.cli import classnet_cmds, mixing_cmds, report_cmds, separation_cmds, session_cmds
from studio_sep.cli.options import tidy_help
from studio_sep.cli.printing import console, print_error

#: The base of typer's usage errors (bad option values, unknown commands): typer prints them.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _Guarded(TyperGroup):
    """The top-level guard: no traceback reaches the user's terminal.

    An unexpected exception in a command becomes one line naming it and a log file that
    holds its traceback (exit code 1); Ctrl-C one line (exit code 130). The package's
    own errors never get here: each command turns them into one line (``user_errors``).
    Also where ``--help`` is made to show values, not Python types (``tidy_help``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tidy_help(self)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, _USAGE_ERROR):
            raise  # typer's own: exit codes, usage errors
        except BrokenPipeError:  # the reader of stdout went away (`studio-sep ... | head`): stop quietly
            _silence_stdout()
            raise typer.Exit(1) from None  # as click does when the pipe breaks at its last flush
        except KeyboardInterrupt:
            print_error("interrupted (finished files are kept; run the same command again to continue)")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the last resort, by design
            log = write_crash_log(ctx, exc)
            where = f"the traceback is in {log}" if log else "no log could be written"
            print_error(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
                        f"(a bug in studio-sep; {where}; please report it)")
            raise typer.Exit(1) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stdout)
        pass


def write_crash_log(ctx, exc: BaseException) -> str | None:
    """A new file in the temporary folder with the command line and the traceback; its path."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        fd, path = tempfile.mkstemp(prefix=f"studio-sep-crash-{stamp}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"studio-sep {__version__}, command {ctx.invoked_subcommand!r}\n")
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


app = typer.Typer(
    cls=_Guarded,
    name="studio-sep",
    help="Separate every instrument of a multi-microphone studio session and remix it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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
app.command()(classnet_cmds.average)
app.command()(session_cmds.validate)
app.command()(separation_cmds.separate)
app.command()(separation_cmds.run)
app.command()(separation_cmds.evaluate)
app.command()(mixing_cmds.mix)
app.command()(report_cmds.report)
app.command("presets")(mixing_cmds.presets_command)
plugins_app = typer.Typer(help="External VST3 plugins.", no_args_is_help=True)
plugins_app.command("scan")(mixing_cmds.plugins_scan)
app.add_typer(plugins_app, name="plugins")
app.command()(session_cmds.demo)
