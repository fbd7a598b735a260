"""CLASS-net network, long-input inference, decoder-only training and checkpoints.

Tiny configurations (width 0.125, depth 4: 0.65 M parameters) on fractions of a second
of noise keep every test to a few seconds on one CPU thread.
"""

from __future__ import annotations

import argparse
import math

import pytest

torch = pytest.importorskip("torch")

from studio_sep.classnet import (
    ClassNet,
    average_checkpoints,
    chunk_weights,
    freeze_encoder,
    load_checkpoint,
    load_foreign_state,
    query_condition,
    save_checkpoint,
    separate_long,
    weights_sha256,
)
from studio_sep.classnet.model import level_channels
from studio_sep.util.errors import InputError

TINY = {"width": 0.125, "depth": 4}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _model(seed: int = 0, **kwargs) -> ClassNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ClassNet(**{**TINY, **kwargs})


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _wave(n_samples: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(batch, n_samples, generator=_generator(seed))


def _cond(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return query_condition(torch.randn(batch, 512, generator=_generator(seed)))


# -- network ------------------------------------------------------------------------------
@pytest.mark.parametrize("n_samples", [1, 300, 1023, 4097, 7919])
def test_output_shapes_for_odd_lengths(n_samples) -> None:
    model = _model().eval()
    with torch.no_grad():
        out = model(_wave(n_samples), _cond())
    assert out.wave_BS.shape == (2, n_samples)
    n_frames = max(n_samples, 1024) // 256 + 1
    assert out.mask_BFT.shape == (2, 513, n_frames)
    assert torch.isfinite(out.wave_BS).all()


def test_mask_is_in_unit_interval_and_shapes_the_estimate() -> None:
    model = _model().train()  # batch statistics: the least tame regime
    wave = _wave(5000)
    out = model(wave, _cond())
    mask = out.mask_BFT.detach()
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    # the estimate is the masked mixture, so (Hann at hop n_fft/4 is a tight frame) it has less energy
    assert float(out.wave_BS.detach().pow(2).sum()) < float(wave.pow(2).sum())
    # the two bins LASS-net leaves out of the network get logit 0
    assert torch.equal(out.mask_BFT[:, -2:, :], torch.full_like(out.mask_BFT[:, -2:, :], 0.5))


def test_different_queries_give_different_outputs() -> None:
    model = _model().eval()
    wave = _wave(4000, batch=1).expand(2, -1)
    cond = _cond(batch=2)
    with torch.no_grad():
        out = model(wave, cond)
        again = model(wave, cond)
    assert torch.equal(out.wave_BS, again.wave_BS)  # deterministic
    diff = (out.mask_BFT[0] - out.mask_BFT[1]).abs().max()
    assert float(diff) > 1e-3
    assert not torch.allclose(out.wave_BS[0], out.wave_BS[1])


def test_batch_items_are_independent_in_eval_mode() -> None:
    model = _model().eval()
    wave, cond = _wave(3000), _cond()
    with torch.no_grad():
        both = model(wave, cond).wave_BS
        first = model(wave[:1], cond[:1]).wave_BS
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-6)


def test_full_width_has_lass_channels_and_about_52_million_parameters() -> None:
    assert level_channels(1.0, 6) == (32, 64, 128, 256, 384, 384)
    assert level_channels(0.125, 4) == (4, 8, 16, 32)
    with torch.device("meta"):  # no memory, no init work
        full = ClassNet()
    n_unet = sum(p.numel() for p in full.unet.parameters())
    assert n_unet == 52_228_323
    assert sum(p.numel() for p in full.proj.parameters()) == 512 * 256 + 256


def test_query_condition_is_the_normalised_mean_of_unit_embeddings() -> None:
    a = torch.tensor([[3.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0, 0.5]])
    z = query_condition(a, t)
    torch.testing.assert_close(z, torch.tensor([[1.0, 0.0, 1.0]]) / math.sqrt(2))
    torch.testing.assert_close(query_condition(z_text=t), torch.tensor([[0.0, 0.0, 1.0]]))
    with pytest.raises(InputError, match="neither"):
        query_condition()


def test_bad_inputs_fail_with_one_line_messages() -> None:
    model = _model()
    with pytest.raises(InputError, match=r"wave.*\(batch, samples\).*wave\[None\]"):
        model(torch.zeros(100), _cond(1))
    with pytest.raises(InputError, match=r"cond: expected shape \(2, 512\)"):
        model(_wave(100), torch.zeros(2, 256))
    with pytest.raises(InputError, match="depth"):
        ClassNet(depth=11)
    with pytest.raises(InputError, match="n_fft"):
        ClassNet(n_fft=1000)


# -- long inputs --------------------------------------------------------------------------
@pytest.mark.parametrize("n_samples, chunk, overlap", [(10, 20, 5), (100, 20, 5), (101, 20, 10), (57, 20, 0),
                                                       (21, 20, 3)])
def test_chunk_weights_sum_to_one_and_cover_the_input(n_samples, chunk, overlap) -> None:
    total = torch.zeros(n_samples, dtype=torch.float64)
    plan = chunk_weights(n_samples, chunk, overlap)
    for start, w in plan:
        assert w.numel() <= chunk and start + w.numel() <= n_samples
        assert float(w.min()) >= 0.0
        total[start:start + w.numel()] += w
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-15)
    assert plan[-1][0] + plan[-1][1].numel() == n_samples


