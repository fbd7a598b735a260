"""Stages over a session: separation and evaluation. Owns the output folder.

``<out>/<session>/``:

- ``images/<source>/<mic>.wav`` — each source's estimated image at every mic, at the
  session's sample rate, as long as the input;
- ``images/_residual/<mic>.wav`` — only when the separation ran at a lower processing
  rate: what the model did not see (the band above its Nyquist frequency and the
  resampling error), so that sources + residual = mixture at every mic;
- ``stems/<source>.wav`` — the image at the source's stem mic (its ``spot_mic``, a mic
  the user picks, or else the mic nearest the source);
- ``run.json`` — resolved settings, versions, seed, timings, init, log-likelihood;
- ``report/metrics.json``, ``report/metrics.md`` — from :func:`evaluate_run`.

Every file is written atomically; ``run.json`` is written last.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from studio_sep import __version__
from studio_sep.dsp.backend import resolve_device, to_device, to_host, xp_for_device
from studio_sep.dsp.metrics import METRICS
from studio_sep.dsp.resample import resample
from studio_sep.dsp.stft import check_fft_settings, default_fft_size
from studio_sep.io import audio as audio_io
from studio_sep.session import INITS, Session, load_mics
from studio_sep.stages.memory import MemoryPlan, default_budget_bytes, plan_blocks
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, RunRecord, fingerprint
from studio_sep.util.atomic import atomic_path, file_sha256, write_text_atomic
from studio_sep.util.errors import InputError

#: ``callback(stage, done, total, detail="")``: progress of a named stage.
ProgressCallback = Callable[..., None]
RESIDUAL = "_residual"
#: Measured best on the rendered trio (benchmarks/README.md): the geometric demixer with
#: the spectral model started from its output beats adding a solo-take dictionary.
DEFAULT_INIT = ("geometry",)


@dataclass(frozen=True)
class SeparationOptions:
    """Settings given on the command line; ``None`` defers to the manifest, then defaults."""

    init: tuple[str, ...] | None = None
    n_iter: int | None = None
    n_basis: int | None = None
    n_fft: int | None = None
    hop: int | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    processing_sample_rate: int | None = None
    stem_mics: Mapping[str, str] = field(default_factory=dict)  #: source → mic ("*" for all)
    subtype: str = "float32"
    #: Memory budget in bytes (None: :func:`studio_sep.stages.memory.default_budget_bytes`). A
    #: session whose estimated peak exceeds it is separated in overlapping time blocks.
    max_memory: int | None = None
    #: Spectral prior (:data:`studio_sep.priors.spectral_prior.PRIORS`); None: the manifest's,
    #: else "classnet" when the init has "prior", else "none".
    prior: str | None = None
    #: CLASS-net checkpoint for ``prior="classnet"`` (None: the shipped model).
    prior_model: str | None = None
    #: LAION-CLAP files for a CLAP-conditioned checkpoint: ``{"checkpoint": …, "roberta": …}``.
    clap: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ResolvedSettings:
    """Every setting of a separation run, concrete."""

    init: tuple[str, ...]
    n_iter: int
    n_basis: int
    n_fft: int
    hop: int
    device: str
    dtype: str
    seed: int
    sample_rate: int
    processing_sample_rate: int
    stem_mics: dict[str, str]
    subtype: str
    prior: dict = field(default_factory=lambda: {"kind": "none"})  #: PriorSpec.describe()
    normalize_every: int = 10
    log_likelihood_every: int = 5
    dictionary_iterations: int = 200


def resolve_settings(session: Session, options: SeparationOptions = SeparationOptions()) -> ResolvedSettings:
    """Merge command line, manifest and defaults; check the result before any work."""
    manifest = session.separation
    pick = lambda name, default: next(  # noqa: E731
        (v for v in (getattr(options, name), getattr(manifest, name)) if v is not None), default)
    native = session.sample_rate
    if native is None:
        raise ValueError("resolve_settings needs a session loaded with its audio checked")
    proc_sr = options.processing_sample_rate or session.processing_sample_rate or native
    if proc_sr > native:
        raise InputError(session.path, "processing_sample_rate",
                         f"{proc_sr} Hz is above the recording's {native} Hz", f"use at most {native}")
    default_fft, default_hop = default_fft_size(proc_sr)
    n_fft = pick("n_fft", default_fft)
    hop = pick("hop", n_fft // 4 if n_fft != default_fft else default_hop)
    try:
        check_fft_settings(n_fft, hop)
    except InputError as exc:
        raise InputError(session.path, f"separation.{exc.field}", exc.problem, exc.fix) from None
    init = tuple(dict.fromkeys(pick("init", DEFAULT_INIT)))
    prior_kind = pick("prior", "classnet" if "prior" in init else "none")
    if prior_kind != "none" and "prior" not in init:
        init = init + ("prior",)
    if prior_kind == "none" and "prior" in init:
        raise InputError(session.path, "separation.init", "the prior init needs a prior, and the prior is none",
                         "use --prior nmf or --prior classnet, or drop prior from init")
    _check_init(session, init)
    stem_mics = _stem_mics(session, options.stem_mics)
    device = resolve_device(pick("device", "auto"))
    dtype = pick("dtype", "float64")
    if dtype not in ("float32", "float64"):
        raise InputError(None, "dtype", f"{dtype!r} is not float32 or float64", "pick one of those")
    n_iter, n_basis, seed = pick("n_iter", 100), pick("n_basis", 8), pick("seed", 0)
    for name, value, minimum in (("n_iter", n_iter, 0), ("n_basis", n_basis, 1), ("seed", seed, 0)):
        if value < minimum:
            raise InputError(None, name, f"must be at least {minimum}, got {value}")
    from studio_sep.priors.spectral_prior import resolve_prior

    prior = resolve_prior(session, prior_kind, model=options.prior_model,
                          clap=dict(options.clap) if options.clap else None)
    return ResolvedSettings(init=init, n_iter=n_iter, n_basis=n_basis, n_fft=n_fft, hop=hop, device=device,
                            dtype=dtype, seed=seed, sample_rate=native, processing_sample_rate=proc_sr,
                            stem_mics=stem_mics, subtype=options.subtype, prior=prior.describe())


def _check_init(session: Session, init: tuple[str, ...]) -> None:
    unknown = [i for i in init if i not in INITS]
    if unknown:
        raise InputError(None, "init", f"unknown init {unknown[0]!r}", f"use a combination of {', '.join(INITS)}")
    if "circular" in init and "geometry" in init:
        raise InputError(None, "init", "circular and geometry both set the spatial model", "pick one of them")
    if "geometry" in init and len(session.sources) > len(session.mics):
        raise InputError(session.path, "separation.init",
                         f"geometry init needs at least as many mics as sources ({len(session.mics)} < "
                         f"{len(session.sources)})", "use init circular, or add mics")
    if "dictionary" in init:
        missing = [i for i, s in enumerate(session.sources) if s.reference is None]
        if missing:
            raise InputError(session.path, f"sources[{missing[0]}].reference",
                             f"dictionary init needs a solo reference take of every source; "
                             f"{session.sources[missing[0]].name!r} has none",
                             "add reference = \"path.wav\" or drop dictionary from init")


def _stem_mics(session: Session, chosen: Mapping[str, str]) -> dict[str, str]:
    mic_names = [m.name for m in session.mics]
    source_names = [s.name for s in session.sources]
    for source, mic in chosen.items():
        if source != "*" and source not in source_names:
            raise InputError(None, "stem-mic", f"{source!r} is not a source of {session.name}",
                             f"sources: {', '.join(source_names)}")
        if mic not in mic_names:
            raise InputError(None, "stem-mic", f"{mic!r} is not a mic of {session.name}",
                             f"mics: {', '.join(mic_names)}")
    result = {}
    for s in session.sources:
        mic = chosen.get(s.name) or chosen.get("*") or s.spot_mic
        if mic is None:
            mic = min(session.mics, key=lambda m: math.dist(m.position_m, s.position_m)).name
        result[s.name] = mic
    return result


# --------------------------------------------------------------------------- separation


@dataclass(frozen=True)
class SeparationResult:
    folder: Path
    run: dict
    #: stage → "ran" or "skipped" (up to date), for prior, separate, images
    stages: dict[str, str] = field(default_factory=dict)


#: The fit writes a checkpoint every this many iterations (resume after a kill).
CHECKPOINT_EVERY = 10


def plan_memory(session: Session, options: SeparationOptions = SeparationOptions(), *,
                settings: ResolvedSettings | None = None) -> MemoryPlan:
    """Estimated peak memory of separating ``session`` with these settings, the budget
    (``options.max_memory``, else :func:`studio_sep.stages.memory.default_budget_bytes`) and,
    when the estimate exceeds it, the overlapping time blocks :func:`separate_session`
    will use. Print its ``describe()`` before a separation."""
    settings = settings or resolve_settings(session, options)
    budget = options.max_memory if options.max_memory is not None else default_budget_bytes()
    if budget <= 0:
        raise InputError(None, "max-memory", f"{budget} bytes is not a budget", "give a positive size, e.g. 8G")
    return plan_blocks(session.n_samples, budget_bytes=int(budget), sample_rate=settings.sample_rate,
                       processing_sample_rate=settings.processing_sample_rate, n_mics=len(session.mics),
                       n_sources=len(session.sources), n_basis=settings.n_basis, n_fft=settings.n_fft,
                       hop=settings.hop, dtype=settings.dtype, device=settings.device)


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

    When the estimated peak memory (:func:`plan_memory`) exceeds the budget, the
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
    folder = Path(out_root) / session.name
    record = RunRecord(folder)
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    report = callback or (lambda stage, done, total, detail="": None)
    report("memory", 1, 1, detail=plan.describe())
    fps = separation_fingerprints(session, settings, hashes, plan)
    hashes.save()
    if plan.blocked:
        return _separate_in_blocks(session, settings, plan, folder, record, fps, report, force)
    stages: dict[str, str] = {}
    work = folder / WORK_DIR
    x_MS = load_mics(session)
    x_proc = resample(x_MS, settings.sample_rate, settings.processing_sample_rate)
    X_host = _stft(x_proc, settings)

    stages["prior"] = _prior_stage(session, settings, record, fps["prior"], work, report,
                                   lambda: (x_proc, X_host), force=force)

    if not force and record.is_current("separate", fps["separate"]):
        stages["separate"] = "skipped"
    else:
        clock = time.perf_counter()
        record.begin("separate")
        init, _ = _load_params(work / "prior.npz")
        fit, resumed_from = _fit(X_host, init, settings, work, fps["separate"], report, resume=not force)
        _save_params(work / "fit.npz", fit.params, log_likelihood=fit.log_likelihood,
                     ll_iterations=fit.ll_iterations)
        (work / "fit-checkpoint.npz").unlink(missing_ok=True)
        fit_s = time.perf_counter() - clock
        record.finish("separate", fps["separate"], [work / "fit.npz"], elapsed_s=fit_s, resumed_from_iteration=resumed_from,
                      per_iteration_s=round(fit_s / max(settings.n_iter - resumed_from, 1), 5))
        stages["separate"] = "ran"

    if not force and record.is_current("images", fps["images"]):
        stages["images"] = "skipped"
        return SeparationResult(folder=folder, run=record.load(), stages=stages)
    clock = time.perf_counter()
    record.begin("images")
    params, extra = _load_params(work / "fit.npz")
    spectral_init = _load_params(work / "prior.npz")[1]["spectral_init"]
    outputs, order, has_residual = write_source_images(folder, session, settings, x_MS, x_proc, X_host, params,
                                                       report)
    log_likelihood = {"initial": float(extra["log_likelihood"][0]), "final": float(extra["log_likelihood"][-1]),
                      "iterations": [int(i) for i in extra["ll_iterations"]],
                      "values": [round(float(v), 6) for v in extra["log_likelihood"]]}
    sections = _run_sections(session, settings, plan, record, list(X_host.shape), spectral_init, order,
                             has_residual, log_likelihood, {"reordered": False}, time.perf_counter() - clock)
    record.finish("images", fps["images"], outputs, elapsed_s=time.perf_counter() - clock, sections=sections)
    stages["images"] = "ran"
    return SeparationResult(folder=folder, run=record.load(), stages=stages)


def _prior_stage(session: Session, settings: ResolvedSettings, record: RunRecord, fp: str, work: Path, report,
                 first_signals: Callable[[], tuple[np.ndarray, np.ndarray]], *, force: bool) -> str:
    """The prior stage: the spectral prior (if any) and the initial model from the
    signals of the session (or of its first block: processing-rate mics and their
    STFT) into ``work/prior.npz``, unless it is current. Returns "ran" or "skipped"."""
    if not force and record.is_current("prior", fp):
        return "skipped"
    clock = time.perf_counter()
    record.begin("prior")
    report("prior", 0, 1)
    x_proc, X_host = first_signals()
    prior_V = None
    if settings.prior["kind"] != "none":
        from studio_sep.priors.spectral_prior import PriorSpec, compute_prior

        spec = PriorSpec.from_dict(settings.prior)
        result = compute_prior(spec, session, settings, x_proc, X_host,
                               callback=lambda done, total: report("prior", done, total + 1, detail=spec.kind))
        prior_V, prior_record = result.V_NFT, result.record
    else:
        prior_record = settings.prior
    init, spectral_init = initial_model(session, settings, X_host, prior_V_NFT=prior_V)
    _save_params(work / "prior.npz", init, spectral_init=spectral_init)
    record.finish("prior", fp, [work / "prior.npz"], elapsed_s=time.perf_counter() - clock,
                  spectral_init=spectral_init, prior=prior_record)
    report("prior", 1, 1)
    return "ran"


def _run_sections(session: Session, settings: ResolvedSettings, plan: MemoryPlan, record: RunRecord, shape_FTM,
                  spectral_init: str, order, has_residual: bool, log_likelihood: dict, blocks: dict,
                  images_s: float) -> dict:
    """The top-level sections of ``run.json`` written with the images stage."""
    fit_record = record.stage("separate") or {}
    return {
        "studio_sep": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "session": {"name": session.name, "manifest": str(session.path), "manifest_sha256": file_sha256(session.path),
                    "sample_rate": settings.sample_rate, "n_samples": session.n_samples,
                    "mics": [m.name for m in session.mics], "sources": [s.name for s in session.sources]},
        "separation": {**asdict(settings), "init": list(settings.init), "method": "fastmnmf2",
                       "prior": (record.stage("prior") or {}).get("prior", settings.prior),
                       "spectral_init": spectral_init, "shape_FTM": [int(v) for v in shape_FTM],
                       "n_sources": len(session.sources),
                       "source_order": "geometry" if "geometry" in settings.init else
                       "assigned (spot-mic energy share)", "assignment": [int(i) for i in order],
                       "residual_image": has_residual, "memory": {**plan.to_dict(), **blocks}},
        "log_likelihood": log_likelihood,
        "timings_s": {"fit_s": fit_record.get("elapsed_s"), "per_iteration_s": fit_record.get("per_iteration_s"),
                      "images_s": round(images_s, 3)},
        "versions": _versions(settings.device),
        "outputs": {"images": "images", "stems": "stems"},
    }


def separation_fingerprints(session: Session, settings: ResolvedSettings, hashes: FileHashes,
                            plan: MemoryPlan | None = None) -> dict[str, str]:
    """Fingerprints of the prior, separate and images stages: everything each result
    depends on (audio by content, geometry, settings, the block plan, the stage before)."""
    mics = [{"name": m.name, "file": hashes(m.file), "channel": m.channel, "position": m.position_m,
             "pattern": m.pattern, "aim": [m.aim_azimuth_deg, m.aim_elevation_deg]} for m in session.mics]
    uses_reference = "dictionary" in settings.init or settings.prior["kind"] != "none"
    sources = [{"name": s.name, "position": s.position_m,
                "reference": hashes(s.reference) if uses_reference and s.reference else None}
               for s in session.sources]
    blocks = plan.geometry() if plan is not None else None
    prior = fingerprint("prior", mics, sources, settings.init, settings.n_basis, settings.n_fft, settings.hop,
                        settings.processing_sample_rate, settings.seed, settings.dictionary_iterations, blocks,
                        settings.prior, settings.stem_mics if settings.prior["kind"] != "none" else None)
    separate = fingerprint("separate", prior, settings.n_iter, settings.normalize_every,
                           settings.log_likelihood_every, settings.device, settings.dtype)
    images = fingerprint("images", separate, settings.sample_rate, settings.stem_mics, settings.subtype)
    return {"prior": prior, "separate": separate, "images": images}


# ------------------------------------------------------------------ separation in time blocks

#: H updates that start a block's activations from the previous block's model.
CARRY_H_ITERATIONS = 20


def _block_signals(session: Session, settings: ResolvedSettings, start: int, stop: int):
    """Mics (native), resampled mics and their STFT for native samples [start, stop)."""
    x_MS = load_mics(session, start=start, stop=stop)
    x_proc = resample(x_MS, settings.sample_rate, settings.processing_sample_rate)
    return x_MS, x_proc, _stft(x_proc, settings)


def _block_fit_path(work: Path, b: int) -> Path:
    return work / f"fit-block-{b}.npz"


def _separate_in_blocks(session: Session, settings: ResolvedSettings, plan: MemoryPlan, folder: Path,
                        record: RunRecord, fps: dict[str, str], report, force: bool) -> SeparationResult:
    """The three stages over overlapping time blocks (see :func:`separate_session`)."""
    stages: dict[str, str] = {}
    work = folder / WORK_DIR
    bounds = plan.bounds()
    stages["prior"] = _prior_stage(session, settings, record, fps["prior"], work, report,
                                   lambda: _block_signals(session, settings, *bounds[0])[1:], force=force)

    if not force and record.is_current("separate", fps["separate"]):
        stages["separate"] = "skipped"
    else:
        clock = time.perf_counter()
        record.begin("separate")
        files, done_before, iterations_run = _fit_blocks(session, settings, plan, work, fps["separate"], report,
                                                         force=force)
        fit_s = time.perf_counter() - clock
        record.finish("separate", fps["separate"], files, elapsed_s=fit_s, blocks_done_before=done_before,
                      per_iteration_s=round(fit_s / max(iterations_run, 1), 5))
        stages["separate"] = "ran"

    if not force and record.is_current("images", fps["images"]):
        stages["images"] = "skipped"
        return SeparationResult(folder=folder, run=record.load(), stages=stages)
    clock = time.perf_counter()
    record.begin("images")
    spectral_init = _load_params(work / "prior.npz")[1]["spectral_init"]
    outputs, order, has_residual, seams, shape = write_block_images(folder, session, settings, plan, report)
    per_block = []
    for b in range(plan.n_blocks):
        extra = _load_params(_block_fit_path(work, b))[1]
        per_block.append({"block": b + 1, "n_frames": int(extra["n_frames"]),
                          "iterations": [int(i) for i in extra["ll_iterations"]],
                          "values": [round(float(v), 6) for v in extra["log_likelihood"]]})
    # the session's log-likelihood per bin: the blocks' values weighted by their frames
    frames = np.array([blk["n_frames"] for blk in per_block], dtype=float)
    values = np.array([blk["values"] for blk in per_block]).T @ frames / frames.sum()
    log_likelihood = {"initial": round(float(values[0]), 6), "final": round(float(values[-1]), 6),
                      "iterations": per_block[0]["iterations"], "values": [round(float(v), 6) for v in values],
                      "blocks": per_block}
    blocks = {"reordered": any(seam["reordered"] for seam in seams), "seams": seams,
              "bounds_samples": [list(bound) for bound in bounds]}
    sections = _run_sections(session, settings, plan, record, shape, spectral_init, order, has_residual,
                             log_likelihood, blocks, time.perf_counter() - clock)
    record.finish("images", fps["images"], outputs, elapsed_s=time.perf_counter() - clock, sections=sections)
    stages["images"] = "ran"
    return SeparationResult(folder=folder, run=record.load(), stages=stages)


def _fit_blocks(session: Session, settings: ResolvedSettings, plan: MemoryPlan, work: Path, fp: str, report, *,
                force: bool) -> tuple[list[Path], list[int], int]:
    """Fit every block in turn, each from the one before; keep each block's result.

    Returns the block files, the blocks found finished (not refitted) and the number
    of iterations run here.
    """
    files, done_before, iterations_run, previous = [], [], 0, None
    for b, (start, stop) in enumerate(plan.bounds()):
        path = _block_fit_path(work, b)
        fp_b = fingerprint("block", fp, b)
        files.append(path)
        if not force:
            saved = _load_checkpoint(path, fp_b)
            if saved is not None:
                previous = saved.params
                done_before.append(b + 1)
                report("separate", (b + 1) * settings.n_iter, plan.n_blocks * settings.n_iter,
                       detail=f"block {b + 1}/{plan.n_blocks} done earlier")
                continue
        X_host = _block_signals(session, settings, start, stop)[2]
        init = _load_params(work / "prior.npz")[0] if b == 0 else None
        fit, first = _fit(X_host, init, settings, work, fp_b, report, resume=not force, carry=previous,
                          block=(b, plan.n_blocks))
        iterations_run += settings.n_iter - first
        _save_params(path, fit.params, fingerprint=fp_b, iteration=settings.n_iter,
                     log_likelihood=fit.log_likelihood, ll_iterations=fit.ll_iterations, n_frames=X_host.shape[1])
        (work / "fit-checkpoint.npz").unlink(missing_ok=True)
        previous = fit.params
        del X_host
    return files, done_before, iterations_run


def _crossfade_in(n: int) -> np.ndarray:
    """Raised-cosine fade-in over ``n`` samples (0 → 1); the fade-out is ``1 - fade_in``,
    so the two weights sum to 1 at every sample."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _seam_correlation(previous_NMS: np.ndarray, current_NMS: np.ndarray) -> np.ndarray:
    """Normalised correlation [previous n, current k] of images over the overlap, all mics."""
    a = previous_NMS.reshape(len(previous_NMS), -1)
    b = current_NMS.reshape(len(current_NMS), -1)
    norms = np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    return (a @ b.T) / np.maximum(norms, 1e-30)


