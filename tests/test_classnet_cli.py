"""The CLASS-net workflow from the command line: augment → train → separate --prior classnet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from studio_sep.cli import app

torch = pytest.importorskip("torch")
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
runner = CliRunner()


def test_augment_train_and_use_the_model(rendered_session: Path, tmp_path: Path) -> None:
    if not SOUNDFONT.is_file():
        pytest.skip("TimGM6mb.sf2 not installed")
    data = tmp_path / "data"
    result = runner.invoke(app, ["augment", str(data), "--examples", "4", "--val", "2", "--test", "1",
                                 "--phrases-per-program", "1", "--soundfont", str(SOUNDFONT), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert f"dataset {data}: train 4, val 2, test 1 examples of 10 s at 16000 Hz" in result.stdout
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["splits"] == {"train": 4, "val": 2, "test": 1} and meta["seed"] == 3
    example = json.loads((data / "train" / "000000.json").read_text())
    assert example["prompt"] in ("violin", "saxophone", "piano")
    assert example["class"] not in [i["class"] for i in example["interferers"]]

    out = tmp_path / "train"
    args = ["train", str(data), "--out", str(out), "--steps", "2", "--width", "0.125", "--depth", "4",
            "--batch-size", "2", "--crop", "1", "--threads", "1", "--mask-bce-weight", "0.25",
            "--mask-bce-bins", "uniform"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps (resumed from 0)" in result.stdout
    recorded = json.loads((out / "history.json").read_text())
    history = recorded["history"]
    assert history[-1]["step"] == 2 and all(k in history[-1] for k in ("sdr", "si_sdr", "si_sdri"))
    assert (recorded["settings"]["mask_bce_weight"], recorded["settings"]["mask_bce_bins"]) == (0.25, "uniform")
    assert history[-1]["train_bce"] > 0 and recorded["settings"]["sdr_weight"] == 0.02
    bad = runner.invoke(app, args[:-1] + ["power"])
    assert bad.exit_code == 2 and "mask_bce_bins" in bad.stderr and "'power'" in bad.stderr
    again = runner.invoke(app, args[:5] + ["4"] + args[6:])  # resumed to 4 steps
    assert again.exit_code == 0, again.output
    assert "trained 4 steps (resumed from 2)" in again.stdout
    changed = runner.invoke(app, args[:5] + ["6"] + args[6:] + ["--lr", "0.01"])
    assert changed.exit_code == 2 and "lr" in changed.stderr

    sep = runner.invoke(app, ["separate", str(rendered_session), "--out", str(tmp_path / "sep"), "--iterations",
                              "2", "--prior", "classnet", "--prior-model", str(out / "best.safetensors"),
                              "--device", "cpu"])
    assert sep.exit_code == 0, sep.output
    run = json.loads((tmp_path / "sep" / "ircam_trio" / "run.json").read_text())
    assert run["separation"]["prior"]["kind"] == "classnet"
    assert run["separation"]["spectral_init"].endswith("geometric mean with the classnet prior")


def test_train_defaults_are_the_loss_modules() -> None:
    import inspect

    from studio_sep.classnet.train_loss import MASK_BCE_WEIGHT, SDR_WEIGHT
    from studio_sep.cli.classnet_cmds import train

    params = inspect.signature(train).parameters
    assert (params["mask_bce_weight"].default, params["sdr_weight"].default) == (MASK_BCE_WEIGHT, SDR_WEIGHT)
    assert params["mask_bce_bins"].default == "magnitude"


def test_two_training_soundfonts_and_a_heldout_set(tmp_path: Path) -> None:
    """augment renders each program with every --soundfont; --heldout writes a test split only, from a
    SoundFont named MuseScore_General (here a link to TimGM6mb, for speed), twice the same; train refuses it."""
    if not SOUNDFONT.is_file():
        pytest.skip("TimGM6mb.sf2 not installed")
    other = tmp_path / "Other_GM.sf2"
    other.symlink_to(SOUNDFONT)
    heldout = tmp_path / "MuseScore_General.sf2"
    heldout.symlink_to(SOUNDFONT)
    common = ["--phrases-per-program", "1", "--classes", "violin,saxophone,piano", "--seed", "2"]
    result = runner.invoke(app, ["augment", str(tmp_path / "data"), "--examples", "6", "--val", "0", "--test", "0",
                                 "--soundfont", str(SOUNDFONT), "--soundfont", str(other), *common])
    assert result.exit_code == 0, result.output
    sources = {json.loads((tmp_path / "data" / "train" / f"{i:06d}.json").read_text())["target_source"]
               for i in range(6)}
    assert {s.rsplit("@", 1)[1] for s in sources} <= {"TimGM6mb", "Other_GM"} and len(sources) > 1
    pool = json.loads((tmp_path / "data" / "dataset.json").read_text())["pool"]
    assert pool["soundfont_roles"] == {"TimGM6mb.sf2": "train", "Other_GM.sf2": "train"}
    for name in ("held1", "held2"):
        result = runner.invoke(app, ["augment", str(tmp_path / name), "--heldout", "--soundfont", str(heldout),
                                     "--test", "2", *common])
        assert result.exit_code == 0, result.output
        assert f"dataset {tmp_path / name}: train 0, val 0, test 2 examples" in result.stdout
    for i in range(2):  # deterministic: the same seed writes the same test set
        a, b = (json.loads((tmp_path / n / "test" / f"{i:06d}.json").read_text()) for n in ("held1", "held2"))
        assert a == b and a["target_source"].endswith("@MuseScore_General")
    result = runner.invoke(app, ["augment", str(tmp_path / "bad"), "--heldout", "--examples", "3", *common])
    assert result.exit_code != 0 and "the held-out set writes test examples only" in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "held1"), "--out", str(tmp_path / "t"), "--steps", "1"])
    assert result.exit_code != 0 and "held out as the unseen-timbre test set" in result.output


def test_average_writes_the_mean_checkpoint_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    from studio_sep.classnet import ClassNet, load_checkpoint, save_checkpoint

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"step{seed}.safetensors")
        save_checkpoint(ClassNet(width=0.125, depth=3), paths[-1])
    out = tmp_path / "avg [final].safetensors"
    result = runner.invoke(app, ["average", str(out), *map(str, paths)])
    assert result.exit_code == 0, result.output
    sha = load_checkpoint(out).sha256
    assert f"averaged 2 checkpoints into {out} (weights SHA-256 {sha[:12]}…)" in result.stdout
    a, b = (load_checkpoint(p).model.state_dict()["unet.after_conv2.weight"] for p in paths)
    assert torch.allclose(load_checkpoint(out).model.state_dict()["unet.after_conv2.weight"], (a + b) / 2)

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"no weights here")
    result = runner.invoke(app, ["average", str(tmp_path / "x.safetensors"), str(paths[0]), str(broken)])
    assert result.exit_code != 0
    assert str(broken) in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.safetensors").exists()
