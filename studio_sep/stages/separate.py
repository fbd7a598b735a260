"""The separate stage over a session: prior → separate → images, in one pass or in
overlapping time blocks. Owns the output folder.

``<out>/<session>/``:

- ``images/<source>/<mic>.wav`` — each source's estimated image at every mic, at the
  session's sample rate, as long as the input;
- ``images/_residual/<mic>.wav`` — only when the separation ran at a lower processing
  rate: what the model did not see (the band above its Nyquist frequency and the
  resampling error), so that sources + residual = mixture at every mic;
- ``stems/<source>.wav`` — the image at the source's stem mic (its ``spot_mic``, a mic
  the user picks, or else the mic nearest the source);
- ``run.json`` — resolved settings, versions, seed, timings, init, log-likelihood;
- ``report/metrics.json``, ``report/metrics.md`` — from
  :func:`studio_sep.stages.evaluate.evaluate_run`.

Every file is written atomically; ``run.json`` is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from studio_sep.session import Session
from studio_sep.stages.blocks import write_block_images
from studio_sep.stages.checkpoints import block_fit_path, load_params, save_params
from studio_sep.stages.fit import fit_blocks, fit_spatial_starts, fit_starts, member_fit_path
from studio_sep.stages.images import write_source_images
from studio_sep.stages.memory import MemoryPlan, plan_memory
from studio_sep.stages.prior import later_start, prior_path, prior_stage
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, ProgressCallback, RunRecord
from studio_sep.stages.sections import run_sections, separation_fingerprints
from studio_sep.stages.settings import ResolvedSettings, SeparationOptions, resolve_settings
from studio_sep.stages.signals import fit_spectrogram, mic_signals


@dataclass(frozen=True)
class SeparationResult:
    folder: Path
    run: dict
    #: stage → "ran" or "skipped" (up to date), for prior, separate, images
    stages: dict[str, str] = field(default_factory=dict)


def separate_session(
    session: Session,
    out_root: str | Path,
    options: SeparationOptions = SeparationOptions(),
    *,
    callback: ProgressCallback | None = None,
    force: bool = True,
    hashes: FileHashes | None = None,
) -> SeparationResult:
    """Separate every source of a session: the stages prior → separate → images.

    Writes images, stems and ``run.json`` under ``out_root/<session>``. ``session``
    must have been loaded with its audio checked; settings are resolved and checked
    before anything is read or written. With ``force=False`` a stage whose
    fingerprint (inputs and settings) matches its record is skipped, and an
    interrupted fit continues from its last checkpoint (the result equals an
    uninterrupted run's).

    When the estimated peak memory (:func:`studio_sep.stages.memory.plan_memory`) exceeds the budget, the
    session is separated in overlapping time blocks: block 1 starts from the initial
    model, every later block from the previous block's spatial model and bases (so
    source n stays source n; checked at every seam on the overlapping images, and
    reordered by assignment if ever needed), and the overlaps are crossfaded with
    weights that sum to 1, so the images still sum to the mixture. Finished blocks are
    kept (``.studio-sep/fit-block-<b>.npz``) and not redone after an interruption.
    The plan is reported as the stage ``"memory"`` and recorded in ``run.json``.
    """
    settings = resolve_settings(session, options)
    plan = plan_memory(session, options, settings=settings)
    if plan.blocked and (len(settings.starts) > 1 or settings.ensemble > 1 or len(settings.spatial_starts) > 1):
        # in blocks, one start and one fit (the time it costs): of two spatial starts, the geometric one
        settings = replace(settings, starts=settings.starts[:1], ensemble=1,
                           init=settings.start_init(settings.spatial_starts[0]))
    folder = Path(out_root) / session.name
    record = RunRecord(folder)
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    report = callback or (lambda stage, done, total, detail="": None)
    report("memory", 1, 1, detail=plan.describe())
    fps = separation_fingerprints(session, settings, hashes, plan)
    hashes.save()
    work = folder / WORK_DIR
    run = (_InBlocks if plan.blocked else _OnePass)(session, settings, plan, work, report, force)
    stages = {"prior": prior_stage(session, settings, record, fps["prior"], work, report, run.first_signals,
                                   force=force)}

    if not force and record.is_current("separate", fps["separate"]):
        stages["separate"] = "skipped"
    else:
        clock = time.perf_counter()
        record.begin("separate")
        files, fields, iterations_run = run.fit(fps["separate"])
        fit_s = time.perf_counter() - clock
        record.finish("separate", fps["separate"], files, elapsed_s=fit_s, **fields,
                      per_iteration_s=round(fit_s / max(iterations_run, 1), 5))
        stages["separate"] = "ran"

    if not force and record.is_current("images", fps["images"]):
        stages["images"] = "skipped"
        return SeparationResult(folder=folder, run=record.load(), stages=stages)
    clock = time.perf_counter()
    record.begin("images")
    kept = (record.stage("separate") or {}).get("spatial_starts", {}).get("kept")
    spectral_init = load_params(prior_path(work, 0, later_start(settings, kept)))[1]["spectral_init"]
    images = run.images(folder)
    sections = run_sections(session, settings, plan, record, images.shape_FTM, spectral_init, images.order,
                            images.has_residual, images.log_likelihood, images.blocks, time.perf_counter() - clock)
    record.finish("images", fps["images"], images.outputs, elapsed_s=time.perf_counter() - clock, sections=sections)
    stages["images"] = "ran"
    return SeparationResult(folder=folder, run=record.load(), stages=stages)


def session_log_likelihood(per_block: list[dict]) -> tuple[list[int], np.ndarray]:
    """The session's log-likelihood per bin from its time blocks' fits: at each iteration
    any block recorded, the blocks' values weighted by their frames, a block that stopped
    earlier (``--iterations auto``) counted at its final value. Returns the iterations and
    the values."""
    iterations = sorted({int(i) for blk in per_block for i in blk["iterations"]})
    frames = np.array([blk["n_frames"] for blk in per_block], dtype=float)
    table = np.empty((len(iterations), len(per_block)))
    for b, blk in enumerate(per_block):
        recorded = dict(zip((int(i) for i in blk["iterations"]), blk["values"]))
        latest = blk["values"][0]
        for row, it in enumerate(iterations):
            latest = recorded.get(it, latest)
            table[row, b] = latest
    return iterations, table @ frames / frames.sum()


@dataclass(frozen=True)
class _Images:
    """What the images stage made, for ``run.json``."""

    outputs: list[Path]
    order: np.ndarray
    has_residual: bool
    shape_FTM: list[int]
    log_likelihood: dict
    blocks: dict


class _OnePass:
    """The stages' work on the whole session at once: its signals are read once, up front."""

    def __init__(self, session: Session, settings: ResolvedSettings, plan: MemoryPlan, work: Path, report,
                 force: bool):
        self.session, self.settings, self.work, self.report, self.force = session, settings, work, report, force
        self.x_MS, self.x_proc, self.X_host = mic_signals(session, settings)

    @cached_property
    def X_fit(self) -> np.ndarray:
        """The STFT the prior and the fit use (dereverberated with ``wpe``): made only if
        one of them runs."""
        return fit_spectrogram(self.X_host, self.settings)

    def first_signals(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_proc, self.X_fit

    def fit(self, fp: str) -> tuple[list[Path], dict, int]:
        """Fit, save ``fit.npz``; the files, the record's fields and the iterations run."""
        work, settings = self.work, self.settings
        if settings.ensemble > 1 or len(settings.spatial_starts) > 1:
            members, fits, fields, iterations_run, kept = fit_spatial_starts(self.X_fit, settings, work, fp,
                                                                             self.report, resume=not self.force)
            start = later_start(settings, kept)
            save_params(work / "fit.npz", members[0], log_likelihood=fits[0].log_likelihood,
                        ll_iterations=fits[0].ll_iterations, member_orders=np.array(fields["ensemble"]["orders"]),
                        **({"spatial_start": kept} if kept else {}))
            return [work / "fit.npz", *(member_fit_path(work, k, start) for k in range(1, len(members)))], fields, \
                iterations_run
        init, _ = load_params(work / "prior.npz")
        fit, fields, iterations_run = fit_starts(self.X_fit, init, settings, work, fp, self.report,
                                                 resume=not self.force)
        save_params(work / "fit.npz", fit.params, log_likelihood=fit.log_likelihood,
                    ll_iterations=fit.ll_iterations)
        return [work / "fit.npz"], fields, iterations_run

    def images(self, folder: Path) -> _Images:
        params, extra = load_params(self.work / "fit.npz")
        if "member_orders" in extra:  # an ensemble: every member, its outputs in member 0's order
            from studio_sep.separation.initial import reorder_outputs

            start = later_start(self.settings, extra.get("spatial_start"))
            params = [params, *(reorder_outputs(load_params(member_fit_path(self.work, k, start))[0], order)
                                for k, order in enumerate(extra["member_orders"]) if k > 0)]
        outputs, order, has_residual = write_source_images(folder, self.session, self.settings, self.x_MS,
                                                           self.x_proc, self.X_host, params, self.report)
        log_likelihood = {"initial": float(extra["log_likelihood"][0]), "final": float(extra["log_likelihood"][-1]),
                          "iterations": [int(i) for i in extra["ll_iterations"]],
                          "values": [round(float(v), 6) for v in extra["log_likelihood"]]}
        return _Images(outputs, order, has_residual, list(self.X_host.shape), log_likelihood, {"reordered": False})


class _InBlocks:
    """The stages' work over overlapping time blocks: each block's signals are read when needed."""

    def __init__(self, session: Session, settings: ResolvedSettings, plan: MemoryPlan, work: Path, report,
                 force: bool):
        self.session, self.settings, self.plan, self.work = session, settings, plan, work
        self.report, self.force = report, force

    def first_signals(self) -> tuple[np.ndarray, np.ndarray]:
        x_proc, X_host = mic_signals(self.session, self.settings, *self.plan.bounds()[0])[1:]
        return x_proc, fit_spectrogram(X_host, self.settings)

    def fit(self, fp: str) -> tuple[list[Path], dict, int]:
        """Fit every block; the files, the record's fields and the iterations run."""
        files, done_before, iterations_run, block_iterations = fit_blocks(
            self.session, self.settings, self.plan, self.work, fp, self.report, force=self.force)
        return files, {"blocks_done_before": done_before, "iterations": block_iterations}, iterations_run

    def images(self, folder: Path) -> _Images:
        plan = self.plan
        outputs, order, has_residual, seams, shape = write_block_images(folder, self.session, self.settings, plan,
                                                                        self.report)
        per_block = []
        for b in range(plan.n_blocks):
            extra = load_params(block_fit_path(self.work, b))[1]
            per_block.append({"block": b + 1, "n_frames": int(extra["n_frames"]),
                              "iterations": [int(i) for i in extra["ll_iterations"]],
                              "values": [round(float(v), 6) for v in extra["log_likelihood"]]})
        iterations, values = session_log_likelihood(per_block)
        log_likelihood = {"initial": round(float(values[0]), 6), "final": round(float(values[-1]), 6),
                          "iterations": iterations, "values": [round(float(v), 6) for v in values],
                          "blocks": per_block}
        blocks = {"reordered": any(seam["reordered"] for seam in seams), "seams": seams,
                  "bounds_samples": [list(bound) for bound in plan.bounds()]}
        return _Images(outputs, order, has_residual, shape, log_likelihood, blocks)
