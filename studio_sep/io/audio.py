"""The only module that reads or writes audio files.

Time-domain arrays are ``(n_channels, n_samples)`` everywhere in studio-sep (``x_MS``:
mics × samples; ``images_NMS``: sources × mics × samples). Files are written
atomically (temporary sibling, then rename), so a final name never holds a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import AudioError, OutputError

#: Subtypes accepted by :func:`write_audio`, by short name.
SUBTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "pcm24": "PCM_24", "pcm16": "PCM_16"}
_FULL_SCALE_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32"}
_RIFF_LIMIT_BYTES = 2**32 - 2**20
_WRITE_FRAMES = 1 << 16  # frames handed to libsndfile at a time by AudioWriter


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
    truncated = _wav_truncation(path)
    if truncated is not None:
        raise AudioError(path, None, f"truncated: header says {truncated[0]} frames, file holds {truncated[1]}",
                         "the file was cut short: copy or export it again")
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels), str(info.subtype))


def _wav_truncation(path: Path) -> tuple[int, int] | None:
    """(frames the header declares, whole frames the file holds) of a RIFF WAVE file whose
    ``data`` chunk is cut short; None for any other file. libsndfile reads such a file
    without complaint (as many frames as it finds), so a copy cut short would pass as a
    shorter take. The placeholder sizes of an unfinished recording (0, 0xFFFFFFFF) are
    not checked."""
    with open(path, "rb") as f:
        file_size, block_align = os.fstat(f.fileno()).st_size, 0
        for chunk_id, length in _wav_chunks(f):
            if chunk_id == b"data":
                held = file_size - f.tell()
                if not block_align or length in (0, 0xFFFFFFFF) or length <= held:
                    return None
                return length // block_align, held // block_align
            if chunk_id == b"fmt " and length >= 14:
                block_align = struct.unpack("<H", f.read(14)[12:14])[0]
    return None


def _wav_chunks(f):
    """``(chunk id, length)`` of every chunk of an open RIFF WAVE file, the file positioned at
    the chunk's data when each is given (the caller may read from it); nothing for another
    kind of file."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
        return
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return
        chunk_id, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        start = f.tell()
        yield chunk_id, length
        f.seek(start + length + (length & 1))


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


@dataclass(frozen=True)
class SampleScan:
    """What :func:`scan_samples` found: the first non-finite sample (``(sample, channel)``,
    0-based, or None) and the channels that are digitally silent (every sample 0)."""

    nonfinite: tuple[int, int] | None
    silent: tuple[int, ...]


def scan_samples(
    path: str | os.PathLike, *, channels: Sequence[int] | None = None, silence: bool = True,
    block_samples: int = 1 << 16,
) -> SampleScan:
    """Scan a file block by block for NaN or infinite samples and for silent channels.

    Parameters
    ----------
    channels : sequence of int, optional
        0-based channels to scan; all by default. Channels in the result are the file's.
    silence : bool
        Also find the digitally silent channels. An integer file (which cannot hold NaN)
        is read only until every channel has shown a non-zero sample.
    """
    info = audio_info(path)
    chosen = list(range(info.n_channels)) if channels is None else list(channels)
    floating = info.subtype in {"FLOAT", "DOUBLE"}
    heard = np.zeros(len(chosen), dtype=bool)
    if not floating and not silence:
        return SampleScan(None, ())  # integer PCM cannot hold NaN or inf
    offset = 0
    with sf.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=block_samples, dtype="float64", always_2d=True):
            block = block[:, chosen]
            if floating:
                bad = ~np.isfinite(block)
                if bad.any():
                    sample, column = np.argwhere(bad)[0]
                    return SampleScan((offset + int(sample), chosen[column]), ())
            heard |= (block != 0).any(axis=0)
            if not floating and heard.all():
                break
            offset += block.shape[0]
    return SampleScan(None, tuple(c for c, h in zip(chosen, heard) if not h) if silence else ())


