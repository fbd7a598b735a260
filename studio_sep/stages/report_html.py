"""The report stage: a run's HTML page, ``<out>/<session>/report/index.html``, and for a batch
``<out>/index.html`` linking every session's page.

The page is self-contained and offline (no CDN, no script or font fetched): its plots are PNG
files beside it (``report/plots/``), its players point by relative paths at the WAV files the
run wrote (``stems/``, ``images/``, ``remix/``) and at the few it writes for listening
(``report/audio/``: the unprocessed mic and, when the session has one, the ground truth, one
channel each). Built from the run's outputs alone (``run.json``, the images, the mix and
metrics reports), so it can be rebuilt at any time (``studio-sep report``).

Per source: players for the unprocessed stem mic, the stem, the image at the reference mic
and the truth, loudness-matched, with one-key A/B switching that keeps the play position;
spectrograms of the mic, the stem and the bleed removed (mic − stem); a reference-free
leakage estimate of the stem and of the mic (:func:`studio_sep.stages.report_data.leakage_db`).
Then the metrics table and framewise SDR (with truth), the log-likelihood
per iteration, the remixes' loudness and true peak, and the run's settings, prior, timings
and memory.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from studio_sep import __version__
from studio_sep.io import audio as audio_io
from studio_sep.session import Session, load_mics
from studio_sep.stages.images import image_path
from studio_sep.stages.report import METRICS_HEADER, metrics_rows, prior_label
from studio_sep.stages.report_data import FRAME_S, framewise_sdr, leakage_db, loudness_lufs, matched_volumes
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, ProgressCallback, RunRecord, fingerprint
from studio_sep.util.atomic import write_text_atomic
from studio_sep.util.errors import InputError

STAGE = "report"

#: Players, spectrograms and the leakage estimate of a longer session cover its first this
#: many seconds (a 20-minute session's full-length listening copies took 2 GB and 11 GiB).
LISTENING_SECONDS = 120.0

#: Framewise scores read this many 1 s windows of the signals at a time (long sessions).
_FRAMEWISE_CHUNK = 30


@dataclass(frozen=True)
class ReportOutcome:
    path: Path  #: the page, ``<out>/<session>/report/index.html``
    skipped: bool = False  #: up to date: nothing was rebuilt


def build_report(session: Session, out_root: str | Path, *, callback: ProgressCallback | None = None,
                 force: bool = True, hashes: FileHashes | None = None) -> ReportOutcome:
    """Build (or, with ``force=False`` and an up-to-date page, keep) a run's HTML report.

    Raises
    ------
    InputError
        No separation run in ``out_root`` for this session, or one of its images missing
        (checked before anything is written).
    """
    folder = Path(out_root) / session.name
    record = RunRecord(folder)
    separation = record.separation()
    if separation is None:
        raise InputError(folder / "run.json", None, "no separation run found to report on",
                         f"run `studio-sep run {session.path} --out {out_root}` first")
    run = record.load()
    metrics = _read_json(folder / "report" / "metrics.json") if "evaluate" in run.get("stages", {}) else None
    reference_mic = (metrics or {}).get("reference_mic") or session.mics[0].name
    stem_mics = separation["stem_mics"]
    for s in session.sources:  # every image the page plays or measures, before any work
        for mic in dict.fromkeys([reference_mic, *stem_mics.values()]):
            image_path(folder, session, s.name, mic)
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    fp = fingerprint(STAGE, {k: v["fingerprint"] for k, v in sorted(run["stages"].items()) if k != STAGE},
                     [hashes(f) for f in dict.fromkeys(m.file for m in session.mics)],
                     {s.name: hashes(session.truth.images[s.name]) for s in session.sources}
                     if session.has_truth_images else None, reference_mic)
    hashes.save()
    page = folder / "report" / "index.html"
    if not force and record.is_current(STAGE, fp):
        return ReportOutcome(page, skipped=True)
    clock = time.perf_counter()
    record.begin(STAGE)
    page_data, outputs = _build(session, folder, run, metrics, reference_mic, callback)
    write_text_atomic(page, render_template("report.html.j2", **page_data))
    record.finish(STAGE, fp, [page, *outputs], elapsed_s=time.perf_counter() - clock)
    return ReportOutcome(page)


def _build(session: Session, folder: Path, run: dict, metrics: dict | None, reference_mic: str,
           callback) -> tuple[dict, list[Path]]:
    """Every file of the page but the page, and what the template shows."""
    from studio_sep.stages.report_plots import plot_log_likelihood

    report = callback or (lambda stage, done, total, detail="": None)
    separation, names = run["separation"], [s.name for s in session.sources]
    has_truth = session.has_truth_images
    total = len(names) + 2
    sources, outputs = [], []
    for n, name in enumerate(names):
        report(STAGE, n, total, detail=f"listening files and spectrograms of {name}")
        entry, files = _source_section(session, folder, n, separation["stem_mics"][name], reference_mic,
                                       has_truth)
        sources.append(entry)
        outputs += files
    framewise = None
    if has_truth:
        report(STAGE, len(names), total, detail="framewise SDR")
        framewise, files = _framewise_section(session, folder, separation["stem_mics"])
        outputs += files
    likelihood = None
    ll = run.get("log_likelihood") or {}
    if ll.get("iterations") and ll.get("values"):
        outputs.append(plot_log_likelihood(folder / "report" / "plots" / "log-likelihood.png",
                                           ll["iterations"], ll["values"], note=_likelihood_note(separation)))
        likelihood = {"plot": "plots/log-likelihood.png",
                      "note": f"{_likelihood_note(separation)}; initial {ll['initial']:.4f}, "
                              f"final {ll['final']:.4f} "
                              "(per time-frequency bin and mic)"}
    report(STAGE, total - 1, total, detail="page")
    data = {"version": __version__, "session": session.name, "created": run.get("created", "—"),
            "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "sources": sources, "n_mics": len(session.mics), "duration_s": f"{session.duration_s:.1f}",
            "sample_rate": session.sample_rate, "max_players": max(len(s["players"]) for s in sources),
            "metrics": _metrics_section(metrics), "metrics_missing": _metrics_missing(session, metrics),
            "framewise": framewise, "likelihood": likelihood, "remixes": _remixes(folder, run),
            "tables": _run_tables(run)}
    report(STAGE, total, total)
    return data, outputs


def _source_section(session: Session, folder: Path, n: int, stem_mic: str, reference_mic: str,
                    has_truth: bool) -> tuple[dict, list[Path]]:
    """One source's players (with their loudness and matched volumes), spectrograms and
    leakage estimate; the files written for them. A session longer than
    :data:`LISTENING_SECONDS` is heard, plotted and estimated on its first
    :data:`LISTENING_SECONDS` (every player a copy of that excerpt), so the page and the
    stage's memory do not grow with the session."""
    from studio_sep.stages.report_plots import plot_spectrograms

    name, sr = session.sources[n].name, session.sample_rate
    mic_names = [m.name for m in session.mics]
    m_stem, m_ref = mic_names.index(stem_mic), mic_names.index(reference_mic)
    stop = int(LISTENING_SECONDS * sr)
    excerpt = session.n_samples > stop
    span = {"stop": stop} if excerpt else {}
    audio = folder / "report" / "audio"
    mic = load_mics(session, mics=[m_stem], **span)[0]
    stem_file, ref_image = folder / "stems" / f"{name}.wav", image_path(folder, session, name, reference_mic)
    stem, image = (audio_io.read_audio(path, **span)[0][0] for path in (stem_file, ref_image))
    written = [_listening_copy(audio / f"mic-{m_stem}.wav", mic, sr)]
    if excerpt:
        stem_file = _listening_copy(audio / f"stem-{n}.wav", stem, sr)
        ref_image = _listening_copy(audio / f"image-{n}-{m_ref}.wav", image, sr)
        written += [stem_file, ref_image]
    players = [("mic", "unprocessed mic", stem_mic, written[0], mic),
               ("stem", "separated stem", stem_mic, stem_file, stem),
               ("image", "image at reference mic", reference_mic, ref_image, image)]
    if has_truth:
        for role, m in (("truth", m_stem), ("truth-ref", m_ref))[: 1 if m_ref == m_stem else 2]:
            truth = audio_io.read_audio(session.truth.images[name], channels=[m], **span)[0][0]
            written.append(_listening_copy(audio / f"truth-{n}-{m}.wav", truth, sr))
            players.append((role, "ground truth", mic_names[m], written[-1], truth))
    levels = {role: loudness_lufs(x, sr) for role, _, _, _, x in players}
    volumes = matched_volumes(levels)
    entries = [{"key": str(k + 1), "role": role, "label": label, "detail": f"at {where}",
                "src": _href(path, folder), "lufs": levels[role], "volume": volumes[role]}
               for k, (role, label, where, path, _) in enumerate(players)]
    plot = folder / "report" / "plots" / f"spectrogram-{n}.png"
    plot_spectrograms(plot, [(f"mic {stem_mic} (unprocessed)", mic), (f"stem {name}", stem),
                             ("bleed removed (mic − stem)", mic - stem)], sr, title=f"{name} at {stem_mic}")
    entry = {"name": name, "stem_mic": stem_mic, "players": entries, "spectrogram": f"plots/{plot.name}",
             "leakage": _leakage(session, folder, n, stem, mic, span),
             "excerpt_s": LISTENING_SECONDS if excerpt else None}
    return entry, [*dict.fromkeys(written), plot]


