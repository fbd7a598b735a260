"""The prior stage: the spectral prior (if any) and the fit's initial model, from the
signals of the session (or of its first time block), into ``.studio-sep/prior.npz``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio_sep.separation.initial import initial_model
from studio_sep.session import Session
from studio_sep.stages.checkpoints import save_params
from studio_sep.stages.runrecord import RunRecord
from studio_sep.stages.settings import ResolvedSettings
from studio_sep.stages.signals import reference_power


def prior_path(work: Path, member: int = 0, start: str | None = None) -> Path:
    """The initial model of an ensemble's ``member`` (0: the single fit's, ``prior.npz``);
    for a second spatial start (``start``, e.g. "spot"), ``prior-<start>-<member>.npz``."""
    if start is not None:
        return work / f"prior-{start}-{member}.npz"
    return work / ("prior.npz" if member == 0 else f"prior-{member}.npz")


def later_start(settings: ResolvedSettings, start: str | None) -> str | None:
    """``start`` when it is a spatial start after the first (its files carry its name), else None."""
    return start if start is not None and start != settings.spatial_starts[0] else None


#: The pair start searches lags up to this times the typed spacing's limit (±d/c), plus 2
#: samples: the typed spacing may be off by a few centimetres too.
PAIR_LAG_MARGIN = 1.3


def measured_pair_delays(session: Session, settings: ResolvedSettings, x_proc: np.ndarray) -> np.ndarray:
    """The pair start's delays (samples at the processing rate, mic 1 against mic 0): the
    recording's highest GCC-PHAT peaks, one per source, within the lags the typed spacing
    allows (with :data:`PAIR_LAG_MARGIN` for a spacing typed a little off)."""
    from studio_sep.dsp.delays import gcc_phat_peaks
    from studio_sep.dsp.geometry import SPEED_OF_SOUND_M_S

    spacing = float(np.linalg.norm(np.subtract(session.mics[1].position_m, session.mics[0].position_m)))
    max_lag = PAIR_LAG_MARGIN * spacing / SPEED_OF_SOUND_M_S * settings.processing_sample_rate + 2.0
    return gcc_phat_peaks(x_proc[0], x_proc[1], len(session.sources), max_lag=max_lag)


def prior_stage(session: Session, settings: ResolvedSettings, record: RunRecord, fp: str, work: Path, report,
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
        from studio_sep.priors import PriorSpec, compute_prior

        spec = PriorSpec.from_dict(settings.prior)
        result = compute_prior(spec, session, settings, x_proc, X_host,
                               callback=lambda done, total: report("prior", done, total + 1, detail=spec.kind))
        prior_V, prior_record = result.V_NFT, result.record
    else:
        prior_record = settings.prior
    corrections = None
    if settings.measured_delays:
        from studio_sep.stages.geometry import delay_corrections_s

        corrections = delay_corrections_s(session, x_proc, settings.processing_sample_rate,
                                          stem_mics=settings.stem_mics)
    inputs = dict(
        n_sources=len(session.sources), n_basis=settings.n_basis,
        seed=settings.seed, sample_rate=settings.processing_sample_rate, n_fft=settings.n_fft,
        mic_positions=[m.position_m for m in session.mics],
        source_positions=[s.position_m for s in session.sources], patterns=[m.pattern for m in session.mics],
        aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics],
        reference_power=reference_power(session, settings) if "dictionary" in settings.init else None,
        dictionary_iterations=settings.dictionary_iterations, prior_V_NFT=prior_V,
        prior_kind=settings.prior["kind"], delay_corrections_s=corrections,
        spot_mic_index=[[m.name for m in session.mics].index(s.spot_mic) for s in session.sources]
        if "spot" in settings.init else None,
        pair_delays=measured_pair_delays(session, settings, x_proc) if "delays" in settings.init else None)
    files, described, starts = [], {}, settings.spatial_starts
    for j, spatial in enumerate(starts):  # every spatial start (geometry, spot, delays: each)
        for k in range(settings.ensemble):  # every member of an ensemble: the same init, its own random start
            init, described[spatial] = initial_model(X_host, **inputs, init_kinds=settings.start_init(spatial),
                                                     start=k)
            files.append(prior_path(work, k, later_start(settings, spatial)))
            save_params(files[-1], init, spectral_init=described[spatial])
            report("prior", j * settings.ensemble + k + 1, len(starts) * settings.ensemble + 1)
    spectral_init = described[starts[0]]
    record.finish("prior", fp, files, elapsed_s=time.perf_counter() - clock,
                  spectral_init=spectral_init, prior=prior_record,
                  **({} if corrections is None else {"delay_corrections_ms": np.round(1e3 * corrections, 4).tolist()}),
                  **({} if inputs["pair_delays"] is None else
                     {"pair_delays_samples": np.round(inputs["pair_delays"], 3).tolist()}))
    report("prior", 1, 1)
    return "ran"
