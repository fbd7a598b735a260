"""DAW hand-off: the REAPER project sounds like the remix (read with the independent
``rpp`` parser), the DAWproject validates against its published schema, the stems and
the remix carry bext (time reference, loudness), ``mix --format flac``."""

from __future__ import annotations

import dataclasses
import io
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rpp
import soundfile as sf
from typer.testing import CliRunner

from studio_sep import mixing
from studio_sep.cli import app
from studio_sep.io import audio as audio_io
from studio_sep.mixing.plugins import host as plugin_host
from studio_sep.mixing.presets import load_preset
from studio_sep.session import load_session
from studio_sep.stages import mix_session
from studio_sep.stages.images import LazyImages

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "data" / "dawproject"
runner = CliRunner()

#: no master chain: the project's tracks, faders and master volume are the remix
FADERS = """
[preset]
name = "faders"
tail_s = 0.25
loudness_lufs = -18.0
true_peak_dbtp = -1.0
format = "pcm24"

[defaults]
feeds = [{ mic = "trio_l", pan = -1.0 }, { mic = "trio_r", pan = 1.0 }, { mic = "@spot", pan = "@position" }]
chain = [{ plugin = "HighpassFilter", cutoff_frequency_hz = 80.0 }]

[sources.piano]
gain_db = -4.0
pan = 0.4

[sources.sax]
pan = -0.7

[sources.violin]
mute = true
"""


def _preset(tmp_path: Path, text: str = FADERS) -> Path:
    path = tmp_path / "faders.toml"
    path.write_text(text)
    return path


def _balance(pan: float) -> np.ndarray:
    """The pan law the RPP pins (stereo balance, 0 dB law): the far side linear, the near side at unity."""
    return np.array([[min(1.0, 1.0 - pan)], [min(1.0, 1.0 + pan)]])


def _render_rpp(project: Path) -> tuple[np.ndarray, float, dict, list]:
    """Sum a written RPP's tracks (parsed with the ``rpp`` package) through their faders:
    (pre-master sum, master volume, project keys, [(track name, mute, file)])."""
    root = rpp.loads(project.read_text())
    keys = {child[0]: child[1:] for child in root.children if isinstance(child, list)}
    total, tracks = None, []
    for track in root.findall("TRACK"):
        fields = {child[0]: child[1:] for child in track.children if isinstance(child, list)}
        file = project.parent / track.find(".//SOURCE").find("FILE")[1]
        volume, pan = float(fields["VOLPAN"][0]), float(fields["VOLPAN"][1])
        mute = fields["MUTESOLO"][0] == "1"
        assert fields["MAINSEND"][0] == "1"  # the track reaches the master
        tracks.append((fields["NAME"][0], mute, file))
        x, _ = audio_io.read_audio(file)
        total = np.zeros_like(x) if total is None else total
        if not mute:
            total += volume * _balance(pan) * x
    return total, float(keys["MASTER_VOLUME"][0]), keys, tracks


def _loudness(x_CS: np.ndarray, rate: int) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(rate).integrated_loudness(x_CS.T)


def _residual_db(x: np.ndarray, reference: np.ndarray) -> float:
    return 10 * np.log10(np.sum((x - reference) ** 2) / np.sum(reference**2))


