"""TOML helpers shared by manifests and presets: writing documents, fixes for unknown keys."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any


def unknown_key_fix(key: str, allowed: tuple[str, ...]) -> str:
    """The fix for a key that is not allowed: the closest valid key, else the list."""
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"


def to_toml(doc: Mapping[str, Any]) -> str:
    """Format a document of tables, arrays of tables and scalar/list values as TOML.

    Small on purpose: it covers the shapes of manifests and presets, with positions
    kept on one line (``position_m = [3.0, 0.0, 1.5]``) as a person would write them.
    """
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):  # an inline table, as in a preset's chain = [{ plugin = ... }]
            return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"to_toml: cannot format {type(v).__name__}")

    def table(header: str | None, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
        if header is not None and (scalars or not body):
            lines.extend(["", header] if lines else [header])
        lines.extend(f"{_key(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in body.items():
            name = k if header is None else f"{header.strip('[]')}.{_key(k)}"
            if isinstance(v, Mapping):
                table(f"[{name}]", v)
            elif _is_table_array(v):
                for item in v:
                    lines.extend(["", f"[[{name}]]"])
                    lines.extend(f"{_key(ik)} = {value(iv)}" for ik, iv in item.items())

    table(None, doc)
    return "\n".join(lines) + "\n"


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
