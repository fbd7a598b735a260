"""The separated images: made from a fit (one source at a time), staged, matched to the
manifest's sources and published under ``images/`` and ``stems/``; read back whole
(:func:`read_images`) or one (source, mic) at a time (:class:`LazyImages`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from studio_sep.dsp.backend import device_spectrogram, to_host
from studio_sep.dsp.resample import resample
from studio_sep.io import audio as audio_io
from studio_sep.separation.initial import assign_outputs
from studio_sep.session import Session
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, RunRecord, fingerprint
from studio_sep.stages.settings import ResolvedSettings, has_own_spot_mics
from studio_sep.util.atomic import atomic_path
from studio_sep.util.errors import InputError

RESIDUAL = "_residual"


def native_images(X_host: np.ndarray, params, settings: ResolvedSettings, n_proc: int, n_samples: int):
    """Every source's Wiener image at every mic, ``(M, n_samples)`` float64 at the native
    rate, one source at a time (only one is in memory); ``n_proc`` is the signal's length
    at the processing rate. ``params``: one fit, or a list of an ensemble's fits (their
    outputs in one order), combined by :func:`studio_sep.separation.wiener.ensemble_images`."""
    from studio_sep.dsp import stft
    from studio_sep.separation import fastmnmf2, wiener

    xp, X = device_spectrogram(X_host, settings.device, settings.dtype)
    if isinstance(params, list):
        images = wiener.ensemble_images(X, [fastmnmf2.params_to(p, xp, np.dtype(settings.dtype)) for p in params])
    else:
        images = wiener.source_images(X, fastmnmf2.params_to(params, xp, np.dtype(settings.dtype)))
    for S_FTM in images:
        image_proc = to_host(stft.istft(S_FTM, n_fft=settings.n_fft, hop=settings.hop,
                                        n_samples=n_proc)).astype(np.float64)
        image = resample(image_proc, settings.processing_sample_rate, settings.sample_rate, n_samples=n_samples)
        del image_proc
        yield image
        del image


def write_source_images(folder: Path, session: Session, settings: ResolvedSettings, x_MS, x_proc, X_host, params,
                        report) -> tuple[list[Path], np.ndarray, bool]:
    """Wiener images of every source at every mic, at the native rate, and the stems.

    Each output is written (atomically) to a staging folder as soon as it is made, so
    only one source's images are in memory; once all are there and the outputs are
    matched to the manifest's sources, they are moved to their final names.
    """
    native_sr, proc_sr = settings.sample_rate, settings.processing_sample_rate
    N, M = len(session.sources), len(session.mics)
    staging = folder / WORK_DIR / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    energy_NM = np.zeros((N, M))
    total_MS = np.zeros_like(x_MS) if proc_sr != native_sr else None
    report("images", 0, N)
    for n, image in enumerate(native_images(X_host, params, settings, x_proc.shape[1], x_MS.shape[1])):
        energy_NM[n] = np.sum(image**2, axis=-1)
        if total_MS is not None:
            total_MS += image
        for m, mic in enumerate(session.mics):
            audio_io.write_audio(staging / str(n) / f"{mic.name}.wav", image[m], native_sr, subtype=settings.subtype)
        report("images", n + 1, N)
    order = assign_sources(session, settings, energy_NM)
    if total_MS is not None:
        residual_MS = x_MS - total_MS
        for m, mic in enumerate(session.mics):
            audio_io.write_audio(staging / RESIDUAL / f"{mic.name}.wav", residual_MS[m], native_sr,
                                 subtype=settings.subtype)
    outputs = publish_images(folder, session, settings, staging, order, total_MS is not None)
    shutil.rmtree(staging, ignore_errors=True)
    return outputs, order, total_MS is not None


def publish_images(folder: Path, session: Session, settings: ResolvedSettings, staging: Path, order,
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


def assign_sources(session: Session, settings: ResolvedSettings, energy_NM: np.ndarray) -> np.ndarray:
    """Order of the outputs so that output n is manifest source n.

    When every source has a spot mic of its own, each output goes to the source whose
    spot mic takes the largest share of that output's energy
    (:func:`studio_sep.separation.initial.assign_outputs`): what the recording shows, over
    the typed geometry (on the scene zoo the geometric start named sources wrongly on 3
    of 15 sessions with spot mics; this rule renamed those 3, +0.95 … +2.61 dB, and left
    the 12 right ones: benchmarks/README.md).
    Otherwise the geometry init names sources by construction, and any other init by the
    share at each source's stem mic.
    """
    naming = source_naming(session, settings)
    if naming == "geometry":
        return np.arange(energy_NM.shape[0])
    mic_index = {m.name: i for i, m in enumerate(session.mics)}
    mics = [s.spot_mic if naming == "spot mics" else settings.stem_mics[s.name] for s in session.sources]
    return assign_outputs(energy_NM, [mic_index[m] for m in mics])


def source_naming(session: Session, settings: ResolvedSettings) -> str:
    """How outputs get their sources' names (:func:`assign_sources`): "spot mics" when every
    source has a spot mic of its own, else "geometry" with the geometry or delays init (the
    typed positions name the outputs), else "stem mics"."""
    if has_own_spot_mics(session):
        return "spot mics"
    return "geometry" if "geometry" in settings.init or "delays" in settings.init else "stem mics"


def read_images(folder: Path, session: Session, *, sources: Sequence[str] | None = None) -> np.ndarray:
    """Read back ``images/<source>/<mic>.wav`` as ``(N, M, S)``."""
    names = sources or [s.name for s in session.sources]
    return np.stack([np.stack([audio_io.read_audio(image_path(folder, session, name, mic.name))[0][0]
                               for mic in session.mics]) for name in names])


def image_path(folder: Path, session: Session, source: str, mic: str) -> Path:
    """The path of a separated image, which must exist."""
    path = folder / "images" / source / f"{mic}.wav"
    if not path.is_file():
        raise InputError(path, None, "separated image not found",
                         f"run `studio-sep separate {session.path}` with the same --out first")
    return path


def images_identity(folder: Path, session: Session, record: RunRecord, hashes: FileHashes) -> str:
    """What the separated images are: the images stage's fingerprint when recorded,
    else the files' content."""
    images = record.stage("images")
    if images:
        return images["fingerprint"]
    return fingerprint([hashes(p) for p in sorted((folder / "images").rglob("*.wav"))])


class LazyImages:
    """``images[n, m]``: source n's image at mic m, read from its file when asked.

    Stands in for an ``(N, M, S)`` array where only a few (source, mic) images are
    used (the mixing stage reads the mics its preset feeds, a block at a time with
    :meth:`segment`), so a long session's images are never all in memory.
    """

    def __init__(self, read, n_sources: int, n_mics: int, n_samples: int):
        self._read = read  #: read(n, m, start, stop) -> (stop - start,) float64
        self.shape = (n_sources, n_mics, n_samples)

    def __getitem__(self, key):
        n, m = key
        return self.segment(n, m, 0, self.shape[2])

    def segment(self, n: int, m: int, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of source n's image at mic m (the streaming mix reads these)."""
        x = self._read(int(n), int(m), int(start), int(stop))
        if x.shape != (stop - start,):
            raise InputError(None, "images", f"image {n}, mic {m} has {x.shape[-1] + start} samples, expected "
                             f"{self.shape[2]}", "separate the session again")
        return x
