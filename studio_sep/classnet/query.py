"""Query encoders: what turns a text prompt and an audio reference into a condition.

The paper conditions CLASS-net with LAION-CLAP embeddings of a text prompt and of a
10 s audio reference, combined by eq. 17 (:func:`~studio_sep.classnet.model.query_condition`).
CLAP's weights cannot be downloaded everywhere, so the project has two providers behind
one interface, :class:`QueryEncoder`:

- ``"clap"`` (:mod:`studio_sep.classnet.clap`): frozen LAION-CLAP;
- ``"learned"`` (:class:`LearnedQuery`, here): needs no downloaded weights. Text
  prompts are mapped by keywords (:data:`CLASS_KEYWORDS`) to a small class vocabulary,
  each class with a learned embedding; audio references go through a small log-mel
  convolutional encoder trained with the separator.

:class:`QueriedClassNet` bundles a :class:`~studio_sep.classnet.model.ClassNet` and a
:class:`LearnedQuery` so that one checkpoint file holds both.

Axes as in :mod:`studio_sep.classnet.model`: ``B`` batch, ``S`` samples, ``C``
condition features, ``M`` mel bands, ``T`` frames.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from studio_sep.classnet.model import ClassNet, Separation, freeze_encoder, query_condition, weights_sha256
from studio_sep.data.instruments import CLASSES, TARGET_CLASSES, has_reject_word, match_class
from studio_sep.util.errors import InputError

#: Sampling rate (Hz) and length (s) of an audio reference, as CLAP takes it.
REFERENCE_RATE = 16000
REFERENCE_S = 10.0

#: Canonical instrument classes and the prompt words that name them: the paper's target
#: classes (§3.3.1) from :data:`studio_sep.data.instruments.CLASSES`, the one table that the
#: data augmentation and the prior use too.
CLASS_KEYWORDS: dict[str, tuple[str, ...]] = {name: CLASSES[name].keywords for name in TARGET_CLASSES}
DEFAULT_CLASSES = tuple(CLASS_KEYWORDS)


@runtime_checkable
class QueryEncoder(Protocol):
    """What the separator needs from a query provider (CLAP or learned).

    Attributes
    ----------
    name : str
        ``"learned"`` or ``"clap"``.
    sha256 : str or None
        Checksum of the encoder's weights (recorded in run records), None if unknown.
    """

    name: str
    sha256: str | None

    def condition(self, prompts: Sequence[str | None],
                  references: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Unit-length conditions (B, cond_dim), one per (prompt, reference) pair.

        ``references`` are mono 16 kHz 1-D float tensors of any length, centre-cropped
        or zero-padded (centred) to 10 s (:func:`fit_reference`). Either of a pair may
        be None, not both (:class:`~studio_sep.util.errors.InputError`). Text and audio
        embeddings are combined by eq. 17 (:func:`query_condition`).
        """
        ...


def prompt_class(prompt: str, classes: Sequence[str] = DEFAULT_CLASSES) -> str:
    """The class among ``classes`` that a text prompt names, by keyword.

    ``"Tenor Saxophone"`` → ``"saxophone"``, ``"grand piano"`` → ``"piano"``. The rules
    are :func:`studio_sep.data.instruments.match_class`'s (whole words, case-insensitive, the
    longest matching keyword wins, "electric" / "synth" instruments match nothing), so
    prompts map here as they do in the augmentation data. A class the instrument table
    does not know is matched by its own name.

    Raises
    ------
    InputError
        If no class matches.
    """
    if not isinstance(prompt, str):
        raise InputError(None, "prompt", f"must be a string, got {type(prompt).__name__}", "pass text such as 'violin'")
    found = match_class(prompt, tuple(c for c in classes if c in CLASSES))
    if found is None:
        words = re.findall(r"[a-z0-9]+", prompt.lower())
        found = None if has_reject_word(words) else next((c for c in classes if c not in CLASSES and c.lower() in words), None)
    if found is None:
        known = ", ".join(f"{c} ({'/'.join(CLASSES[c].keywords)})" if c in CLASSES else c for c in classes)
        raise InputError(None, "prompt", f"prompt {prompt!r} names no instrument this model knows",
                         f"name one of the model's classes: {known} (not electric / synth); or give an audio "
                         "reference, or use the CLAP query")
    return found