def _listening_copy(path: Path, x_S: np.ndarray, sample_rate: int) -> Path:
    """A mono float WAV of one channel for a player."""
    return audio_io.write_audio(path, x_S[None, :], sample_rate, subtype="float32")


def _leakage(session: Session, folder: Path, n: int, stem: np.ndarray, mic: np.ndarray, span: dict) -> dict:
    """The leakage estimate of the stem against all the other sources' stems (and against
    each), and of the unprocessed mic against them (the baseline), over ``span``."""
    others = {s.name: audio_io.read_audio(folder / "stems" / f"{s.name}.wav", **span)[0][0]
              for k, s in enumerate(session.sources) if k != n}
    if not others:
        return {"stem": None, "mic": None, "each": {}}
    sr, stacked = session.sample_rate, np.stack(list(others.values()))
    each = {name: leakage_db(stem, x[None, :], sr) for name, x in others.items()} if len(others) > 1 else {}
    return {"stem": leakage_db(stem, stacked, sr), "mic": leakage_db(mic, stacked, sr), "each": each}


def _framewise_section(session: Session, folder: Path, stem_mics: dict) -> tuple[dict, list[Path]]:
    """Framewise SDR of every source at its stem mic (separated and unprocessed), its plot
    and ``framewise.json``."""
    from studio_sep.stages.report_plots import plot_framewise

    names, mic_names = [s.name for s in session.sources], [m.name for m in session.mics]
    sr = session.sample_rate
    rows, win = {}, int(FRAME_S * sr)
    n_windows = session.n_samples // win
    if n_windows == 0:  # shorter than one window: nothing to score
        return None, []
    for mic in dict.fromkeys(stem_mics[name] for name in names):
        m = mic_names.index(mic)
        sep_NW, mix_NW = np.full((2, len(names), n_windows), np.nan)
        for w0 in range(0, n_windows, _FRAMEWISE_CHUNK):  # a chunk of windows in memory at a time
            w1 = min(w0 + _FRAMEWISE_CHUNK, n_windows)
            span = {"start": w0 * win, "stop": w1 * win}
            truth = np.stack([audio_io.read_audio(session.truth.images[name], channels=[m], **span)[0][0]
                              for name in names])
            est = np.stack([audio_io.read_audio(image_path(folder, session, name, mic), **span)[0][0]
                            for name in names])
            mix = load_mics(session, mics=[m], **span)[0]
            sep_NW[:, w0:w1] = framewise_sdr(truth, est, sr)
            mix_NW[:, w0:w1] = framewise_sdr(truth, np.repeat(mix[None, :], len(names), axis=0), sr)
        for n, name in enumerate(names):
            if stem_mics[name] == mic:
                rows[name] = (mic, sep_NW[n], mix_NW[n])
    times = np.arange(n_windows) * FRAME_S
    plot = plot_framewise(folder / "report" / "plots" / "framewise-sdr.png", times,
                          [(name, rows[name][1], rows[name][2]) for name in names],
                          where="each source's stem mic")
    as_list = lambda v: [None if not np.isfinite(x) else round(float(x), 3) for x in v]  # noqa: E731
    values = {"window_s": FRAME_S, "hop_s": FRAME_S, "metric": "sdr", "filter_length": 512,
              "times_s": [float(t) for t in times],
              "sources": {name: {"mic": rows[name][0], "separated": as_list(rows[name][1]),
                                 "mixture": as_list(rows[name][2])} for name in names}}
    json_path = folder / "report" / "framewise.json"
    write_text_atomic(json_path, json.dumps(values, indent=1))
    summary = [{"name": name, "mic": rows[name][0], "separated": _median(rows[name][1]),
                "mixture": _median(rows[name][2]), "scored": int(np.isfinite(rows[name][1]).sum()),
                "windows": n_windows} for name in names]
    return {"plot": f"plots/{plot.name}", "sources": summary}, [plot, json_path]


