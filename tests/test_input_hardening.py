"""Bad sessions and settings stop before any work with one line (issue #16): symlink loops,
silent mics, a fit gone NaN, names, truncated WAVs, the mic of a NaN, n_fft against the
session's length, and the command line's options checked once, naming the option."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.io import audio as audio_io
from studio_sep.session import load_session
from studio_sep.stages import SeparationOptions, separate_session
from studio_sep.util.errors import AudioError, FitError, InputError, ManifestError
from studio_sep.util.names import NAME_MAX_CHARS, name_problem, safe_name
from studio_sep.util.notices import report_warnings

from .test_manifest import N, _base_doc, _error, _save, _write, session_dir  # noqa: F401 - the fixture

runner = CliRunner()


def _one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --------------------------------------------------------------------------- 3: symlink loop


def test_symlink_loop_in_a_mic_file_is_one_line(session_dir: Path) -> None:
    (session_dir / "audio/loop_a.wav").symlink_to(session_dir / "audio/loop_b.wav")
    (session_dir / "audio/loop_b.wav").symlink_to(session_dir / "audio/loop_a.wav")
    doc = _base_doc()
    doc["mics"][2]["file"] = "audio/loop_a.wav"
    msg = _error(session_dir, doc)
    assert "mics[2].file" in msg and "loops through symbolic links" in msg
    line = _one_error_line(runner.invoke(app, ["validate", str(session_dir)]))
    assert "mics[2].file" in line


# --------------------------------------------------------------------------- 4: silence, NaN fit


def test_all_mics_silent_is_refused(session_dir: Path) -> None:
    _write(session_dir / "audio/multi.wav", np.zeros((N, 2)))
    _write(session_dir / "audio/spot_flute.wav", np.zeros(N), subtype="PCM_24")
    msg = _error(session_dir, _base_doc())
    assert ": mics: every mic's signal is digitally silent" in msg
    _one_error_line(runner.invoke(app, ["validate", str(session_dir)]))


def test_one_silent_mic_is_a_warning(session_dir: Path) -> None:
    x = 0.1 * np.random.default_rng(1).standard_normal((N, 2))
    x[:, 1] = 0.0  # room_r, channel 2
    _write(session_dir / "audio/multi.wav", x)
    session = load_session(session_dir)
    assert len(session.warnings) == 1 and session.warnings[0].startswith("mics[1] (room_r): channel 2 of")
    result = runner.invoke(app, ["validate", str(session_dir)])
    assert result.exit_code == 0, result.output
    assert "warning: mics[1] (room_r): channel 2 of audio/multi.wav is digitally silent" in result.stderr


def test_a_silent_mic_warning_reaches_separate_and_run(session_dir: Path, tmp_path: Path) -> None:
    x = 0.1 * np.random.default_rng(1).standard_normal((N, 2))
    x[:, 1] = 0.0
    _write(session_dir / "audio/multi.wav", x)
    text = "warning: mics[1] (room_r): channel 2 of audio/multi.wav is digitally silent"
    separated = runner.invoke(app, ["separate", str(session_dir), "--out", str(tmp_path / "a"), "--iterations", "1",
                                    "--device", "cpu"])
    assert separated.exit_code == 0, separated.output
    assert separated.stderr.count(text) == 1
    batch = runner.invoke(app, ["run", str(session_dir), "--out", str(tmp_path / "b"), "--iterations", "1",
                                "--device", "cpu", "--no-mix", "--no-evaluate", "--json"])
    assert batch.exit_code == 0, batch.output
    assert text in batch.stderr and text not in batch.stdout  # an event of the progress (JSON lines on stderr)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN on its way
def test_a_fit_gone_nan_is_an_error_not_a_finished_stage(session_dir: Path, tmp_path: Path) -> None:
    session = load_session(session_dir)  # validated with signal; then the files go silent
    _write(session_dir / "audio/multi.wav", np.zeros((N, 2)))
    _write(session_dir / "audio/spot_flute.wav", np.zeros(N))
    out = tmp_path / "out"
    # (Q stays finite: a row whose projection is undefined keeps its value; W, G and H go NaN)
    with pytest.raises(FitError, match=r"diverged .*W_NFK.* hold NaN/inf values; nothing was saved"):
        separate_session(session, out, SeparationOptions(n_iter=5, device="cpu", init=("geometry",)))
    work = out / "tiny" / ".studio-sep"
    assert not (work / "fit.npz").exists() and not (out / "tiny" / "images").exists()
    assert "separate" not in json.loads((out / "tiny" / "run.json").read_text())["stages"]
    # in float32 the stage first fits it again in float64, says so, then gives the same error
    warnings: list[str] = []
    with report_warnings(warnings.append), pytest.raises(FitError, match=r"diverged .*W_NFK.* hold NaN/inf"):
        separate_session(session, tmp_path / "out32", SeparationOptions(n_iter=5, device="cpu", init=("geometry",),
                                                                        dtype="float32"))
    assert "diverged in float32" in warnings[0] and "fitting it again from its start in float64" in warnings[0]


def test_check_finite_passes_finite_parameters() -> None:
    from studio_sep.separation.fastmnmf2 import Params
    from studio_sep.stages.checkpoints import check_finite

    params = Params(np.eye(2)[None], np.ones((2, 2)), np.ones((2, 3, 4)), np.ones((2, 4, 5)))
    check_finite(params, "test")
    params.H_NKT[1, 2, 3] = np.inf
    with pytest.raises(FitError, match=r"\(block 2/3\): H_NKT hold"):
        check_finite(params, "block 2/3")


# --------------------------------------------------------------------------- 5: names


@pytest.mark.parametrize(("name", "accepted"), [
    ("trio_take3", True), ("a.b-c", True), ("x" * NAME_MAX_CHARS, True),
    ("trio\n", False), ("x" * (NAME_MAX_CHARS + 1), False), ("..", False), (".hidden", False), ("a b", False),
    ("a/b", False), ('a"b', False), ("", False), ("_", False), ("é", False),
])
def test_one_rule_for_names(name: str, accepted: bool) -> None:
    assert (name_problem(name) is None) == accepted
    assert name_problem(safe_name(name)) is None  # the sanitiser's output always passes


@pytest.mark.parametrize(("where", "name", "problem"), [
    (("session",), "trio\n", "not usable as a file name"),
    (("sources", 1), "c" * 240, "longer than 100"),
    (("mics", 0), "room l", "not usable as a file name"),
])
def test_manifest_refuses_names_the_sanitiser_would_change(session_dir: Path, where, name: str,
                                                           problem: str) -> None:
    doc = _base_doc()
    target = doc[where[0]] if len(where) == 1 else doc[where[0]][where[1]]
    target["name"] = name
    if where[0] == "mics":
        doc["mics"][0].pop("aim_at", None)
    msg = _error(session_dir, doc)
    field = where[0] if len(where) == 1 else f"{where[0]}[{where[1]}]"
    assert f"{field}.name: " in msg and problem in msg and "at most 100 characters" in msg


# --------------------------------------------------------------------------- 11: audio files


def _truncate_wav(path: Path, drop_bytes: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - drop_bytes)


def test_truncated_wav_is_refused(session_dir: Path) -> None:
    path = session_dir / "audio/spot_flute.wav"
    _truncate_wav(path, 400 * 4)  # 400 float32 frames of the mono file
    with pytest.raises(AudioError, match=f"truncated: header says {N} frames, file holds {N - 400}"):
        audio_io.audio_info(path)
    line = _one_error_line(runner.invoke(app, ["validate", str(session_dir)]))
    assert "mics[2].file: audio/spot_flute.wav: truncated: header says 4000 frames, file holds 3600" in line


def test_wav_with_odd_chunks_before_the_data_is_read(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    _write(path, 0.1 * np.ones((100, 2)), subtype="PCM_16")
    data = path.read_bytes()
    fmt_end = data.index(b"data")
    odd = b"junk" + struct.pack("<I", 3) + b"abc\x00"  # an odd-sized chunk, padded
    body = data[12:fmt_end] + odd + data[fmt_end:]
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    assert audio_io.audio_info(path).n_samples == 100


def test_nan_names_the_mic_whose_channel_holds_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal((N, 4))
    x[77, 2] = np.nan  # channel 3
    _write(tmp_path / "audio/poly.wav", x)
    doc = _base_doc()
    doc.pop("truth")
    doc["sources"][0].pop("reference")
    for i, mic in enumerate(doc["mics"]):
        mic["file"], mic["channel"] = "audio/poly.wav", [1, 3, 4][i]  # mics[1] is channel 3
    msg = _error(tmp_path, doc)
    assert "mics[1].file" in msg and "sample 77 of channel 3" in msg


def test_n_fft_longer_than_the_session_is_refused_before_work(session_dir: Path, tmp_path: Path) -> None:
    doc = _base_doc()
    doc["separation"] = {"n_fft": 1_000_000, "hop": 250_000}
    _save(session_dir, doc)
    session = load_session(session_dir)
    with pytest.raises(InputError, match=r"separation.n_fft: n_fft 1000000 with hop 250000 cuts the session "
                                         r"\(4000 samples at 16000 Hz\)"):
        separate_session(session, tmp_path / "out", SeparationOptions(device="cpu"))
    assert not (tmp_path / "out").exists()
    _save(session_dir, _base_doc())  # n_fft 1024, hop 256: the command line's --n-fft is at fault
    line = _one_error_line(runner.invoke(app, ["separate", str(session_dir), "--out", str(tmp_path / "o"),
                                               "--n-fft", "8192", "--device", "cpu"]))
    assert ": --n-fft: n_fft 8192 with hop 256 cuts the session" in line and "e.g. 256 with hop 64" in line
    assert not (tmp_path / "o").exists()


def test_a_short_reference_take_is_refused_for_the_dictionary_init(session_dir: Path, tmp_path: Path) -> None:
    _write(session_dir / "ref/flute.wav", 0.1 * np.ones(600))
    doc = _base_doc()
    doc["sources"][1]["reference"] = "ref/flute.wav"
    session = load_session(_save(session_dir, doc))
    with pytest.raises(InputError, match="the reference take of flute"):
        separate_session(session, tmp_path / "out", SeparationOptions(device="cpu", init=("geometry", "dictionary")))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 10: command-line options


@pytest.mark.parametrize(("args", "option", "text"), [
    (["--seed", "-1"], "--seed", "must be at least 0"),
    (["--dtype", "float16"], "--dtype", "'float16' is not one of float32, float64"),
    (["--init", "foo"], "--init", "unknown init 'foo'"),
    (["--init", "circular,geometry"], "--init", "both set the spatial model"),
    (["--hop", "0"], "--hop", "must be at least 1"),
    (["--n-fft", "1000", "--hop", "300"], "--hop", "must divide n_fft"),
    (["--processing-rate", "100"], "--processing-rate", "must be at least 8000"),
    (["--iterations", "-3"], "--iterations", "must be at least 0"),
    (["--prior", "fancy"], "--prior", "'fancy' is not one of none, nmf, classnet"),
    (["--device", "tpu"], "--device", "'tpu' is not one of cpu, cuda, auto"),
])
@pytest.mark.parametrize("command", ["separate", "run"])
def test_bad_options_stop_once_before_any_session(session_dir: Path, tmp_path: Path, command: str, args,
                                                  option: str, text: str) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, [command, str(session_dir), "--out", str(out), *args])
    line = _one_error_line(result)
    assert line.startswith(f"error: {option}: ") and text in line, line
    assert "session.toml" not in line
    assert not out.exists()


def test_cuda_without_a_gpu_is_refused_up_front(session_dir: Path, tmp_path: Path) -> None:
    from studio_sep.dsp.backend import cupy_or_none

    if cupy_or_none() is not None:
        pytest.skip("a GPU is available here")
    line = _one_error_line(runner.invoke(app, ["separate", str(session_dir), "--out", str(tmp_path / "o"),
                                               "--device", "cuda"]))
    assert line.startswith("error: --device: cuda requested")
    assert not (tmp_path / "o").exists()


def test_manifest_processing_rate_below_8000_names_the_field(session_dir: Path) -> None:
    doc = _base_doc()
    doc["session"]["processing_sample_rate"] = 100
    path = _save(session_dir, doc)
    with pytest.raises(ManifestError, match="session.processing_sample_rate: must be at least 8000"):
        load_session(path)


def test_user_text_is_not_altered_by_markup(session_dir: Path) -> None:
    doc = _base_doc()
    doc["sources"][1]["prompt"] = "[red]low[/red] [/x]"
    _save(session_dir, doc)
    result = runner.invoke(app, ["validate", str(session_dir)])
    assert result.exit_code == 0, result.output
    assert "[red]low[/red] [/x]" in result.stdout


def test_a_newline_in_a_path_keeps_the_error_on_one_line(session_dir: Path) -> None:
    doc = _base_doc()
    doc["mics"][2]["file"] = "audio/new\nline.wav"
    _save(session_dir, doc)
    line = _one_error_line(runner.invoke(app, ["validate", str(session_dir)]))
    assert "mics[2].file: audio/new\\nline.wav: file not found" in line


@pytest.mark.parametrize(("args", "start"), [
    (["--hop", "300"], "error: --hop: 300 must divide n_fft (1024)"),  # the manifest's n_fft, the option's hop
    (["--processing-rate", "48000"], "error: --processing-rate: 48000 Hz is above the recording's 16000 Hz"),
])
def test_a_session_dependent_option_error_names_the_option(session_dir: Path, tmp_path: Path, args,
                                                           start: str) -> None:
    line = _one_error_line(runner.invoke(app, ["separate", str(session_dir), "--out", str(tmp_path / "o"),
                                               "--device", "cpu", *args]))
    assert line.startswith(start), line
    assert not (tmp_path / "o").exists()
