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

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mido
import numpy as np

from studio_sep.data.instruments import (
    CHORD_PROGRAMS,
    INSTRUMENTS,
    PROGRAM_RANGES,
    InstrumentClass,
    InstrumentSpec,
)
from studio_sep.util.errors import SimulationError

__all__ = [
    "REFERENCE_SEED_OFFSET",
    "TICKS_PER_BEAT",
    "compose_parts",
    "compose_phrase",
    "compose_reference_parts",
    "note_sweep",
    "notes_to_midi",
]

TICKS_PER_BEAT = 480

#: A note: (start_tick, end_tick, key, velocity).
Note = tuple[int, int, int, int]


def notes_to_midi(
    notes: Sequence[Note],
    *,
    bpm: int,
    programs: Sequence[tuple[int, int]],
    channel: int = 0,
    name: str | None = None,
    time_signature: bool = False,
    end_tick: int | None = None,
) -> mido.MidiFile:
    """One track on one channel: the notes, with ``(tick, program)`` program changes.

    The track opens with the meta messages (``track_name`` when ``name`` is given, the
    tempo, a 4/4 ``time_signature`` when asked), then every event in tick order: at
    one tick, program changes first, then note-offs, then note-ons (so a repeated key
    restarts), each kind by key. Note-offs are ``note_off`` messages of velocity 0.
    ``end_of_track`` comes at ``end_tick`` (default: the last event).
    """
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    if name is not None:
        track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    if time_signature:
        track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    events = [(tick, -1, program, 0) for tick, program in programs]
    for on, off, key, velocity in notes:
        events.append((on, 1, key, velocity))
        events.append((off, 0, key, 0))
    events.sort()
    now = 0
    for tick, kind, value, velocity in events:
        if kind < 0:
            track.append(mido.Message("program_change", channel=channel, program=value, time=tick - now))
        else:
            track.append(mido.Message("note_on" if kind else "note_off", channel=channel, note=value,
                                      velocity=velocity, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0 if end_tick is None else end_tick - now))
    return midi


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
