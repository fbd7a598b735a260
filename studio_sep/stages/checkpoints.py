"""The fit's parameter files under ``.studio-sep/``: the initial model (``prior.npz``), the fit
(``fit.npz``, or ``fit-block-<b>.npz`` per time block) and the checkpoint of a running fit
(``fit-checkpoint.npz``), each the four parameter arrays and named extras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import FitError

_PARAM_NAMES = ("Q_FMM", "G_NM", "W_NFK", "H_NKT")


def block_fit_path(work: Path, b: int) -> Path:
    return work / f"fit-block-{b}.npz"


def load_checkpoint(path: Path, fp: str):
    """The checkpoint saved at ``path`` for fingerprint ``fp``, or None (missing, unreadable or stale)."""
    from studio_sep.separation import fastmnmf2

    if not path.is_file():
        return None
    try:
        params, extra = load_params(path)
    except (OSError, ValueError, KeyError):
        return None  # unreadable: start over
    if str(extra.get("fingerprint")) != fp:
        return None
    return fastmnmf2.Checkpoint(iteration=int(extra["iteration"]), params=params,
                                log_likelihood=np.asarray(extra["log_likelihood"]),
                                ll_iterations=np.asarray(extra["ll_iterations"]))


def check_finite(params, where: str) -> None:
    """Refuse parameters holding NaN or inf (a fit that diverged) before they are saved,
    used or recorded as a finished stage; ``where`` names the fit (e.g. ``block 2/3``).

    Raises
    ------
    FitError
        Naming the arrays that are not finite.
    """
    bad = [name for name in _PARAM_NAMES if not np.isfinite(np.asarray(getattr(params, name))).all()]
    if bad:
        raise FitError(f"the separation diverged ({where}): {', '.join(bad)} hold NaN/inf values; nothing was "
                       "saved (fix: check that the mics hold signal (`studio-sep validate` warns about silent "
                       "ones) and try --dtype float64 or another --init)")


def save_params(path: Path, params, **extra) -> None:
    """The four parameter arrays and ``extra`` (as ``extra_<name>``) into one .npz, atomically."""
    arrays = {name: getattr(params, name) for name in _PARAM_NAMES}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{f"extra_{k}": np.asarray(v) for k, v in extra.items()})


def load_params(path: Path):
    """The parameters and the extras saved by :func:`save_params`."""
    from studio_sep.separation import fastmnmf2

    with np.load(path, allow_pickle=False) as data:
        params = fastmnmf2.Params(*(data[name] for name in _PARAM_NAMES))
        extra = {k[len("extra_"):]: (data[k].item() if data[k].ndim == 0 else data[k])
                 for k in data.files if k.startswith("extra_")}
    return params, extra
