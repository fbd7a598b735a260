"""The simulated trio session: the IRCAM trio's geometry and the session folder with ground truth.

:func:`simulate_session` writes a rendered look-alike of a studio trio session, with
exact ground truth, in three steps, each a pure function of
:class:`SimulationSettings`:

1. :func:`studio_sep.data.compose.compose_parts` writes seeded MIDI parts (piano, tenor
   sax, violin) that overlap in time and in pitch range, as a real trio does;
2. :func:`studio_sep.io.synth.render_midi` renders each part dry and mono with
   FluidSynth;
3. :func:`studio_sep.sim.room.calibrate_room` finds the walls for the requested RT60
   and :func:`studio_sep.sim.images.image_blocks` gives every source's image at every
   mic, one block of samples at a time; the images are streamed to their files
   block by block, so that a long session (20 minutes at 48 kHz) renders in a few GB
   of memory.

:func:`ircam_trio_geometry` gives the microphone and source layout of the paper's
IRCAM trio session, shifted into the simulated room; :func:`reference_session` the
manifest of the rendered session.

Conventions (the package's, see :mod:`studio_sep.dsp.geometry`): positions in metres as
``(x, y, z)``; azimuth in degrees in the horizontal plane from +x towards +y;
elevation in degrees, positive upwards.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio_sep.data.compose import REFERENCE_SEED_OFFSET, compose_parts, compose_reference_parts
from studio_sep.dsp.geometry import aim_angles
from studio_sep.io.synth import check_sample_rate, find_soundfont, render_parts
from studio_sep.sim.images import IMAGE_BLOCK_SAMPLES, image_blocks, render_images
from studio_sep.sim.room import (
    DEFAULT_DIMENSIONS_M,
    DEFAULT_RT60_S,
    calibrate_room,
)
from studio_sep.util.errors import SimulationError

__all__ = [
    "DEFAULT_ORIGIN_M",
    "IRCAM_TRIO_MICS",
    "IRCAM_TRIO_SOURCES",
    "MicSpec",
    "SimulationResult",
    "SimulationSettings",
    "SourceSpec",
    "ircam_trio_geometry",
    "reference_session",
    "simulate_session",
]

@dataclass(frozen=True)
class MicSpec:
    """A microphone: the fields a session manifest carries for it.

    Attributes
    ----------
    name : str
    position_m : tuple of 3 float
    pattern : str
        One of :data:`~studio_sep.sim.room.MIC_PATTERN_P`.
    aim_azimuth_deg, aim_elevation_deg : float
        Direction of the pattern's main axis.
    """

    name: str
    position_m: tuple[float, float, float]
    pattern: str
    aim_azimuth_deg: float = 0.0
    aim_elevation_deg: float = 0.0


@dataclass(frozen=True)
class SourceSpec:
    """A sound source: name, position and General MIDI program (0-based)."""

    name: str
    position_m: tuple[float, float, float]
    program: int


DEFAULT_ORIGIN_M = (0.6, 2.8, 0.0)

#: Sources of the IRCAM trio, relative to the foot of the ambience mic.
IRCAM_TRIO_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("piano", (6.0, 0.0, 0.6), program=0),
    SourceSpec("sax", (4.5, 1.0, 0.6), program=66),
    SourceSpec("violin", (4.5, -1.0, 0.6), program=40),
)


def _mic_aimed_at(name: str, position_m, pattern: str, target: str) -> MicSpec:
    target_m = next(s.position_m for s in IRCAM_TRIO_SOURCES if s.name == target)
    azimuth_deg, elevation_deg = aim_angles(position_m, target_m)
    return MicSpec(name, tuple(position_m), pattern, azimuth_deg, elevation_deg)


#: Microphones of the IRCAM trio, relative to the foot of the ambience mic: a
#: three-cardioid main array, an ambience cardioid, one figure-8 spot per instrument.
IRCAM_TRIO_MICS: tuple[MicSpec, ...] = (
    MicSpec("trio_l", (3.0, 0.0, 1.52), "cardioid", 60.0, 0.0),
    _mic_aimed_at("trio_c", (3.0, 0.0, 1.50), "cardioid", "piano"),
    MicSpec("trio_r", (3.0, 0.0, 1.48), "cardioid", -60.0, 0.0),
    MicSpec("ambience", (0.0, 0.0, 1.8), "cardioid", 0.0, 0.0),
    _mic_aimed_at("spot_piano", (6.0, 0.0, 1.9), "figure8", "piano"),
    _mic_aimed_at("spot_sax", (4.5, 0.5, 1.7), "figure8", "sax"),
    _mic_aimed_at("spot_violin", (4.5, -0.5, 1.7), "figure8", "violin"),
)


def ircam_trio_geometry(
    *, origin_m: Sequence[float] = DEFAULT_ORIGIN_M
) -> tuple[tuple[MicSpec, ...], tuple[SourceSpec, ...]]:
    """The IRCAM trio's mics and sources in room coordinates.

    The rigid layout of :data:`IRCAM_TRIO_MICS` and :data:`IRCAM_TRIO_SOURCES` is
    translated by ``origin_m`` (the room position of the ambience mic's foot); aims
    do not change. The default puts x = 0..6 m at 0.6..6.6 m of the 7.5 m room,
    centred across its 5.6 m width.

    Returns
    -------
    mics : tuple of MicSpec
    sources : tuple of SourceSpec
    """
    origin = np.asarray(origin_m, dtype=float)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise SimulationError(None, "origin_m", f"origin_m={origin_m!r} must be 3 finite numbers", None)

    def shift(p):
        return tuple(float(v) for v in np.asarray(p, dtype=float) + origin)

    mics = tuple(
        MicSpec(m.name, shift(m.position_m), m.pattern, m.aim_azimuth_deg, m.aim_elevation_deg)
        for m in IRCAM_TRIO_MICS
    )
    sources = tuple(SourceSpec(s.name, shift(s.position_m), s.program) for s in IRCAM_TRIO_SOURCES)
    return mics, sources


PROCESSING_SAMPLE_RATE = 16000  #: the paper's processing rate, written into the manifest
SESSION_NAME = "ircam_trio"
SESSION_DESCRIPTION = ("Violin, tenor sax and piano in a 109 m3 studio, 7 mics "
                       "(rendered look-alike of the paper's session)")


@dataclass(frozen=True)
class SimulationSettings:
    """Everything that determines a rendered session (and so its samples)."""

    seed: int = 0
    duration_s: float = 20.0
    sample_rate: int = 48000
    rt60_s: float = DEFAULT_RT60_S
    soundfont: Path | None = None
    reference_duration_s: float = 10.0


@dataclass(frozen=True)
class SimulationResult:
    manifest: Path
    reused: bool
    rt60_requested_s: float
    rt60_measured_s: float
    render: dict


def reference_session(folder: str | os.PathLike, settings: SimulationSettings = SimulationSettings()):
    """The manifest of the rendered reference session in ``folder`` (nothing is read
    or written). The shipped ``sessions/ircam_trio/session.toml`` is this manifest for
    the default settings."""
    from studio_sep.session import Mic, Room, Session, Source, Truth

    folder = Path(folder).resolve()
    aimed = {"trio_c": "piano", "spot_piano": "piano", "spot_sax": "sax", "spot_violin": "violin"}
    mics = tuple(
        Mic(name=m.name, position_m=tuple(m.position_m), file=folder / "audio" / "mics.wav", channel=i + 1,
            pattern=m.pattern, aim_azimuth_deg=m.aim_azimuth_deg, aim_elevation_deg=m.aim_elevation_deg,
            aim_at=aimed.get(m.name))
        for i, m in enumerate(IRCAM_TRIO_MICS))
    prompts = {"piano": "piano", "sax": "tenor saxophone", "violin": "violin"}
    sources = tuple(
        Source(name=s.name, position_m=tuple(s.position_m), prompt=prompts[s.name], spot_mic=f"spot_{s.name}",
               reference=folder / "reference" / f"{s.name}.wav", midi=folder / "midi" / f"{s.name}.mid")
        for s in IRCAM_TRIO_SOURCES)
    truth = Truth(images={s.name: folder / "truth" / "images" / f"{s.name}.wav" for s in sources},
                  dry={s.name: folder / "truth" / "dry" / f"{s.name}.wav" for s in sources})
    return Session(path=folder / "session.toml", name=SESSION_NAME, description=SESSION_DESCRIPTION,
                   processing_sample_rate=PROCESSING_SAMPLE_RATE, mics=mics, sources=sources,
                   room=Room(dimensions_m=DEFAULT_DIMENSIONS_M, origin_m=DEFAULT_ORIGIN_M,
                             rt60_s=float(settings.rt60_s)),
                   truth=truth)


def _check_settings(settings: SimulationSettings) -> None:
    check_sample_rate(settings.sample_rate)
    checks = (
        ("duration", settings.duration_s, 2.0, 3600.0, "seconds"),
        ("reference-duration", settings.reference_duration_s, 2.0, 600.0, "seconds"),
        ("rt60", settings.rt60_s, 0.1, 2.0, "seconds"),
    )
    for name, value, low, high, unit in checks:
        if not (math.isfinite(value) and low <= value <= high):
            raise SimulationError(None, f"--{name}", f"{value} is outside {low}-{high} {unit}",
                                  f"pass a value between {low} and {high}")
    if settings.seed < 0:
        raise SimulationError(None, "--seed", f"{settings.seed} is negative", "pass a seed of 0 or more")


# Long: the render's steps in order (checks, reuse, compose, render, room, images, files,
# record), each one call, so the order of the atomic writes reads top to bottom.
def simulate_session(
    out_dir: str | os.PathLike,
    settings: SimulationSettings = SimulationSettings(),
    *,
    force: bool = False,
    callback: Callable[..., None] | None = None,
) -> SimulationResult:
    """Render the reference trio session into ``out_dir`` (see ``docs/manifest.md``).

    Checks come first: the settings, the SoundFont, and an existing ``session.toml``
    in ``out_dir``, which is replaced only if it describes the same session or
    ``force`` is set. A folder that already holds this exact render (same settings,
    same SoundFont bytes, every file valid) is reused as it is. Every file is written
    atomically; ``render.json`` is written last, so its presence means the render
    is complete. The room images are computed and written block by block
    (:data:`~studio_sep.sim.images.IMAGE_BLOCK_SAMPLES`): memory holds the dry signals
    and one block of images, not every image (2.6 GiB peak for 20 minutes at 48 kHz,
    not about 20).

    ``callback(stage, done, total)`` reports progress.
    """

    from studio_sep.io import audio as audio_io
    from studio_sep.session import dump_session
    from studio_sep.util.atomic import atomic_path, file_sha256
    from studio_sep.util.jsonfile import write_json_atomic

    _check_settings(settings)
    soundfont = find_soundfont(settings.soundfont).resolve()
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise SimulationError(folder, None, "exists and is not a folder", "give a folder path")
    session = reference_session(folder, settings)
    manifest_path = folder / "session.toml"
    same_manifest = _same_manifest(manifest_path, session, force=force)

    sample_rate = int(settings.sample_rate)
    key = {"seed": settings.seed, "duration_s": settings.duration_s, "sample_rate": sample_rate,
           "rt60_s": settings.rt60_s, "reference_duration_s": settings.reference_duration_s,
           "soundfont_sha256": file_sha256(soundfont)}
    render_path = folder / "render.json"
    reused = _reusable_render(render_path, manifest_path, key, settings.rt60_s)
    if reused is not None:
        return reused

    report = callback or (lambda stage, done, total, detail="": None)

    def stage(name: str):
        return lambda _stage, fraction: report(name, round(100 * fraction), 100)

    n_samples = round(settings.duration_s * sample_rate)
    n_reference = round(settings.reference_duration_s * sample_rate)
    names = tuple(s.name for s in IRCAM_TRIO_SOURCES)
    parts = compose_parts(seed=settings.seed, duration_s=settings.duration_s, names=names)
    solo_parts = compose_reference_parts(seed=settings.seed, duration_s=settings.reference_duration_s, names=names)
    dry_NS = render_parts(parts, sample_rate=sample_rate, soundfont=soundfont, n_samples=n_samples,
                          callback=stage("render parts"))
    solo_NS = render_parts(solo_parts, sample_rate=sample_rate, soundfont=soundfont, n_samples=n_reference,
                           callback=stage("render solo takes"))
    calibration = calibrate_room(dimensions_m=DEFAULT_DIMENSIONS_M, rt60_s=settings.rt60_s,
                                 callback=stage("calibrate room"))
    room_mics, room_sources = ircam_trio_geometry(origin_m=DEFAULT_ORIGIN_M)
    positions = np.array([s.position_m for s in room_sources])
    mic_index = {m.name: i for i, m in enumerate(room_mics)}
    solo_NS_at_spot = np.stack([
        render_images(solo_NS[n:n + 1], source_positions_m=positions[n:n + 1],
                      mics=[room_mics[mic_index[f"spot_{name}"]]], calibration=calibration,
                      sample_rate=sample_rate)[0, 0]
        for n, name in enumerate(names)])
    report("solo takes in the room", 1, 1)

    blocks = image_blocks(dry_NS, source_positions_m=positions, mics=room_mics, calibration=calibration,
                          sample_rate=sample_rate, block_samples=IMAGE_BLOCK_SAMPLES,
                          callback=stage("room images"))
    mic_peak = _write_images(folder, blocks, dry_NS, names, n_mics=len(room_mics), sample_rate=sample_rate)
    for n, name in enumerate(names):
        audio_io.write_audio(folder / "reference" / f"{name}.wav", solo_NS_at_spot[n], sample_rate,
                             subtype="float32")
    report("write files", 1, 1)
    for name in names:
        for prefix, midi in (("", parts[name]), ("reference_", solo_parts[name])):
            with atomic_path(folder / "midi" / f"{prefix}{name}.mid") as tmp:
                midi.save(str(tmp))
    if not same_manifest:
        dump_session(session, manifest_path)

    render = _render_record(settings, key, soundfont, calibration, mic_peak, dry_NS, names)
    write_json_atomic(render_path, render)
    return SimulationResult(manifest_path, False, settings.rt60_s, calibration.measured_rt60_s, render)


def _same_manifest(manifest_path: Path, session, *, force: bool) -> bool:
    """Whether ``manifest_path`` already describes ``session`` (an equal manifest is kept
    as it is, with its comments); refuses another session's manifest unless ``force``."""
    from studio_sep.session import load_session, session_to_dict
    from studio_sep.util.errors import StudioSepError

    same_manifest = False
    if manifest_path.exists():
        try:
            same_manifest = session_to_dict(load_session(manifest_path, check_audio=False)) == \
                session_to_dict(session)
        except StudioSepError:
            same_manifest = False
        if not same_manifest and not force:
            raise SimulationError(manifest_path, None, "exists and describes another session",
                                  "pick another folder, or pass --force to overwrite it")
    return same_manifest


def _reusable_render(render_path: Path, manifest_path: Path, key: dict,
                     rt60_s: float) -> SimulationResult | None:
    """The result of a complete render of ``key`` already in the folder, else None."""
    import json

    from studio_sep.session import load_session
    from studio_sep.util.errors import StudioSepError

    if render_path.is_file() and manifest_path.is_file():
        try:
            previous = json.loads(render_path.read_text())
            if previous.get("key") == key:
                load_session(manifest_path)  # every file present, readable, consistent
                measured = previous["room"]["measured_rt60_s"]
                return SimulationResult(manifest_path, True, rt60_s, measured, previous)
        except (StudioSepError, ValueError, KeyError):
            pass  # incomplete or stale: render again
    return None


def _write_images(folder: Path, blocks, dry_NS: np.ndarray, names: Sequence[str], *, n_mics: int,
                  sample_rate: int) -> float:
    """Write the mic signals, the images and the dry signals block by block as the images
    are computed; returns the mic signals' peak.

    The images of every source at every mic never are in memory at once (9.7 GB in
    float64 for 20 minutes at 48 kHz). float32 files, all rounded from the same
    float64 render: the images sum to the mic signals to float32 precision.
    """
    from studio_sep.io import audio as audio_io

    n_samples = dry_NS.shape[1]
    mic_peak = 0.0
    with contextlib.ExitStack() as files:
        def writer(path: Path, n_channels: int) -> audio_io.AudioWriter:
            return files.enter_context(audio_io.open_audio_writer(
                path, sample_rate, n_channels=n_channels, n_samples=n_samples, subtype="float32"))

        mics_out = writer(folder / "audio" / "mics.wav", n_mics)
        images_out = [writer(folder / "truth" / "images" / f"{name}.wav", n_mics) for name in names]
        dry_out = [writer(folder / "truth" / "dry" / f"{name}.wav", 1) for name in names]
        for start, images_NMB in blocks:
            stop = start + images_NMB.shape[-1]
            mics_MB = images_NMB.sum(axis=0)
            mic_peak = max(mic_peak, float(mics_MB.max()), -float(mics_MB.min()))
            mics_out.write(mics_MB)
            for n in range(len(names)):
                images_out[n].write(images_NMB[n])
                dry_out[n].write(dry_NS[n, start:stop])
            del images_NMB, mics_MB  # one block in memory at a time, not two
    return mic_peak


def _render_record(settings: SimulationSettings, key: dict, soundfont: Path, calibration, mic_peak: float,
                   dry_NS: np.ndarray, names: Sequence[str]) -> dict:
    """The contents of ``render.json``: what was rendered, how, and its levels."""
    from importlib.metadata import version

    from studio_sep import __version__

    return {
        "studio_sep": __version__, "key": key, "soundfont": str(soundfont),
        "composition": {"seed": settings.seed, "reference_seed": settings.seed + REFERENCE_SEED_OFFSET,
                        "programs": {s.name: s.program for s in IRCAM_TRIO_SOURCES}},
        "room": {"dimensions_m": list(DEFAULT_DIMENSIONS_M), "origin_m": list(DEFAULT_ORIGIN_M),
                 "rt60_requested_s": settings.rt60_s, "measured_rt60_s": round(calibration.measured_rt60_s, 4),
                 "rt60_measure": f"T{calibration.decay_db:g} extrapolated to 60 dB, mean of probe RIRs",
                 "energy_absorption": round(calibration.energy_absorption, 5), "max_order": calibration.max_order,
                 "sabine_energy_absorption": round(calibration.sabine_energy_absorption, 5),
                 "sabine_measured_rt60_s": round(calibration.sabine_measured_rt60_s, 4),
                 "image_block_samples": IMAGE_BLOCK_SAMPLES},
        "levels": {"mic_peak": round(mic_peak, 4),
                   "dry_rms": {name: round(float(np.sqrt(np.mean(dry_NS[n] ** 2))), 5)
                               for n, name in enumerate(names)}},
        "versions": {name: version(name) for name in ("pyroomacoustics", "pyfluidsynth", "mido", "numpy")},
    }
