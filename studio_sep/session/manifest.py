"""Session manifests: typed models, loading with validation, writing.

A session manifest is a TOML file (``session.toml``) describing one recording: its
microphones (position, pattern, aim, where the signal lives), its sources (position,
text prompt, optional solo reference take, spot mic, MIDI score), optionally the room,
separation settings and ground truth. The format is documented in
``docs/manifest.md``. Paths inside a manifest are relative to the manifest.

:func:`load_session` checks everything a later stage relies on before any work is
done, and raises :class:`~studio_sep.util.errors.ManifestError` with a message naming the
manifest, the field, the problem and the fix.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from studio_sep.dsp.geometry import aim_angles
from studio_sep.io import audio as audio_io
from studio_sep.util.atomic import write_text_atomic
from studio_sep.util.errors import AudioError, ManifestError
from studio_sep.util.toml import to_toml, unknown_key_fix

PATTERNS = ("omni", "cardioid", "subcardioid", "hypercardioid", "figure8")
INITS = ("circular", "geometry", "dictionary", "prior")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
PRIORS = ("none", "nmf", "classnet")  #: spectral priors (studio_sep.priors.spectral_prior)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = ("session", "room", "mics", "sources", "separation", "truth")


@dataclass(frozen=True)
class Mic:
    """One microphone: where it is, how it picks up, where its signal is stored."""

    name: str
    position_m: tuple[float, float, float]
    file: Path
    channel: int = 1  #: 1-based channel of ``file``
    pattern: str = "omni"
    aim_azimuth_deg: float = 0.0
    aim_elevation_deg: float = 0.0
    aim_at: str | None = None  #: source name the mic points at (sets the aim angles)


@dataclass(frozen=True)
class Source:
    """One instrument (sound source) of the session."""

    name: str
    position_m: tuple[float, float, float]
    prompt: str
    spot_mic: str | None = None
    reference: Path | None = None  #: solo take of this instrument (mono audio)
    midi: Path | None = None  #: score of this source's part


@dataclass(frozen=True)
class Room:
    """The room, when known. Positions are in the manifest's frame; ``origin_m`` is
    where that frame's origin lies in room coordinates (corner at 0, 0, 0)."""

    dimensions_m: tuple[float, float, float] | None = None
    origin_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rt60_s: float | None = None


@dataclass(frozen=True)
class SeparationSettings:
    """Separation settings from the manifest; ``None`` means the engine's default."""

    n_fft: int | None = None
    hop: int | None = None
    n_iter: int | None = None
    n_basis: int | None = None
    init: tuple[str, ...] | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    prior: str | None = None


@dataclass(frozen=True)
class Truth:
    """Ground truth: per source, its image at every mic (one channel per mic, in the
    order of ``[[mics]]``) and its dry (anechoic) signal."""

    images: Mapping[str, Path] = field(default_factory=dict)
    dry: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    """A validated session manifest.

    ``sample_rate`` and ``n_samples`` come from the mic audio; they are ``None`` when
    the session was loaded with ``check_audio=False``.
    """

    path: Path
    name: str
    mics: tuple[Mic, ...]
    sources: tuple[Source, ...]
    description: str = ""
    processing_sample_rate: int | None = None
    room: Room | None = None
    separation: SeparationSettings = SeparationSettings()
    truth: Truth | None = None
    sample_rate: int | None = None
    n_samples: int | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def duration_s(self) -> float | None:
        if self.sample_rate is None or self.n_samples is None:
            return None
        return self.n_samples / self.sample_rate

    @property
    def has_truth_images(self) -> bool:
        """A ground-truth image file for every source (what evaluation needs)."""
        return self.truth is not None and set(self.truth.images) == {s.name for s in self.sources}

    def mic(self, name: str) -> Mic:
        return next(m for m in self.mics if m.name == name)

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)


# --------------------------------------------------------------------------- loading


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
        session = _check_audio(session)
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
        if not _NAME_RE.match(value):
            raise self.error(where, f"name {value!r} is not usable as a file name",
                             "use letters, digits, '_', '-' or '.', starting with a letter or digit")
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
        return (self.folder / value).resolve() if not os.path.isabs(value) else Path(value)


def _parse(r: _Reader, data: dict) -> Session:
    r.table(data, "", _TOP_KEYS)
    head = r.table(r.required(data, "session", ""), "session", ("name", "description", "processing_sample_rate"))
    name = r.name(r.required(head, "name", "session"), "session.name")
    description = head.get("description", "")
    if not isinstance(description, str):
        raise r.error("session.description", f"must be a string, got {description!r}")
    processing_sr = head.get("processing_sample_rate")
    if processing_sr is not None:
        processing_sr = r.integer(processing_sr, "session.processing_sample_rate", minimum=8000)

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
    raw = r.table(raw, "separation", tuple(SeparationSettings.__dataclass_fields__))
    values: dict[str, Any] = {}
    for key in ("n_fft", "hop", "n_iter", "n_basis"):
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