def write_block_images(folder: Path, session: Session, settings: ResolvedSettings, plan: MemoryPlan, report):
    """Wiener images of every source at every mic, block by block, crossfaded at the seams.

    Each block's images are made one source at a time from that block's fit; the
    region a block shares with the next is held back (``N·M·overlap`` samples) until
    the next block's images exist, then the two are matched (correlation over the
    overlap, Hungarian assignment: block b's output k goes to the source whose image
    it continues) and crossfaded with weights summing to 1. Finished samples are
    appended to raw staging files, one per (source, mic); at the end each is written
    as a WAV (one (source, mic) in memory at a time) and moved to its final name.
    """
    from scipy.optimize import linear_sum_assignment

    from studio_sep.dsp import stft
    from studio_sep.separation import fastmnmf2

    xp = xp_for_device(settings.device)
    complex_dtype = np.result_type(np.dtype(settings.dtype), np.complex64)
    native_sr, proc_sr = settings.sample_rate, settings.processing_sample_rate
    N, M = len(session.sources), len(session.mics)
    resampled = proc_sr != native_sr
    n_out = N + int(resampled)  # output N: the residual, which never moves
    store = np.float64 if settings.subtype == "float64" else np.float32
    work = folder / WORK_DIR
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "raw").mkdir(parents=True)
    raw = [[staging / "raw" / f"{n}-{m}.f{np.dtype(store).itemsize * 8}" for m in range(M)] for n in range(n_out)]
    bounds = plan.bounds()
    B = len(bounds)
    energy_NM = np.zeros((N, M))
    seams: list[dict] = []
    tail = None  # the previous block's images over its overlap with this block, in final order
    shape = [0, 0, M]

    def append(n: int, segment_MS: np.ndarray) -> None:
        if n < N:
            energy_NM[n] += np.sum(np.asarray(segment_MS, dtype=np.float64) ** 2, axis=-1)
        for m in range(M):
            with open(raw[n][m], "ab") as f:
                f.write(np.ascontiguousarray(segment_MS[m], dtype=store).tobytes())

    report("images", 0, B * N)
    for b, (start, stop) in enumerate(bounds):
        x_MS, x_proc, X_host = _block_signals(session, settings, start, stop)
        shape = [X_host.shape[0], shape[1] + X_host.shape[1], M]
        params, _ = _load_params(_block_fit_path(work, b))
        X = to_device(X_host.astype(complex_dtype, copy=False), xp)
        p = fastmnmf2.params_to(params, xp, np.dtype(settings.dtype))
        length = stop - start
        head = bounds[b - 1][1] - start if b > 0 else 0  # shared with the previous block
        keep = stop - bounds[b + 1][0] if b + 1 < B else 0  # shared with the next block
        if head + keep > length:
            raise ValueError(f"block {b + 1}: overlaps {head} + {keep} exceed its {length} samples")
        heads = np.empty((n_out, M, head))
        tails = np.empty((n_out, M, keep))
        middle = staging / "block"
        middle.mkdir(exist_ok=True)
        total_MS = np.zeros_like(x_MS) if resampled else None
        for k, S_FTM in enumerate(fastmnmf2.source_images(X, p)):
            image_proc = to_host(stft.istft(S_FTM, n_fft=settings.n_fft, hop=settings.hop,
                                            n_samples=x_proc.shape[1])).astype(np.float64)
            image = resample(image_proc, proc_sr, native_sr, n_samples=length)
            del image_proc
            if total_MS is not None:
                total_MS += image
            heads[k], tails[k] = image[:, :head], image[:, length - keep:]
            np.save(middle / f"{k}.npy", np.ascontiguousarray(image[:, head:length - keep], dtype=store))
            del image
            report("images", b * N + k + 1, B * N, detail=f"block {b + 1}/{B}")
        del S_FTM, X, X_host, x_proc
        if total_MS is not None:
            residual = x_MS - total_MS
            heads[N], tails[N] = residual[:, :head], residual[:, length - keep:]
            np.save(middle / f"{N}.npy", np.ascontiguousarray(residual[:, head:length - keep], dtype=store))
            del residual, total_MS
        del x_MS
        perm = np.arange(n_out)
        if b > 0:
            corr = _seam_correlation(tail[:N], heads[:N])  # [source n (previous block), output k (this block)]
            _, perm[:N] = linear_sum_assignment(-corr)
            seams.append({"block": b + 1, "correlation": [round(float(corr[n, perm[n]]), 4) for n in range(N)],
                          "reordered": bool(np.any(perm[:N] != np.arange(N)))})
            fade_in = _crossfade_in(head)
            for n in range(n_out):
                append(n, tail[n] * (1.0 - fade_in) + heads[perm[n]] * fade_in)
        for n in range(n_out):
            append(n, np.load(middle / f"{perm[n]}.npy"))
        tail = tails[perm]
        del heads, tails
    shutil.rmtree(staging / "block", ignore_errors=True)

    order = _assign(session, settings, energy_NM)
    for n in range(n_out):  # one (source, mic) in memory at a time
        for m, mic in enumerate(session.mics):
            samples = np.fromfile(raw[n][m], dtype=store)
            if samples.shape[0] != session.n_samples:
                raise ValueError(f"block images: {samples.shape[0]} samples assembled, expected {session.n_samples}")
            name = str(n) if n < N else RESIDUAL
            audio_io.write_audio(staging / name / f"{mic.name}.wav", samples, native_sr, subtype=settings.subtype)
            raw[n][m].unlink()
            del samples
    outputs = _publish_images(folder, session, settings, staging, order, resampled)
    shutil.rmtree(staging, ignore_errors=True)
    return outputs, order, resampled, seams, shape