def model_knows(prompt: str, classes: Sequence[str]) -> bool:
    """Whether :func:`prompt_class` maps ``prompt`` to one of ``classes``."""
    try:
        prompt_class(prompt, classes)
    except InputError:
        return False
    return True


def fit_reference(wave_S: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Centre-crop, or zero-pad on both sides (centred), a 1-D waveform to ``n_samples``."""
    n = wave_S.shape[-1]
    if n >= n_samples:
        start = (n - n_samples) // 2
        return wave_S[start:start + n_samples]
    left = (n_samples - n) // 2
    return F.pad(wave_S, (left, n_samples - n - left))


def check_query_inputs(prompts, references) -> tuple[list, list]:
    """Validate a batch of (prompt, reference) pairs; returns them as lists."""
    prompts, references = list(prompts), list(references)
    if len(prompts) != len(references):
        raise InputError(None, "query", f"{len(prompts)} prompts but {len(references)} references",
                         "pass one prompt and one reference (either may be None) per mixture")
    for i, (p, r) in enumerate(zip(prompts, references)):
        if p is None and r is None:
            raise InputError(None, f"query[{i}]", "has neither a text prompt nor an audio reference",
                             "give a prompt, a reference or both")
        if p is not None and not isinstance(p, str):
            raise InputError(None, f"prompts[{i}]", f"must be a string or None, got {type(p).__name__}",
                             "pass text such as 'violin'")
        if r is not None and not (isinstance(r, torch.Tensor) and r.ndim == 1 and r.is_floating_point()
                                  and r.numel() > 0):
            what = f"shape {tuple(r.shape)}, {r.dtype}" if isinstance(r, torch.Tensor) else type(r).__name__
            raise InputError(None, f"references[{i}]", f"must be a non-empty 1-D float tensor (mono 16 kHz), "
                             f"got {what}", "mix the reference down to mono and resample it to 16 kHz")
    return prompts, references


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, *, f_min_hz: float = 0.0,
                   f_max_hz: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters (n_mels, n_fft // 2 + 1), float32, each peaking at 1."""
    f_max_hz = sample_rate / 2 if f_max_hz is None else f_max_hz
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    mels = torch.linspace(mel(f_min_hz), mel(f_max_hz), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins_hz[None] - lo) / (mid - lo)
    down = (hi - bins_hz[None]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).to(torch.float32)


class ReferenceEncoder(nn.Module):
    """Small audio-reference encoder: log-mel → convs → mean + max over time → linear.

    Log-mel: STFT 1024 / hop 320 (Hann) at 16 kHz, ``n_mels`` bands, log(· + 1e-5) with
    the mean over bands and frames removed (a gain of the reference does not change the
    embedding). Then three 3×3 convolutions (stride 2, ReLU) with ``channels`` outputs,
    the mean over mel bands, mean and max over frames concatenated, and a linear layer
    to ``cond_dim``. No batch norm: training and inference compute the same function.
    """

    def __init__(self, *, cond_dim: int, n_mels: int, channels: tuple[int, ...], sample_rate: int,
                 n_fft: int = 1024, hop: int = 320):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel_MF", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(2 * c_in, cond_dim)

    def log_mel(self, wave_BS: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, M, T) mean-removed log-mel."""
        X = torch.stft(wave_BS, self.n_fft, hop_length=self.hop, window=self.window.to(wave_BS.dtype),
                       center=True, pad_mode="constant", return_complex=True)
        logmel = torch.log(torch.einsum("mf,bft->bmt", self.mel_MF.to(wave_BS.dtype), X.abs() ** 2) + 1e-5)
        return logmel - logmel.mean(dim=(1, 2), keepdim=True)

    def forward(self, wave_BS: torch.Tensor) -> torch.Tensor:
        h = self.convs(self.log_mel(wave_BS)[:, None]).mean(dim=2)  # (B, C, T')
        return self.out(torch.cat((h.mean(dim=-1), h.amax(dim=-1)), dim=-1))


class LearnedQuery(nn.Module):
    """The in-project query encoder: learned class embeddings + a small reference encoder.

    A text prompt is mapped to one of ``classes`` by keyword (:func:`prompt_class`) and
    replaced by that class's learned embedding; an audio reference (mono 16 kHz, any
    length, centre-cropped / padded to ``reference_s``) goes through
    :class:`ReferenceEncoder`. Both are combined by eq. 17. Implements
    :class:`QueryEncoder` with ``name = "learned"``.

    Parameters
    ----------
    classes : sequence of str
        The class vocabulary, canonical names (see :data:`CLASS_KEYWORDS`).
    cond_dim : int
        Condition size; 512, as LAION-CLAP, so a ClassNet has the same shape with
        either provider.
    n_mels : int
        Mel bands of the reference encoder (64).
    channels : sequence of int
        Output channels of its three convolutions ((16, 32, 64): 23,296 conv
        parameters, plus 65,664 in the final linear layer for cond_dim 512).
    sample_rate : int
        Rate of the references (16000); recorded, not resampled to.
    reference_s : float
        Length the references are cropped / padded to (10 s, as CLAP's input).

    Notes
    -----
    Parameters come from torch's default generator (wrap construction in
    ``torch.random.fork_rng()`` with a seed to make it repeatable). The text
    embeddings start as random unit vectors, so untrained classes already differ.
    """

    name = "learned"

    def __init__(self, *, classes: Sequence[str] = DEFAULT_CLASSES, cond_dim: int = 512, n_mels: int = 64,
                 channels: Sequence[int] = (16, 32, 64), sample_rate: int = REFERENCE_RATE,
                 reference_s: float = REFERENCE_S):
        super().__init__()
        classes = list(classes) if not isinstance(classes, str) else classes
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)
                and len(set(classes)) == len(classes)):
            raise InputError(None, "LearnedQuery.classes", f"must be distinct non-empty names, got {classes!r}",
                             f"use e.g. {list(DEFAULT_CLASSES)}")
        for field, value in (("cond_dim", cond_dim), ("n_mels", n_mels), ("sample_rate", sample_rate)):
            if not (isinstance(value, int) and value > 0):
                raise InputError(None, f"LearnedQuery.{field}", f"must be a positive integer, got {value!r}",
                                 "see the LearnedQuery docstring for defaults")
        channels = list(channels)
        if not (channels and all(isinstance(c, int) and c > 0 for c in channels)):
            raise InputError(None, "LearnedQuery.channels", f"must be positive integers, got {channels!r}",
                             "use e.g. [16, 32, 64]")
        if not (isinstance(reference_s, (int, float)) and math.isfinite(reference_s) and reference_s > 0):
            raise InputError(None, "LearnedQuery.reference_s", f"must be a positive number, got {reference_s!r}",
                             "use 10.0")
        self.config = {"classes": list(classes), "cond_dim": int(cond_dim), "n_mels": int(n_mels),
                       "channels": [int(c) for c in channels], "sample_rate": int(sample_rate),
                       "reference_s": float(reference_s)}
        self.classes = tuple(classes)
        self.cond_dim = int(cond_dim)
        self.sample_rate = int(sample_rate)
        self.reference_samples = round(reference_s * sample_rate)
        self.text = nn.Embedding(len(classes), cond_dim)
        with torch.no_grad():
            self.text.weight.copy_(F.normalize(self.text.weight, dim=-1))
        self.audio = ReferenceEncoder(cond_dim=cond_dim, n_mels=n_mels, channels=tuple(channels),
                                      sample_rate=sample_rate)

    @property
    def sha256(self) -> str:
        """SHA-256 of the current weights (:func:`~studio_sep.classnet.model.weights_sha256`)."""

        return weights_sha256(self.state_dict())

    def class_index(self, prompt: str) -> int:
        """Index in ``classes`` of the class a prompt names (:func:`prompt_class`)."""
        return self.classes.index(prompt_class(prompt, self.classes))

    def condition(self, prompts: Sequence[str | None], references: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Unit-length conditions (B, cond_dim); see :meth:`QueryEncoder.condition`."""
        prompts, references = check_query_inputs(prompts, references)
        device, dtype = self.text.weight.device, self.text.weight.dtype
        parts: list[list[torch.Tensor]] = [[] for _ in prompts]
        rows = [i for i, r in enumerate(references) if r is not None]
        if rows:
            wave = torch.stack([fit_reference(references[i].to(device=device, dtype=dtype), self.reference_samples)
                                for i in rows])
            for i, z in zip(rows, self.audio(wave)):
                parts[i].append(z)
        rows = [i for i, p in enumerate(prompts) if p is not None]
        if rows:
            index = torch.tensor([self.class_index(prompts[i]) for i in rows], device=device)
            for i, z in zip(rows, self.text(index)):
                parts[i].append(z)
        # eq. 17 row by row: a row may have one query or two
        return torch.cat([query_condition(*(z[None] for z in row)) for row in parts])

    def forward(self, prompts: Sequence[str | None], references: Sequence[torch.Tensor | None]) -> torch.Tensor:
        return self.condition(prompts, references)


