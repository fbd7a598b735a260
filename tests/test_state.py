"""State heals (issue #16, case 8): a corrupted run.json, hashes.json, parameter file,
checkpoint or output is treated as absent (a warning in the session log), the stage is
redone, and the run succeeds, without --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from studio_sep.batch.runner import RunOptions, SessionJob, run_batch
from studio_sep.stages import SeparationOptions

PAPER = Path(__file__).resolve().parent.parent / "presets" / "paper.toml"


def _run(manifest: Path, out: Path, presets=()):
    options = RunOptions(separation=SeparationOptions(n_iter=3), presets=tuple(presets), evaluate=False)
    return run_batch([SessionJob(index=0, manifest=manifest, out_root=out, options=options)])[0]


@pytest.fixture(scope="module")
def finished(rendered_session: Path, tmp_path_factory) -> Path:
    """OUT of a finished run (separation and the paper mix), to copy and corrupt."""
    out = tmp_path_factory.mktemp("finished")
    outcome = _run(rendered_session, out, presets=(PAPER,))
    assert outcome.status == "done", outcome.reason
    return out


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out, out / "ircam_trio"


def _log(outcome) -> str:
    """This run's part of the session's log (two runs in one second share a file)."""
    text = Path(outcome.log).read_text()
    return text[text.rindex("studio-sep run: "):]


def _garble(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 not a zip at all" + bytes(range(256)))


CORRUPTIONS = {
    # name: (corrupt(folder), stages redone, words of the warning); a redone stage that makes
    # the same files (same fingerprint) leaves the stages after it up to date (the report too)
    "run.json stages a list": (lambda f: (f / "run.json").write_text('{"stages": []}'),
                               {"prior", "separate", "images", "mix:paper", "report"}, "'stages' is not an object"),
    "run.json not JSON": (lambda f: (f / "run.json").write_text('{"stages": {'),
                          {"prior", "separate", "images", "mix:paper", "report"}, "unreadable"),
    "a stage written as a number": (lambda f: _edit_run(f, lambda d: d["stages"].__setitem__("images", 5)),
                                    {"images"}, "stages.images is a int"),
    "stem mics garbled": (lambda f: _edit_run(f, lambda d: d["separation"].__setitem__("stem_mics", 3)),
                          {"images"}, "separation.stem_mics"),
    "hashes.json of wrong types": (lambda f: (f / ".studio-sep" / "hashes.json").write_text(
        '{"/x": {"stamp": "now", "sha256": 5}, "/y": 7}'), set(), "2 invalid entries ignored"),
    "prior.npz garbled": (lambda f: _garble(f / ".studio-sep" / "prior.npz"), {"prior"}, "prior stage is redone"),
    "fit.npz garbled": (lambda f: _garble(f / ".studio-sep" / "fit.npz"),
                        {"separate"}, "separate stage is redone"),
    "an image truncated": (lambda f: _truncate(f / "images" / "sax" / "spot_sax.wav"),
                           {"images"}, "truncated or changed"),
    "the mix report of another shape": (lambda f: (f / "remix" / "paper.json").write_text('{"remix": 1}'),
                                        {"mix:paper"}, "mix:paper stage is redone"),
}


def _edit_run(folder: Path, change) -> None:
    data = json.loads((folder / "run.json").read_text())
    change(data)
    (folder / "run.json").write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupted_state_is_treated_as_absent_and_the_rerun_heals_it(rendered_session: Path, finished: Path,
                                                                      tmp_path: Path, case: str) -> None:
    out, folder = _copy(finished, tmp_path)
    corrupt, redone, words = CORRUPTIONS[case]
    corrupt(folder)
    outcome = _run(rendered_session, out, presets=(PAPER,))
    assert outcome.status in ("done", "up to date"), outcome.reason
    ran = {stage for stage, status in outcome.stages.items() if status == "ran" and stage != "validate"}
    assert ran == redone
    warnings = [line for line in _log(outcome).splitlines() if "warning:" in line]
    assert any(words in line for line in warnings), warnings
    assert len(warnings) == len(set(warnings))  # each said once
    healed = _run(rendered_session, out, presets=(PAPER,))  # and it stays healed
    assert healed.status == "up to date" and "warning:" not in _log(healed), _log(healed)


def test_a_garbled_checkpoint_of_the_current_fit_starts_the_fit_over(rendered_session: Path, finished: Path,
                                                                   tmp_path: Path) -> None:
    from studio_sep.stages.runrecord import RunRecord

    out, folder = _copy(finished, tmp_path)
    RunRecord(folder).begin("separate")  # as if killed mid-fit (of the ensemble's first fit: none kept yet)
    for member in (folder / ".studio-sep").glob("fit-*member-*.npz"):  # every spatial start's
        member.unlink()
    _garble(folder / ".studio-sep" / "fit-checkpoint.npz")
    outcome = _run(rendered_session, out)
    assert outcome.status == "done" and outcome.stages["separate"] == "ran", outcome.reason
    assert json.loads((folder / "run.json").read_text())["stages"]["separate"]["resumed_from_iteration"] == 0
    assert "fit-checkpoint.npz: unreadable" in _log(outcome)
    assert not (folder / ".studio-sep" / "fit-checkpoint.npz").exists()


def test_a_copied_out_reports_its_own_remix(rendered_session: Path, finished: Path, tmp_path: Path) -> None:
    """Case 11: recorded output paths are relative to the session folder."""
    out, folder = _copy(finished, tmp_path)
    report = json.loads((folder / "remix" / "paper.json").read_text())
    assert report["remix"] == "remix/paper.wav" and report["project"].startswith("daw/paper/")
    outcome = _run(rendered_session, out, presets=(PAPER,))
    assert outcome.status == "up to date"
    assert outcome.remixes == [str(folder / "remix" / "paper.wav")]
    assert outcome.projects[0].startswith(str(folder / "daw" / "paper"))
