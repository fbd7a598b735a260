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
