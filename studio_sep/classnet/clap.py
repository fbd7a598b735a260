"""LAION-CLAP queries for CLASS-net, loaded from local files only (paper §4.1.2).

:class:`ClapQuery` embeds text prompts and audio references with LAION-CLAP
(``laion-clap==1.1.7``, HTSAT-base audio encoder + RoBERTa-base text encoder, no feature
fusion, e.g. ``music_audioset_epoch_15_esc_90.14.pt``) and combines them into the
CLASS-net condition with :func:`~studio_sep.classnet.model.query_condition` (eq. 17).
It fits the ``QueryEncoder`` protocol (``name``, ``sha256``, ``condition``).

Files
-----
Two things are needed, each found by explicit argument, then environment variable,
then the config file (``$XDG_CONFIG_HOME/studio-sep/clap.toml``, by default
``~/.config/studio-sep/clap.toml``; relative paths in it resolve against the file):

================  =========================  ==============================  ============
what              option                     environment variable            config key
================  =========================  ==============================  ============
CLAP checkpoint   ``--clap-checkpoint``      ``STUDIO_SEP_CLAP_CHECKPOINT``  ``checkpoint``
RoBERTa files     ``--roberta-dir``          ``STUDIO_SEP_ROBERTA_DIR``      ``roberta``
================  =========================  ==============================  ============

The RoBERTa folder holds ``vocab.json``, ``merges.txt`` and ``config.json`` of
``roberta-base``: either those files themselves or a Hugging Face cache folder
(``models--roberta-base``, or the hub cache holding it; a snapshot with the files is
used). The text-branch weights are in the CLAP checkpoint, so the RoBERTa weights are
not needed. Nothing is ever downloaded.

What this module does around laion-clap 1.1.7, and why (all measured here)
--------------------------------------------------------------------------
- ``import laion_clap`` runs ``laion_clap/training/data.py``, which builds BERT, RoBERTa
  and BART tokenizers from the Hugging Face hub at import time: online it hangs for
  minutes in retries without network, offline it fails (no ``bert-base-uncased`` files).
  So the package is never imported: only its ``clap_module`` subpackage (the model), by
  file location under a private module name. ``HF_HUB_OFFLINE=1`` and
  ``TRANSFORMERS_OFFLINE=1`` are set in the process environment before transformers
  is imported, so that nothing reached through transformers can try the network.
- ``CLAP.__init__`` calls ``RobertaModel.from_pretrained('roberta-base')`` (a download);
  while the model is built, the private module's ``RobertaModel`` is replaced by a
  stand-in whose ``from_pretrained`` builds ``RobertaModel(RobertaConfig)`` from the local
  ``config.json`` with random weights, which the checkpoint then overwrites (strict load).
- Offline and without files, transformers' tokenizers fall back silently (a 5-token
  tokenizer in some versions: every prompt the same embedding) or fail obscurely; the
  vocabulary is checked to be RoBERTa-base's 50,265 tokens before and after loading.
- ``clap_module`` imports torchvision (``transform.py``: image transforms;
  ``utils.py``: ``FrozenBatchNorm2d``), which laion-clap does not declare and whose PyPI
  build does not load beside the CPU torch (``operator torchvision::nms does not exist``).
  Neither name is used on the audio/text path (image preprocessing and batch-norm
  freezing are for training / the vision towers; ``Resize`` is only in the fusion path,
  which HTSAT-base without fusion never takes). When ``import torchvision`` fails, stand-in
  modules providing exactly those names (each raises if called) are registered for the
  duration of the import, then removed.
- ``CLAP_Module.load_ckpt()`` without a path downloads; laion-clap's ``load_state_dict``
  unpickles arbitrary objects and fails on a checkpoint without ``position_ids``. The
  checkpoint is read here instead, with ``torch.load(weights_only=True)``; the
  ``module.`` prefix and the ``text_branch.embeddings.position_ids`` buffer (persistent
  in the transformers that trained CLAP, not in recent ones) are handled explicitly.
- The audio encoder works at 48 kHz on 10 s clips (480,000 samples); the references are
  16 kHz. :func:`prepare_reference` crops the centre 10 s (CLAP itself crops long clips
  at a random place), resamples 16 → 48 kHz (polyphase, ×3), pads short clips by
  repetition as CLAP's ``repeatpad`` does (whole repeats, then zeros) and applies CLAP's
  int16 quantisation, so the embedding of a reference is deterministic.

laion-clap pins ``numpy < 2``, as the project does. Install: ``pip install
'studio-sep[clap]'`` with torch installed first (see pyproject's ``clap`` extra).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from studio_sep.classnet.clap_files import (  # noqa: F401 - part of this module's interface
    CHECKPOINT_ENV,
    CHECKPOINT_OPTION,
    CONFIG_KEYS,
    ROBERTA_ENV,
    ROBERTA_FILES,
    ROBERTA_OPTION,
    ROBERTA_VOCAB_SIZE,
    ClapFiles,
    check_vocab,
    default_config_path,
    resolve_clap_files,
)
from studio_sep.classnet.model import query_condition
from studio_sep.dsp.resample import resample
from studio_sep.util.atomic import file_sha256
from studio_sep.util.errors import InputError

#: Sample rate of the references given to :meth:`ClapQuery.condition` (CLASS-net's rate).
REFERENCE_RATE_HZ = 16000
#: LAION-CLAP's audio rate and clip length (HTSAT ``clip_samples``).
CLAP_RATE_HZ = 48000
CLAP_CLIP_SAMPLES = 480000
#: Tokens per prompt (CLAP_Module.tokenizer: padded / truncated to 77).
CLAP_CONTEXT_TOKENS = 77
#: Embedding size of LAION-CLAP (``joint_embed_shape``).
CLAP_EMBED_DIM = 512
AUDIO_MODEL = "HTSAT-base"
TEXT_MODEL = "roberta"

_POSITION_IDS = "text_branch.embeddings.position_ids"
_TORCHVISION_NAMES = {
    # module -> names laion_clap's clap_module imports from it (none is used on the audio/text path)
    "torchvision.transforms": ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor",
                               "Resize", "CenterCrop"),
    "torchvision.datasets": (),
    "torchvision.ops": (),
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
}
_CLAP_MODULE_NAME = "_studio_sep_laion_clap_module"
_import_lock = threading.Lock()
_build_lock = threading.Lock()


def load_roberta_tokenizer(folder: str | os.PathLike):
    """roberta-base's tokenizer from local files, checked to have its 50,265 tokens.

    Raises
    ------
    InputError
        ``vocab.json`` is unreadable or is not roberta-base's (checked before transformers
        sees it, and the loaded tokenizer is checked again).
    """
    folder = Path(folder)
    try:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(folder / "vocab.json", None, f"cannot read the RoBERTa vocabulary: {exc}",
                         "supply the vocab.json of roberta-base") from None
    check_vocab(folder, len(vocab) if isinstance(vocab, dict) else 0)
    _require("transformers")
    _set_offline()
    from transformers import RobertaTokenizer

    tokenizer = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)
    check_vocab(folder, len(tokenizer))
    return tokenizer


def _require(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise InputError(None, "clap", f"{package} is not installed (needed for CLAP queries)",
                         "pip install 'studio-sep[clap]' (see pyproject.toml's clap extra)")


def _set_offline() -> None:
    """Make Hugging Face libraries never touch the network (before they are imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported earlier by someone else: the variable was already read
        constants.HF_HUB_OFFLINE = True


def _torchvision_stand_ins() -> dict[str, types.ModuleType]:
    """Modules with the torchvision names clap_module imports; each raises if used."""

    class _Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is not installed: laion_clap's image/fusion code is not "
                               "available "
                               "(studio-sep uses the non-fusion audio and text path only)")

    modules = {}
    for name in ("torchvision", *_TORCHVISION_NAMES):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        for attr in _TORCHVISION_NAMES.get(name, ()):
            setattr(module, attr, type(attr, (_Unavailable,), {}))
        modules[name] = module
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules


