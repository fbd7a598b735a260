"""Mixing presets: TOML files → typed, validated models.

A preset says how to turn each source's separated images into a stereo bus (which
mic images feed it, with gain, pan, delay and a chain per feed), a chain per source,
a master chain, and the remix's level policy. Plugins are pedalboard's built-in
effects by class name with pedalboard's own parameter names, or external VST3
plugins by path with the plugin's own parameter names. The format is documented in
``docs/presets.md``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_sep.mixing.plugins.builtin import check_builtin_values
from studio_sep.mixing.plugins.spec import ParamValue, PluginSpec
from studio_sep.util.errors import InputError
from studio_sep.util.names import NAME_RULE, name_problem
from studio_sep.util.toml import unknown_key_fix

# --------------------------------------------------------------------------- the preset model

SPOT = "@spot"  #: feed mic placeholder: the source's stem mic (its spot mic)
POSITION = "@position"  #: pan placeholder: from the source's position across the stage
FORMATS = ("pcm24", "pcm16", "float32", "flac")  #: of the remix and DAW stems (pcm16 dithered)
GAIN_DB_MIN, GAIN_DB_MAX = -120.0, 24.0  #: a feed's or a source's gain (and ``mix --gain``), dB


class PresetError(InputError):
    """A mixing preset is invalid."""


@dataclass(frozen=True)
class Feed:
    """One mic image feeding a source's stereo bus."""

    mic: str  #: a mic name, or "@spot"
    gain_db: float = 0.0
    pan: float | str = 0.0  #: -1 (left) … +1 (right), or "@position"
    delay_ms: float = 0.0
    chain: tuple[PluginSpec, ...] = ()
    optional: bool = False  #: skip silently when the session has no such mic
    where: str = ""


@dataclass(frozen=True)
class SourceMix:
    """How one source (or every source, for the defaults) is mixed."""

    feeds: tuple[Feed, ...]
    chain: tuple[PluginSpec, ...] = ()
    gain_db: float = 0.0
    pan: float | str = 0.0  #: balance of the stereo bus, or "@position"
    mute: bool = False
    solo: bool = False
    #: per-mic chain replacing the chain of that feed (e.g. {"@spot": [EQ]}): a band
    #: per instrument without repeating the whole routing
    feed_chains: dict[str, tuple[PluginSpec, ...]] = field(default_factory=dict)

    def chain_of(self, feed: Feed) -> tuple[PluginSpec, ...]:
        return self.feed_chains.get(feed.mic, feed.chain)


@dataclass(frozen=True)
class Preset:
    path: Path
    name: str
    description: str
    defaults: SourceMix
    sources: dict[str, SourceMix]
    master: tuple[PluginSpec, ...] = ()
    tail_s: float = 2.0
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = -1.0
    format: str = "pcm24"

    def for_source(self, name: str) -> SourceMix:
        return self.sources.get(name, self.defaults)


_PRESET_KEYS = ("preset", "defaults", "sources", "master")
_HEAD_KEYS = ("name", "description", "tail_s", "loudness_lufs", "true_peak_dbtp", "format")
_MIX_KEYS = ("feeds", "chain", "gain_db", "pan", "mute", "solo", "feed_chains")
_FEED_KEYS = ("mic", "gain_db", "pan", "delay_ms", "chain", "optional")


