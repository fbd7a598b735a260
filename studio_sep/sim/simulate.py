"""A rendered look-alike of a studio trio session, with exact ground truth.

Three stages, each a pure function (no files written, nothing printed):

1. :func:`compose_parts` writes seeded MIDI parts (piano, tenor sax, violin) that
   overlap in time and in pitch range, as a real trio does.
2. :func:`render_midi` renders one part dry and mono with FluidSynth (reverb and
   chorus off), deterministic, events fed at their sample times (FluidSynth starts
   a voice on its next 64-sample block).
3. :func:`calibrate_room` finds the wall absorption for which pyroomacoustics'
   image-source RIRs of a shoebox room *measure* the requested RT60, and
   :func:`image_blocks` puts every dry source into that room and gives its image
   at every microphone, one block of samples at a time (``images_NMB``;
   :func:`render_images` gives all of it, ``images_NMS``); the sum over sources is
   the mic signal.

:func:`simulate_session` writes the session folder, streaming the images to their
files block by block, so that a long session (20 minutes at 48 kHz) renders in a few
GB of memory.

:func:`ircam_trio_geometry` gives the microphone and source layout of the paper's
IRCAM trio session, shifted into the simulated room.

Conventions (the package's, see :mod:`studio_sep.dsp.geometry`): positions in metres as
``(x, y, z)``; azimuth in degrees in the horizontal plane from +x towards +y;
elevation in degrees, positive upwards. Axis letters: ``N`` sources, ``M`` mics,
``S`` samples, ``B`` samples of one block.

Progress callbacks are called as ``callback(stage, fraction)`` with a short stage
name and the fraction of that stage done, in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from studio_sep.dsp.geometry import PATTERN_COEFFICIENT, aim_angles
from studio_sep.util.errors import SimulationError

__all__ = [
    "DEFAULT_DIMENSIONS_M",
    "DEFAULT_ORIGIN_M",
    "DEFAULT_RT60_S",
    "IMAGE_BLOCK_SAMPLES",
    "INSTRUMENTS",
    "IRCAM_TRIO_MICS",
    "IRCAM_TRIO_SOURCES",
    "MIC_PATTERN_P",
    "REFERENCE_SEED_OFFSET",
    "InstrumentSpec",
    "MicSpec",
    "RoomCalibration",
    "SourceSpec",
    "aim_angles",
    "calibrate_room",
    "compose_parts",
    "compose_reference_parts",
    "image_blocks",
    "ircam_trio_geometry",
    "measure_room_rt60",
    "render_images",
    "render_midi",
    "render_parts",
]

Callback = Callable[[str, float], None]

# --------------------------------------------------------------------------------------
# Instruments and composition
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentSpec:
    """One instrument of the simulated trio.

    Attributes
    ----------
    name : str
        Part name (also the key in :func:`compose_parts`' result).
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

#: Reference (solo) takes play a different passage: the one composed from
#: ``seed + REFERENCE_SEED_OFFSET`` (see :func:`compose_reference_parts`).
REFERENCE_SEED_OFFSET = 1000

_TICKS_PER_BEAT = 480
_EIGHTH = _TICKS_PER_BEAT // 2
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


# A note is (start_tick, end_tick, key, velocity).
_Note = tuple[int, int, int, int]


def _piano_notes(rng: np.random.Generator, plan: _Plan, spec: InstrumentSpec) -> list[_Note]:
    """Bass on beats 1 and 3, right-hand chords (block, half notes or arpeggios)."""
    notes: list[_Note] = []
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
            notes.append((start * _TICKS_PER_BEAT, min(start + 2, bar_end) * _TICKS_PER_BEAT, key, velocity))
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
        start_tick, end_tick = bar_start * _TICKS_PER_BEAT, bar_end * _TICKS_PER_BEAT
        if pattern == 0:  # block chords on every beat
            onsets = [(t, t + _TICKS_PER_BEAT, voicing) for t in range(start_tick, end_tick, _TICKS_PER_BEAT)]
        elif pattern == 1:  # half notes
            onsets = [
                (t, min(t + 2 * _TICKS_PER_BEAT, end_tick), voicing)
                for t in range(start_tick, end_tick, 2 * _TICKS_PER_BEAT)
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
) -> list[_Note]:
    """A monophonic line: chord tones on strong beats, scale steps in between.

    Every two bars the line heads for a new register, alternately above and below
    ``spec.centre_note`` (4-8 semitones away), so it ranges over its tessitura and
    the sax and violin lines cross.
    """
    notes: list[_Note] = []
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


def _notes_to_midi(notes: Sequence[_Note], *, spec: InstrumentSpec, bpm: int) -> mido.MidiFile:
    midi = mido.MidiFile(type=1, ticks_per_beat=_TICKS_PER_BEAT)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("track_name", name=spec.name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.Message("program_change", channel=spec.channel, program=spec.program, time=0))
    # Note-offs sort before note-ons at the same tick, so a repeated key restarts.
    events = []
    for on, off, key, velocity in notes:
        events.append((on, 1, key, velocity))
        events.append((off, 0, key, 0))
    events.sort()
    now = 0
    for tick, is_on, key, velocity in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=spec.channel, note=key, velocity=velocity, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return midi


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
        parts[name] = _notes_to_midi(notes, spec=spec, bpm=plan.bpm)
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
# Rendering with FluidSynth
# --------------------------------------------------------------------------------------

_FLUID_RATE_RANGE = (8000, 96000)  # synth.sample-rate range accepted by FluidSynth 2.x
_CHUNK_SAMPLES = 1 << 16  # samples converted at a time where a whole-signal copy is not needed
_write_float = None


def _fluid_write_float():
    """``fluid_synth_write_float`` from the library pyfluidsynth loaded.

    pyfluidsynth's ``get_samples`` returns dithered 16-bit samples; the float writer
    gives the synth's own output, without quantisation or dither noise.
    """
    global _write_float  # a ctypes prototype built once; it holds no audio state
    if _write_float is None:
        import ctypes

        import fluidsynth

        _write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int,
            ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
            ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
        )
        if _write_float is None:
            raise SimulationError(None, "soundfont", "the FluidSynth library has no fluid_synth_write_float",
                                  "install libfluidsynth 2.x")
    return _write_float


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate:
        raise SimulationError(None, "sample_rate", f"sample_rate={sample_rate!r} must be an integer in Hz",
                              "pass e.g. 48000")
    low, high = _FLUID_RATE_RANGE
    if not low <= int(sample_rate) <= high:
        raise SimulationError(None, "sample_rate", f"sample_rate={sample_rate} Hz is outside {low}-{high} Hz",
                              "pass e.g. 16000 or 48000")
    return int(sample_rate)


