"""Helpers shared by the benchmark scripts (imported as ``common``: the scripts run from
this folder, ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from pathlib import Path


def jsonable(obj):
    """``obj`` with tuples as lists, paths as strings, keys as strings and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def memory_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (None elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            return round(int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 1024**2, 1)
    except (OSError, StopIteration):
        return None


def package_versions(names) -> dict[str, str]:
    """Python's and numpy's versions, then each named distribution's ("not installed" if absent)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def without_takes(manifest_text: str) -> str:
    """A rendered session's manifest without its dry truth, solo reference takes and MIDI
    (the benchmarks that tile or resample a session write only its mics and truth images)."""
    text = re.sub(r"\[truth\.dry\][^\[]*", "", manifest_text)
    text = re.sub(r'reference = "[^"]*"\n', "", text)
    return re.sub(r'midi = "[^"]*"\n', "", text)


def write_results(stem: Path, markdown: str, data, *, indent: int = 2) -> None:
    """``stem``.md (the table) and ``stem``.json (``data``, made JSON-safe by :func:`jsonable`)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(markdown)
    stem.with_suffix(".json").write_text(json.dumps(jsonable(data), indent=indent))
