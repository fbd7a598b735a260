"""AudioSep's separator (studio_sep.classnet.audiosep, .audiosep_checkpoint) and its use as the classnet prior.

No AudioSep weights can be downloaded here: every checkpoint is made by the test, from a
randomly initialised :class:`AudioSepNet`, in the layout of the released
``audiosep_base_4M_steps.ckpt`` (a Lightning dict: ``state_dict`` with ``ss_model.*`` and
``query_encoder.model.*``, plus the trainer's entries). The fast tests use AudioSep's
architecture with every encoder width divided by 8 (4 … 48 channels instead of 32 … 384;
the STFT and the 1025-bin batch norm stay full size); one test builds the full-size
network and checks its tensors against the key list in ``tests/data/audiosep_resunet30_keys.json``.

That list was made by instantiating AudioSep's own ``models/resunet.py``
``ResUNet30(input_channels=1, output_channels=1, condition_size=512)`` (Audio-AGI/AudioSep at
commit 72777de, the arguments config/audiosep_base.yaml gives, torchlibrosa 0.1.0) and
writing ``{key: shape}`` of its ``state_dict()`` and its parameter count; the same
session checked, outside the test suite, that this module's forward pass matches that
code's to 1.3e-7 on the same weights (2 s of noise, full size).

The query encoder stored here holds only the CLAP tensors the loader compares with the
CLAP file (the projections and logit scales); the released file holds all of CLAP.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from studio_sep.classnet import separate_long
from studio_sep.classnet.audiosep import AUDIOSEP_CHANNELS, AudioSepNet, audiosep_channels, film_layers
from studio_sep.classnet.audiosep_checkpoint import (
    FRONT_END_KEYS,
    audiosep_state_dict,
    check_clap_file,
    front_end_tensors,
    load_audiosep,
)
from studio_sep.cli import app
from studio_sep.priors.classnet import load_classnet, network_spectra
from studio_sep.util.atomic import file_sha256
from studio_sep.util.errors import InputError
from tests.test_clap import HAVE_LAION_CLAP, write_roberta_files

runner = __import__("typer.testing", fromlist=["CliRunner"]).CliRunner()
KEYS_FILE = Path(__file__).parent / "data" / "audiosep_resunet30_keys.json"
SMALL = audiosep_channels(0.125)  # (4, 8, 16, 32, 48, 48)


def random_audiosep(channels=SMALL, seed: int = 0) -> AudioSepNet:
    """A random AudioSepNet whose batch norms and biases are not at their initial values either."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AudioSepNet(channels=channels)
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if name.endswith("running_var"):
                    t.uniform_(0.5, 2.0)
                elif name.endswith("running_mean"):
                    t.normal_(0.0, 0.3)
                elif name.endswith("num_batches_tracked"):
                    t.fill_(4_000_000)
                elif name.endswith(".bias") or ".bn" in name:
                    t.normal_(0.0, 0.1)
    return model.eval()


