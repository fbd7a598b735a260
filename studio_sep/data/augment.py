"""The names this module path has always offered, re-exported from where they live now:
:mod:`studio_sep.data.stems`, :mod:`studio_sep.data.dataset`, :mod:`studio_sep.data.active`,
:mod:`studio_sep.data.compose`, :mod:`studio_sep.data.instruments`. Import from those (or
from :mod:`studio_sep.data`) instead."""

from studio_sep.data.active import active_mask, extract_active, scatter
from studio_sep.data.compose import compose_phrase
from studio_sep.data.dataset import (
    FORMAT,
    SPLITS,
    AugmentSettings,
    Example,
    generate_dataset,
    load_dataset_index,
    make_example,
)
from studio_sep.data.instruments import CHORD_PROGRAMS, GM_NAMES, PROGRAM_RANGES
from studio_sep.data.stems import (
    REC_SUFFIX,
    SAMPLE_RATE,
    Stem,
    StemPool,
    build_stem_pool,
    classify_name,
    parse_slakh_metadata,
)

__all__ = [
    "CHORD_PROGRAMS",
    "FORMAT",
    "GM_NAMES",
    "PROGRAM_RANGES",
    "REC_SUFFIX",
    "SAMPLE_RATE",
    "SPLITS",
    "AugmentSettings",
    "Example",
    "Stem",
    "StemPool",
    "active_mask",
    "build_stem_pool",
    "classify_name",
    "compose_phrase",
    "extract_active",
    "generate_dataset",
    "load_dataset_index",
    "make_example",
    "parse_slakh_metadata",
    "scatter",
]