def test_rpp_tracks_through_their_faders_are_the_remix(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    outcome = mix_session(session, tmp_path, _preset(tmp_path), source="truth")
    total, master_volume, keys, tracks = _render_rpp(outcome.project)
    assert keys["SAMPLERATE"] == [str(session.sample_rate), "1", "0"]
    assert keys["PANMODE"] == ["3"] and float(keys["PANLAW"][0]) == 1.0  # stereo balance, 0 dB
    assert master_volume == pytest.approx(10 ** (outcome.report["gain_db"] / 20), rel=2e-4)  # report: 3 decimals
    assert abs(outcome.report["gain_db"]) > 3  # the level gain the old projects left out
    assert [(name, mute) for name, mute, _ in tracks] == [("01 piano", False), ("02 sax", False), ("03 violin", True)]
    remix, rate = audio_io.read_audio(outcome.remix)
    rendered = master_volume * total
    assert abs(_loudness(rendered, rate) - _loudness(remix, rate)) < 0.5
    assert _residual_db(rendered, remix) < -30.0
    assert _residual_db(rendered, remix) < -90.0  # in fact: only the 24-bit quantisation differs
    assert outcome.report["master_reference"] is None


def test_rpp_with_a_master_chain_sums_to_the_master_input(rendered_session: Path, tmp_path: Path) -> None:
    """The paper preset has a master chain (a high-pass): the tracks sum to the master
    bus's input as the whole-signal mixer makes it, and the muted reference track
    through the master volume is the remix."""
    session = load_session(rendered_session)
    preset_path = REPO / "presets" / "paper.toml"
    outcome = mix_session(session, tmp_path, preset_path, source="truth")
    total, master_volume, keys, tracks = _render_rpp(outcome.project)
    assert [(name.split()[0], mute) for name, mute, _ in tracks][-1] == ("REFERENCE", True)
    preset = load_preset(preset_path)
    bare = dataclasses.replace(preset, master=(), loudness_lufs=None, true_peak_dbtp=None)
    routes = mixing.resolve_routes(session, bare, {s.name: s.spot_mic for s in session.sources},
                                   sample_rate=session.sample_rate)
    names = [s.name for s in session.sources]
    images = LazyImages(lambda n, m, start, stop: audio_io.read_audio(session.truth.images[names[n]], channels=[m],
                                                                       start=start, stop=stop)[0][0],
                        len(names), len(session.mics), session.n_samples)
    master_input = mixing.mix(images, routes, bare, sample_rate=session.sample_rate,
                              render_chain=plugin_host.render_chain).remix_2S
    assert _residual_db(total, master_input) < -30.0
    remix, rate = audio_io.read_audio(outcome.remix)
    reference = master_volume * audio_io.read_audio(tracks[-1][2])[0]
    assert abs(_loudness(reference, rate) - _loudness(remix, rate)) < 0.5
    assert _residual_db(reference, remix) < -30.0
    assert "HighpassFilter" in outcome.project.read_text()  # the notes name the chain not rebuilt


def test_dawproject_validates_and_holds_the_stems(rendered_session: Path, tmp_path: Path) -> None:
    import xmlschema

    session = load_session(rendered_session)
    outcome = mix_session(session, tmp_path, _preset(tmp_path), source="truth")
    assert outcome.dawproject == tmp_path / session.name / "daw" / "faders" / f"{session.name}.dawproject"
    with zipfile.ZipFile(outcome.dawproject) as archive:
        project_xml, metadata_xml = archive.read("project.xml"), archive.read("metadata.xml")
        xmlschema.XMLSchema(SCHEMAS / "Project.xsd").validate(io.BytesIO(project_xml))
        xmlschema.XMLSchema(SCHEMAS / "MetaData.xsd").validate(io.BytesIO(metadata_xml))
        from xml.etree import ElementTree as ET

        project = ET.fromstring(project_xml)
        tracks = project.findall("./Structure/Track")
        assert [t.get("name") for t in tracks] == ["01 piano", "02 sax", "03 violin", "Master"]
        master = tracks[-1].find("Channel")
        assert master.get("role") == "master"
        assert float(master.find("Volume").get("value")) == pytest.approx(10 ** (outcome.report["gain_db"] / 20), rel=2e-4)
        piano = tracks[0].find("Channel")
        assert piano.get("destination") == master.get("id")
        assert float(piano.find("Volume").get("value")) == pytest.approx(10 ** (-4 / 20))
        assert float(piano.find("Pan").get("value")) == pytest.approx((0.4 + 1) / 2)
        assert tracks[2].find("Channel/Mute").get("value") == "true"
        files = [f.get("path") for f in project.iter("File")]
        assert files == [f"audio/{p.name}" for p in outcome.stems]
        for path, stem in zip(files, outcome.stems):
            assert archive.read(path) == stem.read_bytes()
        lanes = project.find("./Arrangement/Lanes")
        assert lanes.get("timeUnit") == "seconds"
        clip = lanes.find("Lanes/Clips/Clip")
        info = audio_io.audio_info(outcome.stems[0])
        assert float(clip.get("duration")) == pytest.approx(info.duration_s)
        assert clip.find("Audio").get("sampleRate") == str(session.sample_rate)


def _raw_bext(path: Path) -> bytes:
    data = path.read_bytes()
    at = data.index(b"bext")
    size = struct.unpack("<I", data[at + 4:at + 8])[0]
    return data[at + 8:at + 8 + size]


def test_stems_carry_the_mics_time_reference_and_the_remix_its_loudness(rendered_session: Path,
                                                                         tmp_path: Path) -> None:
    folder = tmp_path / "session"
    shutil.copytree(rendered_session.parent, folder)
    session = load_session(folder / rendered_session.name)
    mic_file = session.mics[0].file
    x, rate = audio_io.read_audio(mic_file)
    one_hour = 3600 * rate
    audio_io.write_audio(mic_file, x, rate, subtype="float32", bext=audio_io.Bext(time_reference=one_hour))
    outcome = mix_session(load_session(folder / rendered_session.name), tmp_path / "out", _preset(tmp_path),
                          source="truth")
    for stem in outcome.stems:
        raw = _raw_bext(stem)
        assert struct.unpack("<II", raw[338:346]) == (one_hour & 0xFFFFFFFF, one_hour >> 32)
        assert audio_io.read_bext(stem).time_reference == one_hour
    raw = _raw_bext(outcome.remix)
    version, = struct.unpack("<H", raw[346:348])
    loudness, lra, true_peak, momentary, short_term = struct.unpack("<5h", raw[412:422])
    assert version == 2
    assert loudness == round(outcome.report["loudness_out_lufs"] * 100)
    assert true_peak == round(outcome.report["true_peak_out_dbtp"] * 100)
    remix, rate = audio_io.read_audio(outcome.remix)
    assert loudness / 100 == pytest.approx(_loudness(remix, rate), abs=0.05)
    assert loudness < momentary < 0 and lra == short_term == 0x7FFF  # not measured
    assert struct.unpack("<II", raw[338:346]) == (one_hour, 0)
    assert audio_io.read_bext(outcome.remix).loudness_lufs == loudness / 100


def test_mix_format_flac_and_refused_formats(rendered_session: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["mix", str(rendered_session), "--out", str(tmp_path), "--from", "truth",
                                 "--preset", str(_preset(tmp_path)), "--format", "flac"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / load_session(rendered_session).name
    remix = folder / "remix" / "faders.flac"
    assert sf.info(str(remix)).format == "FLAC" and sf.info(str(remix)).subtype == "PCM_24"
    stems = sorted((folder / "daw" / "faders").glob("*.flac"))
    assert len(stems) == 3
    total, master_volume, _, tracks = _render_rpp(next((folder / "daw" / "faders").glob("*.RPP")))
    assert [t[2] for t in tracks] == stems
    assert _residual_db(master_volume * total, audio_io.read_audio(remix)[0]) < -90.0
    result = runner.invoke(app, ["mix", str(rendered_session), "--out", str(tmp_path / "b"), "--from", "truth",
                                 "--preset", str(_preset(tmp_path)), "--format", "mp3"])
    assert result.exit_code == 2 and "--format" in result.stderr and "'mp3' is not one of" in result.stderr
    result = runner.invoke(app, ["separate", str(rendered_session), "--out", str(tmp_path / "c"), "--format", "flac"])
    assert result.exit_code == 2 and "mix --format flac" in result.stderr
    assert not (tmp_path / "c").exists()