def _publish_images(folder: Path, session: Session, settings: ResolvedSettings, staging: Path, order,
                    has_residual: bool) -> list[Path]:
    """Move staged images (``staging/<output>/<mic>.wav``, ``staging/_residual``) to
    their final names, output ``order[n]`` becoming manifest source n; copy the stems."""
    outputs = []
    for n, source in enumerate(session.sources):
        for mic in session.mics:
            final = folder / "images" / source.name / f"{mic.name}.wav"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / str(order[n]) / f"{mic.name}.wav", final)
            outputs.append(final)
        stem_src = folder / "images" / source.name / f"{settings.stem_mics[source.name]}.wav"
        stem = folder / "stems" / f"{source.name}.wav"
        with atomic_path(stem) as tmp:
            shutil.copyfile(stem_src, tmp)
        outputs.append(stem)
    residual_dir = folder / "images" / RESIDUAL
    if has_residual:
        residual_dir.mkdir(parents=True, exist_ok=True)
        for mic in session.mics:
            final = residual_dir / f"{mic.name}.wav"
            os.replace(staging / RESIDUAL / f"{mic.name}.wav", final)
            outputs.append(final)
    elif residual_dir.is_dir():  # from an earlier run at another rate: it no longer applies
        for f in residual_dir.glob("*.wav"):
            f.unlink()
    return outputs


