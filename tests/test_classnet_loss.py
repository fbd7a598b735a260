"""CLASS-net's training loss, class-balanced batches, validation per class, the best-model rule
and the held-out SoundFont split (studio_sep/classnet/train_loss.py, train_data.py,
studio_sep/data/soundfonts.py). Synthetic signals, no network training: milliseconds each."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from studio_sep.classnet.model import ClassNet  # noqa: E402
from studio_sep.classnet.train_data import batch_indices  # noqa: E402
from studio_sep.classnet.train_loss import (  # noqa: E402
    loss_from_mask,
    selection_key,
    signal_sdr,
    validation_scores,
)
from studio_sep.data.soundfonts import (  # noqa: E402
    HELDOUT_SOUNDFONTS,
    TRAIN_SOUNDFONTS,
    augment_soundfonts,
    heldout_in_pool,
    soundfont_role,
)
from studio_sep.util.errors import InputError  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SR = 16000


@pytest.fixture(scope="module")
def example():
    """1 s: a tone in bursts (the target) plus white noise of the same energy; the STFT of a
    tiny ClassNet (float64) and the ideal ratio mask."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = ClassNet(width=0.125, depth=4).double()
    t = torch.arange(SR, dtype=torch.float64) / SR
    s = (0.3 * torch.sin(2 * math.pi * 440 * t) * ((t * 4) % 1 < 0.5))[None]
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(SR))[None]
    x = s + noise * torch.sqrt(s.pow(2).sum() / noise.pow(2).sum())
    X, S = net.spectrogram(x), net.spectrogram(s)
    irm = (S.abs() / (S.abs() + (X - S).abs() + 1e-12)).clamp(0, 1)
    return net, s, x, X, irm


def test_all_zero_mask_loses_to_a_partial_estimate(example):
    net, s, x, X, irm = example
    zero, _ = loss_from_mask(net, torch.zeros_like(irm), X, s, x)
    half, parts = loss_from_mask(net, 0.5 * irm, X, s, x)
    assert float(half) < float(zero) - 0.1
    assert parts["sdr"] > 5  # half the ideal ratio mask: +5.4 dB
    # the waveform term alone: zero scores 0 dB, the best constant (Wiener) gain ≈ 10 log10(1 + SNR) = +3 dB
    gain = float((s * x).sum() / x.pow(2).sum())
    exact = 10 * math.log10(float(s.pow(2).sum() / ((s - gain * x).pow(2).sum() + 1e-3 * s.pow(2).sum())))
    assert abs(float(signal_sdr(torch.zeros_like(s), s, x))) < 0.01
    assert float(signal_sdr(gain * x, s, x)) == pytest.approx(exact, abs=1e-3) and exact > 2.9


def test_gradient_at_zero_mask_is_nonzero_and_points_to_the_target(example):
    net, s, x, X, irm = example
    mask = torch.zeros_like(irm, requires_grad=True)
    loss, _ = loss_from_mask(net, mask, X, s, x)
    loss.backward()
    assert float(mask.grad.abs().max()) > 0
    assert float((mask.grad * irm).sum()) < 0  # a step down the gradient raises the mask where the target is
    # the SDR term by itself also has a gradient at zero (SI-SDR would not: 0/0 there)
    mask2 = torch.zeros_like(irm, requires_grad=True)
    sdr_only = -signal_sdr(net.waveform(mask2 * X, SR), s, x).sum()
    sdr_only.backward()
    assert float((mask2.grad * irm).sum()) < 0


def test_sdr_weight_zero_is_eq18_alone(example):
    net, s, x, X, irm = example
    loss, parts = loss_from_mask(net, irm, X, s, x, sdr_weight=0)
    mae = (irm * X.abs() - net.spectrogram(s).abs()).abs().mean()
    assert float(loss) == pytest.approx(float(mae), rel=1e-12) and math.isnan(parts["sdr"])


def _generator(*key):
    return torch.Generator().manual_seed(hash(key) & 0xFFFF_FFFF)


def test_class_balanced_batches_draw_every_class_equally():
    classes = ["violin"] * 30 + ["saxophone"] * 6 + ["piano"] * 12  # sax is rare in the data
    drawn = [classes[i] for step in range(30) for i in batch_indices(step, 4, classes, _generator)]
    assert {c: drawn.count(c) for c in set(drawn)} == {"piano": 40, "saxophone": 40, "violin": 40}
    # the rare class cycles through all its examples before repeating one
    sax = [i for step in range(30) for i in batch_indices(step, 4, classes, _generator) if classes[i] == "saxophone"]
    assert sorted(sax[:6]) == list(range(30, 36))
    plain = [classes[i] for step in range(12) for i in batch_indices(step, 4, classes, _generator, balance="none")]
    assert plain.count("saxophone") == 6  # one epoch: as the data holds them
    assert batch_indices(7, 4, classes, _generator) == batch_indices(7, 4, classes, _generator)


