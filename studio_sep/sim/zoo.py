"""Rendering the scene zoo: a drawn scene (:mod:`studio_sep.sim.zoo_scenes`) into a session folder.

The recording is made at the true positions with the true mic patterns; the manifest says
what a user would have typed (coordinates off by the scene's σ, patterns possibly wrong). The
folder holds ``session.toml``, ``audio/mics.wav``, ``truth/images/<source>.wav`` (each source's
image at every mic, without the sensor noise) and ``render.json`` (every axis value, the true
geometry, the measured RT60). Nothing in the separation path reads ``render.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from studio_sep.data.compose import compose_phrase
from studio_sep.dsp.resample import resample
from studio_sep.io import audio as audio_io
from studio_sep.io.synth import render_in_sequence
from studio_sep.session import Mic, Room, Session, Source, Truth, dump_session
from studio_sep.sim.images import render_images
from studio_sep.sim.room import calibrate_room
from studio_sep.sim.zoo_scenes import Scene
from studio_sep.util.errors import SimulationError
from studio_sep.util.jsonfile import write_json_atomic

SOUNDFONTS = {
    "FluidR3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "TimGM6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "MuseScore": "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
}
PROCESSING_SAMPLE_RATE = 16000
_WORDS = ("the", "studio", "quiet", "bright", "morning", "music", "players", "listen", "slowly", "under", "window",
          "river", "seven", "golden", "table", "voice", "answer", "gentle", "rhythm", "after", "before", "nothing",
          "yellow", "mountain", "paper", "winter", "simple", "letter", "silver", "open", "garden", "number")
_VOICES = ("en", "en+f3", "en+m3", "en-us", "en+f2", "en+m7")


def speech(rng: np.random.Generator, *, duration_s: float, sample_rate: int) -> np.ndarray:
    """Sentences spoken by espeak-ng (a seeded voice and rate) with pauses, ``duration_s`` long, mono."""
    if shutil.which("espeak-ng") is None:
        raise SimulationError(None, "speech", "espeak-ng is not installed", "apt-get install espeak-ng")
    voice = _VOICES[int(rng.integers(len(_VOICES)))]
    rate = int(rng.integers(130, 175))
    n = int(round(duration_s * sample_rate))
    out = np.zeros(n)
    at = int(rng.uniform(0.1, 0.8) * sample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        k = 0
        while at < n:
            words = " ".join(rng.choice(_WORDS, size=int(rng.integers(4, 10))))
            path = Path(tmp) / f"{k}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), words], check=True,
                           capture_output=True)
            x, sr = audio_io.read_audio(path)
            y = resample(x[0], sr, sample_rate)
            stop = min(n, at + len(y))
            out[at:stop] = y[:stop - at]
            at = stop + int(rng.uniform(0.3, 1.2) * sample_rate)
            k += 1
    return out


def soundfont_path(name: str) -> str:
    """The file of one of the zoo's SoundFonts, or a one-line error naming its Debian package."""
    path = SOUNDFONTS[name]
    if not Path(path).is_file():
        package = {"FluidR3": "fluid-soundfont-gm", "TimGM6mb": "timgm6mb-soundfont",
                   "MuseScore": "musescore-general-soundfont"}[name]
        raise SimulationError(Path(path), "soundfont", f"the {name} SoundFont is not installed",
                              f"apt-get install {package}")
    return path


def dry_sources(scene: Scene, *, duration_s: float) -> np.ndarray:
    """The scene's dry sources at its sample rate, ``(N, S)``: GM phrases in one SoundFont load,
    voices by espeak-ng; each scaled to unit RMS over its active part."""
    rng = np.random.default_rng([scene.seed, scene.index, 1])
    n = int(round(duration_s * scene.sample_rate))
    gm = [s for s in scene.sources if s.kind == "gm"]
    midis = [compose_phrase(rng, program=s.program, duration_s=duration_s) for s in gm]
    rendered = (render_in_sequence(midis, sample_rate=scene.sample_rate, soundfont=soundfont_path(scene.soundfont))
                if midis else [])
    dry = []
    for s in scene.sources:
        x = rendered.pop(0) if s.kind == "gm" else speech(rng, duration_s=duration_s, sample_rate=scene.sample_rate)
        x = np.pad(x[:n], (0, max(0, n - len(x))))
        active = np.abs(x) > 1e-3 * np.abs(x).max() if np.any(x) else np.ones(n, bool)
        dry.append(x / max(np.sqrt(np.mean(x[active] ** 2)), 1e-12))
    return np.stack(dry)


