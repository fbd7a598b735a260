"""The report command: (re)build a run's HTML report from its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from studio_sep.cli.options import JsonOpt, QuietOpt
from studio_sep.cli.printing import Output, console, existing_run


def report(
    manifest: Annotated[Path, typer.Argument(help="The session.toml (or its folder) of the run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root given to run (or separate).")],
    quiet: QuietOpt = False, json_: JsonOpt = False,
) -> None:
    """Build a run's HTML report from its outputs: OUT/<session>/report/index.html (and OUT/index.html)."""
    from studio_sep.stages.report_html import build_report, write_batch_index

    output = Output(quiet, json_)
    with existing_run(manifest, out, output) as (session, progress):
        built = build_report(session, out, callback=progress, force=True)
        write_batch_index(out)
    output.result({"report": built.path}, paths=[built.path], show=lambda: console.print(f"HTML report: {built.path}"))
