"""The audio checks of a loaded manifest: every referenced file readable, consistent
with the mics (rate, length, channels) and free of NaN/inf samples."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from studio_sep.io import audio as audio_io
from studio_sep.session.manifest import Session
from studio_sep.util.errors import AudioError, ManifestError


def _info(session: Session, file: Path, field_name: str) -> audio_io.AudioInfo:
    try:
        return audio_io.audio_info(file)
    except AudioError as exc:
        raise ManifestError(session.path, field_name, f"{_display(file, session.path)}: {exc.problem}",
                            exc.fix) from None


def _scan(session: Session, file: Path, field_name, channels: list[int], silence: bool = False) -> tuple[int, ...]:
    """The file's silent channels; raises on a NaN/inf sample, naming the field of its
    channel (``field_name``: a field, or a function of the 0-based channel)."""
    path = session.path
    where = field_name if callable(field_name) else (lambda channel: field_name)
    try:
        found = audio_io.scan_samples(file, channels=channels, silence=silence)
    except AudioError as exc:
        raise ManifestError(path, where(channels[0]), f"{_display(file, path)}: {exc.problem}", exc.fix) from None
    if found.nonfinite is not None:
        sample, channel = found.nonfinite
        raise ManifestError(path, where(channel), f"{_display(file, path)} has a NaN/inf sample at sample {sample} "
                            f"of channel {channel + 1}", "repair or re-export the audio")
    return found.silent


def check_session_audio(session: Session) -> Session:
    """Open every referenced audio file and check it against the mics."""
    path = session.path

    def info(file: Path, field_name: str) -> audio_io.AudioInfo:
        return _info(session, file, field_name)

    def finite(file: Path, field_name: str, channels: list[int]) -> None:
        _scan(session, file, field_name, channels)

    first: tuple[int, int, str] | None = None  # sample rate, n_samples, field of the first mic
    channels_by_file: dict[Path, list[int]] = {}
    for i, mic in enumerate(session.mics):
        where = f"mics[{i}]"
        meta = info(mic.file, f"{where}.file")
        if mic.channel > meta.n_channels:
            raise ManifestError(path, f"{where}.channel",
                                f"channel {mic.channel} but {_display(mic.file, path)} has "
                                f"{meta.n_channels} channel(s)", f"use a channel between 1 and {meta.n_channels}")
        if first is None:
            first = (meta.sample_rate, meta.n_samples, where)
        elif meta.sample_rate != first[0]:
            raise ManifestError(path, f"{where}.file",
                                f"sample rate {meta.sample_rate} Hz differs from {first[2]} ({first[0]} Hz)",
                                "export all mics at one sample rate")
        elif meta.n_samples != first[1]:
            raise ManifestError(path, f"{where}.file",
                                f"length {meta.n_samples} samples differs from {first[2]} ({first[1]} samples)",
                                "export all mics from the same start to the same end")
        channels_by_file.setdefault(mic.file, []).append(mic.channel - 1)
    assert first is not None  # the parser guarantees at least one mic
    silent_mics = []
    for file, channels in channels_by_file.items():
        mic_of = {m.channel - 1: i for i, m in enumerate(session.mics) if m.file == file}
        silent = _scan(session, file, lambda channel: f"mics[{mic_of[channel]}].file", sorted(set(channels)),
                       silence=True)
        silent_mics += sorted(i for channel, i in mic_of.items() if channel in silent)
    warnings = _check_silence(session, sorted(silent_mics))

    sample_rate, n_samples, _ = first
    for i, source in enumerate(session.sources):
        if source.reference is not None:
            where = f"sources[{i}].reference"
            meta = info(source.reference, where)
            if meta.n_channels != 1:
                raise ManifestError(path, where, f"{_display(source.reference, path)} has {meta.n_channels} "
                                    "channels; a reference take must be mono", "export the solo take as mono")
            finite(source.reference, where, [0])
        if source.midi is not None and not source.midi.is_file():
            raise ManifestError(path, f"sources[{i}].midi", f"{_display(source.midi, path)}: file not found",
                                "fix the path or remove the midi key")

    if session.truth is not None:
        for key, n_channels in (("images", len(session.mics)), ("dry", 1)):
            for name, file in getattr(session.truth, key).items():
                where = f"truth.{key}.{name}"
                meta = info(file, where)
                if meta.n_channels != n_channels:
                    raise ManifestError(path, where, f"{_display(file, path)} has {meta.n_channels} channel(s), "
                                        f"expected {n_channels}",
                                        "one channel per mic in [[mics]] order" if key == "images" else "mono")
                if (meta.sample_rate, meta.n_samples) != (sample_rate, n_samples):
                    raise ManifestError(path, where, f"{_display(file, path)} is {meta.n_samples} samples at "
                                        f"{meta.sample_rate} Hz; the mics are {n_samples} at {sample_rate} Hz",
                                        "ground truth must match the mic recordings sample for sample")
                finite(file, where, list(range(n_channels)))
    return replace(session, sample_rate=sample_rate, n_samples=n_samples, warnings=warnings)


def _check_silence(session: Session, silent_mics: list[int]) -> tuple[str, ...]:
    """Refuse a session whose every mic is digitally silent (the fit would divide zero by
    zero); one warning per silent mic otherwise."""
    if len(silent_mics) == len(session.mics):
        raise ManifestError(session.path, "mics", "every mic's signal is digitally silent (all samples 0); "
                            "there is nothing to separate",
                            "check each mic's file and channel, and that the export holds the recording")
    return tuple(f"mics[{i}] ({session.mics[i].name}): channel {session.mics[i].channel} of "
                 f"{_display(session.mics[i].file, session.path)} is digitally silent (all samples 0); "
                 "its images will be silent too" for i in silent_mics)


def _display(file: Path, manifest: Path) -> str:
    try:
        return os.path.relpath(file, manifest.parent)
    except ValueError:
        return str(file)
