"""The simulated room: a shoebox whose wall absorption is calibrated to a measured RT60.

- :func:`calibrate_room` finds the wall absorption for which pyroomacoustics'
  image-source RIRs of a shoebox room *measure* the requested RT60
  (:func:`measure_room_rt60`, T30 on probe RIRs);
- :mod:`studio_sep.sim.images` puts every dry source into that room and gives its image
  at every microphone.

Conventions (the package's, see :mod:`studio_sep.dsp.geometry`): positions in metres as
``(x, y, z)``; azimuth in degrees in the horizontal plane from +x towards +y;
elevation in degrees, positive upwards. Axis letters: ``N`` sources, ``M`` mics,
``S`` samples, ``B`` samples of one block. Progress callbacks are called as
``callback(stage, fraction)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from studio_sep.dsp.geometry import PATTERN_COEFFICIENT
from studio_sep.io.synth import check_sample_rate
from studio_sep.util.errors import SimulationError

__all__ = [
    "DEFAULT_DIMENSIONS_M",
    "DEFAULT_RT60_S",
    "MIC_PATTERN_P",
    "RoomCalibration",
    "calibrate_room",
    "measure_room_rt60",
]

Callback = Callable[[str, float], None]

#: Parameter ``p`` of pyroomacoustics' cardioid family, ``p + (1 - p) cos(angle)``,
#: for each microphone pattern the package knows (one table for the whole package).
MIC_PATTERN_P: Mapping[str, float] = PATTERN_COEFFICIENT

DEFAULT_DIMENSIONS_M = (7.5, 5.6, 2.6)  # 109.2 m^3
DEFAULT_RT60_S = 0.5
CHUNK_SAMPLES = 1 << 16  # samples checked at a time where a whole-signal copy is not needed


@dataclass(frozen=True)
class RoomCalibration:
    """Absorption of a shoebox room whose simulated RIRs measure the requested RT60.

    Attributes
    ----------
    dimensions_m : tuple of 3 float
        Room size (x, y, z) in metres.
    rt60_s : float
        Requested RT60.
    energy_absorption : float
        Energy absorption coefficient of every wall, the calibrated value.
    max_order : int
        Image-source order: reflections reach ``c * rt60_s`` metres.
    measured_rt60_s : float
        RT60 measured (T30, extrapolated) on RIRs of the calibrated room.
    sample_rate : int
        Rate of the RIRs used for calibration. The absorption does not depend on
        it and may be used at any rate.
    sabine_energy_absorption : float
        Starting point: Sabine's formula (``pyroomacoustics.inverse_sabine``).
    sabine_measured_rt60_s : float
        RT60 measured with the Sabine absorption, before calibration.
    iterations : int
        Absorption updates made.
    decay_db : float
        Decay range the RT60s were measured on (30: T30).
    """

    dimensions_m: tuple[float, float, float]
    rt60_s: float
    energy_absorption: float
    max_order: int
    measured_rt60_s: float
    sample_rate: int
    sabine_energy_absorption: float
    sabine_measured_rt60_s: float
    iterations: int
    decay_db: float = 30.0


# Source and mic positions used to measure a room, as fractions of its dimensions:
# spread out, asymmetric, away from walls (no two pairs mirror each other).
_PROBE_SOURCES = ((0.78, 0.52, 0.27), (0.62, 0.71, 0.24), (0.58, 0.31, 0.22))
_PROBE_MICS = ((0.43, 0.47, 0.58), (0.13, 0.56, 0.69))


def check_dimensions(dimensions_m) -> tuple[float, float, float]:
    dims = np.asarray(dimensions_m, dtype=float)
    if dims.shape != (3,) or not np.all(np.isfinite(dims)) or np.any(dims <= 0):
        raise SimulationError(None, "dimensions_m",
                              f"dimensions_m={dimensions_m!r} must be 3 positive lengths",
                              "pass e.g. (7.5, 5.6, 2.6)")
    return tuple(float(d) for d in dims)


def shoebox(dimensions_m, energy_absorption: float, max_order: int, sample_rate: int):
    import pyroomacoustics as pra

    return pra.ShoeBox(
        list(dimensions_m),
        fs=sample_rate,
        materials=pra.Material(float(energy_absorption)),
        max_order=int(max_order),
        air_absorption=False,
        ray_tracing=False,
    )


def measure_room_rt60(
    *,
    dimensions_m: Sequence[float],
    energy_absorption: float,
    max_order: int,
    sample_rate: int = 16000,
    decay_db: float = 30.0,
) -> float:
    """RT60 of a shoebox room as measured on its image-source RIRs.

    Six RIRs (3 sources x 2 mics spread over the room) are simulated; on each, the
    Schroeder decay from -5 dB down by ``decay_db`` is fitted and extrapolated to
    60 dB (``decay_db=30``: T30, as ISO 3382; with
    ``pyroomacoustics.experimental.measure_rt60``). Returns the mean, in seconds.

    The image-source decay of a shoebox is not a single exponential: the late part
    decays more slowly, so T20 < T30 < a fit over 60 dB (0.60, 0.67 and 0.83 s in the
    default room with Sabine's absorption for 0.5 s).
    """
    import pyroomacoustics as pra

    dims = np.asarray(check_dimensions(dimensions_m))
    room = shoebox(dims, energy_absorption, max_order, sample_rate)
    for fraction in _PROBE_SOURCES:
        room.add_source(dims * np.asarray(fraction))
    room.add_microphone_array((dims * np.asarray(_PROBE_MICS)).T)
    room.compute_rir()
    rt60s = [
        pra.experimental.measure_rt60(np.asarray(rir, dtype=float), fs=sample_rate, decay_db=decay_db)
        for mic_rirs in room.rir
        for rir in mic_rirs
    ]
    return float(np.mean(rt60s))


# Long by its docstring and its checks; the calibration is one fixed-point loop that scales the
# absorption exponent by measured / requested RT60.
def calibrate_room(
    *,
    dimensions_m: Sequence[float] = DEFAULT_DIMENSIONS_M,
    rt60_s: float = DEFAULT_RT60_S,
    sample_rate: int = 16000,
    tolerance: float = 0.02,
    max_iterations: int = 8,
    decay_db: float = 30.0,
    callback: Callback | None = None,
) -> RoomCalibration:
    """Find the wall absorption for which the simulated room measures ``rt60_s``.

    Sabine's absorption (``pyroomacoustics.inverse_sabine``) gives image-source
    RIRs whose measured RT60 is far longer than requested (0.68 s for 0.5 s in the
    default 109 m^3 room): the image-source decay of a shoebox is not Sabine's
    diffuse one. Starting from it, the absorption is updated with the Eyring-like
    fixed point ``-ln(1 - a') = -ln(1 - a) * measured / requested`` (RT60 is about
    proportional to ``1 / -ln(1 - a)``) until :func:`measure_room_rt60` is within
    ``tolerance`` of ``rt60_s``. ``max_order`` stays Sabine's for ``rt60_s`` (image
    sources out to ``c * rt60_s``), which covers the measured 35 dB of decay.

    Parameters
    ----------
    dimensions_m : sequence of 3 float
        Room size in metres.
    rt60_s : float
        Requested reverberation time in seconds.
    sample_rate : int
        Rate of the RIRs measured (16 kHz is enough and fast; the result holds at
        48 kHz).
    tolerance : float
        Accepted relative error of the measured RT60.
    max_iterations : int
        Absorption updates allowed.
    decay_db : float
        Decay range the RT60 is measured on (30: T30), see
        :func:`measure_room_rt60`.
    callback : callable, optional
        ``callback("calibrate", fraction)`` after each measurement.

    Returns
    -------
    RoomCalibration

    Raises
    ------
    SimulationError
        If the request is invalid, unreachable (absorption would exceed 1) or does
        not converge.
    """
    import pyroomacoustics as pra

    dims = check_dimensions(dimensions_m)
    if not math.isfinite(rt60_s) or rt60_s <= 0:
        raise SimulationError(None, "rt60_s", f"rt60_s={rt60_s!r} must be > 0 s", "pass e.g. 0.5")
    if not 0 < tolerance < 1:
        raise SimulationError(None, "tolerance", f"tolerance={tolerance!r} must be in (0, 1)",
                              "pass e.g. 0.02")
    sample_rate = check_sample_rate(sample_rate)
    if not 5 <= decay_db <= 60:
        raise SimulationError(None, "decay_db", f"decay_db={decay_db!r} must be in [5, 60] dB",
                              "pass 30 (T30)")
    try:
        sabine_absorption, max_order = pra.inverse_sabine(rt60_s, list(dims))
    except ValueError as error:
        raise SimulationError(None, "rt60_s", f"rt60_s={rt60_s} s is too short for a {dims} m room ({error})",
                              "ask for a longer RT60 or a larger room") from None
    sabine_absorption = float(sabine_absorption)

    def measure(absorption: float) -> float:
        return measure_room_rt60(dimensions_m=dims, energy_absorption=absorption, max_order=max_order,
                                 sample_rate=sample_rate, decay_db=decay_db)

    absorption = sabine_absorption
    measured = sabine_measured = measure(absorption)
    iterations = 0
    while abs(measured - rt60_s) > tolerance * rt60_s:
        if iterations == max_iterations:
            raise SimulationError(
                None, "rt60_s",
                f"room calibration did not converge: measured {measured:.3f} s for {rt60_s} s requested "
                f"after {iterations} updates", "raise max_iterations or tolerance",
            )
        if callback is not None:
            callback("calibrate", (iterations + 1) / (max_iterations + 1))
        alpha = -math.log1p(-absorption) * measured / rt60_s
        absorption = -math.expm1(-alpha)
        if absorption >= 0.99:
            raise SimulationError(None, "rt60_s", f"rt60_s={rt60_s} s needs walls absorbing more than 99 %",
                                  "ask for a longer RT60 or a larger room")
        measured = measure(absorption)
        iterations += 1
    if callback is not None:
        callback("calibrate", 1.0)
    return RoomCalibration(
        dimensions_m=dims,
        rt60_s=float(rt60_s),
        energy_absorption=float(absorption),
        max_order=int(max_order),
        measured_rt60_s=measured,
        sample_rate=sample_rate,
        sabine_energy_absorption=sabine_absorption,
        sabine_measured_rt60_s=sabine_measured,
        iterations=iterations,
        decay_db=float(decay_db),
    )
