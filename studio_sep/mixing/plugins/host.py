"""The plugin host bridge: validate and render chains of pedalboard effects and VST3 plugins.

This module is the public API (:func:`validate_chain`, :func:`render_chain`,
:func:`render_chain_with_report`, :class:`RenderReport`, the errors, and the scanning
names re-exported from :mod:`.scan`). External VST3 plugins run in a fresh worker
process per job (:mod:`.workers` starts it, :mod:`.runtime` runs in it), so a plugin
that crashes, hangs or misbehaves fails that job with a :class:`PluginJobError` and
never the caller. Chains of pedalboard's built-in effects only run in-process.

Conventions: audio arrays are ``(channels, samples)`` (``x_CS``), float32 or float64,
as in pedalboard. A chain never changes the channel count: stereo in → stereo out; a
``dual_mono`` plugin runs one instance per channel and keeps the channels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio_sep.mixing.plugins.builtin import build_builtin, suggest
from studio_sep.mixing.plugins.errors import PluginError, PluginJobError, one_line
from studio_sep.mixing.plugins.runtime import StageStream, instantiate, run_stages
from studio_sep.mixing.plugins.scan import (
    DEFAULT_VST3_DIRS,
    DESCRIBE_TIMEOUT_S,
    ParamInfo,
    PluginInfo,
    clear_plugin_cache,
    describe_plugin,
    scan_plugins,
)
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.plugins.workers import StreamWorker, render_in_worker

__all__ = [
    "PluginError", "PluginJobError", "ParamInfo", "PluginInfo", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE",
    "DEFAULT_VST3_DIRS", "RenderReport", "scan_plugins", "describe_plugin", "clear_plugin_cache",
    "validate_chain", "render_chain", "render_chain_with_report", "ChainStream", "open_chain_stream",
]

MIN_SAMPLE_RATE = 8000.0
"""Lowest sample rate any chain accepts (pedalboard's ``Reverb`` kills the process at 0 or 1 Hz)."""
MAX_SAMPLE_RATE = 384000.0


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
        From starting the worker process to its entry point (interpreter, numpy, the
        plugin host's modules); 0 in-process.
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

# --------------------------------------------------------------------------- validation


def _check_sample_rate(sample_rate: float, specs: Sequence[PluginSpec] = ()) -> None:
    """Refuse rates pedalboard cannot run (``Reverb`` at 0 or 1 Hz kills the process)."""
    if (not isinstance(sample_rate, (int, float)) or isinstance(sample_rate, bool)
            or not math.isfinite(sample_rate) or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        chain = ", ".join(_job_names(specs))
        problem = f"sample rate {sample_rate!r} Hz is outside {MIN_SAMPLE_RATE:g}..{MAX_SAMPLE_RATE:g} Hz"
        problem += f" for chain [{chain}]" if chain else ""
        raise PluginError(None, "sample_rate", problem, "give the audio's real sample rate in Hz")



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
                          f"run `studio-sep plugins scan {spec.path}` to see whether it loads on its own; "
                          "reinstall it or remove it from the chain")
    writable = info.writable_names
    for key, value in spec.params.items():
        param = info.param(key)
        if param is None:
            raise PluginError(None, f"{where}.{key}", f"{info.name} has no parameter {key!r}; "
                              f"{suggest(key, writable)}", "use one of the valid names")
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
            build_builtin(spec)
        elif spec.kind == "vst3":
            if spec.path is None or not Path(spec.path).expanduser().exists():
                raise PluginError(None, where, f"VST3 plugin not found: {spec.path}",
                                  "give the path of an installed .vst3 bundle "
                                  "(`studio-sep plugins scan` lists them)")
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
            stages = [instantiate(spec.to_dict(), x_padded.shape[0], {}) for spec in specs]
            t2 = time.perf_counter()
            y_CS = run_stages([spec.to_dict() for spec in specs], stages, x_padded, float(sample_rate))
        except Exception as exc:  # noqa: BLE001 - any failure of the effect becomes a job error
            raise PluginJobError(names, one_line(exc)) from None
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



class ChainStream:
    """A chain rendering a signal block by block (made by :func:`open_chain_stream`).

    ``push(x_CB)`` gives the output so far, which may be shorter than the block while
    a plugin's latency fills; ``finish()`` gives the rest, so that all outputs together
    have as many samples as all blocks, aligned as :func:`render_chain` aligns them.
    """

    def push(self, x_CB: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def finish(self) -> np.ndarray:
        raise NotImplementedError


class _CheckedChainStream(ChainStream):
    """A stream's blocks checked as :func:`render_chain` checks its output (finite), its
    failures as :class:`PluginJobError`."""

    def __init__(self, stream, names: list[str]):
        self._stream, self._names = stream, names

    def _checked(self, step) -> np.ndarray:
        try:
            y = step()
        except PluginJobError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the effect becomes a job error
            raise PluginJobError(self._names, one_line(exc)) from None
        if not np.all(np.isfinite(y)):
            raise PluginJobError(self._names, "output contains NaN or inf (check gains and feedback settings)")
        return y

    def push(self, x_CB: np.ndarray) -> np.ndarray:
        return self._checked(lambda: self._stream.push(x_CB))

    def finish(self) -> np.ndarray:
        return self._checked(self._stream.finish)


class _WholeSignalChainStream(ChainStream):
    """A chain with an effect that does not stream: the blocks are gathered and rendered
    as one job (:func:`render_chain`) when the signal ends, so this chain's input and
    output are whole-signal in memory."""

    def __init__(self, specs: Sequence[PluginSpec], sample_rate: float, n_channels: int):
        self._specs, self._sample_rate = list(specs), sample_rate
        self._blocks = [np.zeros((n_channels, 0))]

    def push(self, x_CB: np.ndarray) -> np.ndarray:
        self._blocks.append(np.array(x_CB, dtype=np.float64))
        return x_CB[:, :0]

    def finish(self) -> np.ndarray:
        x_CS = np.concatenate(self._blocks, axis=1)
        self._blocks = []
        return render_chain(self._specs, x_CS, sample_rate=self._sample_rate)


def open_chain_stream(specs: Sequence[PluginSpec], *, sample_rate: float, n_channels: int,
                      timeout_s: float = 120.0) -> ChainStream:
    """A :class:`ChainStream` for a chain, validated first (:func:`validate_chain`).

    Built-in-only chains stream in this process, chains with a VST3 plugin in one worker
    process (:class:`~studio_sep.mixing.plugins.workers.StreamWorker`; ``timeout_s`` per
    block), the plugins' state kept across blocks; a chain holding one of
    :data:`_WHOLE_SIGNAL_BUILTINS` is rendered whole when the stream ends.
    """
    validate_chain(specs, sample_rate=sample_rate, n_channels=n_channels)
    if any(spec.kind == "builtin" and spec.name in _WHOLE_SIGNAL_BUILTINS for spec in specs):
        return _WholeSignalChainStream(specs, sample_rate, n_channels)
    names = _job_names(specs)
    if all(spec.kind == "builtin" for spec in specs):
        spec_dicts = [spec.to_dict() for spec in specs]
        try:
            stages = [instantiate(d, n_channels, {}) for d in spec_dicts]
        except Exception as exc:  # noqa: BLE001 - as in render_chain_with_report
            raise PluginJobError(names, one_line(exc)) from None
        return _CheckedChainStream(StageStream(spec_dicts, stages, float(sample_rate), n_channels), names)
    infos = {str(spec.path): describe_plugin(spec.path).to_dict() for spec in specs if spec.kind == "vst3"}
    return _CheckedChainStream(StreamWorker(specs, float(sample_rate), n_channels, infos=infos, names=names,
                                            timeout_s=float(timeout_s)), names)


#: Built-in effects whose output, block by block with ``reset=False``, differed from one
#: whole-signal render (pedalboard 0.9.26, 5.6 s of noise in blocks of 8192 and 16384
#: samples: up to 0.10 for GSMFullRateCompressor, 0.38 for PitchShift; every other
#: built-in effect, MP3Compressor's latency included, gave the same samples). Chains
#: holding one are rendered whole.
_WHOLE_SIGNAL_BUILTINS = frozenset({"GSMFullRateCompressor", "PitchShift"})


def _render_in_worker(specs: Sequence[PluginSpec], x_CS: np.ndarray, sample_rate: float, *,
                      timeout_s: float) -> tuple[np.ndarray, dict[str, Any]]:
    names = _job_names(specs)
    infos = {}
    for spec in specs:
        if spec.kind == "vst3":
            infos[str(spec.path)] = describe_plugin(spec.path).to_dict()
    return render_in_worker(specs, x_CS, sample_rate, infos=infos, names=names, timeout_s=timeout_s)