def _check_soundfont(soundfont: str | os.PathLike) -> Path:
    path = Path(soundfont)
    if not path.is_file():
        raise SimulationError(path, "soundfont", "SoundFont file not found",
                              "install one (e.g. Debian's fluid-soundfont-gm) or pass an existing .sf2 path")
    return path


def render_midi(
    midi: mido.MidiFile,
    *,
    sample_rate: int,
    soundfont: str | os.PathLike,
    n_samples: int | None = None,
    tail_s: float = 1.0,
    gain: float = 0.5,
) -> np.ndarray:
    """Render a MIDI file dry, in mono, with FluidSynth.

    A fresh synthesizer (no audio driver) renders each call: reverb and chorus off,
    one SoundFont, events fed at their sample times, ``fluid_synth_write_float``
    pulling exactly the samples between events. Two calls with the same inputs give
    identical samples. FluidSynth starts a note at its next internal 64-sample
    block, so onsets may lag their exact time by up to 63 samples (same on every
    render). The output is ``(left + right) / 2``; it is not normalised: with the
    default ``gain`` peaks stay far below 1.

    Parameters
    ----------
    midi : mido.MidiFile
        The part(s) to render; tempo changes are honoured, all tracks are played.
    sample_rate : int
        Output sampling rate in Hz (8000-96000).
    soundfont : path-like
        The ``.sf2`` file.
    n_samples : int, optional
        Output length in samples. Events after the end are dropped. Default:
        ``round((midi.length + tail_s) * sample_rate)``.
    tail_s : float
        Release time kept after the last event when ``n_samples`` is not given.
    gain : float
        FluidSynth's master gain (``synth.gain``). At 0.5 the trio's parts peak
        around 0.1 (-20 dBFS) with TimGM6mb and FluidR3_GM.

    Returns
    -------
    dry_S : numpy.ndarray, shape (n_samples,), float64
        The dry mono signal.

    Raises
    ------
    SimulationError
        If the SoundFont is missing or unreadable, or a setting is out of range.
    """
    sample_rate = _check_sample_rate(sample_rate)
    path = _check_soundfont(soundfont)
    if n_samples is None:
        if not math.isfinite(tail_s) or tail_s < 0:
            raise SimulationError(None, "tail_s", f"tail_s={tail_s!r} must be >= 0", "pass e.g. 1.0")
        n_samples = int(round((midi.length + tail_s) * sample_rate))
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise SimulationError(None, "n_samples", f"n_samples={n_samples!r} must be a positive integer",
                              "pass round(duration_s * sample_rate)")
    n_samples = int(n_samples)
    if not 0 < gain <= 10:
        raise SimulationError(None, "gain", f"gain={gain!r} must be in (0, 10]", "pass e.g. 0.2")

    import fluidsynth

    write_float = _fluid_write_float()
    synth = fluidsynth.Synth(
        gain=float(gain),
        samplerate=sample_rate,
        **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1},
    )
    try:
        sfid = synth.sfload(str(path))
        if sfid == -1:
            raise SimulationError(path, "soundfont", "FluidSynth cannot load this SoundFont",
                                  "pass a valid .sf2 file")
        for channel in range(16):
            if channel != 9:
                synth.program_select(channel, sfid, 0, 0)
        stereo_S2 = np.zeros((n_samples, 2), dtype=np.float32)

        def render_until(start: int, stop: int) -> None:
            if stop > start:
                view = stereo_S2[start:stop]
                address = view.ctypes.data
                write_float(synth.synth, stop - start, address, 0, 2, address, 1, 2)

        now_s = 0.0
        done = 0
        for message in midi:  # merged tracks, delta times in seconds (tempo applied)
            now_s += message.time
            at = int(round(now_s * sample_rate))
            if at >= n_samples:
                break
            render_until(done, at)
            done = max(done, at)
            if message.is_meta:
                continue
            kind = message.type
            if kind == "note_on":
                if message.velocity > 0:
                    synth.noteon(message.channel, message.note, message.velocity)
                else:
                    synth.noteoff(message.channel, message.note)
            elif kind == "note_off":
                synth.noteoff(message.channel, message.note)
            elif kind == "program_change":
                synth.program_change(message.channel, message.program)
            elif kind == "control_change":
                synth.cc(message.channel, message.control, message.value)
            elif kind == "pitchwheel":
                synth.pitch_bend(message.channel, message.pitch)
        render_until(done, n_samples)
    finally:
        synth.delete()
    # (left + right) / 2 in float64, a chunk at a time: the same numbers as the whole
    # array's mean, without a float64 copy of both channels (0.9 GB for 20 min at 48 kHz).
    dry_S = np.empty(n_samples)
    for start in range(0, n_samples, _CHUNK_SAMPLES):
        stop = start + _CHUNK_SAMPLES
        dry_S[start:stop] = stereo_S2[start:stop].astype(np.float64).mean(axis=1)
    return dry_S


def render_parts(
    parts: Mapping[str, mido.MidiFile],
    *,
    sample_rate: int,
    soundfont: str | os.PathLike,
    n_samples: int,
    gain: float = 0.5,
    callback: Callback | None = None,
) -> np.ndarray:
    """Render several parts separately, all to the same length.

    Returns
    -------
    dry_NS : numpy.ndarray, shape (len(parts), n_samples), float64
        Row ``n`` is the ``n``-th part of ``parts`` rendered by :func:`render_midi`.
    """
    _check_soundfont(soundfont)
    dry_NS = np.zeros((len(parts), int(n_samples)))
    for n, midi in enumerate(parts.values()):
        dry_NS[n] = render_midi(midi, sample_rate=sample_rate, soundfont=soundfont, n_samples=n_samples,
                                gain=gain)
        if callback is not None:
            callback("render", (n + 1) / len(parts))
    return dry_NS


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------

