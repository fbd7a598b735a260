"""Training CLASS-net on the augmentation data set: full or decoder-only, resumable.

Data: the folder written by :mod:`studio_sep.data.dataset` (format ``studio-sep.augment/1``)::

    DATA/dataset.json                 {"format", "sample_rate": 16000, "classes", "splits": {...}, ...}
    DATA/<split>/<id>.json            {"id": "000012", "prompt": "violin", "class": "violin", ...}
    DATA/<split>/<id>_mixture.wav     mono float WAV, 16 kHz (10 s); also _target.wav, _reference.wav

read by :func:`read_dataset_index` (through :func:`studio_sep.data.dataset.load_dataset_index`).

Loss (:mod:`studio_sep.classnet.train_loss`): the paper's eq. 18 (mean absolute error
between the estimate's magnitude ``mask · |X|`` and the target's ``|STFT(target)|``)
plus ``sdr_weight`` × the negative SDR of the estimate's waveform, so that an all-zero
mask is never a minimum (``sdr_weight=0``: eq. 18 alone), plus ``mask_bce_weight`` × the
cross-entropy of the mask's logits against the ideal ratio mask, whose gradient does not
vanish when the sigmoid saturates (a collapsed class is pulled back). Batches are class-balanced
(``balance="class"``: every target class drawn equally often;
:func:`~studio_sep.classnet.train_data.batch_indices`). Validation, on the
full-length validation examples: SDR, SI-SDR of the estimate and of the mixture, per
class and overall; SDRi = SDR − SDR(mixture), SI-SDRi likewise; the worst class (lowest
SDRi) and the collapsed classes (estimates in median 20 dB below their targets).
``best`` is the validation with the fewest collapsed classes, then the highest
worst-class SDRi (:func:`~studio_sep.classnet.train_loss.selection_key`).

Output folder (:func:`train`)::

    OUT/last.safetensors   the latest model (save_checkpoint), every checkpoint_every steps and at the end
    OUT/best.safetensors   the best model so far (no collapsed class, highest worst-class SDRi)
    OUT/history.json       {"format", "settings", "history": [{step, epoch, train_loss, train_mae, train_sdr,
                           train_bce, val_loss, sdr, sdri, si_sdr, si_sdr_mixture, si_sdri, per_class, worst_class,
                           worst_sdri, collapsed}, ...], "best": {step, worst_sdri, ...}}
    OUT/train_state.pt     torch.save of plain types: settings, step, model and optimiser state,
                           history, best; read with weights_only=True. Resuming reads only this file,
                           so a run stopped at any moment continues from its last checkpoint exactly.

Every random choice of a step (the examples of its batch, the crop positions, which
queries are kept) comes from a generator seeded by (seed, step): no generator state
has to be saved (the network has no dropout; batch-norm statistics are in the model
state), and a resumed run draws exactly what an uninterrupted one draws: on CPU with
the same thread count its weights equal an uninterrupted run's to the bit. A run can
be split over sessions in chunks (``chunk_steps``: at most that many steps per call).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio_sep.classnet.checkpoint import MODELS, load_checkpoint, save_checkpoint
from studio_sep.classnet.model import ClassNet, freeze_encoder
from studio_sep.classnet.query import QueriedClassNet, QueryEncoder, prompt_class
from studio_sep.classnet.train_data import (
    DatasetIndex,
    Example,
    batch_indices,
    n_frames,
    read_wave,
    timbre_eq,
    training_index,
)
from studio_sep.classnet.train_loss import (
    MASK_BCE_WEIGHT,
    SDR_WEIGHT,
    estimate_and_loss,
    example_scores,
    finite_mean,
    magnitude_mae,
    sdr,
    selection_key,
    separation_loss,
    validation_scores,
)
from studio_sep.util.atomic import atomic_path, write_text_atomic
from studio_sep.classnet.train_settings import check_settings
from studio_sep.util.errors import InputError
from studio_sep.util.jsonfile import dumps_json

STATE_FORMAT = "studio-sep.classnet-train/1"
#: Query kept per training example, drawn uniformly: both (eq. 17), text only, reference only.
#: Training all three lets one model serve prompts, references or both.
QUERY_VARIANTS = ("both", "text", "reference")
#: Settings added after the first runs, with the value those runs trained with (so they resume).
LEGACY_SETTINGS = {"balance": "none", "sdr_weight": 0.0, "mask_bce_weight": 0.0, "mask_bce_bins": "magnitude",
                   "timbre_db": 0.0}
__all__ = ["QUERY_VARIANTS", "TrainResult", "magnitude_mae", "sdr", "train"]

ProgressCallback = Callable[[str, int, int, str], None]


# -- result -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    steps : int
        Optimiser steps done in total (this call and the runs it continued).
    resumed_from : int
        The step this call started at (0 for a new run).
    best_step : int or None
        The best validation's step (fewest collapsed classes, then highest worst-class SDRi).
    best_worst_sdri : float or None
        Its worst-class SDR improvement (dB); ``best_si_sdr``: its mean SI-SDR (dB).
    last_path, best_path, history_path, state_path : Path
    history : tuple of dict
        One entry per validation (see the module docstring).
    """

    steps: int
    resumed_from: int
    best_si_sdr: float | None
    best_step: int | None
    best_worst_sdri: float | None
    last_path: Path
    best_path: Path
    history_path: Path
    state_path: Path
    history: tuple[dict, ...]


