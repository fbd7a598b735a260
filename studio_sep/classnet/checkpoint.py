"""CLASS-net checkpoints: the project's own format, and foreign layouts as initialisation.

Own format: one file holding the model's name, its constructor arguments (JSON), its
weights and the SHA-256 of those weights; never a pickled class. Two containers carry
the same content and the same checksum:

- ``.safetensors``: the state dict as tensors, and in the header metadata
  ``format`` (``studio-sep.classnet/1``), ``model``, ``kwargs`` (JSON) and ``sha256``;
- ``.pt`` / ``.pth``: ``torch.save`` of a dict of plain types ``{"format", "model",
  "kwargs", "sha256", "state_dict"}``, read back with ``torch.load(weights_only=True)``.

The checksum (:func:`weights_sha256`) covers every tensor's name, dtype, shape and
bytes in key order, so it does not depend on the container.

Foreign layouts (:func:`load_foreign_state`), mapped by key filtering. These files
could not be downloaded here; the layouts are read from the public source code that
writes them, and the tests build state dicts with the same keys:

``"lass"``
    LASS-net's ``LASSNet.pt`` (liuxubo717/LASS): ``{"model": state_dict}`` of an
    ``nn.DataParallel(LASSNet)``, keys ``module.UNet.<ResUNet key>`` (the separation
    network, LASS-net's ``UNetRes_FiLM``, whose module names this package keeps) and
    ``module.text_embedder.*`` (its BERT text encoder, skipped). A plain state dict or
    one under ``"state_dict"``, with or without ``module.``, is accepted too. LASS-net
    has no 512 → 256 query projection: ``proj`` keeps its initial values.
``"authors"``
    The CLASS-net authors' ``LASS_clap`` (loguerci/LASS_PAM, ``train.py``):
    ``best.pth`` / ``ckpt_epoch_N.pth`` = ``{"epoch", "model_state_dict",
    "optimizer_state_dict", "best_val_loss"}``, ``final.pth`` = the bare state dict;
    keys ``UNet.*`` (the ResUNet), ``proj.weight`` / ``proj.bias`` (the 512 → 256
    layer) and ``clap_conditioner.clap.*`` (frozen LAION-CLAP, skipped).

Both are read with ``torch.load(weights_only=True)`` (or safetensors); a file that
needs arbitrary unpickling is refused with the way to re-save it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import safetensors
import safetensors.torch
import torch

from studio_sep.classnet.model import ClassNet, weights_sha256
from studio_sep.classnet.query import QueriedClassNet
from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import InputError

FORMAT = "studio-sep.classnet/1"
#: Model classes a checkpoint may name.
MODELS: dict[str, type[torch.nn.Module]] = {"ClassNet": ClassNet, "QueriedClassNet": QueriedClassNet}
LAYOUTS = ("lass", "authors")

# where each layout keeps its state dict, and which of its key prefixes map to ours
_CONTAINERS = {"lass": ("model", "state_dict"), "authors": ("model_state_dict", "state_dict", "model")}
_PREFIXES = {"lass": {"UNet.": "unet."}, "authors": {"UNet.": "unet.", "proj.": "proj."}}
_TORCH_SUFFIXES = (".pt", ".pth")
_SAFETENSORS_ERRORS = (safetensors.SafetensorError, OSError, ValueError, RuntimeError)


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the model (in eval mode, on ``map_location``) and what made it."""

    model: torch.nn.Module
    name: str
    kwargs: dict
    sha256: str


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> str:
    """Write ``model`` to ``path`` in the project's format; returns the weights' SHA-256.

    The container follows the suffix: ``.safetensors``, or ``.pt`` / ``.pth`` for a
    weights-only torch file. The file is written atomically.
    """
    path = Path(path)
    name = type(model).__name__
    if MODELS.get(name) is not type(model):
        raise InputError(path, "model", f"{name} is not a checkpointable model", f"use one of {sorted(MODELS)}")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    sha = weights_sha256(state)
    meta = {"format": FORMAT, "model": name, "kwargs": json.dumps(model.config, sort_keys=True), "sha256": sha}
    suffix = path.suffix.lower()
    if suffix not in (".safetensors",) + _TORCH_SUFFIXES:
        raise InputError(path, None, f"unknown checkpoint suffix {path.suffix!r}",
                         "name the file *.safetensors (preferred) or *.pt")
    with atomic_path(path) as tmp:
        if suffix == ".safetensors":
            safetensors.torch.save_file(state, str(tmp), metadata=meta)
        else:
            torch.save({**meta, "state_dict": state}, tmp)
    return sha


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and rebuild its model.

    The weights' SHA-256 is recomputed and must match the stored one. Raises
    :class:`~studio_sep.util.errors.InputError` (one line naming the file and the fix) for a
    missing, unreadable, foreign, tampered or inconsistent file.
    """
    path = Path(path)
    meta, state = _read_own(path)
    for key in ("model", "kwargs", "sha256"):
        if not isinstance(meta.get(key), str):
            raise InputError(path, key, "missing from the checkpoint", "re-save the model with save_checkpoint")
    cls = MODELS.get(meta["model"])
    if cls is None:
        raise InputError(path, "model", f"unknown model {meta['model']!r}",
                         f"this version knows {sorted(MODELS)}; update studio-sep")
    sha = weights_sha256(state)
    if sha != meta["sha256"]:
        raise InputError(path, None, f"weights checksum mismatch (stored {meta['sha256'][:12]}…, computed "
                         f"{sha[:12]}…)", "the file is damaged or was edited: copy it again or re-save the model")
    try:
        kwargs = json.loads(meta["kwargs"])
        model = cls(**kwargs)
    except (ValueError, TypeError, InputError) as exc:
        raise InputError(path, "kwargs", f"cannot build {meta['model']}: {_one_line(exc)}",
                         "the file comes from an incompatible studio-sep version; re-save it") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(path, "weights", f"do not fit {meta['model']}({meta['kwargs']}): {_one_line(exc)}",
                         "re-save the model with save_checkpoint") from None
    return Checkpoint(model.to(map_location).eval(), meta["model"], kwargs, sha)


def average_checkpoints(paths, out: str | os.PathLike) -> str:
    """Write to ``out`` the mean of the weights of several checkpoints of one model
    (the same class and configuration: points of one training run, as in stochastic
    weight averaging); returns its SHA-256.

    Floating-point tensors are averaged in float64 and stored in their own dtype; BatchNorm's
    running statistics are averaged like the weights (not recomputed); integer tensors (the
    batch counters) are taken from the last checkpoint. Each input is read and verified by
    :func:`load_checkpoint`; a checkpoint of another model or configuration is refused.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise InputError(Path(out), None, f"{len(paths)} checkpoint(s) to average", "give two or more")
    first = load_checkpoint(paths[0])
    total = {k: v.double() if v.is_floating_point() else v for k, v in first.model.state_dict().items()}
    for path in paths[1:]:
        ckpt = load_checkpoint(path)
        if (ckpt.name, ckpt.kwargs) != (first.name, first.kwargs):
            raise InputError(path, "kwargs", f"is {ckpt.name}({json.dumps(ckpt.kwargs, sort_keys=True)}), not "
                             f"{paths[0].name}'s {first.name}({json.dumps(first.kwargs, sort_keys=True)})",
                             "average checkpoints of one training run only")
        for k, v in ckpt.model.state_dict().items():
            total[k] = total[k] + v.double() if v.is_floating_point() else v
    state = first.model.state_dict()
    first.model.load_state_dict({k: (v / len(paths)).to(state[k].dtype) if state[k].is_floating_point() else v
                                 for k, v in total.items()}, strict=True)
    return save_checkpoint(first.model, out)


