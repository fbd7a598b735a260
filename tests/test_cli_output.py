"""What the command line prints and where (issue #14, item 3): user text as written (paths
with ``[day 2]`` and ``[/]``, errors quoting ``[[sources]]`` and ``[x, y, z]``), tables in
full when piped, progress on stderr and results on stdout, ``--quiet`` and ``--json`` on every
command that does work, choices in ``--help``, and null (JSON) / "—" (tables) for metrics
that are not finite numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.util.toml import to_toml

REPO = Path(__file__).resolve().parent.parent
SR, N = 16000, 8000
runner = CliRunner()


def _doc() -> dict:
    """Two sources, three mics; the mics are exactly the sum of the truth images."""
    mic = lambda name, x, ch: {"name": name, "position_m": [0.0, x, 1.5], "pattern": "omni",  # noqa: E731
                               "file": "audio/mics.wav", "channel": ch}
    return {
        "session": {"name": "tiny", "description": "two sources, three mics"},
        "room": {"dimensions_m": [6.0, 5.0, 3.0], "origin_m": [1.0, 2.5, 0.0], "rt60_s": 0.3},
        "separation": {"n_fft": 512, "hop": 128, "init": ["geometry"]},
        "mics": [mic("left", 0.5, 1), mic("mid", 0.0, 2), mic("right", -0.5, 3)],
        "sources": [{"name": "flute", "position_m": [2.0, 1.0, 1.0]},
                    {"name": "cello", "position_m": [2.0, -1.0, 0.8]}],
        "truth": {"images": {"flute": "truth/flute.wav", "cello": "truth/cello.wav"}},
    }


def _session(folder: Path, doc: dict | None = None) -> Path:
    """The tiny session written into ``folder``: its manifest."""
    rng = np.random.default_rng(0)
    images = []
    for n, (name, gains) in enumerate((("flute", (1.0, 0.5, 0.2)), ("cello", (0.2, 0.5, 1.0)))):
        dry = np.convolve(rng.standard_normal(N), np.hanning(8 + 24 * n), mode="same")
        image = 0.05 * np.stack([g * np.roll(dry, 3 * m) for m, g in enumerate(gains)], axis=1)
        sf.write(str(_mkdir(folder / "truth") / f"{name}.wav"), image, SR, subtype="FLOAT")
        images.append(image.astype(np.float32).astype(np.float64))
    sf.write(str(_mkdir(folder / "audio") / "mics.wav"), images[0] + images[1], SR, subtype="FLOAT")
    (folder / "session.toml").write_text(to_toml(doc or _doc()))
    return folder / "session.toml"


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The command line as a user's shell runs it into a pipe: stdout is not a terminal, 80 columns."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "CI")}
    env.update(COLUMNS="80", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "studio_sep.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def day2(tmp_path_factory) -> Path:
    """The tiny session in a folder named ``[day 2]``, separated (2 iterations) into ``a[/]b``."""
    root = tmp_path_factory.mktemp("cli")
    manifest = _session(root / "takes" / "[day 2]")
    out = root / "out" / "a[/]b"
    result = _cli("run", str(manifest.parent), "--out", str(out), "--iterations", "2", "--ensemble", "1",
                  "--no-mix")
    assert result.returncode == 0, result.stdout + result.stderr
    return manifest, out, result


def test_bracketed_paths_and_quoted_toml_in_errors_print_as_written(tmp_path: Path) -> None:
    bad = tmp_path / "a[/]b"
    doc = _doc()
    doc["mics"][1]["position_m"] = 4.5
    _session(bad, doc)
    line = _one_error_line(runner.invoke(app, ["validate", str(bad)]))
    assert line == (f"error: {bad / 'session.toml'}: mics[1].position_m: must be [x, y, z] in metres, got 4.5 "
                    "(fix: write e.g. [3.0, 0.0, 1.5])")
    doc = _doc()
    del doc["sources"]
    (bad / "session.toml").write_text(to_toml(doc))
    assert "add at least one [[sources]] entry" in _one_error_line(runner.invoke(app, ["validate", str(bad)]))

    good = _session(tmp_path / "takes" / "[day 2]")
    quiet = runner.invoke(app, ["validate", str(good.parent), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == f"{good.resolve()}\n" and quiet.stderr == ""
    presets = tmp_path / "[bold]p[/]"
    presets.mkdir(parents=True)
    text = (REPO / "presets" / "paper.toml").read_text()
    (presets / "mine.toml").write_text(text.replace('description = "', 'description = "[red]loud[/red] [/] ', 1))
    listed = runner.invoke(app, ["presets", str(presets)])
    assert listed.exit_code == 0, listed.output
    assert "paper  [red]loud[/red] [/] The paper" in listed.stdout and f"({presets / 'mine.toml'})" in listed.stdout


def test_a_piped_run_prints_the_summary_in_full_on_stdout_and_progress_on_stderr(day2) -> None:
    manifest, out, result = day2
    folder = out.resolve() / "tiny"
    assert "Traceback" not in result.stdout + result.stderr
    assert "…" not in result.stdout and "\x1b[" not in result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| tiny "))
    assert len(row) > 80 and f"| {folder} |" in row and "| done " in row  # a row wider than the terminal, whole
    assert "separate …" in result.stderr and f"start ({manifest.resolve()} → {folder})" in result.stderr
    assert "separate" not in result.stdout and "evaluate" not in result.stdout


def test_metrics_print_in_full_when_piped_and_null_for_the_mixtures_sar(day2) -> None:
    manifest, out, _ = day2
    result = runner.invoke(app, ["evaluate", str(manifest), "--out", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "tiny" / "report" / "metrics.json").read_text())
    from studio_sep.stages import metrics_rows

    lines = result.stdout.splitlines()
    for row in metrics_rows(metrics):  # every cell of every row, on one line, unabridged
        assert any(all(f"| {c} " in line for c in row) for line in lines), (row, result.stdout)
    assert "…" not in result.stdout and "evaluate: 1/1" in result.stderr and "evaluate" not in result.stdout
    # the unprocessed mic is exactly the sum of the images: no artefact term, no SAR
    for source in ("flute", "cello"):
        for mic in metrics["mixture"][source]:
            assert metrics["mixture"][source][mic]["sar"] is None
            assert isinstance(metrics["mixture"][source][mic]["sdr"], float)
        assert all(-30 < metrics["separated"][source][mic]["sar"] < 100 for mic in metrics["separated"][source])
    assert "100 dB" in metrics["null"]
    text = (out / "tiny" / "report" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize("command", ["evaluate", "validate", "run"])
def test_json_is_one_document_on_stdout_and_quiet_prints_only_paths(day2, command: str) -> None:
    manifest, out, _ = day2
    args = {"evaluate": ["evaluate", str(manifest), "--out", str(out)],
            "validate": ["validate", str(manifest)],
            "run": ["run", str(manifest), "--out", str(out), "--iterations", "2", "--ensemble", "1", "--no-mix"],
            }[command]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    document = json.loads(result.stdout)
    folder = out.resolve() / "tiny"
    if command == "evaluate":
        assert document["mixture"]["flute"]["left"]["sar"] is None and document["session"] == "tiny"
    elif command == "validate":
        assert document["manifest"] == str(manifest.resolve()) and document["has_truth"] is True
    else:
        assert document["sessions"][0]["status"] == "up to date" and document["failed"] == 0
        assert all(json.loads(line)["type"] for line in result.stderr.splitlines())  # progress: JSON lines
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    expected = {"evaluate": [folder / "report" / "metrics.json", folder / "report" / "metrics.md"],
                "validate": [manifest.resolve()], "run": [folder]}[command]
    assert quiet.stdout.splitlines() == [str(p) for p in expected]


def test_help_shows_choices_not_python_types() -> None:
    helps = {}
    for command in (["run"], ["separate"], ["evaluate"], ["mix"], ["validate"], ["simulate"], ["demo"],
                    ["presets"], ["plugins", "scan"], ["augment"], ["train"]):
        result = runner.invoke(app, [*command, "-h"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = helps[" ".join(command)] = result.stdout
        assert "<bool>" not in text and "<list[" not in text, text
        assert ("--json" in text and "--quiet" in text) or command == ["presets"] or command == ["plugins", "scan"]
    for option in ("cpu|cuda|auto", "float32|float64", "classnet|nmf|none", "float32|pcm24", "MIC|SOURCE=MIC"):
        assert option in helps["run"] and option in helps["separate"], option
    assert "run|truth" in helps["mix"] and "SOURCE=DB" in helps["mix"]
    assert "full|decoder" in helps["train"] and "learned|clap" in helps["train"]


def test_json_files_and_table_cells_hold_no_non_finite_numbers(tmp_path: Path) -> None:
    from studio_sep.cli.printing import cell, markdown_table
    from studio_sep.util.jsonfile import dumps_json, write_json_atomic

    value = {"sar": float("inf"), "sdr": np.float32(np.nan), "sir": np.float64(-np.inf), "n": np.int64(3),
             "ok": np.float64(1.5), "list": np.array([1.0, np.nan]), "flag": np.bool_(True)}
    write_json_atomic(tmp_path / "m.json", value)
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"sar": None, "sdr": None, "sir": None, "n": 3, "ok": 1.5, "list": [1.0, None],
                                "flag": True}
    assert "NaN" not in dumps_json(value) and "Infinity" not in dumps_json(value)
    assert [cell(v, "+.2f") for v in (None, float("nan"), float("inf"), -2.5)] == ["—", "—", "—", "-2.50"]
    table = markdown_table("t [x]", ["a", "b|c"], [["[/]", "x|y"]])
    assert table.splitlines() == ["t [x]", "", "| a   | b\\|c |", "|-----|------|", "| [/] | x\\|y |"]