#: Parameter ``p`` of pyroomacoustics' cardioid family, ``p + (1 - p) cos(angle)``,
#: for each microphone pattern the package knows (one table for the whole package).
MIC_PATTERN_P: Mapping[str, float] = PATTERN_COEFFICIENT


@dataclass(frozen=True)
class MicSpec:
    """A microphone: the fields a session manifest carries for it.

    Attributes
    ----------
    name : str
    position_m : tuple of 3 float
    pattern : str
        One of :data:`MIC_PATTERN_P`.
    aim_azimuth_deg, aim_elevation_deg : float
        Direction of the pattern's main axis.
    """

    name: str
    position_m: tuple[float, float, float]
    pattern: str
    aim_azimuth_deg: float = 0.0
    aim_elevation_deg: float = 0.0


@dataclass(frozen=True)
class SourceSpec:
    """A sound source: name, position and General MIDI program (0-based)."""

    name: str
    position_m: tuple[float, float, float]
    program: int


DEFAULT_DIMENSIONS_M = (7.5, 5.6, 2.6)  # 109.2 m^3
DEFAULT_ORIGIN_M = (0.6, 2.8, 0.0)
DEFAULT_RT60_S = 0.5

#: Sources of the IRCAM trio, relative to the foot of the ambience mic.
IRCAM_TRIO_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("piano", (6.0, 0.0, 0.6), program=0),
    SourceSpec("sax", (4.5, 1.0, 0.6), program=66),
    SourceSpec("violin", (4.5, -1.0, 0.6), program=40),
)


def _mic_aimed_at(name: str, position_m, pattern: str, target: str) -> MicSpec:
    target_m = next(s.position_m for s in IRCAM_TRIO_SOURCES if s.name == target)
    azimuth_deg, elevation_deg = aim_angles(position_m, target_m)
    return MicSpec(name, tuple(position_m), pattern, azimuth_deg, elevation_deg)


#: Microphones of the IRCAM trio, relative to the foot of the ambience mic: a
#: three-cardioid main array, an ambience cardioid, one figure-8 spot per instrument.
IRCAM_TRIO_MICS: tuple[MicSpec, ...] = (
    MicSpec("trio_l", (3.0, 0.0, 1.52), "cardioid", 60.0, 0.0),
    _mic_aimed_at("trio_c", (3.0, 0.0, 1.50), "cardioid", "piano"),
    MicSpec("trio_r", (3.0, 0.0, 1.48), "cardioid", -60.0, 0.0),
    MicSpec("ambience", (0.0, 0.0, 1.8), "cardioid", 0.0, 0.0),
    _mic_aimed_at("spot_piano", (6.0, 0.0, 1.9), "figure8", "piano"),
    _mic_aimed_at("spot_sax", (4.5, 0.5, 1.7), "figure8", "sax"),
    _mic_aimed_at("spot_violin", (4.5, -0.5, 1.7), "figure8", "violin"),
)


def ircam_trio_geometry(
    *, origin_m: Sequence[float] = DEFAULT_ORIGIN_M
) -> tuple[tuple[MicSpec, ...], tuple[SourceSpec, ...]]:
    """The IRCAM trio's mics and sources in room coordinates.

    The rigid layout of :data:`IRCAM_TRIO_MICS` and :data:`IRCAM_TRIO_SOURCES` is
    translated by ``origin_m`` (the room position of the ambience mic's foot); aims
    do not change. The default puts x = 0..6 m at 0.6..6.6 m of the 7.5 m room,
    centred across its 5.6 m width.

    Returns
    -------
    mics : tuple of MicSpec
    sources : tuple of SourceSpec
    """
    origin = np.asarray(origin_m, dtype=float)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise SimulationError(None, "origin_m", f"origin_m={origin_m!r} must be 3 finite numbers", None)

    def shift(p):
        return tuple(float(v) for v in np.asarray(p, dtype=float) + origin)

    mics = tuple(
        MicSpec(m.name, shift(m.position_m), m.pattern, m.aim_azimuth_deg, m.aim_elevation_deg)
        for m in IRCAM_TRIO_MICS
    )
    sources = tuple(SourceSpec(s.name, shift(s.position_m), s.program) for s in IRCAM_TRIO_SOURCES)
    return mics, sources


# --------------------------------------------------------------------------------------
# Room: calibration and images
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomCalibration:
    """Absorption of a shoebox room whose simulated RIRs measure the requested RT60.

    Attributes
    ----------
    dimensions_m : tuple of 3 float
        Room size (x, y, z) in metres.
    rt60_s : float
        Requested RT60.
    energy_absorption : float
        Energy absorption coefficient of every wall, the calibrated value.
    max_order : int
        Image-source order: reflections reach ``c * rt60_s`` metres.
    measured_rt60_s : float
        RT60 measured (T30, extrapolated) on RIRs of the calibrated room.
    sample_rate : int
        Rate of the RIRs used for calibration. The absorption does not depend on
        it and may be used at any rate.
    sabine_energy_absorption : float
        Starting point: Sabine's formula (``pyroomacoustics.inverse_sabine``).
    sabine_measured_rt60_s : float
        RT60 measured with the Sabine absorption, before calibration.
    iterations : int
        Absorption updates made.
    decay_db : float
        Decay range the RT60s were measured on (30: T30).
    """

    dimensions_m: tuple[float, float, float]
    rt60_s: float
    energy_absorption: float
    max_order: int
    measured_rt60_s: float
    sample_rate: int
    sabine_energy_absorption: float
    sabine_measured_rt60_s: float
    iterations: int
    decay_db: float = 30.0


# Source and mic positions used to measure a room, as fractions of its dimensions:
# spread out, asymmetric, away from walls (no two pairs mirror each other).
_PROBE_SOURCES = ((0.78, 0.52, 0.27), (0.62, 0.71, 0.24), (0.58, 0.31, 0.22))
_PROBE_MICS = ((0.43, 0.47, 0.58), (0.13, 0.56, 0.69))


