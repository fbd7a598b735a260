"""Broadcast-WAV ``bext`` chunks (EBU Tech 3285 v1 and v2): the fields, reading them from
a WAV file and inserting them into one. :mod:`studio_sep.io.audio` writes the files."""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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


@dataclass(frozen=True)
class Bext:
    """Broadcast-WAV ``bext`` chunk fields (EBU Tech 3285; version 2 when a loudness
    field is set, else version 1).

    ``time_reference`` is the file's first sample as a count of samples since
    midnight: DAWs place the file at that timestamp. The loudness fields (version 2,
    EBU R 128 / ITU-R BS.1770 measures) are stored in hundredths (``-18.00`` LUFS is
    ``-1800``); ``None`` is written as ``0x7FFF``, "not measured".
    """

    description: str = ""
    originator: str = "studio-sep"
    originator_reference: str = ""
    origination_date: str = "2000-01-01"  #: yyyy-mm-dd
    origination_time: str = "00:00:00"  #: hh:mm:ss
    time_reference: int = 0
    coding_history: str = ""
    loudness_lufs: float | None = None  #: LoudnessValue: integrated loudness
    loudness_range_lu: float | None = None  #: LoudnessRange
    max_true_peak_dbtp: float | None = None  #: MaxTruePeakLevel
    max_momentary_lufs: float | None = None  #: MaxMomentaryLoudness (400 ms)
    max_short_term_lufs: float | None = None  #: MaxShortTermLoudness (3 s)

    @property
    def loudness(self) -> tuple[float | None, ...]:
        return (self.loudness_lufs, self.loudness_range_lu, self.max_true_peak_dbtp, self.max_momentary_lufs,
                self.max_short_term_lufs)

    @property
    def version(self) -> int:
        return 2 if any(v is not None for v in self.loudness) else 1


#: description, originator, reference, date, time, TimeReference low/high, Version, UMID,
#: the five loudness values (int16, hundredths), reserved: 602 bytes, then the coding history
_BEXT_FORMAT = "<256s32s32s10s8sIIH64s5h180s"
_BEXT_UNSET = 0x7FFF


def _bext_payload(b: Bext) -> bytes:
    def text(value: str, size: int) -> bytes:
        return value.encode("ascii", "replace")[:size]

    def hundredths(value: float | None) -> int:
        return _BEXT_UNSET if value is None else int(np.clip(round(value * 100), -32767, 32766))

    fixed = struct.pack(_BEXT_FORMAT, text(b.description, 256), text(b.originator, 32),
                        text(b.originator_reference, 32), text(b.origination_date, 10),
                        text(b.origination_time, 8), b.time_reference & 0xFFFFFFFF, b.time_reference >> 32,
                        b.version, b"", *(hundredths(v) if b.version >= 2 else 0 for v in b.loudness), b"")
    return fixed + b.coding_history.encode("ascii", "replace")


def read_bext(path: str | os.PathLike) -> Bext | None:
    """The ``bext`` chunk of a WAV file, or None when it has none."""
    with open(path, "rb") as f:
        for cid, size in _wav_chunks(f):
            if cid == b"bext":
                data = f.read(size)
                fields = struct.unpack(_BEXT_FORMAT, data[:602])
                text = lambda raw: raw.rstrip(b"\0").decode("ascii", "replace")  # noqa: E731
                level = [None if fields[7] < 2 or v == _BEXT_UNSET else v / 100 for v in fields[9:14]]
                return Bext(description=text(fields[0]), originator=text(fields[1]),
                            originator_reference=text(fields[2]), origination_date=text(fields[3]),
                            origination_time=text(fields[4]), time_reference=fields[5] | (fields[6] << 32),
                            coding_history=text(data[602:]), loudness_lufs=level[0], loudness_range_lu=level[1],
                            max_true_peak_dbtp=level[2], max_momentary_lufs=level[3], max_short_term_lufs=level[4])
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