def clap_module() -> types.ModuleType:
    """laion_clap's ``clap_module`` subpackage, imported without ``laion_clap/__init__``.

    Raises
    ------
    InputError
        laion-clap or transformers is not installed.
    """
    with _import_lock:
        if _CLAP_MODULE_NAME in sys.modules:
            return sys.modules[_CLAP_MODULE_NAME]
        _require("transformers")
        _require("laion_clap")
        spec = importlib.util.find_spec("laion_clap")
        folder = Path(next(iter(spec.submodule_search_locations))) / "clap_module"
        _set_offline()
        import transformers  # noqa: F401  (first, so its torchvision probe sees the real state)

        stand_ins = {}
        try:
            import torchvision  # noqa: F401
        except Exception:  # ImportError, or the CPU/CUDA operator mismatch (RuntimeError)
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
            stand_ins = _torchvision_stand_ins()
            sys.modules.update(stand_ins)
        module_spec = importlib.util.spec_from_file_location(
            _CLAP_MODULE_NAME, folder / "__init__.py", submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[_CLAP_MODULE_NAME] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            for name in [n for n in sys.modules if n.startswith(_CLAP_MODULE_NAME)]:
                del sys.modules[name]
            raise
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
        return module


def build_clap_model(roberta_dir: str | os.PathLike) -> torch.nn.Module:
    """LAION-CLAP HTSAT-base + RoBERTa (no fusion) with random weights, built offline.

    The text branch is ``RobertaModel(RobertaConfig.from_pretrained(roberta_dir))``
    instead of laion-clap's ``RobertaModel.from_pretrained('roberta-base')``. Returns
    laion-clap's ``CLAP`` module in eval mode on the CPU.
    """
    _set_offline()
    from transformers import RobertaConfig, RobertaModel

    clap = clap_module()
    model_module = sys.modules[f"{_CLAP_MODULE_NAME}.model"]
    config = RobertaConfig.from_pretrained(str(roberta_dir), local_files_only=True)

    class LocalRoberta:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            return RobertaModel(config)

    with _build_lock:
        original = model_module.RobertaModel
        model_module.RobertaModel = LocalRoberta
        try:
            model, _ = clap.create_model(AUDIO_MODEL, TEXT_MODEL, precision="fp32",
                                         device=torch.device("cpu"),
                                         enable_fusion=False)
        finally:
            model_module.RobertaModel = original
    return model.eval()


def _load_state(model: torch.nn.Module, path: Path) -> None:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file
        raise InputError(path, None, f"cannot read the CLAP checkpoint with torch.load(weights_only=True): "
                         f"{str(exc).splitlines()[0]}",
                         "re-save only its weights: torch.save({'state_dict': torch.load(path, "
                         "weights_only=False)['state_dict']}, new_path)") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise InputError(path, None, "not a CLAP checkpoint (no state dict)",
                         "supply a LAION-CLAP .pt file such as music_audioset_epoch_15_esc_90.14.pt")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if _POSITION_IDS in state and _POSITION_IDS not in model.state_dict():
        del state[_POSITION_IDS]  # a persistent buffer in older transformers, recomputed in recent ones
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        keys = result.missing_keys or result.unexpected_keys
        kind = "missing" if result.missing_keys else "unexpected"
        raise InputError(path, None, f"not a {AUDIO_MODEL} / RoBERTa LAION-CLAP checkpoint without fusion: "
                         f"{len(keys)} {kind} weights, e.g. {keys[0]}",
                         "supply a non-fusion HTSAT-base checkpoint such as "
                         "music_audioset_epoch_15_esc_90.14.pt")


def prepare_reference(wave_S: torch.Tensor, *, sample_rate_hz: int = REFERENCE_RATE_HZ) -> torch.Tensor:
    """A reference as LAION-CLAP's audio encoder takes it: 10 s at 48 kHz.

    Long references keep their centre 10 s (CLAP crops at a random place); the clip
    is resampled to 48 kHz with a polyphase filter (``sample_rate_hz`` must divide
    48,000); short clips are then repeated whole and padded with zeros (CLAP's
    ``repeatpad``); last, CLAP's int16 quantisation (clip to [-1, 1], round to 1/32767).

    Parameters
    ----------
    wave_S : torch.Tensor, shape (S,)
        Mono reference, float, any length ≥ 1, at ``sample_rate_hz``.
    sample_rate_hz : int
        Rate of ``wave_S`` (16 kHz, CLASS-net's rate, by default).

    Returns
    -------
    torch.Tensor, shape (480000,), float32
        On the CPU.
    """
    if CLAP_RATE_HZ % sample_rate_hz:
        raise InputError(None, "sample_rate_hz", f"{sample_rate_hz} Hz does not divide {CLAP_RATE_HZ} Hz",
                         "resample the reference to 16 kHz")
    up = CLAP_RATE_HZ // sample_rate_hz
    keep = -(-CLAP_CLIP_SAMPLES // up)
    x_S = wave_S.detach().to("cpu", torch.float64).numpy()
    if x_S.shape[0] > keep:
        start = (x_S.shape[0] - keep) // 2
        x_S = x_S[start:start + keep]
    y_S = resample(x_S, sample_rate_hz, CLAP_RATE_HZ, n_samples=min(x_S.shape[0] * up, CLAP_CLIP_SAMPLES))
    if y_S.shape[0] < CLAP_CLIP_SAMPLES:
        y_S = np.tile(y_S, CLAP_CLIP_SAMPLES // y_S.shape[0])
        y_S = np.pad(y_S, (0, CLAP_CLIP_SAMPLES - y_S.shape[0]))
    y_S = np.round(np.clip(y_S, -1.0, 1.0) * 32767.0) / 32767.0
    return torch.from_numpy(y_S.astype(np.float32))


class ClapQuery:
    """LAION-CLAP text and audio queries, combined into the CLASS-net condition (eq. 17).

    Parameters
    ----------
    checkpoint : path-like, optional
        The LAION-CLAP checkpoint (HTSAT-base, no fusion), else ``STUDIO_SEP_CLAP_CHECKPOINT``,
        else the config file's ``checkpoint``.
    roberta : path-like, optional
        The roberta-base tokenizer folder or Hugging Face cache folder, else
        ``STUDIO_SEP_ROBERTA_DIR``, else the config file's ``roberta``.
    config_path : path-like, optional
        The config file (:func:`default_config_path` when not given).
    device : str or torch.device
        Where the CLAP model runs (chosen by the caller).
    batch_size : int
        Prompts or references embedded per forward pass.

    Attributes
    ----------
    name : str
        ``"clap"``.
    sha256 : str
        SHA-256 of the checkpoint file.
    files : ClapFiles
        The resolved files and where each setting came from.

    Raises
    ------
    InputError
        A file is missing or is not what it should be, or laion-clap is not installed.
    """

    name = "clap"

    def __init__(self, checkpoint: str | os.PathLike | None = None,
                 roberta: str | os.PathLike | None = None, *,
                 config_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 8):
        if batch_size < 1:
            raise InputError(None, "batch_size", f"must be ≥ 1, got {batch_size}",
                             "pass a positive batch size")
        self.files = resolve_clap_files(checkpoint, roberta, config_path=config_path)
        _require("transformers")
        _require("laion_clap")
        self.tokenizer = load_roberta_tokenizer(self.files.roberta_dir)
        model = build_clap_model(self.files.roberta_dir)
        _load_state(model, self.files.checkpoint)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.sha256 = file_sha256(self.files.checkpoint)

    @torch.inference_mode()
    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-length CLAP text embeddings, shape (N, 512), float32 on the CPU."""
        parts = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(list(prompts[i:i + self.batch_size]), padding="max_length",
                                    truncation=True,
                                    max_length=CLAP_CONTEXT_TOKENS, return_tensors="pt")
            parts.append(self.model.get_text_embedding(dict(tokens)).float().cpu())
        return torch.cat(parts) if parts else torch.zeros(0, CLAP_EMBED_DIM)

    @torch.inference_mode()
    def embed_audio(self, references: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unit-length CLAP audio embeddings of 16 kHz mono references, shape (N, 512), on the CPU."""
        parts = []
        for i in range(0, len(references), self.batch_size):
            batch = [{"longer": torch.tensor([False]), "waveform": prepare_reference(x)}
                     for x in references[i:i + self.batch_size]]
            parts.append(self.model.get_audio_embedding(batch).float().cpu())
        return torch.cat(parts) if parts else torch.zeros(0, CLAP_EMBED_DIM)

    def condition(self, prompts: Sequence[str | None],
                  references: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """The CLASS-net condition of each item from its prompt and/or reference (eq. 17).

        Parameters
        ----------
        prompts : sequence of str or None, length B
            Text queries (``None``: no text for that item).
        references : sequence of torch.Tensor or None, length B
            Mono 16 kHz float references of shape (S,), any length (``None``: no audio).

        Returns
        -------
        torch.Tensor, shape (B, 512), float32 on the CPU
            Unit length; the normalised mean of the normalised text and audio embeddings
            where an item has both.
        """
        if len(prompts) != len(references):
            raise InputError(None, "query", f"{len(prompts)} prompts but {len(references)} references",
                             "give one prompt (or None) and one reference (or None) per item")
        for b, (prompt, ref) in enumerate(zip(prompts, references)):
            if prompt is None and ref is None:
                raise InputError(None, f"query[{b}]", "neither a prompt nor a reference", "give one or both")
            if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
                raise InputError(None, f"query[{b}].prompt", f"expected non-empty text, got {prompt!r}",
                                 "pass None for no text")
            if ref is not None and (not isinstance(ref, torch.Tensor) or ref.ndim != 1 or ref.numel() == 0
                                    or not ref.is_floating_point() or not bool(torch.isfinite(ref).all())):
                shape = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__
                raise InputError(None, f"query[{b}].reference",
                                 f"expected a finite 1-D float tensor, got {shape}",
                                 "pass mono 16 kHz audio of shape (S,) with S ≥ 1")
        text_items = [b for b, p in enumerate(prompts) if p is not None]
        audio_items = [b for b, r in enumerate(references) if r is not None]
        z_text = dict(zip(text_items, self.embed_text([prompts[b] for b in text_items])))
        z_audio = dict(zip(audio_items, self.embed_audio([references[b] for b in audio_items])))
        rows = [query_condition(z_audio[b][None] if b in z_audio else None,
                                z_text[b][None] if b in z_text else None)
                for b in range(len(prompts))]
        return torch.cat(rows)