def test_separate_long_matches_one_pass_for_short_inputs_and_is_deterministic() -> None:
    model = _model().train()
    wave, cond = _wave(3001), _cond()
    out = separate_long(model, wave, cond, chunk_s=1.0, overlap_s=0.1)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        assert torch.equal(out, model(wave, cond).wave_BS)


def test_separate_long_on_many_chunks() -> None:
    model = _model().eval()
    wave, cond = _wave(9001), _cond()
    calls = []
    out = separate_long(model, wave, cond, chunk_s=0.25, overlap_s=0.05, callback=lambda k, n: calls.append((k, n)))
    again = separate_long(model, wave, cond, chunk_s=0.25, overlap_s=0.05)
    assert out.shape == wave.shape and torch.equal(out, again)
    assert calls == [(k, 3) for k in range(1, 4)]
    # away from the seams each chunk is the model's own output on that chunk
    with torch.no_grad():
        first = model(wave[:, :4000], cond).wave_BS
    torch.testing.assert_close(out[:, :3200], first[:, :3200])
    with pytest.raises(InputError, match="overlap_s"):
        separate_long(model, wave, cond, chunk_s=0.25, overlap_s=0.2)


# -- decoder-only training ----------------------------------------------------------------
def test_decoder_only_training_leaves_the_encoder_unchanged() -> None:
    model = _model()
    trainable = freeze_encoder(model)
    model.train()
    encoder_keys = [k for k in model.state_dict() if k.startswith(("unet.encoder_block", "unet.conv_block5."))]
    assert encoder_keys
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    wave, cond, target = _wave(3000), _cond(), _wave(3000, seed=5)
    for _ in range(2):
        opt.zero_grad()
        X = model.spectrogram(wave)
        est = model.predict_mask(X.abs(), cond) * X.abs()
        loss = (est - model.spectrogram(target).abs()).abs().mean()  # MAE on magnitudes, eq. 18
        loss.backward()
        opt.step()
    after = model.state_dict()
    for k in encoder_keys:  # parameters and batch-norm statistics alike
        assert torch.equal(before[k], after[k]), k
    changed = [k for k in after if not torch.equal(before[k], after[k])]
    assert any(k.startswith("unet.decoder_block") for k in changed)
    assert "proj.weight" in changed and "unet.after_conv2.weight" in changed
    assert all(not k.startswith(("unet.encoder_block", "unet.conv_block5.")) for k in changed)


