"""`studio-sep run`: a batch with a broken session, resume and skip by fingerprints,
kills (SIGINT, SIGKILL) mid-separation and mid-mixing, plain output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from studio_sep.batch.runner import RunOptions, SessionJob, find_sessions, run_batch
from studio_sep.io import audio as audio_io
from studio_sep.stages import SeparationOptions
from studio_sep.util.errors import InputError
from tests.small_sessions import batch_with_a_broken_session

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "presets" / "paper.toml"
ZAM = Path("/usr/lib/vst3")


@pytest.fixture(scope="module")
def sessions(rendered_session: Path, tmp_path_factory) -> Path:
    """Three sessions in one folder: two good ones and one whose audio file is gone."""
    return batch_with_a_broken_session(rendered_session, tmp_path_factory.mktemp("sessions"))


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "studio_sep.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, **kwargs)


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and "logs" not in p.parts and p.name not in ("lock", "hashes.json")}


def test_batch_with_a_broken_session_then_a_rerun_that_skips_everything(sessions: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _cli("run", str(sessions), "--out", str(out), "--iterations", "12", "--jobs", "2")
    assert first.returncode == 1, first.stderr
    lines = first.stdout.splitlines()
    # not a terminal: plain progress lines on stderr, no terminal control codes; the summary on stdout
    assert "\x1b[" not in first.stdout + first.stderr and "\r" not in first.stdout + first.stderr
    assert any(line.startswith("[1/3] alpha: separate") for line in first.stderr.splitlines())
    assert not any(line.startswith("[1/3] alpha") for line in lines)
    broken = [line for line in lines if line.startswith("bravo: ")]  # the reason under the summary table
    assert broken and "mics.wav" in broken[0] and "(log: " in broken[0], first.stdout
    log = Path(broken[0].split("(log: ")[1].rstrip(")"))
    assert log.is_file() and "validate: failed" in log.read_text()
    for name in ("alpha", "charlie"):
        folder = out / name
        assert (folder / "remix" / "paper.wav").is_file() and (folder / "daw" / "paper").is_dir()
        assert json.loads((folder / "report" / "metrics.json").read_text())["means"]["at_reference_mic"][
            "improvement"]["sdr"] > 3.0
        stages = json.loads((folder / "run.json").read_text())["stages"]
        assert set(stages) == {"prior", "separate", "images", "mix:paper", "evaluate", "report"}
        assert (folder / "report" / "index.html").is_file()
    assert not (out / "bravo" / "images").exists()
    before = {name: _mtimes(out / name) for name in ("alpha", "charlie")}

    second = _cli("run", str(sessions), "--out", str(out), "--iterations", "12", "--json")
    assert second.returncode == 1
    events = [json.loads(line) for line in second.stderr.splitlines()]  # progress: JSON lines on stderr
    assert {"session_start", "stage", "session_end"} <= {e["type"] for e in events}
    summary = json.loads(second.stdout)  # stdout: the summary, one document
    assert summary["type"] == "summary" and summary["failed"] == 1
    by_name = {s["name"]: s for s in summary["sessions"]}
    assert by_name["bravo"]["status"] == "failed" and "mics.wav" in by_name["bravo"]["reason"]
    for name in ("alpha", "charlie"):
        assert by_name[name]["status"] == "up to date"
        stages = dict(by_name[name]["stages"])
        assert stages.pop("validate") == "ran" and set(stages.values()) == {"skipped"}, stages
        assert _mtimes(out / name) == before[name]  # nothing rewritten

    quiet = _cli("run", str(sessions), "--out", str(out), "--iterations", "12", "--quiet")
    assert quiet.returncode == 1
    # stdout: the finished sessions' folders; stderr: one error line per failed session
    assert quiet.stdout.splitlines() == [str(out.resolve() / name) for name in ("alpha", "charlie")]
    errors = quiet.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: bravo: ") and "mics.wav" in errors[0]


def _run_in_process(manifest: Path, out: Path, presets=(PAPER,), n_iter: int = 12, force: bool = False):
    options = RunOptions(separation=SeparationOptions(n_iter=n_iter), presets=tuple(presets), force=force)
    return run_batch([SessionJob(index=0, manifest=manifest, out_root=out, options=options)])[0]


def test_a_changed_preset_reruns_only_mixing(rendered_session: Path, tmp_path: Path) -> None:
    preset = tmp_path / "mine.toml"
    preset.write_text(PAPER.read_text())
    out = tmp_path / "out"
    first = _run_in_process(rendered_session, out, presets=[preset])
    assert first.status == "done", first.reason
    assert first.stages == {"validate": "ran", "prior": "ran", "separate": "ran", "images": "ran",
                            "mix:mine": "ran", "evaluate": "ran", "report": "ran"}
    remix_before = audio_io.read_audio(first.remixes[0])[0]
    text = preset.read_text()
    changed = re.sub(r"(?m)^loudness_lufs = .*$", "loudness_lufs = -30.0", text)
    assert changed != text
    preset.write_text(changed)
    second = _run_in_process(rendered_session, out, presets=[preset])
    assert second.stages == {"validate": "ran", "prior": "skipped", "separate": "skipped", "images": "skipped",
                             "mix:mine": "ran", "evaluate": "skipped", "report": "ran"}
    remix_after = audio_io.read_audio(second.remixes[0])[0]
    assert np.max(np.abs(remix_after)) < np.max(np.abs(remix_before))  # quieter: the new preset was used
    third = _run_in_process(rendered_session, out, presets=[preset], n_iter=13)  # a separation setting
    assert {k: v for k, v in third.stages.items() if k != "validate"} == {
        "prior": "skipped", "separate": "ran", "images": "ran", "mix:mine": "ran", "evaluate": "ran",
        "report": "ran"}


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    # SIGINT back to its default: a shell script's background job (e.g. a CI step run with
    # `&`) inherits it ignored, and Ctrl-C would then not reach the run at all
    return subprocess.Popen([sys.executable, "-m", "studio_sep.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"finished before it could be interrupted: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _no_partial_files(folder: Path) -> None:
    """Every file under a final name is complete (readable to its end)."""
    for path in folder.rglob("*.wav"):
        if not path.name.startswith("."):
            audio_io.read_audio(path)
    for path in folder.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_mid_separation_resumes_to_the_uninterrupted_result(rendered_session: Path, tmp_path: Path,
                                                                   sig) -> None:
    # every run in a subprocess with one BLAS thread: the same arithmetic, to the bit
    whole = _cli("run", str(rendered_session), "--out", str(tmp_path / "whole"), "--iterations", "30", "--no-mix")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    name = json.loads(next((tmp_path / "whole").glob("*/run.json")).read_text())["session"]["name"]
    checkpoint = out / name / ".studio-sep" / "fit-checkpoint.npz"
    process = _start(["run", str(rendered_session), "--out", str(out), "--iterations", "30", "--no-mix"])
    _wait_for(checkpoint.is_file, process)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert "interrupted" in stdout and "run the same command again" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    record = json.loads((out / name / "run.json").read_text())
    assert "separate" not in record["stages"]  # it was stopped mid-fit: nothing taken for done
    _no_partial_files(out / name)

    resumed = _cli("run", str(rendered_session), "--out", str(out), "--iterations", "30", "--no-mix", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1])["sessions"][0]["stages"]["separate"] == "ran"
    record = json.loads((out / name / "run.json").read_text())
    assert record["stages"]["separate"]["resumed_from_iteration"] in (10, 20, 30, 40, 50, 60, 70, 80)
    assert not checkpoint.exists() and not list((out / name).rglob(".*.part"))
    for source in record["session"]["sources"]:
        for mic in record["session"]["mics"]:
            a = audio_io.read_audio(out / name / "images" / source / f"{mic}.wav")[0]
            b = audio_io.read_audio(tmp_path / "whole" / name / "images" / source / f"{mic}.wav")[0]
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not (ZAM / "ZamCompX2.vst3").exists(), reason="zam-plugins VST3s not installed")
def test_killed_mid_mixing_keeps_the_separation_and_redoes_only_the_mix(rendered_session: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = _start(["run", str(rendered_session), "--out", str(out), "--iterations", "12", "--preset",
                      str(REPO / "presets" / "paper_zam.toml")])
    seen: list[str] = []

    def mixing_started() -> bool:
        line = process.stderr.readline()  # progress is on stderr
        seen.append(line)
        return "mix:paper_zam …" in line

    _wait_for(mixing_started, process)
    time.sleep(0.3)  # inside the mix: plugin workers are starting
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    name = json.loads((out.glob("*/run.json").__next__()).read_text())["session"]["name"]
    record = json.loads((out / name / "run.json").read_text())
    assert "images" in record["stages"] and "mix:paper_zam" not in record["stages"]
    _no_partial_files(out / name)

    again = _run_in_process(rendered_session, out, presets=(REPO / "presets" / "paper_zam.toml",))
    assert again.status == "done", again.reason
    assert again.stages["separate"] == "skipped" and again.stages["mix:paper_zam"] == "ran"
    assert audio_io.read_audio(again.remixes[0])[0].shape[0] == 2


def test_find_sessions_takes_files_folders_and_globs(sessions: Path, tmp_path: Path) -> None:
    every = [sessions / n / "session.toml" for n in ("alpha", "bravo", "charlie")]
    assert find_sessions([sessions]) == [p.resolve() for p in every]
    assert find_sessions([sessions / "alpha"]) == [every[0].resolve()]
    assert find_sessions([str(sessions / "*" / "session.toml"), every[0]]) == [p.resolve() for p in every]
    with pytest.raises(InputError, match="matches no file"):
        find_sessions([str(tmp_path / "nothing*")])
    with pytest.raises(InputError, match="no session.toml"):
        find_sessions([tmp_path])


def test_two_sessions_with_one_name_stop_the_batch_before_any_work(sessions: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(sessions / "alpha", twin)
    result = _cli("run", str(sessions / "alpha"), str(twin), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "'alpha' is also the name of" in result.stderr and "its own name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_sessions_go_to_any_executor_as_files_in_files_out(sessions: Path, tmp_path: Path) -> None:
    """The job boundary: a SessionJob in, a SessionOutcome out, through any Executor."""
    from concurrent.futures import ThreadPoolExecutor

    options = RunOptions(separation=SeparationOptions(n_iter=5), presets=())
    jobs = [SessionJob(index=i, manifest=sessions / name / "session.toml", out_root=tmp_path, options=options)
            for i, name in enumerate(("bravo", "alpha"))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = run_batch(jobs, executor=pool)
    assert [o.name for o in outcomes] == ["bravo", "alpha"]
    assert outcomes[0].status == "failed" and "mics.wav" in outcomes[0].reason
    assert outcomes[1].status == "done" and (tmp_path / "alpha" / "stems").is_dir()


def test_a_bad_memory_budget_stops_before_any_work(sessions: Path, tmp_path: Path) -> None:
    result = _cli("run", str(sessions / "alpha"), "--out", str(tmp_path / "out"), "--max-memory", "8X")
    assert result.returncode == 2
    assert "'8X' is not a memory size" in result.stderr and "e.g. 8G" in result.stderr
    assert not (tmp_path / "out").exists()
