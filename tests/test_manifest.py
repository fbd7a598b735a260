"""Session manifests: round trip, and every bad input stops with one clear line."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.session import dump_session, load_session, session_to_dict
from studio_sep.util.errors import ManifestError
from studio_sep.util.toml import to_toml

SR = 16000
N = 4000


def _write(path: Path, x_SC: np.ndarray, sr: int = SR, subtype: str = "FLOAT") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x_SC, sr, subtype=subtype)


def _base_doc() -> dict:
    return {
        "session": {"name": "tiny", "description": "two sources, three mics"},
        "room": {"dimensions_m": [6.0, 5.0, 3.0], "origin_m": [1.0, 2.5, 0.0], "rt60_s": 0.4},
        "separation": {"n_fft": 1024, "hop": 256, "init": ["geometry"], "dtype": "float64"},
        "mics": [
            {"name": "room_l", "position_m": [0.0, 0.5, 1.5], "pattern": "cardioid",
             "aim_azimuth_deg": 0.0, "file": "audio/multi.wav", "channel": 1},
            {"name": "room_r", "position_m": [0.0, -0.5, 1.5], "pattern": "cardioid",
             "aim_at": "cello", "file": "audio/multi.wav", "channel": 2},
            {"name": "spot_flute", "position_m": [2.0, 1.0, 1.6], "pattern": "figure8",
             "aim_at": "flute", "file": "audio/spot_flute.wav"},
        ],
        "sources": [
            {"name": "flute", "prompt": "flute", "position_m": [2.0, 1.0, 1.0], "spot_mic": "spot_flute",
             "reference": "ref/flute.wav"},
            {"name": "cello", "position_m": [2.0, -1.0, 0.8]},
        ],
        "truth": {"images": {"flute": "truth/flute.wav"}, "dry": {"cello": "truth/cello_dry.wav"}},
    }


@pytest.fixture
def session_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    _write(tmp_path / "audio/multi.wav", 0.1 * rng.standard_normal((N, 2)))
    _write(tmp_path / "audio/spot_flute.wav", 0.1 * rng.standard_normal(N))
    _write(tmp_path / "ref/flute.wav", 0.1 * rng.standard_normal(2 * N))
    _write(tmp_path / "truth/flute.wav", 0.1 * rng.standard_normal((N, 3)))
    _write(tmp_path / "truth/cello_dry.wav", 0.1 * rng.standard_normal(N))
    _save(tmp_path, _base_doc())
    return tmp_path


def _save(folder: Path, doc: dict) -> Path:
    path = folder / "session.toml"
    path.write_text(to_toml(doc))
    return path


def _error(folder: Path, doc: dict) -> str:
    path = _save(folder, doc)
    with pytest.raises(ManifestError) as info:
        load_session(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert "(fix: " in message
    return message


def test_valid_session_loads_with_resolved_facts(session_dir: Path) -> None:
    session = load_session(session_dir / "session.toml")
    assert session.sample_rate == SR and session.n_samples == N
    assert [m.name for m in session.mics] == ["room_l", "room_r", "spot_flute"]
    assert session.mics[2].file == (session_dir / "audio/spot_flute.wav").resolve()
    assert session.sources[1].prompt == "cello"  # defaults to the name
    # aim_at resolves to the angles towards the source: straight down-ish at the flute
    flute_spot = session.mics[2]
    assert flute_spot.aim_azimuth_deg == pytest.approx(0.0, abs=1e-9)
    assert flute_spot.aim_elevation_deg == pytest.approx(-90.0)
    assert session.separation.init == ("geometry",)
    assert session.truth is not None and set(session.truth.images) == {"flute"}


def test_round_trip_preserves_every_field(session_dir: Path) -> None:
    session = load_session(session_dir / "session.toml")
    copy_path = session_dir / "copy" / "session.toml"
    dump_session(session, copy_path)
    again = load_session(copy_path)
    assert replace(again, path=session.path) == session  # every field, absolute paths equal
    assert session_to_dict(again)["mics"][0]["file"] == "../audio/multi.wav"
    # the written file is plain TOML a person can read: positions stay on one line
    text = copy_path.read_text()
    assert 'position_m = [0.0, 0.5, 1.5]' in text
    assert tomllib.loads(text)["mics"][2]["file"] == "../audio/spot_flute.wav"


def test_shipped_reference_manifest_parses() -> None:
    path = Path(__file__).parent.parent / "sessions" / "ircam_trio" / "session.toml"
    session = load_session(path, check_audio=False)
    assert [m.name for m in session.mics] == ["trio_l", "trio_c", "trio_r", "ambience",
                                             "spot_piano", "spot_sax", "spot_violin"]
    assert [s.name for s in session.sources] == ["piano", "sax", "violin"]
    assert session.source("sax").position_m == (4.5, 1.0, 0.6)
    assert session.mic("spot_violin").pattern == "figure8"
    assert session.room is not None and session.room.rt60_s == 0.5
    volume = np.prod(session.room.dimensions_m)
    assert 105 <= volume <= 113  # the paper's 108.9 m3


# --------------------------------------------------------------------------- bad input


def test_missing_audio_file(session_dir: Path) -> None:
    (session_dir / "audio/spot_flute.wav").unlink()
    msg = _error(session_dir, _base_doc())
    assert "mics[2].file" in msg and "audio/spot_flute.wav" in msg and "file not found" in msg


def test_unreadable_audio_file(session_dir: Path) -> None:
    (session_dir / "audio/spot_flute.wav").write_bytes(b"RIFF not really a wave file")
    msg = _error(session_dir, _base_doc())
    assert "mics[2].file" in msg and "not a readable audio file" in msg


def test_channel_beyond_file(session_dir: Path) -> None:
    doc = _base_doc()
    doc["mics"][1]["channel"] = 3
    msg = _error(session_dir, doc)
    assert "mics[1].channel" in msg and "has 2 channel(s)" in msg and "between 1 and 2" in msg


def test_mismatched_sample_rates(session_dir: Path) -> None:
    _write(session_dir / "audio/spot_flute.wav", np.zeros(N), sr=22050)
    msg = _error(session_dir, _base_doc())
    assert "mics[2].file" in msg and "sample rate 22050 Hz differs" in msg and "16000" in msg


def test_mismatched_lengths(session_dir: Path) -> None:
    _write(session_dir / "audio/spot_flute.wav", np.zeros(N - 1))
    msg = _error(session_dir, _base_doc())
    assert "mics[2].file" in msg and f"length {N - 1} samples differs" in msg


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(session_dir: Path, bad_value: float) -> None:
    x = np.zeros((N, 2))
    x[123, 1] = bad_value
    _write(session_dir / "audio/multi.wav", x)
    msg = _error(session_dir, _base_doc())
    assert "mics[1].file" in msg and "NaN/inf sample at sample 123 of channel 2" in msg  # channel 2: room_r


def test_non_finite_in_unused_channel_is_fine(session_dir: Path) -> None:
    doc = _base_doc()
    doc["mics"][1]["channel"] = 1  # both room mics read channel 1; channel 2 unused
    x = np.zeros((N, 2))
    x[5, 1] = np.nan
    _write(session_dir / "audio/multi.wav", x)
    _save(session_dir, doc)
    assert load_session(session_dir / "session.toml").n_samples == N


@pytest.mark.parametrize("table", ["sources", "mics"])
def test_entry_without_position(session_dir: Path, table: str) -> None:
    doc = _base_doc()
    del doc[table][0]["position_m"]
    msg = _error(session_dir, doc)
    assert f"{table}[0].position_m: missing" in msg


def test_malformed_position(session_dir: Path) -> None:
    doc = _base_doc()
    doc["sources"][0]["position_m"] = [1.0, 2.0]
    msg = _error(session_dir, doc)
    assert "sources[0].position_m" in msg and "[x, y, z]" in msg


@pytest.mark.parametrize("table", ["sources", "mics"])
def test_duplicate_names(session_dir: Path, table: str) -> None:
    doc = _base_doc()
    doc[table][1]["name"] = doc[table][0]["name"]
    msg = _error(session_dir, doc)
    assert f"{table}[1].name" in msg and "duplicate name" in msg


@pytest.mark.parametrize(
    ("where", "typo", "suggestion"),
    [("mics", "chanel", "channel"), ("sources", "spotmic", "spot_mic"), ("session", "nmae", "name")],
)
def test_unknown_key_suggests_the_right_one(session_dir: Path, where: str, typo: str, suggestion: str) -> None:
    doc = _base_doc()
    target = doc[where][0] if isinstance(doc[where], list) else doc[where]
    target[typo] = target.get(suggestion, "x")
    msg = _error(session_dir, doc)
    assert typo in msg and "unknown key" in msg and f"did you mean '{suggestion}'" in msg


def test_unknown_top_level_table(session_dir: Path) -> None:
    doc = _base_doc()
    doc["seperation"] = doc.pop("separation")
    msg = _error(session_dir, doc)
    assert "seperation" in msg and "did you mean 'separation'" in msg


def test_spot_mic_that_names_no_mic(session_dir: Path) -> None:
    doc = _base_doc()
    doc["sources"][0]["spot_mic"] = "spot_flut"
    msg = _error(session_dir, doc)
    assert "sources[0].spot_mic" in msg and "'spot_flut'" in msg and "spot_flute" in msg


def test_aim_at_unknown_source(session_dir: Path) -> None:
    doc = _base_doc()
    doc["mics"][1]["aim_at"] = "viola"
    msg = _error(session_dir, doc)
    assert "mics[1].aim_at" in msg and "'viola'" in msg


@pytest.mark.parametrize("table", ["sources", "mics"])
def test_empty_session(session_dir: Path, table: str) -> None:
    doc = _base_doc()
    doc[table] = []
    doc.pop("truth")
    msg = _error(session_dir, doc)
    assert f"{table}: the session has no" in msg


def test_mic_outside_the_room(session_dir: Path) -> None:
    doc = _base_doc()
    doc["mics"][0]["position_m"] = [5.5, 0.0, 1.5]  # x = 6.5 in room coordinates, room is 6 m
    msg = _error(session_dir, doc)
    assert "mics[0].position_m" in msg and "outside the room" in msg


def test_unknown_pattern(session_dir: Path) -> None:
    doc = _base_doc()
    doc["mics"][0]["pattern"] = "cardiod"
    msg = _error(session_dir, doc)
    assert "mics[0].pattern" in msg and "did you mean 'cardioid'" in msg


def test_truth_image_with_wrong_channel_count(session_dir: Path) -> None:
    _write(session_dir / "truth/flute.wav", np.zeros((N, 2)))
    msg = _error(session_dir, _base_doc())
    assert "truth.images.flute" in msg and "expected 3" in msg


def test_truth_for_unknown_source(session_dir: Path) -> None:
    doc = _base_doc()
    doc["truth"]["images"]["oboe"] = "truth/flute.wav"
    msg = _error(session_dir, doc)
    assert "truth.images.oboe" in msg and "unknown key" in msg


def test_stereo_reference_take(session_dir: Path) -> None:
    _write(session_dir / "ref/flute.wav", np.zeros((N, 2)))
    msg = _error(session_dir, _base_doc())
    assert "sources[0].reference" in msg and "must be mono" in msg


def test_invalid_toml(session_dir: Path) -> None:
    path = session_dir / "session.toml"
    path.write_text("[session]\nname = \n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_session(path)


def test_hop_larger_than_fft(session_dir: Path) -> None:
    doc = _base_doc()
    doc["separation"]["hop"] = 2048
    msg = _error(session_dir, doc)
    assert "separation.hop" in msg


# --------------------------------------------------------------------------- CLI


runner = CliRunner()


def test_cli_validate_prints_summary(session_dir: Path) -> None:
    result = runner.invoke(app, ["validate", str(session_dir / "session.toml")])
    assert result.exit_code == 0, result.output
    assert "tiny: 2 sources, 3 mics, 0.25 s at 16000 Hz" in result.stdout
    assert "spot_flute" in result.stdout and "cello" in result.stdout


def test_cli_validate_bad_input_is_one_line_without_traceback(session_dir: Path) -> None:
    doc = copy.deepcopy(_base_doc())
    doc["mics"][1]["channel"] = 9
    _save(session_dir, doc)
    result = runner.invoke(app, ["validate", str(session_dir)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "mics[1].channel" in lines[0]
    assert "Traceback" not in result.output


def test_cli_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("simulate", "validate", "demo"):
        assert command in result.stdout
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("studio-sep 0.")