def _stft(x_proc: np.ndarray, settings: ResolvedSettings) -> np.ndarray:
    from studio_sep.dsp import stft

    return stft.stft(x_proc, n_fft=settings.n_fft, hop=settings.hop)


def initial_model(session: Session, settings: ResolvedSettings, X_host: np.ndarray, *,
                  prior_V_NFT: np.ndarray | None = None):
    """The fit's starting point for the chosen init, and a description of it.

    With a prior (``prior_V_NFT``: every source's power spectrogram estimate), the
    spectral model starts from it: H by NNLS on the solo-take dictionary W with
    ``dictionary`` (paper eq. 11), else W and H by NMF of it. With ``geometry`` too,
    the prior is first brought to the demixer's scale in every frequency bin.

    Drawn from its own random stream (``seed``, 1), so a run that reuses a saved
    initial model continues exactly as one that computed it.
    """
    from studio_sep.dsp import geometry as spatial
    from studio_sep.separation import fastmnmf2

    rng = np.random.default_rng([settings.seed, 1])
    F, T, M = X_host.shape
    N = len(session.sources)
    init = fastmnmf2.circular_init(F, M, N, settings.n_basis, rng=rng)
    init = fastmnmf2.Params(init.Q_FMM, init.G_NM, init.W_NFK, rng.uniform(size=(N, settings.n_basis, T)))
    spectral_init = "random W and H"
    if "geometry" in settings.init:
        freqs = np.arange(F) * settings.processing_sample_rate / settings.n_fft
        A = spatial.steering_vectors(
            [m.position_m for m in session.mics], [s.position_m for s in session.sources], freqs,
            patterns=[m.pattern for m in session.mics],
            aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics])
        Q, G = spatial.geometry_init(A)
        init = fastmnmf2.Params(Q_FMM=Q, G_NM=G)
    if "dictionary" in settings.init:
        W = np.stack([learn_source_dictionary(session, s, settings, rng) for s in session.sources])
        init = fastmnmf2.Params(init.Q_FMM, init.G_NM, W, rng.uniform(size=(N, settings.n_basis, T)))
        spectral_init = "dictionary W, random H"
    if prior_V_NFT is not None:
        power_NFT = prior_V_NFT
        if "geometry" in settings.init:
            # Two independent estimates of each source, one spatial and one spectral: the
            # prior at the demixer's scale in every bin, then their geometric mean.
            # The bases come from the demixer's output (unless a dictionary gives them);
            # the activations from NNLS of that output combined with the prior.
            demixed_NFT = demixer_power(X_host, init.Q_FMM, N)
            power_NFT = np.sqrt(demixed_NFT * power_NFT * (
                demixed_NFT.sum(axis=(0, 2)) / np.maximum(power_NFT.sum(axis=(0, 2)), 1e-30))[None, :, None])
            if init.W_NFK is None:
                init = spectral_from_power(demixed_NFT, init, n_basis=settings.n_basis, rng=rng)
        init = spectral_from_power(power_NFT, init, n_basis=settings.n_basis, rng=rng)
        kind = settings.prior["kind"]
        if "geometry" in settings.init:
            spectral_init = ("dictionary W" if "dictionary" in settings.init else
                             "W by NMF of the geometric demixer's output power") + (
                f", H by NNLS of its geometric mean with the {kind} prior")
        else:
            spectral_init = (f"dictionary W, H by NNLS of the {kind} prior" if "dictionary" in settings.init
                             else f"W, H by NMF of the {kind} prior")
    elif "geometry" in settings.init:
        init = spectral_from_power(demixer_power(X_host, init.Q_FMM, N), init, n_basis=settings.n_basis, rng=rng)
        spectral_init = ("dictionary W, H by NNLS of the geometric demixer's output power" if "dictionary"
                         in settings.init else "W, H by NMF of the geometric demixer's output power")
    return init, spectral_init


