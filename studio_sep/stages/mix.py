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

#: bumped when the DAW outputs change shape, so that older mixes are redone
DAW_LAYOUT = "daw-2: master volume, reference track, DAWproject, bext v2"


@dataclass(frozen=True)
class MixOutcome:
    remix: Path
    project: Path
    stems: tuple[Path, ...]
    report: dict
    skipped: bool = False  #: up to date: nothing was rendered
    dawproject: Path | None = None  #: the DAWproject file (Bitwig, Studio One, Cubase …)


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
    format: str | None = None,
) -> MixOutcome:
    """Mix a session's separated images (``source="run"``) or its ground-truth images
    (``source="truth"``) with a preset; write the remix, the DAW stems and project.

    ``format`` (float32, pcm24, pcm16 or flac) overrides the preset's ``format`` for the
    remix and the DAW stems. Everything is checked (preset, routing against the session,
    every plugin and parameter) before anything is rendered. With ``force=False`` an up-to-date mix
    (same images, preset file, plugins and overrides) is not redone.
    """
    from studio_sep import mixing
    from studio_sep.mixing.presets import FORMATS, load_preset

    preset = load_preset(preset_path)
    if format is not None and format not in FORMATS:
        raise InputError(None, "--format", f"{format!r} is not one of {', '.join(FORMATS)}", "pick one of those")
    fmt = format or preset.format
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
                     asdict(overrides), stem_mics, sample_rate, fmt, DAW_LAYOUT)
    stage = f"mix:{preset.name}"
    report_path = folder / "remix" / f"{preset.name}.json"
    if not force and record.is_current(stage, fp):
        report = json.loads(report_path.read_text())
        try:  # paths relative to the session folder (a moved or copied OUT still points at its own files)
            return MixOutcome(remix=folder / report["remix"], project=folder / report["project"],
                              stems=tuple(folder / p for p in report["stems"]), report=report, skipped=True,
                              dawproject=folder / report["dawproject"])
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
    mix_report, remix_path, (project, dawproject), outputs = _render_mix(folder, session, preset, routes, images,
                                                                         callback, fmt)
    stems = [p for p in outputs if p.name != REFERENCE_FILE]
    report = {"preset": str(preset.path), "preset_name": preset.name, "from": source, "format": fmt,
              **mix_report, "remix": _relative(remix_path, folder), "project": _relative(project, folder),
              "dawproject": _relative(dawproject, folder), "stems": [_relative(p, folder) for p in stems]}
    write_json_atomic(report_path, report)
    record.finish(stage, fp, [remix_path, project, dawproject, report_path, *outputs],
                  elapsed_s=time.perf_counter() - clock)
    return MixOutcome(remix=remix_path, project=project, stems=tuple(stems), report=report, dawproject=dawproject)


