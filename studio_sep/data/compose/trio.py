"""The trio's parts: piano, tenor sax and violin sharing a key, a tempo and a chord progression."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mido
import numpy as np

from studio_sep.data.compose.midi import TICKS_PER_BEAT, Note, notes_to_midi
from studio_sep.data.instruments import (
    INSTRUMENTS,
    InstrumentSpec,
)
from studio_sep.util.errors import SimulationError

# --------------------------------------------------------------------------------------
# The trio
# --------------------------------------------------------------------------------------

#: Reference (solo) takes play a different passage: the one composed from
#: ``seed + REFERENCE_SEED_OFFSET`` (see :func:`compose_reference_parts`).
REFERENCE_SEED_OFFSET = 1000

_EIGHTH = TICKS_PER_BEAT // 2
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)
_HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
# Common progressions as 0-based scale degrees, one chord per bar.
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 5), (0, 3, 4, 0), (5, 3, 0, 4), (0, 3, 1, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 3, 6, 4), (0, 5, 3, 4)),
}
_TAIL_S = 0.5


@dataclass(frozen=True)
class _Chord:
    root_pc: int
    pcs: tuple[int, int, int]  # root, third, fifth as pitch classes
    scale_pcs: tuple[int, ...]  # the scale melodies use over this chord


@dataclass(frozen=True)
class _Plan:
    """What all parts of one passage share: key, tempo, harmony, length."""

    bpm: int
    n_beats: int
    chords: tuple[_Chord, ...]  # one per bar


def _make_plan(rng: np.random.Generator, duration_s: float, tail_s: float) -> _Plan:
    tonic_pc = int(rng.integers(12))
    mode = "major" if rng.random() < 0.6 else "minor"
    bpm = int(rng.integers(84, 117))
    progressions = _PROGRESSIONS[mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    n_beats = int(math.floor((duration_s - tail_s) * bpm / 60.0 + 1e-9))
    n_bars = -(-n_beats // 4)
    chords = []
    for bar in range(n_bars):
        degree = progression[bar % len(progression)]
        if mode == "minor" and degree in (4, 6):
            scale = _HARMONIC_MINOR  # major V and leading-tone chord in minor
        else:
            scale = _MAJOR if mode == "major" else _NATURAL_MINOR
        pcs = tuple((tonic_pc + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4))
        scale_pcs = tuple((tonic_pc + s) % 12 for s in scale)
        chords.append(_Chord(root_pc=pcs[0], pcs=pcs, scale_pcs=scale_pcs))
    return _Plan(bpm=bpm, n_beats=n_beats, chords=tuple(chords))


def _piano_notes(rng: np.random.Generator, plan: _Plan, spec: InstrumentSpec) -> list[Note]:
    """Bass on beats 1 and 3, right-hand chords (block, half notes or arpeggios)."""
    notes: list[Note] = []
    end_beat = plan.n_beats
    previous_centre = float(spec.centre_note)
    for bar, chord in enumerate(plan.chords):
        bar_start = 4 * bar
        bar_end = min(bar_start + 4, end_beat)
        # Bass: root on beat 1, root or fifth on beat 3, in C3-B3.
        for beat, pc in ((0, chord.root_pc), (2, chord.pcs[2] if rng.random() < 0.5 else chord.root_pc)):
            start = bar_start + beat
            if start >= bar_end:
                break
            key = spec.low_note + (pc - spec.low_note) % 12
            velocity = int(np.clip(78 + rng.integers(-6, 7) + (6 if beat == 0 else 0), 1, 127))
            notes.append((start * TICKS_PER_BEAT, min(start + 2, bar_end) * TICKS_PER_BEAT, key, velocity))
        # Right hand: the close voicing nearest the previous one, within C4-G5.
        voicings = []
        for lowest in range(3):
            first = 60 + (chord.pcs[lowest] - 60) % 12
            rest = sorted(first + (chord.pcs[(lowest + k) % 3] - first) % 12 for k in (1, 2))
            voicing = (first, *rest)
            if voicing[-1] <= spec.high_note:
                voicings.append(voicing)
        voicing = min(voicings, key=lambda v: abs(float(np.mean(v)) - previous_centre))
        previous_centre = float(np.mean(voicing))
        pattern = int(rng.integers(3))
        base_velocity = 72 + int(rng.integers(-5, 6))
        start_tick, end_tick = bar_start * TICKS_PER_BEAT, bar_end * TICKS_PER_BEAT
        if pattern == 0:  # block chords on every beat
            onsets = [(t, t + TICKS_PER_BEAT, voicing) for t in range(start_tick, end_tick, TICKS_PER_BEAT)]
        elif pattern == 1:  # half notes
            onsets = [
                (t, min(t + 2 * TICKS_PER_BEAT, end_tick), voicing)
                for t in range(start_tick, end_tick, 2 * TICKS_PER_BEAT)
            ]
        else:  # arpeggio in eighths: up and down the voicing
            order = (0, 1, 2, 1)
            onsets = [
                (t, t + _EIGHTH, (voicing[order[i % 4]],))
                for i, t in enumerate(range(start_tick, end_tick, _EIGHTH))
            ]
        for i, (on, off, keys) in enumerate(onsets):
            accent = 8 if on == start_tick else 0
            for key in keys:
                velocity = int(np.clip(base_velocity + accent + rng.integers(-4, 5) - 2 * (i % 2), 1, 127))
                notes.append((on, off, key, velocity))
    return notes


def _melody_notes(
    rng: np.random.Generator,
    plan: _Plan,
    spec: InstrumentSpec,
    *,
    durations_eighths: Sequence[int],
    duration_weights: Sequence[float],
    rest_probability: float,
    base_velocity: int,
) -> list[Note]:
    """A monophonic line: chord tones on strong beats, scale steps in between.

    Every two bars the line heads for a new register, alternately above and below
    ``spec.centre_note`` (4-8 semitones away), so it ranges over its tessitura and
    the sax and violin lines cross.
    """
    notes: list[Note] = []
    end = plan.n_beats * 2  # in eighths
    centre = float(spec.centre_note)
    weights = np.asarray(duration_weights, dtype=float) / np.sum(duration_weights)
    key = int(round(centre))
    position = 0
    rested = False
    goal = centre
    side = 1.0 if rng.random() < 0.5 else -1.0
    phrase = -1
    while position < end:
        if position // 16 != phrase:  # a new two-bar phrase, on the other side of the centre
            phrase = position // 16
            side = -side
            goal = centre + side * rng.uniform(4.0, 8.0)
            goal = float(np.clip(goal, spec.low_note + 2, spec.high_note - 2))
        length = min(int(rng.choice(durations_eighths, p=weights)), end - position)
        chord = plan.chords[position // 8]
        if not rested and position > 0 and rng.random() < rest_probability:
            rested = True
            position += length
            continue
        rested = False
        target = key + int(rng.integers(-3, 4)) + int(round(0.4 * (goal - key)))
        if position % 4 == 0:  # beats 1 and 3: nearest chord tone
            allowed = chord.pcs
        else:
            allowed = chord.scale_pcs
        candidates = [
            k for k in range(spec.low_note, spec.high_note + 1) if k % 12 in allowed and k != key
        ]
        key = min(candidates, key=lambda k: (abs(k - target), k))
        phrase = math.sin(math.pi * (position % 16) / 16)  # swell over each two bars
        velocity = int(np.clip(base_velocity + 10 * phrase + rng.integers(-5, 6), 1, 127))
        notes.append((position * _EIGHTH, (position + length) * _EIGHTH, key, velocity))
        position += length
    return notes


def compose_parts(
    *,
    seed: int,
    duration_s: float,
    names: Sequence[str] = ("piano", "sax", "violin"),
    tail_s: float = _TAIL_S,
) -> dict[str, mido.MidiFile]:
    """Compose one seeded passage for the trio, one MIDI file per part.

    All parts share a key (random tonic, major or minor), a tempo (84-116 bpm, 4/4)
    and a chord progression (one chord per bar, a common progression of that mode).
    The piano plays bass notes (C3-B3) and chords or arpeggios (C4-G5); the sax a
    counter-line (G3-D5) and the violin a melody (E4-E6), both mostly chord tones on
    beats 1 and 3 and scale steps between, with a few rests. The ranges overlap, and
    every part plays through the whole passage, as in a real trio recording.

    Each file has one track on its own channel (:data:`INSTRUMENTS`) with a tempo
    meta message and a ``program_change`` at tick 0. Every note ends by
    ``duration_s - tail_s``, leaving the tail for the release and the room.

    Parameters
    ----------
    seed : int
        Seed of the passage. The same seed gives the same parts; each part draws from
        its own stream (``numpy.random.SeedSequence(seed).spawn``), so a part does not
        depend on which other parts are requested.
    duration_s : float
        Length of the passage, tail included, in seconds; at least ``tail_s + 1.5``.
    names : sequence of str
        Parts to compose, from ``"piano"``, ``"sax"``, ``"violin"``.
    tail_s : float
        Silence left after the last note-off, in seconds.

    Returns
    -------
    dict of str to mido.MidiFile
        The parts, in the order of ``names``.

    Raises
    ------
    SimulationError
        If a name is unknown, ``duration_s`` too short or ``tail_s`` negative.
    """
    _check_names(names)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise SimulationError(None, "seed", f"seed={seed!r} must be a non-negative integer", "pass e.g. 0")
    if not math.isfinite(tail_s) or tail_s < 0:
        raise SimulationError(None, "tail_s", f"tail_s={tail_s!r} must be >= 0", "pass e.g. 0.5")
    if not math.isfinite(duration_s) or duration_s < tail_s + 1.5:
        raise SimulationError(
            None,
            "duration_s",
            f"duration_s={duration_s!r} is too short for a passage with a {tail_s} s tail",
            f"pass at least {tail_s + 1.5:g} s",
        )
    catalogue = tuple(INSTRUMENTS)
    streams = np.random.SeedSequence(int(seed)).spawn(1 + len(catalogue))
    plan = _make_plan(np.random.default_rng(streams[0]), duration_s, tail_s)
    parts: dict[str, mido.MidiFile] = {}
    for name in names:
        spec = INSTRUMENTS[name]
        rng = np.random.default_rng(streams[1 + catalogue.index(name)])
        if name == "piano":
            notes = _piano_notes(rng, plan, spec)
        elif name == "sax":
            notes = _melody_notes(
                rng, plan, spec, durations_eighths=(1, 2, 2, 3, 4), duration_weights=(1, 4, 4, 1, 2),
                rest_probability=0.08, base_velocity=72,
            )
        else:
            notes = _melody_notes(
                rng, plan, spec, durations_eighths=(1, 2, 4, 6, 8), duration_weights=(2, 4, 4, 1, 1),
                rest_probability=0.06, base_velocity=70,
            )
        parts[name] = notes_to_midi(notes, bpm=plan.bpm, programs=((0, spec.program),), channel=spec.channel,
                                    name=spec.name, time_signature=True)
    return parts


def compose_reference_parts(
    *,
    seed: int,
    duration_s: float,
    names: Sequence[str] = ("piano", "sax", "violin"),
    tail_s: float = _TAIL_S,
) -> dict[str, mido.MidiFile]:
    """Compose the passage the solo reference takes play.

    It is ``compose_parts(seed=seed + REFERENCE_SEED_OFFSET, ...)``: same
    instruments, different key, tempo, harmony and notes than the session passage
    of ``seed``, so a reference take is never a copy of the source it informs.
    Parameters as in :func:`compose_parts`.
    """
    return compose_parts(
        seed=int(seed) + REFERENCE_SEED_OFFSET, duration_s=duration_s, names=names, tail_s=tail_s
    )


def _check_names(names: Sequence[str]) -> None:
    if isinstance(names, str) or len(names) == 0:
        raise SimulationError(None, "names", f"names={names!r} must be a non-empty sequence of part names",
                              f"use names from {tuple(INSTRUMENTS)}")
    for name in names:
        if name not in INSTRUMENTS:
            raise SimulationError(None, "names", f"unknown part {name!r}",
                                  f"use names from {tuple(INSTRUMENTS)}")
    if len(set(names)) != len(names):
        raise SimulationError(None, "names", f"names={tuple(names)!r} has duplicates", "name each part once")