class QueriedClassNet(nn.Module):
    """A :class:`ClassNet` and its :class:`LearnedQuery`, saved as one checkpoint.

    Parameters
    ----------
    net : dict, optional
        :class:`ClassNet` keyword arguments; ``cond_dim`` defaults to the query's.
    query : dict, optional
        :class:`LearnedQuery` keyword arguments.

    ``config`` is ``{"net": <ClassNet config>, "query": <LearnedQuery config>}``, all
    arguments resolved, so :func:`~studio_sep.classnet.checkpoint.load_checkpoint`
    rebuilds the same model.
    """

    def __init__(self, *, net: dict | None = None, query: dict | None = None):
        super().__init__()
        for field, value in (("net", net), ("query", query)):
            if value is not None and not isinstance(value, dict):
                raise InputError(None, f"QueriedClassNet.{field}", f"must be a dict of keyword arguments, got "
                                 f"{type(value).__name__}", "pass e.g. net={'width': 0.25}")
        self.query = LearnedQuery(**(query or {}))
        net = {"cond_dim": self.query.cond_dim, **(net or {})}
        if net["cond_dim"] != self.query.cond_dim:
            raise InputError(None, "QueriedClassNet.net.cond_dim", f"{net['cond_dim']} differs from the query's "
                             f"cond_dim {self.query.cond_dim}", "leave net.cond_dim out (it follows the query)")
        self.net = ClassNet(**net)
        self.config = {"net": dict(self.net.config), "query": dict(self.query.config)}

    @property
    def sample_rate(self) -> int:
        return self.net.sample_rate

    def condition(self, prompts: Sequence[str | None], references: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """The query module's conditions (B, cond_dim)."""
        return self.query.condition(prompts, references)

    def separate(self, wave_BS: torch.Tensor, prompts: Sequence[str | None],
                 references: Sequence[torch.Tensor | None]) -> Separation:
        """Separate, for each mixture of the batch, the source its prompt / reference names.

        Parameters
        ----------
        wave_BS : torch.Tensor, shape (B, S)
            Mixtures at 16 kHz.
        prompts : sequence of str or None, length B
        references : sequence of 1-D torch.Tensor or None, length B
            Mono 16 kHz references, any length (centre 10 s used).

        Returns
        -------
        Separation
        """
        cond = self.condition(prompts, references)
        if isinstance(wave_BS, torch.Tensor) and wave_BS.ndim >= 1 and wave_BS.shape[0] != cond.shape[0]:
            raise InputError(None, "query", f"{cond.shape[0]} queries for {wave_BS.shape[0]} mixtures",
                             "pass one prompt / reference pair per mixture")
        return self.net(wave_BS, cond)

    def forward(self, wave_BS: torch.Tensor, prompts: Sequence[str | None],
                references: Sequence[torch.Tensor | None]) -> Separation:
        return self.separate(wave_BS, prompts, references)

    def freeze_encoder(self) -> list[torch.nn.Parameter]:
        """Decoder-only fine-tuning: freeze the ResUNet encoder (:func:`freeze_encoder`).

        The query module stays trainable (it starts untrained), as does ``net.proj``.
        Returns the parameters still trainable.
        """
        freeze_encoder(self.net)
        return [p for p in self.parameters() if p.requires_grad]
