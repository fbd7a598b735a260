"""Hardening (issue #16): a bad session never stops the batch, an unwritable or full output
is one line naming the file and the cause, and no traceback reaches the user."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studio_sep.batch.runner import RunOptions, SessionJob, run_batch
from studio_sep.stages import SeparationOptions

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "studio_sep.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _named_copy(manifest: Path, folder: Path, name: str, toml_name: str | None = None) -> Path:
    """A copy of the rendered session whose manifest says ``name = "<toml_name or name>"``."""
    shutil.copytree(manifest.parent, folder)
    copy = folder / "session.toml"
    text = copy.read_text()
    copy.write_text(re.sub(r'(?m)^name = ".*"$', lambda _: f'name = "{toml_name or name}"', text, count=1))
    return copy


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A tmpfs of ``size`` mounted at ``where`` (root only: the test needs a real file system
    that fills up or refuses writes; root ignores chmod)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    probe = where / "probe"
    with pytest.raises(OSError):  # really unwritable, even for root
        probe.write_text("x")


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one line on stderr of a command run with ``-q`` (no progress there): its error."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _no_partial_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.part")], "a temporary file was left"


def test_sessions_that_cannot_make_their_folder_fail_alone(rendered_session: Path, tmp_path: Path) -> None:
    """Case 1: a 300-character name, a NUL in the name: those sessions fail with one line, the others run."""
    sessions = tmp_path / "sessions"
    _named_copy(rendered_session, sessions / "a_long", "x" * 300)
    _named_copy(rendered_session, sessions / "b_nul", "nul", toml_name="bad\\u0000name")
    _named_copy(rendered_session, sessions / "c_good", "good")
    out = tmp_path / "out"
    result = _cli("run", str(sessions), "--out", str(out), "--iterations", "3", "--no-mix", "--no-evaluate",
                  "--json")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    summary = __import__("json").loads(result.stdout.splitlines()[-1])
    by_index = {s["index"]: s for s in summary["sessions"]}
    assert by_index[0]["status"] == "failed" and "session.name" in by_index[0]["reason"]
    assert by_index[1]["status"] == "failed" and "session.name" in by_index[1]["reason"]
    assert by_index[2]["status"] == "done" and (out / "good" / "stems").is_dir()
    # the refused sessions' logs are under their folders' names, not the names they were refused for
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a_long", "b_nul", "good"]
    assert 'href="good/report/index.html"' in (out / "index.html").read_text()  # the batch's index


def test_user_text_in_the_batch_display_is_printed_as_written(rendered_session: Path, tmp_path: Path) -> None:
    """A path holding rich markup (`[day 2]`, `[/]`) reaches the batch's lines and summary unchanged."""
    broken = _named_copy(rendered_session, tmp_path / "takes" / "[day 2]" / "[/]", "take[1]")
    result = _cli("run", str(broken), "--out", str(tmp_path / "out"), "--iterations", "2", "--no-mix",
                  "--no-evaluate")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "take[1]" in result.stdout and "[day 2]/[/]" in result.stdout, result.stdout


def test_a_read_only_out_is_one_line_even_when_everything_is_up_to_date(rendered_session: Path,
                                                                          tmp_path: Path) -> None:
    """Cases 1 and 2: a read-only OUT fails the session (the batch goes on, exit 1), and
    `separate` says so in one line (exit 2), naming the path and the cause."""
    with tmpfs(tmp_path / "out", "64m") as out:
        first = _cli("run", str(rendered_session), "--out", str(out), "--iterations", "3", "--no-mix",
                     "--no-evaluate", "-q")
        assert first.returncode == 0, first.stdout + first.stderr
        _read_only(out)
        again = _cli("run", str(rendered_session), "--out", str(out), "--iterations", "3", "--no-mix",
                     "--no-evaluate", "-q")
        assert again.returncode == 1 and "Traceback" not in again.stdout + again.stderr
        reason = [line for line in again.stderr.splitlines() if line.startswith("error: ircam_trio: ")]
        assert reason and "read-only file system" in reason[0] and str(out) in reason[0], again.stderr
        separate = _cli("separate", str(rendered_session), "--out", str(out), "--iterations", "3", "-q")
        line = _one_error_line(separate)
        assert separate.returncode == 2
        assert str(out / "ircam_trio") in line and "read-only file system" in line and "--out" in line


