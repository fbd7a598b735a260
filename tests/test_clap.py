"""LAION-CLAP queries (studio_sep.classnet.clap): file resolution, guards, the real model offline.

The error-message tests need neither laion-clap nor transformers. The slow test builds
the real laion-clap HTSAT-base + RoBERTa model with random weights, saves it as a
checkpoint in the layout of the released ``.pt`` files and loads it back through
:class:`ClapQuery`, with tokenizer files generated here (no network, no downloads).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

from studio_sep.classnet import clap
from studio_sep.util.errors import InputError

HAVE_LAION_CLAP = importlib.util.find_spec("laion_clap") is not None and \
    importlib.util.find_spec("transformers") is not None

ROBERTA_BASE_CONFIG = {
    "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "roberta", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "type_vocab_size": 1, "vocab_size": 50265,
}


def byte_symbols() -> list[str]:
    """GPT-2 / RoBERTa's byte-to-unicode table: one printable symbol per byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_roberta_files(folder: Path, vocab_size: int = clap.ROBERTA_VOCAB_SIZE) -> Path:
    """A roberta-base-shaped tokenizer folder: byte-level BPE vocab, a few merges, config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = [("Ġ", "p"), ("Ġp", "i"), ("Ġpi", "a"), ("Ġpia", "n"), ("Ġpian", "o"), ("Ġ", "d"), ("Ġd", "r")]
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *byte_symbols(), *("".join(m) for m in merges)]
    tokens += [f"<filler{i}>" for i in range(vocab_size - len(tokens) - 1)] + ["<mask>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(ROBERTA_BASE_CONFIG), encoding="utf-8")
    return folder


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(clap.CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(clap.ROBERTA_ENV, raising=False)


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Two checkpoints and two RoBERTa folders, to tell the settings apart."""
    out = {}
    for tag in ("arg", "env", "cfg"):
        ckpt = tmp_path / f"{tag}.pt"
        ckpt.write_bytes(b"not read by the resolver")
        out[f"{tag}_ckpt"] = ckpt
        folder = tmp_path / f"roberta_{tag}"
        folder.mkdir()
        for name in clap.ROBERTA_FILES:
            (folder / name).write_text("{}")
        out[f"{tag}_roberta"] = folder
    return out


def write_config(path: Path, **keys: str) -> Path:
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in keys.items()), encoding="utf-8")
    return path


# --- resolution and error messages (no laion-clap needed) -----------------------------------


def test_missing_checkpoint_names_file_option_env_and_config_key(tmp_path, no_env, files):
    config = tmp_path / "clap.toml"
    missing = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    with pytest.raises(InputError) as info:
        clap.resolve_clap_files(missing, files["arg_roberta"], config_path=config)
    message = str(info.value)
    assert "\n" not in message
    for part in (str(missing), "--clap-checkpoint", "STUDIO_SEP_CLAP_CHECKPOINT", 'checkpoint = "PATH"',
                 str(config), "from argument"):
        assert part in message


def test_no_checkpoint_anywhere_says_how_to_supply_it(tmp_path, no_env, files):
    with pytest.raises(InputError, match="no CLAP checkpoint.*--clap-checkpoint.*STUDIO_SEP_CLAP_CHECKPOINT"):
        clap.resolve_clap_files(None, files["arg_roberta"], config_path=tmp_path / "absent.toml")


def test_missing_tokenizer_folder_and_file(tmp_path, no_env, files):
    config = tmp_path / "clap.toml"
    with pytest.raises(InputError) as info:
        clap.resolve_clap_files(files["arg_ckpt"], tmp_path / "nowhere", config_path=config)
    message = str(info.value)
    for part in (str(tmp_path / "nowhere"), "--roberta-dir", "STUDIO_SEP_ROBERTA_DIR", 'roberta = "PATH"'):
        assert part in message
    (files["arg_roberta"] / "merges.txt").unlink()
    with pytest.raises(InputError,
                       match=r"merges\.txt.*RoBERTa tokenizer file missing.*STUDIO_SEP_ROBERTA_DIR"):
        clap.resolve_clap_files(files["arg_ckpt"], files["arg_roberta"], config_path=config)


