"""The FastMNMF2 model's parameters, a fit's result and a resumable checkpoint (axis names as in
:mod:`studio_sep.separation.fastmnmf2`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from studio_sep.dsp.backend import to_device, to_host


@dataclass(frozen=True)
class Params:
    """FastMNMF2 parameters (arrays of one backend). ``None`` fields, in an initial
    value, are filled by :func:`fit`'s default (circular) initialisation."""

    Q_FMM: Any = None
    G_NM: Any = None
    W_NFK: Any = None
    H_NKT: Any = None


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    params : Params
        The fitted parameters, for the data as given (not the normalised copy).
    log_likelihood : ndarray
        Log-likelihood (up to an additive constant, per time-frequency bin) before the
        first iteration and after the iterations in ``ll_iterations``, on the host.
    ll_iterations : ndarray of int
        The iteration after which each value was computed (0: the start).
    """

    params: Params
    log_likelihood: np.ndarray
    ll_iterations: np.ndarray

    @property
    def iterations(self) -> int:
        """Iterations the fit ran (fewer than asked when the stopping rule ended it)."""
        return int(self.ll_iterations[-1])


@dataclass(frozen=True)
class Checkpoint:
    """The fit after ``iteration`` iterations: enough to continue it exactly.

    ``params`` are host arrays for the data scaled to unit mean power (the fit's
    internal scale; :func:`fit` recomputes that scale from the same data on resume).
    Continuing from a checkpoint gives the same numbers as never stopping.
    """

    iteration: int
    params: Params
    log_likelihood: np.ndarray
    ll_iterations: np.ndarray


def params_to(params: Params, xp, dtype) -> Params:
    """Move host parameters to the backend ``xp`` with the given real dtype."""
    complex_dtype = np.result_type(dtype, np.complex64)

    def move(a, kind):
        if a is None:
            return None
        return to_device(np.asarray(to_host(a), dtype=complex_dtype if kind == "c" else dtype), xp)

    return Params(move(params.Q_FMM, "c"), move(params.G_NM, "r"), move(params.W_NFK, "r"), move(params.H_NKT, "r"))