# -- checkpoints --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_own_checkpoint_round_trip(tmp_path, suffix) -> None:
    model = _model(seed=3, hop=128)
    model.train()
    model(_wave(2000), _cond())  # move the batch-norm statistics off their initial values
    path = tmp_path / f"classnet{suffix}"
    sha = save_checkpoint(model, path)
    assert sha == weights_sha256(model.state_dict())
    loaded = load_checkpoint(path)
    assert loaded.name == "ClassNet" and loaded.sha256 == sha
    assert loaded.kwargs == {**model.config}
    assert not loaded.model.training
    restored = loaded.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, restored[k]), k
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(_wave(1500), _cond()).wave_BS, loaded.model(_wave(1500), _cond()).wave_BS)


def test_both_containers_carry_the_same_checksum(tmp_path) -> None:
    model = _model()
    assert save_checkpoint(model, tmp_path / "a.safetensors") == save_checkpoint(model, tmp_path / "a.pt")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_tampered_checkpoint_is_refused(tmp_path, suffix) -> None:
    path = tmp_path / f"net{suffix}"
    save_checkpoint(_model(), path)
    if suffix == ".pt":
        obj = torch.load(path, weights_only=True)
        obj["state_dict"]["unet.after_conv2.bias"] += 1.0
        torch.save(obj, path)
    else:
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF  # flip bits in the last tensor's bytes
        path.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "checksum mismatch" in message and "fix:" in message


def test_foreign_and_broken_files_are_refused_clearly(tmp_path) -> None:
    with pytest.raises(InputError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.pt"
    torch.save(_model().state_dict(), plain)
    with pytest.raises(InputError, match="not a studio-sep checkpoint.*load_foreign_state"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": _model().state_dict(), "args": argparse.Namespace(lr=1e-4)}, pickled)
    with pytest.raises(InputError, match="pickled Python objects.*weights_only=False"):
        load_foreign_state(_model(), pickled, layout="lass")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="unreadable"):
        load_checkpoint(junk)
    junk_named = tmp_path / "junk.safetensors"  # torch.load hands a *.safetensors name to safetensors
    junk_named.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="unreadable"):
        load_checkpoint(junk_named)
    with pytest.raises(InputError, match="suffix"):
        save_checkpoint(_model(), tmp_path / "net.bin")