def clap_fingerprint_tensors(seed: int) -> dict[str, torch.Tensor]:
    """LAION-CLAP's projection layers and logit scales, with their real names and shapes."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"text_projection.0.weight": (512, 768), "text_projection.0.bias": (512,),
              "text_projection.2.weight": (512, 512), "text_projection.2.bias": (512,),
              "audio_projection.0.weight": (512, 768), "audio_projection.0.bias": (512,),
              "audio_projection.2.weight": (512, 512), "audio_projection.2.bias": (512,),
              "logit_scale_a": (), "logit_scale_t": ()}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def lightning_checkpoint(model: AudioSepNet, clap_state: dict[str, torch.Tensor]) -> dict:
    """The released checkpoint's shape: Lightning's entries around ss_model.* and query_encoder.model.*."""
    state = {**audiosep_state_dict(model), **{f"query_encoder.model.{k}": v for k, v in clap_state.items()}}
    return {"epoch": 399, "global_step": 4_000_000, "pytorch-lightning_version": "2.0.1", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 399}}}},
            "callbacks": {"ModelCheckpoint": {"best_model_score": None, "dirpath": "checkpoints"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "amsgrad": True, "params": [0]}]}],
            "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 4_000_000, "lr_lambdas": [{}]}]}


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audiosep") / "audiosep_base_4M_steps.ckpt"
    torch.save(lightning_checkpoint(random_audiosep(), clap_fingerprint_tensors(0)), path)
    return path


def test_full_size_network_has_audiosep_published_keys_and_parameter_count() -> None:
    published = json.loads(KEYS_FILE.read_text())
    with torch.random.fork_rng():
        model = AudioSepNet()
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    front = {k: list(v.shape) for k, v in front_end_tensors().items()}
    assert set(front) == set(FRONT_END_KEYS)
    assert {**own, **front} == published["keys"]  # every name and shape, 332 tensors
    assert len(published["keys"]) == 332
    n_params = sum(p.numel() for p in model.parameters())
    # AudioSep's module counts its STFT / ISTFT convolutions' fixed DFT weights as parameters
    front_params = sum(v.numel() for k, v in front_end_tensors().items() if k != "base.istft.ola_window")
    assert (n_params, front_params) == (26_447_941, 12_587_008)
    assert n_params + front_params == published["parameters"] == 39_034_949
    assert sum(p.numel() for p in model.film.parameters()) == 5_056_128
    assert model.config == {"channels": list(AUDIOSEP_CHANNELS), "condition_size": 512}
    assert len(film_layers(AUDIOSEP_CHANNELS)) == len(model.film) == 38


def test_front_end_is_torchlibrosa_stft_and_torch_stft_computes_it() -> None:
    stft_module = pytest.importorskip("torchlibrosa.stft")
    their_stft = stft_module.STFT(2048, 320, 2048, "hann", True, "reflect", True)
    theirs = {f"base.stft.{k}": v for k, v in their_stft.state_dict().items()}
    theirs.update({f"base.istft.{k}": v for k, v in stft_module.ISTFT(2048, 320, 2048, "hann", True, "reflect",
                                                                      True).state_dict().items()})
    ours = front_end_tensors()
    assert set(theirs) == set(ours) and all(torch.equal(theirs[k], ours[k]) for k in ours)
    # the spectrogram this module computes with torch.stft is the one AudioSep's convolutions compute
    x = 0.1 * torch.randn(1, 32000 + 77, generator=torch.Generator().manual_seed(1))
    real, imag = their_stft(x)
    X_BTF = AudioSepNet(channels=SMALL).spectrogram(x).transpose(1, 2)
    torch.testing.assert_close(X_BTF.real, real[:, 0], atol=2e-4, rtol=0)
    torch.testing.assert_close(X_BTF.imag, imag[:, 0], atol=2e-4, rtol=0)


def test_loading_round_trips_every_tensor_exactly(small_ckpt: Path) -> None:
    saved = torch.load(small_ckpt, weights_only=True)["state_dict"]
    loaded = load_audiosep(small_ckpt)
    assert loaded.kwargs == {"channels": SMALL, "condition_size": 512}
    own = loaded.model.state_dict()
    separator = {k.removeprefix("ss_model."): v for k, v in saved.items() if k.startswith("ss_model.")}
    assert set(separator) == set(own) | set(FRONT_END_KEYS)
    for key, value in separator.items():
        expected = front_end_tensors()[key] if key in FRONT_END_KEYS else own[key]
        assert expected.dtype == value.dtype and torch.equal(expected, value), key
    exported = audiosep_state_dict(loaded.model)
    assert set(exported) == {k for k in saved if k.startswith("ss_model.")}
    assert all(torch.equal(exported[k], saved[k]) for k in exported)
    clap = clap_fingerprint_tensors(0)
    assert set(loaded.clap_fingerprint) == set(clap)
    assert all(torch.equal(loaded.clap_fingerprint[k], v) for k, v in clap.items())
    assert not loaded.model.training


def _resaved(tmp_path: Path, small_ckpt: Path, edit) -> Path:
    obj = torch.load(small_ckpt, weights_only=True)
    edit(obj["state_dict"])
    path = tmp_path / "edited.ckpt"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("ss_model.base.decoder_block3.conv_block2.bn1.running_var"),
     r"ss_model\.base\.decoder_block3\.conv_block2\.bn1\.running_var: missing from the checkpoint \(1 tensors"),
    (lambda s: s.pop("ss_model.film.decoder_block6->beta2.bias"),
     r"ss_model\.film\.decoder_block6->beta2\.bias: missing"),
    (lambda s: s.pop("ss_model.base.istft.ola_window"), r"ss_model\.base\.istft\.ola_window: missing"),
    (lambda s: s.update({"ss_model.base.encoder_block7.conv_block1.conv1.weight": torch.zeros(3)}),
     r"ss_model\.base\.encoder_block7\.conv_block1\.conv1\.weight: unexpected tensor \(3,\)"),
    (lambda s: s.update({"ss_model.base.after_conv.weight": torch.zeros(1, 4, 1, 1)}),
     r"ss_model\.base\.after_conv\.weight: has shape \(1, 4, 1, 1\), AudioSep's ResUNet30 needs \(3, 4, 1, 1\)"),
    (lambda s: s.update({"model.weight": torch.zeros(1)}), r"model\.weight: unexpected tensor"),
    (lambda s: s["ss_model.base.stft.conv_real.weight"].mul_(1.01),
     r"ss_model\.base\.stft\.conv_real\.weight: is not the Hann-2048 / hop-320 transform"),
])
def test_a_wrong_or_missing_key_is_one_line_naming_file_key_and_fix(tmp_path, small_ckpt, edit, message) -> None:
    path = _resaved(tmp_path, small_ckpt, edit)
    with pytest.raises(InputError, match=message) as info:
        load_audiosep(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "(fix: " in text and "\n" not in text


def test_prior_model_recognises_audiosep_by_its_keys(small_ckpt: Path, tmp_path: Path) -> None:
    sha = file_sha256(small_ckpt)
    loaded = load_classnet(str(small_ckpt), sha)
    assert loaded.layout == "audiosep" and loaded.needs_clap and loaded.query is None
    assert loaded.sha256 == sha and isinstance(loaded.net, AudioSepNet) and loaded.net.sample_rate == 32000
    # a bare state dict (re-saved without Lightning's entries) is recognised too
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(small_ckpt, weights_only=True)["state_dict"], bare)
    assert load_classnet(str(bare), file_sha256(bare)).layout == "audiosep"
    # a file of neither layout says what --prior-model takes
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, other)
    with pytest.raises(InputError, match="not a studio-sep checkpoint.*AudioSep's audiosep_base_4M_steps.ckpt"):
        load_classnet(str(other), file_sha256(other))


def test_clap_file_is_checked_against_the_checkpoints_query_encoder(small_ckpt: Path, tmp_path: Path) -> None:
    fingerprint = load_audiosep(small_ckpt).clap_fingerprint
    same = tmp_path / "music_speech_audioset_epoch_15_esc_89.98.pt"
    torch.save({"epoch": 15, "state_dict": {f"module.{k}": v for k, v in clap_fingerprint_tensors(0).items()}}, same)
    assert check_clap_file(fingerprint, same, checkpoint=small_ckpt) == 10
    other = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    torch.save({"epoch": 15, "state_dict": {f"module.{k}": v for k, v in clap_fingerprint_tensors(1).items()}}, other)
    with pytest.raises(InputError, match=r"90\.14\.pt: text_projection\.0\.weight: differs in the CLAP weight "
                                         r"audiosep_base_4M_steps\.ckpt was trained with.*music_speech_audioset"):
        check_clap_file(fingerprint, other, checkpoint=small_ckpt)
    assert check_clap_file({}, other) == 0  # a checkpoint without its query encoder: nothing to compare


def _identity_audiosep() -> AudioSepNet:
    """Magnitude mask sigmoid(30) ≈ 1 and phase rotation (tanh 30, 0) → 0 rad: the mixture comes back."""
    model = random_audiosep()
    with torch.no_grad():
        model.base.after_conv.weight.zero_()
        model.base.after_conv.bias.copy_(torch.tensor([30.0, 30.0, 0.0]))
    return model


def _band_limited(n_samples: int, rate: int, seed: int = 0) -> np.ndarray:
    """Tones and a few noise bursts, all below 6 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / rate
    x = 0.3 * np.sin(2 * math.pi * 220 * t) + 0.2 * np.sin(2 * math.pi * 1870 * t) * (t % 1.0 < 0.5)
    from scipy.signal import butter, sosfiltfilt

    x += 0.1 * sosfiltfilt(butter(8, 5000, fs=rate, output="sos"), rng.standard_normal(n_samples))
    return x[None]


