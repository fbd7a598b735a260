"""Query encoders (LearnedQuery, QueriedClassNet) and CLASS-net training.

The data sets are written here in the augmentation format (``studio-sep.augment/1``):
short synthetic examples where the target is a sine in a fixed band and the
interferer noise in another band, so that a tiny network (width 0.125, depth 4) learns
something within a few steps of 1 s crops on one CPU thread.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from studio_sep.classnet.checkpoint import MODELS, load_checkpoint, save_checkpoint  # noqa: E402
from studio_sep.classnet.model import ClassNet  # noqa: E402
from studio_sep.classnet.query import (  # noqa: E402
    CLASS_KEYWORDS,
    LearnedQuery,
    QueriedClassNet,
    QueryEncoder,
    fit_reference,
    prompt_class,
)
from studio_sep.classnet.train import magnitude_mae, train  # noqa: E402
from studio_sep.classnet.train_data import read_dataset_index, read_wave  # noqa: E402
from studio_sep.data.instruments import CLASSES, TARGET_CLASSES  # noqa: E402
from studio_sep.util.errors import InputError  # noqa: E402

TINY = {"width": 0.125, "depth": 4}
SR = 16000
FAST = {"width": 0.125, "depth": 4, "crop_s": 1.0, "batch_size": 2, "threads": 1}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _query(seed: int = 0, **kwargs) -> LearnedQuery:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LearnedQuery(**kwargs)


def _queried(seed: int = 0) -> QueriedClassNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return QueriedClassNet(net=dict(TINY))


# -- data set writer (the format of studio_sep.data.dataset) -------------------------------------
def _band_noise(rng: np.random.Generator, n: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[(f < lo_hz) | (f > hi_hz)] = 0
    x = np.fft.irfft(spec, n)
    return x / np.max(np.abs(x))


def write_dataset(folder, *, n_train: int = 4, n_val: int = 2, duration_s: float = 1.5, seed: int = 0) -> None:
    """Target: a violin-ish sine at 440–880 Hz; interferer: noise at 3–6 kHz."""
    rng = np.random.default_rng(seed)
    n = round(duration_s * SR)
    t = np.arange(n) / SR
    counts = {"train": n_train, "val": n_val, "test": 1}
    k = 0  # running example number: varies the prompts
    for split, count in counts.items():
        (folder / split).mkdir(parents=True)
        for i in range(count):
            ex_id = f"{i:06d}"
            k += 1
            f0 = rng.uniform(440, 880)
            target = 0.3 * np.sin(2 * math.pi * f0 * t + rng.uniform(0, 2 * math.pi))
            mixture = target + 0.3 * _band_noise(rng, n, 3000, 6000)
            reference = 0.3 * np.sin(2 * math.pi * rng.uniform(440, 880) * t)
            prompt = ["violin", "solo violin", "the strings"][k % 3]
            info = {"id": ex_id, "prompt": prompt, "class": "violin", "interferers": ["noise"]}
            (folder / split / f"{ex_id}.json").write_text(json.dumps(info))
            for kind, wave in (("mixture", mixture), ("target", target), ("reference", reference)):
                sf.write(folder / split / f"{ex_id}_{kind}.wav", wave.astype(np.float32), SR, subtype="FLOAT")
    meta = {"format": "studio-sep.augment/1", "sample_rate": SR, "seed": seed, "duration_s": duration_s,
            "classes": ["violin", "saxophone", "piano"], "interferer_classes": ["noise"], "splits": counts}
    (folder / "dataset.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_dataset(folder)
    return folder


# -- LearnedQuery -------------------------------------------------------------------------
@pytest.mark.parametrize(("prompt", "cls"), [
    ("Tenor Saxophone", "saxophone"), ("grand piano", "piano"), ("VIOLINS", "violin"), ("alto sax", "saxophone"),
    ("the strings", "violin"), ("Cello", "violin"), ("string quartet", "violin"), ("Piano and sax", "piano"),
])
def test_prompt_keywords(prompt, cls):
    assert prompt_class(prompt) == cls
    assert _query().class_index(prompt) == _query().classes.index(cls)


def test_unknown_prompt_names_prompt_and_classes():
    with pytest.raises(InputError) as err:
        _query().condition(["kazoo"], [None])
    text = str(err.value)
    assert "'kazoo'" in text and all(c in text for c in ("violin", "saxophone", "piano"))
    with pytest.raises(InputError, match="electric piano"):
        prompt_class("electric piano")
    assert prompt_class("noise burst", ("violin", "noise")) == "noise"


def test_keyword_table_is_the_instrument_table():
    assert tuple(LearnedQuery().classes) == tuple(CLASS_KEYWORDS) == TARGET_CLASSES
    assert all(CLASS_KEYWORDS[c] == CLASSES[c].keywords for c in TARGET_CLASSES)


def test_different_prompts_give_different_unit_conditions():
    q = _query()
    c = q.condition(["violin", "saxophone", "piano", "fiddle"], [None] * 4)
    assert c.shape == (4, 512)
    torch.testing.assert_close(c.norm(dim=1), torch.ones(4))
    assert torch.cdist(c[:3], c[:3]).triu(1)[torch.triu_indices(3, 3, 1).unbind()].min() > 0.1
    torch.testing.assert_close(c[0], c[3])  # the same class


def test_reference_only_and_both_are_unit_length_and_differ():
    q = _query()
    gen = torch.Generator().manual_seed(0)
    refs = [0.1 * torch.randn(SR * 3, generator=gen), 0.1 * torch.randn(SR * 12, generator=gen)]
    c_ref = q.condition([None, None], refs)
    c_both = q.condition(["violin", "violin"], refs)
    c_text = q.condition(["violin", "violin"], [None, None])
    for c in (c_ref, c_both, c_text):
        torch.testing.assert_close(c.norm(dim=1), torch.ones(2))
    assert not torch.allclose(c_ref, c_both) and not torch.allclose(c_text, c_both)
    # a full-length reference's gain hardly matters (mean-removed log-mel)
    torch.testing.assert_close(q.condition([None], [4 * refs[1]]), c_ref[1:], atol=1e-4, rtol=0)


def test_reference_crop_is_centred_and_deterministic():
    x = torch.arange(10.0)
    assert fit_reference(x, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert fit_reference(x[:2], 6).tolist() == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    q = _query()
    long = torch.randn(SR * 14, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(q.condition([None], [long]), q.condition([None], [long[2 * SR:12 * SR]]))


def test_query_needs_a_prompt_or_a_reference():
    q = _query()
    with pytest.raises(InputError, match="neither a text prompt nor an audio reference"):
        q.condition(["violin", None], [None, None])
    with pytest.raises(InputError, match="1-D float tensor"):
        q.condition([None], [torch.zeros(2, 100)])
    with pytest.raises(InputError, match="2 prompts but 1 references"):
        q.condition(["violin", "piano"], [None])


def test_learned_query_is_a_query_encoder():
    q = _query()
    assert isinstance(q, QueryEncoder) and q.name == "learned" and len(q.sha256) == 64


# -- QueriedClassNet ----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_queried_classnet_checkpoint_round_trip(tmp_path, suffix):
    model = _queried().eval()
    assert MODELS["QueriedClassNet"] is QueriedClassNet
    path = tmp_path / f"m{suffix}"
    sha = save_checkpoint(model, path)
    ck = load_checkpoint(path)
    assert ck.name == "QueriedClassNet" and ck.sha256 == sha and ck.kwargs == model.config
    gen = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(2, 5000, generator=gen)
    ref = 0.1 * torch.randn(SR, generator=gen)
    with torch.no_grad():
        a = model.separate(wave, ["violin", None], [None, ref])
        b = ck.model.separate(wave, ["violin", None], [None, ref])
    assert torch.equal(a.wave_BS, b.wave_BS) and torch.equal(a.mask_BFT, b.mask_BFT)


def test_queried_classnet_decoder_freeze_keeps_query_trainable():
    model = _queried()
    trainable = {id(p) for p in model.freeze_encoder()}
    assert all(id(p) in trainable for p in model.query.parameters())
    assert not any(id(p) in trainable for m in model.net.unet.encoder_modules() for p in m.parameters())
    assert id(model.net.proj.weight) in trainable


# -- training -----------------------------------------------------------------------------
def test_dataset_index_reads_the_format(data):
    index = read_dataset_index(data)
    assert [len(index.splits[s]) for s in ("train", "val", "test")] == [4, 2, 1]
    assert index.classes == ["violin", "saxophone", "piano"]
    assert index.splits["train"][0].id == "000000" and len(read_wave(index.splits["train"][0].mixture)) == 24000


def _fixed_batch_loss(model: QueriedClassNet, data) -> float:
    index = read_dataset_index(data)
    ex = index.splits["train"]
    mix = torch.from_numpy(np.stack([read_wave(e.mixture) for e in ex]))
    tgt = torch.from_numpy(np.stack([read_wave(e.target) for e in ex]))
    model.eval()
    with torch.no_grad():
        return float(magnitude_mae(model.net, mix, tgt, model.condition([e.prompt for e in ex], [None] * len(ex))))


def test_train_reduces_the_loss(data, tmp_path):
    lines, progress = [], []
    result = train(data, tmp_path / "run", steps=12, lr=3e-3, seed=0, validate_every=6, log=lines.append,
                   callback=lambda *a: progress.append(a), **FAST)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        before = QueriedClassNet(net=dict(TINY), query={"classes": ["violin", "saxophone", "piano"]})
    after = load_checkpoint(result.last_path).model
    assert _fixed_batch_loss(after, data) < 0.8 * _fixed_batch_loss(before, data)
    assert result.steps == 12 and result.resumed_from == 0 and len(result.history) == 2
    assert len(lines) == 2 and "SI-SDRi" in lines[0]
    assert progress[0][:3] == ("train", 1, 12) and any(p[0] == "validate" for p in progress)
    hist = json.loads(result.history_path.read_text())["history"]
    assert [h["step"] for h in hist] == [6, 12]
    assert set(hist[0]) >= {"step", "train_loss", "train_mae", "train_sdr", "val_loss", "sdr", "sdri", "si_sdr",
                            "si_sdr_mixture", "si_sdri", "per_class", "worst_class", "worst_sdri", "collapsed"}
    assert set(hist[0]["per_class"]) == {"violin"} and hist[0]["per_class"]["violin"]["n"] == 2
    # best: fewest collapsed classes, then the highest worst-class SDR improvement
    best = max(hist, key=lambda h: (-len(h["collapsed"]), h["worst_sdri"]))
    assert (result.best_step, result.best_worst_sdri, result.best_si_sdr) == (best["step"], best["worst_sdri"],
                                                                              best["si_sdr"])
    assert json.loads(result.history_path.read_text())["best"]["step"] == best["step"] and result.best_path.is_file()
    assert torch.get_num_threads() == 1


def _state(path):
    return load_checkpoint(path).model.state_dict()


def test_decoder_mode_leaves_encoder_identical(data, tmp_path):
    start = tmp_path / "start.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(3)
        save_checkpoint(ClassNet(**TINY), start)
    result = train(data, tmp_path / "run", model=start, mode="decoder", steps=3, **FAST)
    before, after = _state(start), _state(result.last_path)
    enc = [k for k in before if k.startswith(tuple(f"unet.encoder_block{i}." for i in range(1, 5)) + ("unet.conv_block5.",))]
    assert enc and all(torch.equal(before[k], after["net." + k]) for k in enc)
    assert not torch.equal(before["unet.decoder_block1.conv1.weight"], after["net.unet.decoder_block1.conv1.weight"])
    assert not torch.equal(before["proj.weight"], after["net.proj.weight"])


def test_resume_equals_uninterrupted(data, tmp_path):
    """2·N steps in one call equal N + N in two chunks (a resumed run), to the bit on one CPU thread:
    every draw is keyed by (seed, step), the optimiser's state and the batch-norm statistics are saved."""
    whole = train(data, tmp_path / "whole", steps=4, seed=1, validate_every=2, **FAST)
    first = train(data, tmp_path / "split", steps=4, chunk_steps=2, seed=1, validate_every=2, **FAST)
    second = train(data, tmp_path / "split", steps=4, chunk_steps=2, seed=1, validate_every=2, **FAST)
    assert first.steps == 2 and second.resumed_from == 2 and second.steps == 4
    a, b = _state(whole.last_path), _state(second.last_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["step"] for h in second.history] == [2, 4]
    assert second.history == whole.history
    again = train(data, tmp_path / "split", steps=4, seed=1, **FAST)  # nothing left to do
    assert again.steps == 4 and again.resumed_from == 4


