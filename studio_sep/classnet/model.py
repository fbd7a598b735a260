"""CLASS-net: the LASS-net ResUNet with additive FiLM, conditioned by a CLAP embedding.

Paper §3.4 and §4.1 (seed 002): the separation backbone is the FiLM-conditioned ResUNet
of LASS-net (Liu et al., "Separate What You Describe", after Kong et al.'s ResUNet),
fed the magnitude spectrogram of a 16 kHz mixture (STFT 1024 / hop 256). The
condition is z = normalise((z_audio + z_text) / 2) (eq. 17) from LAION-CLAP, mapped by
a 512 → 256 linear layer and a ReLU (§4.1.2), and added as a per-channel bias after
every convolution of the encoder and of the decoder (FiLM, §3.4). The network predicts
a sigmoid mask on the mixture magnitude; the estimate keeps the mixture's phase.

Axes: ``B`` batch, ``S`` samples, ``F`` frequency bins (n_fft / 2 + 1), ``T`` STFT
frames, ``C`` channels or condition features. Public tensors are named with them
(``wave_BS``, ``mask_BFT``); inside the U-Net the layout is LASS-net's
(batch, channel, time, frequency).

Module names follow LASS-net's ``UNetRes_FiLM`` (``encoder_block1``, ``conv_block7``,
``film1.linear.0`` …) so that its weights load by stripping a prefix
(:func:`studio_sep.classnet.checkpoint.load_foreign_state`).

Parameter counts (measured; they do not depend on n_fft): width 1.0, depth 6:
52,359,651, of which 52,228,323 in the ResUNet (LASS-net's ~52 M; the seed paper
gives no count) and 131,328 in the query projection; width 0.25: 4,649,403; width
0.125: 1,678,783; width 0.125, depth 4: 651,615. At small widths most parameters are
FiLM layers (256 → 2C → C each).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from studio_sep.util.errors import InputError

#: Output channels of the encoder levels of LASS-net (levels past the sixth keep 384).
LASS_CHANNELS = (32, 64, 128, 256, 384, 384)
MAX_DEPTH = 8


def level_channels(width: float, depth: int) -> tuple[int, ...]:
    """Output channels of each encoder level: LASS-net's, scaled by ``width`` (at least 1)."""
    base = LASS_CHANNELS[:depth] + (LASS_CHANNELS[-1],) * max(0, depth - len(LASS_CHANNELS))
    return tuple(max(1, round(c * width)) for c in base)


def query_condition(z_audio: torch.Tensor | None = None, z_text: torch.Tensor | None = None) -> torch.Tensor:
    """The CLASS-net condition from CLAP embeddings (paper eq. 17).

    ``normalise((ẑ_audio + ẑ_text) / 2)`` where ``ẑ`` is each embedding normalised to
    unit length first (LAION-CLAP already returns unit vectors; normalising again makes
    the two queries weigh the same whatever the provider). With one query only, its
    normalised embedding.

    Parameters
    ----------
    z_audio, z_text : torch.Tensor, shape (B, C), optional
        Audio-reference and text-prompt embeddings (C = 512 for LAION-CLAP).

    Returns
    -------
    torch.Tensor, shape (B, C)
        Unit-length condition.
    """
    parts = [F.normalize(z, dim=-1) for z in (z_audio, z_text) if z is not None]
    if not parts:
        raise InputError(None, "query", "neither an audio nor a text embedding was given",
                         "pass z_audio, z_text or both")
    if len(parts) == 2 and parts[0].shape != parts[1].shape:
        raise InputError(None, "query", f"audio embedding {tuple(parts[0].shape)} and text embedding "
                         f"{tuple(parts[1].shape)} differ in shape", "embed both with the same CLAP model")
    return F.normalize(sum(parts) / len(parts), dim=-1)


