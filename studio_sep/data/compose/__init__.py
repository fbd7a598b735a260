"""The composer: seeded MIDI for the trio simulation, the stem pool and the nmf prior.

Every style draws its own notes and hands them to one writer, :func:`notes_to_midi`
(notes as ``(start_tick, end_tick, key, velocity)`` on one channel → a one-track
:class:`mido.MidiFile` at :data:`TICKS_PER_BEAT`):

- the trio (:func:`compose_parts`, :func:`compose_reference_parts`): piano, tenor sax
  and violin parts sharing a key, a tempo and a chord progression, for
  :mod:`studio_sep.sim`;
- random phrases (:func:`compose_phrase`): one General MIDI program, a monophonic line
  or chords, for the training-data stem pool (:mod:`studio_sep.data.stems`);
- the note sweep (:func:`note_sweep`): every few semitones of an instrument class's
  range on each of its programs, for the nmf prior's dictionaries
  (:mod:`studio_sep.priors.nmf`).

Nothing here renders audio (:mod:`studio_sep.io.synth` does).
"""

from studio_sep.data.compose.midi import TICKS_PER_BEAT, Note, notes_to_midi
from studio_sep.data.compose.phrases import compose_phrase
from studio_sep.data.compose.sweep import note_sweep
from studio_sep.data.compose.trio import REFERENCE_SEED_OFFSET, compose_parts, compose_reference_parts

__all__ = [
    "REFERENCE_SEED_OFFSET",
    "TICKS_PER_BEAT",
    "Note",
    "compose_parts",
    "compose_phrase",
    "compose_reference_parts",
    "note_sweep",
    "notes_to_midi",
]
