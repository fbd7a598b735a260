"""The test-scene simulator: the IRCAM trio rendered in a calibrated room, with ground truth.

- :mod:`.trio`: the trio's geometry, :class:`SimulationSettings` and
  :func:`simulate_session` (the session folder), :func:`reference_session` (its manifest);
- :mod:`.room`: the shoebox room calibrated to a measured RT60 and each source's image
  at each mic.

The composition is :mod:`studio_sep.data.compose`, the FluidSynth rendering
:mod:`studio_sep.io.synth`. pyroomacoustics and FluidSynth are imported only when used.
"""

from studio_sep.sim.images import IMAGE_BLOCK_SAMPLES, image_blocks, render_images
from studio_sep.sim.room import (
    DEFAULT_DIMENSIONS_M,
    DEFAULT_RT60_S,
    MIC_PATTERN_P,
    RoomCalibration,
    calibrate_room,
    measure_room_rt60,
)
from studio_sep.sim.trio import (
    DEFAULT_ORIGIN_M,
    IRCAM_TRIO_MICS,
    IRCAM_TRIO_SOURCES,
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
    "IRCAM_TRIO_MICS",
    "IRCAM_TRIO_SOURCES",
    "MIC_PATTERN_P",
    "MicSpec",
    "RoomCalibration",
    "SimulationResult",
    "SimulationSettings",
    "SourceSpec",
    "calibrate_room",
    "image_blocks",
    "ircam_trio_geometry",
    "measure_room_rt60",
    "reference_session",
    "render_images",
    "simulate_session",
]