def _row(cls, sdr, sdr_mix, level=0.0):
    return {"class": cls, "val_loss": 0.2, "sdr": sdr, "sdr_mixture": sdr_mix, "si_sdr": sdr - 1,
            "si_sdr_mixture": sdr_mix - 1, "level_db": level}


def test_validation_reports_per_class_the_worst_and_the_collapsed():
    rows = [_row("piano", 5, 0), _row("piano", 7, 0), _row("violin", 3, -2), _row("saxophone", 0.0, -3, -30),
            _row("saxophone", -0.5, -3, -25)]
    v = validation_scores(rows)
    assert v["per_class"]["piano"]["sdri"] == pytest.approx(6) and v["per_class"]["violin"]["sdri"] == pytest.approx(5)
    assert v["per_class"]["saxophone"]["collapsed"] and v["collapsed"] == ["saxophone"]
    assert v["worst_class"] == "saxophone" and v["worst_sdri"] == pytest.approx(2.75)
    assert v["sdri"] == pytest.approx(np.mean([5, 7, 3, 0, -0.5]) - np.mean([0, 0, -2, -3, -3]))


def test_best_rule_never_prefers_a_collapsed_class():
    collapsed = {"collapsed": ["saxophone"], "worst_sdri": 6.0}
    whole = {"collapsed": [], "worst_sdri": 1.0}
    better = {"collapsed": [], "worst_sdri": 2.0}
    assert selection_key(whole) > selection_key(collapsed)
    assert selection_key(better) > selection_key(whole)
    assert selection_key({"collapsed": ["a"], "worst_sdri": 0}) > selection_key({"collapsed": ["a", "b"], "worst_sdri": 9})


# -- the held-out SoundFont ----------------------------------------------------------------
def test_soundfont_split_is_by_file_name():
    assert [soundfont_role(p) for p in TRAIN_SOUNDFONTS] == ["train", "train"]
    assert [soundfont_role(p) for p in HELDOUT_SOUNDFONTS] == ["heldout"]
    assert soundfont_role("/elsewhere/MuseScore_General_Full.sf3") == "heldout"
    assert soundfont_role("/x/musescore_general.sf2") == "heldout" and soundfont_role("/x/GeneralUser.sf2") == "train"
    assert heldout_in_pool({"soundfont": [str(p) for p in TRAIN_SOUNDFONTS]}) == []
    assert heldout_in_pool({"soundfont": "/usr/share/sounds/sf3/MuseScore_General.sf3"}) == ["MuseScore_General.sf3"]


def test_augment_soundfonts_keep_the_heldout_set_out_of_training(tmp_path):
    fonts, n_train, n_val = augment_soundfonts(None, heldout=False, n_train=None, n_val=None)
    assert all(soundfont_role(f) == "train" for f in fonts) and (n_train, n_val) == (1000, 300)
    with pytest.raises(InputError, match="test examples only.*drop --examples"):
        augment_soundfonts(None, heldout=True, n_train=10, n_val=None)
    with pytest.raises(InputError, match="TimGM6mb.sf2.*is a training SoundFont"):
        augment_soundfonts([TRAIN_SOUNDFONTS[1]], heldout=True, n_train=None, n_val=None)
    fake = tmp_path / "MuseScore_General.sf2"
    fake.write_bytes(b"")
    assert augment_soundfonts([fake], heldout=True, n_train=0, n_val=0) == ((fake,), 0, 0)


def test_train_refuses_data_rendered_with_the_heldout_soundfont(tmp_path):
    from studio_sep.classnet.train import train
    from tests.test_classnet_train import write_dataset

    write_dataset(tmp_path)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["pool"] = {"soundfont": ["/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf3/MuseScore_General.sf3"]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="MuseScore_General.sf3, held out as the unseen-timbre test set"):
        train(tmp_path, tmp_path / "run", steps=1)


def test_an_example_without_interference_has_no_improvement():
    from studio_sep.classnet.train_loss import example_scores

    t = np.sin(np.arange(1600) / 5.0)
    alone = example_scores(t, 0.5 * t, t)  # the mixture is the target: no interferer sounded
    assert math.isnan(alone["sdr_mixture"]) and math.isnan(alone["si_sdr_mixture"])
    assert alone["sdr"] == pytest.approx(10 * math.log10(4)) and alone["level_db"] == pytest.approx(-6.02, abs=0.01)
    rows = [{**_row("saxophone", 3, -2)}, {"class": "saxophone", "val_loss": 0.1, **alone}]
    v = validation_scores(rows)
    assert v["per_class"]["saxophone"]["sdri"] == pytest.approx(5)  # the other example only, not −300 dB
    assert v["per_class"]["saxophone"]["sdr"] == pytest.approx((3 + 10 * math.log10(4)) / 2)
