"""A recording session: the manifest model, its parsing and validation, and its mic signals."""

from studio_sep.session.loading import load_mics
from studio_sep.session.manifest import (
    DEVICES,
    DTYPES,
    INITS,
    PATTERNS,
    PRIORS,
    Mic,
    Room,
    SeparationSettings,
    Session,
    Source,
    Truth,
    dump_session,
    load_session,
    session_to_dict,
)

__all__ = ["DEVICES", "DTYPES", "INITS", "PATTERNS", "PRIORS", "Mic", "Room", "SeparationSettings", "Session", "Source",
           "Truth", "dump_session", "load_mics", "load_session", "session_to_dict"]