@pytest.mark.parametrize("command", ["separate", "run"])
def test_a_full_disk_is_one_line_naming_the_file_and_nothing_is_left_half_written(
        rendered_session: Path, tmp_path: Path, command: str) -> None:
    """Case 2: the disk fills while the images are written (2 MiB: the fit's files fit, the images
    do not; one fit: an ensemble's fits would not fit)."""
    with tmpfs(tmp_path / "out", "2m") as out:
        args = ["--no-mix", "--no-evaluate", "-q"] if command == "run" else ["-q"]  # -q: no progress on stderr
        result = _cli(command, str(rendered_session), "--out", str(out), "--iterations", "3", "--ensemble", "1",
                      "--init", "geometry", *args)
        assert result.returncode == 1
        if command == "separate":
            line = _one_error_line(result)
        else:
            assert "Traceback" not in result.stdout + result.stderr
            line = next(line for line in result.stderr.splitlines() if line.startswith("error: ircam_trio: "))
        assert "no space left on device (fix: free space and rerun; finished stages are kept)" in line
        assert re.search(re.escape(str(out)) + r"/ircam_trio/\S+\.wav", line), line  # the file named
        _no_partial_files(out)
        record = __import__("json").loads((out / "ircam_trio" / "run.json").read_text())
        assert set(record["stages"]) == {"prior", "separate"}  # finished stages kept, images not taken for done



def test_a_full_disk_during_the_fits_is_one_line_naming_the_fit_file(rendered_session: Path, tmp_path: Path) -> None:
    """The disk fills while an ensemble's fits are saved (2 MiB): one line naming the .npz, no
    traceback (numpy's zip writer never sees the full disk: the file is made in memory)."""
    with tmpfs(tmp_path / "out", "2m") as out:
        result = _cli("separate", str(rendered_session), "--out", str(out), "--iterations", "3", "--ensemble", "5",
                      "-q")
        assert result.returncode == 1
        line = _one_error_line(result)
        assert "no space left on device (fix: free space and rerun; finished stages are kept)" in line
        assert re.search(re.escape(str(out)) + r"/ircam_trio/\.studio-sep/\S+\.npz", line), line
        _no_partial_files(out)

def _run(manifest: Path, out: Path, n_iter: int = 3):
    options = RunOptions(separation=SeparationOptions(n_iter=n_iter), presets=(), evaluate=False)
    return run_batch([SessionJob(index=0, manifest=manifest, out_root=out, options=options)])[0]


def test_a_session_log_that_cannot_be_opened_fails_only_that_session(rendered_session: Path,
                                                                   tmp_path: Path) -> None:
    """Case 1, in the library: the job returns a failed outcome (no exception) naming the path."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "ircam_trio").write_text("a file where the session's folder should be")
    outcome = _run(rendered_session, out)
    assert outcome.status == "failed" and outcome.log is None
    assert str(out / "ircam_trio") in outcome.reason and "not a folder" in outcome.reason


def test_atomic_writes_fsync_before_the_rename_and_never_set_the_umask(tmp_path: Path, monkeypatch) -> None:
    """Case 11: the file is fsynced before it is renamed and the folder after; its mode is
    0o666 less the umask, found without os.umask (which would change it for every thread)."""
    from studio_sep.util import atomic

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        calls.append("rename")
        real_replace(src, dst)

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask called"))
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        atomic.write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert calls == ["fsync file", "rename", "fsync folder"]
    assert (tmp_path / "a.json").read_text() == "{}"
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path: Path) -> None:
    from studio_sep.util.atomic import atomic_path, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("stopped")
    assert (tmp_path / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("command", ["separate", "mix", "evaluate"])
def test_every_command_that_writes_a_session_takes_its_lock(rendered_session: Path, tmp_path: Path,
                                                            command: str) -> None:
    """Case 9: while a run holds the session's lock, separate, mix and evaluate stop with one line."""
    from studio_sep.stages import session_lock

    out = tmp_path / "out"
    with session_lock(out / "ircam_trio"):  # what `run` holds while it writes
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        result = _cli(command, str(rendered_session), "--out", str(out), "-q")
        after = sorted(p.relative_to(out) for p in out.rglob("*"))
    line = _one_error_line(result)
    assert result.returncode == 1
    assert str(out / "ircam_trio") in line and "another studio-sep run is writing here" in line
    assert before == after  # nothing written


def test_an_unexpected_error_is_one_line_and_a_log_with_the_traceback(rendered_session: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import studio_sep.session
    from studio_sep.cli import app

    def broken(*args, **kwargs):
        raise RuntimeError("an internal [bold]bug[/bold]\nsecond line")

    monkeypatch.setattr(studio_sep.session, "load_session", broken)
    result = CliRunner().invoke(app, ["validate", str(rendered_session)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: unexpected RuntimeError: an internal [bold]bug[/bold] second line")
    log = Path(re.search(r"the traceback is in (\S+);", lines[0]).group(1))
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "an internal" in text
    log.unlink()


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(rendered_session: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import studio_sep.session
    from studio_sep.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(studio_sep.session, "load_session", interrupted)
    result = CliRunner().invoke(app, ["validate", str(rendered_session)])
    assert result.exit_code == 130
    assert result.output.strip().splitlines() == [
        "error: interrupted (finished files are kept; run the same command again to continue)"]


def test_dash_h_is_help_on_every_level() -> None:
    """``-h`` is ``--help``: for the tool, a command and a sub-command group's command."""
    from typer.testing import CliRunner

    from studio_sep.cli.app import app

    for args in (["-h"], ["run", "-h"], ["plugins", "scan", "-h"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage: studio-sep" in result.output and "--help" in result.output
