"""DAW session files for a set of stems: a REAPER project (``.RPP``, plain text) and a
DAWproject file (``.dawproject``: a ZIP holding ``project.xml``, ``metadata.xml`` and the
stems; the open format of Bitwig Studio, Studio One, Cubase, VST Live, n-Track).

Each stem becomes a named track holding one clip that starts at 0 and spans the stem;
the track's fader carries the preset's gain and pan, muted sources come in muted, every
track goes to the master, and the master's volume carries the remix's level gain. So
the tracks summed through their faders and the master volume give the remix, exactly
when the preset has no master chain (the stems are rendered after every feed and
source chain: ``studio_sep.mixing.render``).

A preset's master chain (pedalboard effects, VST3 plugins) has no faithful REAPER or
DAWproject equivalent, so it is not rebuilt: the project then holds one more track, the
master bus as studio-sep rendered it, muted, named ``REFERENCE …``; solo it to hear the
remix. The chain is listed in the project's notes (RPP) and comment (DAWproject).

Pan law: studio-sep balances a stereo stem by attenuating the far side linearly, the
near side at unity (:func:`studio_sep.mixing.routing.balance_gains`). The RPP pins the
project's pan mode to REAPER's "stereo balance / mono pan" (``PANMODE 3``) and its pan
law to 0 dB (``PANLAW 1``), which leaves a centred track at unity, as the mixer does.
DAWproject has no pan law field: the importing DAW applies its own.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from studio_sep.util.atomic import atomic_path, write_text_atomic

#: the REAPER pan mode written: stereo balance / mono pan (REAPER's default)
REAPER_PANMODE = 3
#: the REAPER pan law written: gain 1.0, i.e. 0 dB at centre
REAPER_PANLAW = 1.0
DAWPROJECT_VERSION = "1.0"


@dataclass(frozen=True)
class Track:
    name: str
    file: Path  #: the stem, normally beside the project
    gain_db: float = 0.0
    pan: float = 0.0  #: -1 left … +1 right
    mute: bool = False


@dataclass(frozen=True)
class DawSession:
    """What both project formats hold."""

    title: str
    tracks: tuple[Track, ...]
    sample_rate: int
    length_samples: int
    master_gain_db: float = 0.0  #: the master fader: the remix's level gain
    notes: str = ""  #: free text for the engineer (e.g. the master chain not rebuilt)
    generator_version: str = "0"  #: studio-sep's version, for DAWproject's Application

    @property
    def length_s(self) -> float:
        return self.length_samples / self.sample_rate


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _relative(file: Path, folder: Path) -> str:
    try:
        return file.relative_to(folder).as_posix()
    except ValueError:
        return str(file)


def reaper_project(tracks: Sequence[Track], *, sample_rate: int, length_samples: int, project_dir: Path,
                   master_gain_db: float = 0.0, notes: str = "") -> str:
    """The text of a REAPER project that opens ``tracks``; file paths relative to ``project_dir``."""
    length_s = length_samples / sample_rate
    lines = ['<REAPER_PROJECT 0.1 "6.0" 0']
    if notes:
        lines += ["  <NOTES 0 2", *(f"    |{line}" for line in notes.splitlines()), "  >"]
    lines += [f"  PANLAW {REAPER_PANLAW:g}", f"  PANMODE {REAPER_PANMODE}", "  PANLAWFLAGS 3",
              f"  SAMPLERATE {sample_rate} 1 0", "  TEMPO 120 4 4", "  MASTER_NCH 2 2",
              f"  MASTER_VOLUME {10.0 ** (master_gain_db / 20.0):.9f} 0 -1 -1 1",
              f"  MASTER_PANMODE {REAPER_PANMODE}", "  MASTER_FX 1"]
    for track in tracks:
        file = _relative(track.file, project_dir)
        lines += [
            "  <TRACK",
            f"    NAME {_quote(track.name)}",
            "    PANLAWFLAGS 3",
            f"    VOLPAN {10.0 ** (track.gain_db / 20.0):.9f} {track.pan:.6f} -1 -1 1",
            f"    MUTESOLO {1 if track.mute else 0} 0 0",
            "    NCHAN 2",
            "    MAINSEND 1 0",
            "    <ITEM",
            "      POSITION 0",
            f"      LENGTH {length_s:.9f}",
            f"      NAME {_quote(Path(file).name)}",
            f"      <SOURCE {'FLAC' if file.lower().endswith('.flac') else 'WAVE'}",
            f"        FILE {_quote(file)}",
            "      >",
            "    >",
            "  >",
        ]
    lines.append(">")
    return "\n".join(lines) + "\n"


def write_reaper_project(path: Path, tracks: Sequence[Track], *, sample_rate: int, length_samples: int,
                         master_gain_db: float = 0.0, notes: str = "") -> Path:
    write_text_atomic(path, reaper_project(tracks, sample_rate=sample_rate, length_samples=length_samples,
                                           project_dir=path.parent, master_gain_db=master_gain_db, notes=notes))
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


# --------------------------------------------------------------------------- DAWproject

def dawproject_xml(session: DawSession, media: Sequence[str]) -> tuple[str, str]:
    """``project.xml`` and ``metadata.xml`` of a DAWproject for ``session``; ``media[i]``
    is the path inside the container of track i's audio file."""
    ids = iter(f"id{i}" for i in range(1_000_000))
    project = ET.Element("Project", version=DAWPROJECT_VERSION)
    ET.SubElement(project, "Application", name="studio-sep", version=session.generator_version)
    transport = ET.SubElement(project, "Transport")
    ET.SubElement(transport, "Tempo", unit="bpm", value="120", min="20", max="666", id=next(ids), name="Tempo")
    ET.SubElement(transport, "TimeSignature", numerator="4", denominator="4", id=next(ids))
    structure = ET.SubElement(project, "Structure")
    master_track_id, master_id = next(ids), next(ids)
    track_ids = []
    for track in session.tracks:
        track_ids.append(next(ids))
        element = ET.SubElement(structure, "Track", contentType="audio", loaded="true", id=track_ids[-1],
                                name=track.name)
        _channel(element, ids, role="regular", destination=master_id, mute=track.mute, pan=track.pan,
                 gain_db=track.gain_db)
    master = ET.SubElement(structure, "Track", contentType="audio", loaded="true", id=master_track_id, name="Master")
    _channel(master, ids, role="master", channel_id=master_id, mute=False, pan=0.0, gain_db=session.master_gain_db)
    arrangement = ET.SubElement(project, "Arrangement", id=next(ids))
    lanes = ET.SubElement(arrangement, "Lanes", timeUnit="seconds", id=next(ids))
    length = repr(float(session.length_s))
    for track, track_id, path in zip(session.tracks, track_ids, media):
        clips = ET.SubElement(ET.SubElement(lanes, "Lanes", track=track_id, id=next(ids)), "Clips", id=next(ids))
        clip = ET.SubElement(clips, "Clip", time="0.0", duration=length, playStart="0.0", name=track.name)
        audio = ET.SubElement(clip, "Audio", channels="2", duration=length, sampleRate=str(session.sample_rate),
                              id=next(ids))
        ET.SubElement(audio, "File", path=path)
    ET.SubElement(project, "Scenes")
    metadata = ET.Element("MetaData")
    ET.SubElement(metadata, "Title").text = session.title
    if session.notes:
        ET.SubElement(metadata, "Comment").text = session.notes
    return _xml_text(project), _xml_text(metadata)