def test_changed_settings_are_refused(data, tmp_path):
    train(data, tmp_path / "run", steps=1, seed=0, **FAST)
    with pytest.raises(InputError, match=r"lr 0\.001 → 0\.01.*use a new out_dir"):
        train(data, tmp_path / "run", steps=2, seed=0, lr=1e-2, **FAST)
    with pytest.raises(InputError, match="already holds 1 steps"):
        train(data, tmp_path / "run", steps=0, seed=0, **FAST)


def test_mask_bce_settings_are_recorded_and_old_runs_resume_without_it(data, tmp_path):
    from studio_sep.classnet.train_loss import MASK_BCE_WEIGHT

    result = train(data, tmp_path / "run", steps=2, validate_every=2, **FAST)
    recorded = json.loads(result.history_path.read_text())
    assert recorded["settings"]["mask_bce_weight"] == MASK_BCE_WEIGHT
    assert recorded["settings"]["mask_bce_bins"] == "magnitude" and recorded["history"][0]["train_bce"] > 0
    off = train(data, tmp_path / "off", steps=2, validate_every=2, mask_bce_weight=0, **FAST)
    assert math.isnan(json.loads(off.history_path.read_text())["history"][0]["train_bce"] or math.nan)
    # a state saved before the option existed (no mask_bce_* settings) resumes as weight 0, not as the default
    state_path = tmp_path / "off" / "train_state.pt"
    state = torch.load(state_path, weights_only=True)
    for k in ("mask_bce_weight", "mask_bce_bins"):
        del state["settings"][k]
    torch.save(state, state_path)
    assert train(data, tmp_path / "off", steps=3, mask_bce_weight=0, **FAST).resumed_from == 2
    with pytest.raises(InputError, match=r"mask_bce_weight 0\.0 → 0\.3"):
        train(data, tmp_path / "off", steps=4, **FAST)
    with pytest.raises(InputError, match="mask_bce_bins"):
        train(data, tmp_path / "b", steps=1, mask_bce_bins="power", **FAST)
    with pytest.raises(InputError, match="mask_bce_weight"):
        train(data, tmp_path / "b", steps=1, mask_bce_weight=-1.0, **FAST)