def _median(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    return f"{np.median(finite):+.2f} dB" if finite.size else "—"


def _likelihood_note(separation: dict) -> str:
    every = separation.get("log_likelihood_every")
    note = f"computed every {every} iterations" if every else "as recorded"
    ensemble = separation.get("ensemble") or 1
    return note + (f"; fit 1 of an ensemble of {ensemble}" if ensemble > 1 else "")


def _metrics_section(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    note = (f"dB, BSS Eval (fast-bss-eval), filter length {metrics.get('filter_length')}; reference mic "
            f"{metrics['reference_mic']}; 'mix' is the unprocessed mic signal, Δ the improvement over it.")
    if metrics.get("segment_s"):
        note += f" Median over segments of {metrics['segment_s']} s."
    return {"header": METRICS_HEADER, "rows": metrics_rows(metrics), "note": note}


def _metrics_missing(session: Session, metrics: dict | None) -> str:
    if metrics:
        return ""
    if not session.has_truth_images:
        return "the session has no ground truth ([truth.images]); see the leakage estimates above."
    return "the run was not evaluated (run without --no-evaluate, or `studio-sep evaluate`)."


def _remixes(folder: Path, run: dict) -> list[dict]:
    """Each mix stage's remix: its player, loudness, true peak and level gain (``remix/<preset>.json``)."""
    out = []
    for stage in sorted(k for k in run.get("stages", {}) if k.startswith("mix:")):
        mix = _read_json(folder / "remix" / f"{stage[4:]}.json")
        if not mix or "remix" not in mix:
            continue
        fmt = lambda v, unit: "—" if v is None else f"{v:+.1f} {unit}"  # noqa: E731
        out.append({"preset": mix.get("preset_name", stage[4:]), "src": _href(folder / mix["remix"], folder),
                    "loudness": fmt(mix.get("loudness_out_lufs"), "LUFS"),
                    "true_peak": fmt(mix.get("true_peak_out_dbtp"), "dBTP"),
                    "before": f"{fmt(mix.get('loudness_in_lufs'), 'LUFS')}, "
                              f"{fmt(mix.get('true_peak_in_dbtp'), 'dBTP')}",
                    "gain": fmt(mix.get("gain_db"), "dB"), "project": mix.get("project", "—"),
                    "warnings": list(mix.get("warnings") or [])})
    return out


#: The settings shown, in this order (the rest of run.json's ``separation`` is in the file).
_SETTINGS = ("method", "init", "spectral_init", "n_iter", "iterations_run", "stop_tolerance", "n_basis",
             "n_fft", "hop", "sample_rate", "processing_sample_rate", "device", "dtype", "seed", "ensemble",
             "starts", "start_kept", "spatial_starts", "stem_mics", "source_order", "wpe", "measured_delays",
             "residual_image")


def _run_tables(run: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    from studio_sep.stages.memory import format_size

    sep = run["separation"]
    settings = [(k, _show(sep[k])) for k in _SETTINGS if k in sep]
    prior = sep.get("prior")
    prior_rows = [("prior", prior_label(prior))]
    if isinstance(prior, dict):
        prior_rows += [(k, _show(prior[k])) for k in ("queries", "mics", "used_by_source", "level_db", "rejected")
                       if prior.get(k)]
    stages = run.get("stages", {})
    timings = [(f"stage {name}", f"{entry.get('elapsed_s', 0):.2f} s (finished {entry.get('finished', '—')})")
               for name, entry in stages.items() if name != STAGE]
    peaks = [(f"peak RSS after {name}", format_size(entry["peak_rss_bytes"])) for name, entry in stages.items()
             if name != STAGE and isinstance(entry.get("peak_rss_bytes"), int)]
    timings += [(k, _show(v)) for k, v in (run.get("timings_s") or {}).items()]
    memory = sep.get("memory") or {}
    memory_rows = [(k, format_size(v) if k.endswith("bytes") and isinstance(v, (int, float)) else _show(v))
                   for k, v in memory.items() if k not in ("seams", "bounds_samples")] + peaks
    versions = [(k, str(v)) for k, v in (run.get("versions") or {}).items()]
    return [("Settings", settings), ("Prior", prior_rows), ("Timings", timings), ("Memory", memory_rows),
            ("Versions", [("studio-sep", str(run.get("studio_sep", "—"))), *versions])]


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return "—" if value is None else str(value)


def _href(path: Path, folder: Path) -> str:
    """``path`` (under the session's folder) as a URL relative to ``folder/report/``."""
    rel = Path(path).resolve().relative_to(Path(folder).resolve())
    parts = rel.parts[1:] if rel.parts[0] == "report" else ("..", *rel.parts)
    return "/".join(quote(p) for p in parts)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def render_template(name: str, **context) -> str:
    """Render one of this package's templates (``stages/templates/``), HTML-escaped."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(name).render(**context)


def write_batch_index(out_root: str | Path, sessions: list[dict] | None = None) -> Path:
    """``<out>/index.html``: a link to every session report found under ``out_root``, with
    the status, mean SDR and reason that ``sessions`` (a batch's outcomes as dicts:
    name, status, sdr_db, reason) give."""
    root = Path(out_root)
    known = {s["name"]: s for s in sessions or []}
    names = sorted({*known, *(p.parent.parent.name for p in root.glob("*/report/index.html"))})
    rows = []
    for name in names:
        page = root / name / "report" / "index.html"
        info = known.get(name, {})
        sdr = info.get("sdr_db")
        rows.append({"name": name, "href": f"{quote(name)}/report/index.html" if page.is_file() else None,
                     "status": info.get("status", "—"), "sdr": "—" if sdr is None else f"{sdr:+.2f} dB",
                     "reason": info.get("reason") or ""})
    path = root / "index.html"
    write_text_atomic(path, render_template("index.html.j2", rows=rows, version=__version__,
                                            built=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                            root=str(root)))
    return path
