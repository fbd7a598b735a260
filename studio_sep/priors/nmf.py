"""The ``nmf`` spectral prior: supervised KL-NMF of each source's stem mic on class dictionaries.

Each source's dictionary is learned (KL-NMF) from its solo reference take when it has
one, else from :func:`class_notes`: General-MIDI renders of every
:data:`NOTE_STEP`-th note of its instrument class's range
(:func:`studio_sep.data.compose.note_sweep`). The activations of all the sources'
dictionaries together are fitted on each source's stem mic; ``V_n`` is source n's share
of that mic (Wiener mask).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from studio_sep.data.compose import note_sweep
from studio_sep.data.instruments import CLASSES
from studio_sep.dsp import stft
from studio_sep.dsp.resample import resample
from studio_sep.io.synth import find_soundfont, render_midi
from studio_sep.separation import nmf as nmf_tools

__all__ = ["NMF_PRIOR_BASES", "NMF_PRIOR_ITERATIONS", "NOTE_S", "NOTE_STEP", "NOTE_VELOCITIES", "class_notes",
           "nmf_prior"]

#: Bases of each class dictionary of the ``nmf`` prior, and its KL-NMF iterations.
NMF_PRIOR_BASES = 24
NMF_PRIOR_ITERATIONS = 100
#: Rendered notes of the ``nmf`` prior's class dictionaries: every third semitone of the
#: class's range, this long, at two velocities, for every GM program of the class.
NOTE_S, NOTE_STEP, NOTE_VELOCITIES = 0.5, 3, (60, 100)


def nmf_prior(session, settings, X_FTM, mics: Sequence[int], spec, *, callback=None) -> list[np.ndarray | None]:
    """The ``nmf`` prior: supervised KL-NMF of each source's stem mic on the class dictionaries
    (``spec``: the :class:`~studio_sep.priors.spec.PriorSpec`, whose ``queries`` name each source's class).

    A source with neither a class nor a solo take gets None (its stem mic's power stands in,
    :func:`~studio_sep.priors.spec.compute_prior`); the others share their mics among themselves.
    """
    from studio_sep.io import audio as audio_io

    rng = np.random.default_rng([settings.seed, 3])
    dictionaries = []
    steps = len(session.sources) * 2
    for n, source in enumerate(session.sources):
        if source.reference is None and spec.queries.get(source.name) is None:
            dictionaries.append(None)  # nothing to learn from: compute_prior uses its stem mic's power
            if callback:
                callback(n + 1, steps)
            continue
        if source.reference is not None:
            ref, sr = audio_io.read_audio(source.reference)
            mag = np.abs(stft.stft(resample(ref, sr, settings.processing_sample_rate),
                                   n_fft=settings.n_fft, hop=settings.hop)[:, :, 0])
        else:
            notes = class_notes(spec.queries[source.name], settings.processing_sample_rate)
            mag = np.abs(stft.stft(notes[None], n_fft=settings.n_fft, hop=settings.hop)[:, :, 0])
        dictionaries.append(nmf_tools.nmf(mag, n_basis=NMF_PRIOR_BASES, n_iter=NMF_PRIOR_ITERATIONS, rng=rng)[0])
        if callback:
            callback(n + 1, steps)
    known = [n for n, d in enumerate(dictionaries) if d is not None]
    out: list[np.ndarray | None] = []
    for n, m in enumerate(mics):
        if dictionaries[n] is None:
            out.append(None)
        else:
            mag = np.abs(X_FTM[:, :, m])
            shares = nmf_tools.supervised_nmf(mag, [dictionaries[k] for k in known], n_iter=NMF_PRIOR_ITERATIONS)
            out.append((shares[known.index(n)] * mag) ** 2)
        if callback:
            callback(len(session.sources) + n + 1, steps)
    return out


@functools.lru_cache(maxsize=16)
def class_notes(name: str, sample_rate: int, soundfont: str | None = None) -> np.ndarray:
    """Every :data:`NOTE_STEP`-th note of a class's range, on each of its GM programs, at
    :data:`NOTE_VELOCITIES`, rendered dry and in sequence (mono, float64)."""
    midi = note_sweep(CLASSES[name], note_s=NOTE_S, step=NOTE_STEP, velocities=NOTE_VELOCITIES)
    return render_midi(midi, sample_rate=sample_rate, soundfont=find_soundfont(soundfont), tail_s=0.5)
