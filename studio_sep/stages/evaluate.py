"""The evaluate stage: a separation run scored against the session's ground truth
(BSS Eval metrics at the reference and stem mics, and the unprocessed mixture's), written
to ``report/metrics.json`` and ``report/metrics.md``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio_sep.dsp.metrics import METRICS, NUMERICAL_CEILING_DB
from studio_sep.io import audio as audio_io
from studio_sep.session import Session, load_mics
from studio_sep.stages.images import image_path, images_identity
from studio_sep.stages.memory import default_budget_bytes
from studio_sep.stages.report import metrics_markdown
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, ProgressCallback, RunRecord, fingerprint
from studio_sep.util.atomic import write_text_atomic
from studio_sep.util.errors import InputError
from studio_sep.util.jsonfile import write_json_atomic


# Long by its docstring and its checks; the scoring is in _score_at_mic.
def evaluate_run(
    session: Session, out_root: str | Path, *, reference_mic: str | None = None, filter_length: int = 512,
    callback: ProgressCallback | None = None, force: bool = True, hashes: FileHashes | None = None,
    max_memory: int | None = None,
) -> dict:
    """Score a separation run against the session's ground truth; write the report.

    Signals are read one segment at a time. When scoring the whole signal at once would
    take more than ``max_memory`` bytes (default: the machine's budget), or more than
    :data:`EVAL_MAX_BYTES` whatever the budget (BSS Eval's correlations go through FFTs
    of twice the signal's length for every pair of sources), the metrics are the median
    over consecutive segments of at most :data:`EVAL_SEGMENT_S` (as in BSS Eval v4's
    framewise scores), and the report says so (``"segment_s"``).

    Metrics (SDR, SIR, SAR, SI-SDR) for every source at the reference mic (default the
    first mic) and at every source's stem mic, for the separated images and for the
    unprocessed mixture (the baseline), and their difference (the improvement).
    With ``force=False`` an up-to-date report (same images, truth and settings) is
    read back instead (its ``"skipped"`` key is then true).
    """
    if not session.has_truth_images:
        raise InputError(session.path, "truth.images", "the session has no ground-truth image for every source",
                         "evaluate needs [truth.images] with one file per source")
    folder = Path(out_root) / session.name
    record = RunRecord(folder)
    separation = record.separation()
    if separation is None:
        raise InputError(record.path, None, "no separation run found",
                         f"run `studio-sep separate {session.path} --out {out_root}` first")
    stem_mics = separation["stem_mics"]
    mic_names = [m.name for m in session.mics]
    reference_mic = reference_mic or mic_names[0]
    if reference_mic not in mic_names:
        raise InputError(None, "reference-mic", f"{reference_mic!r} is not a mic of {session.name}",
                         f"mics: {', '.join(mic_names)}")
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    N = len(session.sources)
    budget = min(max_memory if max_memory is not None else default_budget_bytes(), EVAL_MAX_BYTES)
    whole = _bss_eval_bytes(session.n_samples, N) > budget  # True: too long to score at once, segments
    # segments of 2^k samples (≤ EVAL_SEGMENT_S): fast-bss-eval's FFTs are then of 2^(k+1) points, not 4×
    segment = 2 ** int(math.log2(EVAL_SEGMENT_S * session.sample_rate)) if whole else session.n_samples
    fp = fingerprint("evaluate", images_identity(folder, session, record, hashes),
                     {s.name: hashes(session.truth.images[s.name]) for s in session.sources},
                     [hashes(f) for f in dict.fromkeys(m.file for m in session.mics)], reference_mic, filter_length,
                     segment if whole else None)
    hashes.save()
    report_json = folder / "report" / "metrics.json"
    if not force and record.is_current("evaluate", fp):
        metrics = json.loads(report_json.read_text())
        if _has_mean_sdr(metrics):  # else a report of the wrong shape: scored again
            return metrics | {"skipped": True}
    clock = time.perf_counter()
    record.begin("evaluate")
    eval_mics = list(dict.fromkeys([reference_mic, *(stem_mics[s.name] for s in session.sources)]))
    for mic in eval_mics:  # every file there before any work
        for s in session.sources:
            image_path(folder, session, s.name, mic)
    report = callback or (lambda stage, done, total, detail="": None)
    result: dict = {"separated": {}, "mixture": {}, "improvement": {}}
    scores = _score_segments(folder, session, eval_mics, segment, filter_length, report)
    for mic in eval_mics:
        sep, mix = scores[mic]
        for n, s in enumerate(session.sources):
            for kind, values in (("separated", sep), ("mixture", mix)):
                result[kind].setdefault(s.name, {})[mic] = {k: _db(values[k][n]) for k in METRICS}
            result["improvement"].setdefault(s.name, {})[mic] = {
                k: (None if k == "sar" else _db(sep[k][n] - mix[k][n])) for k in METRICS}

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
               "init": separation["init"], "prior": separation.get("prior", "none"), "null": NULL_NOTE, **result}
    write_json_atomic(report_json, metrics)
    write_text_atomic(folder / "report" / "metrics.md", metrics_markdown(metrics))
    record.finish("evaluate", fp, [report_json, folder / "report" / "metrics.md"],
                  elapsed_s=time.perf_counter() - clock,
                  sdr_at_reference_mic=metrics["means"]["at_reference_mic"]["separated"]["sdr"])
    return metrics



def _score_segments(folder: Path, session: Session, eval_mics: list[str], segment: int, filter_length: int,
                    report) -> dict[str, tuple[dict, dict]]:
    """The separated images' and the mixture's scores at each mic of ``eval_mics``, against
    the truth there, segment by segment (median over segments when more than one).

    Segment by segment, every file is read once (the truth's channels at all the mics,
    the mixture's, each estimate), so only one segment of the signals is in memory.
    """
    from studio_sep.dsp.metrics import bss_metrics

    N = len(session.sources)
    mic_index = [[m.name for m in session.mics].index(mic) for mic in eval_mics]
    starts = [start for start in range(0, session.n_samples, segment)
              if start == 0 or min(start + segment, session.n_samples) - start >= filter_length * 4]
    scores: dict[str, dict[str, list]] = {mic: {"sep": [], "mix": []} for mic in eval_mics}
    for done, start in enumerate(starts):  # a last sliver too short to score is left out
        stop = min(start + segment, session.n_samples)
        truth_NEB = np.stack([audio_io.read_audio(session.truth.images[s.name], channels=mic_index, start=start,
                                                  stop=stop)[0] for s in session.sources])
        mix_EB = load_mics(session, mics=mic_index, start=start, stop=stop)
        for e, mic in enumerate(eval_mics):
            truth_NB = np.ascontiguousarray(truth_NEB[:, e])
            est_NB = np.stack([audio_io.read_audio(image_path(folder, session, s.name, mic), start=start,
                                                   stop=stop)[0][0] for s in session.sources])
            scores[mic]["sep"].append(bss_metrics(truth_NB, est_NB, filter_length=filter_length))
            del est_NB
            scores[mic]["mix"].append(bss_metrics(truth_NB, np.repeat(mix_EB[e:e + 1], N, axis=0),
                                                  filter_length=filter_length))
        del truth_NEB, mix_EB
        report("evaluate", done + 1, len(starts))
    return {mic: (_median_over_segments(scores[mic]["sep"]), _median_over_segments(scores[mic]["mix"]))
            for mic in eval_mics}

#: What a null metric means, written into metrics.json.
NULL_NOTE = (f"not a number: above {NUMERICAL_CEILING_DB:g} dB (the error term is at the rounding floor, as in "
             "the mixture's SAR: an unprocessed mic is exactly the sum of the sources' images, so it has no "
             "artefact term), or not defined (SAR improvement; a mean over a source without a value)")

#: Most memory whole-signal scoring may take; longer sessions are scored by segments on
#: every machine (so whether a report is framewise does not depend on the machine's
#: memory, and a long session's run stays within a few GiB). 2 GiB: 3 sources up to
#: 131 s at 16 kHz or 43 s at 48 kHz are scored whole.
EVAL_MAX_BYTES = 2 * 1024**3

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


def _has_mean_sdr(metrics) -> bool:
    """The report holds a mean SDR at the reference mic (a number, or None when not finite)."""
    try:
        sdr = metrics["means"]["at_reference_mic"]["separated"]["sdr"]
    except (KeyError, TypeError):
        return False
    return sdr is None or (isinstance(sdr, (int, float)) and not isinstance(sdr, bool))


def _db(v: float) -> float | None:
    v = float(v)
    return round(v, 3) if math.isfinite(v) else None


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return round(sum(finite) / len(finite), 3) if finite and len(finite) == len(values) else None
