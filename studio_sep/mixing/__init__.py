"""The mixing stage: presets (:mod:`.presets`), routing them onto a session (:mod:`.routing`),
checking their plugin chains (:mod:`.check`), rendering stems and the remix (:mod:`.render`),
and the plugin host (:mod:`.plugins`).

Every name here is light to import: pedalboard, scipy and pyloudnorm are imported
inside the functions that use them.
"""

from studio_sep.mixing.check import check_preset, preset_chains
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.presets import Feed, Preset, PresetError, SourceMix, list_presets, load_preset
from studio_sep.mixing.render import (
    MixResult,
    clip_for_format,
    measure_loudness,
    measure_true_peak,
    mix,
    normalise,
)
from studio_sep.mixing.routing import (
    Overrides,
    Route,
    RoutedFeed,
    balance_gains,
    pan_gains,
    resolve_routes,
)

__all__ = ["Feed", "MixResult", "Overrides", "PluginSpec", "Preset", "PresetError", "Route", "RoutedFeed",
           "SourceMix", "balance_gains", "check_preset", "clip_for_format", "list_presets", "load_preset",
           "measure_loudness", "measure_true_peak", "mix", "normalise", "pan_gains", "preset_chains",
           "resolve_routes"]
