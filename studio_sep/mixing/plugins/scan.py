"""Describing VST3 plugins: :class:`ParamInfo`, :class:`PluginInfo`, :func:`scan_plugins`,
:func:`describe_plugin` and the per-process cache of their results.

A plugin is loaded and described in a worker process (see :mod:`.workers` and
:mod:`.runtime`), so one that crashes or hangs while loading only marks that bundle
failed. Why parameters are described from a few raw values and not through
pedalboard's ``.parameters``: see :mod:`.runtime`.

Read-only parameters: pedalboard does not expose VST3's ``kIsReadOnly`` flag. A
parameter is treated as writable when the plugin marks it automatable. This rejects
meters (``Gain Reduction``, ``Output Level``) and DPF's host-side entries (``Buffer
Size``, ``Sample Rate``, ``Latency``), but also the few inputs a plugin declares
non-automatable (ZamVerb ``Room``, ZamHeadX2 ``Azimuth``/``Elevation``), and it
accepts meters a plugin wrongly marks automatable (ZaMultiComp ``Gain Reduction 1``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_sep.mixing.plugins.errors import PluginError
from studio_sep.mixing.plugins.workers import death_reason, start_worker

DEFAULT_VST3_DIRS = ("/usr/lib/vst3", "/usr/local/lib/vst3", "~/.vst3")
"""Searched by :func:`scan_plugins`, then each entry of ``$VST3_PATH`` (``os.pathsep``-separated)."""

READBACK_REL_TOL = 1e-4
"""Read-back tolerance of a continuous parameter, as a fraction of its min..max span."""
READBACK_ABS_TOL = 1e-5
"""Added to every read-back tolerance (plugins print values with 6 decimals)."""
DESCRIBE_TIMEOUT_S = 60.0
"""Time one plugin may take to load and be described in a scan worker."""

CONTINUOUS_STEPS = 2**31 - 1  # JUCE's getNumSteps() of a continuous parameter


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
        return 1 < self.num_steps < CONTINUOUS_STEPS

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
        Folders to search (not recursively past ``.vst3`` bundles), or bundles. Default:
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
        if directories is not None and not folder.exists():
            raise PluginError(None, str(folder), "no such folder or .vst3 bundle",
                              "give a folder of VST3 plugins or a .vst3 bundle")
        if folder.suffix == ".vst3":  # a bundle itself (a folder on Linux and macOS, a file on Windows)
            bundles.append(folder)
        elif folder.is_dir():
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
                          "give the path of an installed .vst3 bundle (`studio-sep plugins scan` lists them)")
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
        proc, stderr = start_worker(job)
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
                        failure = death_reason(returncode, job / "stderr.txt")
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

