"""The names this module path has always offered, re-exported from where they live now:
:mod:`studio_sep.sim.trio`, :mod:`studio_sep.sim.room`, :mod:`studio_sep.data.compose`,
:mod:`studio_sep.io.synth`. Import from those (or from :mod:`studio_sep.sim`) instead."""

from studio_sep.data.compose import REFERENCE_SEED_OFFSET, compose_parts, compose_reference_parts
from studio_sep.data.instruments import INSTRUMENTS, InstrumentSpec
from studio_sep.dsp.geometry import aim_angles
from studio_sep.io.synth import SOUNDFONT_CANDIDATES, find_soundfont, render_midi, render_parts
from studio_sep.sim.room import (
    DEFAULT_DIMENSIONS_M,
    DEFAULT_RT60_S,
    IMAGE_BLOCK_SAMPLES,
    MIC_PATTERN_P,
    RoomCalibration,
    calibrate_room,
    image_blocks,
    measure_room_rt60,
    render_images,
)
from studio_sep.sim.trio import (
    DEFAULT_ORIGIN_M,
    IRCAM_TRIO_MICS,
    IRCAM_TRIO_SOURCES,
    PROCESSING_SAMPLE_RATE,
    SESSION_DESCRIPTION,
    SESSION_NAME,
    MicSpec,
    SimulationResult,
    SimulationSettings,
    SourceSpec,
    ircam_trio_geometry,
    reference_session,
    simulate_session,
)

__all__ = [
    "DEFAULT_DIMENSIONS_M",
    "DEFAULT_ORIGIN_M",
    "DEFAULT_RT60_S",
    "IMAGE_BLOCK_SAMPLES",
    "INSTRUMENTS",
    "IRCAM_TRIO_MICS",
    "IRCAM_TRIO_SOURCES",
    "MIC_PATTERN_P",
    "PROCESSING_SAMPLE_RATE",
    "REFERENCE_SEED_OFFSET",
    "SESSION_DESCRIPTION",
    "SESSION_NAME",
    "SOUNDFONT_CANDIDATES",
    "InstrumentSpec",
    "MicSpec",
    "RoomCalibration",
    "SimulationResult",
    "SimulationSettings",
    "SourceSpec",
    "aim_angles",
    "calibrate_room",
    "compose_parts",
    "compose_reference_parts",
    "find_soundfont",
    "image_blocks",
    "ircam_trio_geometry",
    "measure_room_rt60",
    "reference_session",
    "render_images",
    "render_midi",
    "render_parts",
    "simulate_session",
]