def test_hugging_face_cache_folder_resolves_to_its_snapshot(tmp_path, no_env, files):
    hub = tmp_path / "hub"
    repo = hub / "models--roberta-base"
    snapshot = repo / "snapshots" / "e2da8e2f811d1448a5b465c236feacd80ffbac7b"
    snapshot.mkdir(parents=True)
    for name in clap.ROBERTA_FILES:
        (snapshot / name).write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    for given in (hub, repo, snapshot):
        got = clap.resolve_clap_files(files["arg_ckpt"], given, config_path=tmp_path / "x.toml")
        assert got.roberta_dir == snapshot


def test_resolution_order_argument_env_config(tmp_path, monkeypatch, files):
    config = write_config(tmp_path / "clap.toml", checkpoint="cfg.pt", roberta="roberta_cfg")
    monkeypatch.delenv(clap.CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(clap.ROBERTA_ENV, raising=False)
    got = clap.resolve_clap_files(config_path=config)
    assert (got.checkpoint, got.roberta_dir) == (files["cfg_ckpt"], files["cfg_roberta"])
    assert got.checkpoint_source == f"config {config}"

    monkeypatch.setenv(clap.CHECKPOINT_ENV, str(files["env_ckpt"]))
    monkeypatch.setenv(clap.ROBERTA_ENV, str(files["env_roberta"]))
    got = clap.resolve_clap_files(config_path=config)
    assert (got.checkpoint, got.roberta_dir) == (files["env_ckpt"], files["env_roberta"])
    assert (got.checkpoint_source, got.roberta_source) == (clap.CHECKPOINT_ENV, clap.ROBERTA_ENV)

    got = clap.resolve_clap_files(files["arg_ckpt"], None, config_path=config)
    assert (got.checkpoint, got.roberta_dir) == (files["arg_ckpt"], files["env_roberta"])
    assert got.checkpoint_source == "argument"


def test_config_rejects_unknown_keys(tmp_path, no_env):
    config = write_config(tmp_path / "clap.toml", checkpoint="a.pt", roberta_dir="b")
    with pytest.raises(InputError, match="roberta_dir: unknown key"):
        clap.resolve_clap_files(config_path=config)


def test_tokenizer_guard_refuses_a_fallback_vocabulary(tmp_path):
    folder = tmp_path / "fallback"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}))
    with pytest.raises(InputError) as info:
        clap.load_roberta_tokenizer(folder)
    message = str(info.value)
    assert "\n" not in message
    assert str(folder / "vocab.json") in message and "5 tokens" in message and "50265" in message


def test_without_laion_clap_the_error_says_how_to_install(tmp_path, monkeypatch, no_env, files):
    monkeypatch.setitem(sys.modules, "laion_clap", None)  # what find_spec reports for a missing package
    monkeypatch.delitem(sys.modules, clap._CLAP_MODULE_NAME, raising=False)
    pattern = r"(laion_clap|transformers) is not installed.*pip install 'studio-sep\[clap\]'"
    with pytest.raises(InputError, match=pattern):
        clap.ClapQuery(files["arg_ckpt"], files["arg_roberta"], config_path=tmp_path / "absent.toml")


def test_prepare_reference_crops_the_centre_and_resamples_to_48k():
    t_S = torch.arange(30 * 16000, dtype=torch.float64) / 16000
    tone_S = 0.5 * torch.sin(2 * math.pi * 440 * t_S)
    ramp_S = torch.linspace(-0.9, 0.9, 30 * 16000)
    y_S = clap.prepare_reference(ramp_S)
    assert y_S.shape == (clap.CLAP_CLIP_SAMPLES,) and y_S.dtype == torch.float32
    # centre 10 s of a 30 s ramp: from -0.3 to 0.3 (away from the resampler's edges)
    assert y_S[1000].item() == pytest.approx(-0.3, abs=0.01)
    assert y_S[-1000].item() == pytest.approx(0.3, abs=0.01)
    # a 440 Hz tone stays at 440 Hz at 48 kHz: its spectrum peaks at bin 440 × 10 s
    spectrum = torch.fft.rfft(clap.prepare_reference(tone_S.float()).double()).abs()
    assert int(spectrum.argmax()) == 4400
    assert torch.equal(clap.prepare_reference(tone_S.float()), clap.prepare_reference(tone_S.float()))


