"""CLASS-net's training data as the trainer reads it: the augmentation data set's index and its
16 kHz mono WAV files (written by :mod:`studio_sep.data.dataset`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

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