def _check_dimensions(dimensions_m) -> tuple[float, float, float]:
    dims = np.asarray(dimensions_m, dtype=float)
    if dims.shape != (3,) or not np.all(np.isfinite(dims)) or np.any(dims <= 0):
        raise SimulationError(None, "dimensions_m",
                              f"dimensions_m={dimensions_m!r} must be 3 positive lengths",
                              "pass e.g. (7.5, 5.6, 2.6)")
    return tuple(float(d) for d in dims)


def _shoebox(dimensions_m, energy_absorption: float, max_order: int, sample_rate: int):
    import pyroomacoustics as pra

    return pra.ShoeBox(
        list(dimensions_m),
        fs=sample_rate,
        materials=pra.Material(float(energy_absorption)),
        max_order=int(max_order),
        air_absorption=False,
        ray_tracing=False,
    )


def measure_room_rt60(
    *,
    dimensions_m: Sequence[float],
    energy_absorption: float,
    max_order: int,
    sample_rate: int = 16000,
    decay_db: float = 30.0,
) -> float:
    """RT60 of a shoebox room as measured on its image-source RIRs.

    Six RIRs (3 sources x 2 mics spread over the room) are simulated; on each, the
    Schroeder decay from -5 dB down by ``decay_db`` is fitted and extrapolated to
    60 dB (``decay_db=30``: T30, as ISO 3382; with
    ``pyroomacoustics.experimental.measure_rt60``). Returns the mean, in seconds.

    The image-source decay of a shoebox is not a single exponential: the late part
    decays more slowly, so T20 < T30 < a fit over 60 dB (0.60, 0.67 and 0.83 s in the
    default room with Sabine's absorption for 0.5 s).
    """
    import pyroomacoustics as pra

    dims = np.asarray(_check_dimensions(dimensions_m))
    room = _shoebox(dims, energy_absorption, max_order, sample_rate)
    for fraction in _PROBE_SOURCES:
        room.add_source(dims * np.asarray(fraction))
    room.add_microphone_array((dims * np.asarray(_PROBE_MICS)).T)
    room.compute_rir()
    rt60s = [
        pra.experimental.measure_rt60(np.asarray(rir, dtype=float), fs=sample_rate, decay_db=decay_db)
        for mic_rirs in room.rir
        for rir in mic_rirs
    ]
    return float(np.mean(rt60s))


def calibrate_room(
    *,
    dimensions_m: Sequence[float] = DEFAULT_DIMENSIONS_M,
    rt60_s: float = DEFAULT_RT60_S,
    sample_rate: int = 16000,
    tolerance: float = 0.02,
    max_iterations: int = 8,
    decay_db: float = 30.0,
    callback: Callback | None = None,
) -> RoomCalibration:
    """Find the wall absorption for which the simulated room measures ``rt60_s``.

    Sabine's absorption (``pyroomacoustics.inverse_sabine``) gives image-source
    RIRs whose measured RT60 is far longer than requested (0.68 s for 0.5 s in the
    default 109 m^3 room): the image-source decay of a shoebox is not Sabine's
    diffuse one. Starting from it, the absorption is updated with the Eyring-like
    fixed point ``-ln(1 - a') = -ln(1 - a) * measured / requested`` (RT60 is about
    proportional to ``1 / -ln(1 - a)``) until :func:`measure_room_rt60` is within
    ``tolerance`` of ``rt60_s``. ``max_order`` stays Sabine's for ``rt60_s`` (image
    sources out to ``c * rt60_s``), which covers the measured 35 dB of decay.

    Parameters
    ----------
    dimensions_m : sequence of 3 float
        Room size in metres.
    rt60_s : float
        Requested reverberation time in seconds.
    sample_rate : int
        Rate of the RIRs measured (16 kHz is enough and fast; the result holds at
        48 kHz).
    tolerance : float
        Accepted relative error of the measured RT60.
    max_iterations : int
        Absorption updates allowed.
    decay_db : float
        Decay range the RT60 is measured on (30: T30), see
        :func:`measure_room_rt60`.
    callback : callable, optional
        ``callback("calibrate", fraction)`` after each measurement.

    Returns
    -------
    RoomCalibration

    Raises
    ------
    SimulationError
        If the request is invalid, unreachable (absorption would exceed 1) or does
        not converge.
    """
    import pyroomacoustics as pra

    dims = _check_dimensions(dimensions_m)
    if not math.isfinite(rt60_s) or rt60_s <= 0:
        raise SimulationError(None, "rt60_s", f"rt60_s={rt60_s!r} must be > 0 s", "pass e.g. 0.5")
    if not 0 < tolerance < 1:
        raise SimulationError(None, "tolerance", f"tolerance={tolerance!r} must be in (0, 1)",
                              "pass e.g. 0.02")
    sample_rate = _check_sample_rate(sample_rate)
    if not 5 <= decay_db <= 60:
        raise SimulationError(None, "decay_db", f"decay_db={decay_db!r} must be in [5, 60] dB",
                              "pass 30 (T30)")
    try:
        sabine_absorption, max_order = pra.inverse_sabine(rt60_s, list(dims))
    except ValueError as error:
        raise SimulationError(None, "rt60_s", f"rt60_s={rt60_s} s is too short for a {dims} m room ({error})",
                              "ask for a longer RT60 or a larger room") from None
    sabine_absorption = float(sabine_absorption)

    def measure(absorption: float) -> float:
        return measure_room_rt60(dimensions_m=dims, energy_absorption=absorption, max_order=max_order,
                                 sample_rate=sample_rate, decay_db=decay_db)

    absorption = sabine_absorption
    measured = sabine_measured = measure(absorption)
    iterations = 0
    while abs(measured - rt60_s) > tolerance * rt60_s:
        if iterations == max_iterations:
            raise SimulationError(
                None, "rt60_s",
                f"room calibration did not converge: measured {measured:.3f} s for {rt60_s} s requested "
                f"after {iterations} updates", "raise max_iterations or tolerance",
            )
        if callback is not None:
            callback("calibrate", (iterations + 1) / (max_iterations + 1))
        alpha = -math.log1p(-absorption) * measured / rt60_s
        absorption = -math.expm1(-alpha)
        if absorption >= 0.99:
            raise SimulationError(None, "rt60_s", f"rt60_s={rt60_s} s needs walls absorbing more than 99 %",
                                  "ask for a longer RT60 or a larger room")
        measured = measure(absorption)
        iterations += 1
    if callback is not None:
        callback("calibrate", 1.0)
    return RoomCalibration(
        dimensions_m=dims,
        rt60_s=float(rt60_s),
        energy_absorption=float(absorption),
        max_order=int(max_order),
        measured_rt60_s=measured,
        sample_rate=sample_rate,
        sabine_energy_absorption=sabine_absorption,
        sabine_measured_rt60_s=sabine_measured,
        iterations=iterations,
        decay_db=float(decay_db),
    )


