"""Instrument classes: the names prompts map to, their keywords and General-MIDI programs.

One table for every part of the tool that turns a source's text prompt into an
instrument class: the non-neural prior's dictionaries (:mod:`studio_sep.separation.nmf`), the
training-data augmentation and the in-project query encoder of CLASS-net.

A prompt maps to the class whose keyword it contains (whole words, case-insensitive;
the longest matching keyword wins, so "string quartet" is strings and "electric piano"
is rejected by :data:`REJECT_KEYWORDS` before anything matches). The paper's target
classes are violin, saxophone and piano (§3.3.1); the others are interferers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from studio_sep.util.errors import InputError


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


def class_of_prompt(prompt: str, *, where: str | None = None, file=None,
                    classes: tuple[str, ...] | None = None) -> str:
    """:func:`match_class`, or an :class:`InputError` naming the prompt and the known classes."""
    found = match_class(prompt, classes)
    if found is None:
        known = ", ".join(classes or tuple(CLASSES))
        raise InputError(file, where, f"prompt {prompt!r} names no instrument class this prior knows ({known})",
                         "reword the prompt with a class name, e.g. \"violin\"")
    return found
