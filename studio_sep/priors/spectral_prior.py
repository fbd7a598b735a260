"""The names this module path has always offered, looked up where they live now: the
package :mod:`studio_sep.priors` (``PriorSpec``, ``compute_prior``, ``resolve_prior``, read
from the package at each access, so a replacement set there is seen here too), then
:mod:`studio_sep.priors.spec`, :mod:`studio_sep.priors.nmf` and
:mod:`studio_sep.priors.classnet`. Import from those instead."""

import importlib

_MODULES = ("studio_sep.priors", "studio_sep.priors.spec", "studio_sep.priors.nmf", "studio_sep.priors.classnet")


def __getattr__(name: str):
    for module in _MODULES:
        value = getattr(importlib.import_module(module), name, _MODULES)
        if value is not _MODULES:
            return value
    raise AttributeError(f"module 'studio_sep.priors.spectral_prior' has no attribute {name!r}")