# -- training -----------------------------------------------------------------------------
# Long by its docstring (every parameter) and the training loop, whose steps, validations and
# checkpoints share the optimiser, the RNG and the history.
def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
          width: float = 0.125, depth: int = 6, query: str = "learned", query_encoder: QueryEncoder | None = None,
          mode: str = "full", steps: int = 1000, batch_size: int = 4, crop_s: float = 3.0, lr: float = 1e-3,
          sdr_weight: float = SDR_WEIGHT, mask_bce_weight: float = MASK_BCE_WEIGHT, mask_bce_bins: str = "magnitude",
          balance: str = "class", timbre_db: float = 0.0, seed: int = 0, threads: int = 1,
          checkpoint_every: int | None = None, validate_every: int | None = None, chunk_steps: int | None = None,
          callback: ProgressCallback | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train CLASS-net on the augmentation data in ``data_dir``; resumable in ``out_dir``.

    Parameters
    ----------
    data_dir : path-like
        A folder written by :mod:`studio_sep.data.dataset` (:func:`read_dataset_index`);
        needs train and val examples.
    out_dir : path-like
        Where the checkpoints, history and training state go (module docstring). If it
        holds a ``train_state.pt``, training continues from it; the settings (all
        arguments below except ``steps``, ``threads``, ``checkpoint_every``,
        ``validate_every``, ``chunk_steps`` and the callbacks) must then be the ones it was
        started with, else :class:`~studio_sep.util.errors.InputError`. The data set must
        not hold renders of a held-out SoundFont (:mod:`studio_sep.data.soundfonts`).
    model : path-like, optional
        Checkpoint to start from (``ClassNet`` or ``QueriedClassNet``); then ``width``
        and ``depth`` are not used. None: a new model, initialised from ``seed``.
    width, depth : float, int
        Size of a new ClassNet (:class:`~studio_sep.classnet.model.ClassNet`).
    query : {"learned", "clap"}
        ``"learned"``: the model is a :class:`~studio_sep.classnet.query.QueriedClassNet`
        whose query module (class embeddings + reference encoder) is trained with it.
        ``"clap"``: the model is a plain ClassNet, conditioned by ``query_encoder``
        (required; used frozen, its conditions cached per example).
    mode : {"full", "decoder"}
        ``"decoder"``: decoder-only fine-tuning (paper §3.4): the ResUNet encoder and
        bottleneck stay bit-identical (:func:`~studio_sep.classnet.model.freeze_encoder`);
        the query projection and the learned query module train.
    steps : int
        Total optimiser steps (a resumed run goes on to this number).
    batch_size : int
        Examples per step (4).
    crop_s : float
        Length of the random training crops in seconds (3.0, for speed; the whole
        example if shorter). Validation uses the full examples.
    lr : float
        AdamW learning rate, default 1e-3 (weight decay 0.01). The paper fine-tunes the
        52 M-parameter network with AdamW at 1e-4, batch 2; the small networks trained
        from scratch here on a CPU budget of a few thousand steps get ten times that.
    sdr_weight : float
        Weight per dB of the waveform SDR term added to eq. 18 (0.02; 0: eq. 18 alone).
    mask_bce_weight : float
        Weight of the mask logits' cross-entropy against the ideal ratio mask (0.3; 0: none).
    mask_bce_bins : {"magnitude", "uniform"}
        Its weight per time-frequency bin (:func:`~studio_sep.classnet.train_loss.mask_bce`).
    balance : {"class", "none"}
        ``"class"``: every class drawn equally often; ``"none"``: as the data holds them.
    timbre_db : float
        Each training crop's target gets a random smooth EQ of up to ± this many dB and the
        mixture is made again with it (:func:`~studio_sep.classnet.train_data.timbre_eq`;
        0, the default: none). Validation is never equalised.
    seed : int
        Seeds the new model's initial weights and every random choice of training.
    threads : int
        torch intra-op threads during training (restored after).
    checkpoint_every, validate_every : int, optional
        Steps between checkpoints / validations; validation defaults to once per epoch
        (a pass over the train split, ceil(n_train / batch_size) steps), checkpoints to
        every validation. Both also happen after the last step.
    chunk_steps : int, optional
        Do at most this many steps in this call, then save and return (``steps`` stays the
        run's total: call again to go on). The weights do not depend on the chunking.
    callback : callable(stage, done, total, detail), optional
        Progress: ``("train", step, steps, "loss …")`` after each step,
        ``("validate", i, n_val, "")`` during validation.
    log : callable(str), optional
        Receives one line per validation.

    Returns
    -------
    TrainResult
    """
    check_settings(query=query, query_encoder=query_encoder, mode=mode, steps=steps, batch_size=batch_size,
                   crop_s=crop_s, lr=lr, seed=seed, threads=threads, checkpoint_every=checkpoint_every,
                   validate_every=validate_every, chunk_steps=chunk_steps, sdr_weight=sdr_weight, balance=balance,
                   mask_bce_weight=mask_bce_weight, mask_bce_bins=mask_bce_bins, timbre_db=timbre_db)
    index = training_index(data_dir)
    train_set, val_set = index.splits["train"], index.splits["val"]
    out_dir = Path(out_dir)
    paths = {"last": out_dir / "last.safetensors", "best": out_dir / "best.safetensors",
             "history": out_dir / "history.json", "state": out_dir / "train_state.pt"}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net_model, start_sha = _initial_model(model, width, depth, query, query_encoder, index)
        settings = {
            "dataset_sha256": index.sha256, "n_train": len(train_set), "n_val": len(val_set),
            "model": None if model is None else start_sha, "width": None if model is not None else float(width),
            "depth": None if model is not None else int(depth), "query": query,
            "query_encoder": None if query_encoder is None else {"name": str(query_encoder.name),
                                                                 "sha256": query_encoder.sha256},
            "mode": mode, "batch_size": int(batch_size), "crop_s": float(crop_s), "lr": float(lr), "seed": int(seed),
            "sdr_weight": float(sdr_weight), "balance": balance, "mask_bce_weight": float(mask_bce_weight),
            "mask_bce_bins": mask_bce_bins, "timbre_db": float(timbre_db),
        }
        state = _read_state(paths["state"], settings)
        if state is not None:
            net_model = MODELS[state["model_name"]](**json.loads(state["model_kwargs"]))
            net_model.load_state_dict(state["model_state"], strict=True)
        params = net_model.freeze_encoder() if mode == "decoder" and isinstance(net_model, QueriedClassNet) else (
            freeze_encoder(net_model) if mode == "decoder" else list(net_model.parameters()))
        optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        step, history, best, recent = 0, [], None, []
        if state is not None:
            optimiser.load_state_dict(state["optimizer"])
            step, history, best, recent = state["step"], list(state["history"]), state["best"], list(state["recent"])
        if step > steps:
            raise InputError(paths["state"], "step", f"{out_dir} already holds {step} steps, more than steps={steps}",
                             f"ask for at least {step} steps, or use a new out_dir")
        resumed_from = step
        net = net_model.net if isinstance(net_model, QueriedClassNet) else net_model
        steps_per_epoch = math.ceil(len(train_set) / batch_size)
        validate_every = validate_every or steps_per_epoch
        checkpoint_every = checkpoint_every or validate_every
        job = _Job(net_model, net, query_encoder, crop=round(crop_s * 16000), batch_size=batch_size, seed=seed,
                   loss_args={k: settings[k] for k in ("sdr_weight", "mask_bce_weight", "mask_bce_bins")}, balance=balance,
                   timbre_db=float(timbre_db))

        def save(step: int) -> None:
            save_checkpoint(net_model, paths["last"])
            with atomic_path(paths["state"]) as tmp:
                torch.save({"format": STATE_FORMAT, "settings": settings, "step": step,
                            "model_name": type(net_model).__name__,
                            "model_kwargs": json.dumps(net_model.config, sort_keys=True),
                            "model_state": {k: v.detach().clone() for k, v in net_model.state_dict().items()},
                            "optimizer": optimiser.state_dict(), "history": history, "best": best,
                            "recent": recent}, tmp)

        def validate(step: int) -> None:
            nonlocal best
            metrics = job.validate(val_set, callback)
            entry = {"step": step, "epoch": step / steps_per_epoch,
                     "train_loss": float(np.mean(recent)) if recent else None,
                     **{f"train_{k}": finite_mean([p[k] for p in recent_parts]) for k in ("mae", "sdr", "bce")},
                     **metrics}
            recent.clear()
            recent_parts.clear()
            history.append(entry)
            if best is None or "worst_sdri" not in best or selection_key(entry) > selection_key(best):
                best = {"step": step, **{k: entry[k] for k in ("si_sdr", "sdri", "worst_class", "worst_sdri",
                                                               "collapsed")}}
                save_checkpoint(net_model, paths["best"])
            write_text_atomic(paths["history"], dumps_json({"format": STATE_FORMAT, "settings": settings,
                                                            "history": history, "best": best}, indent=1) + "\n")
            if log is not None:
                log(_validation_line(entry))

        net_model.train()
        recent_parts: list[dict] = []
        stop = steps if chunk_steps is None else min(steps, step + chunk_steps)
        while step < stop:
            loss, parts = job.train_step(train_set, step, optimiser)
            step += 1
            recent.append(loss)
            recent_parts.append(parts)
            if callback is not None:
                callback("train", step, steps, f"loss {loss:.4f}")
            if step % validate_every == 0 or step == steps:
                net_model.eval()
                validate(step)
                net_model.train()
            if step % checkpoint_every == 0 or step in (steps, stop):
                save(step)
    finally:
        torch.set_num_threads(previous_threads)
    return TrainResult(step, resumed_from, None if best is None else best["si_sdr"],
                       None if best is None else best["step"], None if best is None else best.get("worst_sdri"),
                       paths["last"], paths["best"], paths["history"], paths["state"], tuple(history))


def _validation_line(entry: dict) -> str:
    """The log line of a validation: losses, means, the worst class and the collapsed ones."""
    train_loss = "-" if entry["train_loss"] is None else f"{entry['train_loss']:.4f}"
    per_class = ", ".join(f"{c} {v['sdri']:+.2f}" for c, v in entry["per_class"].items())
    collapsed = f"; collapsed: {', '.join(entry['collapsed'])}" if entry["collapsed"] else ""
    return (f"step {entry['step']} (epoch {entry['epoch']:.2f}): train loss {train_loss}, val loss "
            f"{entry['val_loss']:.4f}, SDR {entry['sdr']:.2f} dB, SI-SDR {entry['si_sdr']:.2f} dB, "
            f"SI-SDRi {entry['si_sdri']:+.2f} dB (mixture {entry['si_sdr_mixture']:.2f} dB); SDRi per class "
            f"{per_class} (worst {entry['worst_class']}){collapsed}")


class _Job:
    """The per-step work: batches, conditions, the loss, validation."""

    def __init__(self, model, net: ClassNet, encoder: QueryEncoder | None, *, crop: int, batch_size: int,
                 seed: int, loss_args: dict, balance: str, timbre_db: float = 0.0):
        self.model, self.net, self.encoder = model, net, encoder
        self.crop, self.batch_size, self.seed = crop, batch_size, seed
        self.loss_args, self.balance, self.timbre_db = loss_args, balance, timbre_db
        self.lengths: dict = {}
        self.cond_cache: dict = {}

    def _generator(self, *key: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash_seed(self.seed, *key))

    def batch_indices(self, step: int, examples: Sequence[Example]) -> list[int]:
        """Examples of a step (:func:`~studio_sep.classnet.train_data.batch_indices`)."""
        return batch_indices(step, self.batch_size, [e.cls or e.prompt for e in examples], self._generator,
                             balance=self.balance)

    def conditions(self, examples: Sequence[Example], variants: Sequence[str],
                   references: Sequence[torch.Tensor]) -> torch.Tensor:
        prompts, refs = [], []
        for e, v, ref in zip(examples, variants, references):
            prompts.append(None if v == "reference" else e.prompt)
            refs.append(None if v == "text" and prompts[-1] is not None else ref)  # no prompt: keep the reference
        if self.encoder is None:
            return self.model.condition(prompts, refs)
        rows = []
        for e, p, r in zip(examples, prompts, refs):
            key = (e.id, e.mixture, p is not None, r is not None)
            if key not in self.cond_cache:
                with torch.no_grad():
                    self.cond_cache[key] = self.encoder.condition([p], [r]).detach().to("cpu", torch.float32)
            rows.append(self.cond_cache[key])
        param = self.net.proj.weight
        return torch.cat(rows).to(device=param.device, dtype=param.dtype)

    def train_step(self, examples: Sequence[Example], step: int, optimiser) -> tuple[float, dict]:
        gen = self._generator(2, step)
        chosen = [examples[i] for i in self.batch_indices(step, examples)]
        mix, tgt, refs, variants = [], [], [], []
        for e in chosen:
            n = min(n_frames(e.mixture, self.lengths), n_frames(e.target, self.lengths))
            crop = min(self.crop, n)
            start = int(torch.randint(0, n - crop + 1, (1,), generator=gen))
            mix.append(np.pad(read_wave(e.mixture, start, crop), (0, self.crop - crop)))
            tgt.append(np.pad(read_wave(e.target, start, crop), (0, self.crop - crop)))
            refs.append(torch.from_numpy(read_wave(e.reference)))
            variants.append(QUERY_VARIANTS[int(torch.randint(0, len(QUERY_VARIANTS), (1,), generator=gen))])
        if self.timbre_db > 0:  # its own generator: the crops and queries are those of a run without it
            eq_gen = self._generator(3, step)
            mix, tgt = map(list, zip(*(timbre_eq(m, t, self.timbre_db, eq_gen) for m, t in zip(mix, tgt))))
        param = self.net.proj.weight
        mix_BS = torch.from_numpy(np.stack(mix)).to(device=param.device, dtype=param.dtype)
        tgt_BS = torch.from_numpy(np.stack(tgt)).to(device=param.device, dtype=param.dtype)
        optimiser.zero_grad(set_to_none=True)
        loss, parts = separation_loss(self.net, mix_BS, tgt_BS, self.conditions(chosen, variants, refs),
                                      **self.loss_args)
        loss.backward()
        optimiser.step()
        return float(loss.detach()), parts

    @torch.no_grad()
    def validate(self, examples: Sequence[Example], callback: ProgressCallback | None) -> dict:
        param = self.net.proj.weight
        rows = []
        for i, e in enumerate(examples):
            mix, tgt = read_wave(e.mixture), read_wave(e.target)
            n = min(len(mix), len(tgt))
            mix, tgt = mix[:n], tgt[:n]
            cond = self.conditions([e], ["both"], [torch.from_numpy(read_wave(e.reference))])
            mix_BS = torch.from_numpy(mix)[None].to(device=param.device, dtype=param.dtype)
            tgt_BS = torch.from_numpy(tgt)[None].to(device=param.device, dtype=param.dtype)
            est_BS, loss = estimate_and_loss(self.net, mix_BS, tgt_BS, cond, **self.loss_args)  # one pass
            est = est_BS[0].to("cpu", torch.float64).numpy()
            rows.append({"class": e.cls or e.prompt, "val_loss": float(loss), **example_scores(tgt, est, mix)})
            if callback is not None:
                callback("validate", i + 1, len(examples), e.id)
        return validation_scores(rows)


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms, unlike ``hash``)."""
    import hashlib

    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _initial_model(model, width, depth, query, encoder, index: DatasetIndex):
    """The model to train (new from the global seed, or from a checkpoint) and the checkpoint's sha."""
    classes = index.classes
    prompts = {e.prompt for split in index.splits.values() for e in split if e.prompt is not None}
    sha = None
    if model is not None:
        ck = load_checkpoint(model)
        sha = ck.sha256
        start = ck.model.train()
        if query == "learned":
            if isinstance(start, ClassNet):
                qc = QueriedClassNet(net=dict(start.config), query={"classes": classes, "cond_dim": start.cond_dim})
                qc.net.load_state_dict(start.state_dict())
                start = qc
            elif not isinstance(start, QueriedClassNet):
                raise InputError(model, "model", f"{ck.name} cannot be trained here", "start from a ClassNet")
        elif not isinstance(start, ClassNet):
            raise InputError(model, "model", f"{ck.name} carries its own learned query; query='clap' trains a "
                             "plain ClassNet", "start from a ClassNet checkpoint, or train with query='learned'")
    elif query == "learned":
        start = QueriedClassNet(net={"width": width, "depth": depth}, query={"classes": classes})
    else:
        start = None
    if query == "learned":
        for p in sorted(prompts):  # every prompt must name a class: fail before any training
            prompt_class(p, start.query.classes)
        return start, sha
    probe = index.splits["train"][0]
    ref = torch.from_numpy(read_wave(probe.reference))
    with torch.no_grad():
        z = encoder.condition([probe.prompt], [ref])
    if not (isinstance(z, torch.Tensor) and z.ndim == 2 and z.shape[0] == 1):
        raise InputError(None, "query_encoder", f"condition() returned {getattr(z, 'shape', type(z).__name__)}, "
                         "expected (1, cond_dim)", "fix the query encoder")
    if start is None:
        start = ClassNet(width=width, depth=depth, cond_dim=int(z.shape[1]))
    elif start.cond_dim != z.shape[1]:
        raise InputError(model, "cond_dim", f"the model takes {start.cond_dim}-dim conditions, the query encoder "
                         f"gives {z.shape[1]}", "start from a model made for this query encoder")
    return start, sha


def _read_state(path: Path, settings: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any damage: one clear message)
        raise InputError(path, None, f"unreadable training state: {str(exc).splitlines()[0][:160]}",
                         "delete the out_dir to start again") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(path, None, "not a studio-sep training state", "use another out_dir")
    old = {**LEGACY_SETTINGS, **state["settings"]}
    changed = [f"{k} {old.get(k)!r} → {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
               if old.get(k) != settings.get(k)]
    if changed:
        raise InputError(path, "settings", f"{path.parent} holds a run with other settings: {'; '.join(changed)}",
                         "use a new out_dir, or the settings it was started with to continue it")
    return state
