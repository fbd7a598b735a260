"""Spectral priors (paper §3.4): each source's power spectrogram estimate from its stem mic.

- :mod:`.spec`: :class:`PriorSpec` (what ``--prior`` resolved to), :func:`resolve_prior`,
  :func:`compute_prior` and the floor below which a prior is not used;
- :mod:`.nmf`: the ``nmf`` prior (class dictionaries from rendered notes or solo takes);
- :mod:`.classnet`: the ``classnet`` prior (CLASS-net; torch imported when it runs).
"""

from studio_sep.priors.spec import PriorSpec, compute_prior, resolve_prior

__all__ = ["PriorSpec", "compute_prior", "resolve_prior"]
