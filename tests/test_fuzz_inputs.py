"""Property tests (hypothesis): manifests and presets, valid and mutated (wrong types, missing
and unknown keys, odd names, out-of-range and non-finite numbers), are either accepted or
refused with exactly one line and exit code 2: never a traceback, never a file written.

Bounded to a few seconds: a fixed number of examples, files in one temporary folder,
the CLI run in-process.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.mixing.check import check_preset
from studio_sep.mixing.presets import load_preset
from studio_sep.mixing.routing import resolve_routes
from studio_sep.session import load_session
from studio_sep.stages.settings import choose_stem_mics
from studio_sep.util.errors import InputError
from studio_sep.util.toml import to_toml

runner = CliRunner()
SR, N = 16000, 4000
EXAMPLES = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

MANIFEST = {
    "session": {"name": "fuzz", "description": "two sources, three mics", "processing_sample_rate": 8000},
    "room": {"dimensions_m": [6.0, 5.0, 3.0], "origin_m": [1.0, 2.5, 0.0], "rt60_s": 0.4},
    "separation": {"n_fft": 512, "hop": 128, "n_iter": 10, "n_basis": 4, "init": ["geometry"], "device": "cpu",
                   "dtype": "float64", "seed": 0, "prior": "none"},
    "mics": [
        {"name": "room_l", "position_m": [0.0, 0.5, 1.5], "pattern": "cardioid", "aim_azimuth_deg": 0.0,
         "aim_elevation_deg": 0.0, "file": "audio/multi.wav", "channel": 1},
        {"name": "room_r", "position_m": [0.0, -0.5, 1.5], "pattern": "cardioid", "aim_at": "cello",
         "file": "audio/multi.wav", "channel": 2},
        {"name": "spot_flute", "position_m": [2.0, 1.0, 1.6], "pattern": "figure8", "aim_at": "flute",
         "file": "audio/spot.wav"},
    ],
    "sources": [
        {"name": "flute", "prompt": "flute", "position_m": [2.0, 1.0, 1.0], "spot_mic": "spot_flute",
         "reference": "ref/flute.wav", "midi": "midi/flute.mid"},
        {"name": "cello", "position_m": [2.0, -1.0, 0.8]},
    ],
    "truth": {"images": {"flute": "truth/flute.wav", "cello": "truth/cello.wav"}, "dry": {"cello": "truth/dry.wav"}},
}

PRESET = {
    "preset": {"name": "fz", "description": "fuzz", "tail_s": 0.5, "loudness_lufs": -18.0, "true_peak_dbtp": -1.0,
               "format": "pcm24"},
    "defaults": {"gain_db": 0.0, "pan": 0.0, "chain": [{"plugin": "Compressor", "threshold_db": -12.0, "ratio": 2.0}],
                 "feeds": [{"mic": "@spot", "gain_db": -3.0, "pan": "@position", "delay_ms": 5.0,
                            "chain": [{"plugin": "HighpassFilter", "cutoff_frequency_hz": 80.0}]},
                           {"mic": "room_l", "pan": -1.0, "optional": True}]},
    "sources": {"flute": {"gain_db": 1.5, "mute": False, "solo": False,
                          "feed_chains": {"@spot": [{"plugin": "PeakFilter", "cutoff_frequency_hz": 3000.0,
                                                     "gain_db": 3.0, "q": 0.9}]}}},
    "master": {"chain": [{"plugin": "Gain", "gain_db": -1.0}, {"plugin": "LowpassFilter",
                                                               "cutoff_frequency_hz": 7000.0}]},
}

ODD_TEXT = st.sampled_from(["", " ", ".", "..", "a/b", "trio\n", "x" * 240, "[bold]x[/]", "[/x]", "é", 'q"uote',
                            "-lead", "a b", "@spot", "@position", "cello", "spot_flute", "audio/multi.wav",
                            "audio", "/nonexistent.wav", "none", "auto", "float16"])
TEXT = ODD_TEXT | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
NUMBERS = st.sampled_from([0, -1, 1, 2, 3, 9, 100, 8000, 10**6, 2**63 - 1, -(2**63), 1e308, -1e308, 1e-300, 0.5,
                           -0.5, 2.5, float("nan"), float("inf"), float("-inf")]) | st.integers(-10**7, 10**7) | \
    st.floats(allow_nan=True, allow_infinity=True)
SCALARS = TEXT | NUMBERS | st.booleans()
VALUES = SCALARS | st.lists(SCALARS, max_size=4) | st.dictionaries(st.sampled_from(["name", "file", "x", "plugin"]),
                                                                   SCALARS, max_size=2)


def _paths(node, prefix=()):
    """Every key path into a document (tables, lists and leaves)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


@st.composite
def mutated(draw, base: dict) -> dict:
    """``base`` with 0–3 mutations: a value replaced, a key removed, or an unknown key added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        kind = draw(st.sampled_from(["replace", "replace", "remove", "unknown"]))
        if kind == "replace":
            parent[path[-1]] = draw(VALUES)
        elif kind == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["chanel", "nmae", "gain", "extra"]))] = draw(SCALARS)
    return doc


def _write(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, SR, subtype="FLOAT")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    _write(root / "audio/multi.wav", 0.1 * rng.standard_normal((N, 2)))
    _write(root / "audio/spot.wav", 0.1 * rng.standard_normal(N))
    _write(root / "ref/flute.wav", 0.1 * rng.standard_normal(N))
    for name in ("flute", "cello"):
        _write(root / f"truth/{name}.wav", 0.1 * rng.standard_normal((N, 3)))
    _write(root / "truth/dry.wav", 0.1 * rng.standard_normal(N))
    (root / "midi").mkdir()
    (root / "midi/flute.mid").write_bytes(b"MThd")
    return root


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.name != "session.toml" and "presets" not in
            p.parts}


def _accepted_or_one_line(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_the_base_documents_are_valid(folder: Path) -> None:
    (folder / "session.toml").write_text(to_toml(MANIFEST))
    session = load_session(folder)
    preset_path = folder / "presets" / "fz.toml"
    preset_path.parent.mkdir(exist_ok=True)
    preset_path.write_text(to_toml(PRESET))
    preset = load_preset(preset_path)
    check_preset(preset, sample_rate=SR)
    assert len(resolve_routes(session, preset, choose_stem_mics(session, {}), sample_rate=SR)) == 2


@EXAMPLES
@given(doc=mutated(MANIFEST))
def test_validate_accepts_or_refuses_in_one_line(folder: Path, doc: dict) -> None:
    before = _snapshot(folder)
    (folder / "session.toml").write_text(to_toml(doc), encoding="utf-8")
    _accepted_or_one_line(runner.invoke(app, ["validate", str(folder)]))
    assert _snapshot(folder) == before


@EXAMPLES
@given(doc=mutated(PRESET))
def test_presets_are_accepted_or_refused_in_one_line(folder: Path, doc: dict) -> None:
    (folder / "session.toml").write_text(to_toml(MANIFEST))
    session = load_session(folder)
    presets = folder / "presets"
    presets.mkdir(exist_ok=True)
    path = presets / "fz.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    before = _snapshot(folder)
    try:  # what every command checks before it renders anything
        preset = load_preset(path)
        check_preset(preset, sample_rate=SR)
        resolve_routes(session, preset, choose_stem_mics(session, {}), sample_rate=SR)
    except InputError as exc:
        assert "\n" not in str(exc) and (str(path) in str(exc)), str(exc)
    _accepted_or_one_line(runner.invoke(app, ["presets", str(presets)]))
    assert _snapshot(folder) == before
    assert os.listdir(presets) == ["fz.toml"]
