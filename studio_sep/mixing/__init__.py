"""The mixing stage: presets (:mod:`.presets`), routing them onto a session (:mod:`.routing`),
checking their plugin chains (:mod:`.check`), rendering stems and the remix whole
(:mod:`.render`, the reference) or block by block (:mod:`.stream`, with the level meters of
:mod:`.meters`; what the mix stage uses), and the plugin host (:mod:`.plugins`).

Every name here is light to import: pedalboard, scipy and pyloudnorm are imported
inside the functions that use them.
"""

from studio_sep.mixing.check import check_preset, preset_chains
from studio_sep.mixing.meters import LoudnessMeter, TruePeakMeter
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.presets import Feed, Preset, PresetError, SourceMix, list_presets, load_preset
from studio_sep.mixing.render import (
    Clipper,
    MixResult,
    clip_for_format,
    level_gain,
    measure_loudness,
    measure_true_peak,
    mix,
    mix_length,
    mix_report,
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
from studio_sep.mixing.stream import BLOCK_SAMPLES, mix_blocks

__all__ = ["BLOCK_SAMPLES", "Clipper", "Feed", "LoudnessMeter", "MixResult", "Overrides", "PluginSpec", "Preset",
           "PresetError", "Route", "RoutedFeed", "SourceMix", "TruePeakMeter", "balance_gains", "check_preset",
           "clip_for_format", "level_gain", "list_presets", "load_preset", "measure_loudness", "measure_true_peak",
           "mix", "mix_blocks", "mix_length", "mix_report", "normalise", "pan_gains", "preset_chains",
           "resolve_routes"]
