"""The ``classnet`` spectral prior: CLASS-net's estimate of each source from its stem mic.

A checkpoint bundling its own query encoder (``QueriedClassNet``) needs nothing else; a
plain ``ClassNet`` checkpoint is conditioned by LAION-CLAP
(:mod:`studio_sep.classnet.clap`). torch is imported only when the prior runs or a
checkpoint is loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio_sep.dsp import stft
from studio_sep.dsp.resample import resample
from studio_sep.util.atomic import file_sha256

__all__ = ["classnet_prior", "load_classnet"]

@dataclass(frozen=True)
class _LoadedClassNet:
    net: object
    query: object | None  #: the bundled query encoder, or None (CLAP)
    sha256: str  #: the weights' (own checkpoints) or the file's (AudioSep) SHA-256
    known_classes: tuple[str, ...] | None
    needs_clap: bool
    layout: str = "studio-sep"  #: "studio-sep" (save_checkpoint) or "audiosep"
    clap_fingerprint: dict = field(default_factory=dict)  #: AudioSep's frozen CLAP tensors to check


@functools.lru_cache(maxsize=2)
def load_classnet(path: str, file_sha: str) -> _LoadedClassNet:
    """The network and its query encoder from a checkpoint (cached per file content):
    the project's own format, or AudioSep's released checkpoint (recognised by its
    ``ss_model.*`` keys; conditioned by CLAP)."""
    from studio_sep.classnet import load_checkpoint
    from studio_sep.classnet.audiosep_checkpoint import LAYOUT, is_audiosep_state, load_audiosep, read_state

    if _may_be_audiosep(path):
        state = read_state(path)
        if is_audiosep_state(state):
            loaded = load_audiosep(path, state)
            return _LoadedClassNet(net=loaded.model, query=None, sha256=file_sha, known_classes=None,
                                   needs_clap=True, layout=LAYOUT, clap_fingerprint=loaded.clap_fingerprint)
    ckpt = load_checkpoint(path)
    model = ckpt.model
    query = getattr(model, "query", None)
    net = getattr(model, "net", model)
    classes = tuple(getattr(query, "classes", ())) or None
    return _LoadedClassNet(net=net, query=query, sha256=ckpt.sha256, known_classes=classes,
                           needs_clap=query is None)


def _may_be_audiosep(path: str) -> bool:
    """Not one of the project's own files (those carry ``format`` metadata): worth reading as AudioSep."""
    import safetensors

    from studio_sep.classnet.checkpoint import _file_kind

    if _file_kind(Path(path)) == "safetensors":
        try:
            with safetensors.safe_open(path, framework="pt") as f:
                return (f.metadata() or {}).get("format") is None
        except (safetensors.SafetensorError, OSError, ValueError):
            return False  # load_checkpoint says what is wrong with it
    return True


def classnet_prior(session, settings, x_proc_MS, mics: Sequence[int], spec, *,
                   callback=None) -> list[np.ndarray | None]:
    """The ``classnet`` prior: the network's estimate of each source from its stem mic,
    at the network's rate, back at the processing rate, as a power spectrogram; None for
    a source with neither a prompt the model knows nor a reference take.

    AudioSep (trained on text queries only) is conditioned on each source's prompt alone;
    the other networks on the prompt and, when the source has one, its reference take."""
    import torch

    from studio_sep.io import audio as audio_io

    loaded = load_classnet(str(spec.model), file_sha256(spec.model))
    query = loaded.query
    if query is None:
        from studio_sep.classnet.clap import REFERENCE_RATE_HZ, ClapQuery

        query = ClapQuery(checkpoint=spec.clap["checkpoint"], roberta=spec.clap["roberta"])
        ref_sr = REFERENCE_RATE_HZ
    else:
        ref_sr = loaded.net.sample_rate
    prompts, references, queried = [], [], []
    for n, source in enumerate(session.sources):
        # spec.queries: the prompt, or None where the model knows no class of it (resolve_prior)
        prompt = spec.queries.get(source.name, source.prompt)
        reference = None
        if source.reference is not None and loaded.layout != "audiosep":
            ref, sr = audio_io.read_audio(source.reference)
            reference = torch.from_numpy(resample(ref, sr, ref_sr)[0]).float()
        if prompt is None and reference is None:
            continue  # nothing to ask the network: compute_prior puts the stem mic's power there
        prompts.append(prompt)
        references.append(reference)
        queried.append(n)
    V: list[np.ndarray | None] = [None] * len(session.sources)
    if queried:
        with torch.no_grad():
            cond_NC = query.condition(prompts, references)
        spectra = network_spectra(loaded.net, cond_NC, x_proc_MS, [mics[n] for n in queried],
                                  processing_rate_hz=settings.processing_sample_rate, n_fft=settings.n_fft,
                                  hop=settings.hop, callback=callback)
        for n, V_FT in zip(queried, spectra):
            V[n] = V_FT
    return V


def network_spectra(net, cond_NC, x_proc_MS: np.ndarray, mics: Sequence[int], *, processing_rate_hz: int,
                    n_fft: int, hop: int, callback=None) -> np.ndarray:
    """Each source's power spectrogram from a separation network run on its mic.

    Mic ``mics[n]`` of ``x_proc_MS`` (processing rate) is resampled to the network's
    rate, scaled to unit peak (the networks were trained on normalised mixtures),
    separated with query ``cond_NC[n]`` in 10 s chunks cross-faded by overlap-add
    (:func:`~studio_sep.classnet.separate_long`), scaled back, resampled to the
    processing rate and length, and transformed with the separation's STFT.

    Returns
    -------
    np.ndarray, shape (N, F, T)
        Power spectrograms, F = n_fft / 2 + 1.
    """
    import torch

    from studio_sep.classnet import separate_long

    net_sr = net.sample_rate
    out = []
    for n, m in enumerate(mics):
        wave = resample(x_proc_MS[m:m + 1], processing_rate_hz, net_sr)
        peak = max(float(np.max(np.abs(wave))), 1e-9)
        est = separate_long(net, torch.from_numpy(wave / peak).float(), cond_NC[n:n + 1].float())
        est_proc = resample(est.double().numpy() * peak, net_sr, processing_rate_hz, n_samples=x_proc_MS.shape[1])
        out.append(np.abs(stft.stft(est_proc, n_fft=n_fft, hop=hop)[:, :, 0]) ** 2)
        if callback:
            callback(n + 1, len(mics))
    return np.stack(out)
