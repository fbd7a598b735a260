"""The instrument table: classes, their keywords and General-MIDI programs, and the trio's parts.

One table for every part of the tool that turns a source's text prompt into an
instrument class: the non-neural prior's dictionaries (:mod:`studio_sep.priors.nmf`), the
training-data augmentation and the in-project query encoder of CLASS-net. The General
MIDI facts the composer (:mod:`studio_sep.data.compose`) uses live here too: the
simulated trio's parts (:data:`INSTRUMENTS`), each program's usual range
(:data:`PROGRAM_RANGES`), the programs played with chords (:data:`CHORD_PROGRAMS`) and
the names stems are labelled with (:data:`GM_NAMES`).

A prompt maps to the class whose keyword it contains (whole words, case-insensitive;
the longest matching keyword wins, so "string quartet" is strings and "electric piano"
is rejected by :data:`REJECT_KEYWORDS` before anything matches). The paper's target
classes are violin, saxophone and piano (§3.3.1); the others are interferers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class InstrumentClass:
    """A class of instruments: its keywords, GM programs (0-based) and MIDI pitch range."""

    name: str
    keywords: tuple[str, ...]
    programs: tuple[int, ...]
    low_note: int
    high_note: int
    polyphonic: bool = False


#: The paper's target classes first, then interferer-only classes.
CLASSES: dict[str, InstrumentClass] = {c.name: c for c in (
    InstrumentClass("violin", ("violin", "violins", "viola", "cello", "fiddle", "string", "strings"),
                    (40, 41, 42, 48, 49, 110), 55, 93),
    InstrumentClass("saxophone", ("sax", "saxophone", "saxophones", "saxes"), (64, 65, 66, 67), 44, 81),
    InstrumentClass("piano", ("piano", "pianos", "grand", "keys", "pianoforte"), (0, 1, 3), 33, 96,
                    polyphonic=True),
    InstrumentClass("flute", ("flute", "piccolo"), (73, 72), 60, 96),
    InstrumentClass("clarinet", ("clarinet",), (71,), 50, 89),
    InstrumentClass("oboe", ("oboe",), (68,), 58, 91),
    InstrumentClass("trumpet", ("trumpet",), (56,), 54, 82),
    InstrumentClass("horn", ("horn", "french horn"), (60,), 41, 77),
    InstrumentClass("guitar", ("guitar", "acoustic guitar"), (24, 25), 40, 84, polyphonic=True),
    InstrumentClass("organ", ("organ",), (19,), 36, 84, polyphonic=True),
    InstrumentClass("bass", ("bass", "double bass", "contrabass"), (32,), 28, 55),
)}
TARGET_CLASSES = ("violin", "saxophone", "piano")
#: Prompts or instrument names with these words are not acoustic instruments (§3.3.1.1).
REJECT_KEYWORDS = ("electric", "synth")

_WORD = re.compile(r"[a-z]+")


def has_reject_word(words) -> bool:
    """Whether any of these lower-case words is (or starts with) a word of :data:`REJECT_KEYWORDS`."""
    return any(w.startswith(reject) for w in words for reject in REJECT_KEYWORDS)


def match_class(text: str, classes: tuple[str, ...] | None = None) -> str | None:
    """The class a prompt or instrument name belongs to, or None.

    ``classes`` restricts the candidates (default: all of :data:`CLASSES`). Names
    with a word of :data:`REJECT_KEYWORDS` match nothing.
    """
    words = _WORD.findall(text.lower())
    if has_reject_word(words):
        return None
    joined = f" {' '.join(words)} "
    best, best_len = None, 0
    for name in classes or tuple(CLASSES):
        for keyword in CLASSES[name].keywords:
            if f" {keyword} " in joined and len(keyword) > best_len:
                best, best_len = name, len(keyword)
    return best


@dataclass(frozen=True)
class InstrumentSpec:
    """One instrument of the simulated trio.

    Attributes
    ----------
    name : str
        Part name (also the key in :func:`studio_sep.data.compose.compose_parts`' result).
    program : int
        General MIDI program number, 0-based (0 acoustic grand piano, 40 violin,
        66 tenor sax).
    channel : int
        MIDI channel (0-based) of this part; one channel per part, never 9 (drums).
    low_note, high_note : int
        MIDI note range the part is composed in (inclusive).
    centre_note : int
        Where a melodic line is drawn back to (its tessitura); placed so the sax
        and violin lines cross.
    """

    name: str
    program: int
    channel: int
    low_note: int
    high_note: int
    centre_note: int


#: The trio. Ranges overlap on purpose: piano C3-G5 (bass C3-B3, chords C4-G5),
#: sax G3-D5 around G4, violin E4-E6 around C5, so all three share roughly E4-D5.
INSTRUMENTS: Mapping[str, InstrumentSpec] = {
    "piano": InstrumentSpec("piano", program=0, channel=0, low_note=48, high_note=79, centre_note=67),
    "sax": InstrumentSpec("sax", program=66, channel=1, low_note=55, high_note=74, centre_note=67),
    "violin": InstrumentSpec("violin", program=40, channel=2, low_note=64, high_note=88, centre_note=72),
}


#: Usual range (MIDI notes, inclusive) of each GM program the pool renders; a
#: program not listed uses its class's range.
PROGRAM_RANGES: dict[int, tuple[int, int]] = {
    40: (55, 96), 41: (48, 84), 42: (36, 72), 48: (36, 88), 49: (36, 88), 110: (55, 88),
    64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 68),
    0: (28, 100), 1: (28, 100), 3: (28, 100),
    73: (60, 96), 72: (74, 102), 71: (50, 89), 68: (58, 91), 56: (54, 82), 60: (41, 77),
    24: (40, 76), 25: (40, 76), 19: (36, 84), 32: (28, 55),
}
#: GM programs played with chords (a string ensemble is one too).
CHORD_PROGRAMS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 24, 25, 26, 27, 48, 49})
#: Names of the GM programs the stem pool renders (in its stems' ``source``).
GM_NAMES = {
    0: "acoustic grand piano", 1: "bright acoustic piano", 3: "honky-tonk piano", 19: "church organ",
    24: "nylon guitar", 25: "steel guitar", 32: "acoustic bass", 40: "violin", 41: "viola", 42: "cello",
    48: "string ensemble 1", 49: "string ensemble 2", 56: "trumpet", 60: "french horn",
    64: "soprano sax", 65: "alto sax", 66: "tenor sax", 67: "baritone sax", 68: "oboe", 71: "clarinet",
    72: "piccolo", 73: "flute", 110: "fiddle",
}
