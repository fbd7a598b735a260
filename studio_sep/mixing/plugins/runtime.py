"""Plugin instances: load, describe, set, read back and render; the worker's entry point.

This code runs inside a worker process (:func:`worker_main`, one job, then exit) for
every chain with a VST3 plugin and for describing plugins; chains of built-in effects
use :func:`instantiate` and :func:`run_stages` in the caller's process.

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
wrapper, so the first ``.parameters`` access probes again; for ZamVerb that takes
minutes. The worker loads plugins with the probe switched off (a worker-only patch,
see :class:`_native_loading`), describes a parameter from its texts at raw 0, 1 and its
default (all steps of a string-valued one), and sets values with the plugin's own
text→value parser, so only the parameters a spec names are touched. pedalboard is
imported inside the job, so a worker starts with the interpreter and numpy only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from studio_sep.mixing.plugins.builtin import build_builtin
from studio_sep.mixing.plugins.errors import one_line
from studio_sep.mixing.plugins.scan import ParamInfo, PluginInfo
from studio_sep.mixing.plugins.spec import PluginSpec

_MAX_LISTED_STEPS = 128        # enumerate the texts of a discrete parameter up to this many steps
_PROBE_CHANNELS = (1, 2)       # channel counts tried when describing a plugin


def worker_main(job_dir: str) -> None:
    """Entry point of a worker process (one job, then exit). Not for library use."""
    job = Path(job_dir)
    spec = json.loads((job / "job.json").read_text())
    if spec["kind"] == "describe":
        _worker_describe(spec["paths"], job / "describe.jsonl")
        return
    if spec["kind"] == "stream":
        _worker_stream(job, spec)
        return
    startup_s = time.time() - spec["started_at"]
    specs = [PluginSpec.from_dict(d) for d in spec["specs"]]
    try:
        x_CS = np.load(job / "input.npy")
        y_CS, timings = _render_specs(specs, x_CS, spec["sample_rate"],
                                      {k: PluginInfo.from_dict(v) for k, v in spec["infos"].items()})
        np.save(job / "output.npy", y_CS)
        result = {"ok": True, "startup_s": startup_s, **timings}
    except _ReadbackError as exc:
        result = {"ok": False, "error": str(exc), "plugins": exc.plugins}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        result = {"ok": False, "error": one_line(exc)}
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
        return PluginInfo(path=path, error=one_line(exc), load_s=time.perf_counter() - t0)
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


def instantiate(spec_dict: dict[str, Any], n_channels: int, infos: dict[str, PluginInfo]) -> list:
    """Instances of one stage: one, or one per channel for dual-mono."""
    spec = PluginSpec.from_dict(spec_dict)
    count = n_channels if spec.dual_mono else 1
    instances = []
    for _ in range(count):
        if spec.kind == "builtin":
            instances.append(build_builtin(spec))
        else:
            plugin = _load_vst3(str(spec.path))
            _set_vst3_params(plugin, spec, infos[str(spec.path)])
            instances.append(plugin)
    return instances


def run_stages(spec_dicts: list[dict[str, Any]], stages: list[list], x_CS: np.ndarray,
               sample_rate: float) -> np.ndarray:
    """Run consecutive whole-signal stages as one Pedalboard; a dual-mono stage per channel."""
    y = x_CS
    for board in stage_boards(spec_dicts, stages):
        if isinstance(board, list):
            y = np.concatenate([b(y[c:c + 1], sample_rate, reset=True) for c, b in enumerate(board)], axis=0)
        else:
            y = board(y, sample_rate, reset=True)
    return y


def stage_boards(spec_dicts: list[dict[str, Any]], stages: list[list]) -> list:
    """The stages as they run: consecutive ordinary stages as one Pedalboard; a dual-mono
    stage as a list of one Pedalboard per channel."""
    import pedalboard

    boards: list = []
    group: list = []
    for spec_dict, instances in zip(spec_dicts, stages):
        if not spec_dict.get("dual_mono"):
            group.append(instances[0])
            continue
        if group:
            boards.append(pedalboard.Pedalboard(group))
            group = []
        boards.append([pedalboard.Pedalboard([inst]) for inst in instances])
    if group:
        boards.append(pedalboard.Pedalboard(group))
    return boards


class StageStream:
    """Instantiated stages (:func:`instantiate`) rendering a signal block by block, the
    plugins' state kept across blocks (``Pedalboard.process(..., reset=False)``).

    ``push(x_CB)`` gives what came out (fewer samples while a plugin's latency fills);
    ``finish()`` feeds zeros until as many samples came out as went in and gives the
    rest, aligned as one whole-signal render (``reset=True``) aligns them. Blocks of a
    multiple of pedalboard's buffer size (8192) meet the plugins in the same pieces as a
    whole-signal render. Used in this process for built-in chains and in a stream worker
    for chains with VST3 plugins; raises what the plugins raise.
    """

    MAX_FLUSHES = 64

    def __init__(self, spec_dicts: list[dict[str, Any]], stages: list[list], sample_rate: float, n_channels: int):
        self._sample_rate, self._n_channels = float(sample_rate), n_channels
        self.n_in = self.n_out = 0
        for instances in stages:  # as a whole-signal render starts (reset=True): VST3s set up their latency here
            for instance in instances:
                instance.reset()
        self._boards = stage_boards(spec_dicts, stages)

    def _process(self, x_CB: np.ndarray) -> np.ndarray:
        y = x_CB
        for board in self._boards:
            if y.shape[1] == 0:
                break
            if isinstance(board, list):
                y = np.concatenate([b(y[c:c + 1], self._sample_rate, reset=False) for c, b in enumerate(board)])
            else:
                y = board(y, self._sample_rate, reset=False)
        y = np.asarray(y, dtype=np.float64)
        self.n_out += y.shape[1]
        return y

    def push(self, x_CB: np.ndarray) -> np.ndarray:
        self.n_in += x_CB.shape[1]
        return self._process(x_CB) if x_CB.shape[1] else np.zeros((self._n_channels, 0))

    def finish(self) -> np.ndarray:
        rest = [np.zeros((self._n_channels, 0))]
        for _ in range(self.MAX_FLUSHES):
            missing = self.n_in - self.n_out
            if missing <= 0:
                break
            rest.append(self._process(np.zeros((self._n_channels, missing)))[:, :missing])
        if self.n_out < self.n_in:
            raise RuntimeError(f"the chain's latency was not flushed ({self.n_out} of {self.n_in} samples came out)")
        return np.concatenate(rest, axis=1)


def _worker_stream(job: Path, spec: dict[str, Any]) -> None:
    """A stream worker: load and set the chain, then answer each block read from stdin
    (``<q`` sample count, then ``(channels, count)`` float64; a count of -1 ends the
    signal) with what came out (same framing), until the end; ``result.json`` says how
    it ended. The protocol keeps the process's original stdout; fd 1 then points at
    stderr, so a plugin that prints cannot corrupt it."""
    import os
    import struct
    import sys

    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    startup_s = time.time() - spec["started_at"]
    specs = [PluginSpec.from_dict(d) for d in spec["specs"]]
    infos = {k: PluginInfo.from_dict(v) for k, v in spec["infos"].items()}
    C = spec["n_channels"]
    stdin = sys.stdin.buffer

    def send(y: np.ndarray) -> None:
        protocol.write(struct.pack("<q", y.shape[1]) + np.ascontiguousarray(y, dtype="<f8").tobytes())
        protocol.flush()

    def receive(n_bytes: int) -> bytes:
        data = stdin.read(n_bytes)
        if len(data) != n_bytes:
            raise EOFError("the parent closed the stream")
        return data

    try:
        spec_dicts = [s.to_dict() for s in specs]
        stages = _instantiate_chain(spec_dicts, C, infos)
        _check_readback(specs, stages, infos, "after setting every instance")
        stream = StageStream(spec_dicts, stages, spec["sample_rate"], C)
        send(np.zeros((C, 0)))  # ready
        while (n := struct.unpack("<q", receive(8))[0]) >= 0:
            send(stream.push(np.frombuffer(receive(8 * C * n), dtype="<f8").reshape(C, n)))
        rest = stream.finish()
        readback = _check_readback(specs, stages, infos, "after rendering")
        (job / "result.json").write_text(json.dumps({"ok": True, "startup_s": startup_s, "readback": readback}))
        send(rest)
    except _ReadbackError as exc:
        (job / "result.json").write_text(json.dumps({"ok": False, "error": str(exc), "plugins": exc.plugins}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        (job / "result.json").write_text(json.dumps({"ok": False, "error": one_line(exc)}))
    protocol.close()


def _instantiate_chain(spec_dicts: list[dict[str, Any]], n_channels: int,
                       infos: dict[str, PluginInfo]) -> list[list]:
    """Every stage's instances, in chain order (all are made before any is read back)."""
    return [instantiate(d, n_channels, infos) for d in spec_dicts]


def _render_specs(specs: list[PluginSpec], x_CS: np.ndarray, sample_rate: float,
                  infos: dict[str, PluginInfo]) -> tuple[np.ndarray, dict[str, Any]]:
    """Worker side: load, set, read back, render, read back; returns the output and timings."""
    t0 = time.perf_counter()
    spec_dicts = [s.to_dict() for s in specs]
    stages = _instantiate_chain(spec_dicts, x_CS.shape[0], infos)
    _check_readback(specs, stages, infos, "after setting every instance")
    t1 = time.perf_counter()
    y_CS = run_stages(spec_dicts, stages, x_CS, sample_rate)
    t2 = time.perf_counter()
    readback = _check_readback(specs, stages, infos, "after rendering")
    return np.asarray(y_CS), {"load_s": t1 - t0, "render_s": t2 - t1, "readback": readback}


def _check_readback(specs: list[PluginSpec], stages: list[list], infos: dict[str, PluginInfo],
                    moment: str) -> list[list[dict[str, Any]]]:
    """Every VST3 instance's parameters read back; a mismatch raises :class:`_ReadbackError`."""
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