@dataclass(frozen=True)
class ForeignLoad:
    """What :func:`load_foreign_state` did.

    Attributes
    ----------
    loaded : tuple of str
        The model's keys that received a tensor.
    skipped : dict of str to str
        Each foreign key that was not used, with the reason.
    missing : tuple of str
        The model's keys the file did not provide (they keep their values).
    """

    loaded: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


def load_foreign_state(model: ClassNet, path_or_state: str | os.PathLike | Mapping, *,
                       layout: str = "lass") -> ForeignLoad:
    """Initialise ``model`` in place from a LASS-net or a CLASS-net-authors checkpoint.

    Keys are mapped by prefix (see the module docstring for each layout); a key whose
    target does not exist in ``model`` or whose shape differs is skipped with the
    reason, and every model key the file does not provide keeps its value. Nothing is
    loaded unless at least one key maps.

    Parameters
    ----------
    model : ClassNet
    path_or_state : path-like or mapping
        A checkpoint file (torch, read weights-only, or safetensors) or an already
        loaded object of the same layout.
    layout : {"lass", "authors"}

    Returns
    -------
    ForeignLoad
    """
    if layout not in LAYOUTS:
        raise InputError(None, "layout", f"unknown layout {layout!r}", f"use one of {LAYOUTS}")
    where = None if isinstance(path_or_state, Mapping) else Path(path_or_state)
    obj = path_or_state if where is None else _read_foreign(where)
    foreign = _find_state(obj, layout)
    if foreign is None:
        raise InputError(where, None, f"no state dict in the places the {layout!r} layout keeps one "
                         f"({', '.join(_CONTAINERS[layout])}, or top level)",
                         "check the file and the layout argument")
    own = model.state_dict()
    new, loaded, skipped = dict(own), [], {}
    for key, value in foreign.items():
        target = _map_key(key, layout)
        if target is None:
            skipped[key] = "not part of the separation network"
        elif target not in own:
            skipped[key] = f"no {target} in this model (different depth?)"
        elif tuple(value.shape) != tuple(own[target].shape):
            skipped[key] = f"shape {tuple(value.shape)} ≠ {tuple(own[target].shape)} (different width?)"
        else:
            new[target] = value.detach().to(device=own[target].device, dtype=own[target].dtype)
            loaded.append(target)
    if not loaded:
        raise InputError(where, None, f"no key fits this model in the {layout!r} layout "
                         f"({len(foreign)} keys, e.g. {next(iter(foreign), '-')!r})",
                         "check the layout argument and the model's width and depth")
    model.load_state_dict(new, strict=True)
    done = set(loaded)
    return ForeignLoad(tuple(loaded), skipped, tuple(k for k in own if k not in done))


