"""Checking a preset's plugin chains before anything is rendered: every chain, with the
channel count it will process (feeds are mono, source buses and the master stereo)."""

from __future__ import annotations

from studio_sep.mixing.plugins.host import validate_chain
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.presets import Preset
from studio_sep.mixing.routing import Route

Chain = tuple[PluginSpec, ...]


def preset_chains(preset: Preset, routes: tuple[Route, ...] | None = None) -> list[tuple[Chain, int]]:
    """Every chain of a preset with its channel count, in checking order.

    With ``routes`` (from :func:`~studio_sep.mixing.routing.resolve_routes`): the chains
    a mix of that session renders (each routed feed's chain, each source's bus chain,
    the master). Without: every chain the preset holds, for any session (each feed's
    chain of the defaults and of every source, every per-mic ``feed_chains`` entry,
    the master and every source's bus chain).
    """
    if routes is not None:
        return ([(feed.chain, 1) for r in routes for feed in r.feeds] + [(r.chain, 2) for r in routes]
                + [(preset.master, 2)])
    mono, stereo = [], [preset.master]
    for mix in (preset.defaults, *preset.sources.values()):
        mono += [mix.chain_of(feed) for feed in mix.feeds] + list(mix.feed_chains.values())
        stereo.append(mix.chain)
    return [(c, 1) for c in mono] + [(c, 2) for c in stereo]


def check_preset(preset: Preset, *, sample_rate: int, routes: tuple[Route, ...] | None = None) -> None:
    """Validate every chain of :func:`preset_chains` (plugins, parameters, channel layouts).

    Raises
    ------
    PluginError
        On the first invalid chain.
    """
    for chain, n_channels in preset_chains(preset, routes):
        if chain:
            validate_chain(list(chain), sample_rate=sample_rate, n_channels=n_channels)
