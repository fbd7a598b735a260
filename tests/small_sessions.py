"""Small sessions the tests build: a noise-band scene rendered in a small room with a spot
mic per source, and copies of a rendered session for batches (one of them broken)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np


def write_noise_band_session(folder: Path, name: str, dry_NS: np.ndarray, *, sample_rate: int, sources, mics,
                             source_names, mic_names) -> Path:
    """Render ``dry_NS`` from ``sources`` to omni ``mics`` in a 6 × 4 × 3 m room (RT60 0.2 s)
    into ``folder`` (mics.wav, one truth image per source) and write its manifest: each
    source's spot mic is ``spot_<source>``. Returns the manifest's path."""
    from studio_sep.io import audio as audio_io
    from studio_sep.session import Mic, Room, Session, Source, Truth, dump_session
    from studio_sep.sim import calibrate_room, render_images

    room = calibrate_room(dimensions_m=(6.0, 4.0, 3.0), rt60_s=0.2, sample_rate=sample_rate)
    images = render_images(dry_NS, source_positions_m=np.array(sources),
                           mics=[(p, "omni", 0.0, 0.0) for p in mics], calibration=room, sample_rate=sample_rate)
    audio_io.write_audio(folder / "mics.wav", images.sum(axis=0), sample_rate)
    for k, source in enumerate(source_names):
        audio_io.write_audio(folder / f"{source}.wav", images[k], sample_rate)
    session = Session(
        path=folder / "session.toml", name=name,
        mics=tuple(Mic(name=m, position_m=p, file=folder / "mics.wav", channel=i + 1)
                   for i, (m, p) in enumerate(zip(mic_names, mics))),
        sources=tuple(Source(name=source, position_m=p, prompt=source, spot_mic=f"spot_{source}")
                      for source, p in zip(source_names, sources)),
        room=Room(dimensions_m=(6.0, 4.0, 3.0), rt60_s=0.2),
        truth=Truth(images={source: folder / f"{source}.wav" for source in source_names}))
    return dump_session(session)


def copy_session(manifest: Path, folder: Path, name: str) -> Path:
    """A copy of a rendered session under another name (its own folder and audio)."""
    shutil.copytree(manifest.parent, folder / name)
    copy = folder / name / "session.toml"
    text = copy.read_text()
    copy.write_text(re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1))
    return copy


def batch_with_a_broken_session(manifest: Path, root: Path) -> Path:
    """``root`` with alpha and charlie (copies of ``manifest``'s session) and bravo, whose
    audio is gone."""
    for name in ("alpha", "bravo", "charlie"):
        copy_session(manifest, root, name)
    (root / "bravo" / "audio" / "mics.wav").unlink()
    return root