def _fit(X_host, init, settings: ResolvedSettings, work: Path, fp: str, report, *, resume: bool, carry=None,
         block: tuple[int, int] = (0, 1)):
    """Run (or continue) the fit, checkpointing to ``work/fit-checkpoint.npz``.

    ``carry`` (a fitted block's parameters, instead of ``init``) starts the fit from
    that spatial model and those bases, with activations fitted to this data
    (:func:`studio_sep.separation.fastmnmf2.fit_activations`). ``block = (b, n_blocks)`` numbers
    the progress over all blocks.
    """
    from studio_sep.separation import fastmnmf2

    xp = xp_for_device(settings.device)
    complex_dtype = np.result_type(np.dtype(settings.dtype), np.complex64)
    X = to_device(X_host.astype(complex_dtype, copy=False), xp)
    checkpoint_path = work / "fit-checkpoint.npz"
    start = _load_checkpoint(checkpoint_path, fp) if resume else None
    if carry is not None and start is None:
        H = fastmnmf2.fit_activations(X, carry, n_iter=CARRY_H_ITERATIONS)
        init = fastmnmf2.Params(carry.Q_FMM, carry.G_NM, carry.W_NFK, H)
        del H

    def save_checkpoint(cp) -> None:
        _save_params(checkpoint_path, cp.params, fingerprint=fp, iteration=cp.iteration,
                     log_likelihood=cp.log_likelihood, ll_iterations=cp.ll_iterations)

    b, n_blocks = block
    where = f"block {b + 1}/{n_blocks}, " if n_blocks > 1 else ""
    offset, overall = b * settings.n_iter, n_blocks * settings.n_iter

    def on_iteration(it: int, total: int, ll: float) -> None:
        report("separate", offset + it, overall, detail=f"{where}log-lik {ll:.4f}")

    first = start.iteration if start else 0
    report("separate", offset + first, overall,
           detail=f"{where}resumed at iteration {first}" if start else where.rstrip(", "))
    n_sources = (start.params if start else init).G_NM.shape[0]
    fit = fastmnmf2.fit(X, n_sources=n_sources, n_basis=settings.n_basis, n_iter=settings.n_iter,
                        init=init, normalize_every=settings.normalize_every, rng=np.random.default_rng([settings.seed, 2]),
                        callback=on_iteration, log_likelihood_every=settings.log_likelihood_every, resume=start,
                        checkpoint_every=CHECKPOINT_EVERY, on_checkpoint=save_checkpoint)
    params = fastmnmf2.Params(*(np.array(to_host(a)) for a in (fit.params.Q_FMM, fit.params.G_NM,
                                                                  fit.params.W_NFK, fit.params.H_NKT)))
    return fastmnmf2.FitResult(params, fit.log_likelihood, fit.ll_iterations), first


def _load_checkpoint(path: Path, fp: str):
    from studio_sep.separation import fastmnmf2

    if not path.is_file():
        return None
    try:
        params, extra = _load_params(path)
    except (OSError, ValueError, KeyError):
        return None  # unreadable: start over
    if str(extra.get("fingerprint")) != fp:
        return None
    return fastmnmf2.Checkpoint(iteration=int(extra["iteration"]), params=params,
                                log_likelihood=np.asarray(extra["log_likelihood"]),
                                ll_iterations=np.asarray(extra["ll_iterations"]))


def _save_params(path: Path, params, **extra) -> None:
    arrays = {name: getattr(params, name) for name in ("Q_FMM", "G_NM", "W_NFK", "H_NKT")}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{f"extra_{k}": np.asarray(v) for k, v in extra.items()})


def _load_params(path: Path):
    from studio_sep.separation import fastmnmf2

    with np.load(path, allow_pickle=False) as data:
        params = fastmnmf2.Params(*(data[name] for name in ("Q_FMM", "G_NM", "W_NFK", "H_NKT")))
        extra = {k[len("extra_"):]: (data[k].item() if data[k].ndim == 0 else data[k])
                 for k in data.files if k.startswith("extra_")}
    return params, extra


