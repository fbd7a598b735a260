"""The simulated room: a shoebox calibrated to a measured RT60, and each source's image at each mic.

- :func:`calibrate_room` finds the wall absorption for which pyroomacoustics'
  image-source RIRs of a shoebox room *measure* the requested RT60
  (:func:`measure_room_rt60`, T30 on probe RIRs);
- :func:`image_blocks` puts every dry source into that room and gives its image at
  every microphone (directional mics: :data:`MIC_PATTERN_P`), one block of samples at
  a time (``images_NMB``); :func:`render_images` gives all of it (``images_NMS``). The
  sum over sources is the mic signal.

Conventions (the package's, see :mod:`studio_sep.dsp.geometry`): positions in metres as
``(x, y, z)``; azimuth in degrees in the horizontal plane from +x towards +y;
elevation in degrees, positive upwards. Axis letters: ``N`` sources, ``M`` mics,
``S`` samples, ``B`` samples of one block. Progress callbacks are called as
``callback(stage, fraction)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from studio_sep.dsp.geometry import PATTERN_COEFFICIENT
from studio_sep.io.synth import check_sample_rate
from studio_sep.util.errors import SimulationError

__all__ = [
    "DEFAULT_DIMENSIONS_M",
    "DEFAULT_RT60_S",
    "IMAGE_BLOCK_SAMPLES",
    "MIC_PATTERN_P",
    "RoomCalibration",
    "calibrate_room",
    "image_blocks",
    "measure_room_rt60",
    "render_images",
]

Callback = Callable[[str, float], None]

#: Parameter ``p`` of pyroomacoustics' cardioid family, ``p + (1 - p) cos(angle)``,
#: for each microphone pattern the package knows (one table for the whole package).
MIC_PATTERN_P: Mapping[str, float] = PATTERN_COEFFICIENT

DEFAULT_DIMENSIONS_M = (7.5, 5.6, 2.6)  # 109.2 m^3
DEFAULT_RT60_S = 0.5
_CHUNK_SAMPLES = 1 << 16  # samples checked at a time where a whole-signal copy is not needed


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


def _check_dimensions(dimensions_m) -> tuple[float, float, float]:
    dims = np.asarray(dimensions_m, dtype=float)
    if dims.shape != (3,) or not np.all(np.isfinite(dims)) or np.any(dims <= 0):
        raise SimulationError(None, "dimensions_m",
                              f"dimensions_m={dimensions_m!r} must be 3 positive lengths",
                              "pass e.g. (7.5, 5.6, 2.6)")
    return tuple(float(d) for d in dims)


def _shoebox(dimensions_m, energy_absorption: float, max_order: int, sample_rate: int):
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

    dims = np.asarray(_check_dimensions(dimensions_m))
    room = _shoebox(dims, energy_absorption, max_order, sample_rate)
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

    dims = _check_dimensions(dimensions_m)
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


def _mic_fields(mic) -> tuple[np.ndarray, str, float, float]:
    """(position_m, pattern, azimuth_deg, elevation_deg) from a MicSpec-like object or a 4-tuple."""
    if hasattr(mic, "position_m"):
        return (np.asarray(mic.position_m, dtype=float), mic.pattern, float(mic.aim_azimuth_deg),
                float(mic.aim_elevation_deg))
    position_m, pattern, azimuth_deg, elevation_deg = mic
    return np.asarray(position_m, dtype=float), pattern, float(azimuth_deg), float(elevation_deg)


def _directivity(pattern: str, azimuth_deg: float, elevation_deg: float):
    """pyroomacoustics directivity for a pattern aimed at (azimuth, elevation); None for omni.

    pyroomacoustics' ``DirectionVector`` takes a colatitude (0 = +z), hence
    ``90 - elevation``.
    """
    p = MIC_PATTERN_P[pattern]
    if p == 1.0:
        return None
    from pyroomacoustics.directivities import CardioidFamily, DirectionVector

    colatitude_deg = min(max(90.0 - elevation_deg, 0.0), 180.0)
    return CardioidFamily(DirectionVector(azimuth=azimuth_deg, colatitude=colatitude_deg, degrees=True), p=p)


#: Samples per block of :func:`image_blocks` in :func:`studio_sep.sim.trio.simulate_session`: 2**22 (87 s
#: at 48 kHz) keeps a block of 3 sources x 7 mics at 700 MB in float64. Each block
#: convolves its span plus the RIR's length before it (76 000 samples at 48 kHz,
#: RT60 0.5 s); at this size that costs about 10 % more time than one convolution
#: of the whole signal (2**21 costs 60-100 %: scipy's overlap-add blocks fit badly).
IMAGE_BLOCK_SAMPLES = 1 << 22


def image_blocks(
    dry_NS: np.ndarray,
    *,
    source_positions_m: np.ndarray,
    mics: Sequence,
    calibration: RoomCalibration,
    sample_rate: int,
    dimensions_m: Sequence[float] | None = None,
    block_samples: int = IMAGE_BLOCK_SAMPLES,
    callback: Callback | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Each source's reverberant image at every microphone, one block of samples at a time.

    One shoebox room (walls of ``calibration.energy_absorption``, image sources up
    to ``calibration.max_order``) holds all sources and mics; pyroomacoustics
    computes one RIR per (mic, source) pair, with the mic's directivity applied to
    every image source, and each dry signal is convolved with its RIRs. Images are
    linear in the dry signals, so ``images_NMB.sum(axis=0)`` is the signal of every
    mic.

    Timing: sample ``t`` of an image is the room's output at time ``t`` for a dry
    signal starting at time 0, same length as the dry signal. The propagation delay
    is kept (direct sound at ``distance / c``); the constant latency of
    pyroomacoustics' RIRs (``frac_delay_length // 2`` = 40 samples, the centre of
    its fractional-delay filters) is removed, so an image is
    ``pyroomacoustics.Room.simulate``'s premix shifted by 40 samples; the
    reverberant tail beyond ``n_samples`` is cut.

    Blocks: samples ``[start, start + block_samples)`` of every image are computed
    by convolving (``scipy.signal.oaconvolve``) the dry samples they depend on, the
    block and the RIR's length before it; nothing is carried from block to block,
    so only one block of images is ever in memory. With one block
    (``block_samples >= n_samples``) each image is ``oaconvolve`` of the whole dry
    signal, sample for sample; with several, the same values to float64 rounding
    (the FFT sizes differ).

    The inputs are checked and the RIRs computed when this function is called; the
    convolutions run as the blocks are taken from the iterator.

    Parameters
    ----------
    dry_NS : numpy.ndarray, shape (n_sources, n_samples)
        Dry source signals. Not modified; read until the iterator is exhausted.
    source_positions_m : array_like, shape (n_sources, 3)
        Source positions in room coordinates (corner at the origin).
    mics : sequence
        :class:`~studio_sep.sim.trio.MicSpec` (or any object with ``position_m``, ``pattern``,
        ``aim_azimuth_deg``, ``aim_elevation_deg``; a manifest ``Mic`` works), or
        tuples ``(position_m, pattern, aim_azimuth_deg, aim_elevation_deg)``, in
        room coordinates.
    calibration : RoomCalibration
        From :func:`calibrate_room`.
    sample_rate : int
        Rate of ``dry_NS`` in Hz.
    dimensions_m : sequence of 3 float, optional
        Room size; defaults to, and must equal, ``calibration.dimensions_m``.
    block_samples : int
        Samples per block (the last block may be shorter).
    callback : callable, optional
        ``callback("images", fraction)`` after the RIRs and after each block.

    Returns
    -------
    iterator of (start, images_NMB)
        ``start`` : int, the block's first sample; ``images_NMB`` : numpy.ndarray,
        shape (n_sources, n_mics, n_block), float64, a new array for every block.
        The blocks come in order and cover ``[0, n_samples)``.

    Raises
    ------
    SimulationError
        On shapes that do not match, a position outside the room, an unknown
        pattern or a block size below 1.
    """
    import pyroomacoustics as pra

    sample_rate = check_sample_rate(sample_rate)
    dry_NS = np.asarray(dry_NS, dtype=float)
    if dry_NS.ndim != 2 or dry_NS.shape[1] == 0:
        raise SimulationError(None, "dry_NS",
                              f"dry_NS has shape {dry_NS.shape}, expected (n_sources, n_samples)",
                              None)
    if not all(np.all(np.isfinite(dry_NS[:, i:i + _CHUNK_SAMPLES]))
               for i in range(0, dry_NS.shape[1], _CHUNK_SAMPLES)):
        raise SimulationError(None, "dry_NS", "dry_NS holds NaN or infinite values", None)
    if isinstance(block_samples, bool) or int(block_samples) != block_samples or block_samples < 1:
        raise SimulationError(None, "block_samples",
                              f"block_samples={block_samples!r} must be a positive integer",
                              f"pass e.g. {IMAGE_BLOCK_SAMPLES}")
    n_sources = dry_NS.shape[0]
    dims = calibration.dimensions_m if dimensions_m is None else _check_dimensions(dimensions_m)
    if not np.allclose(dims, calibration.dimensions_m):
        raise SimulationError(None, "dimensions_m",
                              f"dimensions_m={dims} differ from the calibration's {calibration.dimensions_m}",
                              "calibrate the room with these dimensions")
    positions_N3 = np.asarray(source_positions_m, dtype=float)
    if positions_N3.shape != (n_sources, 3):
        raise SimulationError(None, "source_positions_m",
                              f"source_positions_m has shape {positions_N3.shape}, expected ({n_sources}, 3)",
                              None)
    mic_fields = [_mic_fields(mic) for mic in mics]
    if not mic_fields:
        raise SimulationError(None, "mics", "no microphones given", None)
    inside = np.asarray(dims)

    def check_inside(what: str, position: np.ndarray) -> None:
        if position.shape != (3,) or not np.all((position > 0) & (position < inside)):
            raise SimulationError(None, what, f"position {position.tolist()} is not inside the {dims} m room",
                                  "use room coordinates (corner at 0, 0, 0)")

    for n, position in enumerate(positions_N3):
        check_inside(f"source_positions_m[{n}]", position)
    directivities = []
    for m, (position, pattern, azimuth_deg, elevation_deg) in enumerate(mic_fields):
        check_inside(f"mics[{m}].position_m", position)
        if pattern not in MIC_PATTERN_P:
            raise SimulationError(None, f"mics[{m}].pattern", f"unknown pattern {pattern!r}",
                                  f"use one of {tuple(MIC_PATTERN_P)}")
        directivities.append(_directivity(pattern, azimuth_deg, elevation_deg))

    room = _shoebox(dims, calibration.energy_absorption, calibration.max_order, sample_rate)
    for position in positions_N3:
        room.add_source(position)
    room.add_microphone_array(np.stack([f[0] for f in mic_fields], axis=1), directivity=directivities)
    room.compute_rir()
    rirs_MN = [[np.asarray(room.rir[m][n], dtype=float) for n in range(n_sources)]
               for m in range(len(mic_fields))]
    latency = pra.constants.get("frac_delay_length") // 2
    return _convolved_blocks(dry_NS, rirs_MN, latency=latency, block_samples=int(block_samples),
                             callback=callback)


