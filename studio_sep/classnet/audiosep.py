"""AudioSep's separator, rebuilt here and loaded from its released checkpoint.

AudioSep (Liu et al., "Separate Anything You Describe", 2023; Audio-AGI/AudioSep, MIT
licence) is a text-queried separation model trained on AudioSet, VGGSound, AudioCaps,
Clotho and WavCaps. This module reimplements its separation network from the public
source (read at commit 72777de; written anew in this package's style, not copied):
``config/audiosep_base.yaml`` (``model_type: ResUNet30``, ``input_channels: 1``,
``output_channels: 1``, ``condition_size: 512``, ``sampling_rate: 32000``),
``models/resunet.py`` (``ResUNet30``, ``ResUNet30_Base``, ``FiLM``, ``ConvBlockRes``,
``EncoderBlockRes1B``, ``DecoderBlockRes1B``), ``models/base.py`` (magnitude and phase
of the STFT) and ``models/audiosep.py`` (the Lightning module holding ``ss_model`` and
``query_encoder``); the query is LAION-CLAP (``models/clap_encoder.py``: HTSAT-base +
RoBERTa, no fusion, ``music_speech_audioset_epoch_15_esc_89.98.pt``), loaded by
:mod:`studio_sep.classnet.clap` from the user's files.

The network (:class:`AudioSepNet`)
----------------------------------
32 kHz mono; STFT with a 2048-point periodic Hann window, hop 320, centred frames with
reflect padding (torchlibrosa's ``STFT``, computed here with :func:`torch.stft`).
The magnitude (B, 1, T, 1025) goes through a batch norm over frequency (``bn0``), time is
zero-padded to a multiple of 32, the Nyquist bin dropped, then a 1 × 1 conv to 32
channels, six encoder levels (one residual block each, 32-64-128-256-384-384 channels,
2 × 2 average pooling, the sixth 1 × 2), a bottleneck block (``conv_block7a``), six
decoder levels (transposed conv of kernel = stride, skip concatenation, one residual
block) and a 1 × 1 conv to three maps per bin: a magnitude mask (sigmoid) and a phase
rotation (the unit vector of tanh, tanh). The estimate is
``ReLU(|X| · mask) · e^{i(∠X + ∠rotation)}``, inverted by ISTFT to the input's length.

FiLM, as AudioSep does it: each residual block is
``conv2(LeakyReLU(bn2(conv1(LeakyReLU(bn1(x) + β1))) + β2)) + shortcut(x)``, each β a
per-channel bias from its own linear layer of the 512-d CLAP embedding (no shared
projection, no activation); a decoder level adds its own β1 after its first batch
norm. AudioSep also builds, for every decoder level, a batch norm ``bn2`` and a FiLM
layer ``beta2`` its forward pass never uses: they are kept (unused here too) so that
every tensor of the file has a place and the file round-trips.

Parameters (counted on this module, widths 32…384, condition 512): 26,447,941, of which
5,056,128 in the FiLM layers; AudioSep's own module counts 39,034,949 because its STFT
and ISTFT are convolutions holding 12,587,008 fixed DFT weights (:data:`FRONT_END_KEYS`),
which this module computes instead.

The checkpoint (``audiosep_base_4M_steps.ckpt``)
------------------------------------------------
A PyTorch-Lightning checkpoint: ``{"state_dict": {...}, "epoch", "global_step",
"optimizer_states", ...}`` with the separator under ``ss_model.`` and the frozen CLAP
model under ``query_encoder.model.``. Key mapping (:func:`load_audiosep`, strict):

- ``ss_model.base.<module>.<tensor>`` → ``base.<module>.<tensor>`` (same module names);
- ``ss_model.film.<block>-><block>->betaN.{weight,bias}`` → ``film[<same name>]``;
- ``ss_model.base.stft.*`` / ``ss_model.base.istft.*`` (torchlibrosa 0.1.0's DFT
  matrices and overlap-add window): checked to be the Hann 2048 transform this module
  computes, then dropped;
- ``query_encoder.model.<CLAP key>``: the frozen copy of the CLAP file AudioSep loaded;
  its projection layers are compared with the CLAP file the user gives
  (:func:`check_clap_file`), so a different CLAP model is refused.

Every separator tensor must land on a parameter or buffer of the same shape and every
parameter and buffer must be filled; anything else stops with one line naming the file,
the first key at fault and the fix. The channel widths and the condition size are read
from the file (the released one has AudioSep's).

AudioSep was trained with text queries only (``use_text_ratio: 1.0``): the prior
conditions it on each source's prompt, never on its reference take.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio_sep.classnet.model import Separation, check_separation_inputs
from studio_sep.util.errors import InputError

LAYOUT = "audiosep"
SAMPLE_RATE_HZ = 32000
N_FFT = 2048
HOP = 320
CONDITION_SIZE = 512
#: Output channels of AudioSep's six encoder levels (ResUNet30).
AUDIOSEP_CHANNELS = (32, 64, 128, 256, 384, 384)
#: The torchlibrosa STFT / ISTFT tensors of ``ss_model.base`` (fixed; computed here instead).
FRONT_END_KEYS = ("base.stft.conv_real.weight", "base.stft.conv_imag.weight", "base.istft.conv_real.weight",
                  "base.istft.conv_imag.weight", "base.istft.ola_window")
SEPARATOR_PREFIX = "ss_model."
QUERY_PREFIX = "query_encoder."
#: CLAP tensors compared between the checkpoint's frozen query encoder and the CLAP file.
CLAP_CHECK_PREFIXES = ("text_projection.", "audio_projection.", "logit_scale_a", "logit_scale_t")

_MOMENTUM = 0.01  # AudioSep's batch-norm momentum
_TIME_MULTIPLE = 2 ** 5  # five levels halve time
_POOL = ((2, 2),) * 5 + ((1, 2),)  # (time, frequency) pooling of encoder levels 1..6
_FIX = "use AudioSep's audiosep_base_4M_steps.ckpt as released (config/audiosep_base.yaml: ResUNet30)"


def audiosep_channels(width: float = 1.0) -> tuple[int, ...]:
    """AudioSep's encoder widths scaled by ``width`` (at least 1 channel each); 1.0 is the released model."""
    return tuple(max(1, round(c * width)) for c in AUDIOSEP_CHANNELS)


