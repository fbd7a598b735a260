"""Mixing stage: presets, routing, levels, stems, DAW project — real pedalboard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from studio_sep import mixing
from studio_sep.cli import app
from studio_sep.io import audio as audio_io
from studio_sep.io.daw import parse_reaper_project
from studio_sep.mixing.plugins.host import PluginError
from studio_sep.mixing.presets import PresetError, load_preset
from studio_sep.session import load_session
from studio_sep.stages import mix_session
from studio_sep.util.errors import InputError

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _preset(tmp_path: Path, text: str, name: str = "p") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


UNITY = """
[preset]
tail_s = 0.25
true_peak_dbtp = "none"
format = "float32"

[defaults]
feeds = [{ mic = "@spot" }]
"""


def _truth(session) -> np.ndarray:
    return np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])


def test_pan_law_is_constant_power() -> None:
    for pan in np.linspace(-1, 1, 9):
        left, right = mixing.pan_gains(pan)
        assert left**2 + right**2 == pytest.approx(1.0)
    assert mixing.pan_gains(0.0) == pytest.approx((math.sqrt(0.5), math.sqrt(0.5)))
    assert mixing.pan_gains(-1.0) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert mixing.balance_gains(0.0) == (1.0, 1.0)
    assert mixing.balance_gains(0.5) == (0.5, 1.0)


def test_unity_preset_stems_sum_to_the_remix_exactly(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    outcome = mix_session(session, tmp_path, _preset(tmp_path, UNITY), source="truth")
    stems = np.stack([audio_io.read_audio(p)[0] for p in outcome.stems])
    remix, sr = audio_io.read_audio(outcome.remix)
    assert sr == session.sample_rate
    tail = round(0.25 * sr)
    assert remix.shape == (2, session.n_samples + tail) and stems.shape == (3, 2, session.n_samples + tail)
    np.testing.assert_allclose(stems.sum(axis=0), remix, atol=3e-7)  # float32 files
    # each stem is its spot-mic image, centred at -3 dB per side, followed by silence
    truth = _truth(session)
    spot = [m.name for m in session.mics].index("spot_sax")
    np.testing.assert_allclose(stems[1, 0, : session.n_samples], truth[1, spot] * math.sqrt(0.5), atol=1e-6)
    assert np.all(stems[:, :, session.n_samples:] == 0)
    assert outcome.report["gain_db"] == 0.0 and outcome.report["warnings"] == []


def test_feed_delay_gain_and_pan_are_exact(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    text = UNITY.replace('feeds = [{ mic = "@spot" }]',
                         'feeds = [{ mic = "trio_c", delay_ms = 10.0, gain_db = -6.0, pan = -1.0 }]')
    outcome = mix_session(session, tmp_path, _preset(tmp_path, text), source="truth")
    stem, _ = audio_io.read_audio(outcome.stems[0])
    image = _truth(session)[0, [m.name for m in session.mics].index("trio_c")]
    delay = round(0.010 * session.sample_rate)
    np.testing.assert_allclose(stem[0, delay:delay + session.n_samples], image * 10 ** (-6 / 20), atol=1e-6)
    assert np.all(stem[0, :delay] == 0) and np.all(stem[1] == 0)  # hard left


def test_chain_tail_is_kept(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    text = UNITY.replace("tail_s = 0.25", "tail_s = 1.5") + """
[sources.piano]
chain = [{ plugin = "Reverb", room_size = 0.9, wet_level = 0.5 }]
"""
    outcome = mix_session(session, tmp_path, _preset(tmp_path, text), source="truth")
    stem, sr = audio_io.read_audio(outcome.stems[0])
    tail = stem[:, session.n_samples:]
    assert tail.shape[1] == round(1.5 * sr)
    assert np.sqrt(np.mean(tail[:, : sr // 4] ** 2)) > 1e-4  # the reverb rings on past the input


def test_loudness_target_and_true_peak_ceiling(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    quiet = UNITY.replace('true_peak_dbtp = "none"', "loudness_lufs = -30.0\ntrue_peak_dbtp = -1.0")
    outcome = mix_session(session, tmp_path, _preset(tmp_path, quiet, "quiet"), source="truth")
    remix, sr = audio_io.read_audio(outcome.remix)
    assert mixing.measure_loudness(remix, sr) == pytest.approx(-30.0, abs=0.1)
    assert outcome.report["warnings"] == []
    loud = UNITY.replace('true_peak_dbtp = "none"', "loudness_lufs = -5.0\ntrue_peak_dbtp = -1.0")
    outcome = mix_session(session, tmp_path, _preset(tmp_path, loud, "loud"), source="truth")
    remix, sr = audio_io.read_audio(outcome.remix)
    assert mixing.measure_true_peak(remix, sr) <= -1.0 + 0.01
    assert any("loudness target -5 LUFS not reached" in w for w in outcome.report["warnings"])


def test_true_peak_sees_inter_sample_peaks() -> None:
    sr = 48000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * (sr / 4) * t + np.pi / 4)[None]  # samples at ±0.707, true peak 1.0
    fade = np.hanning(4000)  # no abrupt edges: their overshoot would be a real, other peak
    x[0, :2000] *= fade[:2000]
    x[0, -2000:] *= fade[2000:]
    assert 20 * np.log10(np.abs(x).max()) == pytest.approx(-3.01, abs=0.01)
    assert mixing.measure_true_peak(x, sr) == pytest.approx(0.0, abs=0.1)


def test_integer_formats_clip_with_a_warning() -> None:
    x = np.array([[0.5, 1.5, -2.0]])
    y, warnings = mixing.clip_for_format(x, "pcm24", "remix")
    assert y.max() == 1.0 and y.min() == -1.0 and "2 samples clipped" in warnings[0]
    assert mixing.clip_for_format(x, "float32", "remix") == (x, [])


def test_mute_solo_and_command_line_overrides(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    preset = _preset(tmp_path, UNITY)
    full = mix_session(session, tmp_path / "a", preset, source="truth")
    stems = np.stack([audio_io.read_audio(p)[0] for p in full.stems])
    muted = mix_session(session, tmp_path / "b", preset, source="truth",
                        overrides=mixing.Overrides(mute=frozenset({"violin"}), gain_db={"sax": 6.0}))
    remix, _ = audio_io.read_audio(muted.remix)
    np.testing.assert_allclose(remix, stems[0] + 10 ** (6 / 20) * stems[1], atol=1e-6)
    solo = mix_session(session, tmp_path / "c", preset, source="truth", overrides=mixing.Overrides(solo=frozenset({"piano"})))
    np.testing.assert_allclose(audio_io.read_audio(solo.remix)[0], stems[0], atol=1e-6)
    with pytest.raises(InputError, match="'viola' is not a source"):
        mix_session(session, tmp_path / "d", preset, source="truth", overrides=mixing.Overrides(mute=frozenset({"viola"})))


def test_daw_stems_and_reaper_project(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    outcome = mix_session(session, tmp_path, REPO / "presets" / "paper.toml", source="truth",
                          overrides=mixing.Overrides(gain_db={"sax": -2.0}, pan={"violin": 0.5}))
    assert [p.name for p in outcome.stems] == ["01_piano.wav", "02_sax.wav", "03_violin.wav"]
    infos = [audio_io.audio_info(p) for p in outcome.stems]
    assert len({(i.n_samples, i.sample_rate, i.n_channels, i.subtype) for i in infos}) == 1
    assert infos[0].subtype == "PCM_24" and infos[0].sample_rate == session.sample_rate
    for path in outcome.stems:
        bext = audio_io.read_bext(path)
        assert bext is not None and bext.time_reference == 0 and "pre-fader" in bext.description
    tracks = parse_reaper_project(outcome.project.read_text())
    # the paper preset has a master chain: a muted reference track holds the master bus (tests/test_daw.py)
    assert [t["name"] for t in tracks][:3] == ["01 piano", "02 sax", "03 violin"]
    assert tracks[3]["name"].startswith("REFERENCE") and tracks[3]["mute"]
    for track, info in zip(tracks, infos):
        assert (outcome.project.parent / track["file"]).is_file()
        assert track["length_s"] == pytest.approx(info.n_samples / info.sample_rate)
    assert tracks[1]["volume"] == pytest.approx(10 ** (-2 / 20), rel=1e-5)
    assert tracks[2]["pan"] == pytest.approx(0.5) and tracks[0]["pan"] == 0.0
    # "@position" spot feeds: the violin (y < 0) leans right, the sax (y > 0) left
    energy = [np.sum(audio_io.read_audio(p)[0] ** 2, axis=1) for p in outcome.stems]
    assert energy[2][1] > energy[2][0] and energy[1][0] > energy[1][1]
    report = json.loads((outcome.remix.parent / "paper.json").read_text())
    assert report["loudness_out_lufs"] == pytest.approx(-18.0, abs=0.2) or report["warnings"]
    assert report["true_peak_out_dbtp"] <= -1.0 + 0.01


def test_minus_one_preset_leaves_the_violin_out(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    outcome = mix_session(session, tmp_path, REPO / "presets" / "minus_one.toml", source="truth")
    tracks = parse_reaper_project(outcome.project.read_text())
    assert [t["mute"] for t in tracks] == [False, False, True]
    routes = {r["source"]: r for r in outcome.report["routes"]}
    assert not routes["violin"]["audible"] and routes["sax"]["audible"]


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (UNITY + "\n[sources.viola]\ngain_db = 1.0\n", "sources.viola", "not a source"),
        (UNITY.replace('"@spot"', '"trio_x"'), "defaults.feeds[0].mic", "'trio_x' is not a mic"),
        (UNITY.replace('{ mic = "@spot" }', '{ mic = "@spot", pan = 2.0 }'), "defaults.feeds[0].pan", "outside"),
        (UNITY.replace('{ mic = "@spot" }', '{ mic = "@spot", gian_db = 2.0 }'), "gian_db", "did you mean 'gain_db'"),
        (UNITY.replace("tail_s = 0.25", "tail_s = -1"), "preset.tail_s", "outside"),
        (UNITY.replace('format = "float32"', 'format = "mp3"'), "preset.format", "not one of"),
        (UNITY + '\n[master]\nchain = [{ vst3 = "/nope/Missing.vst3" }]\n', "master.chain[0].vst3", "not found"),
    ],
)
def test_bad_presets_stop_before_work(rendered_session: Path, tmp_path: Path, text: str, field: str,
                                      message: str) -> None:
    session = load_session(rendered_session)
    preset = _preset(tmp_path, text)
    with pytest.raises(InputError) as info:
        mix_session(session, tmp_path / "out", preset, source="truth")
    assert field in str(info.value) and message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_shipped_presets_load_and_are_listed() -> None:
    names = {load_preset(p).name for p in (REPO / "presets").glob("*.toml")}
    assert {"paper", "minus_one", "spot_dry"} <= names
    result = runner.invoke(app, ["presets", str(REPO / "presets")])
    assert result.exit_code == 0
    for name in names:
        assert name in result.stdout


def test_cli_mix_from_truth(rendered_session: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["mix", str(rendered_session), "--out", str(tmp_path), "--from", "truth",
                                 "--preset", str(REPO / "presets" / "spot_dry.toml"), "--mute", "piano"])
    assert result.exit_code == 0, result.output
    assert "remix:" in result.stdout and "spot_dry.wav" in result.stdout and ".RPP" in result.stdout
    result = runner.invoke(app, ["mix", str(rendered_session), "--out", str(tmp_path / "none"),
                                 "--preset", str(REPO / "presets" / "spot_dry.toml")])
    assert result.exit_code == 2 and "no separation run to mix" in result.stderr


def test_preset_errors_are_preset_errors(tmp_path: Path) -> None:
    with pytest.raises(PresetError, match="preset not found"):
        load_preset(tmp_path / "missing.toml")


ZAM = Path("/usr/lib/vst3")


@pytest.mark.skipif(not (ZAM / "ZamCompX2.vst3").exists() or not (ZAM / "ZamEQ2.vst3").exists(),
                    reason="zam-plugins VST3s not installed (apt-get install zam-plugins)")
def test_vst3_preset_renders_through_worker_processes(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    outcome = mix_session(session, tmp_path, REPO / "presets" / "paper_zam.toml", source="truth")
    remix, sr = audio_io.read_audio(outcome.remix)
    assert remix.shape[0] == 2 and np.all(np.isfinite(remix)) and sr == session.sample_rate
    assert outcome.report["master"][1]["params"]["threshold_db"] == -24.0
    # the master compressor really acts: a low threshold flattens the level against a high one
    hard = (REPO / "presets" / "paper_zam.toml").read_text().replace("threshold_db = -24.0", "threshold_db = -50.0")
    hard = hard.replace("ratio = 2.0", "ratio = 20.0").replace("loudness_lufs = -16.0", 'loudness_lufs = -30.0')
    soft = hard.replace("threshold_db = -50.0", "threshold_db = 0.0")
    levels = []
    for name, text in (("hard", hard), ("soft", soft)):
        result = mix_session(session, tmp_path / name, _preset(tmp_path, text, name), source="truth")
        levels.append(result.report["loudness_in_lufs"])
    assert levels[0] < levels[1] - 6.0, levels


def test_vst3_parameter_typo_lists_the_valid_names(rendered_session: Path, tmp_path: Path) -> None:
    if not (ZAM / "ZamCompX2.vst3").exists():
        pytest.skip("zam-plugins VST3s not installed")
    session = load_session(rendered_session)
    text = UNITY + '\n[master]\nchain = [{ vst3 = "/usr/lib/vst3/ZamCompX2.vst3", params = { treshold_db = -20.0 } }]\n'
    with pytest.raises(InputError) as info:
        mix_session(session, tmp_path / "out", _preset(tmp_path, text), source="truth")
    assert "treshold_db" in str(info.value) and "threshold_db" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_cli_plugins_scan_lists_parameters(tmp_path: Path) -> None:
    if not (ZAM / "ZamCompX2.vst3").exists():
        pytest.skip("zam-plugins VST3s not installed")
    (tmp_path / "ZamCompX2.vst3").symlink_to(ZAM / "ZamCompX2.vst3")
    result = runner.invoke(app, ["plugins", "scan", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ZamCompX2" in result.stdout and "threshold_db" in result.stdout and "-80" in result.stdout


def test_check_preset_covers_every_chain_or_only_the_routed_ones(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    spot = session.mics[0].name
    # A per-mic chain for a mic no feed names: never routed, but still part of the preset.
    text = UNITY.replace('feeds = [{ mic = "@spot" }]',
                         'feeds = [{ mic = "@spot", chain = [{ plugin = "Gain", gain_db = 1.0 }] }]\n'
                         'chain = [{ plugin = "HighpassFilter", cutoff_frequency_hz = 40.0 }]\n'
                         '[defaults.feed_chains]\n"not_a_mic" = [{ plugin = "Reverbb" }]')
    preset = load_preset(_preset(tmp_path, text))
    routes = mixing.resolve_routes(session, preset, {s.name: spot for s in session.sources},
                                   sample_rate=session.sample_rate)
    n = len(session.sources)
    routed = mixing.preset_chains(preset, routes)
    assert [c for _, c in routed] == [1] * n + [2] * n + [2]
    assert all(chain[0].name == "Gain" for chain, _ in routed[:n]) and routed[-1][0] == preset.master
    assert [c for _, c in mixing.preset_chains(preset)] == [1, 1, 2, 2]  # feed, feed_chains entry; master, bus
    mixing.check_preset(preset, sample_rate=session.sample_rate, routes=routes)  # the bad chain is not routed
    with pytest.raises(PluginError, match="unknown built-in plugin 'Reverbb'"):
        mixing.check_preset(preset, sample_rate=session.sample_rate)