def test_averaged_checkpoints_hold_the_mean_of_their_weights(tmp_path) -> None:
    models = [_model(seed=s) for s in (1, 2, 3)]
    for m in models:
        m.train()
        m(_wave(2000), _cond())  # batch-norm statistics and counters off their initial values
    models[2](_wave(2000), _cond())  # the last one's counters differ: they are taken as they are
    paths = [tmp_path / f"m{k}.safetensors" for k in range(3)]
    for m, path in zip(models, paths, strict=True):
        save_checkpoint(m, path)
    out = tmp_path / "mean.pt"
    sha = average_checkpoints(paths, out)
    mean = load_checkpoint(out)
    assert mean.sha256 == sha and mean.kwargs == models[0].config
    states = [m.state_dict() for m in models]
    for k, v in mean.model.state_dict().items():
        if v.is_floating_point():
            expected = sum(st[k].double() for st in states) / 3
            assert v.dtype == states[0][k].dtype
            torch.testing.assert_close(v.double(), expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(v, states[2][k]), k


def test_averaging_refuses_another_configuration_or_a_single_file(tmp_path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_checkpoint(_model(), a)
    save_checkpoint(_model(depth=TINY["depth"] - 1), b)
    with pytest.raises(InputError) as info:
        average_checkpoints([a, b], tmp_path / "out.safetensors")
    message = str(info.value)
    assert "\n" not in message and str(b) in message and "one training run" in message
    with pytest.raises(InputError, match="1 checkpoint.*two or more"):
        average_checkpoints([a], tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def _lass_file(source: ClassNet) -> dict:
    """A LASSNet.pt look-alike: {'model': DataParallel(LASSNet).state_dict()}, BERT included."""
    state = {f"module.UNet.{k}": v.clone() for k, v in source.unet.state_dict().items()}
    state["module.text_embedder.bert.embeddings.word_embeddings.weight"] = torch.randn(30, 256)
    state["module.text_embedder.bert.pooler.dense.bias"] = torch.randn(256)
    return {"model": state}


def _authors_file(source: ClassNet, wrapped: bool) -> dict:
    """The CLASS-net authors' LASS_clap: best.pth (wrapped) or final.pth (bare state dict)."""
    state = {f"UNet.{k}": v.clone() for k, v in source.unet.state_dict().items()}
    state.update({f"proj.{k}": v.clone() for k, v in source.proj.state_dict().items()})
    state["clap_conditioner.clap.model.logit_scale_a"] = torch.tensor(1.0)
    state["clap_conditioner.clap.model.text_projection.0.weight"] = torch.randn(512, 768)
    if not wrapped:
        return state
    return {"epoch": 4, "model_state_dict": state, "best_val_loss": 0.25,
            "optimizer_state_dict": {"state": {0: {"step": torch.tensor(3.0)}},
                                     "param_groups": [{"lr": 1e-4, "params": [0]}]}}


@pytest.mark.parametrize("container", ["file", "mapping"])
def test_lass_layout_loads_the_resunet(tmp_path, container) -> None:
    source = _model(seed=7)
    obj = _lass_file(source)
    if container == "file":
        torch.save(obj, tmp_path / "LASSNet.pt")
        obj = tmp_path / "LASSNet.pt"
    target = _model(seed=8)
    proj_before = target.proj.weight.clone()
    report = load_foreign_state(target, obj, layout="lass")
    unet_keys = [f"unet.{k}" for k in source.unet.state_dict()]
    assert sorted(report.loaded) == sorted(unet_keys)
    assert set(report.skipped) == {"module.text_embedder.bert.embeddings.word_embeddings.weight",
                                   "module.text_embedder.bert.pooler.dense.bias"}
    assert set(report.missing) == {"proj.weight", "proj.bias"}
    assert torch.equal(target.proj.weight, proj_before)
    restored = target.unet.state_dict()
    for k, v in source.unet.state_dict().items():
        assert torch.equal(restored[k], v), k


@pytest.mark.parametrize("wrapped", [True, False])
def test_authors_layout_loads_the_whole_network(tmp_path, wrapped) -> None:
    source = _model(seed=7).eval()
    path = tmp_path / ("best.pth" if wrapped else "final.pth")
    torch.save(_authors_file(source, wrapped), path)
    target = _model(seed=8)
    report = load_foreign_state(target, path, layout="authors")
    assert not report.missing
    assert set(report.skipped) == {"clap_conditioner.clap.model.logit_scale_a",
                                   "clap_conditioner.clap.model.text_projection.0.weight"}
    target.eval()
    with torch.no_grad():
        assert torch.equal(target(_wave(2000), _cond()).wave_BS, source(_wave(2000), _cond()).wave_BS)


def test_foreign_safetensors_and_mismatched_sizes(tmp_path) -> None:
    from safetensors.torch import save_file

    source = _model(seed=7)
    path = tmp_path / "final.safetensors"
    save_file(_authors_file(source, wrapped=False), str(path))
    assert not load_foreign_state(_model(seed=8), path, layout="authors").missing
    # a wider or deeper model: what does not fit is skipped, with the reason
    wider = _model(width=0.25)
    report = load_foreign_state(wider, _authors_file(source, wrapped=False), layout="authors")
    assert "proj.weight" in report.loaded
    assert any("different width" in why for why in report.skipped.values())
    deeper = _model(depth=5)
    report = load_foreign_state(deeper, _lass_file(source), layout="lass")
    assert "module.UNet.conv_block5.bn1.weight" in report.skipped
    assert "different depth" in report.skipped["module.UNet.conv_block5.bn1.weight"]
    assert "unet.encoder_block5.conv_block1.conv1.weight" in report.missing
    # nothing fits (an AudioSep-style ResUNet30 under ss_model.): refuse rather than keep a random network
    audiosep = {"state_dict": {"ss_model.base.encoder_block1.conv_block1.conv1.weight": torch.zeros(32, 32, 3, 3),
                               "query_encoder.model.logit_scale_a": torch.tensor(1.0)}}
    with pytest.raises(InputError, match="no key fits"):
        load_foreign_state(_model(), audiosep, layout="lass")
    with pytest.raises(InputError, match="layout"):
        load_foreign_state(_model(), {}, layout="audiosep")
