"""Helpers shared by the benchmark scripts (imported as ``common``: the scripts run from
this folder, ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from pathlib import Path


def jsonable(obj):
    """``obj`` with tuples as lists, paths as strings, keys as strings and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def memory_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (None elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            return round(int(next(line for line in f if line.startswith("MemTotal")).split()[1]) / 1024**2, 1)
    except (OSError, StopIteration):
        return None


def package_versions(names) -> dict[str, str]:
    """Python's and numpy's versions, then each named distribution's ("not installed" if absent)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def without_takes(manifest_text: str) -> str:
    """A rendered session's manifest without its dry truth, solo reference takes and MIDI
    (the benchmarks that tile or resample a session write only its mics and truth images)."""
    text = re.sub(r"\[truth\.dry\][^\[]*", "", manifest_text)
    text = re.sub(r'reference = "[^"]*"\n', "", text)
    return re.sub(r'midi = "[^"]*"\n', "", text)


def add_paper_scene_args(parser) -> None:
    """The options of the paper configuration's trio scene that ``separation.paper_stft``
    reads (``--work``, ``--soundfont``, ``--rt60``), for the per-step timers."""
    import os

    parser.add_argument("--work", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "studio-sep" / "benchmarks")
    parser.add_argument("--soundfont", default="/usr/share/sounds/sf2/FluidR3_GM.sf2")
    parser.add_argument("--rt60", type=float, default=0.5)


def git_short_head(folder: Path) -> str:
    """The short commit of the repository holding ``folder`` ("unknown" without git)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(stem: Path, markdown: str, data, *, indent: int = 2) -> None:
    """``stem``.md (the table) and ``stem``.json (``data``, made JSON-safe by :func:`jsonable`)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(markdown)
    stem.with_suffix(".json").write_text(json.dumps(jsonable(data), indent=indent))


class ZooScene:
    """A rendered zoo session (``zoo.py``'s work folder) ready to separate and score: the
    manifest's settings, the mics at the native and the processing rate, their STFT and the
    true images at the reference mic. ``sdr(images)`` scores Wiener images at the reference
    mic (a list of ``(F, T)`` or ``(F, T, M)`` STFTs, one per source, in the manifest's order)
    at the native rate: mean SDR over sources, fast-bss-eval with 512 taps."""

    def __init__(self, work: Path, index: int):
        import numpy as np

        from studio_sep.dsp import stft
        from studio_sep.dsp.resample import resample
        from studio_sep.io import audio as audio_io
        from studio_sep.session import load_mics, load_session
        from studio_sep.stages.settings import resolve_settings

        self.index = index
        self.session = load_session(next(work.glob(f"zoo_*_{index:03d}/session.toml")))
        self.settings = resolve_settings(self.session)
        self.x = load_mics(self.session)
        self.x_proc = resample(self.x, self.session.sample_rate, self.settings.processing_sample_rate)
        self.X = stft.stft(self.x_proc, n_fft=self.settings.n_fft, hop=self.settings.hop)
        self.truth = np.stack([audio_io.read_audio(self.session.truth.images[s.name])[0][0]
                               for s in self.session.sources])

    def initial_model(self, start: int = 0):
        """The default geometric start (the prior stage's, ensemble member ``start``)."""
        from studio_sep.separation.initial import initial_model

        s, session = self.settings, self.session
        return initial_model(self.X, n_sources=len(session.sources), init_kinds=s.init, n_basis=s.n_basis,
                             seed=s.seed, sample_rate=s.processing_sample_rate, n_fft=s.n_fft,
                             mic_positions=[m.position_m for m in session.mics],
                             source_positions=[x.position_m for x in session.sources],
                             patterns=[m.pattern for m in session.mics],
                             aims_deg=[(m.aim_azimuth_deg, m.aim_elevation_deg) for m in session.mics],
                             start=start)[0]

    def sdr(self, images) -> float:
        import numpy as np

        from studio_sep.dsp import stft
        from studio_sep.dsp.metrics import bss_metrics
        from studio_sep.dsp.resample import resample

        s = self.settings
        est = [resample(stft.istft(S if S.ndim == 3 else S[:, :, None], n_fft=s.n_fft, hop=s.hop,
                                   n_samples=self.x_proc.shape[1])[0],
                        s.processing_sample_rate, self.session.sample_rate, n_samples=self.x.shape[1])
               for S in images]
        return float(np.mean(bss_metrics(self.truth, np.stack(est))["sdr"]))
