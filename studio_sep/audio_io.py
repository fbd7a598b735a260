"""The only module that reads or writes audio files.

Time-domain arrays are ``(n_channels, n_samples)`` everywhere in studio-sep (``x_MS``:
mics × samples; ``images_NMS``: sources × mics × samples). Files are written
atomically (temporary sibling, then rename), so a final name never holds a partial file.
"""

from __future__ import annotations

import os
import shutil
import struct
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


@dataclass(frozen=True)
class Bext:
    """Broadcast-WAV ``bext`` chunk fields (EBU Tech 3285, version 1).

    ``time_reference`` is the file's first sample as a count of samples since
    midnight: DAWs place the file at that timestamp.
    """

    description: str = ""
    originator: str = "studio-sep"
    originator_reference: str = ""
    origination_date: str = "2000-01-01"  #: yyyy-mm-dd
    origination_time: str = "00:00:00"  #: hh:mm:ss
    time_reference: int = 0
    coding_history: str = ""


_BEXT_FORMAT = "<256s32s32s10s8sIIH64s5h180s"  # 602 bytes, then the coding history


def _bext_payload(b: Bext) -> bytes:
    def text(value: str, size: int) -> bytes:
        return value.encode("ascii", "replace")[:size]

    fixed = struct.pack(_BEXT_FORMAT, text(b.description, 256), text(b.originator, 32),
                        text(b.originator_reference, 32), text(b.origination_date, 10),
                        text(b.origination_time, 8), b.time_reference & 0xFFFFFFFF, b.time_reference >> 32, 1,
                        b"", 0, 0, 0, 0, 0, b"")
    return fixed + b.coding_history.encode("ascii", "replace")


def read_bext(path: str | os.PathLike) -> Bext | None:
    """The ``bext`` chunk of a WAV file, or None when it has none."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"bext":
                data = f.read(size)
                fields = struct.unpack(_BEXT_FORMAT, data[:602])
                text = lambda raw: raw.rstrip(b"\0").decode("ascii", "replace")  # noqa: E731
                return Bext(description=text(fields[0]), originator=text(fields[1]),
                            originator_reference=text(fields[2]), origination_date=text(fields[3]),
                            origination_time=text(fields[4]), time_reference=fields[5] | (fields[6] << 32),
                            coding_history=text(data[602:]))
            f.seek(size + (size & 1), os.SEEK_CUR)


def _insert_bext(src: Path, dst: Path, bext: Bext) -> None:
    """Copy a RIFF/WAVE file, adding a bext chunk right after its fmt chunk."""
    payload = _bext_payload(bext)
    chunk = b"bext" + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        head = fin.read(12)
        if head[:4] != b"RIFF":
            raise ValueError("bext can only be added to a RIFF WAV file (not RF64)")
        riff_size = struct.unpack("<I", head[4:8])[0] + len(chunk)
        fout.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE")
        inserted = False
        while True:
            header = fin.read(8)
            if len(header) < 8:
                break
            cid, size = header[:4], struct.unpack("<I", header[4:])[0]
            fout.write(header)
            if cid == b"data":
                shutil.copyfileobj(fin, fout, 1 << 20)
                break
            fout.write(fin.read(size + (size & 1)))
            if cid == b"fmt " and not inserted:
                fout.write(chunk)
                inserted = True


def write_audio(
    path: str | os.PathLike,
    x_CS: np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "float32",
    bext: Bext | None = None,
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
    bext : Bext, optional
        Add a Broadcast-WAV ``bext`` chunk (not for RF64 files).

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
    if bext is not None and fmt == "RF64":
        raise AudioError(path, None, "a bext chunk cannot go into a file over 4 GiB", "split the stem")
    with atomic_path(path) as tmp:
        if bext is None:
            sf.write(str(tmp), x_CS.T, int(sample_rate), subtype=sf_subtype, format=fmt)
        else:
            plain = tmp.with_name(tmp.name + ".plain")
            try:
                sf.write(str(plain), x_CS.T, int(sample_rate), subtype=sf_subtype, format=fmt)
                _insert_bext(plain, tmp, bext)
            finally:
                plain.unlink(missing_ok=True)
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
