"""Each dry source's image at each mic of a calibrated room (:mod:`studio_sep.sim.room`).

:func:`image_blocks` puts every dry source into the room and gives its image at every
microphone (directional mics: :data:`~studio_sep.sim.room.MIC_PATTERN_P`), one block of
samples at a time (``images_NMB``); :func:`render_images` gives all of it
(``images_NMS``). The sum over sources is the mic signal. Conventions as in
:mod:`studio_sep.sim.room`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from studio_sep.io.synth import check_sample_rate
from studio_sep.sim.room import (
    CHUNK_SAMPLES,
    MIC_PATTERN_P,
    Callback,
    RoomCalibration,
    check_dimensions,
    shoebox,
)
from studio_sep.util.errors import SimulationError

__all__ = ["IMAGE_BLOCK_SAMPLES", "image_blocks", "render_images"]


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


# Long by its docstring (the room model and timing) and its checks; the rendering is one
# generator loop over the blocks.
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
    if not all(np.all(np.isfinite(dry_NS[:, i:i + CHUNK_SAMPLES]))
               for i in range(0, dry_NS.shape[1], CHUNK_SAMPLES)):
        raise SimulationError(None, "dry_NS", "dry_NS holds NaN or infinite values", None)
    if isinstance(block_samples, bool) or int(block_samples) != block_samples or block_samples < 1:
        raise SimulationError(None, "block_samples",
                              f"block_samples={block_samples!r} must be a positive integer",
                              f"pass e.g. {IMAGE_BLOCK_SAMPLES}")
    n_sources = dry_NS.shape[0]
    dims = calibration.dimensions_m if dimensions_m is None else check_dimensions(dimensions_m)
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

    room = shoebox(dims, calibration.energy_absorption, calibration.max_order, sample_rate)
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
