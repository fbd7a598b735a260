"""Reading a session's mic signals from its audio files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from studio_sep.io import audio as audio_io
from studio_sep.session.manifest import Session


def load_mics(session: Session, *, start: int = 0, stop: int | None = None,
              mics: Sequence[int] | None = None) -> np.ndarray:
    """The mic signals as ``(M, S)`` float64, in ``[[mics]]`` order (or the mics with
    the given indices), samples ``[start, stop)``."""
    chosen = [session.mics[i] for i in mics] if mics is not None else list(session.mics)
    by_file: dict[Path, list[int]] = {}
    for m in chosen:
        by_file.setdefault(m.file, []).append(m.channel - 1)
    data = {file: dict(zip(chans, audio_io.read_audio(file, channels=chans, start=start, stop=stop)[0]))
            for file, chans in by_file.items()}
    return np.stack([data[m.file][m.channel - 1] for m in chosen])
