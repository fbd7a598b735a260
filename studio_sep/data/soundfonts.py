"""Which SoundFonts render CLASS-net's training data and which are held out for its test.

The training data is rendered with :data:`TRAIN_SOUNDFONTS` (two timbres per GM
program); the unseen-timbre test set with :data:`HELDOUT_SOUNDFONTS`, which never
render training data: :func:`soundfont_role` decides by file name (so the split does not
depend on where a SoundFont is installed), ``studio-sep augment --heldout`` writes test
examples only, and ``studio-sep train`` refuses a data set whose pool used a held-out
SoundFont (:func:`heldout_in_pool`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from studio_sep.io.synth import find_soundfont
from studio_sep.util.errors import InputError

__all__ = ["HELDOUT_SOUNDFONTS", "TRAIN_SOUNDFONTS", "augment_soundfonts", "heldout_in_pool", "soundfont_role",
           "training_soundfonts"]

#: The SoundFonts CLASS-net's training data is rendered with (Debian fluid-soundfont-gm,
#: timgm6mb-soundfont): two timbres per program, so the network does not learn one SoundFont.
TRAIN_SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2"))
#: The unseen-timbre test set's SoundFonts (Debian musescore-general-soundfont): never rendered
#: into training data (:func:`soundfont_role`; ``studio-sep train`` refuses such a data set).
HELDOUT_SOUNDFONTS = (Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),)
#: File-name stems (lower case, prefix) that mark a held-out SoundFont wherever it is installed.
_HELDOUT_PREFIXES = ("musescore_general",)


def soundfont_role(soundfont: str | os.PathLike) -> str:
    """``"heldout"`` for a held-out SoundFont (MuseScore General, any edition or folder:
    decided by its file name, so the split never depends on where it is installed),
    ``"train"`` for any other."""
    name = Path(soundfont).name.lower()
    return "heldout" if name.startswith(_HELDOUT_PREFIXES) else "train"


def augment_soundfonts(soundfonts: Sequence | None, *, heldout: bool, n_train: int | None,
                       n_val: int | None) -> tuple[tuple[Path, ...], int, int]:
    """What ``studio-sep augment`` renders with, and its train and val counts.

    The training data (default): the given SoundFonts, else :func:`training_soundfonts`;
    ``n_train`` 1000 and ``n_val`` 300 when not given. The held-out set (``heldout``): the
    installed :data:`HELDOUT_SOUNDFONTS` (or the given ones, each of which must be held
    out), test examples only. Raises :class:`InputError` naming the fix.
    """
    given = tuple(Path(s) for s in soundfonts or ())
    if not heldout:
        return given or training_soundfonts(), 1000 if n_train is None else n_train, 300 if n_val is None else n_val
    if n_train or n_val:
        raise InputError(None, "heldout", f"the held-out set writes test examples only, not {n_train or 0} train "
                         f"and {n_val or 0} val", "drop --examples/--val, or drop --heldout")
    trained = [s for s in given if soundfont_role(s) != "heldout"]
    if trained:
        raise InputError(trained[0], "soundfont", "is a training SoundFont, not a held-out one (MuseScore General)",
                         "drop --soundfont, or pass a MuseScore_General .sf2/.sf3")
    found = given or tuple(p for p in HELDOUT_SOUNDFONTS if p.is_file())
    if not found:
        raise InputError(HELDOUT_SOUNDFONTS[0], "soundfont", "the held-out SoundFont is not installed",
                         "apt-get install musescore-general-soundfont, or pass --soundfont PATH")
    return found, 0, 0


def training_soundfonts() -> tuple[Path, ...]:
    """The installed :data:`TRAIN_SOUNDFONTS` (``$STUDIO_SEP_SOUNDFONT``'s file, or FluidR3,
    when none is): the default of ``studio-sep augment``."""
    found = tuple(p for p in TRAIN_SOUNDFONTS if p.is_file())
    return found or (find_soundfont(None),)


def heldout_in_pool(pool_settings: dict) -> list[str]:
    """The held-out SoundFonts (file names) a stem pool's settings (``dataset.json`` →
    ``pool``) say it rendered with; empty for a pool fit for training."""
    fonts = pool_settings.get("soundfont")
    fonts = [] if fonts is None else [fonts] if isinstance(fonts, str) else list(fonts)
    return sorted(Path(f).name for f in fonts if soundfont_role(f) == "heldout")
