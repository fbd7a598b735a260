"""pedalboard's built-in effects as chain stages: which classes count, their parameter
names, converting a preset's values, and building an effect from a :class:`PluginSpec`.

Building an effect is also how a built-in stage is validated: pedalboard's own
constructor checks the ranges.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from typing import Any

from studio_sep.mixing.plugins.errors import PluginError
from studio_sep.mixing.plugins.spec import PluginSpec

# pedalboard classes that host other plugins or are abstract: never a chain stage.
_HOST_CLASSES = frozenset({"Plugin", "PluginContainer", "Chain", "Mix", "Pedalboard", "ExternalPlugin",
                           "VST3Plugin", "AudioUnitPlugin", "IIRFilter"})


def suggest(name: str, valid: Sequence[str]) -> str:
    """A 'did you mean …? valid names: …' hint for an unknown name."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid names: {', '.join(valid) if valid else '(none)'}"


def _builtin_classes() -> dict[str, type]:
    import pedalboard

    names = {}
    for name in dir(pedalboard):
        obj = getattr(pedalboard, name)
        if (isinstance(obj, type) and issubclass(obj, pedalboard.Plugin) and not name.startswith("_")
                and name not in _HOST_CLASSES and not issubclass(obj, pedalboard.ExternalPlugin)):
            names[name] = obj
    return names


def _builtin_param_names(cls: type) -> list[str]:
    """Constructor keyword names of a pedalboard effect (from pybind11's signature line)."""
    signature = (cls.__init__.__doc__ or "").split("\n", 1)[0]
    names = [n for n in re.findall(r"(?:\(|, )(\w+): ", signature) if n != "self"]
    return [n for n in names if isinstance(getattr(cls, n, None), property)] or names


def _builtin_value(spec: PluginSpec, key: str, value: Any, current: Any) -> Any:
    """Convert a preset value to what the effect's constructor takes, or raise PluginError."""
    kind = type(current)
    members = getattr(kind, "__members__", None)
    if members is not None:  # a pybind11 enum (LadderFilter.Mode, Resample.Quality)
        if isinstance(value, str) and value in members:
            return members[value]
        raise PluginError(None, f"{spec.where or spec.name}.{key}",
                          f"{spec.name} {key} must be one of {', '.join(members)} (got {value!r})",
                          "use one of the listed names")
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise PluginError(None, f"{spec.where or spec.name}.{key}",
                          f"{spec.name} {key} must be true or false (got {value!r})", "write true or false")
    if isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PluginError(None, f"{spec.where or spec.name}.{key}",
                              f"{spec.name} {key} must be a finite number (got {value!r})", "write a number")
        return value
    return value


#: Highest frequency a built-in effect's ``*_hz`` parameter takes: the Nyquist frequency
#: of 48 kHz. A session at a lower rate is held to its own Nyquist frequency when the
#: preset is routed onto it (:func:`check_builtin_nyquist`).
MAX_FREQUENCY_HZ = 24000.0

#: The ranges of a built-in effect's parameters, checked when the preset is loaded, by
#: parameter name (suffix, or the whole name): (name, low, high, low excluded, what).
#: pedalboard itself accepts a cutoff of -100 Hz or a gain of 1e9 dB and fails, or
#: renders nonsense, only when the chain runs.
BUILTIN_RANGES = (
    ("_hz", 0.0, MAX_FREQUENCY_HZ, True, "a frequency in Hz"),
    ("_db", -120.0, 60.0, False, "a level in dB"),
    ("_ms", 0.0, 60_000.0, False, "a time in ms"),
    ("_seconds", 0.0, 60.0, False, "a time in seconds"),
    ("q", 0.0, 100.0, True, "a filter Q"),
    ("ratio", 1.0, 1000.0, False, "a compression ratio"),
)


def _param_range(key: str):
    return next((r for r in BUILTIN_RANGES if key == r[0] or (r[0].startswith("_") and key.endswith(r[0]))), None)


def check_builtin_values(spec: PluginSpec) -> None:
    """Check a built-in effect's numbers against :data:`BUILTIN_RANGES` (no pedalboard
    needed: this runs when the preset is loaded). Names and types are checked when the
    effect is built (:func:`build_builtin`)."""
    for key, value in spec.params.items():
        known = _param_range(key)
        if known is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        _, low, high, low_open, what = known
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            span = f"above {low:g} and up to {high:g}" if low_open else f"{low:g} to {high:g}"
            raise PluginError(None, f"{spec.where or spec.name}.{key}",
                              f"{spec.name} {key} = {value!r} is not {what} {span}", f"use a value {span}")


def check_builtin_nyquist(spec: PluginSpec, sample_rate: int) -> None:
    """A built-in effect's frequencies are at most the Nyquist frequency of ``sample_rate``."""
    for key, value in spec.params.items():
        if (key.endswith("_hz") and isinstance(value, (int, float)) and not isinstance(value, bool)
                and value > sample_rate / 2):  # above it, pedalboard's filters blow up (inf)
            raise PluginError(None, f"{spec.where or spec.name}.{key}",
                              f"{spec.name} {key} = {value:g} Hz is above the Nyquist frequency "
                              f"({sample_rate / 2:g} Hz) of this session's {sample_rate} Hz",
                              f"use a frequency up to {sample_rate / 2:g} Hz")


def build_builtin(spec: PluginSpec):
    """Construct a built-in effect from a spec; raises PluginError on any bad name or value."""
    where = spec.where or spec.name
    classes = _builtin_classes()
    cls = classes.get(spec.name)
    if cls is None:
        raise PluginError(None, where,
                          f"unknown built-in plugin {spec.name!r}; {suggest(spec.name, sorted(classes))}",
                          "use a pedalboard effect class name")
    valid = _builtin_param_names(cls)
    try:
        defaults = cls() if spec.name != "Convolution" else None
    except Exception:  # noqa: BLE001 - an effect with required arguments (Convolution)
        defaults = None
    kwargs = {}
    for key, value in spec.params.items():
        if key not in valid:
            raise PluginError(None, f"{where}.{key}",
                              f"{spec.name} has no parameter {key!r}; {suggest(key, valid)}",
                              "use one of the valid names")
        current = getattr(defaults, key, None) if defaults is not None else None
        kwargs[key] = _builtin_value(spec, key, value, current)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        problem = str(exc).splitlines()[0] if isinstance(exc, (ValueError, RuntimeError)) else (
            f"invalid arguments {spec.params!r} for {spec.name}")
        raise PluginError(None, where, f"{spec.name}: {problem}", "fix the parameter values") from None


