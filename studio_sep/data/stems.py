"""The stem pool CLASS-net's training examples are drawn from (paper §3.3.1).

:func:`build_stem_pool` → :class:`StemPool`: mono stems at 16 kHz (the training rate,
§3.3.3), each reduced to its *active audio* (:func:`studio_sep.data.active.extract_active`),
from up to three places:

   - General-MIDI renders: ``phrases_per_program`` random phrases
     (:func:`studio_sep.data.compose.compose_phrase`: a monophonic line for winds and strings, chords and a
     melody for piano, guitar and organ, random key, tempo, note lengths, velocities
     and rests) for every GM program of every class of
     :data:`studio_sep.data.instruments.CLASSES`, rendered dry by
     :func:`studio_sep.io.synth.render_midi` with each of the given SoundFonts (other
     phrases for each; the stem's ``source`` ends in ``@<SoundFont file stem>``).
     :data:`~studio_sep.data.soundfonts.TRAIN_SOUNDFONTS` are the training timbres; :data:`~studio_sep.data.soundfonts.HELDOUT_SOUNDFONTS`
     (MuseScore General) are kept for the unseen-timbre test set
     (:mod:`studio_sep.data.soundfonts`);
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

Progress: ``progress(stage, done, total)`` with stages ``"render <SoundFont stem>"`` (GM programs; all
phrases of a program are rendered in one FluidSynth run, one SoundFont load),
``"recordings"`` and ``"slakh"`` (tracks scanned).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio_sep.data.active import extract_active, to_mono_rate
from studio_sep.data.compose import compose_phrase
from studio_sep.data.instruments import (
    CLASSES,
    GM_NAMES,
    PROGRAM_RANGES,
    TARGET_CLASSES,
    has_reject_word,
    match_class,
)
from studio_sep.data.soundfonts import soundfont_role
from studio_sep.io.audio import read_audio
from studio_sep.io.synth import find_soundfont, render_in_sequence
from studio_sep.util.errors import AudioError, InputError

__all__ = [
    "REC_SUFFIX",
    "SAMPLE_RATE",
    "Stem",
    "StemPool",
    "build_stem_pool",
    "classify_name",
    "parse_slakh_metadata",
]

SAMPLE_RATE = 16000  #: the training rate (§3.3.3)
REC_SUFFIX = "_rec"


Progress = Callable[[str, int, int], None]

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
            active = extract_active(to_mono_rate(x_CS, rate, self.sample_rate), self.sample_rate,
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


# Long by its docstring (every source of stems) and the checks of every input before any render.
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
    soundfont : path-like or sequence of path-like, optional
        GM SoundFont(s) for the renders; default :func:`studio_sep.io.synth.find_soundfont`.
        With several, every program is rendered with each (``phrases_per_program`` phrases
        per SoundFont; SoundFont ``k`` > 0 draws its phrases from ``default_rng([seed, p, j, k])``).
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
    sf_paths: list[Path] = []
    if phrases_per_program > 0:
        wanted = [soundfont] if soundfont is None or isinstance(soundfont, (str, os.PathLike)) else list(soundfont)
        sf_paths = list(dict.fromkeys(find_soundfont(s) for s in wanted))
        for k, sf_path in enumerate(sf_paths):
            stems.extend(_rendered_stems(names, sf_path, phrases_per_program=phrases_per_program,
                                         phrase_s=(lo_s, hi_s), seed=seed, sample_rate=sample_rate,
                                         min_samples=min_samples, progress=progress, sf_index=k, **kwargs))

    stems.extend(_recorded_stems(_recording_entries(sessions, recordings), sample_rate=sample_rate,
                                 min_samples=min_samples, progress=progress, **kwargs))

    if slakh is not None:
        stems.extend(_slakh_stems(Path(slakh), slakh_max_tracks, progress))

    if not any(s.is_target for s in stems):
        raise InputError(None, None, f"the stem pool holds no stem of a target class ({', '.join(TARGET_CLASSES)})",
                         "render GM phrases (--phrases-per-program > 0), or give sessions or a Slakh folder")
    settings = {
        "soundfont": None if not sf_paths else str(sf_paths[0]) if len(sf_paths) == 1 else [str(p) for p in sf_paths],
        "soundfont_roles": {p.name: soundfont_role(p) for p in sf_paths},
        "phrases_per_program": phrases_per_program, "phrase_s": [lo_s, hi_s], "classes": names,
        "sessions": [str(getattr(s, "path", s)) for s in sessions],
        "recordings": [[str(p), str(c)] for p, c in recordings],
        "slakh": None if slakh is None else str(slakh), "slakh_max_tracks": slakh_max_tracks,
        "seed": seed, "sample_rate": sample_rate, "cutoff_hz": cutoff_hz, "threshold_db": threshold_db,
        "min_active_s": min_active_s,
    }
    return StemPool(tuple(stems), sample_rate=sample_rate, cutoff_hz=cutoff_hz, threshold_db=threshold_db,
                    min_active_s=min_active_s, settings=settings)


def _rendered_stems(names: Sequence[str], sf_path: Path, *, phrases_per_program: int,
                    phrase_s: tuple[float, float], seed: int, sample_rate: int, min_samples: float, progress: Progress | None,
                    sf_index: int = 0, **kwargs) -> list[Stem]:
    """The GM-rendered stems of :func:`build_stem_pool`: ``phrases_per_program`` random
    phrases for every program of every class in ``names``, one FluidSynth run per program,
    with the SoundFont ``sf_path`` (number ``sf_index`` of the pool's: its phrases' seeds)."""
    lo_s, hi_s = phrase_s
    stems: list[Stem] = []
    jobs = [(c, p) for c in names for p in CLASSES[c].programs]
    for done, (cls, program) in enumerate(jobs, 1):
        spec = CLASSES[cls]
        low, high = PROGRAM_RANGES.get(program, (spec.low_note, spec.high_note))
        midis = []
        for j in range(phrases_per_program):
            rng = np.random.default_rng([seed, program, j] + ([sf_index] if sf_index else []))
            midis.append(compose_phrase(rng, program=program, duration_s=float(rng.uniform(lo_s, hi_s)),
                                        low_note=low, high_note=high))
        for j, dry_S in enumerate(render_in_sequence(midis, sample_rate=sample_rate, soundfont=sf_path)):
            active = extract_active(dry_S, sample_rate, **kwargs)
            if active.size >= min_samples:
                source = f"gm:{program:03d} {GM_NAMES.get(program, 'program')} #{j:03d} @{sf_path.stem}"
                stems.append(Stem(cls, cls, cls in TARGET_CLASSES, source, audio=active))
        if progress is not None:
            progress(f"render {sf_path.stem}", done, len(jobs))
    return stems


def _recorded_stems(entries: Sequence[tuple[Path, str]], *, sample_rate: int, min_samples: float,
                    progress: Progress | None, **kwargs) -> list[Stem]:
    """The recorded stems of :func:`build_stem_pool` (``"<class>_rec"``), from ``(path, name)`` entries."""
    stems: list[Stem] = []
    for done, (path, name) in enumerate(entries, 1):
        family, acceptable = classify_name(name)
        canonical = family or re.sub(r"\s+", " ", name.strip().lower())
        x_CS, rate = read_audio(path)
        active = extract_active(to_mono_rate(x_CS, rate, sample_rate), sample_rate, **kwargs)
        if active.size >= min_samples:
            is_target = acceptable and canonical in TARGET_CLASSES
            stems.append(Stem(canonical + REC_SUFFIX, canonical, is_target, str(Path(path).resolve()),
                              audio=active))
        if progress is not None:
            progress("recordings", done, len(entries))
    return stems
