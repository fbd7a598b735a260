"""Geometry of mics and sources: aiming angles, pattern gains and direct-path steering vectors
(the geometric start of the separation built on them is in :mod:`studio_sep.separation.initial`).

Conventions, used everywhere in studio-sep: positions in metres as ``(x, y, z)``;
azimuth in degrees in the horizontal plane from +x towards +y; elevation in degrees,
positive upwards from the horizontal plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def aim_angles(from_m: Sequence[float], to_m: Sequence[float]) -> tuple[float, float]:
    """Azimuth and elevation (degrees) of the direction from ``from_m`` to ``to_m``.

    Raises
    ------
    ValueError
        If the two points coincide.
    """
    dx, dy, dz = (float(b) - float(a) for a, b in zip(from_m, to_m, strict=True))
    horizontal = math.hypot(dx, dy)
    if horizontal == 0.0 and dz == 0.0:
        raise ValueError("cannot aim from a point at itself")
    return math.degrees(math.atan2(dy, dx)), math.degrees(math.atan2(dz, horizontal))


def unit_vector(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """Unit direction vector for an azimuth and elevation in degrees."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))


SPEED_OF_SOUND_M_S = 343.0

#: First-order pattern coefficient a of the gain a + (1 - a) cos θ.
PATTERN_COEFFICIENT = {"omni": 1.0, "subcardioid": 0.75, "cardioid": 0.5, "hypercardioid": 0.25, "figure8": 0.0}


def pattern_gain(pattern: str, aim_unit, direction_unit) -> float:
    """Gain of a first-order pattern towards a direction (signed: a figure-8's rear
    lobe has negative polarity)."""
    a = PATTERN_COEFFICIENT[pattern]
    cos_theta = sum(p * q for p, q in zip(aim_unit, direction_unit))
    return a + (1.0 - a) * cos_theta


def pattern_gains(mic_positions_m, source_positions_m, patterns, aims_deg=None):
    """Each mic's first-order pattern gain towards each source (signed), ``(M, N)``; NaN where
    a mic coincides with a source (no direction)."""
    import numpy as np

    mics = np.asarray(mic_positions_m, dtype=float)
    sources = np.asarray(source_positions_m, dtype=float)
    delta = sources[None, :, :] - mics[:, None, :]  # (M, N, 3), mic → source
    dist = np.linalg.norm(delta, axis=-1)
    gain = np.ones_like(dist)
    aims = aims_deg if aims_deg is not None else [(0.0, 0.0)] * len(mics)
    for m, (pattern, (az, el)) in enumerate(zip(patterns, aims, strict=True)):
        aim = unit_vector(az, el)
        for n in range(len(sources)):
            gain[m, n] = pattern_gain(pattern, aim, delta[m, n] / dist[m, n]) if dist[m, n] > 0 else np.nan
    return gain


def steering_vectors(
    mic_positions_m, source_positions_m, freqs_hz, *, patterns=None, aims_deg=None,
    speed_of_sound_m_s: float = SPEED_OF_SOUND_M_S,
):
    """Direct-path (spherical-wave) steering vectors of every source at every mic.

    ``a_fmn = g_mn exp(-2πi f d_mn / c) / d_mn``, with ``d_mn`` the mic–source distance
    and ``g_mn`` the mic's first-order pattern gain towards the source.

    Parameters
    ----------
    mic_positions_m : array, shape (M, 3)
    source_positions_m : array, shape (N, 3)
    freqs_hz : array, shape (F,)
    patterns : sequence of str, optional
        Pattern of each mic (default omni).
    aims_deg : sequence of (azimuth, elevation), optional
        Aim of each mic.

    Returns
    -------
    A_FMN : ndarray, shape (F, M, N), complex128
    """
    import numpy as np

    mics = np.asarray(mic_positions_m, dtype=float)
    sources = np.asarray(source_positions_m, dtype=float)
    delta = sources[None, :, :] - mics[:, None, :]  # (M, N, 3), mic → source
    dist = np.linalg.norm(delta, axis=-1)
    if np.any(dist < 1e-3):
        raise ValueError("a mic coincides with a source")
    gain = np.ones_like(dist) if patterns is None else pattern_gains(mics, sources, patterns, aims_deg)
    freqs = np.asarray(freqs_hz, dtype=float)
    phase = np.exp(-2j * np.pi * freqs[:, None, None] * dist[None] / speed_of_sound_m_s)
    return phase * (gain / dist)[None]
