"""The rendered reference session as a whole: files, facts, determinism, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.io import audio as audio_io
from studio_sep.session import load_session, session_to_dict
from studio_sep.sim import SimulationSettings, reference_session, simulate_session
from studio_sep.util.errors import SimulationError

from .conftest import SESSION_RATE, SESSION_SECONDS, SOUNDFONT

REPO = Path(__file__).resolve().parent.parent


def _settings(**changes) -> SimulationSettings:
    values = dict(seed=0, duration_s=SESSION_SECONDS, sample_rate=SESSION_RATE, soundfont=SOUNDFONT,
                  reference_duration_s=6.0)
    return SimulationSettings(**(values | changes))


def test_session_validates_with_seven_mics_and_ground_truth(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    assert session.sample_rate == SESSION_RATE
    assert session.n_samples == round(SESSION_SECONDS * SESSION_RATE)
    info = audio_io.audio_info(session.mics[0].file)
    assert info.n_channels == 7 and all(m.file == session.mics[0].file for m in session.mics)
    assert [m.channel for m in session.mics] == list(range(1, 8))
    assert set(session.truth.images) == set(session.truth.dry) == {"piano", "sax", "violin"}


def test_images_sum_to_the_mic_signals(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    mics, _ = audio_io.read_audio(session.mics[0].file)
    images = sum(audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources)
    # each file is float32 rounded from one float64 render: equal to float32 precision
    assert np.abs(images - mics).max() <= 4 * np.finfo(np.float32).eps * np.abs(mics).max()
    assert np.abs(mics).max() > 0.01


def test_every_dry_source_and_reference_take_is_non_silent(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    for source in session.sources:
        dry, _ = audio_io.read_audio(session.truth.dry[source.name])
        reference, _ = audio_io.read_audio(source.reference)
        assert np.sqrt(np.mean(dry**2)) > 1e-3, source.name
        assert np.sqrt(np.mean(reference**2)) > 1e-4, source.name
        # a different passage: not the session's part at the spot mic
        image, _ = audio_io.read_audio(session.truth.images[source.name])
        spot = [m.name for m in session.mics].index(source.spot_mic)
        n = min(reference.shape[1], image.shape[1])
        corr = np.corrcoef(reference[0, :n], image[spot, :n])[0, 1]
        assert abs(corr) < 0.5, (source.name, corr)


def test_each_spot_mic_is_dominated_by_its_nearest_source(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    energy = {s.name: np.sum(audio_io.read_audio(session.truth.images[s.name])[0] ** 2, axis=1)
              for s in session.sources}
    names = [m.name for m in session.mics]
    for source in session.sources:
        spot = session.mic(source.spot_mic)
        nearest = min(session.sources, key=lambda s: np.linalg.norm(np.subtract(s.position_m, spot.position_m)))
        assert nearest.name == source.name
        m = names.index(spot.name)
        others = max(energy[o.name][m] for o in session.sources if o.name != source.name)
        assert energy[source.name][m] > others, (source.name, energy[source.name][m], others)


def test_midi_parts_have_the_gm_programs(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    programs = {"violin": 40, "sax": 66, "piano": 0}
    for source in session.sources:
        for path in (source.midi, source.midi.with_name(f"reference_{source.name}.mid")):
            midi = mido.MidiFile(str(path))
            found = {m.program for m in midi if m.type == "program_change"}
            assert found == {programs[source.name]}
            assert sum(1 for m in midi if m.type == "note_on" and m.velocity > 0) > 5


def test_render_json_records_provenance(rendered_session: Path) -> None:
    render = json.loads((rendered_session.parent / "render.json").read_text())
    assert render["key"]["seed"] == 0 and render["key"]["sample_rate"] == SESSION_RATE
    assert render["room"]["rt60_requested_s"] == 0.5
    assert abs(render["room"]["measured_rt60_s"] - 0.5) <= 0.05
    assert render["room"]["sabine_measured_rt60_s"] > 0.55  # why calibration is needed
    assert len(render["key"]["soundfont_sha256"]) == 64


def test_same_seed_same_samples_other_seed_other_samples(rendered_session: Path, tmp_path: Path) -> None:
    again = simulate_session(tmp_path / "again", _settings(duration_s=3.0, reference_duration_s=2.0))
    once_more = simulate_session(tmp_path / "once_more", _settings(duration_s=3.0, reference_duration_s=2.0))
    other = simulate_session(tmp_path / "other", _settings(seed=7, duration_s=3.0, reference_duration_s=2.0))
    read = lambda r: audio_io.read_audio(load_session(r.manifest).mics[0].file)[0]  # noqa: E731
    np.testing.assert_array_equal(read(again), read(once_more))  # samples, not bytes (PEAK chunk)
    assert not np.allclose(read(again), read(other))


def test_rerun_reuses_a_complete_render(rendered_session: Path) -> None:
    mics = load_session(rendered_session).mics[0].file
    before = mics.stat().st_mtime_ns
    result = simulate_session(rendered_session.parent, _settings())
    assert result.reused and mics.stat().st_mtime_ns == before


def test_refuses_to_overwrite_another_session(tmp_path: Path) -> None:
    (tmp_path / "session.toml").write_text('[session]\nname = "mine"\n')
    with pytest.raises(SimulationError, match="describes another session.*--force"):
        simulate_session(tmp_path, _settings(duration_s=2.0, reference_duration_s=2.0))
    assert (tmp_path / "session.toml").read_text().startswith("[session]\nname = \"mine\"")
    assert not (tmp_path / "audio").exists()  # stopped before any work


def test_shipped_manifest_is_the_default_render() -> None:
    shipped = REPO / "sessions" / "ircam_trio" / "session.toml"
    assert session_to_dict(load_session(shipped, check_audio=False)) == \
        session_to_dict(reference_session(shipped.parent))


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--duration", "0"], "--duration: 0.0 is outside"),
     (["--sample-rate", "1000"], "sample_rate"),
     (["--soundfont", "/nope/missing.sf2"], "SoundFont file not found"),
     (["--rt60", "5"], "--rt60")],
)
def test_cli_simulate_bad_settings_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", str(tmp_path / "s"), *args])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


def test_an_equal_manifest_is_kept_byte_for_byte(tmp_path: Path) -> None:
    shipped = (REPO / "sessions" / "ircam_trio" / "session.toml").read_text()
    (tmp_path / "session.toml").write_text(shipped)
    simulate_session(tmp_path, _settings(duration_s=2.0, reference_duration_s=2.0))
    assert (tmp_path / "session.toml").read_text() == shipped  # comments and layout untouched
    assert load_session(tmp_path / "session.toml").n_samples == 2 * SESSION_RATE