def film_layers(channels: tuple[int, ...]) -> list[tuple[str, int]]:
    """AudioSep's FiLM layers: (name, features) in its order, names as its ``FiLM`` module registers them.

    One ``beta1`` / ``beta2`` per residual block (its input and output channels); per
    decoder level a ``beta1`` for the level's input and an unused ``beta2`` of the same size.
    """
    c = tuple(channels)
    ins = (c[0],) + c[:-1]
    out = []
    for i, (c_in, c_out) in enumerate(zip(ins, c), start=1):
        out += [(f"encoder_block{i}->conv_block1->beta1", c_in), (f"encoder_block{i}->conv_block1->beta2", c_out)]
    out += [("conv_block7a->conv_block1->beta1", c[-1]), ("conv_block7a->conv_block1->beta2", c[-1])]
    for i, (c_in, c_out) in enumerate(_decoder_channels(c), start=1):
        name = f"decoder_block{i}"
        out += [(f"{name}->beta1", c_in), (f"{name}->beta2", c_in),
                (f"{name}->conv_block2->beta1", 2 * c_out), (f"{name}->conv_block2->beta2", c_out)]
    return out


def _decoder_channels(c: tuple[int, ...]) -> list[tuple[int, int]]:
    """(in, out) channels of decoder levels 1..6: from the bottleneck back up to level 1."""
    return [(c[-1], c[-1])] + [(c[5 - i], c[4 - i]) for i in range(5)]