def find_nonfinite(
    path: str | os.PathLike, *, channels: Sequence[int] | None = None, block_samples: int = 1 << 16
) -> tuple[int, int] | None:
    """The first NaN or infinite sample as ``(sample, channel)``, 0-based, or None when
    every sample is finite (:func:`scan_samples` without the silence check)."""
    return scan_samples(path, channels=channels, silence=False, block_samples=block_samples).nonfinite


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
        for cid, size in _wav_chunks(f):
            if cid == b"bext":
                data = f.read(size)
                fields = struct.unpack(_BEXT_FORMAT, data[:602])
                text = lambda raw: raw.rstrip(b"\0").decode("ascii", "replace")  # noqa: E731
                return Bext(description=text(fields[0]), originator=text(fields[1]),
                            originator_reference=text(fields[2]), origination_date=text(fields[3]),
                            origination_time=text(fields[4]), time_reference=fields[5] | (fields[6] << 32),
                            coding_history=text(data[602:]))
    return None


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
    _check_samples(path, x_CS, subtype)
    sf_subtype = SUBTYPES[subtype]
    fmt = _container(x_CS.size, subtype)
    if bext is not None and fmt == "RF64":
        raise AudioError(path, None, "a bext chunk cannot go into a file over 4 GiB", "split the stem")
    with atomic_path(path) as tmp, _write_errors(path, x_CS.size, subtype):
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


@contextlib.contextmanager
def _write_errors(path: Path, n_values: int, subtype: str) -> Iterator[None]:
    """libsndfile's write failures ("System error.", or fewer frames written than given,
    which soundfile asserts) as an :class:`OutputError` naming ``path`` and, when the file
    system has no room for the file, saying so."""
    try:
        yield
    except (sf.LibsndfileError, RuntimeError, AssertionError) as exc:
        n_bytes = n_values * {"FLOAT": 4, "DOUBLE": 8, "PCM_24": 3, "PCM_16": 2}[SUBTYPES[subtype]]
        if _free_bytes(path.parent) < n_bytes:
            raise OutputError.from_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from exc
        raise OutputError(path, f"could not be written ({_one_line(exc) or type(exc).__name__})",
                          "check the output folder's file system") from exc


def _free_bytes(folder: Path) -> int:
    """Room left for this process's files (root may use the reserved blocks)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _check_samples(path: Path, x_CS: np.ndarray, subtype: str) -> None:
    """Refuse non-finite samples, and samples beyond full scale for integer subtypes."""
    if not np.all(np.isfinite(x_CS)):
        raise AudioError(path, None, "refusing to write non-finite (NaN/inf) samples",
                         "this is a bug in the stage that produced them; please report it")
    if SUBTYPES[subtype] in _FULL_SCALE_SUBTYPES:
        peak = float(np.max(np.abs(x_CS)))
        if peak > 1.0:
            raise AudioError(path, None, f"peak {peak:.3f} exceeds full scale for {subtype}",
                             "lower the gain or write float32")


def _container(n_values: int, subtype: str) -> str:
    """``"RF64"`` when ``n_values`` samples of ``subtype`` exceed RIFF's 4 GiB, else ``"WAV"``."""
    n_bytes = n_values * {"FLOAT": 4, "DOUBLE": 8, "PCM_24": 3, "PCM_16": 2}[SUBTYPES[subtype]]
    return "RF64" if n_bytes > _RIFF_LIMIT_BYTES else "WAV"