def _mic_fields(mic) -> tuple[np.ndarray, str, float, float]:
    """(position_m, pattern, azimuth_deg, elevation_deg) from a MicSpec-like object or a 4-tuple."""
    if hasattr(mic, "position_m"):
        return (np.asarray(mic.position_m, dtype=float), mic.pattern, float(mic.aim_azimuth_deg),
                float(mic.aim_elevation_deg))
    position_m, pattern, azimuth_deg, elevation_deg = mic
    return np.asarray(position_m, dtype=float), pattern, float(azimuth_deg), float(elevation_deg)


def _directivity(pattern: str, azimuth_deg: float, elevation_deg: float):
    """pyroomacoustics directivity for a pattern aimed at (azimuth, elevation); None for omni.

    pyroomacoustics' ``DirectionVector`` takes a colatitude (0 = +z), hence
    ``90 - elevation``.
    """
    p = MIC_PATTERN_P[pattern]
    if p == 1.0:
        return None
    from pyroomacoustics.directivities import CardioidFamily, DirectionVector

    colatitude_deg = min(max(90.0 - elevation_deg, 0.0), 180.0)
    return CardioidFamily(DirectionVector(azimuth=azimuth_deg, colatitude=colatitude_deg, degrees=True), p=p)


#: Samples per block of :func:`image_blocks` in :func:`simulate_session`: 2**22 (87 s
#: at 48 kHz) keeps a block of 3 sources x 7 mics at 700 MB in float64. Each block
#: convolves its span plus the RIR's length before it (76 000 samples at 48 kHz,
#: RT60 0.5 s); at this size that costs about 10 % more time than one convolution
#: of the whole signal (2**21 costs 60-100 %: scipy's overlap-add blocks fit badly).
IMAGE_BLOCK_SAMPLES = 1 << 22