def _typed(position_m) -> tuple[float, float, float]:
    """A position as a person types it: to the millimetre."""
    return tuple(round(float(v), 3) for v in position_m)


def _session(scene: Scene, folder: Path) -> Session:
    mics = tuple(Mic(name=m.name, position_m=_typed(m.typed_position_m), file=folder / "audio" / "mics.wav",
                     channel=i + 1, pattern=m.typed_pattern, aim_azimuth_deg=m.aim_azimuth_deg,
                     aim_elevation_deg=m.aim_elevation_deg)
                 for i, m in enumerate(scene.mics))
    sources = tuple(Source(name=s.name, position_m=_typed(s.typed_position_m), prompt=s.prompt, spot_mic=s.spot_mic)
                    for s in scene.sources)
    room = (Room(dimensions_m=scene.dimensions_m, origin_m=(0.0, 0.0, 0.0), rt60_s=scene.rt60_s)
            if scene.axes["rt60_in_manifest"] == "yes" else None)
    truth = Truth(images={s.name: folder / "truth" / "images" / f"{s.name}.wav" for s in scene.sources})
    return Session(path=folder / "session.toml", name=scene.name,
                   description=f"scene zoo session {scene.index} of zoo seed {scene.seed} (what it varies: render.json)",
                   processing_sample_rate=PROCESSING_SAMPLE_RATE, mics=mics, sources=sources, room=room, truth=truth)


def render_scene(scene: Scene, folder: str | Path, *, duration_s: float = 15.0, callback=None) -> Path:
    """Render ``scene`` into ``folder`` (reused when its ``render.json`` says the same scene);
    returns the manifest's path."""
    folder = Path(folder)
    record = folder / "render.json"
    key = {"scene": scene.to_dict(), "duration_s": duration_s}
    if record.is_file():
        try:
            if json.loads(record.read_text()).get("key") == json.loads(json.dumps(key)):
                return folder / "session.toml"
        except (OSError, ValueError):
            pass
    report = callback or (lambda stage, done, total, detail="": None)
    dry_NS = dry_sources(scene, duration_s=duration_s)
    report("dry", 1, 1)
    calibration = calibrate_room(dimensions_m=scene.dimensions_m, rt60_s=scene.rt60_s)
    report("room", 1, 1)
    images_NMS = render_images(dry_NS, source_positions_m=np.array([s.position_m for s in scene.sources]),
                               mics=list(scene.mics), calibration=calibration, sample_rate=scene.sample_rate)
    mics_MS = images_NMS.sum(axis=0)
    rng = np.random.default_rng([scene.seed, scene.index, 2])
    power = np.mean(mics_MS ** 2, axis=1, keepdims=True)
    noise = rng.standard_normal(mics_MS.shape) * np.sqrt(power / 10 ** (scene.snr_db / 10))
    mics_MS = mics_MS + noise
    scale = 0.5 / max(np.abs(mics_MS).max(), 1e-12)
    audio_io.write_audio(folder / "audio" / "mics.wav", mics_MS * scale, scene.sample_rate, subtype="float32")
    for n, s in enumerate(scene.sources):
        audio_io.write_audio(folder / "truth" / "images" / f"{s.name}.wav", images_NMS[n] * scale,
                             scene.sample_rate, subtype="float32")
    report("images", 1, 1)
    dump_session(_session(scene, folder), folder / "session.toml")
    render = {"key": key, "measured_rt60_s": calibration.measured_rt60_s,
              "energy_absorption": calibration.energy_absorption, "max_order": calibration.max_order,
              "noise_scale": float(scale), "true_mics": [m.__dict__ for m in scene.mics],
              "true_sources": [s.__dict__ for s in scene.sources]}
    write_json_atomic(record, render, default=list)
    return folder / "session.toml"
