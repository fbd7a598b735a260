"""JSON as every file and ``--json`` document of studio-sep writes it: strict JSON.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which are not JSON (a
browser's ``JSON.parse``, ``jq`` and most languages refuse them). Here a non-finite
number becomes ``null`` (a metric that is not defined or not measured), numpy scalars
and arrays become numbers and lists, and ``allow_nan=False`` makes any value that
slipped through an error instead of a file no one else can read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import PurePath
from typing import Any

from studio_sep.util.atomic import write_text_atomic


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as ``None``, numpy scalars and arrays as
    Python numbers and lists, tuples as lists and paths as strings (a new object; the
    argument is not modified)."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, PurePath) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, PurePath):
        return str(value)
    tolist = getattr(value, "tolist", None)  # numpy (and cupy) scalars and arrays
    if callable(tolist):
        return json_safe(tolist())
    return value  # json.dumps names what it cannot write


def dumps_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)`` with ``allow_nan=False``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def write_json_atomic(path: str | os.PathLike, value: Any, *, indent: int | None = 2, **kwargs: Any) -> None:
    """Write ``value`` as strict JSON (:func:`dumps_json`) to ``path`` atomically."""
    write_text_atomic(path, dumps_json(value, indent=indent, **kwargs))