def _convolved_blocks(
    dry_NS: np.ndarray,
    rirs_MN: Sequence[Sequence[np.ndarray]],
    *,
    latency: int,
    block_samples: int,
    callback: Callback | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The blocks of :func:`image_blocks`, from checked inputs and computed RIRs.

    Output sample ``t`` of image (n, m) is sample ``t + latency`` of the full
    convolution ``dry_NS[n] * rirs_MN[m][n]``, which depends on dry samples
    ``t + latency - len(rir) + 1 .. t + latency``. A block convolves just that span
    of the dry signal and keeps the part of the result that lies in the block.
    """
    from scipy.signal import oaconvolve

    n_sources, n_samples = dry_NS.shape
    n_mics = len(rirs_MN)
    n_blocks = -(-n_samples // block_samples)
    if callback is not None:
        callback("images", 1.0 / (n_blocks + 1))
    for k, start in enumerate(range(0, n_samples, block_samples)):
        stop = min(start + block_samples, n_samples)
        images_NMB = np.empty((n_sources, n_mics, stop - start))
        for n in range(n_sources):
            for m in range(n_mics):
                rir = rirs_MN[m][n]
                first = max(0, start + latency - len(rir) + 1)  # dry span this block depends on
                last = min(n_samples, stop + latency)
                full = oaconvolve(dry_NS[n, first:last], rir)
                images_NMB[n, m] = full[start + latency - first : stop + latency - first]
        if callback is not None:
            callback("images", (k + 2) / (n_blocks + 1))
        yield start, images_NMB
        del images_NMB  # not held while the next block is computed


def render_images(
    dry_NS: np.ndarray,
    *,
    source_positions_m: np.ndarray,
    mics: Sequence,
    calibration: RoomCalibration,
    sample_rate: int,
    dimensions_m: Sequence[float] | None = None,
    callback: Callback | None = None,
) -> np.ndarray:
    """Each source's reverberant image at every microphone, all in memory.

    :func:`image_blocks` with a single block: the room, timing and parameters are
    described there. The result takes ``8 * n_sources * n_mics * n_samples`` bytes
    (9.7 GB for 3 sources, 7 mics and 20 minutes at 48 kHz); long signals are
    better taken block by block from :func:`image_blocks`, as
    :func:`studio_sep.sim.trio.simulate_session` does.

    Returns
    -------
    images_NMS : numpy.ndarray, shape (n_sources, n_mics, n_samples), float64
        ``images_NMS.sum(axis=0)`` is the signal of every mic.

    Raises
    ------
    SimulationError
        On shapes that do not match, a position outside the room, or an unknown
        pattern.
    """
    n_samples = np.shape(dry_NS)[-1] if np.ndim(dry_NS) == 2 else 1
    blocks = image_blocks(dry_NS, source_positions_m=source_positions_m, mics=mics, calibration=calibration,
                          sample_rate=sample_rate, dimensions_m=dimensions_m, block_samples=max(n_samples, 1),
                          callback=callback)
    ((_, images_NMS),) = blocks
    return images_NMS