class _FakeClap:
    """A fixed random projection of prompt hashes / reference spectra, as a stand-in CLAP."""

    name = "clap"
    sha256 = None

    def condition(self, prompts, references):
        rows = []
        for p, r in zip(prompts, references):
            z = torch.zeros(32)
            if p is not None:
                z += torch.randn(32, generator=torch.Generator().manual_seed(len(p)))
            if r is not None:
                z += torch.fft.rfft(fit_reference(r, 640)).abs()[:32]
            rows.append(torch.nn.functional.normalize(z, dim=0))
        return torch.stack(rows)


def test_train_with_a_clap_encoder_gives_a_plain_classnet(data, tmp_path):
    result = train(data, tmp_path / "run", query="clap", query_encoder=_FakeClap(), steps=2, **FAST)
    ck = load_checkpoint(result.last_path)
    assert ck.name == "ClassNet" and ck.kwargs["cond_dim"] == 32


def test_bad_settings(data, tmp_path):
    with pytest.raises(InputError, match="query_encoder"):
        train(data, tmp_path / "a", query="clap", steps=1, **FAST)
    with pytest.raises(InputError, match="mode"):
        train(data, tmp_path / "a", mode="encoder", steps=1, **FAST)
    with pytest.raises(InputError, match="dataset folder not found"):
        train(tmp_path / "nothing", tmp_path / "a", steps=1, **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no dataset.json"):
        train(tmp_path / "empty", tmp_path / "a", steps=1, **FAST)


def test_timbre_eq_changes_only_the_target_and_smoothly():
    """The mixture's other sources (mixture − target) are kept; the target's spectrum is scaled
    by a smooth curve within the bound (tilt ≤ 1.9·max at 20 Hz, bell ≤ max); the same
    generator gives the same EQ, 0 dB gives the target back."""
    from studio_sep.classnet.train_data import timbre_eq

    rng = np.random.default_rng(0)
    target, others = rng.standard_normal((2, 16000)).astype(np.float32)
    mix = target + others
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    new_mix, new_target = timbre_eq(mix, target, 6.0, gen())
    np.testing.assert_allclose(new_mix - new_target, others, atol=1e-5)
    ratio_db = 20 * np.log10(np.abs(np.fft.rfft(new_target)) / np.abs(np.fft.rfft(target)))
    assert np.abs(ratio_db).max() <= 3 * 6.0 and np.abs(ratio_db).max() > 1.0
    assert np.abs(np.diff(ratio_db)).max() < 0.05  # smooth: at most a few hundredths of a dB per 1 Hz bin
    np.testing.assert_array_equal(timbre_eq(mix, target, 6.0, gen())[1], new_target)
    assert not np.allclose(timbre_eq(mix, target, 6.0, torch.Generator().manual_seed(6))[1], new_target)
    np.testing.assert_allclose(timbre_eq(mix, target, 0.0, gen())[1], target, atol=1e-6)


def test_timbre_eq_is_a_training_setting(data, tmp_path):
    """Recorded, part of what a resumed run must match, checked; a run without it (or saved
    before it existed) trains on the crops as they are."""
    plain = train(data, tmp_path / "plain", steps=2, validate_every=2, seed=1, **FAST)
    eq = train(data, tmp_path / "eq", steps=2, validate_every=2, seed=1, timbre_db=6.0, **FAST)
    assert json.loads(eq.history_path.read_text())["settings"]["timbre_db"] == 6.0
    assert plain.history[0]["train_loss"] != eq.history[0]["train_loss"]  # the crops were equalised
    with pytest.raises(InputError, match=r"timbre_db 6\.0 → 0\.0"):
        train(data, tmp_path / "eq", steps=3, seed=1, **FAST)
    with pytest.raises(InputError, match="timbre_db"):
        train(data, tmp_path / "b", steps=1, timbre_db=-3.0, **FAST)