# -- reading ------------------------------------------------------------------------------
def _read_own(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    kind = _file_kind(path)
    not_ours = ("not a studio-sep checkpoint",
                ("--prior-model also takes AudioSep's audiosep_base_4M_steps.ckpt; load LASS-net or "
                 "CLASS-net-authors files with load_foreign_state(model, path, layout=...)"))
    if kind == "safetensors":
        try:
            with safetensors.safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except _SAFETENSORS_ERRORS as exc:
            raise InputError(path, None, f"unreadable safetensors file: {_one_line(exc)}",
                             "copy the file again or re-save the model") from None
    else:
        obj = _torch_load(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
            raise InputError(path, None, *not_ours)
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        state = obj["state_dict"]
    if meta.get("format") != FORMAT:
        raise InputError(path, None, *not_ours)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "state_dict", "holds non-tensor values", "re-save the model with save_checkpoint")
    return meta, state


def _read_foreign(path: Path):
    if _file_kind(path) == "safetensors":
        try:
            return safetensors.torch.load_file(str(path))
        except _SAFETENSORS_ERRORS as exc:
            raise InputError(path, None, f"unreadable safetensors file: {_one_line(exc)}",
                             "copy the file again") from None
    return _torch_load(path)


def _torch_load(path: Path, *, mmap: bool = False,
                resave: str = "torch.save(torch.load(p, weights_only=False)['model'], out)"):
    """``torch.load(weights_only=True)`` on the CPU, with one-line errors; ``mmap`` maps the
    file instead of reading it (zip-format files; others are read); ``resave`` is the
    re-save command the error for pickled objects suggests."""
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, ValueError, pickle.UnpicklingError, OSError, EOFError, KeyError,
                safetensors.SafetensorError):
            pass  # not zip-format (or damaged): the plain load below says which
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickle of allowed types at all: a damaged or foreign file
            raise InputError(path, None, f"unreadable torch file: {_one_line(exc)[:160]}",
                             "copy the file again") from None
        raise InputError(path, None, f"holds pickled Python objects ({found.group(1)}), which a weights-only "
                         "load refuses", f"in an environment you trust, re-save only its tensors, e.g. {resave}") from None
    # damaged or truncated files (torch.load reads a file named *.safetensors with safetensors)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, safetensors.SafetensorError) as exc:
        raise InputError(path, None, f"unreadable torch file: {_one_line(exc)[:160]}", "copy the file again") from None


def _file_kind(path: Path) -> str:
    """"safetensors" or "torch", from the first bytes (safetensors: u64 header size, then '{')."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise InputError(path, None, "no such checkpoint file", "check the path") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror}", "check the path and its permissions") from None
    if len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK"):
        return "safetensors"
    return "torch"


def _find_state(obj, layout: str) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, Mapping):
        return None
    for key in _CONTAINERS[layout]:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return tensors or None


def _map_key(key: str, layout: str) -> str | None:
    key = key.removeprefix("module.")  # nn.DataParallel / DistributedDataParallel
    for prefix, ours in _PREFIXES[layout].items():
        if key.startswith(prefix):
            return ours + key[len(prefix):]
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
