"""The images of a session separated in overlapping time blocks: each block's images,
matched to the previous block's at the seam and crossfaded over the overlap, assembled
into one image per (source, mic)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from studio_sep.io import audio as audio_io
from studio_sep.session import Session
from studio_sep.stages.checkpoints import block_fit_path, load_params
from studio_sep.stages.images import RESIDUAL, assign_sources, native_images, publish_images
from studio_sep.stages.memory import MemoryPlan
from studio_sep.stages.runrecord import WORK_DIR
from studio_sep.stages.settings import ResolvedSettings
from studio_sep.stages.signals import mic_signals


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


# Long: one loop over the blocks, since the seam matching needs the previous block's tail and this one's head.
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
        x_MS, x_proc, X_host = mic_signals(session, settings, start, stop)
        shape = [X_host.shape[0], shape[1] + X_host.shape[1], M]
        params, _ = load_params(block_fit_path(work, b))
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
        for k, image in enumerate(native_images(X_host, params, settings, x_proc.shape[1], length)):
            if total_MS is not None:
                total_MS += image
            heads[k], tails[k] = image[:, :head], image[:, length - keep:]
            np.save(middle / f"{k}.npy", np.ascontiguousarray(image[:, head:length - keep], dtype=store))
            del image
            report("images", b * N + k + 1, B * N, detail=f"block {b + 1}/{B}")
        del X_host, x_proc
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

    outputs, order = _assemble(folder, session, settings, staging, raw, energy_NM, resampled)
    return outputs, order, resampled, seams, shape


def _assemble(folder: Path, session: Session, settings: ResolvedSettings, staging: Path, raw: list[list[Path]],
              energy_NM: np.ndarray, resampled: bool) -> tuple[list[Path], np.ndarray]:
    """Each (output, mic)'s raw staging file as a WAV, then published as manifest source
    ``order``; returns the published files and the order."""
    N = len(session.sources)
    n_out = N + int(resampled)
    store = np.float64 if settings.subtype == "float64" else np.float32
    native_sr = settings.sample_rate
    order = assign_sources(session, settings, energy_NM)
    for n in range(n_out):  # one (source, mic) in memory at a time
        for m, mic in enumerate(session.mics):
            samples = np.fromfile(raw[n][m], dtype=store)
            if samples.shape[0] != session.n_samples:
                raise ValueError(f"block images: {samples.shape[0]} samples assembled, expected {session.n_samples}")
            name = str(n) if n < N else RESIDUAL
            audio_io.write_audio(staging / name / f"{mic.name}.wav", samples, native_sr, subtype=settings.subtype)
            raw[n][m].unlink()
            del samples
    outputs = publish_images(folder, session, settings, staging, order, resampled)
    shutil.rmtree(staging, ignore_errors=True)
    return outputs, order
