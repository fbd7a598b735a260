"""The command line: ``studio-sep`` (typer)."""

from studio_sep.cli.app import app

__all__ = ["app"]
