"""The one rule for names that become file and folder names (session, source, mic, preset).

:func:`safe_name` is the sanitiser: it maps any text to a name that is safe as one path
component on every file system the tool writes to (letters, digits, ``_``, ``-``, ``.``,
starting with a letter or digit, at most :data:`NAME_MAX_CHARS` characters, so that
``NN_<name>.wav`` and its temporary ``.part`` sibling stay well under the usual
255-byte limit). :func:`name_problem` is the validator built on it: the manifest and
preset readers refuse every name the sanitiser would change, so the names that reach
the output folder are exactly the names the user wrote. Imports nothing.
"""

from __future__ import annotations

import re

#: Longest name accepted (characters; all are ASCII, so also bytes).
NAME_MAX_CHARS = 100

#: What a name may hold, stated once for error messages.
NAME_RULE = (f"use letters, digits, '_', '-' or '.', starting with a letter or digit, "
             f"at most {NAME_MAX_CHARS} characters")

_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_BAD_START = re.compile(r"^[^A-Za-z0-9]+")


def safe_name(text: str) -> str:
    """``text`` made into a usable file name: every other character becomes ``_``, a
    leading run of ``_``, ``-``, ``.`` is dropped, the result is cut to
    :data:`NAME_MAX_CHARS`; ``"unnamed"`` if nothing is left."""
    name = _BAD_START.sub("", _BAD_CHARS.sub("_", text))[:NAME_MAX_CHARS]
    return name or "unnamed"


def name_problem(name: str) -> str | None:
    """Why ``name`` is not usable as a file name as written (None: it is): the name
    :func:`safe_name` would leave unchanged is the only one accepted."""
    if safe_name(name) == name:
        return None
    if len(name) > NAME_MAX_CHARS:
        return f"name of {len(name)} characters is longer than {NAME_MAX_CHARS}"
    return f"name {name!r} is not usable as a file name"
