"""CLASS-net's training data as the trainer reads it: the augmentation data set's index and its
16 kHz mono WAV files (written by :mod:`studio_sep.data.dataset`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from studio_sep.util.atomic import file_sha256
from studio_sep.util.errors import InputError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One example of the data set: its id, query and the three WAV files."""

    id: str
    prompt: str | None
    cls: str | None
    mixture: Path
    target: Path
    reference: Path


@dataclass(frozen=True)
class DatasetIndex:
    """What :func:`read_dataset_index` found: ``dataset.json`` and the examples per split."""

    folder: Path
    meta: dict
    sha256: str
    splits: dict[str, tuple[Example, ...]] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """``dataset.json``'s classes, else the classes of the examples in order of appearance."""
        classes = self.meta.get("classes")
        if isinstance(classes, list) and classes:
            return [str(c) for c in classes]
        seen = [e.cls for split in self.splits.values() for e in split if e.cls]
        return list(dict.fromkeys(seen))


def read_dataset_index(folder: str | os.PathLike) -> DatasetIndex:
    """Read the augmentation data set in ``folder`` (:func:`studio_sep.data.dataset.load_dataset_index`).

    Adds the check that it is 16 kHz and the SHA-256 of its ``dataset.json`` (which
    identifies the data in the training settings). Raises
    :class:`~studio_sep.util.errors.InputError` naming the file for a missing, unfinished
    or foreign data set.
    """
    from studio_sep.data.dataset import load_dataset_index  # scipy and mido: loaded only to train

    meta, examples = load_dataset_index(folder)
    meta_path = Path(folder).resolve() / "dataset.json"
    if meta.get("sample_rate") != 16000:
        raise InputError(meta_path, "sample_rate", f"is {meta.get('sample_rate')!r}; CLASS-net runs at 16000 Hz",
                         "write the data set at 16 kHz")
    splits = {split: tuple(Example(str(doc.get("id")), doc.get("prompt"), doc.get("class"), Path(doc["mixture"]),
                                   Path(doc["target"]), Path(doc["reference"])) for doc in examples.get(split, ()))
              for split in SPLITS}
    return DatasetIndex(meta_path.parent, meta, file_sha256(meta_path), splits)


def training_index(data_dir: str | os.PathLike) -> DatasetIndex:
    """The data set to train on: :func:`read_dataset_index`, refused when it holds
    renders of a held-out SoundFont or lacks train or val examples."""
    from studio_sep.data.soundfonts import heldout_in_pool

    index = read_dataset_index(data_dir)
    heldout = heldout_in_pool(index.meta.get("pool") or {})
    if heldout:
        raise InputError(index.folder / "dataset.json", "pool.soundfont", f"was rendered with {', '.join(heldout)}, "
                         "held out as the unseen-timbre test set", "train on data rendered with the training "
                         "SoundFonts (`studio-sep augment` without --heldout)")
    train_set, val_set = index.splits["train"], index.splits["val"]
    if not train_set or not val_set:
        raise InputError(index.folder / "dataset.json", "splits", f"{len(train_set)} train and {len(val_set)} val "
                         "examples; training needs both", "write a data set with train and val examples")
    return index


def read_wave(path: Path, start: int = 0, frames: int = -1) -> np.ndarray:
    """Samples ``[start, start + frames)`` of a mono 16 kHz WAV as float32 (S,)."""
    try:
        data, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise InputError(path, None, f"unreadable audio: {exc}", "write the data set again") from None
    if rate != 16000 or data.shape[1] != 1:
        raise InputError(path, None, f"is {data.shape[1]} channel(s) at {rate} Hz, expected mono 16 kHz",
                         "write the data set again")
    return data[:, 0]


def n_frames(path: Path, cache: dict) -> int:
    if path not in cache:
        try:
            cache[path] = sf.info(str(path)).frames
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise InputError(path, None, f"unreadable audio: {exc}", "write the data set again") from None
    return cache[path]


def batch_indices(step: int, batch_size: int, classes: Sequence[str | None], generator: Callable[..., torch.Generator],
                  *, balance: str = "class") -> list[int]:
    """The examples (indices into ``classes``, one class per example) of a training step.

    ``balance="none"``: positions ``step·B … step·B + B − 1`` of the stream of epoch
    permutations of all examples (an epoch is one pass; a class is drawn as often as
    the data holds it). ``balance="class"``: position ``k`` of the step's stream goes
    to class ``k mod C`` (classes sorted), and takes the next example of that class's
    own stream of permutations: every class is drawn equally often whatever its share
    of the data. ``generator(*key)`` gives the seeded generator of a permutation, so the
    draws depend on (seed, step) only and a resumed run draws what an uninterrupted one does.
    """
    start = step * batch_size
    if balance == "none":
        n = len(classes)
        return [int(torch.randperm(n, generator=generator(1, epoch))[pos])
                for epoch, pos in (divmod(k, n) for k in range(start, start + batch_size))]
    names = sorted({str(c) for c in classes})
    members = {c: [i for i, x in enumerate(classes) if str(x) == c] for c in names}
    out = []
    for k in range(start, start + batch_size):
        c = k % len(names)
        own = members[names[c]]
        epoch, pos = divmod(k // len(names), len(own))
        out.append(own[int(torch.randperm(len(own), generator=generator(4, c, epoch))[pos])])
    return out


#: Where :func:`timbre_eq`'s bell may sit, Hz.
EQ_BAND_HZ = (200.0, 6000.0)


def timbre_eq(mixture: np.ndarray, target: np.ndarray, max_db: float, generator: torch.Generator,
              sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """The target given another timbre and the mixture made again with it: a random smooth EQ, a
    tilt of up to ±``max_db`` dB at 3 octaves from 1 kHz plus one bell of up to ±``max_db`` dB
    (centre in :data:`EQ_BAND_HZ`, 0.5–2 octaves wide), applied to the target's spectrum; the
    mixture's other sources (``mixture − target``) are untouched. For unseen SoundFonts: the
    same instrument with another spectral envelope."""
    u = torch.rand(4, generator=generator, dtype=torch.float64).numpy()
    n = target.shape[-1]
    octaves = np.log2(np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), 20.0) / 1000.0)
    low, high = np.log2(np.asarray(EQ_BAND_HZ) / 1000.0)
    centre, width = low + u[1] * (high - low), 0.5 + 1.5 * u[2]
    gain_db = (2 * u[0] - 1) * max_db * octaves / 3 + (2 * u[3] - 1) * max_db * np.exp(
        -0.5 * ((octaves - centre) / (width / 2)) ** 2)
    equalised = np.fft.irfft(np.fft.rfft(target) * 10 ** (gain_db / 20), n).astype(target.dtype)
    return (mixture - target + equalised).astype(mixture.dtype), equalised