@pytest.mark.parametrize("rate", [16000, 44100])
def test_prior_resamples_to_32k_separates_in_chunks_and_comes_back(rate: int) -> None:
    model = _identity_audiosep()
    n_seconds = 11.5 if rate == 16000 else 2.5  # 11.5 s: two 10 s chunks cross-faded over 1 s
    x_MS = np.concatenate([np.zeros((1, round(n_seconds * rate))), _band_limited(round(n_seconds * rate), rate)])
    cond = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-1]))
    V = network_spectra(model, cond, x_MS, [1], processing_rate_hz=rate, n_fft=1024, hop=256)
    hook.remove()
    chunks = [320000, round(n_seconds * 32000) - 320000 + 32000] if rate == 16000 else [round(n_seconds * 32000)]
    assert seen == chunks  # the network saw 32 kHz audio, in 10 s chunks
    from studio_sep.dsp import stft

    P = np.abs(stft.stft(x_MS[1:], n_fft=1024, hop=256)[:, :, 0]) ** 2
    assert V.shape == (1, *P.shape)
    strong = P > 1e-4 * P.max()
    error_db = np.abs(10 * np.log10(V[0][strong] / P[strong]))
    # what is left is the two polyphase resamplers' passband ripple (~0.01 dB each way)
    assert np.median(error_db) < 0.03 and np.percentile(error_db, 99) < 0.1
    assert abs(10 * np.log10(V[0].sum() / P.sum())) < 0.02  # total energy


