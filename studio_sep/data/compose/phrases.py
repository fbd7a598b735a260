"""Random phrases for one General MIDI program: a monophonic line or chords."""

from __future__ import annotations

import math
from collections.abc import Sequence

import mido
import numpy as np

from studio_sep.data.compose.midi import TICKS_PER_BEAT, notes_to_midi
from studio_sep.data.instruments import (
    CHORD_PROGRAMS,
    PROGRAM_RANGES,
)

# --------------------------------------------------------------------------------------
# Random phrases for General MIDI programs
# --------------------------------------------------------------------------------------

_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))  # major, natural minor
_LENGTHS_BEATS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
_LENGTH_WEIGHTS = (0.08, 0.3, 0.07, 0.25, 0.1, 0.12, 0.04, 0.04)
_STEPS = (-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5)
_STEP_WEIGHTS = (0.03, 0.04, 0.08, 0.15, 0.19, 0.02, 0.19, 0.15, 0.08, 0.04, 0.03)

# A phrase's note is (start_beat, stop_beat, key, velocity).
_BeatNote = tuple[float, float, int, int]


def _melody(rng: np.random.Generator, keys: Sequence[int], n_beats: float, beat_s: float,
            start: float = 0.0) -> list[_BeatNote]:
    """A monophonic random walk over ``keys`` with rests and occasional long pauses."""
    weights = np.asarray(_LENGTH_WEIGHTS) / np.sum(_LENGTH_WEIGHTS)
    step_weights = np.asarray(_STEP_WEIGHTS) / np.sum(_STEP_WEIGHTS)
    articulation = rng.uniform(0.6, 1.0)
    base_velocity = int(rng.integers(50, 111))
    idx = int(rng.integers(len(keys) // 4, max(len(keys) // 4 + 1, 3 * len(keys) // 4)))
    notes: list[_BeatNote] = []
    t = start
    while t < n_beats:
        u = rng.random()
        if u < 0.03:  # a long pause (1.5-4 s): gaps the active-audio extraction removes
            t += rng.uniform(1.5, 4.0) / beat_s
            continue
        if u < 0.15:
            t += float(rng.choice((0.5, 1.0, 2.0)))
            continue
        length = float(rng.choice(_LENGTHS_BEATS, p=weights))
        idx = int(np.clip(idx + int(rng.choice(_STEPS, p=step_weights)), 0, len(keys) - 1))
        velocity = int(np.clip(base_velocity + rng.integers(-12, 13), 20, 127))
        notes.append((t, t + length * articulation, keys[idx], velocity))
        t += length
        base_velocity = int(np.clip(base_velocity + rng.integers(-3, 4), 40, 115))
    return notes


def _chords(rng: np.random.Generator, low: int, high: int, tonic_pc: int, scale: Sequence[int],
            n_beats: float, organ_like: bool) -> list[_BeatNote]:
    """Bass notes and triads bar by bar (block, half notes or arpeggio), a melody on top."""
    notes: list[_BeatNote] = []
    mid = (low + high) // 2
    base_velocity = int(rng.integers(50, 101))
    for bar in range(int(math.ceil(n_beats / 4))):
        t0 = 4.0 * bar
        if rng.random() < 0.08:  # a silent bar
            continue
        degree = int(rng.integers(7))
        pcs = [(tonic_pc + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]
        root = low + (pcs[0] - low) % 12
        first = mid - 6 + (pcs[0] - (mid - 6)) % 12
        voicing = [first] + [first + (pc - first) % 12 for pc in pcs[1:]]
        voicing = [k for k in voicing if low <= k <= high]
        velocity = int(np.clip(base_velocity + rng.integers(-8, 9), 20, 127))
        pattern = 1 if organ_like else int(rng.integers(3))
        if root <= high:
            notes.append((t0, t0 + (4.0 if organ_like else 2.0), root, velocity))
        if pattern == 0:  # block chords on every beat
            for beat in range(4):
                notes.extend((t0 + beat, t0 + beat + 0.9, k, velocity) for k in voicing)
        elif pattern == 1:  # whole or half notes
            span = 4.0 if organ_like else 2.0
            for beat in np.arange(0.0, 4.0, span):
                notes.extend((t0 + beat, t0 + beat + span * 0.95, k, velocity) for k in voicing)
        else:  # arpeggio in eighths
            order = (0, 1, 2, 1) if len(voicing) >= 3 else tuple(range(len(voicing))) or ()
            for i in range(8 if order else 0):
                k = voicing[order[i % len(order)]]
                notes.append((t0 + 0.5 * i, t0 + 0.5 * i + 0.45, k, velocity - 4 * (i % 2)))
    return notes


def compose_phrase(rng: np.random.Generator, *, program: int, duration_s: float,
                   low_note: int | None = None, high_note: int | None = None,
                   chords: bool | None = None) -> mido.MidiFile:
    """A random phrase for one General MIDI program, about ``duration_s`` long.

    Random key (major or natural minor), tempo (60-150 BPM), note lengths,
    velocities, rests and long pauses. A monophonic line by default; chords (bass,
    triads bar by bar, sometimes a melody on top) for the programs of
    :data:`CHORD_PROGRAMS` or when ``chords`` is true.

    Parameters
    ----------
    rng : numpy.random.Generator
    program : int
        0-based GM program (channel 0).
    duration_s : float
        Length of the phrase (notes stop before it).
    low_note, high_note : int, optional
        MIDI range; default :data:`PROGRAM_RANGES` (else C3-C6).
    """
    low, high = PROGRAM_RANGES.get(program, (48, 84))
    low = low if low_note is None else int(low_note)
    high = high if high_note is None else int(high_note)
    if chords is None:
        chords = program in CHORD_PROGRAMS
    bpm = int(rng.integers(60, 151))
    beat_s = 60.0 / bpm
    n_beats = duration_s / beat_s
    tonic_pc = int(rng.integers(12))
    scale = _SCALES[int(rng.integers(2))]
    keys = [k for k in range(low, high + 1) if (k - tonic_pc) % 12 in scale]
    if chords:
        organ_like = program in (16, 17, 18, 19, 20, 48, 49)
        notes = _chords(rng, low, high, tonic_pc, scale, n_beats, organ_like)
        if rng.random() < 0.6:
            upper = [k for k in keys if k >= (low + high) // 2 + 5] or keys
            notes += _melody(rng, upper, n_beats, beat_s)
    else:
        notes = _melody(rng, keys, n_beats, beat_s)
    notes = [(a, min(b, n_beats), k, v) for a, b, k, v in notes if a < n_beats and min(b, n_beats) > a]

    ticks = [(int(round(on * TICKS_PER_BEAT)), int(round(off * TICKS_PER_BEAT)), key, velocity)
             for on, off, key, velocity in notes]
    return notes_to_midi(ticks, bpm=bpm, programs=((0, int(program)),))


