"""What the tool composes, renders and trains on: the instrument table, the composer and
CLASS-net's training data.

- :mod:`.instruments`: instrument classes, the trio's parts, the General MIDI tables;
- :mod:`.compose`: seeded MIDI (the trio, random phrases, the nmf prior's note sweep);
- :mod:`.active`: active audio and scattering;
- :mod:`.stems`: the stem pool (:func:`build_stem_pool`);
- :mod:`.soundfonts`: the training SoundFonts and the held-out ones (the unseen-timbre test set);
- :mod:`.dataset`: examples and the data set folder (:func:`generate_dataset`,
  :func:`load_dataset_index`).

The names below load their module on first use: the instrument table is imported by
light code (the query encoder) that needs neither scipy nor FluidSynth.
"""

import importlib

_HOMES = {
    "AugmentSettings": "dataset",
    "Example": "dataset",
    "FORMAT": "dataset",
    "SPLITS": "dataset",
    "generate_dataset": "dataset",
    "load_dataset_index": "dataset",
    "make_example": "dataset",
    "SAMPLE_RATE": "stems",
    "Stem": "stems",
    "StemPool": "stems",
    "build_stem_pool": "stems",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"studio_sep.data.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'studio_sep.data' has no attribute {name!r}")