def test_prepare_reference_repeats_short_clips_then_pads_with_zeros():
    x_S = torch.full((3 * 16000,), 0.25)  # 3 s → 144000 samples at 48 kHz: 3 whole repeats + 48000 zeros
    y_S = clap.prepare_reference(x_S)
    assert y_S.shape == (clap.CLAP_CLIP_SAMPLES,)
    assert torch.all(y_S[-48000:] == 0)
    assert y_S[200_000].item() == pytest.approx(0.25, abs=1e-4)


# --- the real model, offline ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside laion-clap's HTSAT
@pytest.mark.skipif(not HAVE_LAION_CLAP, reason="laion-clap not installed (pip install 'studio-sep[clap]')")
def test_real_laion_clap_offline_with_random_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(clap.CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(clap.ROBERTA_ENV, raising=False)
    start = time.perf_counter()
    roberta = write_roberta_files(tmp_path / "roberta-base")
    torch.manual_seed(0)
    source = clap.build_clap_model(roberta)
    assert sum(p.numel() for p in source.parameters()) > 100_000_000
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    # the released files come from a transformers that stored this buffer; recent ones do not
    state.setdefault(f"module.{clap._POSITION_IDS}", torch.arange(514)[None])
    checkpoint = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    torch.save({"epoch": 15, "name": "random", "state_dict": state}, checkpoint)
    del source, state

    query = clap.ClapQuery(checkpoint, roberta, config_path=tmp_path / "absent.toml")
    assert query.name == "clap" and query.sha256 == clap.file_sha256(checkpoint) and len(query.sha256) == 64

    seen = []
    hook = query.model.audio_branch.register_forward_pre_hook(lambda module, args: seen.append(
        tuple(args[0]["waveform"].shape)))
    torch.manual_seed(1)
    short_S = 0.1 * torch.randn(3 * 16000)
    t_S = torch.arange(25 * 16000) / 16000
    # a 25 s chirp (100 Hz → 6 kHz) fading in: every 10 s window holds different sound
    long_S = (t_S / 25) * torch.sin(2 * math.pi * (100 + 118 * t_S) * t_S)
    z_BC = query.condition(["drums", None, "piano", "piano"], [short_S, long_S, long_S.clone(), None])
    assert z_BC.shape == (4, 512)
    assert torch.allclose(z_BC.norm(dim=-1), torch.ones(4), atol=1e-5)
    z_long = query.embed_audio([long_S])
    hook.remove()
    # 16 kHz in, 48 kHz × 10 s to the audio branch: the three references in one batch, then one
    assert seen == [(3, clap.CLAP_CLIP_SAMPLES), (1, clap.CLAP_CLIP_SAMPLES)]

    z_text = query.embed_text(["piano", "drums", "piano"])
    assert not torch.allclose(z_text[0], z_text[1], atol=1e-3)
    assert torch.equal(z_text[0], z_text[2])
    # the long reference is cropped the same way each time (CLAP's own crop is random)
    assert torch.allclose(z_long[0], z_BC[1], atol=1e-5)
    assert not torch.allclose(z_long[0], query.embed_audio([long_S[: 12 * 16000]])[0], atol=1e-3)
    # eq. 17 per item: text only, audio only, both (audio of the same reference)
    assert torch.allclose(z_BC[3], z_text[0], atol=1e-5)
    assert torch.allclose(z_BC[2], torch.nn.functional.normalize(z_BC[1] + z_text[0], dim=0), atol=1e-5)
    assert not torch.allclose(z_BC[0], z_BC[2], atol=1e-3)
    print(f"real laion-clap offline test: {time.perf_counter() - start:.1f} s")