def test_forward_is_deterministic_any_length_and_separate_long_matches_one_chunk() -> None:
    model = random_audiosep()
    cond = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(2)), dim=-1)
    for n in (1, 700, 32000 + 333):
        wave = 0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            out = model(wave, cond)
        assert out.wave_BS.shape == (1, n) and bool(torch.isfinite(out.wave_BS).all())
        assert out.mask_BFT.shape[1] == 1025 and float(out.mask_BFT.min()) >= 0 and float(out.mask_BFT.max()) <= 1
    torch.testing.assert_close(separate_long(model, wave, cond), out.wave_BS, atol=0, rtol=0)
    with pytest.raises(InputError, match=r"cond: expected shape \(1, 512\)"):
        model(wave, cond[:, :256])


# --- through the CLI --------------------------------------------------------------------------
def _clap_files(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """A CLAP file holding the compared tensors, and a RoBERTa folder (enough for resolving, not for running)."""
    clap = tmp_path / f"clap{seed}.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in clap_fingerprint_tensors(seed).items()}}, clap)
    roberta = tmp_path / "roberta"
    roberta.mkdir(exist_ok=True)
    for name in ("vocab.json", "merges.txt", "config.json"):
        (roberta / name).write_text("{}")
    return clap, roberta


def test_cli_refuses_another_clap_model_before_any_work(rendered_session, small_ckpt, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("STUDIO_SEP_CLAP_CHECKPOINT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    out = tmp_path / "out"
    base = ["separate", str(rendered_session), "--out", str(out), "--prior", "classnet",
            "--prior-model", str(small_ckpt), "--device", "cpu"]
    no_clap = runner.invoke(app, base)
    assert no_clap.exit_code == 2 and "--clap-checkpoint" in no_clap.stderr and not out.exists()
    clap, roberta = _clap_files(tmp_path, seed=1)
    wrong = runner.invoke(app, [*base, "--clap-checkpoint", str(clap), "--roberta-dir", str(roberta)])
    assert wrong.exit_code == 2 and not out.exists()
    assert "not AudioSep's CLAP model" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside laion-clap's HTSAT
@pytest.mark.skipif(not HAVE_LAION_CLAP, reason="laion-clap not installed (pip install 'studio-sep[clap]')")
def test_separate_with_an_audiosep_checkpoint_end_to_end(rendered_session, tmp_path, monkeypatch) -> None:
    """The real (randomly initialised) LAION-CLAP HTSAT-base queries a small AudioSep on a 16 kHz session."""
    from studio_sep.classnet import clap

    monkeypatch.delenv(clap.CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(clap.ROBERTA_ENV, raising=False)
    roberta = write_roberta_files(tmp_path / "roberta-base")
    torch.manual_seed(0)
    clap_state = clap.build_clap_model(roberta).state_dict()
    clap_file = tmp_path / "music_speech_audioset_epoch_15_esc_89.98.pt"
    torch.save({"epoch": 15, "state_dict": {f"module.{k}": v for k, v in clap_state.items()}}, clap_file)
    fingerprint = {k: v for k, v in clap_state.items()
                   if k.startswith(("text_projection.", "audio_projection.", "logit_scale"))}
    ckpt = tmp_path / "audiosep_base_4M_steps.ckpt"
    torch.save(lightning_checkpoint(random_audiosep(), fingerprint), ckpt)
    del clap_state
    out = tmp_path / "out"
    result = runner.invoke(app, ["separate", str(rendered_session), "--out", str(out), "--iterations", "3",
                                 "--prior", "classnet", "--prior-model", str(ckpt), "--clap-checkpoint",
                                 str(clap_file), "--roberta-dir", str(roberta), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    sha = file_sha256(ckpt)
    assert f"prior: classnet (AudioSep audiosep_base_4M_steps.ckpt, sha256 {sha[:12]}" in result.stdout
    run = json.loads((out / "ircam_trio" / "run.json").read_text())
    prior = run["separation"]["prior"]
    assert prior["layout"] == "audiosep" and prior["model_sha256"] == sha and Path(prior["model"]) == ckpt.resolve()
    assert prior["clap"]["checkpoint"] == str(clap_file) and prior["clap"]["query"] == "text"
    assert prior["clap"]["checkpoint_sha256"] == file_sha256(clap_file)
    assert prior["clap"]["tensors_matching_checkpoint"] == len(fingerprint) == 10
    record = run["stages"]["prior"]["prior"]
    assert set(record["level_db"]) == {"violin", "sax", "piano"}
    assert all(np.isfinite(v) for v in record["level_db"].values())
