"""The fit's parameter files under ``.studio-sep/``: the initial model (``prior.npz``), the fit
(``fit.npz``, or ``fit-block-<b>.npz`` per time block) and the checkpoint of a running fit
(``fit-checkpoint.npz``), each the four parameter arrays and named extras."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import FitError
from studio_sep.util.notices import warn

_PARAMS = ("Q_FMM", "G_NM", "W_NFK", "H_NKT")


class StateFileError(ValueError):
    """A parameter file under ``.studio-sep/`` that cannot be read back (garbled, truncated,
    wrong arrays): treated as absent, its stage redone."""


def block_fit_path(work: Path, b: int) -> Path:
    return work / f"fit-block-{b}.npz"


def load_checkpoint(path: Path, fp: str):
    """The checkpoint saved at ``path`` for fingerprint ``fp``, or None (missing, unreadable or stale)."""
    from studio_sep.separation import fastmnmf2

    if not path.is_file():
        return None
    try:
        params, extra = load_params(path)
        if str(extra.get("fingerprint")) != fp:
            return None
        checkpoint = fastmnmf2.Checkpoint(iteration=int(extra["iteration"]), params=params,
                                          log_likelihood=np.asarray(extra["log_likelihood"], dtype=float),
                                          ll_iterations=np.asarray(extra["ll_iterations"], dtype=int))
        if checkpoint.iteration < 0 or checkpoint.log_likelihood.shape != checkpoint.ll_iterations.shape:
            raise StateFileError(f"{path}: iteration {checkpoint.iteration} or its log-likelihoods are invalid")
    except (StateFileError, KeyError, TypeError, ValueError) as exc:
        warn(f"{path}: unreadable ({' '.join(str(exc).split())}); ignored: that work is redone")
        return None
    return checkpoint


def nonfinite(params) -> list[str]:
    """The names of the parameter arrays (host arrays) that hold NaN or inf."""
    return [name for name in _PARAMS if not np.isfinite(np.asarray(getattr(params, name))).all()]


def check_finite(params, where: str) -> None:
    """Refuse parameters holding NaN or inf (a fit that diverged) before they are saved,
    used or recorded as a finished stage; ``where`` names the fit (e.g. ``block 2/3``).

    Raises
    ------
    FitError
        Naming the arrays that are not finite.
    """
    bad = nonfinite(params)
    if bad:
        raise FitError(f"the separation diverged ({where}): {', '.join(bad)} hold NaN/inf values; nothing was "
                       "saved (fix: check that the mics hold signal (`studio-sep validate` warns about silent "
                       "ones) or try another --init; a float32 fit was already fitted again in float64)")


def save_params(path: Path, params, **extra) -> None:
    """The four parameter arrays and ``extra`` (as ``extra_<name>``) into one .npz, atomically."""
    arrays = {name: getattr(params, name) for name in _PARAMS}
    # made in memory, then written: a full disk fails the write (one OSError), never numpy's
    # zip writer half-way (whose clean-up then prints a traceback of its own)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{f"extra_{k}": np.asarray(v) for k, v in extra.items()})
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())


def load_params(path: Path):
    """The parameters and the extras saved by :func:`save_params`.

    Raises
    ------
    StateFileError
        The file is not such a file: unreadable, truncated, or arrays missing or of
        shapes that do not fit together.
    """
    from studio_sep.separation import fastmnmf2

    try:
        with np.load(path, allow_pickle=False) as data:
            params = fastmnmf2.Params(*(data[name] for name in _PARAMS))
            extra = {k[len("extra_"):]: (data[k].item() if data[k].ndim == 0 else data[k])
                     for k in data.files if k.startswith("extra_")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StateFileError(f"{path}: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
    _check_shapes(path, params)
    return params, extra


def _check_shapes(path: Path, params) -> None:
    """Q (F, M, M), G (N, M), W (N, F, K), H (N, K, T), all numeric."""
    arrays = [getattr(params, name) for name in _PARAMS]
    Q, G, W, H = arrays
    ok = (Q.ndim == 3 and G.ndim == 2 and W.ndim == 3 and H.ndim == 3
          and Q.shape[1] == Q.shape[2] == G.shape[1] and W.shape[0] == G.shape[0] == H.shape[0]
          and W.shape[1] == Q.shape[0] and W.shape[2] == H.shape[1]
          and all(np.issubdtype(a.dtype, np.number) for a in arrays))
    if not ok:
        raise StateFileError(f"{path}: parameter arrays of shapes {[a.shape for a in arrays]} do not fit together")
