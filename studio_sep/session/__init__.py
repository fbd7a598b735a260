"""A recording session: the manifest model (manifest.py), its parsing (parse.py) and audio
checks (audio_check.py), its writing (dump.py), and its mic signals (loading.py)."""

from studio_sep.session.dump import dump_session, session_to_dict
from studio_sep.session.loading import load_mics
from studio_sep.session.manifest import (
    DEVICES,
    DTYPES,
    INITS,
    MANIFEST_SEPARATION_KEYS,
    PATTERNS,
    PRIORS,
    SPATIAL_INITS,
    Mic,
    Room,
    SeparationSettings,
    Session,
    Source,
    Truth,
)
from studio_sep.session.parse import load_session

__all__ = ["DEVICES", "DTYPES", "INITS", "MANIFEST_SEPARATION_KEYS", "PATTERNS", "PRIORS", "SPATIAL_INITS", "Mic",
           "Room", "SeparationSettings", "Session", "Source", "Truth", "dump_session", "load_mics", "load_session",
           "session_to_dict"]
