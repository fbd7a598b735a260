"""The only module that reads or writes audio files (with :mod:`studio_sep.io.bext`, the
Broadcast-WAV chunk it adds).

Time-domain arrays are ``(n_channels, n_samples)`` everywhere in studio-sep (``x_MS``:
mics × samples; ``images_NMS``: sources × mics × samples). Files are written
atomically (temporary sibling, then rename), so a final name never holds a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from studio_sep.io.bext import Bext, _insert_bext, _wav_chunks, read_bext  # noqa: F401 - re-exported
from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import AudioError, OutputError

#: Sample formats accepted by :func:`write_audio`, by short name → libsndfile subtype.
#: ``pcm16`` is written with TPDF dither (:func:`dither_pcm16`); ``flac`` is 24-bit FLAC
#: (lossless, in a ``.flac`` file: :func:`extension`); the others are WAV.
SUBTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "pcm24": "PCM_24", "pcm16": "PCM_16", "flac": "PCM_24"}
_FULL_SCALE_SUBTYPES = {"PCM_16", "PCM_24", "PCM_32"}
_BYTES_PER_SAMPLE = {"FLOAT": 4, "DOUBLE": 8, "PCM_24": 3, "PCM_16": 2}
_PCM16_SCALE = 32768.0  # libsndfile reads PCM_16 as int / 32768
_RIFF_LIMIT_BYTES = 2**32 - 2**20
_WRITE_FRAMES = 1 << 16  # frames handed to libsndfile at a time by AudioWriter


def extension(fmt: str) -> str:
    """The file name suffix of a sample format: ``.flac`` for ``flac``, else ``.wav``."""
    return ".flac" if fmt == "flac" else ".wav"


def dither_pcm16(x_CB: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quantise ``(channels, samples)`` audio in [-1, 1] to 16-bit integers with TPDF dither.

    The dither is the difference of two independent uniform values of 1 LSB each
    (triangular, ±1 LSB peak, variance 2/12 LSB²) added before rounding, which makes the
    quantisation error independent of the signal (no truncation distortion); the total
    error has variance 3/12 LSB² (dither plus rounding). Samples that are exactly 0 stay
    0, so digital silence (a stem's tail) stays silent. The random values are drawn
    frame by frame (``(samples, channels)`` order), so blocks of one signal quantised in
    turn with one ``rng`` give what the whole signal gives.

    Returns
    -------
    q_CB : ndarray of int16, shape (channels, samples)
        Read back by libsndfile as ``q / 32768``.
    """
    x_CB = np.asarray(x_CB, dtype=np.float64)
    u = rng.random((x_CB.shape[1], x_CB.shape[0], 2))  # frame by frame: blocks draw what the whole draws
    d = (u[..., 0] - u[..., 1]).T
    q = np.floor(x_CB * _PCM16_SCALE + d + 0.5)
    q[x_CB == 0.0] = 0.0
    return np.clip(q, -32768, 32767).astype(np.int16)


def _dither_rng(path: Path) -> np.random.Generator:
    """A dither generator seeded by the file's folder and name: the same file gets the same
    samples on every run, and two stems (or two sources' images at one mic) get independent
    dither, which would add up coherently when they are summed with one shared sequence."""
    import zlib

    return np.random.default_rng(zlib.crc32(f"{path.parent.name}/{path.name}".encode("utf-8")))


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
    subtype : {"float32", "float64", "pcm24", "pcm16", "flac"}
        Sample format (:data:`SUBTYPES`): ``pcm16`` is TPDF-dithered
        (:func:`dither_pcm16`), ``flac`` is a 24-bit FLAC file. WAV files over 4 GiB are
        written as RF64.
    bext : Bext, optional
        Add a Broadcast-WAV ``bext`` chunk (WAV only, not RF64).

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
    _check_bext(path, bext, fmt)
    samples = dither_pcm16(x_CS, _dither_rng(path)) if subtype == "pcm16" else x_CS
    with atomic_path(path) as tmp, _write_errors(path, x_CS.size, subtype):
        if bext is None:
            sf.write(str(tmp), samples.T, int(sample_rate), subtype=sf_subtype, format=fmt)
        else:
            plain = tmp.with_name(tmp.name + ".plain")
            try:
                sf.write(str(plain), samples.T, int(sample_rate), subtype=sf_subtype, format=fmt)
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
        n_bytes = n_values * _BYTES_PER_SAMPLE[SUBTYPES[subtype]]
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
    """``"FLAC"`` for ``flac``; ``"RF64"`` when ``n_values`` samples of ``subtype`` exceed
    RIFF's 4 GiB, else ``"WAV"``."""
    if subtype == "flac":
        return "FLAC"
    n_bytes = n_values * _BYTES_PER_SAMPLE[SUBTYPES[subtype]]
    return "RF64" if n_bytes > _RIFF_LIMIT_BYTES else "WAV"


def _check_bext(path: Path, bext: Bext | None, container: str) -> None:
    if bext is None or container == "WAV":
        return
    if container == "FLAC":
        raise ValueError(f"{path.name}: a bext chunk goes into WAV files only, not FLAC")
    raise AudioError(path, None, "a bext chunk cannot go into a file over 4 GiB", "split the stem")


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
        self._dither = _dither_rng(path) if subtype == "pcm16" else None
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
        if self._dither is not None:
            x_CB = dither_pcm16(x_CB, self._dither)
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
    subtype : {"float32", "float64", "pcm24", "pcm16", "flac"}
        Sample format, as for :func:`write_audio` (the same dither for ``pcm16``).
    bext : Bext, optional
        Add a Broadcast-WAV ``bext`` chunk (WAV only, not RF64), as :func:`write_audio` does.

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
    _check_bext(path, bext, fmt)
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