class ConvBlockRes(nn.Module):
    """AudioSep's residual block: FiLM biases added after each batch norm, before the activation.

    ``y = conv2(lrelu(bn2(conv1(lrelu(bn1(x) + β1))) + β2))``; returns ``x + y``, or
    ``shortcut(x) + y`` (1 × 1 conv with bias) when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=_MOMENTUM)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=_MOMENTUM)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        for conv in (self.conv1, self.conv2, self.shortcut):
            if conv is not None:
                _init_layer(conv)

    def forward(self, x: torch.Tensor, beta1: torch.Tensor, beta2: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.bn1(x) + beta1, 0.01))
        y = self.conv2(F.leaky_relu(self.bn2(y) + beta2, 0.01))
        return (x if self.shortcut is None else self.shortcut(x)) + y


class EncoderBlock(nn.Module):
    """One encoder level (AudioSep's ``EncoderBlockRes1B``): a residual block, then average pooling."""

    def __init__(self, name: str, in_channels: int, out_channels: int, pool: tuple[int, int]):
        super().__init__()
        self.film_name = f"{name}->conv_block1"
        self.pool = pool
        self.conv_block1 = ConvBlockRes(in_channels, out_channels)

    def forward(self, x: torch.Tensor, betas: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv_block1(x, betas[f"{self.film_name}->beta1"], betas[f"{self.film_name}->beta2"])
        return (F.avg_pool2d(skip, self.pool) if self.pool != (1, 1) else skip), skip


class DecoderBlock(nn.Module):
    """One decoder level (AudioSep's ``DecoderBlockRes1B``).

    ``conv1(lrelu(bn1(x) + β1))`` (a transposed conv whose kernel equals its stride: an
    exact 2× upsampling), concatenated with the skip, then a residual block. ``bn2`` is
    AudioSep's unused batch norm, kept for its tensors.
    """

    def __init__(self, name: str, in_channels: int, out_channels: int, upsample: tuple[int, int]):
        super().__init__()
        self.film_name = name
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=_MOMENTUM)
        self.conv1 = nn.ConvTranspose2d(in_channels, out_channels, upsample, stride=upsample, bias=False)
        self.conv_block2 = ConvBlockRes(2 * out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(in_channels, momentum=_MOMENTUM)  # unused, as in AudioSep
        _init_layer(self.conv1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, betas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = self.conv1(F.leaky_relu(self.bn1(x) + betas[f"{self.film_name}->beta1"], 0.01))
        name = f"{self.film_name}->conv_block2"
        return self.conv_block2(torch.cat((x, skip), dim=1), betas[f"{name}->beta1"], betas[f"{name}->beta2"])


class ResUNet30Base(nn.Module):
    """AudioSep's U-Net on the magnitude: (B, 1, T, 1025) → three maps (B, 3, T, 1025)."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        c = tuple(channels)
        self.bn0 = nn.BatchNorm2d(N_FFT // 2 + 1, momentum=_MOMENTUM)
        self.pre_conv = nn.Conv2d(1, c[0], 1)
        ins = (c[0],) + c[:-1]
        for i, (c_in, c_out, pool) in enumerate(zip(ins, c, _POOL), start=1):
            self.add_module(f"encoder_block{i}", EncoderBlock(f"encoder_block{i}", c_in, c_out, pool))
        self.conv_block7a = EncoderBlock("conv_block7a", c[-1], c[-1], (1, 1))
        for i, (c_in, c_out) in enumerate(_decoder_channels(c), start=1):
            self.add_module(f"decoder_block{i}", DecoderBlock(f"decoder_block{i}", c_in, c_out, _POOL[6 - i]))
        self.after_conv = nn.Conv2d(c[0], 3, 1)
        _init_layer(self.pre_conv)
        _init_layer(self.after_conv)

    def forward(self, mag_B1TF: torch.Tensor, betas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        n_frames = mag_B1TF.shape[2]
        x = self.bn0(mag_B1TF.transpose(1, 3)).transpose(1, 3)  # batch norm over frequency bins
        x = F.pad(x, (0, 0, 0, (-n_frames) % _TIME_MULTIPLE))[..., :-1]  # 1025 → 1024 bins
        x = self.pre_conv(x)
        skips = []
        for i in range(1, 7):
            x, skip = getattr(self, f"encoder_block{i}")(x, betas)
            skips.append(skip)
        x, _ = self.conv_block7a(x, betas)
        for i in range(1, 7):
            x = getattr(self, f"decoder_block{i}")(x, skips[-i], betas)
        return F.pad(self.after_conv(x), (0, 1))[:, :, :n_frames, :]


class AudioSepNet(nn.Module):
    """AudioSep's separator (``ss_model``: ResUNet30 + FiLM), 32 kHz, for a 512-d CLAP condition.

    Parameters
    ----------
    channels : tuple of 6 ints
        Encoder widths; AudioSep's are :data:`AUDIOSEP_CHANNELS` (26,447,941 parameters).
        Smaller widths (:func:`audiosep_channels`) build the same architecture for tests.
    condition_size : int
        Size of the query embedding (512, LAION-CLAP's).

    Notes
    -----
    Submodules follow AudioSep's names: ``base`` (:class:`ResUNet30Base`) and ``film`` (a
    ``ModuleDict`` of ``nn.Linear(condition_size, features)`` keyed by AudioSep's FiLM
    names, e.g. ``"encoder_block1->conv_block1->beta1"``). Parameters are drawn from
    torch's default generator (Xavier-uniform weights, zero biases, as AudioSep).
    """

    sample_rate = SAMPLE_RATE_HZ
    n_fft = N_FFT
    hop = HOP

    def __init__(self, *, channels: tuple[int, ...] = AUDIOSEP_CHANNELS, condition_size: int = CONDITION_SIZE):
        super().__init__()
        channels = tuple(channels)
        if len(channels) != 6 or not all(isinstance(c, int) and c > 0 for c in channels):
            raise InputError(None, "AudioSepNet.channels", f"expected 6 positive integers, got {channels!r}",
                             f"use AudioSep's {AUDIOSEP_CHANNELS}")
        if not (isinstance(condition_size, int) and condition_size > 0):
            raise InputError(None, "AudioSepNet.condition_size", f"must be a positive integer, got {condition_size!r}",
                             "use 512 (LAION-CLAP)")
        self.config = {"channels": list(channels), "condition_size": int(condition_size)}
        self.cond_dim = int(condition_size)
        self.base = ResUNet30Base(channels)
        self.film = nn.ModuleDict()
        for name, features in film_layers(channels):
            self.film[name] = nn.Linear(condition_size, features)
            _init_layer(self.film[name])
        self.register_buffer("window", torch.hann_window(N_FFT, dtype=torch.float64), persistent=False)

    def spectrogram(self, wave_BS: torch.Tensor) -> torch.Tensor:
        """Complex STFT (B, 1025, T), T = S // 320 + 1; inputs under 2048 samples are zero-padded first."""
        n = wave_BS.shape[-1]
        if n < N_FFT:
            wave_BS = F.pad(wave_BS, (0, N_FFT - n))
        return torch.stft(wave_BS, N_FFT, hop_length=HOP, window=self.window.to(wave_BS.dtype), center=True,
                          pad_mode="reflect", return_complex=True)

    def waveform(self, X_BFT: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Inverse of :meth:`spectrogram`: (B, 1025, T) → (B, n_samples)."""
        wave = torch.istft(X_BFT, N_FFT, hop_length=HOP, window=self.window.to(X_BFT.real.dtype), center=True,
                           length=max(n_samples, N_FFT))
        return wave[..., :n_samples]

    def forward(self, wave_BS: torch.Tensor, cond_BC: torch.Tensor) -> Separation:
        """Separate the queried source from a 32 kHz mixture.

        Parameters
        ----------
        wave_BS : torch.Tensor, shape (B, S)
            Mixture at 32 kHz, any length S ≥ 1, on the model's device.
        cond_BC : torch.Tensor, shape (B, condition_size)
            The query: a CLAP text embedding (unit length).

        Returns
        -------
        Separation
            ``wave_BS`` (B, S), and ``mask_BFT`` (B, 1025, T): the magnitude mask in [0, 1]
            (the phase rotation is applied too, and not returned).
        """
        wave_BS, cond_BC = self._check_inputs(wave_BS, cond_BC)
        X_BTF = self.spectrogram(wave_BS).transpose(1, 2)
        mag_BTF = torch.sqrt(torch.clamp(X_BTF.real ** 2 + X_BTF.imag ** 2, min=1e-10))
        betas = {name: layer(cond_BC)[:, :, None, None] for name, layer in self.film.items()}
        maps_B3TF = self.base(mag_BTF[:, None], betas)
        mask_BTF = torch.sigmoid(maps_B3TF[:, 0])
        real, imag = torch.tanh(maps_B3TF[:, 1]), torch.tanh(maps_B3TF[:, 2])
        rotation = torch.complex(real, imag) / torch.clamp(torch.sqrt(real ** 2 + imag ** 2), min=1e-10)
        Y_BTF = F.relu(mag_BTF * mask_BTF) * (X_BTF / mag_BTF) * rotation
        return Separation(self.waveform(Y_BTF.transpose(1, 2), wave_BS.shape[-1]), mask_BTF.transpose(1, 2))


    def _check_inputs(self, wave_BS: torch.Tensor, cond_BC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return check_separation_inputs(wave_BS, cond_BC, cond_dim=self.cond_dim, like=self.base.pre_conv.weight)


def _init_layer(layer: nn.Module) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


# -- the checkpoint ------------------------------------------------------------------------
class AudioSepLoad(NamedTuple):
    """An AudioSep checkpoint, loaded: the separator (eval mode, CPU) and what it came with."""

    model: AudioSepNet
    kwargs: dict
    #: ``query_encoder.model.*`` tensors compared with the CLAP file (:data:`CLAP_CHECK_PREFIXES`),
    #: keyed by their CLAP name; empty when the file holds no query encoder.
    clap_fingerprint: dict[str, torch.Tensor]


def is_audiosep_state(state: Mapping) -> bool:
    """True when a state dict has AudioSep's layout (some key under ``ss_model.``)."""
    return any(isinstance(k, str) and k.startswith(SEPARATOR_PREFIX) for k in state)


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file: a Lightning ``state_dict``, or the top-level tensors.

    Torch files are read weights-only (memory-mapped when the format allows: the
    released file also holds the optimiser's state, which is never read); safetensors too.
    """
    from studio_sep.classnet.checkpoint import _file_kind, _read_foreign, _torch_load

    path = Path(path)
    if _file_kind(path) == "torch":
        obj = _torch_load(path, mmap=True, resave="torch.save(torch.load(p, weights_only=False)['state_dict'], out)")
    else:
        obj = _read_foreign(path)
    if not isinstance(obj, Mapping):
        raise InputError(path, None, f"holds a {type(obj).__name__}, not a checkpoint dict", _FIX)
    inner = obj.get("state_dict")
    state = inner if isinstance(inner, Mapping) else obj
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_audiosep(path: str | os.PathLike, state: Mapping[str, torch.Tensor] | None = None) -> AudioSepLoad:
    """Build :class:`AudioSepNet` from an AudioSep checkpoint, strictly (see the module docstring).

    Parameters
    ----------
    path : path-like
        The checkpoint (named in errors; read unless ``state`` is given).
    state : mapping, optional
        Its state dict, already read (:func:`read_state`).

    Raises
    ------
    InputError
        One line naming the file and the first key that is missing, unexpected, of the
        wrong shape, or (the STFT tensors) not AudioSep's transform.
    """
    path = Path(path)
    state = read_state(path) if state is None else state
    if not is_audiosep_state(state):
        raise InputError(path, None, f"no {SEPARATOR_PREFIX}* tensors: not an AudioSep checkpoint", _FIX)
    separator, query = {}, {}
    for key, value in state.items():
        if key.startswith(SEPARATOR_PREFIX):
            separator[key[len(SEPARATOR_PREFIX):]] = value
        elif key.startswith(QUERY_PREFIX):
            query[key[len(QUERY_PREFIX):]] = value
        else:
            raise InputError(path, key, "unexpected tensor: AudioSep's checkpoint holds only ss_model.* and "
                             "query_encoder.*", _FIX)
    kwargs = _infer_config(path, separator)
    model = AudioSepNet(**kwargs)
    _load_separator(path, model, separator)
    fingerprint = {k.removeprefix("model."): v.detach().clone() for k, v in query.items()
                   if k.removeprefix("model.").startswith(CLAP_CHECK_PREFIXES)}
    return AudioSepLoad(model.eval(), kwargs, fingerprint)


def _infer_config(path: Path, separator: Mapping[str, torch.Tensor]) -> dict:
    """Channel widths and condition size from the tensors that define them."""
    channels = []
    for i in range(1, 7):
        key = f"base.encoder_block{i}.conv_block1.conv1.weight"
        if key not in separator:
            raise InputError(path, SEPARATOR_PREFIX + key, "missing from the checkpoint", _FIX)
        channels.append(int(separator[key].shape[0]))
    key = "film.encoder_block1->conv_block1->beta1.weight"
    if key not in separator or separator[key].ndim != 2:
        raise InputError(path, SEPARATOR_PREFIX + key, "missing from the checkpoint", _FIX)
    return {"channels": tuple(channels), "condition_size": int(separator[key].shape[1])}


def _load_separator(path: Path, model: AudioSepNet, separator: Mapping[str, torch.Tensor]) -> None:
    """Map ``ss_model.*`` onto ``model`` strictly; check the fixed STFT tensors against ours."""
    own = model.state_dict()
    front = front_end_tensors()
    loaded = {}
    for key, value in separator.items():
        target = own.get(key, front.get(key))
        if target is None:
            raise InputError(path, SEPARATOR_PREFIX + key, f"unexpected tensor {tuple(value.shape)}: AudioSep's "
                             f"ResUNet30 ({model.config['channels']}) has no such weight", _FIX)
        if tuple(value.shape) != tuple(target.shape):
            raise InputError(path, SEPARATOR_PREFIX + key, f"has shape {tuple(value.shape)}, AudioSep's "
                             f"ResUNet30 needs {tuple(target.shape)}", _FIX)
        if key in front:
            _check_front_end(path, key, value, target)
        else:
            loaded[key] = value
    missing = [k for k in list(own) + list(front) if k not in separator]
    if missing:
        raise InputError(path, SEPARATOR_PREFIX + missing[0], f"missing from the checkpoint ({len(missing)} tensors "
                         "missing)", _FIX)
    model.load_state_dict(loaded, strict=True)


def _check_front_end(path: Path, key: str, value: torch.Tensor, expected: torch.Tensor) -> None:
    error = float((value.detach().double() - expected.double()).abs().max())
    if not error <= 1e-4:  # NaN fails too
        raise InputError(path, SEPARATOR_PREFIX + key, f"is not the Hann-2048 / hop-320 transform AudioSep's "
                         f"torchlibrosa STFT holds (largest difference {error:.3g})",
                         "this loader computes AudioSep's STFT itself; a model trained with another front end "
                         "cannot be loaded")


@functools.lru_cache(maxsize=1)
def front_end_tensors() -> dict[str, torch.Tensor]:
    """The fixed tensors of AudioSep's torchlibrosa 0.1.0 ``STFT`` / ``ISTFT`` (2048 points, Hann).

    ``stft.conv_*``: the first 1025 rows of the windowed DFT matrix, shape (1025, 1, 2048);
    ``istft.conv_*``: the windowed inverse DFT / 2048, shape (2048, 2048, 1);
    ``istft.ola_window``: the squared window. float32, as torchlibrosa builds them.
    """
    from scipy.signal import get_window

    n, bins = N_FFT, N_FFT // 2 + 1
    window = get_window("hann", n, fftbins=True)
    k, m = np.meshgrid(np.arange(n), np.arange(n))
    forward = np.power(np.exp(-2j * np.pi / n), k * m)
    inverse = np.power(np.exp(2j * np.pi / n), k * m) / n
    stft = forward[:, :bins] * window[:, None]
    istft = inverse * window[None, :]

    def as_f32(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return {"base.stft.conv_real.weight": as_f32(stft.real.T[:, None, :]),
            "base.stft.conv_imag.weight": as_f32(stft.imag.T[:, None, :]),
            "base.istft.conv_real.weight": as_f32(istft.real.T[:, :, None]),
            "base.istft.conv_imag.weight": as_f32(istft.imag.T[:, :, None]),
            "base.istft.ola_window": as_f32(window ** 2)}


def audiosep_state_dict(model: AudioSepNet) -> dict[str, torch.Tensor]:
    """``model``'s tensors in AudioSep's layout (``ss_model.*``, the STFT tensors included).

    The inverse of the mapping :func:`load_audiosep` applies; wrap it as
    ``{"state_dict": {**audiosep_state_dict(model), **query_encoder}}`` for a file of the
    released checkpoint's shape.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    state.update({k: v.clone() for k, v in front_end_tensors().items()})
    return {SEPARATOR_PREFIX + k: v for k, v in state.items()}


def check_clap_file(fingerprint: Mapping[str, torch.Tensor], clap_path: str | os.PathLike, *,
                    checkpoint: str | os.PathLike | None = None) -> int:
    """Check that a CLAP file is the one AudioSep's checkpoint carries a frozen copy of.

    Compares the projection layers and logit scales (:data:`CLAP_CHECK_PREFIXES`) of the
    checkpoint's ``query_encoder.model`` with the CLAP file's (``module.`` prefix or not).

    Returns
    -------
    int
        How many tensors were compared (0 when the checkpoint holds no query encoder).

    Raises
    ------
    InputError
        A compared tensor is missing from the CLAP file or differs from the checkpoint's.
    """
    if not fingerprint:
        return 0
    clap_path = Path(clap_path)
    state = {k.removeprefix("module."): v for k, v in read_state(clap_path).items()}
    where = Path(checkpoint).name if checkpoint is not None else "the AudioSep checkpoint"
    fix = "pass AudioSep's CLAP file (music_speech_audioset_epoch_15_esc_89.98.pt) with --clap-checkpoint"
    for key, value in fingerprint.items():
        theirs = state.get(key)
        if theirs is None or tuple(theirs.shape) != tuple(value.shape) or not torch.equal(theirs.to(value.dtype), value):
            problem = "lacks" if theirs is None else "differs in"
            raise InputError(clap_path, key, f"{problem} the CLAP weight {where} was trained with "
                             f"(query_encoder.model.{key}): not AudioSep's CLAP model", fix)
    return len(fingerprint)
