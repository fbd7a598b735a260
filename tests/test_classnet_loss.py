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
    MASK_BCE_WEIGHT,
    estimate_and_loss,
    ideal_ratio_mask,
    loss_from_logits,
    loss_from_mask,
    mask_bce,
    selection_key,
    separation_loss,
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


def test_mask_bce_pulls_a_saturated_mask_by_its_target():
    """At a logit of −7 (mask 9e−4) with an ideal-mask target of 0.5 the cross-entropy's gradient per
    logit is σ(−7) − 0.5 = −0.499; the MAE term's is σ'(−7)·|X|, 1e−3 times smaller."""
    logits = torch.full((1, 513, 20), -7.0, dtype=torch.float64, requires_grad=True)
    mag, target_mag = torch.full((1, 513, 20), 2.0, dtype=torch.float64), torch.ones(1, 513, 20, dtype=torch.float64)
    assert torch.equal(ideal_ratio_mask(mag, target_mag), torch.full_like(mag, 0.5))
    for bins in ("magnitude", "uniform"):  # equal magnitudes: equal weights
        (grad,) = torch.autograd.grad(mask_bce(logits, mag, target_mag, bins=bins), logits)
        per_logit = grad * logits.numel()  # the mean over bins divides by their number
        assert torch.allclose(per_logit, torch.full_like(per_logit, 1 / (1 + math.exp(7)) - 0.5), atol=1e-12)
    mae = (torch.sigmoid(logits) * mag - target_mag).abs().mean()
    (mae_grad,) = torch.autograd.grad(mae, logits)
    mae_per_logit = float(mae_grad[0, 0, 0]) * logits.numel()
    assert mae_per_logit == pytest.approx(-2 * math.exp(-7) / (1 + math.exp(-7)) ** 2, rel=1e-9)  # −1.8e−3
    # magnitude bins: a bin's pull is scaled by its magnitude over the example's mean magnitude
    mag2 = mag.clone()
    mag2[..., :10] = 6.0  # half the bins 6, half 2: weights 1.5 and 0.5, targets 1/6 and 1/2
    (grad,) = torch.autograd.grad(mask_bce(logits, mag2, target_mag), logits)
    s7 = 1 / (1 + math.exp(7))
    assert float(grad[0, 0, 0]) * logits.numel() == pytest.approx(1.5 * (s7 - 1 / 6), rel=1e-9)
    assert float(grad[0, 0, 15]) * logits.numel() == pytest.approx(0.5 * (s7 - 0.5), rel=1e-9)


def test_mask_bce_is_finite_where_the_sigmoid_saturates():
    logits = torch.tensor([[[-200.0, 200.0, 0.0]]], dtype=torch.float64)
    mag, target_mag = torch.tensor([[[1.0, 1.0, 0.0]]]), torch.tensor([[[1.0, 0.0, 0.0]]])
    value = mask_bce(logits, mag.double(), target_mag.double(), bins="uniform")
    assert float(value) == pytest.approx((200 + 200 + math.log(2)) / 3)  # |X| = 0: target 0, log 2 at z = 0


def test_all_zero_mask_is_not_a_minimum_of_the_full_loss(example):
    """Logits of −30 (mask 1e−13): the MAE and SDR terms' gradients vanish through the sigmoid, the
    cross-entropy's does not; a gradient step raises the mask where the target is and lowers the loss."""
    net, s, x, X, irm = example
    logits = torch.full_like(irm, -30.0, requires_grad=True)
    loss, parts = loss_from_logits(net, logits, X, s, x, sdr_weight=0.02, mask_bce_weight=MASK_BCE_WEIGHT)
    (grad,) = torch.autograd.grad(loss, logits)
    assert math.isfinite(parts["bce"]) and parts["bce"] > 0
    assert float((grad * irm).sum()) < 0 and float(grad.max()) < 1e-15  # pulled up where the target is
    ratio = ideal_ratio_mask(X.abs(), net.spectrogram(s).abs())
    (no_bce_grad,) = torch.autograd.grad(loss_from_logits(net, logits, X, s, x, sdr_weight=0.02,
                                                          mask_bce_weight=0)[0], logits)
    # without the cross-entropy the gradient has vanished (1e−13 of it); with it, the pull is the ratio's
    assert float(no_bce_grad.abs().sum()) < 1e-9
    assert float(-grad.sum()) == pytest.approx(MASK_BCE_WEIGHT * float((ratio * X.abs() / X.abs().mean()).mean()),
                                               rel=1e-6)
    stepped = (logits - 10 * grad.numel() * grad).detach()  # Δz = w·m*: at most a few units from −30
    after, _ = loss_from_logits(net, stepped, X, s, x, sdr_weight=0.02)
    assert float(after) < float(loss.detach()) - 0.01


def test_weight_zero_leaves_the_loss_unchanged(example):
    net, s, x, X, irm = example
    logits = torch.logit(irm.clamp(0.05, 0.95))
    for sdr_weight in (0.0, 0.02):
        with_zero, parts = loss_from_logits(net, logits, X, s, x, sdr_weight=sdr_weight, mask_bce_weight=0)
        before, before_parts = loss_from_mask(net, torch.sigmoid(logits), X, s, x, sdr_weight=sdr_weight)
        assert float(with_zero) == float(before) and math.isnan(parts["bce"])
        assert {k: parts[k] for k in before_parts} == pytest.approx(before_parts, nan_ok=True)
    bce = mask_bce(logits, X.abs(), net.spectrogram(s).abs())
    full, parts = loss_from_logits(net, logits, X, s, x, sdr_weight=0.02, mask_bce_weight=0.3)
    assert float(full) == pytest.approx(float(before) + 0.3 * float(bce), rel=1e-12)
    assert parts["bce"] == pytest.approx(float(bce))


def test_separation_loss_uses_the_networks_logits(example):
    net, s, x, X, irm = example
    cond = torch.nn.functional.normalize(torch.ones(1, net.cond_dim, dtype=torch.float64), dim=1)
    with torch.no_grad():
        logits = net.predict_logits(X.abs(), cond)
        assert torch.equal(net.predict_mask(X.abs(), cond), torch.sigmoid(logits))
        assert torch.equal(net(x, cond).mask_BFT, torch.sigmoid(logits))
        got, _ = separation_loss(net, x, s, cond, sdr_weight=0.02, mask_bce_weight=0.5, mask_bce_bins="uniform")
        want, _ = loss_from_logits(net, logits, X, s, x, sdr_weight=0.02, mask_bce_weight=0.5, mask_bce_bins="uniform")
        est, one_pass = estimate_and_loss(net, x, s, cond, sdr_weight=0.02, mask_bce_weight=0.5, mask_bce_bins="uniform")
        assert torch.equal(est, net(x, cond).wave_BS)
    assert float(got) == float(want) == float(one_pass)


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
