"""The report command: (re)build a run's HTML report from its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studio_sep.cli.options import JsonOpt, QuietOpt
from studio_sep.cli.printing import Output, console, print_session_warnings, user_errors


def report(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder) of the run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root given to run (or separate).")],
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Build a run's HTML report from its outputs: OUT/<session>/report/index.html (and OUT/index.html)."""
    from studio_sep.session import load_session
    from studio_sep.stages import session_lock
    from studio_sep.stages.report_html import build_report, write_batch_index

    output = Output(quiet, json_)
    with user_errors(out):
        session = load_session(manifest)
        print_session_warnings(session)
        with session_lock(out / session.name, create=False), output.progress() as progress:
            built = build_report(session, out, callback=progress, force=True)
        write_batch_index(out)
    output.result({"report": built.path}, paths=[built.path], show=lambda: console.print(f"HTML report: {built.path}"))
