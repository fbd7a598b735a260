"""The mix stage: a session's separated (or ground-truth) images mixed with a preset into
the remix, the DAW stems and the DAW project."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from studio_sep import __version__
from studio_sep.io import audio as audio_io
from studio_sep.session import Session
from studio_sep.stages.images import LazyImages, image_path, images_identity
from studio_sep.stages.runrecord import WORK_DIR, FileHashes, ProgressCallback, RunRecord, fingerprint
from studio_sep.stages.settings import choose_stem_mics
from studio_sep.util.errors import InputError
from studio_sep.util.jsonfile import write_json_atomic


@dataclass(frozen=True)
class MixOutcome:
    remix: Path
    project: Path
    stems: tuple[Path, ...]
    report: dict
    skipped: bool = False  #: up to date: nothing was rendered


# Long by its docstring and the checks that run before anything is rendered.
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
    from studio_sep import mixing
    from studio_sep.mixing.presets import load_preset

    preset = load_preset(preset_path)
    overrides = overrides or mixing.Overrides()
    folder = Path(out_root) / session.name
    record = RunRecord(folder)
    if source == "run":
        separation = record.separation()
        if separation is None:
            raise InputError(record.path, None, "no separation run to mix",
                             f"run `studio-sep separate {session.path} --out {out_root}` first, or mix --from truth")
        stem_mics = separation["stem_mics"]
    elif source == "truth":
        if not session.has_truth_images:
            raise InputError(session.path, "truth.images", "no ground-truth image for every source",
                             "mix --from run (the separated images) instead")
        stem_mics = choose_stem_mics(session, {})
    else:
        raise InputError(None, "--from", f"{source!r} is not run or truth", "pick one of those")
    sample_rate = session.sample_rate
    routes = mixing.resolve_routes(session, preset, stem_mics, overrides, sample_rate=sample_rate)
    chains = mixing.preset_chains(preset, routes)
    hashes = hashes or FileHashes(folder / WORK_DIR / "hashes.json")
    plugins = sorted({str(spec.path) for chain, _ in chains for spec in chain if spec.path is not None})
    inputs = (images_identity(folder, session, record, hashes) if source == "run" else
              {s.name: hashes(session.truth.images[s.name]) for s in session.sources})
    fp = fingerprint("mix", source, inputs, hashes(preset.path), [_bundle_identity(p) for p in plugins],
                     asdict(overrides), stem_mics, sample_rate)
    stage = f"mix:{preset.name}"
    report_path = folder / "remix" / f"{preset.name}.json"
    if not force and record.is_current(stage, fp):
        report = json.loads(report_path.read_text())
        try:  # paths relative to the session folder (a moved or copied OUT still points at its own files)
            return MixOutcome(remix=folder / report["remix"], project=folder / report["project"],
                              stems=tuple(folder / p for p in report["stems"]), report=report, skipped=True)
        except (KeyError, TypeError):  # a report of the wrong shape: the mix is redone
            pass
    mixing.check_preset(preset, sample_rate=sample_rate, routes=routes)
    hashes.save()
    clock = time.perf_counter()
    record.begin(stage)

    names = [s.name for s in session.sources]
    if source == "run":
        for route in routes:  # every image the preset feeds is there before any rendering
            for feed in route.feeds:
                image_path(folder, session, route.source, session.mics[feed.mic].name)
        read = lambda n, m, start, stop: audio_io.read_audio(  # noqa: E731
            folder / "images" / names[n] / f"{session.mics[m].name}.wav", start=start, stop=stop)[0][0]
    else:
        read = lambda n, m, start, stop: audio_io.read_audio(  # noqa: E731
            session.truth.images[names[n]], channels=[m], start=start, stop=stop)[0][0]
    images = LazyImages(read, len(names), len(session.mics), session.n_samples)
    mix_report, remix_path, project, stems = _render_mix(folder, session, preset, routes, images, callback)
    report = {"preset": str(preset.path), "preset_name": preset.name, "from": source, "format": preset.format,
              **mix_report, "remix": _relative(remix_path, folder),
              "project": _relative(project, folder), "stems": [_relative(p, folder) for p in stems]}
    write_json_atomic(report_path, report)
    record.finish(stage, fp, [remix_path, project, report_path, *stems], elapsed_s=time.perf_counter() - clock)
    return MixOutcome(remix=remix_path, project=project, stems=tuple(stems), report=report)


def _render_mix(folder: Path, session: Session, preset, routes, images, callback):
    """Render the mix block by block (:func:`studio_sep.mixing.mix_blocks`) into the pre-fader
    DAW stems and the remix, clipped to the preset's format, and write the DAW project;
    returns the mix's report (its warnings included) and the paths.

    Memory does not grow with the session's length: each block of the stems is written
    as it comes; the master bus's output goes to a scratch file (float64) while its
    loudness and true peak are measured, and a second pass over that file applies the
    level gain and writes the remix. Every file is written atomically.
    """
    from studio_sep import mixing
    from studio_sep.io.daw import Track, write_reaper_project
    from studio_sep.mixing.plugins import host as plugin_host
    from studio_sep.mixing.render import db_to_gain

    sample_rate, fmt, block = session.sample_rate, preset.format, mixing.BLOCK_SAMPLES
    length = mixing.mix_length(routes, preset, n_samples=session.n_samples, sample_rate=sample_rate)
    stamp = _dt.datetime.now(_dt.timezone.utc)
    daw_dir = folder / "daw" / preset.name
    stem_paths = [daw_dir / f"{n + 1:02d}_{route.source}.wav" for n, route in enumerate(routes)]
    stem_clippers = [mixing.Clipper(fmt, f"stem {route.source}") for route in routes]
    loudness = mixing.LoudnessMeter(sample_rate, n_channels=2, n_samples=length)
    true_peak = mixing.TruePeakMeter(2)
    scratch = folder / WORK_DIR / f"mix-{preset.name}.f64"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as files:
            stem_writers = [files.enter_context(audio_io.open_audio_writer(
                path, sample_rate, n_channels=2, n_samples=length, subtype=fmt,
                bext=audio_io.Bext(description=f"{session.name} {route.source} ({preset.name}, pre-fader)",
                                   originator_reference=f"studio-sep {__version__}",
                                   origination_date=stamp.strftime("%Y-%m-%d"),
                                   origination_time=stamp.strftime("%H:%M:%S"), time_reference=0,
                                   coding_history=f"A=PCM,F={sample_rate},T=studio-sep mix {preset.name}")))
                for path, route in zip(stem_paths, routes)]
            master_file = files.enter_context(open(scratch, "wb"))
            for stems_N2B, master_2B in mixing.mix_blocks(images, routes, preset, sample_rate=sample_rate,
                                                          open_chain=plugin_host.open_chain_stream,
                                                          block_samples=block, callback=callback):
                for writer, clipper, stem in zip(stem_writers, stem_clippers, stems_N2B):
                    writer.write(clipper(stem))
                loudness.push(master_2B)
                true_peak.push(master_2B)
                master_file.write(np.ascontiguousarray(master_2B.T, dtype="<f8").tobytes())
            master_file.close()
            gain_db, level = mixing.level_gain(loudness.finish(), true_peak.finish(),
                                               loudness_lufs=preset.loudness_lufs, true_peak_dbtp=preset.true_peak_dbtp)
            # the stems are renamed onto their final names when this block ends; the remix first
            remix_clipper = mixing.Clipper(fmt, "remix")
            gain = db_to_gain(gain_db)
            remix_path = folder / "remix" / f"{preset.name}.wav"
            with audio_io.open_audio_writer(remix_path, sample_rate, n_channels=2, n_samples=length,
                                            subtype=fmt) as writer, open(scratch, "rb") as master:
                for start in range(0, length, block):
                    size = min(block, length - start)
                    master_2B = np.frombuffer(master.read(16 * size), dtype="<f8").reshape(size, 2).T
                    writer.write(remix_clipper(master_2B * gain))
    finally:
        scratch.unlink(missing_ok=True)
    warnings = list(level["warnings"]) + remix_clipper.warnings() + [w for c in stem_clippers for w in c.warnings()]
    tracks = [Track(name=f"{n + 1:02d} {route.source}", file=path, gain_db=route.gain_db, pan=route.pan,
                    mute=not route.audible) for n, (route, path) in enumerate(zip(routes, stem_paths))]
    project = write_reaper_project(daw_dir / f"{session.name}_{preset.name}.RPP", tracks, sample_rate=sample_rate,
                                   length_samples=length)
    report = mixing.mix_report(routes, preset, n_samples=session.n_samples, length=length, sample_rate=sample_rate,
                               level=level) | {"warnings": warnings}
    return report, remix_path, project, stem_paths


def _relative(path: Path, folder: Path) -> str:
    return Path(path).relative_to(folder).as_posix()


def _bundle_identity(path: str) -> list:
    """A plugin bundle (file or .vst3 folder) by its files' names, sizes and times."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