def write_source_images(folder: Path, session: Session, settings: ResolvedSettings, x_MS, x_proc, X_host, params,
                        report) -> tuple[list[Path], np.ndarray, bool]:
    """Wiener images of every source at every mic, at the native rate, and the stems.

    Each output is written (atomically) to a staging folder as soon as it is made, so
    only one source's images are in memory; once all are there and the outputs are
    matched to the manifest's sources, they are moved to their final names.
    """
    from studio_sep.dsp import stft
    from studio_sep.separation import fastmnmf2

    xp = xp_for_device(settings.device)
    complex_dtype = np.result_type(np.dtype(settings.dtype), np.complex64)
    X = to_device(X_host.astype(complex_dtype, copy=False), xp)
    p = fastmnmf2.params_to(params, xp, np.dtype(settings.dtype))
    native_sr, proc_sr = settings.sample_rate, settings.processing_sample_rate
    N, M = len(session.sources), len(session.mics)
    staging = folder / WORK_DIR / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    energy_NM = np.zeros((N, M))
    total_MS = np.zeros_like(x_MS) if proc_sr != native_sr else None
    report("images", 0, N)
    for n, S_FTM in enumerate(fastmnmf2.source_images(X, p)):
        image_proc = to_host(stft.istft(S_FTM, n_fft=settings.n_fft, hop=settings.hop,
                                        n_samples=x_proc.shape[1])).astype(np.float64)
        image = resample(image_proc, proc_sr, native_sr, n_samples=x_MS.shape[1])
        energy_NM[n] = np.sum(image**2, axis=-1)
        if total_MS is not None:
            total_MS += image
        for m, mic in enumerate(session.mics):
            audio_io.write_audio(staging / str(n) / f"{mic.name}.wav", image[m], native_sr, subtype=settings.subtype)
        report("images", n + 1, N)
    order = _assign(session, settings, energy_NM)
    if total_MS is not None:
        residual_MS = x_MS - total_MS
        for m, mic in enumerate(session.mics):
            audio_io.write_audio(staging / RESIDUAL / f"{mic.name}.wav", residual_MS[m], native_sr,
                                 subtype=settings.subtype)
    outputs = _publish_images(folder, session, settings, staging, order, total_MS is not None)
    shutil.rmtree(staging, ignore_errors=True)
    return outputs, order, total_MS is not None


def demixer_power(X_FTM: np.ndarray, Q_FMM: np.ndarray, n_sources: int) -> np.ndarray:
    """Output power ``|q_fn^H x_ft|²`` of the first ``n_sources`` rows of a demixer, (N, F, T)."""
    Qx = np.matmul(X_FTM, np.swapaxes(Q_FMM, 1, 2)[:, :, :n_sources])  # (F, T, N)
    return np.moveaxis(np.abs(Qx) ** 2, 2, 0)


def spectral_from_power(power_NFT: np.ndarray, init, *, n_basis: int, rng: np.random.Generator):
    """Start λ from a power estimate of every source (a prior's, or the geometric
    demixer's output, :func:`demixer_power`).

    With a dictionary W, H is its NNLS fit to that power (paper eq. 11); without one,
    W and H are an NMF of it. Either way the spectral model starts consistent with the
    estimate instead of at random.
    """
    from studio_sep.separation import fastmnmf2
    from studio_sep.separation import nmf as prior

    N = init.G_NM.shape[0]
    if init.W_NFK is not None:
        H = np.stack([prior.nnls_activations(power_NFT[n], init.W_NFK[n]) for n in range(N)])
        return fastmnmf2.Params(init.Q_FMM, init.G_NM, init.W_NFK, H + 1e-3 * H.mean())
    W, H = zip(*(prior.nmf(power_NFT[n], n_basis=n_basis, n_iter=50, rng=rng) for n in range(N)))
    return fastmnmf2.Params(init.Q_FMM, init.G_NM, np.stack(W), np.stack(H) + 1e-3 * np.mean(H))


def learn_source_dictionary(session: Session, source, settings: ResolvedSettings, rng) -> np.ndarray:
    """NMF bases (F, K) of a source's solo reference take at the processing rate."""
    from studio_sep.dsp import stft
    from studio_sep.separation import nmf as prior

    ref, sr = audio_io.read_audio(source.reference)
    ref = resample(ref, sr, settings.processing_sample_rate)
    R = stft.stft(ref, n_fft=settings.n_fft, hop=settings.hop)[:, :, 0]
    return prior.learn_dictionary(np.abs(R) ** 2, n_basis=settings.n_basis,
                                  n_iter=settings.dictionary_iterations, rng=rng)


def _assign(session: Session, settings: ResolvedSettings, energy_NM: np.ndarray) -> np.ndarray:
    """Order of the outputs so that output n is manifest source n.

    The geometry init names sources by construction. Otherwise each output goes to the
    source whose stem mic takes the largest share of that output's energy (Hungarian
    assignment; ``energy_NM`` is each output's energy at each mic), which does not
    depend on the random start.
    """
    N = energy_NM.shape[0]
    if "geometry" in settings.init:
        return np.arange(N)
    from scipy.optimize import linear_sum_assignment

    mic_index = {m.name: i for i, m in enumerate(session.mics)}
    share_NM = energy_NM / np.maximum(energy_NM.sum(axis=0, keepdims=True), 1e-30)
    score = np.stack([share_NM[:, mic_index[settings.stem_mics[s.name]]] for s in session.sources], axis=1)
    outputs, sources = linear_sum_assignment(-score)  # score[output, source]
    order = np.empty(N, dtype=int)
    order[sources] = outputs
    return order


def read_images(folder: Path, session: Session, *, sources: Sequence[str] | None = None) -> np.ndarray:
    """Read back ``images/<source>/<mic>.wav`` as ``(N, M, S)``."""
    names = sources or [s.name for s in session.sources]
    return np.stack([np.stack([audio_io.read_audio(_image_path(folder, session, name, mic.name))[0][0]
                               for mic in session.mics]) for name in names])


def _image_path(folder: Path, session: Session, source: str, mic: str) -> Path:
    path = folder / "images" / source / f"{mic}.wav"
    if not path.is_file():
        raise InputError(path, None, "separated image not found",
                         f"run `studio-sep separate {session.path}` with the same --out first")
    return path


class LazyImages:
    """``images[n, m]``: source n's image at mic m, read from its file when asked.

    Stands in for an ``(N, M, S)`` array where only a few (source, mic) images are
    used (the mixing stage reads the mics its preset feeds, one at a time), so a long
    session's images are never all in memory.
    """

    def __init__(self, read, n_sources: int, n_mics: int, n_samples: int):
        self._read = read  #: read(n, m) -> (S,) float64
        self.shape = (n_sources, n_mics, n_samples)

    def __getitem__(self, key):
        n, m = key
        x = self._read(int(n), int(m))
        if x.shape != (self.shape[2],):
            raise InputError(None, "images", f"image {n}, mic {m} has {x.shape[-1]} samples, expected "
                             f"{self.shape[2]}", "separate the session again")
        return x


def prior_label(prior) -> str:
    """``nmf``, ``classnet (model.safetensors, sha256 1a2b3c4d…)`` or ``none`` (older runs: a string)."""
    if not isinstance(prior, dict):
        return str(prior)
    if prior.get("model"):
        return f"{prior['kind']} ({Path(prior['model']).name}, sha256 {str(prior.get('model_sha256'))[:12]}…)"
    return prior["kind"]


def _versions(device: str) -> dict[str, str]:
    import scipy

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "machine": platform.machine(), "platform": platform.platform(terse=True)}
    if device == "cuda":
        import cupy

        versions["cupy"] = cupy.__version__
    return versions


# --------------------------------------------------------------------------- evaluation