def _channel(parent: ET.Element, ids, *, role: str, mute: bool, pan: float, gain_db: float,
             destination: str | None = None, channel_id: str | None = None) -> None:
    volume = 10.0 ** (gain_db / 20.0)
    attributes = {"audioChannels": "2", "role": role, "solo": "false", "id": channel_id or next(ids)}
    if destination is not None:
        attributes["destination"] = destination
    channel = ET.SubElement(parent, "Channel", attributes)
    ET.SubElement(channel, "Mute", value="true" if mute else "false", id=next(ids), name="Mute")
    ET.SubElement(channel, "Pan", unit="normalized", min="0.0", max="1.0", value=f"{(pan + 1.0) / 2.0:.6f}",
                  id=next(ids), name="Pan")
    ET.SubElement(channel, "Volume", unit="linear", min="0.0", max=f"{max(2.0, math.ceil(volume)):.1f}",
                  value=f"{volume:.9f}", id=next(ids), name="Volume")


def _xml_text(element: ET.Element) -> str:
    ET.indent(element)
    return '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(element, "unicode") + "\n"


def write_dawproject(path: Path, session: DawSession) -> Path:
    """Write ``session`` as a DAWproject file (atomically), the tracks' audio files
    embedded under ``audio/`` (stored, not compressed: WAV/FLAC barely compress), which
    is what the format's own exporters do and every importing DAW reads."""
    media = [f"audio/{track.file.name}" for track in session.tracks]
    if len(set(media)) != len(media):
        raise ValueError(f"write_dawproject: two tracks' files share a name: {media}")
    project_xml, metadata_xml = dawproject_xml(session, media)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr("project.xml", project_xml, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("metadata.xml", metadata_xml, compress_type=zipfile.ZIP_DEFLATED)
        for track, name in zip(session.tracks, media):
            archive.write(track.file, name, compress_type=zipfile.ZIP_STORED)
    return path
