"""Writing a session manifest: the TOML document of a session and its atomic write."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from studio_sep.session.manifest import MANIFEST_SEPARATION_KEYS, Session
from studio_sep.util.atomic import write_text_atomic
from studio_sep.util.toml import to_toml


def session_to_dict(session: Session) -> dict:
    """The TOML document of a session, paths relative to its manifest."""
    folder = session.path.parent

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, folder)).as_posix()

    head: dict[str, Any] = {"name": session.name}
    if session.description:
        head["description"] = session.description
    if session.processing_sample_rate is not None:
        head["processing_sample_rate"] = session.processing_sample_rate
    doc: dict[str, Any] = {"session": head}
    if session.room is not None:
        room: dict[str, Any] = {}
        if session.room.dimensions_m is not None:
            room["dimensions_m"] = list(session.room.dimensions_m)
        room["origin_m"] = list(session.room.origin_m)
        if session.room.rt60_s is not None:
            room["rt60_s"] = session.room.rt60_s
        doc["room"] = room
    sep = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(session.separation).items()
           if v is not None and k in MANIFEST_SEPARATION_KEYS}
    if sep:
        doc["separation"] = sep
    mics = []
    for m in session.mics:
        entry: dict[str, Any] = {"name": m.name, "position_m": list(m.position_m), "pattern": m.pattern}
        if m.aim_at is not None:
            entry["aim_at"] = m.aim_at
        elif m.pattern != "omni":
            entry["aim_azimuth_deg"] = m.aim_azimuth_deg
            entry["aim_elevation_deg"] = m.aim_elevation_deg
        entry["file"] = rel(m.file)
        entry["channel"] = m.channel
        mics.append(entry)
    sources = []
    for s in session.sources:
        entry = {"name": s.name, "prompt": s.prompt, "position_m": list(s.position_m)}
        if s.spot_mic is not None:
            entry["spot_mic"] = s.spot_mic
        if s.reference is not None:
            entry["reference"] = rel(s.reference)
        if s.midi is not None:
            entry["midi"] = rel(s.midi)
        sources.append(entry)
    doc["mics"] = mics
    doc["sources"] = sources
    if session.truth is not None:
        doc["truth"] = {key: {name: rel(p) for name, p in getattr(session.truth, key).items()}
                        for key in ("images", "dry") if getattr(session.truth, key)}
    return doc


def dump_session(session: Session, path: str | os.PathLike | None = None) -> Path:
    """Write a session manifest atomically (to ``session.path`` unless ``path`` is given)."""
    target = Path(path) if path is not None else session.path
    session = replace(session, path=target.resolve())
    write_text_atomic(target, to_toml(session_to_dict(session)))
    return target