def image_blocks(
    dry_NS: np.ndarray,
    *,
    source_positions_m: np.ndarray,
    mics: Sequence,
    calibration: RoomCalibration,
    sample_rate: int,
    dimensions_m: Sequence[float] | None = None,
    block_samples: int = IMAGE_BLOCK_SAMPLES,
    callback: Callback | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Each source's reverberant image at every microphone, one block of samples at a time.

    One shoebox room (walls of ``calibration.energy_absorption``, image sources up
    to ``calibration.max_order``) holds all sources and mics; pyroomacoustics
    computes one RIR per (mic, source) pair, with the mic's directivity applied to
    every image source, and each dry signal is convolved with its RIRs. Images are
    linear in the dry signals, so ``images_NMB.sum(axis=0)`` is the signal of every
    mic.

    Timing: sample ``t`` of an image is the room's output at time ``t`` for a dry
    signal starting at time 0, same length as the dry signal. The propagation delay
    is kept (direct sound at ``distance / c``); the constant latency of
    pyroomacoustics' RIRs (``frac_delay_length // 2`` = 40 samples, the centre of
    its fractional-delay filters) is removed, so an image is
    ``pyroomacoustics.Room.simulate``'s premix shifted by 40 samples; the
    reverberant tail beyond ``n_samples`` is cut.

    Blocks: samples ``[start, start + block_samples)`` of every image are computed
    by convolving (``scipy.signal.oaconvolve``) the dry samples they depend on, the
    block and the RIR's length before it; nothing is carried from block to block,
    so only one block of images is ever in memory. With one block
    (``block_samples >= n_samples``) each image is ``oaconvolve`` of the whole dry
    signal, sample for sample; with several, the same values to float64 rounding
    (the FFT sizes differ).

    The inputs are checked and the RIRs computed when this function is called; the
    convolutions run as the blocks are taken from the iterator.

    Parameters
    ----------
    dry_NS : numpy.ndarray, shape (n_sources, n_samples)
        Dry source signals. Not modified; read until the iterator is exhausted.
    source_positions_m : array_like, shape (n_sources, 3)
        Source positions in room coordinates (corner at the origin).
    mics : sequence
        :class:`MicSpec` (or any object with ``position_m``, ``pattern``,
        ``aim_azimuth_deg``, ``aim_elevation_deg``; a manifest ``Mic`` works), or
        tuples ``(position_m, pattern, aim_azimuth_deg, aim_elevation_deg)``, in
        room coordinates.
    calibration : RoomCalibration
        From :func:`calibrate_room`.
    sample_rate : int
        Rate of ``dry_NS`` in Hz.
    dimensions_m : sequence of 3 float, optional
        Room size; defaults to, and must equal, ``calibration.dimensions_m``.
    block_samples : int
        Samples per block (the last block may be shorter).
    callback : callable, optional
        ``callback("images", fraction)`` after the RIRs and after each block.

    Returns
    -------
    iterator of (start, images_NMB)
        ``start`` : int, the block's first sample; ``images_NMB`` : numpy.ndarray,
        shape (n_sources, n_mics, n_block), float64, a new array for every block.
        The blocks come in order and cover ``[0, n_samples)``.

    Raises
    ------
    SimulationError
        On shapes that do not match, a position outside the room, an unknown
        pattern or a block size below 1.
    """
    import pyroomacoustics as pra

    sample_rate = _check_sample_rate(sample_rate)
    dry_NS = np.asarray(dry_NS, dtype=float)
    if dry_NS.ndim != 2 or dry_NS.shape[1] == 0:
        raise SimulationError(None, "dry_NS",
                              f"dry_NS has shape {dry_NS.shape}, expected (n_sources, n_samples)",
                              None)
    if not all(np.all(np.isfinite(dry_NS[:, i:i + _CHUNK_SAMPLES]))
               for i in range(0, dry_NS.shape[1], _CHUNK_SAMPLES)):
        raise SimulationError(None, "dry_NS", "dry_NS holds NaN or infinite values", None)
    if isinstance(block_samples, bool) or int(block_samples) != block_samples or block_samples < 1:
        raise SimulationError(None, "block_samples",
                              f"block_samples={block_samples!r} must be a positive integer",
                              f"pass e.g. {IMAGE_BLOCK_SAMPLES}")
    n_sources = dry_NS.shape[0]
    dims = calibration.dimensions_m if dimensions_m is None else _check_dimensions(dimensions_m)
    if not np.allclose(dims, calibration.dimensions_m):
        raise SimulationError(None, "dimensions_m",
                              f"dimensions_m={dims} differ from the calibration's {calibration.dimensions_m}",
                              "calibrate the room with these dimensions")
    positions_N3 = np.asarray(source_positions_m, dtype=float)
    if positions_N3.shape != (n_sources, 3):
        raise SimulationError(None, "source_positions_m",
                              f"source_positions_m has shape {positions_N3.shape}, expected ({n_sources}, 3)",
                              None)
    mic_fields = [_mic_fields(mic) for mic in mics]
    if not mic_fields:
        raise SimulationError(None, "mics", "no microphones given", None)
    inside = np.asarray(dims)

    def check_inside(what: str, position: np.ndarray) -> None:
        if position.shape != (3,) or not np.all((position > 0) & (position < inside)):
            raise SimulationError(None, what, f"position {position.tolist()} is not inside the {dims} m room",
                                  "use room coordinates (corner at 0, 0, 0)")

    for n, position in enumerate(positions_N3):
        check_inside(f"source_positions_m[{n}]", position)
    directivities = []
    for m, (position, pattern, azimuth_deg, elevation_deg) in enumerate(mic_fields):
        check_inside(f"mics[{m}].position_m", position)
        if pattern not in MIC_PATTERN_P:
            raise SimulationError(None, f"mics[{m}].pattern", f"unknown pattern {pattern!r}",
                                  f"use one of {tuple(MIC_PATTERN_P)}")
        directivities.append(_directivity(pattern, azimuth_deg, elevation_deg))

    room = _shoebox(dims, calibration.energy_absorption, calibration.max_order, sample_rate)
    for position in positions_N3:
        room.add_source(position)
    room.add_microphone_array(np.stack([f[0] for f in mic_fields], axis=1), directivity=directivities)
    room.compute_rir()
    rirs_MN = [[np.asarray(room.rir[m][n], dtype=float) for n in range(n_sources)]
               for m in range(len(mic_fields))]
    latency = pra.constants.get("frac_delay_length") // 2
    return _convolved_blocks(dry_NS, rirs_MN, latency=latency, block_samples=int(block_samples),
                             callback=callback)


def _convolved_blocks(
    dry_NS: np.ndarray,
    rirs_MN: Sequence[Sequence[np.ndarray]],
    *,
    latency: int,
    block_samples: int,
    callback: Callback | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The blocks of :func:`image_blocks`, from checked inputs and computed RIRs.

    Output sample ``t`` of image (n, m) is sample ``t + latency`` of the full
    convolution ``dry_NS[n] * rirs_MN[m][n]``, which depends on dry samples
    ``t + latency - len(rir) + 1 .. t + latency``. A block convolves just that span
    of the dry signal and keeps the part of the result that lies in the block.
    """
    from scipy.signal import oaconvolve

    n_sources, n_samples = dry_NS.shape
    n_mics = len(rirs_MN)
    n_blocks = -(-n_samples // block_samples)
    if callback is not None:
        callback("images", 1.0 / (n_blocks + 1))
    for k, start in enumerate(range(0, n_samples, block_samples)):
        stop = min(start + block_samples, n_samples)
        images_NMB = np.empty((n_sources, n_mics, stop - start))
        for n in range(n_sources):
            for m in range(n_mics):
                rir = rirs_MN[m][n]
                first = max(0, start + latency - len(rir) + 1)  # dry span this block depends on
                last = min(n_samples, stop + latency)
                full = oaconvolve(dry_NS[n, first:last], rir)
                images_NMB[n, m] = full[start + latency - first : stop + latency - first]
        if callback is not None:
            callback("images", (k + 2) / (n_blocks + 1))
        yield start, images_NMB
        del images_NMB  # not held while the next block is computed


def render_images(
    dry_NS: np.ndarray,
    *,
    source_positions_m: np.ndarray,
    mics: Sequence,
    calibration: RoomCalibration,
    sample_rate: int,
    dimensions_m: Sequence[float] | None = None,
    callback: Callback | None = None,
) -> np.ndarray:
    """Each source's reverberant image at every microphone, all in memory.

    :func:`image_blocks` with a single block: the room, timing and parameters are
    described there. The result takes ``8 * n_sources * n_mics * n_samples`` bytes
    (9.7 GB for 3 sources, 7 mics and 20 minutes at 48 kHz); long signals are
    better taken block by block from :func:`image_blocks`, as
    :func:`simulate_session` does.

    Returns
    -------
    images_NMS : numpy.ndarray, shape (n_sources, n_mics, n_samples), float64
        ``images_NMS.sum(axis=0)`` is the signal of every mic.

    Raises
    ------
    SimulationError
        On shapes that do not match, a position outside the room, or an unknown
        pattern.
    """
    n_samples = np.shape(dry_NS)[-1] if np.ndim(dry_NS) == 2 else 1
    blocks = image_blocks(dry_NS, source_positions_m=source_positions_m, mics=mics, calibration=calibration,
                          sample_rate=sample_rate, dimensions_m=dimensions_m, block_samples=max(n_samples, 1),
                          callback=callback)
    ((_, images_NMS),) = blocks
    return images_NMS


# --------------------------------------------------------------------------------------
# The session folder
# --------------------------------------------------------------------------------------

#: Where :func:`find_soundfont` looks, in order, after ``$STUDIO_SEP_SOUNDFONT``.
SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # Debian fluid-soundfont-gm
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),  # Debian timgm6mb-soundfont
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
)
PROCESSING_SAMPLE_RATE = 16000  #: the paper's processing rate, written into the manifest
SESSION_NAME = "ircam_trio"
SESSION_DESCRIPTION = ("Violin, tenor sax and piano in a 109 m3 studio, 7 mics "
                       "(rendered look-alike of the paper's session)")


