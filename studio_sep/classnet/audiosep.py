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
and ISTFT are convolutions holding 12,587,008 fixed DFT weights (:data:`~studio_sep.classnet.audiosep_checkpoint.FRONT_END_KEYS`),
which this package computes instead.

Loading AudioSep's checkpoint into it: :mod:`studio_sep.classnet.audiosep_checkpoint`.

AudioSep was trained with text queries only (``use_text_ratio: 1.0``): the prior
conditions it on each source's prompt, never on its reference take, with CLAP's unit
text embedding as AudioSep's ``CLAP_Encoder`` computes it (its tokenizer pads to 512
tokens, :class:`~studio_sep.classnet.clap.ClapQuery` to 77; the padding is masked out of
RoBERTa's attention, so prompts under 77 tokens embed the same).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from studio_sep.classnet.model import Separation, check_separation_inputs
from studio_sep.util.errors import InputError

SAMPLE_RATE_HZ = 32000
N_FFT = 2048
HOP = 320
CONDITION_SIZE = 512
#: Output channels of AudioSep's six encoder levels (ResUNet30).
AUDIOSEP_CHANNELS = (32, 64, 128, 256, 384, 384)

_MOMENTUM = 0.01  # AudioSep's batch-norm momentum
_TIME_MULTIPLE = 2 ** 5  # five levels halve time
_POOL = ((2, 2),) * 5 + ((1, 2),)  # (time, frequency) pooling of encoder levels 1..6


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