# --------------------------------------------------------------------------- audio checks


def _check_audio(session: Session) -> Session:
    """Open every referenced audio file and check it against the mics."""
    path = session.path

    def info(file: Path, field_name: str) -> audio_io.AudioInfo:
        try:
            return audio_io.audio_info(file)
        except AudioError as exc:
            raise ManifestError(path, field_name, f"{_display(file, path)}: {exc.problem}", exc.fix) from None

    def finite(file: Path, field_name: str, channels: list[int]) -> None:
        try:
            bad = audio_io.find_nonfinite(file, channels=channels)
        except AudioError as exc:
            raise ManifestError(path, field_name, f"{_display(file, path)}: {exc.problem}", exc.fix) from None
        if bad is not None:
            sample, channel = bad
            raise ManifestError(path, field_name,
                                f"{_display(file, path)} has a NaN/inf sample at sample {sample} "
                                f"of channel {channel + 1}", "repair or re-export the audio")

    first: tuple[int, int, str] | None = None  # sample rate, n_samples, field of the first mic
    channels_by_file: dict[Path, list[int]] = {}
    for i, mic in enumerate(session.mics):
        where = f"mics[{i}]"
        meta = info(mic.file, f"{where}.file")
        if mic.channel > meta.n_channels:
            raise ManifestError(path, f"{where}.channel",
                                f"channel {mic.channel} but {_display(mic.file, path)} has "
                                f"{meta.n_channels} channel(s)", f"use a channel between 1 and {meta.n_channels}")
        if first is None:
            first = (meta.sample_rate, meta.n_samples, where)
        elif meta.sample_rate != first[0]:
            raise ManifestError(path, f"{where}.file",
                                f"sample rate {meta.sample_rate} Hz differs from {first[2]} ({first[0]} Hz)",
                                "export all mics at one sample rate")
        elif meta.n_samples != first[1]:
            raise ManifestError(path, f"{where}.file",
                                f"length {meta.n_samples} samples differs from {first[2]} ({first[1]} samples)",
                                "export all mics from the same start to the same end")
        channels_by_file.setdefault(mic.file, []).append(mic.channel - 1)
    assert first is not None  # the parser guarantees at least one mic
    for file, channels in channels_by_file.items():
        mic_index = next(i for i, m in enumerate(session.mics) if m.file == file)
        finite(file, f"mics[{mic_index}].file", sorted(set(channels)))

    sample_rate, n_samples, _ = first
    for i, source in enumerate(session.sources):
        if source.reference is not None:
            where = f"sources[{i}].reference"
            meta = info(source.reference, where)
            if meta.n_channels != 1:
                raise ManifestError(path, where, f"{_display(source.reference, path)} has {meta.n_channels} "
                                    "channels; a reference take must be mono", "export the solo take as mono")
            finite(source.reference, where, [0])
        if source.midi is not None and not source.midi.is_file():
            raise ManifestError(path, f"sources[{i}].midi", f"{_display(source.midi, path)}: file not found",
                                "fix the path or remove the midi key")

    if session.truth is not None:
        for key, n_channels in (("images", len(session.mics)), ("dry", 1)):
            for name, file in getattr(session.truth, key).items():
                where = f"truth.{key}.{name}"
                meta = info(file, where)
                if meta.n_channels != n_channels:
                    raise ManifestError(path, where, f"{_display(file, path)} has {meta.n_channels} channel(s), "
                                        f"expected {n_channels}",
                                        "one channel per mic in [[mics]] order" if key == "images" else "mono")
                if (meta.sample_rate, meta.n_samples) != (sample_rate, n_samples):
                    raise ManifestError(path, where, f"{_display(file, path)} is {meta.n_samples} samples at "
                                        f"{meta.sample_rate} Hz; the mics are {n_samples} at {sample_rate} Hz",
                                        "ground truth must match the mic recordings sample for sample")
                finite(file, where, list(range(n_channels)))
    return replace(session, sample_rate=sample_rate, n_samples=n_samples)


def _display(file: Path, manifest: Path) -> str:
    try:
        return os.path.relpath(file, manifest.parent)
    except ValueError:
        return str(file)


# --------------------------------------------------------------------------- writing


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
    sep = {k: (list(v) if isinstance(v, tuple) else v)
           for k, v in vars(session.separation).items() if v is not None}
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
