"""AudioSep's released checkpoint → :class:`~studio_sep.classnet.audiosep.AudioSepNet`.

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

Source: Audio-AGI/AudioSep (MIT) ``models/audiosep.py``, ``utils.py`` (``load_ss_model``)
and torchlibrosa 0.1.0's ``STFT`` / ``ISTFT`` (whose tensors the file carries), read at
AudioSep commit 72777de.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from studio_sep.classnet.audiosep import N_FFT, AudioSepNet
from studio_sep.util.errors import InputError

LAYOUT = "audiosep"
SEPARATOR_PREFIX = "ss_model."
QUERY_PREFIX = "query_encoder."
#: The torchlibrosa STFT / ISTFT tensors of ``ss_model.base`` (fixed; computed here instead).
FRONT_END_KEYS = ("base.stft.conv_real.weight", "base.stft.conv_imag.weight", "base.istft.conv_real.weight",
                  "base.istft.conv_imag.weight", "base.istft.ola_window")
#: CLAP tensors compared between the checkpoint's frozen query encoder and the CLAP file.
CLAP_CHECK_PREFIXES = ("text_projection.", "audio_projection.", "logit_scale_a", "logit_scale_t")
_FIX = "use AudioSep's audiosep_base_4M_steps.ckpt as released (config/audiosep_base.yaml: ResUNet30)"


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
