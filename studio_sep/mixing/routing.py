"""Routing a preset onto a session: command-line fader overrides, each source's resolved
feeds (:class:`RoutedFeed`) and bus (:class:`Route`), and the pan laws.

:func:`resolve_routes` checks the preset against the session (source and mic names,
``@spot`` and ``@position``) and turns it into numbers: mic indices, pans in -1…1 and
delays in samples. :mod:`studio_sep.mixing.render` then renders the routes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from studio_sep.mixing.plugins.builtin import check_builtin_nyquist
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.presets import POSITION, SPOT, Preset, PresetError, SourceMix
from studio_sep.session import Session
from studio_sep.util.errors import InputError

POSITION_PAN_WIDTH = 0.8  #: "@position" puts the outermost source at ±this pan


@dataclass(frozen=True)
class Overrides:
    """Command-line changes to a preset's faders: gain in dB, pan, mute, solo."""

    gain_db: Mapping[str, float] = field(default_factory=dict)
    pan: Mapping[str, float] = field(default_factory=dict)
    mute: frozenset[str] = frozenset()
    unmute: frozenset[str] = frozenset()
    solo: frozenset[str] = frozenset()



@dataclass(frozen=True)
class RoutedFeed:
    """One feed of a source's bus, resolved against the session."""

    mic: int  #: index of the mic in ``session.mics``
    gain_db: float
    pan: float  #: -1 (left) … +1 (right)
    delay_samples: int
    chain: tuple[PluginSpec, ...]


@dataclass(frozen=True)
class Route:
    """A source's resolved routing: feeds with real mic indices and numeric pans."""

    source: str
    feeds: tuple[RoutedFeed, ...]
    chain: tuple[PluginSpec, ...]
    gain_db: float
    pan: float
    audible: bool


def resolve_routes(session: Session, preset: Preset, stem_mics: Mapping[str, str],
                   overrides: Overrides = Overrides(), *, sample_rate: int) -> tuple[Route, ...]:
    """Check the preset against the session and resolve mics, pans and delays."""
    mic_index = {m.name: i for i, m in enumerate(session.mics)}
    names = [s.name for s in session.sources]
    for key in preset.sources:
        if key not in names:
            raise PresetError(preset.path, f"sources.{key}", f"{key!r} is not a source of session {session.name}",
                              f"sources: {', '.join(names)}")
    for kind, table in (("gain", overrides.gain_db), ("pan", overrides.pan)):
        for key in table:
            if key not in names:
                raise InputError(None, f"--{kind}", f"{key!r} is not a source of {session.name}",
                                 f"sources: {', '.join(names)}")
    for kind, group in (("mute", overrides.mute), ("unmute", overrides.unmute), ("solo", overrides.solo)):
        for key in group:
            if key not in names:
                raise InputError(None, f"--{kind}", f"{key!r} is not a source of {session.name}",
                                 f"sources: {', '.join(names)}")
    for key, value in overrides.pan.items():
        if not -1.0 <= value <= 1.0:
            raise InputError(None, "--pan", f"{key}={value} is outside -1…1", "use -1 (left) to 1 (right)")
    ys = [s.position_m[1] for s in session.sources]
    spread = max(abs(y) for y in ys) or 1.0

    def position_pan(source) -> float:
        return -POSITION_PAN_WIDTH * source.position_m[1] / spread  # +y is stage left

    solo = {s.name for s in session.sources if preset.for_source(s.name).solo} | set(overrides.solo)
    routes = []
    for source in session.sources:
        mix: SourceMix = preset.for_source(source.name)
        where = f"sources.{source.name}" if source.name in preset.sources else "defaults"
        feeds = []
        for i, feed in enumerate(mix.feeds):
            mic = stem_mics[source.name] if feed.mic == SPOT else feed.mic
            if mic not in mic_index:
                if feed.optional:
                    continue
                raise PresetError(preset.path, f"{where}.feeds[{i}].mic",
                                  f"{mic!r} is not a mic of session {session.name}",
                                  f"use one of {', '.join(mic_index)} or \"@spot\", or set optional = true")
            pan = position_pan(source) if feed.pan == POSITION else float(feed.pan)
            delay = round(feed.delay_ms * sample_rate / 1000.0)
            feeds.append(RoutedFeed(mic_index[mic], feed.gain_db, pan, delay, mix.chain_of(feed)))
        if not feeds:
            raise PresetError(preset.path, f"{where}.feeds", f"no feed of {source.name!r} exists in this session",
                              "name at least one mic the session has")
        muted = (mix.mute or source.name in overrides.mute) and source.name not in overrides.unmute
        audible = (source.name in solo) if solo else not muted
        pan = overrides.pan.get(source.name, position_pan(source) if mix.pan == POSITION else float(mix.pan))
        routes.append(Route(source.name, tuple(feeds), mix.chain,
                            overrides.gain_db.get(source.name, mix.gain_db), pan, audible))
    for spec in [s for r in routes for c in (r.chain, *(f.chain for f in r.feeds)) for s in c] + list(preset.master):
        if spec.kind == "builtin":
            check_builtin_nyquist(spec, sample_rate)
    return tuple(routes)


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan of a mono signal: (left, right) gains; −3 dB each at 0."""
    theta = (pan + 1.0) * math.pi / 4.0
    return math.cos(theta), math.sin(theta)


def balance_gains(pan: float) -> tuple[float, float]:
    """Balance of a stereo signal: the far side attenuated linearly, unity at 0."""
    return (1.0 - max(pan, 0.0), 1.0 + min(pan, 0.0))