def evaluate_run(
    session: Session, out_root: str | Path, *, reference_mic: str | None = None, filter_length: int = 512,
    callback: ProgressCallback | None = None, force: bool = True, hashes: FileHashes | None = None,
    max_memory: int | None = None,
) -> dict:
    """Score a separation run against the session's ground truth; write the report.

    Signals are read one mic at a time. When scoring the whole signal at once would
    take more than ``max_memory`` bytes (default: the machine's budget; BSS Eval's
    correlations go through FFTs of twice the signal's length for every pair of
    sources), the metrics are the median over consecutive segments of
    at most :data:`EVAL_SEGMENT_S` (as in BSS Eval v4's framewise scores), and the
    report says so (``"segment_s"``).

    Metrics (SDR, SIR, SAR, SI-SDR) for every source at the reference mic (default the
    first mic) and at every source's stem mic, for the separated images and for the
    unprocessed mixture (the baseline), and their difference (the improvement).
    With ``force=False`` an up-to-date report (same images, truth and settings) is
    read back instead (its ``"skipped"`` key is then true).
    """
    from studio_sep.dsp.metrics import bss_metrics

    if not session.has_truth_images:
        raise InputError(session.path, "truth.images", "the session has no ground-truth image for every source",
                         "evaluate needs [truth.images] with one file per source")
    folder = Path(out_root) / session.name
    run_path = folder / "run.json"
    if not run_path.is_file():
        raise InputError(run_path, None, "no separation run found",
                         f"run `studio-sep separate {session.path} --out {out_root}` first")
    run = json.loads(run_path.read_text())
    stem_mics = run["separation"]["stem_mics"]
    mic_names = [m.name for m in session.mics]
    reference_mic = reference_mic or mic_names[0]
    if reference_mic not in mic_names:
        raise InputError(None, "reference-mic", f"{reference_mic!r} is not a mic of {session.name}",
                         f"mics: {', '.join(mic_names)}")
    record = RunRecord(folder)
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    N = len(session.sources)
    budget = max_memory if max_memory is not None else default_budget_bytes()
    whole = _bss_eval_bytes(session.n_samples, N) > budget  # True: too long to score at once, segments
    # segments of 2^k samples (≤ EVAL_SEGMENT_S): fast-bss-eval's FFTs are then of 2^(k+1) points, not 4×
    segment = 2 ** int(math.log2(EVAL_SEGMENT_S * session.sample_rate)) if whole else session.n_samples
    fp = fingerprint("evaluate", _images_identity(folder, session, record, hashes),
                     {s.name: hashes(session.truth.images[s.name]) for s in session.sources},
                     [hashes(f) for f in dict.fromkeys(m.file for m in session.mics)], reference_mic, filter_length,
                     segment if whole else None)
    hashes.save()
    report_json = folder / "report" / "metrics.json"
    if not force and record.is_current("evaluate", fp):
        return json.loads(report_json.read_text()) | {"skipped": True}
    clock = time.perf_counter()
    record.begin("evaluate")
    eval_mics = list(dict.fromkeys([reference_mic, *(stem_mics[s.name] for s in session.sources)]))
    for mic in eval_mics:  # every file there before any work
        for s in session.sources:
            _image_path(folder, session, s.name, mic)
    report = callback or (lambda stage, done, total, detail="": None)
    result: dict = {"separated": {}, "mixture": {}, "improvement": {}}
    # one mic at a time: truth, estimates and mixture of that mic only (long sessions)
    for done, mic in enumerate(eval_mics):
        m = mic_names.index(mic)
        scores: dict[str, list] = {"sep": [], "mix": []}
        for start in range(0, session.n_samples, segment):
            stop = min(start + segment, session.n_samples)
            if stop - start < filter_length * 4 and start > 0:
                continue  # a last sliver too short to score
            truth_NS = np.stack([audio_io.read_audio(session.truth.images[s.name], channels=[m], start=start,
                                                     stop=stop)[0][0] for s in session.sources])
            est_NS = np.stack([audio_io.read_audio(_image_path(folder, session, s.name, mic), start=start,
                                                   stop=stop)[0][0] for s in session.sources])
            scores["sep"].append(bss_metrics(truth_NS, est_NS, filter_length=filter_length))
            del est_NS
            mix_NS = np.repeat(load_mics(session, mics=[m], start=start, stop=stop), N, axis=0)
            scores["mix"].append(bss_metrics(truth_NS, mix_NS, filter_length=filter_length))
            del truth_NS, mix_NS
        sep, mix = (_median_over_segments(scores[k]) for k in ("sep", "mix"))
        for n, s in enumerate(session.sources):
            for kind, values in (("separated", sep), ("mixture", mix)):
                result[kind].setdefault(s.name, {})[mic] = {k: _db(values[k][n]) for k in METRICS}
            result["improvement"].setdefault(s.name, {})[mic] = {
                k: (None if k == "sar" else _db(sep[k][n] - mix[k][n])) for k in METRICS}
        report("evaluate", done + 1, len(eval_mics))

    def mean_over(kind: str, pick_mic: Callable[[str], str]) -> dict:
        return {k: _mean([result[kind][s.name][pick_mic(s.name)][k] for s in session.sources]) for k in METRICS}

    result["means"] = {
        "at_reference_mic": {kind: mean_over(kind, lambda s: reference_mic) for kind in result},
        "at_stem_mic": {kind: mean_over(kind, lambda s: stem_mics[s]) for kind in
                        ("separated", "mixture", "improvement")},
    }
    metrics = {"session": session.name, "reference_mic": reference_mic, "stem_mics": stem_mics,
               "mics_evaluated": eval_mics, "filter_length": filter_length, "metrics": list(METRICS),
               **({"segment_s": round(segment / session.sample_rate, 4), "aggregate": "median over segments"}
                  if whole else {}),
               "init": run["separation"]["init"], "prior": run["separation"].get("prior", "none"), **result}
    write_text_atomic(report_json, json.dumps(metrics, indent=2))
    write_text_atomic(folder / "report" / "metrics.md", metrics_markdown(metrics))
    record.finish("evaluate", fp, [report_json, folder / "report" / "metrics.md"],
                  elapsed_s=time.perf_counter() - clock,
                  sdr_at_reference_mic=metrics["means"]["at_reference_mic"]["separated"]["sdr"])
    return metrics


#: Longest segment of the framewise scores of a session too long to score at once
#: (the segment is the largest power of two of samples within it: 21.8 s at 48 kHz).
EVAL_SEGMENT_S = 30.0


def _bss_eval_bytes(n_samples: int, n_sources: int) -> int:
    """Memory of BSS Eval on whole signals (fast-bss-eval): spectra of 2·n_samples
    points for every source and pair of sources, and the signals (measured 2.6 GiB for
    3 sources × 2.88 M samples; this says 4.0)."""
    n_fft = 2 ** math.ceil(math.log2(max(2 * n_samples - 1, 1)))
    return 40 * (n_sources**2 + n_sources) * n_fft + 4 * n_sources * n_samples * 8


def _median_over_segments(scores: list[dict]) -> dict:
    """One segment: its scores as they are. Several: the median of the finite values."""
    if len(scores) == 1:
        return scores[0]
    out = {}
    for k in METRICS:
        values = np.stack([s[k] for s in scores])  # (segments, N)
        with np.errstate(invalid="ignore"):
            out[k] = np.array([np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan for v in values.T])
    return out


def _images_identity(folder: Path, session: Session, record: RunRecord, hashes: FileHashes) -> str:
    """What the separated images are: the images stage's fingerprint when recorded,
    else the files' content."""
    images = record.stage("images")
    if images:
        return images["fingerprint"]
    return fingerprint([hashes(p) for p in sorted((folder / "images").rglob("*.wav"))])


def _db(v: float) -> float | None:
    v = float(v)
    return round(v, 3) if math.isfinite(v) else None


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return round(sum(finite) / len(finite), 3) if finite and len(finite) == len(values) else None


