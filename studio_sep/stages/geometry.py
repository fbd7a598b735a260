"""Does the recording agree with the manifest's coordinates? Delays measured by GCC-PHAT
against those the typed positions imply (:func:`studio_sep.dsp.delays.check_delays`).

Users type coordinates by hand; this is where they go wrong. For every source, each mic's
delay against the source's stem mic (its spot mic, else the nearest mic: where the source
dominates) is measured on the recording and compared with the manifest's geometry. A mic
whose distances to the sources disagree by more than :data:`WARN_M` gets a warning line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from studio_sep.dsp.delays import DelayCheck, check_delays
from studio_sep.dsp.geometry import pattern_gains
from studio_sep.dsp.resample import resample
from studio_sep.session import Session, load_mics
from studio_sep.stages.settings import choose_stem_mics

#: A mic whose distances to the sources are off by more than this gets a warning.
WARN_M = 0.10
#: Seconds of the recording the check reads (from the start): plenty for the delays.
CHECK_SECONDS = 60.0
CHECK_RATE = 16000
#: A (mic, source) pair is measured only where the mic's pattern, as the manifest gives it,
#: passes the source's direct sound at least this much (not near a null, where a reflection
#: would win).
MIN_GAIN = 0.5


@dataclass(frozen=True)
class GeometryReport:
    """The check's result: one row per (source, mic) pair, each mic's error, the warnings."""

    rows: list[dict] = field(default_factory=list)
    mic_error_cm: dict[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def check_geometry(session: Session, *, seconds: float = CHECK_SECONDS) -> GeometryReport:
    """Compare the delays the recording shows with those the manifest's coordinates imply.

    Reads at most ``seconds`` of the mics (at :data:`CHECK_RATE`); ``session`` must have been
    loaded with its audio checked. Never reads the ground truth.
    """
    if len(session.mics) < 2:
        return GeometryReport()
    stop = min(session.n_samples, int(seconds * session.sample_rate))
    rate = min(CHECK_RATE, session.sample_rate)
    check = session_delays(session, resample(load_mics(session, stop=stop), session.sample_rate, rate), rate)
    names = [m.name for m in session.mics]
    reference = check.reference
    rows = []
    for n, s in enumerate(session.sources):
        for m, mic in enumerate(session.mics):
            if m == reference[n]:
                continue
            rows.append({"source": s.name, "reference_mic": names[reference[n]], "mic": mic.name,
                         "implied_ms": round(1e3 * float(check.implied_s[m, n]), 3),
                         "measured_ms": round(1e3 * float(check.measured_s[m, n]), 3),
                         "error_cm": round(100 * float(check.range_error_m[m, n]), 1),
                         "peak": round(float(check.peak[m, n]), 3)})
    errors = {mic.name: (None if np.isnan(e) else round(100 * float(e), 1))
              for mic, e in zip(session.mics, check.mic_error_m)}
    warnings = [f"mic {mic.name!r} looks misplaced: its distances to the sources differ from the manifest's by "
                f"about {errors[mic.name]:.0f} cm (GCC-PHAT on the recording); check its position_m in {session.path}"
                for mic in session.mics if errors[mic.name] is not None and errors[mic.name] > 100 * WARN_M]
    return GeometryReport(rows=rows, mic_error_cm=errors, warnings=warnings)


def session_delays(session: Session, x_MS: np.ndarray, rate: int, *, stem_mics=None) -> DelayCheck:
    """Every source's delays at every mic against its stem mic, measured on ``x_MS`` (the
    mics at ``rate``) and implied by the manifest (:func:`studio_sep.dsp.delays.check_delays`),
    on the pairs where the manifest's patterns pass the source's direct sound."""
    names = [m.name for m in session.mics]
    stem = stem_mics or choose_stem_mics(session, {})
    reference = [names.index(stem[s.name]) for s in session.sources]
    mics_m = [m.position_m for m in session.mics]
    sources_m = [s.position_m for s in session.sources]
    gains = pattern_gains(mics_m, sources_m, [m.pattern for m in session.mics],
                          [(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics])
    return check_delays(x_MS, rate, mics_m, sources_m, reference, usable=np.abs(gains) >= MIN_GAIN)


def delay_corrections_s(session: Session, x_MS: np.ndarray, rate: int, *, stem_mics=None) -> np.ndarray:
    """``(M, N)`` seconds to add to the manifest's delay of source n at mic m so that the
    delays between mics are those the recording shows (GCC-PHAT against the source's stem
    mic); 0 where nothing could be measured (and at the stem mic itself), and at every mic
    the check does not find misplaced by more than :data:`WARN_M` (a single pair's peak in a
    mixture may be a reflection's: on a manifest that is right, correcting every pair costs
    dB)."""
    check = session_delays(session, x_MS, rate, stem_mics=stem_mics)
    misplaced = np.nan_to_num(check.mic_error_m, nan=0.0) > WARN_M
    return np.where(misplaced[:, None], np.nan_to_num(check.measured_s - check.implied_s, nan=0.0), 0.0)
