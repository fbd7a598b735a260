"""Bad presets, plugin values and mix options stop before any work with one line (issue
#16): preset names, duplicate names in one run, built-in parameter ranges at load and
against the session's Nyquist frequency, --gain/--pan, and VST3 bundles named directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.mixing.plugins.host import PluginError, scan_plugins, validate_chain
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.presets import PresetError, load_preset
from studio_sep.mixing.routing import resolve_routes
from studio_sep.session import load_session
from studio_sep.stages.settings import choose_stem_mics

from .test_input_hardening import _one_error_line
from .test_manifest import session_dir  # noqa: F401 - the fixture
from .test_mixing import UNITY

runner = CliRunner()

def _preset(folder: Path, text: str, file: str = "p") -> Path:
    path = folder / f"{file}.toml"
    path.write_text(text)
    return path


def _named(name: str) -> str:
    return UNITY.replace("[preset]\n", f"[preset]\nname = {name}\n")


# --------------------------------------------------------------------------- 6: preset names


@pytest.mark.parametrize(("name", "problem"), [
    ('".."', "name '..' is not usable"),
    ('"mix\\"1"', "is not usable as a file name"),
    ('"two\\nlines"', "is not usable as a file name"),
    ('"' + "p" * 101 + '"', "longer than 100"),
    ("3", "must be a string"),
])
def test_preset_names_that_would_change_a_file_name_are_refused(tmp_path: Path, name: str, problem: str) -> None:
    path = _preset(tmp_path, _named(name))
    with pytest.raises(PresetError) as info:
        load_preset(path)
    text = str(info.value)
    assert text.startswith(f"{path}: preset.name: ") and problem in text and "\n" not in text


def test_a_preset_named_by_an_unusable_file_name_says_so(tmp_path: Path) -> None:
    path = _preset(tmp_path, UNITY, file="my mix")
    with pytest.raises(PresetError, match=r"preset.name: name 'my mix' .* \(taken from the file name\).*"
                                          r"or set name = \"...\" under \[preset\]"):
        load_preset(path)


def test_two_presets_with_one_name_in_one_run_stop_before_any_session(session_dir: Path, tmp_path: Path) -> None:
    a = _preset(tmp_path, _named('"same"'), file="a")
    b = _preset(tmp_path, _named('"same"'), file="b")
    out = tmp_path / "out"
    line = _one_error_line(runner.invoke(app, ["run", str(session_dir), "--out", str(out), "--preset", str(a),
                                               "--preset", str(b), "--iterations", "1"]))
    assert line.startswith(f"error: {b}: preset.name: 'same' is also the name of preset {a}")
    assert not out.exists()
    # the same file twice is one preset
    from studio_sep.mixing.presets import check_unique_preset_names

    check_unique_preset_names([a, a])


# --------------------------------------------------------------------------- 10: built-in parameter values


@pytest.mark.parametrize(("plugin", "problem"), [
    ('{ plugin = "Gain", gain_db = 1e9 }', "Gain gain_db = 1000000000.0 is not a level in dB -120 to 60"),
    ('{ plugin = "HighpassFilter", cutoff_frequency_hz = -100 }', "is not a frequency in Hz above 0 and up to 24000"),
    ('{ plugin = "LowpassFilter", cutoff_frequency_hz = 1e9 }', "is not a frequency in Hz"),
    ('{ plugin = "PeakFilter", q = 0 }', "is not a filter Q above 0"),
    ('{ plugin = "Compressor", ratio = 0.5 }', "is not a compression ratio 1 to 1000"),
    ('{ plugin = "Compressor", release_ms = -5 }', "is not a time in ms"),
])
def test_builtin_values_are_checked_when_the_preset_loads(tmp_path: Path, plugin: str, problem: str) -> None:
    path = _preset(tmp_path, UNITY + f"\n[master]\nchain = [{plugin}]\n")
    with pytest.raises(PluginError) as info:
        load_preset(path)
    text = str(info.value)
    assert text.startswith(f"{path}: master.chain[0].") and problem in text and "(fix: use a value" in text


def test_a_bad_builtin_value_stops_a_run_before_any_session(session_dir: Path, tmp_path: Path) -> None:
    path = _preset(tmp_path, UNITY + '\n[master]\nchain = [{ plugin = "Gain", gain_db = 1e9 }]\n')
    out = tmp_path / "out"
    line = _one_error_line(runner.invoke(app, ["run", str(session_dir), "--out", str(out), "--preset", str(path)]))
    assert f"{path}: master.chain[0].gain_db" in line
    assert not out.exists()


def test_frequencies_above_the_sessions_nyquist_are_refused_when_routed(session_dir: Path, tmp_path: Path) -> None:
    session = load_session(session_dir)  # 16 kHz
    ok = load_preset(_preset(tmp_path, UNITY + '\n[master]\nchain = [{ plugin = "LowpassFilter", '
                                               'cutoff_frequency_hz = 8000 }]\n', file="ok"))
    resolve_routes(session, ok, choose_stem_mics(session, {}), sample_rate=16000)
    bad = load_preset(_preset(tmp_path, UNITY.replace('{ mic = "@spot" }', '{ mic = "@spot", chain = '
                                                      '[{ plugin = "HighpassFilter", cutoff_frequency_hz = 9000 }] }'),
                              file="bad"))
    with pytest.raises(PluginError, match=r"defaults.feeds\[0\].chain\[0\].cutoff_frequency_hz: HighpassFilter "
                                          r"cutoff_frequency_hz = 9000 Hz is above the Nyquist frequency \(8000 Hz\)"):
        resolve_routes(session, bad, choose_stem_mics(session, {}), sample_rate=16000)


# --------------------------------------------------------------------------- 7: mix --gain / --pan


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--gain", "sax=1e9", "'sax=1e9': 1e9 is not a number from -120 to 24"),
    ("--gain", "sax=nan", "'sax=nan': nan is not a number from -120 to 24"),
    ("--gain", "sax=-inf", "is not a number from -120 to 24"),
    ("--pan", "sax=2", "'sax=2': 2 is not a number from -1 to 1"),
    ("--gain", "sax", "is not SOURCE=NUMBER"),
])
def test_mix_levels_are_checked_when_parsed(tmp_path: Path, option: str, value: str, problem: str) -> None:
    result = runner.invoke(app, ["mix", str(tmp_path / "no-such-session"), "--out", str(tmp_path / "out"),
                                 option, value])
    line = _one_error_line(result)
    assert line.startswith(f"error: {option}: ") and problem in line  # before the manifest is even read
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 11: VST3 bundles


def _broken_bundle(folder: Path) -> Path:
    bundle = folder / "Broken.vst3"
    binary = bundle / "Contents" / "x86_64-linux"
    binary.mkdir(parents=True)
    (binary / "Broken.so").write_bytes(b"not a shared object")
    return bundle


def test_scanning_a_bundle_itself_describes_it(tmp_path: Path) -> None:
    bundle = _broken_bundle(tmp_path)
    infos = scan_plugins([bundle])
    assert [Path(i.path).name for i in infos] == ["Broken.vst3"] and infos[0].error
    result = runner.invoke(app, ["plugins", "scan", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "Broken.vst3" in result.stdout and "failed" in result.stdout
    assert "no VST3 plugins found" not in result.stdout


def test_scanning_a_missing_path_is_one_line(tmp_path: Path) -> None:
    line = _one_error_line(runner.invoke(app, ["plugins", "scan", str(tmp_path / "Nope.vst3")]))
    assert "Nope.vst3: no such folder or .vst3 bundle" in line


def test_a_vst3_that_does_not_load_tells_the_user_what_to_do(tmp_path: Path) -> None:
    bundle = _broken_bundle(tmp_path)
    with pytest.raises(PluginError) as info:
        validate_chain([PluginSpec("vst3", "Broken", {}, bundle)], sample_rate=48000, n_channels=2)
    text = str(info.value)
    assert "does not load" in text and f"studio-sep plugins scan {bundle}" in text and "scan_plugins()" not in text


def test_user_text_in_an_error_is_printed_as_written(tmp_path: Path) -> None:
    presets = tmp_path / "presets"
    presets.mkdir()
    _preset(presets, _named('"[/x] [bold]b"'))
    line = _one_error_line(runner.invoke(app, ["presets", str(presets)]))
    assert "preset.name: name '[/x] [bold]b' is not usable as a file name" in line
