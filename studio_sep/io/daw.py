"""DAW session files for a set of stems: a REAPER project (``.RPP``, plain text).

Each stem becomes a named track holding one item that starts at 0 and spans the
stem; the track's fader carries the preset's gain and pan, and muted sources come
in muted, so opening the project plays the preset's remix input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from studio_sep.util.atomic import write_text_atomic


@dataclass(frozen=True)
class Track:
    name: str
    file: Path  #: the stem, normally beside the project
    gain_db: float = 0.0
    pan: float = 0.0  #: -1 left … +1 right
    mute: bool = False


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def reaper_project(tracks: Sequence[Track], *, sample_rate: int, length_samples: int, project_dir: Path) -> str:
    """The text of a REAPER project that opens ``tracks``; file paths relative to ``project_dir``."""
    length_s = length_samples / sample_rate
    lines = ['<REAPER_PROJECT 0.1 "6.0" 0', f"  SAMPLERATE {sample_rate} 0 0", "  TEMPO 120 4 4"]
    for track in tracks:
        volume = 10.0 ** (track.gain_db / 20.0)
        try:
            file = track.file.relative_to(project_dir).as_posix()
        except ValueError:
            file = str(track.file)
        lines += [
            "  <TRACK",
            f"    NAME {_quote(track.name)}",
            f"    VOLPAN {volume:.6f} {track.pan:.6f} -1 -1 1",
            f"    MUTESOLO {1 if track.mute else 0} 0 0",
            "    NCHAN 2",
            "    <ITEM",
            "      POSITION 0",
            f"      LENGTH {length_s:.9f}",
            f"      NAME {_quote(Path(file).name)}",
            "      <SOURCE WAVE",
            f"        FILE {_quote(file)}",
            "      >",
            "    >",
            "  >",
        ]
    lines.append(">")
    return "\n".join(lines) + "\n"


def write_reaper_project(path: Path, tracks: Sequence[Track], *, sample_rate: int, length_samples: int) -> Path:
    write_text_atomic(path, reaper_project(tracks, sample_rate=sample_rate, length_samples=length_samples,
                                           project_dir=path.parent))
    return path


def parse_reaper_project(text: str) -> list[dict]:
    """The tracks of a project written by :func:`reaper_project` (name, file, volume, pan,
    mute, length); used to check projects, not a general RPP parser."""
    tracks: list[dict] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line == "<TRACK":
            tracks.append({})
        elif not tracks:
            continue
        elif line.startswith("NAME ") and "name" not in tracks[-1]:
            tracks[-1]["name"] = line[5:].strip('"')
        elif line.startswith("VOLPAN "):
            volume, pan = line.split()[1:3]
            tracks[-1]["volume"], tracks[-1]["pan"] = float(volume), float(pan)
        elif line.startswith("MUTESOLO "):
            tracks[-1]["mute"] = line.split()[1] == "1"
        elif line.startswith("LENGTH "):
            tracks[-1]["length_s"] = float(line.split()[1])
        elif line.startswith("FILE "):
            tracks[-1]["file"] = line[5:].strip('"')
    return tracks
