"""Geometry of mics and sources: aiming angles (steering vectors come with separation).

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
