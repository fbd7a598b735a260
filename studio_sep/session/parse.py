"""Reading a session manifest: :func:`load_session`, the field-checking reader and the
parser of every table.

:func:`load_session` checks everything a later stage relies on before any work is
done, and raises :class:`~studio_sep.util.errors.ManifestError` with a message naming the
manifest, the field, the problem and the fix.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from pathlib import Path
from typing import Any

from studio_sep.dsp.geometry import aim_angles
from studio_sep.session.audio_check import check_session_audio
from studio_sep.session.manifest import (
    DEVICES,
    DTYPES,
    INITS,
    MANIFEST_SEPARATION_KEYS,
    MIN_PROCESSING_RATE,
    PATTERNS,
    PRIORS,
    Mic,
    Room,
    SeparationSettings,
    Session,
    Source,
    Truth,
)
from studio_sep.util.errors import ManifestError
from studio_sep.util.names import NAME_RULE, name_problem
from studio_sep.util.toml import unknown_key_fix

_TOP_KEYS = ("session", "room", "mics", "sources", "separation", "truth")


def load_session(path: str | os.PathLike, *, check_audio: bool = True) -> Session:
    """Load and validate a session manifest.

    Parameters
    ----------
    path : path-like
        The ``session.toml`` file.
    check_audio : bool
        Also open every referenced audio file and check it: readable, channel in
        range, one sample rate and one length across mics, finite samples, ground
        truth and reference takes consistent with the mics.

    Raises
    ------
    ManifestError
        On the first problem found, naming the manifest, the field and the fix.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "session.toml"
    if not path.is_file():
        raise ManifestError(path, None, "manifest not found", "give the path of a session.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(path, None, f"not valid TOML ({exc})", "fix the syntax at that line") from None
    session = _parse(_Reader(path), data)
    if check_audio:
        session = check_session_audio(session)
    return session


class _Reader:
    """Field-checking helpers that know which manifest they read."""

    def __init__(self, path: Path):
        self.path = path
        self.folder = path.parent

    def error(self, field_name: str | None, problem: str, fix: str | None = None) -> ManifestError:
        return ManifestError(self.path, field_name, problem, fix)

    def table(self, data: Any, where: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(data, dict):
            raise self.error(where, f"must be a table, got {type(data).__name__}",
                             f"write it as [{where}] with key = value lines")
        for key in data:
            if key not in allowed:
                raise self.error(f"{where}.{key}" if where else key, "unknown key", unknown_key_fix(key, allowed))
        return data

    def required(self, data: dict, key: str, where: str) -> Any:
        if key not in data:
            raise self.error(f"{where}.{key}", "missing", f"add {key} = ... to {where}")
        return data[key]

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"must be a non-empty string, got {value!r}")
        return value

    def name(self, value: Any, where: str) -> str:
        value = self.string(value, where)
        problem = name_problem(value)
        if problem is not None:
            raise self.error(where, problem, NAME_RULE)
        return value

    def integer(self, value: Any, where: str, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(where, f"must be at least {minimum}, got {value}")
        return value

    def number(self, value: Any, where: str, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(where, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.error(where, f"must be positive, got {value}")
        return float(value)

    def vector3(self, value: Any, where: str, *, positive: bool = False) -> tuple[float, float, float]:
        if not isinstance(value, list) or len(value) != 3:
            raise self.error(where, f"must be [x, y, z] in metres, got {value!r}", "write e.g. [3.0, 0.0, 1.5]")
        x, y, z = (self.number(v, where, positive=positive) for v in value)
        return (x, y, z)

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise self.error(where, f"{value!r} is not one of {', '.join(choices)}", f"{hint}pick one of those")
        return value

    def file(self, value: Any, where: str) -> Path:
        value = self.string(value, where)
        try:
            resolved = (self.folder / value).resolve()  # an absolute value replaces the folder
        except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
            raise self.error(where, f"{value}: the path loops through symbolic links",
                             "point it at the file itself, not at a link that leads back to itself") from None
        return resolved if not os.path.isabs(value) else Path(value)


def _parse(r: _Reader, data: dict) -> Session:
    r.table(data, "", _TOP_KEYS)
    head = r.table(r.required(data, "session", ""), "session", ("name", "description", "processing_sample_rate"))
    name = r.name(r.required(head, "name", "session"), "session.name")
    description = head.get("description", "")
    if not isinstance(description, str):
        raise r.error("session.description", f"must be a string, got {description!r}")
    processing_sr = head.get("processing_sample_rate")
    if processing_sr is not None:
        processing_sr = r.integer(processing_sr, "session.processing_sample_rate", minimum=MIN_PROCESSING_RATE)

    raw_mics = data.get("mics", [])
    raw_sources = data.get("sources", [])
    for key, raw in (("mics", raw_mics), ("sources", raw_sources)):
        if not isinstance(raw, list):
            raise r.error(key, "must be an array of tables", f"write each entry as [[{key}]]")
    if not raw_mics:
        raise r.error("mics", "the session has no microphones", "add at least one [[mics]] entry")
    if not raw_sources:
        raise r.error("sources", "the session has no sources", "add at least one [[sources]] entry")

    sources = tuple(_parse_source(r, raw, i) for i, raw in enumerate(raw_sources))
    _check_unique(r, "sources", [s.name for s in sources])
    source_names = [s.name for s in sources]
    mics = tuple(_parse_mic(r, raw, i, sources) for i, raw in enumerate(raw_mics))
    _check_unique(r, "mics", [m.name for m in mics])
    mic_names = [m.name for m in mics]
    for i, source in enumerate(sources):
        if source.spot_mic is not None and source.spot_mic not in mic_names:
            r.choice(source.spot_mic, f"sources[{i}].spot_mic", tuple(mic_names))

    room = _parse_room(r, data["room"], mics, sources) if "room" in data else None
    separation = _parse_separation(r, data.get("separation", {}))
    truth = _parse_truth(r, data["truth"], source_names) if "truth" in data else None
    return Session(path=r.path.resolve(), name=name, description=description,
                   processing_sample_rate=processing_sr, mics=mics, sources=sources, room=room,
                   separation=separation, truth=truth)


def _check_unique(r: _Reader, key: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise r.error(f"{key}[{i}].name", f"duplicate name {name!r} (also {key}[{seen[name]}])",
                          "give every entry its own name")
        seen[name] = i


def _parse_source(r: _Reader, raw: Any, i: int) -> Source:
    where = f"sources[{i}]"
    raw = r.table(raw, where, ("name", "position_m", "prompt", "spot_mic", "reference", "midi"))
    name = r.name(r.required(raw, "name", where), f"{where}.name")
    return Source(
        name=name,
        position_m=r.vector3(r.required(raw, "position_m", where), f"{where}.position_m"),
        prompt=r.string(raw.get("prompt", name), f"{where}.prompt"),
        spot_mic=r.string(raw["spot_mic"], f"{where}.spot_mic") if "spot_mic" in raw else None,
        reference=r.file(raw["reference"], f"{where}.reference") if "reference" in raw else None,
        midi=r.file(raw["midi"], f"{where}.midi") if "midi" in raw else None,
    )


def _parse_mic(r: _Reader, raw: Any, i: int, sources: tuple[Source, ...]) -> Mic:
    where = f"mics[{i}]"
    raw = r.table(raw, where, ("name", "position_m", "file", "channel", "pattern", "aim_at",
                               "aim_azimuth_deg", "aim_elevation_deg"))
    name = r.name(r.required(raw, "name", where), f"{where}.name")
    position = r.vector3(r.required(raw, "position_m", where), f"{where}.position_m")
    aim_at = None
    azimuth = r.number(raw.get("aim_azimuth_deg", 0.0), f"{where}.aim_azimuth_deg")
    elevation = r.number(raw.get("aim_elevation_deg", 0.0), f"{where}.aim_elevation_deg")
    if not -90.0 <= elevation <= 90.0:
        raise r.error(f"{where}.aim_elevation_deg", f"must be between -90 and 90, got {elevation}")
    if "aim_at" in raw:
        if "aim_azimuth_deg" in raw or "aim_elevation_deg" in raw:
            raise r.error(f"{where}.aim_at", "given together with aim_azimuth_deg/aim_elevation_deg",
                          "keep either aim_at or the two angles")
        aim_at = r.choice(raw["aim_at"], f"{where}.aim_at", tuple(s.name for s in sources))
        target = next(s for s in sources if s.name == aim_at)
        try:
            azimuth, elevation = aim_angles(position, target.position_m)
        except ValueError:
            raise r.error(f"{where}.aim_at", f"the mic sits exactly at source {aim_at!r}",
                          "move the mic or aim it by angles") from None
    return Mic(
        name=name,
        position_m=position,
        file=r.file(r.required(raw, "file", where), f"{where}.file"),
        channel=r.integer(raw.get("channel", 1), f"{where}.channel", minimum=1),
        pattern=r.choice(raw.get("pattern", "omni"), f"{where}.pattern", PATTERNS),
        aim_azimuth_deg=azimuth,
        aim_elevation_deg=elevation,
        aim_at=aim_at,
    )


def _parse_room(r: _Reader, raw: Any, mics: tuple[Mic, ...], sources: tuple[Source, ...]) -> Room:
    raw = r.table(raw, "room", ("dimensions_m", "origin_m", "rt60_s"))
    dims = r.vector3(raw["dimensions_m"], "room.dimensions_m", positive=True) if "dimensions_m" in raw else None
    origin = r.vector3(raw.get("origin_m", [0.0, 0.0, 0.0]), "room.origin_m")
    rt60 = r.number(raw["rt60_s"], "room.rt60_s", positive=True) if "rt60_s" in raw else None
    if dims is not None:
        things = [(f"mics[{i}]", m.position_m) for i, m in enumerate(mics)]
        things += [(f"sources[{i}]", s.position_m) for i, s in enumerate(sources)]
        for where, pos in things:
            room_pos = [p + o for p, o in zip(pos, origin)]
            if not all(0.0 < p < d for p, d in zip(room_pos, dims)):
                raise r.error(f"{where}.position_m",
                              f"{list(pos)} lies outside the room (room coordinates "
                              f"{[round(p, 3) for p in room_pos]}, room {list(dims)} m)",
                              "fix the position, room.dimensions_m or room.origin_m")
    return Room(dimensions_m=dims, origin_m=origin, rt60_s=rt60)


def _parse_separation(r: _Reader, raw: Any) -> SeparationSettings:
    raw = r.table(raw, "separation", MANIFEST_SEPARATION_KEYS)
    values: dict[str, Any] = {}
    if raw.get("n_iter") == "auto":
        values["n_iter"] = "auto"
    elif "n_iter" in raw:
        if isinstance(raw["n_iter"], str):
            raise r.error("separation.n_iter", f"must be a number of iterations or \"auto\", got {raw['n_iter']!r}",
                          "write e.g. n_iter = 100, or n_iter = \"auto\"")
        values["n_iter"] = r.integer(raw["n_iter"], "separation.n_iter", minimum=1)
    for key in ("n_fft", "hop", "n_basis", "ensemble"):
        if key in raw:
            values[key] = r.integer(raw[key], f"separation.{key}", minimum=1)
    if "seed" in raw:
        values["seed"] = r.integer(raw["seed"], "separation.seed", minimum=0)
    if "init" in raw:
        init = raw["init"]
        init = [init] if isinstance(init, str) else init
        if not isinstance(init, list) or not init:
            raise r.error("separation.init", f"must be a list of names, got {raw['init']!r}",
                          f"e.g. init = [\"geometry\", \"dictionary\"]; names: {', '.join(INITS)}")
        values["init"] = tuple(r.choice(v, "separation.init", INITS) for v in init)
    if "device" in raw:
        values["device"] = r.choice(raw["device"], "separation.device", DEVICES)
    if "dtype" in raw:
        values["dtype"] = r.choice(raw["dtype"], "separation.dtype", DTYPES)
    if "prior" in raw:
        values["prior"] = r.choice(raw["prior"], "separation.prior", PRIORS)
    if "blind_start" in raw:
        if not isinstance(raw["blind_start"], bool):
            raise r.error("separation.blind_start", f"must be true or false, got {raw['blind_start']!r}")
        values["blind_start"] = raw["blind_start"]
    settings = SeparationSettings(**values)
    if settings.n_fft is not None and settings.hop is not None and settings.hop > settings.n_fft:
        raise r.error("separation.hop", f"hop {settings.hop} exceeds n_fft {settings.n_fft}",
                      "use a hop of at most n_fft (n_fft / 4 is usual)")
    return settings


def _parse_truth(r: _Reader, raw: Any, source_names: list[str]) -> Truth:
    raw = r.table(raw, "truth", ("images", "dry"))
    parts: dict[str, dict[str, Path]] = {}
    for key in ("images", "dry"):
        table = r.table(raw.get(key, {}), f"truth.{key}", tuple(source_names))
        parts[key] = {name: r.file(value, f"truth.{key}.{name}") for name, value in table.items()}
    return Truth(images=parts["images"], dry=parts["dry"])
