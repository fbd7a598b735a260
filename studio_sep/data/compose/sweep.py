"""The note sweep of an instrument class: every few semitones of its range on each of its programs."""

from __future__ import annotations

from collections.abc import Sequence

import mido

from studio_sep.data.compose.midi import TICKS_PER_BEAT, notes_to_midi
from studio_sep.data.instruments import (
    InstrumentClass,
)

# --------------------------------------------------------------------------------------
# The note sweep
# --------------------------------------------------------------------------------------


def note_sweep(cls: InstrumentClass, *, note_s: float, step: int, velocities: Sequence[int],
               gap_s: float = 0.15) -> mido.MidiFile:
    """Every ``step``-th note of a class's range, on each of its GM programs, at each of
    ``velocities``, in sequence at 60 bpm: ``note_s`` long, ``gap_s`` apart (a major
    triad on the odd keys of a polyphonic class); the track ends ``gap_s`` after the
    last note."""
    note_ticks, gap_ticks = round(note_s * TICKS_PER_BEAT), round(gap_s * TICKS_PER_BEAT)
    programs, notes = [], []
    tick = 0
    for program in cls.programs:
        programs.append((tick, program))
        for key in range(cls.low_note, cls.high_note + 1, step):
            for velocity in velocities:
                chord = [key, key + 4, key + 7] if cls.polyphonic and key % 2 else [key]
                notes.extend((tick, tick + note_ticks, min(note, 127), velocity) for note in chord)
                tick += note_ticks + gap_ticks
    return notes_to_midi(notes, bpm=60, programs=programs, end_tick=tick)
