"""The ``classnet`` spectral prior: CLASS-net's estimate of each source from its stem mic.

A checkpoint bundling its own query encoder (``QueriedClassNet``) needs nothing else; a
plain ``ClassNet`` checkpoint is conditioned by LAION-CLAP
(:mod:`studio_sep.classnet.clap`). torch is imported only when the prior runs or a
checkpoint is loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from studio_sep.dsp import stft
from studio_sep.dsp.resample import resample
from studio_sep.util.atomic import file_sha256

__all__ = ["classnet_prior", "load_classnet"]

@dataclass(frozen=True)
class _LoadedClassNet:
    net: object
    query: object | None  #: the bundled query encoder, or None (CLAP)
    sha256: str
    known_classes: tuple[str, ...] | None
    needs_clap: bool


@functools.lru_cache(maxsize=2)
def load_classnet(path: str, file_sha: str) -> _LoadedClassNet:
    """The network and its query encoder from a checkpoint (cached per file content)."""
    from studio_sep.classnet import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.model
    query = getattr(model, "query", None)
    net = getattr(model, "net", model)
    classes = tuple(getattr(query, "classes", ())) or None
    return _LoadedClassNet(net=net, query=query, sha256=ckpt.sha256, known_classes=classes,
                           needs_clap=query is None)


def classnet_prior(session, settings, x_proc_MS, mics: Sequence[int], spec, *,
                   callback=None) -> np.ndarray:
    """The ``classnet`` prior: the network's estimate of each source from its stem mic,
    at the network's rate, back at the processing rate, as a power spectrogram."""
    import torch

    from studio_sep.classnet import separate_long
    from studio_sep.io import audio as audio_io

    loaded = load_classnet(str(spec.model), file_sha256(spec.model))
    net = loaded.net
    query = loaded.query
    if query is None:
        from studio_sep.classnet.clap import ClapQuery

        query = ClapQuery(checkpoint=spec.clap["checkpoint"], roberta=spec.clap["roberta"])
    net_sr = net.sample_rate
    proc_sr = settings.processing_sample_rate
    prompts, references = [], []
    for source in session.sources:
        prompts.append(source.prompt)
        if source.reference is not None:
            ref, sr = audio_io.read_audio(source.reference)
            references.append(torch.from_numpy(resample(ref, sr, net_sr)[0]).float())
        else:
            references.append(None)
    out = []
    with torch.no_grad():
        cond = query.condition(prompts, references)
        for n, m in enumerate(mics):
            wave = resample(x_proc_MS[m:m + 1], proc_sr, net_sr)
            peak = max(float(np.max(np.abs(wave))), 1e-9)  # the network was trained on normalised mixtures
            est = separate_long(net, torch.from_numpy(wave / peak).float(), cond[n:n + 1].float())
            est_proc = resample(est.double().numpy() * peak, net_sr, proc_sr,
                                         n_samples=x_proc_MS.shape[1])
            out.append(np.abs(stft.stft(est_proc, n_fft=settings.n_fft, hop=settings.hop)[:, :, 0]) ** 2)
            if callback:
                callback(n + 1, len(mics))
    return np.stack(out)
