"""Helpers shared by the benchmark scripts (imported as ``common``: the scripts run from
this folder, ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import math
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
