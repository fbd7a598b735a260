"""The plugin host bridge: validate and render chains of pedalboard effects and VST3 plugins.

External VST3 plugins run in a fresh worker process per job (``python -c`` on this
module's ``_worker_main``), so a plugin that crashes, hangs or misbehaves fails that
job with a :class:`PluginJobError` and never the caller. Chains of pedalboard's
built-in effects only run in-process.

Why a fresh process per job: with Debian's zam-plugins VST3s several instances of
one plugin in one process were reported to lose or swap parameter values. (With the
native parameter access below, two ZamComp/ZamCompX2 instances in one process kept
their own values and rendered as two separate jobs do; the guard stays.) Every render
job sets each parameter, reads all of them back (after setting every instance, and
again after rendering) and fails on a mismatch.

Why parameters are read through pedalboard's native ``_parameters`` list: pedalboard's
Python layer builds every :class:`pedalboard.AudioProcessorParameter` by asking the
plugin for the text of 1001 raw values (twice, setting the value each time, when the
first pass looks wrong), and ``VST3Plugin.__init__`` stores that cache on a throwaway
wrapper, so the first ``.parameters`` access probes again. Measured on a 2-core
machine: ``load_plugin`` of ZamVerb took 230-253 s and its first ``.parameters``
access more than 5 minutes again; every other zam plugin 0.01-0.5 s. Loaded without
the probe: ZamVerb 2.5-5.5 s (its own set-up), the others 2-40 ms. The worker loads
plugins with the probe switched off (a worker-only patch, see :class:`_native_loading`),
describes a parameter from its texts at raw 0, 1 and its default (all steps of a
string-valued one), and sets values with the plugin's own text→value parser, so only
the parameters a spec names are touched. A worker starts in 0.3-0.5 s (interpreter
and numpy); pedalboard is imported inside the job.

Conventions: audio arrays are ``(channels, samples)`` (``x_CS``), float32 or float64,
as in pedalboard. A chain never changes the channel count: stereo in → stereo out; a
``dual_mono`` plugin runs one instance per channel and keeps the channels.

Read-only parameters: pedalboard does not expose VST3's ``kIsReadOnly`` flag. A
parameter is treated as writable when the plugin marks it automatable. This rejects
meters (``Gain Reduction``, ``Output Level``) and DPF's host-side entries (``Buffer
Size``, ``Sample Rate``, ``Latency``), but also the few inputs a plugin declares
non-automatable (ZamVerb ``Room``, ZamHeadX2 ``Azimuth``/``Elevation``), and it
accepts meters a plugin wrongly marks automatable (ZaMultiComp ``Gain Reduction 1``).

Test-only hook: a render worker reads the environment variable
``STUDIO_SEP_PLUGIN_HOST_TEST_FAULT`` and fails on purpose (``exit``: ``os._exit(3)``;
``segv``: SIGSEGV; ``hang``: sleeps; ``crosstalk``: copies the last VST3 instance's raw
parameter values into the first instance of the same plugin, as the swap seen with
several instances), so tests can check crash, timeout and read-back handling. Nothing
else reads it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio_sep.mixing.presets import PluginSpec
from studio_sep.util.errors import InputError, StudioSepError

__all__ = [
    "PluginError", "PluginJobError", "ParamInfo", "PluginInfo", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE",
    "DEFAULT_VST3_DIRS", "RenderReport", "scan_plugins", "describe_plugin", "clear_plugin_cache",
    "validate_chain", "render_chain", "render_chain_with_report",
]

MIN_SAMPLE_RATE = 8000.0
"""Lowest sample rate any chain accepts (pedalboard's ``Reverb`` kills the process at 0 or 1 Hz)."""
MAX_SAMPLE_RATE = 384000.0
DEFAULT_VST3_DIRS = ("/usr/lib/vst3", "/usr/local/lib/vst3", "~/.vst3")
"""Searched by :func:`scan_plugins`, then each entry of ``$VST3_PATH`` (``os.pathsep``-separated)."""

TEST_FAULT_ENV = "STUDIO_SEP_PLUGIN_HOST_TEST_FAULT"
"""Test-only: read by render workers only (``exit`` | ``segv`` | ``hang`` | ``crosstalk``)."""

READBACK_REL_TOL = 1e-4
"""Read-back tolerance of a continuous parameter, as a fraction of its min..max span."""
READBACK_ABS_TOL = 1e-5
"""Added to every read-back tolerance (plugins print values with 6 decimals)."""
DESCRIBE_TIMEOUT_S = 60.0
"""Time one plugin may take to load and be described in a scan worker."""

# pedalboard classes that host other plugins or are abstract: never a chain stage.
_HOST_CLASSES = frozenset({"Plugin", "PluginContainer", "Chain", "Mix", "Pedalboard", "ExternalPlugin",
                           "VST3Plugin", "AudioUnitPlugin", "IIRFilter"})
_CONTINUOUS_STEPS = 2**31 - 1  # JUCE's getNumSteps() of a continuous parameter
_MAX_LISTED_STEPS = 128        # enumerate the texts of a discrete parameter up to this many steps
_PROBE_CHANNELS = (1, 2)       # channel counts tried when describing a plugin


class PluginError(InputError):
    """A plugin chain is invalid (unknown plugin or parameter, bad value, wrong channel layout)."""


class PluginJobError(StudioSepError):
    """A render job failed while running: a plugin raised, crashed, hung or produced NaN/inf.

    Parameters
    ----------
    plugins : sequence of str
        The plugins of the job (``where`` of each spec, or its name).
    reason : str
        What happened, one line.
    """

    exit_code = 3

    def __init__(self, plugins: Sequence[str], reason: str):
        self.plugins = tuple(plugins)
        self.reason = reason
        names = ", ".join(self.plugins) or "empty chain"
        super().__init__(f"plugin job [{names}] failed: {reason}")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a VST3 plugin, as the plugin reports it.

    Attributes
    ----------
    name : str
        pedalboard's Python name (``threshold_db``): the key to use in ``PluginSpec.params``.
    display_name : str
        The plugin's own name (``Threshold``).
    label : str
        Units (``dB``, ``ms``), empty if none.
    min_value, max_value : float or None
        Range of a numeric parameter (the values at raw 0 and raw 1, sorted); None for
        a string parameter.
    default : float or str or None
        The value at the plugin's default raw value.
    is_boolean : bool
        A two-state switch (the plugin says boolean, or it has exactly two steps);
        ``True``/``False`` are accepted as values.
    valid_values : tuple of str or None
        The allowed strings of a string-valued parameter (e.g. a program list).
    writable : bool
        False for meters and read-only entries (see the module docstring).
    num_steps : int
        Number of steps of a quantised parameter; ``2**31 - 1`` for a continuous one.
    index : int
        Position in the plugin's parameter list.
    """

    name: str
    display_name: str
    label: str
    min_value: float | None
    max_value: float | None
    default: float | str | None
    is_boolean: bool
    valid_values: tuple[str, ...] | None
    writable: bool
    num_steps: int
    index: int

    @property
    def is_quantised(self) -> bool:
        return 1 < self.num_steps < _CONTINUOUS_STEPS

    def readback_tolerance(self) -> float:
        """Largest accepted |read-back − requested| of a numeric value.

        ``READBACK_REL_TOL`` of the span for a continuous parameter, half a step for a
        quantised one, plus ``READBACK_ABS_TOL``.
        """
        if self.min_value is None or self.max_value is None:
            return 0.0
        span = self.max_value - self.min_value
        if self.is_quantised:
            return span / (self.num_steps - 1) / 2 + READBACK_ABS_TOL
        return READBACK_REL_TOL * span + READBACK_ABS_TOL

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["valid_values"] = None if self.valid_values is None else list(self.valid_values)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamInfo:
        values = data.get("valid_values")
        return cls(**{**data, "valid_values": None if values is None else tuple(values)})


@dataclass(frozen=True)
class PluginInfo:
    """A VST3 plugin as found by :func:`scan_plugins` / :func:`describe_plugin`.

    Attributes
    ----------
    path : str
        The ``.vst3`` bundle.
    name : str
        The plugin's name ("" if it failed to load).
    category : str
        VST3 category, e.g. ``Fx|Dynamics|Mono`` (informative).
    parameters : tuple of ParamInfo
        Every parameter, read-only ones included (see ``ParamInfo.writable``).
    channel_counts : tuple of int
        The channel counts the plugin processes (pedalboard needs as many outputs as
        inputs, so each is both the input and the output count); ``(1,)`` is a mono
        plugin. Only 1 and 2 are tried.
    latency_samples : int
        Latency the plugin reports (pedalboard compensates it when rendering).
    load_s : float
        Time to load the plugin in the worker (without pedalboard's parameter probe).
    describe_s : float
        Time to read its parameters and try its channel counts.
    error : str or None
        Why the plugin could not be loaded or described; None when it could.
    """

    path: str
    name: str = ""
    category: str = ""
    parameters: tuple[ParamInfo, ...] = ()
    channel_counts: tuple[int, ...] = ()
    latency_samples: int = 0
    load_s: float = 0.0
    describe_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_mono(self) -> bool:
        return self.channel_counts == (1,)

    @property
    def writable_names(self) -> list[str]:
        return [p.name for p in self.parameters if p.writable]

    def param(self, name: str) -> ParamInfo | None:
        return next((p for p in self.parameters if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["parameters"] = [p.to_dict() for p in self.parameters]
        data["channel_counts"] = list(self.channel_counts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PluginInfo:
        return cls(**{**data, "parameters": tuple(ParamInfo.from_dict(p) for p in data.get("parameters", ())),
                      "channel_counts": tuple(data.get("channel_counts", ()))})


@dataclass(frozen=True)
class RenderReport:
    """What a render job did (for run.json and tests).

    Attributes
    ----------
    in_worker : bool
        True when the chain ran in a worker process (it holds a VST3 plugin).
    wall_s : float
        Time of the whole job as the caller saw it (worker start-up included).
    startup_s : float
        From starting the worker process to its entry point (interpreter, numpy, this
        module); 0 in-process.
    load_s : float
        Importing pedalboard, loading every plugin and setting its parameters.
    render_s : float
        Processing the audio.
    readback : tuple
        Per spec, per instance (one, or one per channel for dual-mono), the VST3
        parameter values read back after rendering, as the plugin reports them
        (empty for built-in effects).
    """

    in_worker: bool
    wall_s: float
    startup_s: float = 0.0
    load_s: float = 0.0
    render_s: float = 0.0
    readback: tuple = field(default_factory=tuple)


# --------------------------------------------------------------------------- scanning

_INFO_CACHE: dict[tuple[str, int], PluginInfo] = {}
"""describe results per (resolved bundle path, newest mtime in the bundle), this process only."""


def clear_plugin_cache() -> None:
    """Forget every cached :class:`PluginInfo` (they are also keyed by the bundle's mtime)."""
    _INFO_CACHE.clear()


def _bundle_key(path: Path) -> tuple[str, int]:
    """(resolved path, newest mtime_ns of the bundle or any file in it)."""
    resolved = path.resolve()
    newest = resolved.stat().st_mtime_ns
    if resolved.is_dir():
        for root, _dirs, files in os.walk(resolved):
            for name in files:
                try:
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime_ns)
                except OSError:
                    continue
    return str(resolved), newest


def _default_dirs() -> list[Path]:
    dirs = [Path(d).expanduser() for d in DEFAULT_VST3_DIRS]
    dirs += [Path(d).expanduser() for d in os.environ.get("VST3_PATH", "").split(os.pathsep) if d]
    return dirs


def scan_plugins(directories: Iterable[str | os.PathLike] | None = None, *,
                 timeout_s: float = DESCRIBE_TIMEOUT_S) -> list[PluginInfo]:
    """Find and describe the installed VST3 plugins.

    Parameters
    ----------
    directories : iterable of path-like, optional
        Folders to search (not recursively past ``.vst3`` bundles). Default:
        :data:`DEFAULT_VST3_DIRS` then ``$VST3_PATH``; missing folders are skipped.
    timeout_s : float
        Time one plugin may take to load and be described.

    Returns
    -------
    list of PluginInfo
        One per bundle, sorted by path. A plugin that fails to load, crashes the
        worker or times out is returned with ``error`` set; the scan goes on.
    """
    dirs = _default_dirs() if directories is None else [Path(d).expanduser() for d in directories]
    bundles: list[Path] = []
    for folder in dirs:
        if folder.is_dir():
            bundles += sorted(p for p in folder.rglob("*.vst3") if not any(
                parent.suffix == ".vst3" for parent in p.relative_to(folder).parents if parent != Path(".")))
    unique = sorted({str(p.resolve()): p for p in bundles}.values(), key=lambda p: str(p))
    infos = _describe_many(unique, timeout_s=timeout_s)
    return [infos[str(p.resolve())] for p in unique]


def describe_plugin(path: str | os.PathLike, *, timeout_s: float = DESCRIBE_TIMEOUT_S) -> PluginInfo:
    """Describe one VST3 plugin (loaded in a worker; cached per path and mtime in this process).

    Parameters
    ----------
    path : path-like
        The ``.vst3`` bundle.
    timeout_s : float
        Time the plugin may take to load and be described.

    Returns
    -------
    PluginInfo
        With ``error`` set when it could not be loaded.

    Raises
    ------
    PluginError
        If ``path`` does not exist.
    """
    bundle = Path(path).expanduser()
    if not bundle.exists():
        raise PluginError(None, str(bundle), "VST3 plugin not found",
                          "give the path of an installed .vst3 bundle (see scan_plugins())")
    return _describe_many([bundle], timeout_s=timeout_s)[str(bundle.resolve())]


def _describe_many(bundles: Sequence[Path], *, timeout_s: float) -> dict[str, PluginInfo]:
    """Describe bundles, from the cache or in workers; returns resolved path → info."""
    result: dict[str, PluginInfo] = {}
    keys: dict[str, tuple[str, int]] = {}
    todo: list[str] = []
    for bundle in bundles:
        key = _bundle_key(bundle)
        keys[key[0]] = key
        if key in _INFO_CACHE:
            result[key[0]] = _INFO_CACHE[key]
        else:
            todo.append(key[0])
    # One worker describes the remaining bundles in turn, writing one JSON line each; if
    # it dies or hangs, the bundle it was on is marked failed and a new worker goes on.
    while todo:
        described = _run_describe_worker(todo, timeout_s=timeout_s)
        for path in list(todo):
            if path not in described:
                break
            info = described[path]
            result[path] = info
            if info.ok:
                _INFO_CACHE[keys[path]] = info
            todo.remove(path)
    return result


def _run_describe_worker(paths: list[str], *, timeout_s: float) -> dict[str, PluginInfo]:
    """Run one describe worker over ``paths``; stops at the first bundle that kills or hangs it."""
    done: dict[str, PluginInfo] = {}
    with tempfile.TemporaryDirectory(prefix="studio-sep-scan-") as tmp:
        job = Path(tmp)
        (job / "job.json").write_text(json.dumps({"kind": "describe", "paths": paths}))
        lines_path = job / "describe.jsonl"
        proc, stderr = _start_worker(job)
        current: str | None = None
        started = time.monotonic()
        failure: str | None = None
        try:
            while True:
                returncode = proc.poll()
                for record in _read_jsonl(lines_path):
                    if record["event"] == "start" and record["path"] not in done:
                        if record["path"] != current:
                            current, started = record["path"], time.monotonic()
                    elif record["event"] == "done":
                        done[record["info"]["path"]] = PluginInfo.from_dict(record["info"])
                if returncode is not None:
                    if len(done) < len(paths):
                        failure = _death_reason(returncode, job / "stderr.txt")
                    break
                if time.monotonic() - started > timeout_s:
                    proc.kill()
                    proc.wait()
                    failure = f"timed out after {timeout_s:g} s (worker killed)"
                    break
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stderr.close()
        if failure is not None:
            culprit = current if current is not None and current not in done else next(
                p for p in paths if p not in done)
            done[culprit] = PluginInfo(path=culprit, error=f"worker failed while loading it: {failure}")
    return done


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line the worker was still writing
            break
    return records


# --------------------------------------------------------------------------- validation


def _check_sample_rate(sample_rate: float, specs: Sequence[PluginSpec] = ()) -> None:
    """Refuse rates pedalboard cannot run (``Reverb`` at 0 or 1 Hz kills the process)."""
    if (not isinstance(sample_rate, (int, float)) or isinstance(sample_rate, bool)
            or not math.isfinite(sample_rate) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        chain = ", ".join(_job_names(specs))
        problem = f"sample rate {sample_rate!r} Hz is outside {MIN_SAMPLE_RATE:g}..{MAX_SAMPLE_RATE:g} Hz"
        problem += f" for chain [{chain}]" if chain else ""
        raise PluginError(None, "sample_rate", problem, "give the audio's real sample rate in Hz")


def _suggest(name: str, valid: Sequence[str]) -> str:
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


def _build_builtin(spec: PluginSpec):
    """Construct a built-in effect from a spec; raises PluginError on any bad name or value."""
    where = spec.where or spec.name
    classes = _builtin_classes()
    cls = classes.get(spec.name)
    if cls is None:
        raise PluginError(None, where,
                          f"unknown built-in plugin {spec.name!r}; {_suggest(spec.name, sorted(classes))}",
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
                              f"{spec.name} has no parameter {key!r}; {_suggest(key, valid)}",
                              "use one of the valid names")
        current = getattr(defaults, key, None) if defaults is not None else None
        kwargs[key] = _builtin_value(spec, key, value, current)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        problem = str(exc).splitlines()[0] if isinstance(exc, (ValueError, RuntimeError)) else (
            f"invalid arguments {spec.params!r} for {spec.name}")
        raise PluginError(None, where, f"{spec.name}: {problem}", "fix the parameter values") from None


def _check_vst3_value(spec: PluginSpec, info: PluginInfo, param: ParamInfo, value: Any) -> None:
    field_ = f"{spec.where or spec.name}.{param.name}"
    if param.valid_values is not None:
        if not isinstance(value, str) or value not in param.valid_values:
            listed = ", ".join(map(repr, param.valid_values))
            raise PluginError(None, field_,
                              f"{info.name} {param.name} must be one of {listed} (got {value!r})",
                              "use a listed value")
        return
    if isinstance(value, bool):
        if param.is_boolean:
            return
        raise PluginError(None, field_, f"{info.name} {param.name} is not a switch (got {value!r})",
                          f"give a number in {param.min_value:g}..{param.max_value:g}")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PluginError(None, field_, f"{info.name} {param.name} must be a finite number (got {value!r})",
                          f"give a number in {param.min_value:g}..{param.max_value:g}")
    if param.min_value is not None and not param.min_value <= value <= param.max_value:
        unit = f" {param.label}" if param.label.strip() else ""
        raise PluginError(None, field_, f"{info.name} {param.name} = {value!r} is outside "
                          f"{param.min_value:g}..{param.max_value:g}{unit}", "give a value within the range")


def _validate_vst3(spec: PluginSpec, info: PluginInfo, n_channels: int) -> None:
    where = spec.where or spec.name
    if not info.ok:
        raise PluginError(None, where, f"VST3 plugin {spec.path} does not load: {info.error}",
                          "check the plugin with scan_plugins() or remove it from the chain")
    writable = info.writable_names
    for key, value in spec.params.items():
        param = info.param(key)
        if param is None:
            raise PluginError(None, f"{where}.{key}", f"{info.name} has no parameter {key!r}; "
                              f"{_suggest(key, writable)}", "use one of the valid names")
        if not param.writable:
            raise PluginError(None, f"{where}.{key}",
                              f"{info.name} {key} is a read-only parameter (a meter or host entry); "
                              f"writable: {', '.join(writable)}", "remove it from params")
        _check_vst3_value(spec, info, param, value)
    counts = info.channel_counts
    takes = "/".join(map(str, counts)) or "no tested number of"
    if spec.dual_mono:
        if 1 not in counts:
            raise PluginError(None, where,
                              f"dual_mono needs a mono plugin but {info.name} takes {takes} channels",
                              "set dual_mono = false")
    elif n_channels not in counts:
        if counts == (1,):
            raise PluginError(None, where,
                              f"{info.name} is a mono plugin (1 channel) on a {n_channels}-channel signal",
                              "set dual_mono = true to run one instance per channel")
        raise PluginError(None, where, f"{info.name} takes {takes} channels, the signal has {n_channels}",
                          "use a plugin with a matching channel layout")


def validate_chain(specs: Sequence[PluginSpec], *, sample_rate: float, n_channels: int,
                   timeout_s: float = DESCRIBE_TIMEOUT_S) -> None:
    """Check a chain before any rendering.

    Built-in effects: the class exists in pedalboard and is an effect (not a host class),
    parameter names are its constructor's, values have the right type and pass
    pedalboard's own range checks. VST3 plugins: the bundle exists and loads (in a
    worker, see :func:`describe_plugin`), each parameter exists and is writable, its
    value is within min..max (or one of its strings), and a mono plugin on a
    multi-channel signal has ``dual_mono`` set.

    Parameters
    ----------
    specs : sequence of PluginSpec
        The chain, in processing order.
    sample_rate : float
        Hz; must be within ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``.
    n_channels : int
        Channels of the signal the chain will process.
    timeout_s : float
        Time one VST3 plugin may take to load when it is not cached yet.

    Raises
    ------
    PluginError
        On the first problem, naming the spec's ``where``, the field and the fix.
    """
    _check_sample_rate(sample_rate, specs)
    if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 1:
        raise PluginError(None, "n_channels",
                          f"channel count must be a positive integer (got {n_channels!r})",
                          "pass audio as (channels, samples)")
    for spec in specs:
        where = spec.where or spec.name
        if spec.kind == "builtin":
            _build_builtin(spec)
        elif spec.kind == "vst3":
            if spec.path is None or not Path(spec.path).expanduser().exists():
                raise PluginError(None, where, f"VST3 plugin not found: {spec.path}",
                                  "give the path of an installed .vst3 bundle (see scan_plugins())")
            _validate_vst3(spec, describe_plugin(spec.path, timeout_s=timeout_s), n_channels)
        else:
            raise PluginError(None, where, f"unknown plugin kind {spec.kind!r}", 'use "builtin" or "vst3"')


# --------------------------------------------------------------------------- rendering


def _check_audio(x_CS: Any) -> None:
    if not isinstance(x_CS, np.ndarray) or x_CS.ndim != 2 or x_CS.dtype not in (np.float32, np.float64):
        shape = getattr(x_CS, "shape", None)
        dtype = getattr(x_CS, "dtype", type(x_CS).__name__)
        raise PluginError(None, "audio", f"expected a (channels, samples) float32/float64 array, got shape "
                          f"{shape} dtype {dtype}", "pass audio as a 2-D (channels, samples) array")
    if x_CS.shape[0] < 1 or x_CS.shape[0] > 64 or x_CS.shape[1] < 1:
        raise PluginError(None, "audio", f"audio shape {x_CS.shape} is not (channels, samples) with 1..64 "
                          "channels and at least one sample", "transpose (samples, channels) input")
    if not np.all(np.isfinite(x_CS)):
        raise PluginError(None, "audio", "audio contains NaN or inf", "clean the input")


def _job_names(specs: Sequence[PluginSpec]) -> list[str]:
    return [f"{s.name} ({s.where})" if s.where else s.name for s in specs]


def render_chain(specs: Sequence[PluginSpec], x_CS: np.ndarray, *, sample_rate: float,
                 timeout_s: float = 120.0, tail_samples: int = 0) -> np.ndarray:
    """Render audio through a chain; see :func:`render_chain_with_report` (this drops the report)."""
    return render_chain_with_report(specs, x_CS, sample_rate=sample_rate, timeout_s=timeout_s,
                                    tail_samples=tail_samples)[0]


def render_chain_with_report(specs: Sequence[PluginSpec], x_CS: np.ndarray, *, sample_rate: float,
                             timeout_s: float = 120.0,
                             tail_samples: int = 0) -> tuple[np.ndarray, RenderReport]:
    """Render audio through a chain of built-in effects and VST3 plugins.

    The chain is validated first (:func:`validate_chain`). A chain with any VST3 plugin
    runs in a fresh worker process, which loads every plugin, sets its parameters,
    reads all of them back (after setting every instance and again after rendering)
    and fails when a value differs from the requested one by more than
    :meth:`ParamInfo.readback_tolerance` (continuous: ``READBACK_REL_TOL`` of the span;
    quantised: half a step; strings: exactly). Then it runs
    ``Pedalboard(plugins)(x, sample_rate, reset=True)``, which compensates the
    latency plugins report. Built-in-only chains run in this process.

    Parameters
    ----------
    specs : sequence of PluginSpec
        The chain, in processing order; empty returns the (padded) input.
    x_CS : ndarray, shape (channels, samples), float32 or float64
        The audio; never modified.
    sample_rate : float
        Hz, within ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``.
    timeout_s : float
        Wall-clock limit of a worker job, start-up included; the worker is killed after it.
    tail_samples : int
        Zeros appended before processing so effect tails (reverb, delay) are kept.

    Returns
    -------
    y_CS : ndarray, shape (channels, samples + tail_samples), dtype of ``x_CS``
        Same channel count as the input (a ``dual_mono`` stage keeps the channels).
        pedalboard processes in float32: float64 input comes back as float64 holding
        float32 precision (an empty chain returns the input exactly).
    report : RenderReport
        Timings and the parameter values read back.

    Raises
    ------
    PluginError
        The chain or the arguments are invalid (before any rendering).
    PluginJobError
        The job failed: a plugin raised, the worker crashed or timed out, a parameter
        did not read back as set, or the output holds NaN/inf. The caller's process
        is unaffected and the next job runs normally.
    """
    _check_audio(x_CS)
    if isinstance(tail_samples, bool) or not isinstance(tail_samples, (int, np.integer)) or tail_samples < 0:
        raise PluginError(None, "tail_samples",
                          f"tail_samples must be a non-negative integer (got {tail_samples!r})",
                          "give a number of samples")
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise PluginError(None, "timeout_s", f"timeout_s must be positive (got {timeout_s!r})",
                          "give seconds")
    t0 = time.perf_counter()
    validate_chain(specs, sample_rate=sample_rate, n_channels=x_CS.shape[0])
    x_padded = np.concatenate([x_CS, np.zeros((x_CS.shape[0], int(tail_samples)), dtype=x_CS.dtype)], axis=1)
    if not specs:
        return x_padded, RenderReport(in_worker=False, wall_s=time.perf_counter() - t0)
    names = _job_names(specs)
    if all(spec.kind == "builtin" for spec in specs):
        try:
            t1 = time.perf_counter()
            stages = [_instantiate(spec.to_dict(), x_padded.shape[0], {}) for spec in specs]
            t2 = time.perf_counter()
            y_CS = _run_stages([spec.to_dict() for spec in specs], stages, x_padded, float(sample_rate))
        except Exception as exc:  # noqa: BLE001 - any failure of the effect becomes a job error
            raise PluginJobError(names, _one_line(exc)) from None
        report = RenderReport(in_worker=False, wall_s=time.perf_counter() - t0, load_s=t2 - t1,
                              render_s=time.perf_counter() - t2, readback=tuple(() for _ in specs))
    else:
        y_CS, result = _render_in_worker(specs, x_padded, float(sample_rate), timeout_s=float(timeout_s))
        report = RenderReport(in_worker=True, wall_s=time.perf_counter() - t0, startup_s=result["startup_s"],
                              load_s=result["load_s"], render_s=result["render_s"],
                              readback=tuple(tuple(instances) for instances in result["readback"]))
    if y_CS.shape != x_padded.shape:
        raise PluginJobError(names, f"output shape {y_CS.shape} differs from input {x_padded.shape}")
    if not np.all(np.isfinite(y_CS)):
        raise PluginJobError(names, "output contains NaN or inf (check gains and feedback settings)")
    return y_CS.astype(x_CS.dtype, copy=False), report


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _render_in_worker(specs: Sequence[PluginSpec], x_CS: np.ndarray, sample_rate: float, *,
                      timeout_s: float) -> tuple[np.ndarray, dict[str, Any]]:
    names = _job_names(specs)
    infos = {}
    for spec in specs:
        if spec.kind == "vst3":
            infos[str(spec.path)] = describe_plugin(spec.path).to_dict()
    with tempfile.TemporaryDirectory(prefix="studio-sep-render-") as tmp:
        job = Path(tmp)
        np.save(job / "input.npy", x_CS)
        (job / "job.json").write_text(json.dumps({
            "kind": "render", "specs": [spec.to_dict() for spec in specs], "infos": infos,
            "sample_rate": sample_rate, "started_at": time.time()}))
        proc, stderr = _start_worker(job)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise PluginJobError(names, f"timed out after {timeout_s:g} s (worker killed)") from None
        finally:
            stderr.close()
        result_path = job / "result.json"
        if returncode != 0 or not result_path.exists():
            raise PluginJobError(names, _death_reason(returncode, job / "stderr.txt"))
        result = json.loads(result_path.read_text())
        if not result["ok"]:
            raise PluginJobError(result.get("plugins") or names, result["error"])
        return np.load(job / "output.npy"), result


def _start_worker(job: Path) -> tuple[subprocess.Popen, Any]:
    """Start ``python -c`` on :func:`_worker_main` for the job folder; stderr goes to a file."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    stderr = open(job / "stderr.txt", "wb")  # noqa: SIM115 - closed by the caller
    code = "import sys; from studio_sep.mixing.plugins.host import _worker_main; _worker_main(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(job)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=str(job))
    return proc, stderr


def _death_reason(returncode: int, stderr_path: Path) -> str:
    if returncode < 0:
        try:
            what = signal.Signals(-returncode).name
        except ValueError:
            what = f"signal {-returncode}"
        reason = f"worker crashed ({what})"
    else:
        reason = f"worker exited with status {returncode} without a result"
    last = [line for line in stderr_path.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("DPF warning")] if stderr_path.exists() else []
    return f"{reason}; last message: {last[-1].strip()[:200]}" if last else reason


# --------------------------------------------------------------------------- worker side


def _worker_main(job_dir: str) -> None:
    """Entry point of a worker process (one job, then exit). Not for library use."""
    job = Path(job_dir)
    spec = json.loads((job / "job.json").read_text())
    if spec["kind"] == "describe":
        _worker_describe(spec["paths"], job / "describe.jsonl")
        return
    startup_s = time.time() - spec["started_at"]
    fault = os.environ.get(TEST_FAULT_ENV, "")  # test-only hook, see the module docstring
    if fault == "exit":
        os._exit(3)
    elif fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        time.sleep(3600)
    specs = [PluginSpec.from_dict(d) for d in spec["specs"]]
    try:
        x_CS = np.load(job / "input.npy")
        y_CS, timings = _render_specs(specs, x_CS, spec["sample_rate"],
                                      {k: PluginInfo.from_dict(v) for k, v in spec["infos"].items()},
                                      crosstalk=fault == "crosstalk")
        np.save(job / "output.npy", y_CS)
        result = {"ok": True, "startup_s": startup_s, **timings}
    except _ReadbackError as exc:
        result = {"ok": False, "error": str(exc), "plugins": exc.plugins}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        result = {"ok": False, "error": _one_line(exc)}
    (job / "result.json").write_text(json.dumps(result))


class _ReadbackError(Exception):
    def __init__(self, plugins: list[str], message: str):
        self.plugins = plugins
        super().__init__(message)


class _native_loading:
    """Worker-only: load VST3 plugins without pedalboard's per-parameter probe.

    ``VST3Plugin.__init__`` calls ``__set_initial_parameter_values__``, which builds
    every ``AudioProcessorParameter`` (1001 texts per parameter; minutes for ZamVerb).
    Inside this context that call does nothing; parameters are then used through the
    native ``_parameters`` list only. If pedalboard changes this private hook the
    context does nothing and loading is just slower.
    """

    def __enter__(self):
        from pedalboard import _pedalboard

        self._mixin = getattr(_pedalboard, "_PythonExternalPluginMixin", None)
        self._saved = getattr(self._mixin, "__set_initial_parameter_values__", None)
        if self._saved is not None:
            self._mixin.__set_initial_parameter_values__ = lambda plugin, values: None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self._mixin.__set_initial_parameter_values__ = self._saved


def _load_vst3(path: str):
    import pedalboard

    with _native_loading():
        return pedalboard.VST3Plugin(path)


def _python_name(cpp_param) -> str:
    from pedalboard._pedalboard import to_python_parameter_name

    return to_python_parameter_name(cpp_param) or ""


def _as_float(text: str) -> float | None:
    try:
        value = float(text.strip().split()[0]) if text.strip() else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _describe_param(cpp) -> ParamInfo:
    steps = int(cpp.num_steps)
    low_text, high_text = cpp.get_text_for_raw_value(0.0), cpp.get_text_for_raw_value(1.0)
    low, high = _as_float(low_text), _as_float(high_text)
    default_text = cpp.get_text_for_raw_value(float(cpp.default_raw_value))
    valid_values = None
    if low is None or high is None:
        n = min(steps, _MAX_LISTED_STEPS) if 1 < steps else 2
        texts = [cpp.get_text_for_raw_value(k / (n - 1)) for k in range(n)]
        valid_values = tuple(dict.fromkeys(texts))
        min_value = max_value = None
        default: float | str | None = default_text
    else:
        min_value, max_value = min(low, high), max(low, high)
        default = _as_float(default_text)
    return ParamInfo(name=_python_name(cpp), display_name=cpp.name, label=cpp.label.strip(),
                     min_value=min_value, max_value=max_value, default=default,
                     is_boolean=bool(cpp.is_boolean) or (steps == 2 and valid_values is None),
                     valid_values=valid_values, writable=bool(cpp.is_automatable), num_steps=steps,
                     index=int(cpp.index))


def _describe_one(path: str) -> PluginInfo:
    t0 = time.perf_counter()
    try:
        plugin = _load_vst3(path)
    except Exception as exc:  # noqa: BLE001 - reported as the plugin's error
        return PluginInfo(path=path, error=_one_line(exc), load_s=time.perf_counter() - t0)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    params = tuple(_describe_param(cpp) for cpp in plugin._parameters if cpp.name)
    counts = []
    for n in _PROBE_CHANNELS:
        try:
            plugin.process(np.zeros((n, 64), dtype=np.float32), 44100.0, reset=True)
            counts.append(n)
        except ValueError:
            continue
    return PluginInfo(path=path, name=plugin.name, category=str(getattr(plugin, "category", "")),
                      parameters=params, channel_counts=tuple(counts),
                      latency_samples=int(getattr(plugin, "reported_latency_samples", 0)),
                      load_s=load_s, describe_s=time.perf_counter() - t1)


def _worker_describe(paths: list[str], out: Path) -> None:
    with open(out, "a") as lines:
        for path in paths:
            lines.write(json.dumps({"event": "start", "path": path}) + "\n")
            lines.flush()
            info = _describe_one(path)
            lines.write(json.dumps({"event": "done", "info": info.to_dict()}) + "\n")
            lines.flush()


def _set_vst3_params(plugin, spec: PluginSpec, info: PluginInfo) -> None:
    by_name = {_python_name(cpp): cpp for cpp in plugin._parameters if cpp.name}
    for key, value in spec.params.items():
        param, cpp = info.param(key), by_name[key]
        if param.valid_values is not None:
            n = min(param.num_steps, _MAX_LISTED_STEPS) if param.num_steps > 1 else 2
            raw = next(k / (n - 1) for k in range(n) if cpp.get_text_for_raw_value(k / (n - 1)) == value)
        elif isinstance(value, bool):
            raw = 1.0 if value else 0.0
        else:
            raw = float(cpp.get_raw_value_for_text(repr(float(value))))
            if not 0.0 <= raw <= 1.0:
                raise ValueError(f"{info.name} maps {key} = {value!r} to raw value {raw}")
        cpp.raw_value = raw


def _readback_problems(plugin, spec: PluginSpec, info: PluginInfo, label: str) -> tuple[list[str], dict]:
    by_name = {_python_name(cpp): cpp for cpp in plugin._parameters if cpp.name}
    problems, values = [], {}
    for key, wanted in spec.params.items():
        param, text = info.param(key), by_name[key].string_value
        if param.valid_values is not None:
            got: Any = text
            bad = text != wanted
        elif isinstance(wanted, bool):
            got = by_name[key].raw_value >= 0.5
            bad = got != wanted
        else:
            got = _as_float(text)
            bad = got is None or abs(got - float(wanted)) > param.readback_tolerance()
        values[key] = got
        if bad:
            problems.append(f"{label} {key} set to {wanted!r} reads back {got!r}")
    return problems, values


def _instantiate(spec_dict: dict[str, Any], n_channels: int, infos: dict[str, PluginInfo]) -> list:
    """Instances of one stage: one, or one per channel for dual-mono."""
    spec = PluginSpec.from_dict(spec_dict)
    count = n_channels if spec.dual_mono else 1
    instances = []
    for _ in range(count):
        if spec.kind == "builtin":
            instances.append(_build_builtin(spec))
        else:
            plugin = _load_vst3(str(spec.path))
            _set_vst3_params(plugin, spec, infos[str(spec.path)])
            instances.append(plugin)
    return instances


def _run_stages(spec_dicts: list[dict[str, Any]], stages: list[list], x_CS: np.ndarray,
                sample_rate: float) -> np.ndarray:
    """Run consecutive whole-signal stages as one Pedalboard; a dual-mono stage per channel."""
    import pedalboard

    y = x_CS
    group: list = []
    for spec_dict, instances in zip(spec_dicts, stages):
        if not spec_dict.get("dual_mono"):
            group.append(instances[0])
            continue
        if group:
            y = pedalboard.Pedalboard(group)(y, sample_rate, reset=True)
            group = []
        y = np.concatenate([pedalboard.Pedalboard([inst])(y[c:c + 1], sample_rate, reset=True)
                            for c, inst in enumerate(instances)], axis=0)
    if group:
        y = pedalboard.Pedalboard(group)(y, sample_rate, reset=True)
    return y


def _simulate_crosstalk(specs: list[PluginSpec], stages: list[list]) -> None:
    """Test-only (``crosstalk`` fault): copy the last VST3 instance's raw values into the first one."""
    vst3 = [(spec, inst) for spec, instances in zip(specs, stages) if spec.kind == "vst3"
            for inst in instances]
    if len(vst3) < 2:
        return
    first, last = vst3[0], vst3[-1]
    if first[0].path == last[0].path:
        for cpp_first, cpp_last in zip(first[1]._parameters, last[1]._parameters):
            if cpp_first.is_automatable:
                cpp_first.raw_value = cpp_last.raw_value


def _render_specs(specs: list[PluginSpec], x_CS: np.ndarray, sample_rate: float,
                  infos: dict[str, PluginInfo], *,
                  crosstalk: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Worker side: load, set, read back, render, read back; returns the output and timings."""
    t0 = time.perf_counter()
    spec_dicts = [s.to_dict() for s in specs]
    stages = [_instantiate(d, x_CS.shape[0], infos) for d in spec_dicts]
    if crosstalk:
        _simulate_crosstalk(specs, stages)

    def check(moment: str) -> list[list[dict[str, Any]]]:
        problems, culprits, values = [], [], []
        for spec, instances in zip(specs, stages):
            values.append([])
            if spec.kind != "vst3":
                continue
            for c, plugin in enumerate(instances):
                label = f"{spec.where or spec.name}" + (f"[channel {c}]" if spec.dual_mono else "")
                found, got = _readback_problems(plugin, spec, infos[str(spec.path)], label)
                values[-1].append(got)
                if found:
                    problems += found
                    culprits.append(label)
        if problems:
            raise _ReadbackError(culprits, f"parameter read-back mismatch {moment} ({'; '.join(problems)}); "
                                 "instances of one plugin may be sharing state")
        return values

    check("after setting every instance")
    t1 = time.perf_counter()
    y_CS = _run_stages(spec_dicts, stages, x_CS, sample_rate)
    t2 = time.perf_counter()
    readback = check("after rendering")
    return np.asarray(y_CS), {"load_s": t1 - t0, "render_s": t2 - t1, "readback": readback}