class FiLM(nn.Module):
    """Additive FiLM: a per-channel bias computed from the condition (LASS-net's ``Film``).

    bias = ReLU(L2(ReLU(L1(cond)))), L1: cond_dim → 2·channels, L2: 2·channels → channels.
    """

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.linear = nn.Sequential(
            nn.Linear(cond_dim, 2 * channels), nn.ReLU(), nn.Linear(2 * channels, channels), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x + self.linear(cond)[:, :, None, None]


class ResConvBlock(nn.Module):
    """Pre-activation residual block: (BN → LeakyReLU → conv3×3 → FiLM) × 2, plus a shortcut.

    The shortcut is a 1×1 conv with its own FiLM when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.film1 = FiLM(out_channels, cond_dim)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.film2 = FiLM(out_channels, cond_dim)
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
            self.film_res = FiLM(out_channels, cond_dim)
            nn.init.xavier_uniform_(self.shortcut.weight)
            nn.init.zeros_(self.shortcut.bias)
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.film1(self.conv1(F.leaky_relu(self.bn1(x), 0.01)), cond)
        y = self.film2(self.conv2(F.leaky_relu(self.bn2(y), 0.01)), cond)
        residual = x if self.shortcut is None else self.film_res(self.shortcut(x), cond)
        return residual + y


class EncoderBlock(nn.Module):
    """Two residual blocks, then 2×2 average pooling; returns (pooled, skip)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.conv_block1 = ResConvBlock(in_channels, out_channels, cond_dim)
        self.conv_block2 = ResConvBlock(out_channels, out_channels, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv_block2(self.conv_block1(x, cond), cond)
        return F.avg_pool2d(skip, 2), skip


class DecoderBlock(nn.Module):
    """BN → ReLU → 3×3 transposed conv (stride 2), skip concatenation, two residual blocks.

    The transposed conv maps n → 2n + 1 on both axes; the last time frame is dropped
    (time was padded to a multiple of 2^depth) and the frequency axis, odd at every
    level, matches the skip as it is.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, bias=False)
        self.conv_block2 = ResConvBlock(2 * out_channels, out_channels, cond_dim)
        self.conv_block3 = ResConvBlock(out_channels, out_channels, cond_dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(self.bn1(x)))[:, :, :-1, :]
        x = torch.cat((x, skip), dim=1)
        return self.conv_block3(self.conv_block2(x, cond), cond)


class ResUNetFiLM(nn.Module):
    """LASS-net's ResUNet: ``depth`` encoder levels, a bottleneck, ``depth`` decoder levels.

    Input and output are (B, 1, T, F) with F - 1 a multiple of 2^depth (513 for
    n_fft 1024). As in LASS-net, the two highest bins are cut before the network (so the
    frequency axis is 2^k - 1, odd at every level) and get a logit of 0 after it.
    Time is zero-padded to a multiple of 2^depth and cropped back.

    Submodules: ``encoder_block1..depth``, ``conv_block{depth+1}`` (bottleneck),
    ``decoder_block1..depth``, ``after_conv_block1``, ``after_conv2`` (1×1 conv to the
    mask logit); LASS-net's names for depth 6.
    """

    def __init__(self, channels: tuple[int, ...], cond_dim: int):
        super().__init__()
        self.depth = len(channels)
        self.encoder_frozen = False
        ins = (1,) + tuple(channels[:-1])
        for i, (c_in, c_out) in enumerate(zip(ins, channels), start=1):
            self.add_module(f"encoder_block{i}", EncoderBlock(c_in, c_out, cond_dim))
        self.add_module(f"conv_block{self.depth + 1}", ResConvBlock(channels[-1], channels[-1], cond_dim))
        # decoder i goes from level depth-i+2 (the bottleneck for i = 1) up to level depth-i+1
        for i in range(1, self.depth + 1):
            c_in = channels[-1] if i == 1 else channels[self.depth - i + 1]
            self.add_module(f"decoder_block{i}", DecoderBlock(c_in, channels[self.depth - i], cond_dim))
        self.after_conv_block1 = ResConvBlock(channels[0], channels[0], cond_dim)
        self.after_conv2 = nn.Conv2d(channels[0], 1, 1)
        nn.init.xavier_uniform_(self.after_conv2.weight)
        nn.init.zeros_(self.after_conv2.bias)

    def encoder_modules(self) -> list[nn.Module]:
        """The encoder levels and the bottleneck (what decoder-only training freezes)."""
        return [getattr(self, f"encoder_block{i}") for i in range(1, self.depth + 1)] + [
            getattr(self, f"conv_block{self.depth + 1}")]

    def train(self, mode: bool = True) -> ResUNetFiLM:
        """As :meth:`torch.nn.Module.train`, but a frozen encoder stays in eval mode.

        That keeps its batch-norm running statistics fixed too (see :func:`freeze_encoder`).
        """
        super().train(mode)
        if self.encoder_frozen:
            for module in self.encoder_modules():
                module.eval()
        return self

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n_frames, n_bins = x.shape[2], x.shape[3]
        x = F.pad(x, (0, 0, 0, (-n_frames) % (2 ** self.depth)))[..., : n_bins - 2]
        skips = []
        for i in range(1, self.depth + 1):
            x, skip = getattr(self, f"encoder_block{i}")(x, cond)
            skips.append(skip)
        x = getattr(self, f"conv_block{self.depth + 1}")(x, cond)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"decoder_block{i}")(x, skips[-i], cond)
        x = self.after_conv2(self.after_conv_block1(x, cond))
        return F.pad(x, (0, 2))[:, :, :n_frames, :]


class Separation(NamedTuple):
    """Output of :class:`ClassNet`: the estimate and the mask that made it."""

    wave_BS: torch.Tensor
    """Separated waveform, same length as the mixture."""
    mask_BFT: torch.Tensor
    """Magnitude mask in [0, 1] applied to the mixture STFT."""


class ClassNet(nn.Module):
    """CLASS-net: condition → FiLM ResUNet → magnitude mask → separated waveform.

    Parameters
    ----------
    width : float
        Channel multiplier of every level (1.0: LASS-net's 32 … 384 channels,
        52,359,651 parameters; 0.25: 4,649,403; 0.125: 1,678,783).
    depth : int
        Encoder (and decoder) levels, 1 … 8; LASS-net has 6.
    cond_dim : int
        Size of the query embedding (512 for LAION-CLAP).
    film_dim : int
        Units of the linear + ReLU layer that maps the query to every FiLM (256).
    n_fft, hop : int
        STFT frame and hop in samples (1024 / 256 at 16 kHz, paper §4.1.1; Hann window,
        centred frames with reflect padding, unnormalised, as LASS-net's STFT).
    sample_rate : int
        Sampling rate in Hz the model expects; recorded, not resampled to.

    Notes
    -----
    ``proj`` is the 512 → 256 layer (the CLASS-net authors' name); ``unet`` is
    :class:`ResUNetFiLM`. Parameters are created from torch's default generator: wrap
    construction in ``torch.random.fork_rng()`` with a seed to make it repeatable.
    """

    def __init__(self, *, width: float = 1.0, depth: int = 6, cond_dim: int = 512, film_dim: int = 256,
                 n_fft: int = 1024, hop: int = 256, sample_rate: int = 16000):
        super().__init__()
        _check_config(width=width, depth=depth, cond_dim=cond_dim, film_dim=film_dim, n_fft=n_fft, hop=hop,
                      sample_rate=sample_rate)
        self.config = {"width": float(width), "depth": int(depth), "cond_dim": int(cond_dim),
                       "film_dim": int(film_dim), "n_fft": int(n_fft), "hop": int(hop), "sample_rate": int(sample_rate)}
        self.n_fft, self.hop, self.sample_rate, self.cond_dim = int(n_fft), int(hop), int(sample_rate), int(cond_dim)
        self.proj = nn.Linear(cond_dim, film_dim)
        self.unet = ResUNetFiLM(level_channels(width, depth), film_dim)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    # -- spectral helpers -------------------------------------------------------------
    def spectrogram(self, wave_BS: torch.Tensor) -> torch.Tensor:
        """Complex STFT (B, F, T) of a waveform (B, S), T = S // hop + 1.

        Inputs shorter than ``n_fft`` are zero-padded at the end first (reflect padding
        needs more than n_fft / 2 samples); :meth:`waveform` crops back.
        """
        n = wave_BS.shape[-1]
        if n < self.n_fft:
            wave_BS = F.pad(wave_BS, (0, self.n_fft - n))
        return torch.stft(wave_BS, self.n_fft, hop_length=self.hop, window=self.window.to(wave_BS.dtype),
                          center=True, pad_mode="reflect", return_complex=True)

    def waveform(self, X_BFT: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Inverse of :meth:`spectrogram`: (B, F, T) → (B, n_samples)."""
        padded = max(n_samples, self.n_fft)
        wave = torch.istft(X_BFT, self.n_fft, hop_length=self.hop, window=self.window.to(X_BFT.real.dtype),
                           center=True, length=padded)
        return wave[..., :n_samples]

    # -- network ------------------------------------------------------------------------
    def film_condition(self, cond_BC: torch.Tensor) -> torch.Tensor:
        """The FiLM input: ReLU(proj(cond)), (B, film_dim)."""
        return F.relu(self.proj(cond_BC))

    def predict_logits(self, mag_BFT: torch.Tensor, cond_BC: torch.Tensor) -> torch.Tensor:
        """The mask's logits (B, F, T) for a mixture magnitude (B, F, T): ``predict_mask`` is their sigmoid.

        Training's mask cross-entropy (:mod:`~studio_sep.classnet.train_loss`) is computed on
        them, so that a saturated mask still has a gradient.
        """
        logits = self.unet(mag_BFT.transpose(1, 2).unsqueeze(1), self.film_condition(cond_BC))
        return logits.squeeze(1).transpose(1, 2)

    def predict_mask(self, mag_BFT: torch.Tensor, cond_BC: torch.Tensor) -> torch.Tensor:
        """Sigmoid mask (B, F, T) in [0, 1] for a mixture magnitude (B, F, T)."""
        return torch.sigmoid(self.predict_logits(mag_BFT, cond_BC))

    def forward(self, wave_BS: torch.Tensor, cond_BC: torch.Tensor) -> Separation:
        """Separate the queried source from a mixture.

        Parameters
        ----------
        wave_BS : torch.Tensor, shape (B, S)
            Mixture at ``sample_rate``, any length S ≥ 1, on the model's device; computed
            in the model's dtype.
        cond_BC : torch.Tensor, shape (B, cond_dim)
            Query embedding, e.g. :func:`query_condition` of CLAP embeddings.

        Returns
        -------
        Separation
            ``wave_BS`` (B, S): mask · mixture STFT, mixture phase, inverse STFT;
            ``mask_BFT`` (B, F, T) in [0, 1].
        """
        wave_BS, cond_BC = self._check_inputs(wave_BS, cond_BC)
        X_BFT = self.spectrogram(wave_BS)
        mask_BFT = self.predict_mask(X_BFT.abs(), cond_BC)
        return Separation(self.waveform(mask_BFT * X_BFT, wave_BS.shape[-1]), mask_BFT)

    def _check_inputs(self, wave_BS: torch.Tensor, cond_BC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return check_separation_inputs(wave_BS, cond_BC, cond_dim=self.cond_dim, like=self.proj.weight)


def check_separation_inputs(wave_BS, cond_BC, *, cond_dim: int, like: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a separator's inputs and cast them to ``like``'s dtype.

    ``wave_BS`` must be a floating-point (batch, samples) tensor, ``cond_BC`` a
    floating-point (batch, cond_dim) tensor, both on ``like``'s device (a parameter of the
    model); raises :class:`~studio_sep.util.errors.InputError` naming the input and the fix.
    """
    if not isinstance(wave_BS, torch.Tensor) or wave_BS.ndim != 2 or wave_BS.shape[-1] < 1:
        shape = tuple(wave_BS.shape) if isinstance(wave_BS, torch.Tensor) else type(wave_BS).__name__
        raise InputError(None, "wave", f"expected a tensor of shape (batch, samples), got {shape}",
                         "pass a 2-D tensor; add a batch axis with wave[None]")
    expected = (wave_BS.shape[0], cond_dim)
    if not isinstance(cond_BC, torch.Tensor) or tuple(cond_BC.shape) != expected:
        shape = tuple(cond_BC.shape) if isinstance(cond_BC, torch.Tensor) else type(cond_BC).__name__
        raise InputError(None, "cond", f"expected shape {expected}, got {shape}",
                         "pass one query embedding per mixture in the batch")
    for name, t in (("wave", wave_BS), ("cond", cond_BC)):
        if t.device != like.device:
            raise InputError(None, name, f"is on {t.device}, the model on {like.device}",
                             "move the input (or the model) with .to(device)")
        if not t.is_floating_point():
            raise InputError(None, name, f"has dtype {t.dtype}", "pass floating-point samples")
    return wave_BS.to(like.dtype), cond_BC.to(like.dtype)


def _check_config(*, width, depth, cond_dim, film_dim, n_fft, hop, sample_rate) -> None:
    def bad(field, problem, fix):
        raise InputError(None, f"ClassNet.{field}", problem, fix)

    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        bad("width", f"must be a positive number, got {width!r}", "use e.g. 1.0 (full) or 0.25 (small)")
    if not (isinstance(depth, int) and 1 <= depth <= MAX_DEPTH):
        bad("depth", f"must be an integer in 1..{MAX_DEPTH}, got {depth!r}", "use 6 (LASS-net) or fewer")
    for field, value in (("cond_dim", cond_dim), ("film_dim", film_dim), ("hop", hop), ("sample_rate", sample_rate)):
        if not (isinstance(value, int) and value > 0):
            bad(field, f"must be a positive integer, got {value!r}", "see the ClassNet docstring for defaults")
    if not (isinstance(n_fft, int) and n_fft >= 4 and n_fft & (n_fft - 1) == 0):
        bad("n_fft", f"must be a power of two, got {n_fft!r}", "use 1024 (paper §4.1.1)")
    if (n_fft // 2) % (2 ** depth) or n_fft // 2 < 2 ** depth:
        bad("depth", f"{depth} levels need n_fft / 2 to be a multiple of 2^{depth}, n_fft is {n_fft}",
            "use fewer levels or a larger n_fft")
    if hop > n_fft:
        bad("hop", f"{hop} exceeds n_fft {n_fft}", "use n_fft / 4 (256 for n_fft 1024)")


def freeze_encoder(model: ClassNet) -> list[torch.nn.Parameter]:
    """Decoder-only fine-tuning (paper §3.4, §4.1.2): freeze the encoder and bottleneck.

    Their parameters stop requiring gradients and, because
    :meth:`ResUNetFiLM.train` keeps them in eval mode, their batch-norm running
    statistics stop updating too, so training leaves the encoder bit-identical. The
    query projection ``proj`` stays trainable: it is new in CLASS-net (LASS-net has
    none), so it starts untrained.

    Returns
    -------
    list of torch.nn.Parameter
        The parameters still trainable, to hand to the optimiser.
    """
    unet = model.unet
    for module in unet.encoder_modules():
        for p in module.parameters():
            p.requires_grad_(False)
    unet.encoder_frozen = True
    unet.train(unet.training)
    return [p for p in model.parameters() if p.requires_grad]


def chunk_weights(n_samples: int, chunk: int, overlap: int) -> list[tuple[int, torch.Tensor]]:
    """Chunk starts and cross-fade weights for overlap-add; the weights sum to 1 everywhere.

    Chunk k covers ``[k·(chunk - overlap), min(k·(chunk - overlap) + chunk, n_samples))``;
    consecutive chunks share exactly ``overlap`` samples, where one fades in with
    sin² and the other out with 1 - sin² (float64).

    Returns
    -------
    list of (start, weights) with weights a float64 tensor of the chunk's length.
    """
    if n_samples <= chunk:
        return [(0, torch.ones(n_samples, dtype=torch.float64))]
    step = chunk - overlap
    n_chunks = math.ceil((n_samples - overlap) / step)
    fade_in = torch.sin(0.5 * math.pi * (torch.arange(overlap, dtype=torch.float64) + 0.5) / max(overlap, 1)) ** 2
    out = []
    for k in range(n_chunks):
        start = k * step
        w = torch.ones(min(chunk, n_samples - start), dtype=torch.float64)
        if k > 0 and overlap:
            w[:overlap] = fade_in
        if k < n_chunks - 1 and overlap:
            w[-overlap:] = 1.0 - fade_in
        out.append((start, w))
    return out


def separate_long(model: ClassNet, wave_BS: torch.Tensor, cond_BC: torch.Tensor, *, chunk_s: float = 10.0,
                  overlap_s: float = 1.0, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Separate a mixture of any length in chunks, cross-faded by overlap-add.

    Each chunk of ``chunk_s`` seconds goes through ``model`` on its own; consecutive
    chunks overlap by ``overlap_s`` seconds, where complementary sin² / cos² weights
    (summing to 1) blend them (:func:`chunk_weights`). A mixture no longer than one
    chunk gives exactly ``model(wave_BS, cond_BC).wave_BS``. Runs without gradients
    and in eval mode (the model's mode is restored after), so the result is
    deterministic.

    Parameters
    ----------
    model : ClassNet or AudioSepNet
        Any separator with ``sample_rate``, ``_check_inputs`` and a forward pass
        returning :class:`Separation`.
    wave_BS : torch.Tensor, shape (B, S)
        Mixture at ``model.sample_rate``.
    cond_BC : torch.Tensor, shape (B, cond_dim)
        Query embedding.
    chunk_s, overlap_s : float
        Chunk length and overlap in seconds; 0 ≤ overlap_s ≤ chunk_s / 2.
    callback : callable(done, total), optional
        Called after each chunk.

    Returns
    -------
    torch.Tensor, shape (B, S)
        The separated waveform, in the model's dtype.
    """
    sr = model.sample_rate
    chunk, overlap = round(chunk_s * sr), round(overlap_s * sr)
    if not (math.isfinite(chunk_s) and chunk >= 1):
        raise InputError(None, "chunk_s", f"must be at least one sample, got {chunk_s!r}", "use e.g. 10.0")
    if not (math.isfinite(overlap_s) and 0 <= overlap <= chunk // 2):
        raise InputError(None, "overlap_s", f"must be in [0, chunk_s / 2] = [0, {chunk_s / 2:g}], got {overlap_s!r}",
                         "use e.g. 1.0 with chunk_s 10.0")
    wave_BS, cond_BC = model._check_inputs(wave_BS, cond_BC)
    if not bool(torch.isfinite(wave_BS).all()):
        raise InputError(None, "wave", "contains NaN or infinite samples", "clean or re-render the input audio")
    plan = chunk_weights(wave_BS.shape[-1], chunk, overlap)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.zeros_like(wave_BS)
            for k, (start, w) in enumerate(plan):
                piece = model(wave_BS[:, start:start + w.numel()], cond_BC).wave_BS
                out[:, start:start + w.numel()] += piece * w.to(device=out.device, dtype=out.dtype)
                if callback is not None:
                    callback(k + 1, len(plan))
    finally:
        model.train(was_training)
    return out


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors of a state dict: name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()