@dataclass(frozen=True)
class SimulationSettings:
    """Everything that determines a rendered session (and so its samples)."""

    seed: int = 0
    duration_s: float = 20.0
    sample_rate: int = 48000
    rt60_s: float = DEFAULT_RT60_S
    soundfont: Path | None = None
    reference_duration_s: float = 10.0


@dataclass(frozen=True)
class SimulationResult:
    manifest: Path
    reused: bool
    rt60_requested_s: float
    rt60_measured_s: float
    render: dict


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The SoundFont to use: the argument, else ``$STUDIO_SEP_SOUNDFONT``, else the
    first of :data:`SOUNDFONT_CANDIDATES` that exists."""
    if soundfont is not None:
        return _check_soundfont(soundfont)
    env = os.environ.get("STUDIO_SEP_SOUNDFONT")
    if env:
        path = Path(env)
        if not path.is_file():
            raise SimulationError(path, "STUDIO_SEP_SOUNDFONT", "SoundFont file not found",
                                  "point the variable at an existing .sf2 or unset it")
        return path
    for candidate in SOUNDFONT_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise SimulationError(None, "soundfont", "no General MIDI SoundFont found in /usr/share/sounds/sf2",
                          "apt-get install fluid-soundfont-gm, or pass --soundfont PATH.sf2")


def reference_session(folder: str | os.PathLike, settings: SimulationSettings = SimulationSettings()):
    """The manifest of the rendered reference session in ``folder`` (nothing is read
    or written). The shipped ``sessions/ircam_trio/session.toml`` is this manifest for
    the default settings."""
    from studio_sep.session import Mic, Room, Session, Source, Truth

    folder = Path(folder).resolve()
    aimed = {"trio_c": "piano", "spot_piano": "piano", "spot_sax": "sax", "spot_violin": "violin"}
    mics = tuple(
        Mic(name=m.name, position_m=tuple(m.position_m), file=folder / "audio" / "mics.wav", channel=i + 1,
            pattern=m.pattern, aim_azimuth_deg=m.aim_azimuth_deg, aim_elevation_deg=m.aim_elevation_deg,
            aim_at=aimed.get(m.name))
        for i, m in enumerate(IRCAM_TRIO_MICS))
    prompts = {"piano": "piano", "sax": "tenor saxophone", "violin": "violin"}
    sources = tuple(
        Source(name=s.name, position_m=tuple(s.position_m), prompt=prompts[s.name], spot_mic=f"spot_{s.name}",
               reference=folder / "reference" / f"{s.name}.wav", midi=folder / "midi" / f"{s.name}.mid")
        for s in IRCAM_TRIO_SOURCES)
    truth = Truth(images={s.name: folder / "truth" / "images" / f"{s.name}.wav" for s in sources},
                  dry={s.name: folder / "truth" / "dry" / f"{s.name}.wav" for s in sources})
    return Session(path=folder / "session.toml", name=SESSION_NAME, description=SESSION_DESCRIPTION,
                   processing_sample_rate=PROCESSING_SAMPLE_RATE, mics=mics, sources=sources,
                   room=Room(dimensions_m=DEFAULT_DIMENSIONS_M, origin_m=DEFAULT_ORIGIN_M,
                             rt60_s=float(settings.rt60_s)),
                   truth=truth)


def _check_settings(settings: SimulationSettings) -> None:
    _check_sample_rate(settings.sample_rate)
    checks = (
        ("duration", settings.duration_s, 2.0, 3600.0, "seconds"),
        ("reference-duration", settings.reference_duration_s, 2.0, 600.0, "seconds"),
        ("rt60", settings.rt60_s, 0.1, 2.0, "seconds"),
    )
    for name, value, low, high, unit in checks:
        if not (math.isfinite(value) and low <= value <= high):
            raise SimulationError(None, f"--{name}", f"{value} is outside {low}-{high} {unit}",
                                  f"pass a value between {low} and {high}")
    if settings.seed < 0:
        raise SimulationError(None, "--seed", f"{settings.seed} is negative", "pass a seed of 0 or more")


def simulate_session(
    out_dir: str | os.PathLike,
    settings: SimulationSettings = SimulationSettings(),
    *,
    force: bool = False,
    callback: Callable[..., None] | None = None,
) -> SimulationResult:
    """Render the reference trio session into ``out_dir`` (see ``docs/manifest.md``).

    Checks come first: the settings, the SoundFont, and an existing ``session.toml``
    in ``out_dir``, which is replaced only if it describes the same session or
    ``force`` is set. A folder that already holds this exact render (same settings,
    same SoundFont bytes, every file valid) is reused as it is. Every file is written
    atomically; ``render.json`` is written last, so its presence means the render
    is complete. The room images are computed and written block by block
    (:data:`IMAGE_BLOCK_SAMPLES`): memory holds the dry signals and one block of
    images, not every image (2.6 GiB peak for 20 minutes at 48 kHz, not about 20).

    ``callback(stage, done, total)`` reports progress.
    """
    import json

    from studio_sep import __version__
    from studio_sep.io import audio as audio_io
    from studio_sep.session import dump_session, load_session, session_to_dict
    from studio_sep.util.atomic import atomic_path, file_sha256, write_text_atomic
    from studio_sep.util.errors import StudioSepError

    _check_settings(settings)
    soundfont = find_soundfont(settings.soundfont).resolve()
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise SimulationError(folder, None, "exists and is not a folder", "give a folder path")
    session = reference_session(folder, settings)
    manifest_path = folder / "session.toml"
    same_manifest = False  # an equal manifest is kept as it is (with its comments)
    if manifest_path.exists():
        try:
            same_manifest = session_to_dict(load_session(manifest_path, check_audio=False)) == \
                session_to_dict(session)
        except StudioSepError:
            same_manifest = False
        if not same_manifest and not force:
            raise SimulationError(manifest_path, None, "exists and describes another session",
                                  "pick another folder, or pass --force to overwrite it")

    sample_rate = int(settings.sample_rate)
    key = {"seed": settings.seed, "duration_s": settings.duration_s, "sample_rate": sample_rate,
           "rt60_s": settings.rt60_s, "reference_duration_s": settings.reference_duration_s,
           "soundfont_sha256": file_sha256(soundfont)}
    render_path = folder / "render.json"
    if render_path.is_file() and manifest_path.is_file():
        try:
            previous = json.loads(render_path.read_text())
            if previous.get("key") == key:
                load_session(manifest_path)  # every file present, readable, consistent
                return SimulationResult(manifest_path, True, settings.rt60_s,
                                        previous["room"]["measured_rt60_s"], previous)
        except (StudioSepError, ValueError, KeyError):
            pass  # incomplete or stale: render again

    report = callback or (lambda stage, done, total, detail="": None)

    def stage(name: str):
        return lambda _stage, fraction: report(name, round(100 * fraction), 100)

    n_samples = round(settings.duration_s * sample_rate)
    n_reference = round(settings.reference_duration_s * sample_rate)
    names = tuple(s.name for s in IRCAM_TRIO_SOURCES)
    parts = compose_parts(seed=settings.seed, duration_s=settings.duration_s, names=names)
    solo_parts = compose_reference_parts(seed=settings.seed, duration_s=settings.reference_duration_s, names=names)
    dry_NS = render_parts(parts, sample_rate=sample_rate, soundfont=soundfont, n_samples=n_samples,
                          callback=stage("render parts"))
    solo_NS = render_parts(solo_parts, sample_rate=sample_rate, soundfont=soundfont, n_samples=n_reference,
                           callback=stage("render solo takes"))
    calibration = calibrate_room(dimensions_m=DEFAULT_DIMENSIONS_M, rt60_s=settings.rt60_s,
                                 callback=stage("calibrate room"))
    room_mics, room_sources = ircam_trio_geometry(origin_m=DEFAULT_ORIGIN_M)
    positions = np.array([s.position_m for s in room_sources])
    mic_index = {m.name: i for i, m in enumerate(room_mics)}
    solo_NS_at_spot = np.stack([
        render_images(solo_NS[n:n + 1], source_positions_m=positions[n:n + 1],
                      mics=[room_mics[mic_index[f"spot_{name}"]]], calibration=calibration,
                      sample_rate=sample_rate)[0, 0]
        for n, name in enumerate(names)])
    report("solo takes in the room", 1, 1)

    # The session's images, mic signals and dry signals are written block by block as
    # the images are computed: the images of every source at every mic never are in
    # memory at once (9.7 GB in float64 for 20 minutes at 48 kHz). float32 files, all
    # rounded from the same float64 render: the images sum to the mic signals to
    # float32 precision.
    blocks = image_blocks(dry_NS, source_positions_m=positions, mics=room_mics, calibration=calibration,
                          sample_rate=sample_rate, block_samples=IMAGE_BLOCK_SAMPLES,
                          callback=stage("room images"))
    n_mics = len(room_mics)
    mic_peak = 0.0
    with contextlib.ExitStack() as files:
        def writer(path: Path, n_channels: int) -> audio_io.AudioWriter:
            return files.enter_context(audio_io.open_audio_writer(
                path, sample_rate, n_channels=n_channels, n_samples=n_samples, subtype="float32"))

        mics_out = writer(folder / "audio" / "mics.wav", n_mics)
        images_out = [writer(folder / "truth" / "images" / f"{name}.wav", n_mics) for name in names]
        dry_out = [writer(folder / "truth" / "dry" / f"{name}.wav", 1) for name in names]
        for start, images_NMB in blocks:
            stop = start + images_NMB.shape[-1]
            mics_MB = images_NMB.sum(axis=0)
            mic_peak = max(mic_peak, float(mics_MB.max()), -float(mics_MB.min()))
            mics_out.write(mics_MB)
            for n in range(len(names)):
                images_out[n].write(images_NMB[n])
                dry_out[n].write(dry_NS[n, start:stop])
            del images_NMB, mics_MB  # one block in memory at a time, not two
    for n, name in enumerate(names):
        audio_io.write_audio(folder / "reference" / f"{name}.wav", solo_NS_at_spot[n], sample_rate,
                             subtype="float32")
    report("write files", 1, 1)
    for name in names:
        for prefix, midi in (("", parts[name]), ("reference_", solo_parts[name])):
            with atomic_path(folder / "midi" / f"{prefix}{name}.mid") as tmp:
                midi.save(str(tmp))
    if not same_manifest:
        dump_session(session, manifest_path)

    from importlib.metadata import version

    render = {
        "studio_sep": __version__, "key": key, "soundfont": str(soundfont),
        "composition": {"seed": settings.seed, "reference_seed": settings.seed + REFERENCE_SEED_OFFSET,
                        "programs": {s.name: s.program for s in IRCAM_TRIO_SOURCES}},
        "room": {"dimensions_m": list(DEFAULT_DIMENSIONS_M), "origin_m": list(DEFAULT_ORIGIN_M),
                 "rt60_requested_s": settings.rt60_s, "measured_rt60_s": round(calibration.measured_rt60_s, 4),
                 "rt60_measure": f"T{calibration.decay_db:g} extrapolated to 60 dB, mean of probe RIRs",
                 "energy_absorption": round(calibration.energy_absorption, 5), "max_order": calibration.max_order,
                 "sabine_energy_absorption": round(calibration.sabine_energy_absorption, 5),
                 "sabine_measured_rt60_s": round(calibration.sabine_measured_rt60_s, 4),
                 "image_block_samples": IMAGE_BLOCK_SAMPLES},
        "levels": {"mic_peak": round(mic_peak, 4),
                   "dry_rms": {name: round(float(np.sqrt(np.mean(dry_NS[n] ** 2))), 5)
                               for n, name in enumerate(names)}},
        "versions": {name: version(name) for name in ("pyroomacoustics", "pyfluidsynth", "mido", "numpy")},
    }
    write_text_atomic(render_path, json.dumps(render, indent=2))
    return SimulationResult(manifest_path, False, settings.rt60_s, calibration.measured_rt60_s, render)
