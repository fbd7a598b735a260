"""The only module that reads or writes audio files.

Time-domain arrays are ``(n_channels, n_samples)`` everywhere in studio-sep (``x_MS``:
mics × samples; ``images_NMS``: sources × mics × samples). Files are written
atomically (temporary sibling, then rename), so a final name never holds a partial file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_path
from .errors import AudioError

#: Subtypes accepted by :func:`write_audio`, by short name.
SUBTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "pcm24": "PCM_24", "pcm16": "PCM_16"}
_FULL_SCALE_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32"}
_RIFF_LIMIT_BYTES = 2**32 - 2**20


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    path: Path
    sample_rate: int
    n_samples: int
    n_channels: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file.

    Raises
    ------
    AudioError
        If the file does not exist or libsndfile cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, None, "file not found", "check the path (relative paths are relative to the manifest)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(path, None, f"not a readable audio file ({_one_line(exc)})",
                         "export it as WAV, FLAC or AIFF") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, None, "holds no audio samples", "export the take again")
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels), str(info.subtype))


def read_audio(
    path: str | os.PathLike,
    *,
    channels: Sequence[int] | None = None,
    dtype: str = "float64",
    start: int = 0,
    stop: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read audio as ``(n_channels, n_samples)``.

    Parameters
    ----------
    path : path-like
        Audio file.
    channels : sequence of int, optional
        0-based channel indices to keep, in that order; all channels by default.
    dtype : {"float64", "float32"}
        Sample type of the returned array (integer files are scaled to [-1, 1)).
    start, stop : int
        Sample range to read.

    Returns
    -------
    x_CS : ndarray, shape (n_channels, n_samples)
    sample_rate : int
    """
    info = audio_info(path)
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < info.n_channels]
        if bad:
            raise AudioError(path, None, f"channel {bad[0] + 1} requested but the file has "
                             f"{info.n_channels} channel(s)", "use a channel between 1 and "
                             f"{info.n_channels}")
    try:
        data, sample_rate = sf.read(str(path), dtype=dtype, always_2d=True, start=start, stop=stop)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(path, None, f"could not be read ({_one_line(exc)})", "export it again") from None
    if channels is not None:
        data = data[:, list(channels)]
    return np.ascontiguousarray(data.T), int(sample_rate)


def find_nonfinite(
    path: str | os.PathLike, *, channels: Sequence[int] | None = None, block_samples: int = 1 << 16
) -> tuple[int, int] | None:
    """Scan a file block by block for NaN or infinite samples.

    Parameters
    ----------
    channels : sequence of int, optional
        0-based channels to scan; all by default.

    Returns
    -------
    (sample, channel) : tuple of int, 0-based, of the first non-finite sample, or
    None when every sample is finite.
    """
    info = audio_info(path)
    if info.subtype not in {"FLOAT", "DOUBLE"}:
        return None  # integer PCM cannot hold NaN or inf
    offset = 0
    with sf.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=block_samples, dtype="float64", always_2d=True):
            if channels is not None:
                block = block[:, list(channels)]
            bad = ~np.isfinite(block)
            if bad.any():
                sample, column = np.argwhere(bad)[0]
                channel = column if channels is None else list(channels)[column]
                return offset + int(sample), int(channel)
            offset += block.shape[0]
    return None


def write_audio(
    path: str | os.PathLike,
    x_CS: np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "float32",
) -> Path:
    """Write ``(n_channels, n_samples)`` audio to a WAV file atomically.

    Parameters
    ----------
    path : path-like
        Destination (``.wav``). Parent folders are created.
    x_CS : ndarray, shape (n_channels, n_samples) or (n_samples,)
        Samples; must be finite. Integer subtypes clip at full scale, so values
        beyond [-1, 1) are refused for them rather than silently clipped.
    sample_rate : int
        Sample rate in Hz.
    subtype : {"float32", "float64", "pcm24", "pcm16"}
        Sample format. Files over 4 GiB are written as RF64.

    Returns
    -------
    Path of the written file.
    """
    path = Path(path)
    x_CS = np.asarray(x_CS)
    if x_CS.ndim == 1:
        x_CS = x_CS[np.newaxis]
    if x_CS.ndim != 2 or x_CS.shape[1] == 0:
        raise ValueError(f"write_audio: expected (n_channels, n_samples) samples, got shape {x_CS.shape}")
    if subtype not in SUBTYPES:
        raise ValueError(f"write_audio: subtype must be one of {sorted(SUBTYPES)}, got {subtype!r}")
    if not np.all(np.isfinite(x_CS)):
        raise AudioError(path, None, "refusing to write non-finite (NaN/inf) samples",
                         "this is a bug in the stage that produced them; please report it")
    sf_subtype = SUBTYPES[subtype]
    peak = float(np.max(np.abs(x_CS)))
    if sf_subtype in _FULL_SCALE_SUBTYPES and peak > 1.0:
        raise AudioError(path, None, f"peak {peak:.3f} exceeds full scale for {subtype}",
                         "lower the gain or write float32")
    n_bytes = x_CS.size * {"FLOAT": 4, "DOUBLE": 8, "PCM_24": 3, "PCM_16": 2}[sf_subtype]
    fmt = "RF64" if n_bytes > _RIFF_LIMIT_BYTES else "WAV"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x_CS.T, int(sample_rate), subtype=sf_subtype, format=fmt)
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