def load_preset(path: str | os.PathLike) -> Preset:
    """Load and check the structure of a preset (plugins are checked by the plugin host).

    Raises
    ------
    PresetError
        On the first problem, naming the file, the field and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise PresetError(path, None, "preset not found", "give a .toml preset path (see `studio-sep presets`)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(path, None, f"not valid TOML ({exc})", "fix the syntax at that line") from None
    r = _Reader(path)
    r.keys(data, "", _PRESET_KEYS)
    head = r.table(data.get("preset", {}), "preset", _HEAD_KEYS)
    name = head.get("name", path.stem)
    if not isinstance(name, str):
        raise r.error("preset.name", f"must be a string, got {name!r}", NAME_RULE)
    problem = name_problem(name)
    if problem is not None:  # the name makes file names: daw/<name>/, remix/<name>.wav
        raise r.error("preset.name", problem + ("" if "name" in head else " (taken from the file name)"),
                      NAME_RULE + ("" if "name" in head else "; or set name = \"...\" under [preset]"))
    description = head.get("description", "")
    tail_s = r.number(head.get("tail_s", 2.0), "preset.tail_s", low=0.0, high=60.0)
    loudness = head.get("loudness_lufs")
    if loudness is not None:
        loudness = r.number(loudness, "preset.loudness_lufs", low=-70.0, high=0.0)
    true_peak = head.get("true_peak_dbtp", -1.0)
    if true_peak is not None and true_peak != "none":
        true_peak = r.number(true_peak, "preset.true_peak_dbtp", low=-20.0, high=0.0)
    else:
        true_peak = None
    fmt = head.get("format", "pcm24")
    if fmt not in FORMATS:
        raise r.error("preset.format", f"{fmt!r} is not one of {', '.join(FORMATS)}", "pick one of those")
    if "defaults" not in data and "sources" not in data:
        raise r.error("defaults", "the preset routes no mic to any source",
                      "add a [defaults] table with feeds = [{ mic = \"@spot\" }] (see docs/presets.md)")
    defaults = r.source_mix(data.get("defaults", {"feeds": [{"mic": SPOT}]}), "defaults")
    sources = {key: r.source_mix(value, f"sources.{key}", inherit=defaults)
               for key, value in r.table(data.get("sources", {}), "sources", None).items()}
    master = r.chain(r.table(data.get("master", {}), "master", ("chain",)).get("chain", []), "master.chain")
    return Preset(path=path.resolve(), name=name, description=str(description), defaults=defaults, sources=sources,
                  master=master, tail_s=tail_s, loudness_lufs=loudness, true_peak_dbtp=true_peak, format=fmt)


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def error(self, field_name: str | None, problem: str, fix: str | None = None) -> PresetError:
        return PresetError(self.path, field_name, problem, fix)

    def keys(self, data: dict, where: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                raise self.error(f"{where}.{key}" if where else key, "unknown key", unknown_key_fix(key, allowed))

    def table(self, data: Any, where: str, allowed: tuple[str, ...] | None) -> dict:
        if not isinstance(data, dict):
            raise self.error(where, f"must be a table, got {type(data).__name__}")
        if allowed is not None:
            self.keys(data, where, allowed)
        return data

    def number(self, value: Any, where: str, *, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(where, f"must be a number, got {value!r}")
        if not low <= value <= high:
            raise self.error(where, f"{value} is outside {low:g}…{high:g}", f"use a value between {low:g} and {high:g}")
        return float(value)

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, got {value!r}")
        return value

    def pan(self, value: Any, where: str) -> float | str:
        if value == POSITION:
            return POSITION
        return self.number(value, where, low=-1.0, high=1.0)

    def chain(self, value: Any, where: str) -> tuple[PluginSpec, ...]:
        if not isinstance(value, list):
            raise self.error(where, "must be a list of plugins", "write chain = [{ plugin = \"HighpassFilter\", ... }]")
        return tuple(self.plugin(entry, f"{where}[{i}]") for i, entry in enumerate(value))

    def plugin(self, entry: Any, where: str) -> PluginSpec:
        entry = self.table(entry, where, None)
        located = f"{self.path}: {where}"
        if ("plugin" in entry) == ("vst3" in entry):
            raise self.error(where, "needs exactly one of plugin = \"<pedalboard class>\" or vst3 = \"<path>\"")
        if "plugin" in entry:
            name = entry["plugin"]
            if not isinstance(name, str):
                raise self.error(f"{where}.plugin", f"must be a class name, got {name!r}")
            params = {k: v for k, v in entry.items() if k not in ("plugin", "dual_mono")}
            if "params" in params and isinstance(params["params"], dict):
                params = params.pop("params") | params
            spec = PluginSpec("builtin", name, self._params(params, where), None,
                              self.boolean(entry.get("dual_mono", False), f"{where}.dual_mono"), located)
            check_builtin_values(spec)
            return spec
        self.keys(entry, where, ("vst3", "params", "dual_mono", "name"))
        raw = entry["vst3"]
        if not isinstance(raw, str) or not raw:
            raise self.error(f"{where}.vst3", f"must be a path to a .vst3 bundle, got {raw!r}")
        vst_path = Path(os.path.expanduser(raw))
        if not vst_path.is_absolute():
            vst_path = (self.path.parent / vst_path).resolve()
        if not vst_path.exists():
            raise self.error(f"{where}.vst3", f"{raw} not found",
                             "install the plugin (e.g. apt-get install zam-plugins) or fix the path; "
                             "`studio-sep plugins scan` lists installed ones")
        params = self._params(self.table(entry.get("params", {}), f"{where}.params", None), where)
        return PluginSpec("vst3", str(entry.get("name", vst_path.stem)), params, vst_path,
                          self.boolean(entry.get("dual_mono", False), f"{where}.dual_mono"), located)

    def _params(self, params: dict, where: str) -> dict[str, ParamValue]:
        for key, value in params.items():
            if not isinstance(value, (bool, int, float, str)):
                raise self.error(f"{where}.{key}", f"must be a number, true/false or a string, got {value!r}")
        return dict(params)

    def source_mix(self, data: Any, where: str, inherit: SourceMix | None = None) -> SourceMix:
        data = self.table(data, where, _MIX_KEYS)
        if "feeds" in data:
            if not isinstance(data["feeds"], list) or not data["feeds"]:
                raise self.error(f"{where}.feeds", "must be a non-empty list of feeds",
                                 "write feeds = [{ mic = \"@spot\" }]")
            feeds = tuple(self.feed(f, f"{where}.feeds[{i}]") for i, f in enumerate(data["feeds"]))
        elif inherit is not None:
            feeds = inherit.feeds
        else:
            raise self.error(f"{where}.feeds", "missing", "add feeds = [{ mic = \"@spot\" }]")
        base = inherit or SourceMix(feeds=feeds)
        return SourceMix(
            feeds=feeds,
            chain=self.chain(data["chain"], f"{where}.chain") if "chain" in data else base.chain,
            gain_db=self.number(data.get("gain_db", base.gain_db), f"{where}.gain_db", low=GAIN_DB_MIN,
                                high=GAIN_DB_MAX),
            pan=self.pan(data.get("pan", base.pan), f"{where}.pan"),
            mute=self.boolean(data.get("mute", base.mute), f"{where}.mute"),
            solo=self.boolean(data.get("solo", base.solo), f"{where}.solo"),
            feed_chains={mic: self.chain(chain, f"{where}.feed_chains.{mic}")
                         for mic, chain in self.table(data.get("feed_chains", {}), f"{where}.feed_chains",
                                                      None).items()} or dict(base.feed_chains),
        )

    def feed(self, data: Any, where: str) -> Feed:
        data = self.table(data, where, _FEED_KEYS)
        if "mic" not in data or not isinstance(data["mic"], str):
            raise self.error(f"{where}.mic", "missing", "name a mic of the session, or \"@spot\"")
        return Feed(
            mic=data["mic"],
            gain_db=self.number(data.get("gain_db", 0.0), f"{where}.gain_db", low=GAIN_DB_MIN, high=GAIN_DB_MAX),
            pan=self.pan(data.get("pan", 0.0), f"{where}.pan"),
            delay_ms=self.number(data.get("delay_ms", 0.0), f"{where}.delay_ms", low=0.0, high=1000.0),
            chain=self.chain(data.get("chain", []), f"{where}.chain"),
            optional=self.boolean(data.get("optional", False), f"{where}.optional"),
            where=f"{self.path}: {where}",
        )


def check_unique_preset_names(paths: Sequence[str | os.PathLike]) -> None:
    """Two presets of one run with one name would write the same remix and DAW folder
    (``remix/<name>.wav``, ``daw/<name>/``): refuse up front. The same file twice is fine."""
    seen: dict[str, Path] = {}
    for path in paths:
        preset = load_preset(path)
        other = seen.setdefault(preset.name, preset.path)
        if other != preset.path:
            raise PresetError(preset.path, "preset.name", f"{preset.name!r} is also the name of preset {other}; "
                              f"both would write remix/{preset.name}.wav and daw/{preset.name}/",
                              "give every preset of a run its own name")


def list_presets(folder: str | os.PathLike) -> list[Preset]:
    """Every loadable preset in a folder, by name."""
    return sorted((load_preset(p) for p in Path(folder).glob("*.toml")), key=lambda p: p.name)