class AudioWriter:
    """A WAV file being written block by block; made by :func:`open_audio_writer`.

    Attributes
    ----------
    path : Path
        The final file name (the samples go to a temporary sibling until the end).
    n_channels, n_samples : int
        Shape the file will have.
    n_written : int
        Samples per channel written so far.
    """

    def __init__(self, file: sf.SoundFile, path: Path, *, n_channels: int, n_samples: int, subtype: str):
        self._file = file
        self._subtype = subtype
        self.path = path
        self.n_channels = n_channels
        self.n_samples = n_samples
        self.n_written = 0

    def write(self, x_CB: np.ndarray) -> None:
        """Append a block of samples.

        Parameters
        ----------
        x_CB : ndarray, shape (n_channels, n_block), or (n_block,) for a mono file
            The next ``n_block`` samples of every channel; must be finite (and
            within [-1, 1] for integer subtypes), as for :func:`write_audio`.
        """
        x_CB = np.asarray(x_CB)
        if x_CB.ndim == 1:
            x_CB = x_CB[np.newaxis]
        if x_CB.ndim != 2 or x_CB.shape[0] != self.n_channels:
            raise ValueError(f"AudioWriter.write: expected ({self.n_channels}, n_block) samples for "
                             f"{self.path.name}, got shape {x_CB.shape}")
        if self.n_written + x_CB.shape[1] > self.n_samples:
            raise ValueError(f"AudioWriter.write: {self.path.name} holds {self.n_samples} samples; "
                             f"{self.n_written} written, {x_CB.shape[1]} more given")
        if x_CB.shape[1] == 0:
            return
        _check_samples(self.path, x_CB, self._subtype)
        # libsndfile takes frames interleaved: transpose a few frames at a time rather
        # than copy the whole block.
        for start in range(0, x_CB.shape[1], _WRITE_FRAMES):
            self._file.write(x_CB[:, start:start + _WRITE_FRAMES].T)
        self.n_written += x_CB.shape[1]


@contextlib.contextmanager
def open_audio_writer(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    n_channels: int,
    n_samples: int,
    subtype: str = "float32",
    bext: Bext | None = None,
) -> Iterator[AudioWriter]:
    """Write a WAV file of known shape block by block, atomically.

    The samples go to a temporary sibling of ``path``, which is renamed onto
    ``path`` when the ``with`` block ends normally and exactly ``n_samples``
    samples per channel were written; on an exception, or a file left short, the
    temporary file is removed and ``path`` is left as it was. Only one block is in
    memory at a time, so files larger than memory can be written. The file holds the
    same samples as :func:`write_audio` writes for the whole array (libsndfile
    converts each block as it would the whole).

    Parameters
    ----------
    path : path-like
        Destination (``.wav``). Parent folders are created.
    sample_rate : int
        Sample rate in Hz.
    n_channels, n_samples : int
        Shape of the file; ``n_samples`` per channel, known in advance (it decides
        between WAV and RF64, for files over 4 GiB).
    subtype : {"float32", "float64", "pcm24", "pcm16"}
        Sample format.
    bext : Bext, optional
        Add a Broadcast-WAV ``bext`` chunk (not for RF64 files), as :func:`write_audio` does.

    Yields
    ------
    AudioWriter
        Call its ``write(x_CB)`` with consecutive blocks, shape ``(n_channels, n_block)``.

    Raises
    ------
    ValueError
        On a block of the wrong shape, more samples than ``n_samples``, or fewer at the end.
    AudioError
        On non-finite samples, or samples beyond full scale for an integer subtype.
    """
    path = Path(path)
    if subtype not in SUBTYPES:
        raise ValueError(f"open_audio_writer: subtype must be one of {sorted(SUBTYPES)}, got {subtype!r}")
    if int(n_channels) != n_channels or n_channels < 1 or int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"open_audio_writer: n_channels={n_channels!r} and n_samples={n_samples!r} "
                         "must be positive integers")
    n_channels, n_samples = int(n_channels), int(n_samples)
    fmt = _container(n_channels * n_samples, subtype)
    if bext is not None and fmt == "RF64":
        raise AudioError(path, None, "a bext chunk cannot go into a file over 4 GiB", "split the stem")
    with atomic_path(path) as tmp, _write_errors(path, n_channels * n_samples, subtype):
        plain = tmp if bext is None else tmp.with_name(tmp.name + ".plain")
        try:
            with sf.SoundFile(str(plain), "w", int(sample_rate), n_channels, SUBTYPES[subtype], format=fmt) as file:
                writer = AudioWriter(file, path, n_channels=n_channels, n_samples=n_samples, subtype=subtype)
                yield writer
                if writer.n_written != n_samples:
                    raise ValueError(f"open_audio_writer: {path.name} got {writer.n_written} of its {n_samples} "
                                     "samples per channel")
            if bext is not None:
                _insert_bext(plain, tmp, bext)
        finally:
            if bext is not None:
                plain.unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
