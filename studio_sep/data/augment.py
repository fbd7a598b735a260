"""Training data for CLASS-net: the paper's augmentation (§3.3.1–3.3.2).

Torch-free (numpy, scipy, soundfile, mido, FluidSynth), so a dataset can be made on a
machine without the training stack. Three stages, data flowing one way:

1. **Stem pool** (:func:`build_stem_pool` → :class:`StemPool`). Mono stems at 16 kHz
   (the training rate, §3.3.3), each reduced to its *active audio*
   (:func:`extract_active`), from up to three places:

   - General-MIDI renders: ``phrases_per_program`` random phrases
     (:func:`compose_phrase`: a monophonic line for winds and strings, chords and a
     melody for piano, guitar and organ, random key, tempo, note lengths, velocities
     and rests) for every GM program of every class of
     :data:`studio_sep.data.instruments.CLASSES`, rendered dry by
     :func:`studio_sep.sim.simulate.render_midi`;
   - solo reference takes: the ``reference`` of every source of the given session
     manifests (class from the source's prompt), or ``(wav, class)`` pairs. These are
     labelled ``"<class>_rec"`` (the paper's ``violin_rec`` ...); the prompt is the
     canonical class;
   - a Slakh2100 folder (``Track*/metadata.yaml`` + ``Track*/stems/Sxx.flac|wav``):
     stems whose MIDI program name names a target class are targets, unless the name
     or instrument class holds "electric" or "synth" (§3.3.1.1); every other
     rendered non-drum stem is an interferer. Slakh stems are read when first drawn.

   Every stem has a ``label`` (``"violin"``, ``"violin_rec"``, ``"flute"``, a Slakh
   instrument class such as ``"guitar"``) and a ``family``: the class that decides
   "same instrument" (the label without ``_rec``; for a rejected "Electric Piano" or
   "Synth Strings" stem the class its name would otherwise match, so an electric
   piano never interferes with a piano target).

2. **Examples** (:func:`make_example`, pure; one ``numpy.random.Generator`` in). A
   target class uniform among the target classes the pool holds; its recorded
   variant with probability ``rec_probability`` when it has one (and non-recorded
   stems too); a target stem uniform in that label; 1–3 interferer stems uniform
   over all stems of another family (distinct stems). Each stem's active audio is
   RMS-normalised to ``stem_rms_dbfs`` and scattered (:func:`scatter`): the
   ``duration_s`` timeline is cut into ``n_bins`` bins; in each bin, with
   probability ``insert_probability``, a random segment of ``min_segment_s`` to
   ``max_segment_s`` of the stem is placed at a uniform position in the bin, after
   the end of the instrument's previous segment when that one reaches into the bin
   (no insertion when it covers the whole bin); segments run past their bin and are
   cut at ``duration_s``. Mixture = target + interferers, then the target, the
   interferers and the mixture are scaled by one gain so the mixture peaks at
   ``mixture_peak`` (the target stays exactly a component of the mixture). The
   reference is a ``duration_s`` window at a random offset of the active audio of
   another stem of the target's class (any variant), RMS-normalised to
   ``stem_rms_dbfs`` (peak kept below 1), zero-padded when shorter, not scattered;
   the target's own stem only when the class has a single stem.

3. **Files** (:func:`generate_dataset`): example ``i`` of split ``k``
   (train 0, val 1, test 2) is made from ``numpy.random.default_rng([seed, k, i])``,
   so it does not depend on how many examples are made. Layout::

       OUT/settings.json                 written first: what decides the samples
       OUT/<split>/<id>_mixture.wav      mono float32 WAV, 16 kHz, duration_s
       OUT/<split>/<id>_target.wav
       OUT/<split>/<id>_reference.wav
       OUT/<split>/<id>.json             written after its three WAVs
       OUT/dataset.json                  written last

   ``<id>`` is the example index zero-padded to 6 digits. ``dataset.json``::

       {"format": "studio-sep.augment/1", "sample_rate": 16000, "seed": S,
        "duration_s": 10.0, "classes": [...], "interferer_classes": [...],
        "splits": {"train": n, "val": n, "test": n}, "pool": {...}, "settings": {...}}

   ``<id>.json``: ``id``, ``split``, ``index``, ``prompt`` (canonical class),
   ``class`` (same), ``target_label``, ``target_source``, ``reference_source``,
   ``reference_same_stem``, ``interferers`` (``[{"class", "label", "source"}]``),
   ``insertions`` (``{"0": [[start_s, end_s], ...], "1": ...}``; instrument 0 is the
   target, 1... the interferers in order), ``bin_draws`` (same keys: per bin, whether
   the 80 % draw asked for an insertion), ``gain``, ``files``.

   Every file is written atomically. A second run with the same seed, settings and
   pool skips complete examples (resume, or more examples); any other folder that is
   not empty is refused with an :class:`~studio_sep.util.errors.InputError`.
   :func:`load_dataset_index` reads a finished dataset.

Progress: ``progress(stage, done, total)`` with stages ``"render"`` (GM programs; all
phrases of a program are rendered in one FluidSynth run, one SoundFont load),
``"recordings"``, ``"slakh"`` (tracks scanned), ``"train"``, ``"val"``, ``"test"``.

Axis letters: ``S`` samples, ``N`` instruments of one example.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np
import scipy.signal
import soundfile

from studio_sep.data.instruments import CLASSES, TARGET_CLASSES, has_reject_word, match_class
from studio_sep.dsp.resample import resample
from studio_sep.io.audio import read_audio
from studio_sep.util.atomic import atomic_path, write_text_atomic
from studio_sep.util.errors import AudioError, InputError

__all__ = [
    "FORMAT",
    "SAMPLE_RATE",
    "SPLITS",
    "AugmentSettings",
    "Example",
    "Stem",
    "StemPool",
    "build_stem_pool",
    "classify_name",
    "compose_phrase",
    "extract_active",
    "active_mask",
    "generate_dataset",
    "load_dataset_index",
    "make_example",
    "parse_slakh_metadata",
    "scatter",
]

FORMAT = "studio-sep.augment/1"
SAMPLE_RATE = 16000  #: the training rate (§3.3.3)
SPLITS = ("train", "val", "test")
REC_SUFFIX = "_rec"

Progress = Callable[[str, int, int], None]

# --------------------------------------------------------------------------------------
# Active audio
# --------------------------------------------------------------------------------------


def active_mask(w_S: np.ndarray, sample_rate: int, *, cutoff_hz: float = 10.0,
                threshold_db: float = -40.0) -> np.ndarray:
    """Where a stem plays (§3.3.2.2): ``y = lowpass(|w|) > T``.

    ``y`` is ``|w|`` through a 2nd-order Butterworth low-pass at ``cutoff_hz``, run
    forwards and backwards (zero phase, so the envelope is not delayed; its edges
    smear by about ``1 / cutoff_hz``). ``T`` is ``threshold_db`` relative to the peak of
    ``y``.

    Parameters
    ----------
    w_S : ndarray, shape (n_samples,)
    sample_rate : int
        In Hz.

    Returns
    -------
    mask_S : ndarray of bool, shape (n_samples,)
        All False for a silent stem.
    """
    w_S = np.asarray(w_S, dtype=np.float64)
    if w_S.ndim != 1:
        raise ValueError(f"active_mask: expected a mono (n_samples,) signal, got shape {w_S.shape}")
    if w_S.size == 0:
        return np.zeros(0, dtype=bool)
    sos = scipy.signal.butter(2, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    if w_S.size > 3 * 2 * (sos.shape[0] + 1):
        y_S = scipy.signal.sosfiltfilt(sos, np.abs(w_S))
    else:  # too short to filter: the raw magnitude
        y_S = np.abs(w_S)
    peak = float(np.max(y_S))
    if not peak > 0:
        return np.zeros(w_S.size, dtype=bool)
    return y_S > peak * 10.0 ** (threshold_db / 20.0)


def extract_active(w_S: np.ndarray, sample_rate: int, *, cutoff_hz: float = 10.0,
                   threshold_db: float = -40.0) -> np.ndarray:
    """The samples of ``w_S`` where :func:`active_mask` holds, concatenated (as in the
    paper: silences are cut out, the remaining portions joined). float32, 1-D."""
    w_S = np.asarray(w_S)
    return np.ascontiguousarray(w_S[active_mask(w_S, sample_rate, cutoff_hz=cutoff_hz,
                                                threshold_db=threshold_db)], dtype=np.float32)


def _to_mono_rate(x_CS: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    w_S = np.asarray(x_CS, dtype=np.float64)
    if w_S.ndim == 2:
        w_S = w_S.mean(axis=0)
    if sample_rate != target_rate:  # resample_poly's own length, ceil(S · target / rate)
        w_S = resample(w_S, sample_rate, target_rate, n_samples=-(-w_S.shape[-1] * target_rate // sample_rate))
    return w_S


# --------------------------------------------------------------------------------------
# Random phrases for General MIDI programs
# --------------------------------------------------------------------------------------

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
GM_NAMES = {
    0: "acoustic grand piano", 1: "bright acoustic piano", 3: "honky-tonk piano", 19: "church organ",
    24: "nylon guitar", 25: "steel guitar", 32: "acoustic bass", 40: "violin", 41: "viola", 42: "cello",
    48: "string ensemble 1", 49: "string ensemble 2", 56: "trumpet", 60: "french horn",
    64: "soprano sax", 65: "alto sax", 66: "tenor sax", 67: "baritone sax", 68: "oboe", 71: "clarinet",
    72: "piccolo", 73: "flute", 110: "fiddle",
}

_TICKS_PER_BEAT = 480
_SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))  # major, natural minor
_LENGTHS_BEATS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
_LENGTH_WEIGHTS = (0.08, 0.3, 0.07, 0.25, 0.1, 0.12, 0.04, 0.04)
_STEPS = (-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5)
_STEP_WEIGHTS = (0.03, 0.04, 0.08, 0.15, 0.19, 0.02, 0.19, 0.15, 0.08, 0.04, 0.03)

# A note is (start_beat, stop_beat, key, velocity).
_Note = tuple[float, float, int, int]


def _melody(rng: np.random.Generator, keys: Sequence[int], n_beats: float, beat_s: float,
            start: float = 0.0) -> list[_Note]:
    """A monophonic random walk over ``keys`` with rests and occasional long pauses."""
    weights = np.asarray(_LENGTH_WEIGHTS) / np.sum(_LENGTH_WEIGHTS)
    step_weights = np.asarray(_STEP_WEIGHTS) / np.sum(_STEP_WEIGHTS)
    articulation = rng.uniform(0.6, 1.0)
    base_velocity = int(rng.integers(50, 111))
    idx = int(rng.integers(len(keys) // 4, max(len(keys) // 4 + 1, 3 * len(keys) // 4)))
    notes: list[_Note] = []
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
            n_beats: float, organ_like: bool) -> list[_Note]:
    """Bass notes and triads bar by bar (block, half notes or arpeggio), a melody on top."""
    notes: list[_Note] = []
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

    midi = mido.MidiFile(type=1, ticks_per_beat=_TICKS_PER_BEAT)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.Message("program_change", channel=0, program=int(program), time=0))
    events = []
    for on, off, key, velocity in notes:
        events.append((int(round(on * _TICKS_PER_BEAT)), 1, key, velocity))
        events.append((int(round(off * _TICKS_PER_BEAT)), 0, key, 0))
    events.sort()  # note-offs before note-ons at one tick, so a repeated key restarts
    now = 0
    for tick, is_on, key, velocity in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=0, note=key, velocity=velocity, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return midi


_TAIL_S = 1.0  # rendered after a phrase's last event (its release)
_GAP_S = 1.0  # more silence before the next phrase of a batch, not part of either


def _render_phrases(midis: Sequence[mido.MidiFile], *, sample_rate: int, soundfont, render) -> list[np.ndarray]:
    """Render phrases with one synthesizer (one SoundFont load, the slow part).

    The phrases are laid end to end in one MIDI file (fixed tempo, 1/1920 s ticks),
    each starting on a 64-sample block boundary ``_TAIL_S + _GAP_S`` after the
    previous one's last event; phrase ``j`` is the slice from its start to
    ``_TAIL_S`` after its last event.
    """
    ticks_per_s = 1920  # 120 BPM (the default tempo) at 960 ticks per beat
    starts, lengths = [], []
    events = []
    at = 0
    for midi in midis:
        n = int(round((midi.length + _TAIL_S) * sample_rate))
        starts.append(at)
        lengths.append(n)
        now_s = at / sample_rate
        for message in midi:  # seconds, tempo applied
            now_s += message.time
            if not message.is_meta:
                events.append((int(round(now_s * ticks_per_s)), len(events), message.copy(time=0)))
        at += -(-(n + int(round(_GAP_S * sample_rate))) // 64) * 64
    combined = mido.MidiFile(type=0, ticks_per_beat=ticks_per_s // 2)
    track = mido.MidiTrack()
    combined.tracks.append(track)
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    dry_S = render(combined, sample_rate=sample_rate, soundfont=soundfont, n_samples=max(at, 1))
    return [dry_S[a: a + n] for a, n in zip(starts, lengths)]


# --------------------------------------------------------------------------------------
# The stem pool
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Stem:
    """One stem of the pool.

    Attributes
    ----------
    label : str
        ``"violin"``, ``"violin_rec"``, ``"flute"``, a Slakh instrument class ...
    family : str
        The class that decides "same instrument" (see the module docstring).
    is_target : bool
        Whether it may be a target or a reference (a target class, not rejected).
    source : str
        Where it comes from: ``"gm:040 violin #003"`` or a file path.
    audio : ndarray or None
        Active audio at the pool's rate (float32), for stems held in memory.
    path : Path or None
        File read on first use (Slakh stems).
    """

    label: str
    family: str
    is_target: bool
    source: str
    audio: np.ndarray | None = None
    path: Path | None = None

    @property
    def canonical(self) -> str:
        """The prompt class: the label without ``_rec``."""
        return self.label[: -len(REC_SUFFIX)] if self.label.endswith(REC_SUFFIX) else self.label


@dataclass(eq=False)
class StemPool:
    """The stems examples are drawn from (see :func:`build_stem_pool`)."""

    stems: tuple[Stem, ...]
    sample_rate: int = SAMPLE_RATE
    cutoff_hz: float = 10.0
    threshold_db: float = -40.0
    min_active_s: float = 1.0
    settings: dict = field(default_factory=dict)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    #: Slakh stems kept in memory after reading (results never depend on it).
    cache_size = 64

    def target_classes(self) -> list[str]:
        """Target classes with at least one stem, in :data:`TARGET_CLASSES` order."""
        have = {s.canonical for s in self.stems if s.is_target}
        return [c for c in TARGET_CLASSES if c in have]

    def interferer_classes(self) -> list[str]:
        """Labels of stems that are never targets."""
        return sorted({s.label for s in self.stems if not s.is_target})

    def counts(self) -> dict[str, dict[str, int]]:
        """``{label: {"stems": n, "targets": n}}``, sorted by label."""
        out: dict[str, dict[str, int]] = {}
        for s in self.stems:
            entry = out.setdefault(s.label, {"stems": 0, "targets": 0})
            entry["stems"] += 1
            entry["targets"] += int(s.is_target)
        return dict(sorted(out.items()))

    def fingerprint(self) -> str:
        """SHA-256 over every stem's label, family, role, source and audio (or file
        size): equal pools give equal fingerprints."""
        digest = hashlib.sha256()
        for s in self.stems:
            digest.update(f"{s.label}\0{s.family}\0{int(s.is_target)}\0{s.source}\0".encode())
            if s.audio is not None:
                digest.update(np.ascontiguousarray(s.audio, dtype=np.float32).tobytes())
            elif s.path is not None:
                digest.update(str(s.path.stat().st_size if s.path.exists() else -1).encode())
        return digest.hexdigest()

    def active_audio(self, stem: Stem) -> np.ndarray:
        """The stem's active audio (float32, the pool's rate); empty when the stem is
        silent, unreadable or shorter than ``min_active_s`` once silences are cut."""
        if stem.audio is not None:
            return stem.audio
        key = str(stem.path)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            x_CS, rate = read_audio(stem.path, dtype="float32")
            active = extract_active(_to_mono_rate(x_CS, rate, self.sample_rate), self.sample_rate,
                                    cutoff_hz=self.cutoff_hz, threshold_db=self.threshold_db)
        except AudioError:
            active = np.zeros(0, dtype=np.float32)
        if active.size < self.min_active_s * self.sample_rate:
            active = np.zeros(0, dtype=np.float32)
        self._cache[key] = active
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return active


def classify_name(text: str) -> tuple[str | None, bool]:
    """``(family, acceptable)`` of an instrument name or prompt.

    ``family`` is the class of :data:`studio_sep.data.instruments.CLASSES` the name matches
    once the words "electric"/"synth" are ignored (None: no class); ``acceptable`` is
    False when the name holds one of those words (§3.3.1.1).

    >>> classify_name("Electric Piano 1"), classify_name("Tenor Sax")
    (('piano', False), ('saxophone', True))
    """
    words = re.findall(r"[a-z]+", text.lower())
    kept = " ".join(w for w in words if not has_reject_word([w]))
    return match_class(kept), not has_reject_word(words)


def _normalise_rms(x_S: np.ndarray, rms_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x_S, dtype=np.float64)))) if x_S.size else 0.0
    if not rms > 0:
        return np.zeros(x_S.shape, dtype=np.float64)
    return x_S.astype(np.float64) * (10.0 ** (rms_dbfs / 20.0) / rms)


def parse_slakh_metadata(text: str) -> dict[str, dict[str, object]]:
    """The ``stems`` mapping of a Slakh2100 ``metadata.yaml``.

    A small reader of that file's known layout (``stems:`` then two-space-indented
    stem ids, four-space-indented ``key: value`` scalars); values become bool, int,
    float, None or str. Not a general YAML parser.
    """
    stems: dict[str, dict[str, object]] = {}
    in_stems = False
    current: dict[str, object] | None = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if indent == 0:
            in_stems = key == "stems"
            current = None
            continue
        if not in_stems:
            continue
        if value == "" and current is None or (value == "" and indent <= 2):
            current = stems.setdefault(key.strip().strip("'\""), {})
        elif current is not None and indent > 2:
            current[key.strip()] = _yaml_scalar(value)
    return stems


def _yaml_scalar(value: str) -> object:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    low = value.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("null", "~", ""):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _slakh_stems(folder: Path, max_tracks: int | None, progress: Progress | None) -> list[Stem]:
    if not folder.is_dir():
        raise InputError(folder, None, "Slakh2100 folder not found",
                         "pass the folder holding the Track*/ folders (e.g. slakh2100/train)")
    metas = sorted(folder.glob("Track*/metadata.yaml")) or sorted(folder.glob("*/Track*/metadata.yaml"))
    if not metas:
        raise InputError(folder, None, "holds no Track*/metadata.yaml",
                         "pass a Slakh2100 split folder such as slakh2100/train")
    if max_tracks is not None:
        metas = metas[:max_tracks]
    stems: list[Stem] = []
    for done, meta in enumerate(metas, 1):
        try:
            entries = parse_slakh_metadata(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(meta, None, f"cannot be read ({exc})", "check the Slakh download") from None
        for stem_id, info in sorted(entries.items()):
            if info.get("is_drum") is True or info.get("audio_rendered") is False:
                continue
            audio = next((p for p in (meta.parent / "stems" / f"{stem_id}{ext}" for ext in (".flac", ".wav"))
                          if p.is_file()), None)
            if audio is None:
                continue
            name = str(info.get("midi_program_name") or "")
            inst_class = str(info.get("inst_class") or "")
            family, ok_name = classify_name(name)
            _, ok_class = classify_name(inst_class)
            acceptable = ok_name and ok_class
            if family in TARGET_CLASSES:
                stems.append(Stem(family, family, acceptable, str(audio), path=audio))
            else:
                label = inst_class.lower().strip() or (family or "other")
                stems.append(Stem(label, family or label, False, str(audio), path=audio))
        if progress is not None:
            progress("slakh", done, len(metas))
    return stems


def _recording_entries(sessions: Iterable, recordings: Iterable) -> list[tuple[Path, str]]:
    from studio_sep.session import Session, load_session

    entries: list[tuple[Path, str]] = []
    for item in sessions:
        session = item if isinstance(item, Session) else load_session(item, check_audio=False)
        for i, source in enumerate(session.sources):
            if source.reference is None:
                continue
            family, _ = classify_name(source.prompt)
            if family is None:
                raise InputError(session.path, f"sources[{i}].prompt",
                                 f"prompt {source.prompt!r} names no known instrument class "
                                 f"({', '.join(CLASSES)})", "reword the prompt with a class name")
            entries.append((Path(source.reference), source.prompt))
    for path, label in recordings:
        entries.append((Path(path), str(label)))
    return entries


def build_stem_pool(
    *,
    soundfont: str | os.PathLike | None = None,
    phrases_per_program: int = 8,
    phrase_s: tuple[float, float] = (8.0, 20.0),
    classes: Sequence[str] | None = None,
    sessions: Sequence = (),
    recordings: Sequence[tuple[str | os.PathLike, str]] = (),
    slakh: str | os.PathLike | None = None,
    slakh_max_tracks: int | None = None,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
    cutoff_hz: float = 10.0,
    threshold_db: float = -40.0,
    min_active_s: float = 1.0,
    progress: Progress | None = None,
) -> StemPool:
    """Render, read and index the stems examples are drawn from (§3.3.1).

    Parameters
    ----------
    soundfont : path-like, optional
        GM SoundFont for the renders; default :func:`studio_sep.sim.simulate.find_soundfont`.
    phrases_per_program : int
        Random phrases rendered per GM program (0: no renders).
    phrase_s : (float, float)
        Phrase length in seconds, drawn uniformly in this range.
    classes : sequence of str, optional
        Classes of :data:`studio_sep.data.instruments.CLASSES` to render (default all).
    sessions : sequence of path-like or Session
        Session manifests whose sources' ``reference`` takes join as ``<class>_rec``.
    recordings : sequence of (path, class)
        More solo takes with their class (a prompt-like name).
    slakh : path-like, optional
        A Slakh2100 split folder; ``slakh_max_tracks`` takes its first tracks only.
    seed : int
        Seed of the phrases (phrase ``j`` of program ``p`` uses ``default_rng([seed, p, j])``).
    sample_rate : int
        Rate of every stem, Hz.
    cutoff_hz, threshold_db : float
        Active-audio detection (:func:`active_mask`): envelope low-pass cutoff and
        threshold relative to the stem's envelope peak.
    min_active_s : float
        Stems with less active audio are left out.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Raises
    ------
    InputError
        A missing file or folder, an unknown class, a prompt without a class; a
        pool without any target stem.
    """
    from studio_sep.sim.simulate import find_soundfont, render_midi

    names = list(CLASSES) if classes is None else list(classes)
    unknown = [c for c in names if c not in CLASSES]
    if unknown:
        raise InputError(None, "classes", f"unknown instrument class {unknown[0]!r}",
                         f"use some of {', '.join(CLASSES)}")
    if not (isinstance(phrases_per_program, int) and phrases_per_program >= 0):
        raise InputError(None, "phrases_per_program", f"{phrases_per_program!r} must be an integer >= 0",
                         "pass e.g. 8")
    lo_s, hi_s = (float(v) for v in phrase_s)
    if not 0 < lo_s <= hi_s:
        raise InputError(None, "phrase_s", f"{phrase_s!r} must be (shortest, longest) with 0 < shortest <= longest",
                         "pass e.g. (8, 20)")
    kwargs = dict(cutoff_hz=cutoff_hz, threshold_db=threshold_db)
    min_samples = min_active_s * sample_rate
    stems: list[Stem] = []
    sf_path = None
    if phrases_per_program > 0:
        sf_path = find_soundfont(soundfont)
        jobs = [(c, p) for c in names for p in CLASSES[c].programs]
        for done, (cls, program) in enumerate(jobs, 1):
            spec = CLASSES[cls]
            low, high = PROGRAM_RANGES.get(program, (spec.low_note, spec.high_note))
            midis = []
            for j in range(phrases_per_program):
                rng = np.random.default_rng([seed, program, j])
                midis.append(compose_phrase(rng, program=program, duration_s=float(rng.uniform(lo_s, hi_s)),
                                            low_note=low, high_note=high))
            for j, dry_S in enumerate(_render_phrases(midis, sample_rate=sample_rate, soundfont=sf_path,
                                                      render=render_midi)):
                active = extract_active(dry_S, sample_rate, **kwargs)
                if active.size >= min_samples:
                    source = f"gm:{program:03d} {GM_NAMES.get(program, 'program')} #{j:03d}"
                    stems.append(Stem(cls, cls, cls in TARGET_CLASSES, source, audio=active))
            if progress is not None:
                progress("render", done, len(jobs))

    entries = _recording_entries(sessions, recordings)
    for done, (path, name) in enumerate(entries, 1):
        family, acceptable = classify_name(name)
        canonical = family or re.sub(r"\s+", " ", name.strip().lower())
        x_CS, rate = read_audio(path)
        active = extract_active(_to_mono_rate(x_CS, rate, sample_rate), sample_rate, **kwargs)
        if active.size >= min_samples:
            is_target = acceptable and canonical in TARGET_CLASSES
            stems.append(Stem(canonical + REC_SUFFIX, canonical, is_target, str(Path(path).resolve()),
                              audio=active))
        if progress is not None:
            progress("recordings", done, len(entries))

    if slakh is not None:
        stems.extend(_slakh_stems(Path(slakh), slakh_max_tracks, progress))

    if not any(s.is_target for s in stems):
        raise InputError(None, None, f"the stem pool holds no stem of a target class ({', '.join(TARGET_CLASSES)})",
                         "render GM phrases (--phrases-per-program > 0), or give sessions or a Slakh folder")
    settings = {
        "soundfont": None if sf_path is None else str(sf_path),
        "phrases_per_program": phrases_per_program, "phrase_s": [lo_s, hi_s], "classes": names,
        "sessions": [str(getattr(s, "path", s)) for s in sessions],
        "recordings": [[str(p), str(c)] for p, c in recordings],
        "slakh": None if slakh is None else str(slakh), "slakh_max_tracks": slakh_max_tracks,
        "seed": seed, "sample_rate": sample_rate, "cutoff_hz": cutoff_hz, "threshold_db": threshold_db,
        "min_active_s": min_active_s,
    }
    return StemPool(tuple(stems), sample_rate=sample_rate, cutoff_hz=cutoff_hz, threshold_db=threshold_db,
                    min_active_s=min_active_s, settings=settings)


# --------------------------------------------------------------------------------------
# One example
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentSettings:
    """How examples are made (§3.3.2); every field goes into ``dataset.json``."""

    duration_s: float = 10.0
    n_bins: int = 5
    insert_probability: float = 0.8
    min_segment_s: float = 0.5
    max_segment_s: float = 3.0
    min_interferers: int = 1
    max_interferers: int = 3
    rec_probability: float = 0.5
    stem_rms_dbfs: float = -20.0
    mixture_peak: float = 0.9

    def check(self) -> None:
        """Raise :class:`InputError` on an impossible setting."""
        problems = []
        if not (self.duration_s > 0 and self.n_bins >= 1):
            problems.append(("duration_s/n_bins", "must be > 0 and >= 1"))
        if not 0 <= self.insert_probability <= 1:
            problems.append(("insert_probability", "must be in [0, 1]"))
        if not 0 < self.min_segment_s <= self.max_segment_s:
            problems.append(("min_segment_s/max_segment_s", "need 0 < min <= max"))
        if not 0 <= self.min_interferers <= self.max_interferers:
            problems.append(("min_interferers/max_interferers", "need 0 <= min <= max"))
        if not 0 <= self.rec_probability <= 1:
            problems.append(("rec_probability", "must be in [0, 1]"))
        if not 0 < self.mixture_peak <= 1:
            problems.append(("mixture_peak", "must be in (0, 1]"))
        if problems:
            name, rule = problems[0]
            raise InputError(None, name, f"{name} {rule}", "fix that setting")


@dataclass(frozen=True)
class Example:
    """One triplet (§3.3.2.3): float32 arrays of ``duration_s * sample_rate`` samples."""

    mixture_S: np.ndarray
    target_S: np.ndarray
    reference_S: np.ndarray
    interferers_NS: np.ndarray  #: shape (n_interferers, n_samples), scaled like the mixture
    meta: dict


def scatter(active_S: np.ndarray, rng: np.random.Generator, *, n_samples: int, sample_rate: int,
            n_bins: int = 5, insert_probability: float = 0.8, min_segment_s: float = 0.5,
            max_segment_s: float = 3.0) -> tuple[np.ndarray, list[tuple[int, int]], list[bool]]:
    """Scatter segments of one stem over a timeline (§3.3.2.2).

    Bin ``b`` covers ``[b, b + 1) * n_samples // n_bins``. In each bin, in order, one
    draw with probability ``insert_probability`` asks for a segment; its length is
    uniform in ``[min_segment_s, max_segment_s]`` (at most the stem's length), its
    source offset uniform in the stem, its start uniform in ``[lo, bin end)`` where
    ``lo`` is the bin start or, when the previous segment reaches into the bin, that
    segment's end (no insertion when it reaches past the bin). The last segment is
    cut at ``n_samples``.

    Returns
    -------
    track_S : ndarray, shape (n_samples,), float64
    insertions : list of (start, stop)
        Sample positions of the placed segments, in order (``stop`` after cutting).
    draws : list of bool, one per bin
        Whether the bin's draw asked for a segment.
    """
    track_S = np.zeros(int(n_samples))
    insertions: list[tuple[int, int]] = []
    draws: list[bool] = []
    n_active = int(active_S.size)
    bin_edges = [b * int(n_samples) // n_bins for b in range(n_bins + 1)]
    previous_end = 0
    for b in range(n_bins):
        lo_bin, hi_bin = bin_edges[b], bin_edges[b + 1]
        wanted = bool(rng.random() < insert_probability)
        draws.append(wanted)
        if not wanted or n_active == 0:
            continue
        length = int(round(rng.uniform(min_segment_s, max_segment_s) * sample_rate))
        length = max(1, min(length, n_active))
        offset = int(rng.integers(0, n_active - length + 1))
        lo = max(lo_bin, previous_end)
        if lo >= hi_bin:
            continue
        start = int(rng.integers(lo, hi_bin))
        stop = min(start + length, int(n_samples))
        track_S[start:stop] = active_S[offset: offset + stop - start]
        insertions.append((start, stop))
        previous_end = start + length  # the uncut end: nothing more fits after n_samples anyway
    return track_S, insertions, draws


def _choose(rng: np.random.Generator, pool: StemPool, candidates: Sequence[Stem]) -> Stem | None:
    """A uniform draw among candidates with active audio (a silent or unreadable stem is
    drawn again; the draws depend only on the pool, so results stay deterministic)."""
    remaining = list(candidates)
    while remaining:
        stem = remaining.pop(int(rng.integers(len(remaining))))
        if pool.active_audio(stem).size:
            return stem
    return None


def make_example(pool: StemPool, rng: np.random.Generator, *,
                 settings: AugmentSettings = AugmentSettings()) -> Example:
    """One mixture / target / reference triplet (§3.3.2); see the module docstring.

    Raises
    ------
    InputError
        When the pool holds no usable target stem or no interferer for the drawn class.
    """
    settings.check()
    sr = pool.sample_rate
    n_samples = int(round(settings.duration_s * sr))
    classes = pool.target_classes()
    if not classes:
        raise InputError(None, None, "the stem pool holds no target stem", "build a pool with target classes")
    cls = classes[int(rng.integers(len(classes)))]
    targets = [s for s in pool.stems if s.is_target and s.canonical == cls]
    recorded = [s for s in targets if s.label.endswith(REC_SUFFIX)]
    plain = [s for s in targets if not s.label.endswith(REC_SUFFIX)]
    use_rec = rng.random() < settings.rec_probability
    group = (recorded if use_rec else plain) if recorded and plain else targets
    target = _choose(rng, pool, group) or _choose(rng, pool, targets)
    if target is None:
        raise InputError(None, None, f"no {cls} stem of the pool has any active audio",
                         "check the stems of that class (silent or unreadable files)")

    n_wanted = int(rng.integers(settings.min_interferers, settings.max_interferers + 1))
    others = [s for s in pool.stems if s.family != target.family]
    interferers: list[Stem] = []
    while len(interferers) < n_wanted:
        stem = _choose(rng, pool, [s for s in others if s not in interferers])
        if stem is None:
            break
        interferers.append(stem)
    if len(interferers) < settings.min_interferers:
        raise InputError(None, None, f"the stem pool has no usable interferer for class {cls!r}",
                         "add stems of other instrument classes")

    instruments = [target, *interferers]
    tracks_NS = np.zeros((len(instruments), n_samples))
    insertions: dict[str, list[list[float]]] = {}
    draws: dict[str, list[bool]] = {}
    for n, stem in enumerate(instruments):
        active = _normalise_rms(pool.active_audio(stem), settings.stem_rms_dbfs)
        tracks_NS[n], placed, wanted = scatter(
            active, rng, n_samples=n_samples, sample_rate=sr, n_bins=settings.n_bins,
            insert_probability=settings.insert_probability, min_segment_s=settings.min_segment_s,
            max_segment_s=settings.max_segment_s)
        insertions[str(n)] = [[round(a / sr, 6), round(b / sr, 6)] for a, b in placed]
        draws[str(n)] = wanted

    mixture_S = tracks_NS.sum(axis=0)
    peak = float(np.max(np.abs(mixture_S)))
    gain = settings.mixture_peak / peak if peak > 0 else 1.0
    tracks_NS *= gain
    mixture_S *= gain

    same_class = [s for s in pool.stems if s.is_target and s.canonical == cls]
    reference = _choose(rng, pool, [s for s in same_class if s is not target]) or target
    ref_active = pool.active_audio(reference)
    reference_S = np.zeros(n_samples)
    take = min(n_samples, ref_active.size)
    offset = int(rng.integers(0, ref_active.size - take + 1))
    reference_S[:take] = _normalise_rms(ref_active[offset: offset + take], settings.stem_rms_dbfs)
    ref_peak = float(np.max(np.abs(reference_S)))
    if ref_peak > 0.99:
        reference_S *= 0.99 / ref_peak

    meta = {
        "prompt": cls,
        "class": cls,
        "target_label": target.label,
        "target_source": target.source,
        "reference_source": reference.source,
        "reference_same_stem": reference is target,
        "interferers": [{"class": s.canonical, "label": s.label, "source": s.source} for s in interferers],
        "insertions": insertions,
        "bin_draws": draws,
        "gain": gain,
    }
    return Example(mixture_S.astype(np.float32), tracks_NS[0].astype(np.float32),
                   reference_S.astype(np.float32), tracks_NS[1:].astype(np.float32), meta)


# --------------------------------------------------------------------------------------
# The dataset folder
# --------------------------------------------------------------------------------------

_SETTINGS_FILE = "settings.json"
_INDEX_FILE = "dataset.json"
_KINDS = ("mixture", "target", "reference")


def _example_files(folder: Path, split: str, index: int) -> dict[str, Path]:
    stem = f"{index:06d}"
    files = {kind: folder / split / f"{stem}_{kind}.wav" for kind in _KINDS}
    files["json"] = folder / split / f"{stem}.json"
    return files


def _write_wav(path: Path, x_S: np.ndarray, sample_rate: int) -> None:
    """Mono float32 WAV, atomically, with the same bytes for the same samples.

    Not :func:`studio_sep.io.audio.write_audio`: libsndfile puts a ``PEAK`` chunk
    holding the wall-clock time of writing into float WAVs, so two writes of one
    signal differ; here that timestamp is set to 0 (the chunk is kept, peak values
    and all).
    """
    if not np.all(np.isfinite(x_S)):
        raise ValueError(f"_write_wav: non-finite samples for {path}")
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), np.asarray(x_S, dtype=np.float32), int(sample_rate), subtype="FLOAT",
                        format="WAV")
        data = bytearray(tmp.read_bytes())
        at = 12  # after "RIFF" size "WAVE"
        while at + 8 <= len(data):
            chunk_id, size = bytes(data[at: at + 4]), int.from_bytes(data[at + 4: at + 8], "little")
            if chunk_id == b"PEAK" and size >= 8:
                data[at + 12: at + 16] = b"\0\0\0\0"  # after the version field: the timestamp
                tmp.write_bytes(bytes(data))
                break
            at += 8 + size + (size & 1)


def _dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def generate_dataset(
    out_dir: str | os.PathLike,
    pool: StemPool,
    *,
    n_train: int,
    n_val: int = 0,
    n_test: int = 0,
    seed: int = 0,
    settings: AugmentSettings = AugmentSettings(),
    progress: Progress | None = None,
) -> dict:
    """Write a training set to ``out_dir`` (layout in the module docstring).

    Example ``i`` of split ``k`` comes from ``default_rng([seed, k, i])``. Complete
    examples already there (same seed, settings and pool) are kept, so an interrupted
    run resumes and a larger ``n_train`` adds examples.

    Returns
    -------
    dict
        The contents of ``dataset.json``.

    Raises
    ------
    InputError
        A bad count or setting; ``out_dir`` not empty and not a dataset of the same
        seed, settings and pool.
    """
    settings.check()
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(None, f"n_{name}", f"n_{name}={n!r} must be an integer >= 0", "pass e.g. 100")
    if not pool.target_classes():
        raise InputError(None, None, "the stem pool holds no target stem", "build a pool with target classes")
    folder = Path(out_dir)
    identity = {
        "format": FORMAT,
        "seed": int(seed),
        "sample_rate": pool.sample_rate,
        "settings": asdict(settings),
        "pool": pool.settings,
        "pool_fingerprint": pool.fingerprint(),
    }
    settings_path = folder / _SETTINGS_FILE
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, None, "is a file, not a folder", "pass a folder for the dataset")
    if folder.is_dir() and any(folder.iterdir()):
        if not settings_path.is_file():
            raise InputError(folder, None, "is not empty and holds no augmentation dataset",
                             "pass an empty or new folder")
        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(settings_path, None, f"cannot be read ({exc})",
                             "delete the folder and generate again") from None
        if previous != identity:
            differ = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise InputError(folder, None, f"holds a dataset made with other settings ({', '.join(differ)} differ)",
                             "pass a new or empty folder, or the same seed, settings and stem pool to resume")
    else:
        write_text_atomic(settings_path, _dumps(identity))

    for k, split in enumerate(SPLITS):
        total = int(counts[split])
        for i in range(total):
            files = _example_files(folder, split, i)
            if not all(p.is_file() for p in files.values()):
                example = make_example(pool, np.random.default_rng([int(seed), k, i]), settings=settings)
                for kind, x_S in zip(_KINDS, (example.mixture_S, example.target_S, example.reference_S)):
                    _write_wav(files[kind], x_S, pool.sample_rate)
                doc = {"id": f"{i:06d}", "split": split, "index": i, **example.meta,
                       "files": {kind: files[kind].name for kind in _KINDS}}
                write_text_atomic(files["json"], _dumps(doc))
            if progress is not None:
                progress(split, i + 1, total)

    target_classes = pool.target_classes()
    meta = {
        "format": FORMAT,
        "sample_rate": pool.sample_rate,
        "seed": int(seed),
        "duration_s": float(settings.duration_s),
        "classes": target_classes,
        "interferer_classes": pool.interferer_classes(),
        "labels": sorted({s.label for s in pool.stems}),
        "splits": {split: int(counts[split]) for split in SPLITS},
        "pool": {"counts": pool.counts(), "fingerprint": identity["pool_fingerprint"], **pool.settings},
        "settings": asdict(settings),
    }
    write_text_atomic(folder / _INDEX_FILE, _dumps(meta))
    return meta


def load_dataset_index(folder: str | os.PathLike) -> tuple[dict, dict[str, list[dict]]]:
    """Read a dataset written by :func:`generate_dataset`.

    Returns
    -------
    meta : dict
        ``dataset.json``.
    examples : dict
        ``{split: [example dict, ...]}`` in index order; each example's JSON plus
        ``"mixture"``, ``"target"``, ``"reference"``: absolute paths (str) of its WAVs.

    Raises
    ------
    InputError
        Missing folder, unfinished dataset (no ``dataset.json``), wrong format, or a
        missing example file.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputError(folder, None, "dataset folder not found", "run `studio-sep augment` to make one")
    index = folder / _INDEX_FILE
    if not index.is_file():
        raise InputError(folder, None, f"holds no {_INDEX_FILE}: generation did not finish",
                         "run the same `studio-sep augment` command again to complete it")
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(index, None, f"cannot be read ({exc})", "generate the dataset again") from None
    if meta.get("format") != FORMAT:
        raise InputError(index, "format", f"format {meta.get('format')!r} is not {FORMAT!r}",
                         "generate the dataset again with this version")
    examples: dict[str, list[dict]] = {}
    for split in SPLITS:
        examples[split] = []
        for i in range(int(meta["splits"].get(split, 0))):
            files = _example_files(folder, split, i)
            missing = [p for p in files.values() if not p.is_file()]
            if missing:
                raise InputError(missing[0], None, "example file missing",
                                 "run the same `studio-sep augment` command again to complete the dataset")
            doc = json.loads(files["json"].read_text(encoding="utf-8"))
            doc.update({kind: str(files[kind]) for kind in _KINDS})
            examples[split].append(doc)
    return meta, examples