def _render_mix(folder: Path, session: Session, preset, routes, images, callback, fmt: str):
    """Render the mix block by block (:func:`studio_sep.mixing.mix_blocks`) into the pre-fader
    DAW stems and the remix, clipped to the format ``fmt``, and write the DAW projects;
    returns the mix's report (its warnings included) and the paths.

    Memory does not grow with the session's length: each block of the stems is written
    as it comes; the master bus's output goes to a scratch file (float64) while its
    loudness and true peak are measured, and a second pass over that file applies the
    level gain and writes the remix (and, when the preset has a master chain, the master
    bus before that gain as the projects' reference track). Every file is written atomically.
    """
    from studio_sep import mixing
    from studio_sep.mixing.plugins import host as plugin_host

    sample_rate, block = session.sample_rate, mixing.BLOCK_SAMPLES
    length = mixing.mix_length(routes, preset, n_samples=session.n_samples, sample_rate=sample_rate)
    ext = audio_io.extension(fmt)
    daw_dir = folder / "daw" / preset.name
    stem_paths = [daw_dir / f"{n + 1:02d}_{route.source}{ext}" for n, route in enumerate(routes)]
    stem_clippers = [mixing.Clipper(fmt, f"stem {route.source}") for route in routes]
    loudness = mixing.LoudnessMeter(sample_rate, n_channels=2, n_samples=length)
    true_peak = mixing.TruePeakMeter(2)
    time_reference, warnings = session_time_reference(session)
    stamp = _Stamp(session, preset, fmt, time_reference)
    scratch = folder / WORK_DIR / f"mix-{preset.name}.f64"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as files:
            stem_writers = [files.enter_context(audio_io.open_audio_writer(
                path, sample_rate, n_channels=2, n_samples=length, subtype=fmt,
                bext=stamp.bext(f"{session.name} {route.source} ({preset.name}, pre-fader)")))
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
            remix_path = folder / "remix" / f"{preset.name}{ext}"
            reference = daw_dir / REFERENCE_FILE if preset.master else None
            remix_bext = stamp.bext(f"{session.name} remix ({preset.name})", level=level,
                                    max_momentary_lufs=loudness.max_momentary() + gain_db)
            remix_clipper = _write_remix(scratch, remix_path, reference, gain_db, length, sample_rate, fmt, remix_bext)
    finally:
        scratch.unlink(missing_ok=True)
    warnings += list(level["warnings"]) + remix_clipper.warnings() + [w for c in stem_clippers for w in c.warnings()]
    projects = _write_projects(daw_dir, session, preset, routes, stem_paths, reference, length=length,
                               gain_db=gain_db)
    report = mixing.mix_report(routes, preset, n_samples=session.n_samples, length=length, sample_rate=sample_rate,
                               level=level) | {"warnings": warnings, "time_reference_samples": time_reference,
                                               "master_reference": None if reference is None else
                                               _relative(reference, folder)}
    return report, remix_path, projects, stem_paths + ([reference] if reference else [])


#: the master bus before the level gain, for a preset with a master chain (float32 WAV)
REFERENCE_FILE = "00_master_reference.wav"
REFERENCE_TRACK = "REFERENCE master bus as rendered (muted; solo to hear the remix)"


class _Stamp:
    """The bext chunks of one mix's files (WAV formats only: None for FLAC)."""

    def __init__(self, session: Session, preset, fmt: str, time_reference: int):
        self.now = _dt.datetime.now(_dt.timezone.utc)
        self.session, self.preset, self.fmt, self.time_reference = session, preset, fmt, time_reference

    def bext(self, description: str, *, level: dict | None = None,
             max_momentary_lufs: float | None = None) -> audio_io.Bext | None:
        if self.fmt == "flac":
            return None
        rate = self.session.sample_rate
        finite = lambda v: v if v is not None and np.isfinite(v) else None  # noqa: E731
        return audio_io.Bext(
            description=description, originator_reference=f"studio-sep {__version__}",
            origination_date=self.now.strftime("%Y-%m-%d"), origination_time=self.now.strftime("%H:%M:%S"),
            time_reference=self.time_reference,
            coding_history=f"A=PCM,F={rate},T=studio-sep mix {self.preset.name}",
            loudness_lufs=finite(level["loudness_out_lufs"]) if level else None,
            max_true_peak_dbtp=finite(level["true_peak_out_dbtp"]) if level else None,
            max_momentary_lufs=finite(max_momentary_lufs))


def session_time_reference(session: Session) -> tuple[int, list[str]]:
    """The recording's start as a bext TimeReference, in samples at the session's rate:
    the earliest TimeReference of the mics' WAV files that carry one (0 when none does),
    and a warning when the mics disagree."""
    found = {}
    for mic in session.mics:
        if mic.file not in found:
            bext = audio_io.read_bext(mic.file) if mic.file.suffix.lower() in (".wav", ".bwf") else None
            if bext is not None:
                rate = audio_io.audio_info(mic.file).sample_rate
                found[mic.file] = round(bext.time_reference * session.sample_rate / rate)
    if not found:
        return 0, []
    earliest = min(found.values())
    warnings = [] if len(set(found.values())) == 1 else [
        f"the mic files carry different bext time references ({min(found.values())}…{max(found.values())} "
        f"samples); the stems and remix carry the earliest, {earliest}"]
    return earliest, warnings


def _write_remix(scratch: Path, remix_path: Path, reference: Path | None, gain_db: float, length: int,
                 sample_rate: int, fmt: str, bext):
    """Second pass over the master bus's scratch file: the remix (level gain applied,
    clipped to ``fmt``) and, optionally, the master bus before the gain (float32, so it never
    clips) for the DAW projects' reference track. Returns the remix's clipper."""
    from studio_sep import mixing
    from studio_sep.mixing.render import db_to_gain

    remix_clipper = mixing.Clipper(fmt, "remix")
    gain = db_to_gain(gain_db)
    with contextlib.ExitStack() as files:
        writer = files.enter_context(audio_io.open_audio_writer(remix_path, sample_rate, n_channels=2,
                                                                n_samples=length, subtype=fmt, bext=bext))
        ref_writer = None if reference is None else files.enter_context(audio_io.open_audio_writer(
            reference, sample_rate, n_channels=2, n_samples=length, subtype="float32"))
        master = files.enter_context(open(scratch, "rb"))
        for start in range(0, length, mixing.BLOCK_SAMPLES):
            size = min(mixing.BLOCK_SAMPLES, length - start)
            master_2B = np.frombuffer(master.read(16 * size), dtype="<f8").reshape(size, 2).T
            writer.write(remix_clipper(master_2B * gain))
            if ref_writer is not None:
                ref_writer.write(master_2B)
    return remix_clipper


def _write_projects(daw_dir: Path, session: Session, preset, routes, stem_paths, reference: Path | None, *,
                    length: int, gain_db: float) -> tuple[Path, Path]:
    """The REAPER project and the DAWproject of a mix: a track per stem with the preset's
    fader, the master at the level gain, and the muted reference track when the preset
    has a master chain (which neither format can rebuild)."""
    from studio_sep.io.daw import DawSession, Track, write_dawproject, write_reaper_project

    tracks = [Track(name=f"{n + 1:02d} {route.source}", file=path, gain_db=route.gain_db, pan=route.pan,
                    mute=not route.audible) for n, (route, path) in enumerate(zip(routes, stem_paths))]
    notes = [f"studio-sep {__version__}: session {session.name}, preset {preset.name}.",
             f"Master volume {gain_db:+.2f} dB: the remix's level gain."]
    if reference is not None:
        tracks.append(Track(name=REFERENCE_TRACK, file=reference, mute=True))
        chain = ", ".join(f"{spec.name} {dict(spec.params)}" if spec.params else spec.name for spec in preset.master)
        notes += [f"The preset's master chain ({chain}) is not rebuilt here: the tracks sum to the master "
                  "chain's input; the muted REFERENCE track holds its output (solo it to hear the remix)."]
    else:
        notes += ["The preset has no master chain: the tracks through their faders and the master volume "
                  "are the remix."]
    daw = DawSession(title=f"{session.name} ({preset.name})", tracks=tuple(tracks),
                     sample_rate=session.sample_rate, length_samples=length, master_gain_db=gain_db,
                     notes="\n".join(notes), generator_version=__version__)
    rpp = write_reaper_project(daw_dir / f"{session.name}_{preset.name}.RPP", daw.tracks,
                               sample_rate=daw.sample_rate, length_samples=length, master_gain_db=gain_db,
                               notes=daw.notes)
    return rpp, write_dawproject(daw_dir / f"{session.name}.dawproject", daw)


def _relative(path: Path, folder: Path) -> str:
    return Path(path).relative_to(folder).as_posix()


def _bundle_identity(path: str) -> list:
    """A plugin bundle (file or .vst3 folder) by its files' names, sizes and times."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
