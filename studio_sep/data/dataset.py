"""CLASS-net's training examples (paper §3.3.2) and the data set folder they are written to.

Stages 2 and 3 of the augmentation (stage 1, the stem pool, is :mod:`studio_sep.data.stems`):

2. **Examples** (:func:`make_example`, pure; one ``numpy.random.Generator`` in). A
   target class uniform among the target classes the pool holds; its recorded
   variant with probability ``rec_probability`` when it has one (and non-recorded
   stems too); a target stem uniform in that label; 1–3 interferer stems uniform
   over all stems of another family (distinct stems). Each stem's active audio is
   RMS-normalised to ``stem_rms_dbfs`` and scattered (:func:`studio_sep.data.active.scatter`): the
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

Progress: ``progress(stage, done, total)`` with stages ``"train"``, ``"val"``, ``"test"``.

Axis letters: ``S`` samples, ``N`` instruments of one example.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile

from studio_sep.data.active import normalise_rms, scatter
from studio_sep.data.stems import REC_SUFFIX, Stem, StemPool
from studio_sep.util.atomic import atomic_path, write_text_atomic
from studio_sep.util.errors import InputError
from studio_sep.util.jsonfile import dumps_json

__all__ = [
    "FORMAT",
    "SPLITS",
    "AugmentSettings",
    "Example",
    "generate_dataset",
    "load_dataset_index",
    "make_example",
]

FORMAT = "studio-sep.augment/1"
SPLITS = ("train", "val", "test")

Progress = Callable[[str, int, int], None]

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
        active = normalise_rms(pool.active_audio(stem), settings.stem_rms_dbfs)
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

    reference, reference_S = _reference(pool, rng, cls, target, n_samples, settings)

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


def _reference(pool: StemPool, rng: np.random.Generator, cls: str, target: Stem, n_samples: int,
               settings: AugmentSettings) -> tuple[Stem, np.ndarray]:
    """The reference of an example: its stem (another of the class when there is one) and
    a window of its active audio, RMS-normalised, peak kept below 1, zero-padded."""
    same_class = [s for s in pool.stems if s.is_target and s.canonical == cls]
    reference = _choose(rng, pool, [s for s in same_class if s is not target]) or target
    ref_active = pool.active_audio(reference)
    reference_S = np.zeros(n_samples)
    take = min(n_samples, ref_active.size)
    offset = int(rng.integers(0, ref_active.size - take + 1))
    reference_S[:take] = normalise_rms(ref_active[offset: offset + take], settings.stem_rms_dbfs)
    ref_peak = float(np.max(np.abs(reference_S)))
    if ref_peak > 0.99:
        reference_S *= 0.99 / ref_peak
    return reference, reference_S


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
    return dumps_json(doc, indent=1, sort_keys=False) + "\n"


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
    _claim_folder(folder, identity)

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


def _claim_folder(folder: Path, identity: dict) -> None:
    """Write ``settings.json`` into a new or empty ``folder``; accept a folder holding a
    data set of the same ``identity`` (resume); refuse anything else."""
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