def metrics_rows(metrics: dict) -> list[list[str]]:
    """Table rows: source, mic, then separated/mixture/improvement SDR, SIR, SAR, SI-SDR."""
    fmt = lambda v: "—" if v is None else f"{v:+.2f}"  # noqa: E731
    rows = []
    for source, per_mic in metrics["separated"].items():
        mics = [metrics["reference_mic"], metrics["stem_mics"][source]]
        for mic in dict.fromkeys(mics):
            sep, mix, imp = (metrics[k][source][mic] for k in ("separated", "mixture", "improvement"))
            rows.append([source, mic + (" (ref)" if mic == metrics["reference_mic"] else " (stem)"),
                         *(fmt(sep[k]) for k in METRICS), fmt(mix["sdr"]), fmt(imp["sdr"]), fmt(imp["si_sdr"])])
    for label, key in (("mean", "at_reference_mic"), ("mean", "at_stem_mic")):
        mean = metrics["means"][key]
        rows.append([label, "ref mic" if key == "at_reference_mic" else "stem mics",
                     *(fmt(mean["separated"][k]) for k in METRICS), fmt(mean["mixture"]["sdr"]),
                     fmt(mean["improvement"]["sdr"]), fmt(mean["improvement"]["si_sdr"])])
    return rows


METRICS_HEADER = ["source", "mic", "SDR", "SIR", "SAR", "SI-SDR", "mix SDR", "ΔSDR", "ΔSI-SDR"]


def metrics_markdown(metrics: dict) -> str:
    lines = [f"# Separation metrics: {metrics['session']}", "",
             f"init: {', '.join(metrics['init'])}; prior: {prior_label(metrics['prior'])}; reference mic: "
             f"{metrics['reference_mic']}; dB, BSS Eval filter length {metrics['filter_length']}. "
             "'mix' is the unprocessed mic signal; Δ is the improvement over it.", "",
             "| " + " | ".join(METRICS_HEADER) + " |", "|" + "---|" * len(METRICS_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in metrics_rows(metrics)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- mixing


@dataclass(frozen=True)
class MixOutcome:
    remix: Path
    project: Path
    stems: tuple[Path, ...]
    report: dict
    skipped: bool = False  #: up to date: nothing was rendered


def mix_session(
    session: Session,
    out_root: str | Path,
    preset_path: str | Path,
    *,
    source: str = "run",
    overrides=None,
    callback: ProgressCallback | None = None,
    force: bool = True,
    hashes: FileHashes | None = None,
) -> MixOutcome:
    """Mix a session's separated images (``source="run"``) or its ground-truth images
    (``source="truth"``) with a preset; write the remix, the DAW stems and project.

    Everything is checked (preset, routing against the session, every plugin and
    parameter) before anything is rendered. With ``force=False`` an up-to-date mix
    (same images, preset file, plugins and overrides) is not redone.
    """
    from studio_sep.io.daw import Track, write_reaper_project
    from studio_sep import mixing
    from studio_sep.mixing.plugins import host as plugin_host
    from studio_sep.mixing.presets import load_preset

    preset = load_preset(preset_path)
    overrides = overrides or mixing.Overrides()
    folder = Path(out_root) / session.name
    if source == "run":
        run_path = folder / "run.json"
        if not run_path.is_file():
            raise InputError(run_path, None, "no separation run to mix",
                             f"run `studio-sep separate {session.path} --out {out_root}` first, or mix --from truth")
        stem_mics = json.loads(run_path.read_text())["separation"]["stem_mics"]
    elif source == "truth":
        if not session.has_truth_images:
            raise InputError(session.path, "truth.images", "no ground-truth image for every source",
                             "mix --from run (the separated images) instead")
        stem_mics = _stem_mics(session, {})
    else:
        raise InputError(None, "--from", f"{source!r} is not run or truth", "pick one of those")
    sample_rate = session.sample_rate
    routes = mixing.resolve_routes(session, preset, stem_mics, overrides, sample_rate=sample_rate)
    chains = mixing.preset_chains(preset, routes)
    record = RunRecord(folder)
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    plugins = sorted({str(spec.path) for chain, _ in chains for spec in chain if spec.path is not None})
    inputs = (_images_identity(folder, session, record, hashes) if source == "run" else
              {s.name: hashes(session.truth.images[s.name]) for s in session.sources})
    fp = fingerprint("mix", source, inputs, hashes(preset.path), [_bundle_identity(p) for p in plugins],
                     asdict(overrides), stem_mics, sample_rate)
    stage = f"mix:{preset.name}"
    report_path = folder / "remix" / f"{preset.name}.json"
    if not force and record.is_current(stage, fp):
        report = json.loads(report_path.read_text())
        return MixOutcome(remix=Path(report["remix"]), project=Path(report["project"]),
                          stems=tuple(Path(p) for p in report["stems"]), report=report, skipped=True)
    mixing.check_preset(preset, sample_rate=sample_rate, routes=routes)
    hashes.save()
    clock = time.perf_counter()
    record.begin(stage)

    names = [s.name for s in session.sources]
    if source == "run":
        for route in routes:  # every image the preset feeds is there before any rendering
            for feed in route.feeds:
                _image_path(folder, session, route.source, session.mics[feed.mic].name)
        read = lambda n, m: audio_io.read_audio(  # noqa: E731
            folder / "images" / names[n] / f"{session.mics[m].name}.wav")[0][0]
    else:
        read = lambda n, m: audio_io.read_audio(session.truth.images[names[n]], channels=[m])[0][0]  # noqa: E731
    images = LazyImages(read, len(names), len(session.mics), session.n_samples)
    result = mixing.mix(images, routes, preset, sample_rate=sample_rate, render_chain=plugin_host.render_chain,
                        callback=callback)
    warnings = list(result.report["warnings"])
    remix, clipped = mixing.clip_for_format(result.remix_2S, preset.format, "remix")
    warnings += clipped
    stamp = _dt.datetime.now(_dt.timezone.utc)
    remix_path = audio_io.write_audio(folder / "remix" / f"{preset.name}.wav", remix, sample_rate,
                                      subtype=preset.format)
    daw_dir = folder / "daw" / preset.name
    stems, tracks = [], []
    for n, route in enumerate(result.routes):
        stem, clipped = mixing.clip_for_format(result.stems_N2S[n], preset.format, f"stem {route.source}")
        warnings += clipped
        path = daw_dir / f"{n + 1:02d}_{route.source}.wav"
        bext = audio_io.Bext(description=f"{session.name} {route.source} ({preset.name}, pre-fader)",
                             originator_reference=f"studio-sep {__version__}",
                             origination_date=stamp.strftime("%Y-%m-%d"),
                             origination_time=stamp.strftime("%H:%M:%S"), time_reference=0,
                             coding_history=f"A=PCM,F={sample_rate},T=studio-sep mix {preset.name}")
        stems.append(audio_io.write_audio(path, stem, sample_rate, subtype=preset.format, bext=bext))
        tracks.append(Track(name=f"{n + 1:02d} {route.source}", file=path, gain_db=route.gain_db, pan=route.pan,
                            mute=not route.audible))
    project = write_reaper_project(daw_dir / f"{session.name}_{preset.name}.RPP", tracks, sample_rate=sample_rate,
                                   length_samples=result.remix_2S.shape[1])
    report = {"preset": str(preset.path), "preset_name": preset.name, "from": source, "format": preset.format,
              **result.report, "warnings": warnings, "remix": str(remix_path), "project": str(project),
              "stems": [str(p) for p in stems]}
    write_text_atomic(report_path, json.dumps(report, indent=2))
    record.finish(stage, fp, [remix_path, project, report_path, *stems], elapsed_s=time.perf_counter() - clock)
    return MixOutcome(remix=remix_path, project=project, stems=tuple(stems), report=report)


def _bundle_identity(path: str) -> list:
    """A plugin bundle (file or .vst3 folder) by its files' names, sizes and times."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
