"""Spectral priors: instrument classes, NNLS / supervised NMF on known signals, and the
prior stage of a separation run (nmf, and classnet with a checkpoint made here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from studio_sep.cli import app
from studio_sep.data.instruments import match_class
from studio_sep.separation import nmf as prior
from studio_sep.session import load_session
from studio_sep.stages import SeparationOptions, separate_session

runner = __import__("typer.testing", fromlist=["CliRunner"]).CliRunner()


@pytest.mark.parametrize(("text", "expected"), [
    ("violin", "violin"), ("a solo Violin playing", "violin"), ("string quartet", "violin"),
    ("Tenor Sax", "saxophone"), ("saxophone", "saxophone"), ("Acoustic Grand Piano", "piano"),
    ("bass clarinet", "clarinet"), ("Electric Piano 1", None), ("Synth Strings 1", None), ("theremin", None),
])
def test_prompts_map_to_classes(text: str, expected: str | None) -> None:
    assert match_class(text) == expected


def test_nnls_reproduces_a_known_activation() -> None:
    rng = np.random.default_rng(0)
    W = rng.uniform(size=(40, 5))
    H = rng.uniform(size=(5, 30)) * (rng.uniform(size=(5, 30)) > 0.5)  # sparse, with exact zeros
    np.testing.assert_allclose(prior.nnls_activations(W @ H, W), H, atol=1e-9)


def test_supervised_nmf_recovers_each_sources_share() -> None:
    rng = np.random.default_rng(1)
    F, T = 64, 50
    W1 = np.zeros((F, 3)); W1[:30] = rng.uniform(0.1, 1, (30, 3))  # source 1 lives in bins 0-29
    W2 = np.zeros((F, 3)); W2[34:] = rng.uniform(0.1, 1, (30, 3))  # source 2 in bins 34-63
    W2[28:34] = 0.3  # and both in 28-33
    W1[28:34] = 0.3
    H1, H2 = rng.uniform(0.5, 2, (3, T)), rng.uniform(0.5, 2, (3, T))
    mag = W1 @ H1 + W2 @ H2
    shares = prior.supervised_nmf(mag, [W1, W2], n_iter=2000)
    np.testing.assert_allclose(shares[0] + shares[1], 1.0, atol=1e-9)
    np.testing.assert_allclose(shares[0][:28], 1.0, atol=1e-6)  # bins only source 1 reaches
    np.testing.assert_allclose(shares[1][34:], 1.0, atol=1e-6)
    np.testing.assert_allclose(shares[0] * mag, W1 @ H1, rtol=0.05, atol=1e-3 * mag.max())


def _copy_session(rendered_session: Path, tmp_path: Path, replace: dict[str, str]) -> Path:
    folder = tmp_path / "session"
    shutil.copytree(rendered_session.parent, folder)
    manifest = folder / "session.toml"
    text = manifest.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    manifest.write_text(text)
    return manifest


def test_nmf_prior_run_records_what_ran_and_resumes(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    options = SeparationOptions(n_iter=5, device="cpu", prior="nmf")
    result = separate_session(session, tmp_path, options)
    sep = result.run["separation"]
    assert sep["init"] == ["geometry", "spot", "prior"]  # both spatial starts: every source has a spot mic
    assert sep["prior"]["kind"] == "nmf" and sep["prior"]["model"] is None
    assert sep["prior"]["queries"] == {"piano": "piano", "sax": "saxophone", "violin": "violin"}
    assert sep["prior"]["mics"] == {s.name: s.spot_mic for s in session.sources}
    assert sep["spectral_init"].endswith("H by NNLS of its geometric mean with the nmf prior")
    assert sep["spatial_starts"]["kept"] in ("geometry", "spot")
    again = separate_session(session, tmp_path, options, force=False)
    assert again.stages == {"prior": "skipped", "separate": "skipped", "images": "skipped"}
    other = separate_session(session, tmp_path, SeparationOptions(n_iter=5, device="cpu", prior="none"), force=False)
    assert other.stages["prior"] == "ran" and other.run["separation"]["prior"]["kind"] == "none"


def test_nmf_prior_without_references_uses_rendered_class_notes(rendered_session: Path, tmp_path: Path) -> None:
    from studio_sep.dsp import stft
    from studio_sep.priors import compute_prior, nmf, resolve_prior

    session = load_session(rendered_session)
    session = type(session)(**{**session.__dict__, "sources": tuple(
        type(s)(**{**s.__dict__, "reference": None}) for s in session.sources)})
    spec = resolve_prior(session, "nmf")
    from studio_sep.session import load_mics
    from studio_sep.stages import resolve_settings

    settings = resolve_settings(session, SeparationOptions(prior="nmf", device="cpu"))
    x = load_mics(session)
    X = stft.stft(x, n_fft=settings.n_fft, hop=settings.hop)
    calls = []
    result = compute_prior(spec, session, settings, x, X, callback=lambda d, t: calls.append((d, t)))
    N, F = len(session.sources), settings.n_fft // 2 + 1
    assert result.V_NFT.shape[:2] == (N, F) and np.all(result.V_NFT >= 0)
    assert calls[-1] == (2 * N, 2 * N)
    notes = nmf.class_notes("violin", 16000)
    assert notes.ndim == 1 and np.abs(notes).max() > 0.01
    np.testing.assert_array_equal(notes, nmf.class_notes.__wrapped__("violin", 16000))


def test_a_prompt_the_prior_cannot_map_uses_its_stem_mic(rendered_session: Path, tmp_path: Path) -> None:
    # a voice, say: no class dictionary and no solo take to learn one from
    manifest = _copy_session(rendered_session, tmp_path, {'prompt = "violin"': 'prompt = "theremin"',
                                                          'reference = "reference/violin.wav"\n': ""})
    out = tmp_path / "out"
    result = runner.invoke(app, ["separate", str(manifest), "--out", str(out), "--prior", "nmf", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    prior = json.loads((out / "ircam_trio" / "run.json").read_text())["separation"]["prior"]
    assert prior["queries"]["violin"] is None and prior["queries"]["sax"] == "saxophone"
    assert "names no instrument class" in prior["rejected"]["violin"]
    assert set(prior["rejected"]) == {"violin"}
    assert "prior used per source:\n  piano: nmf\n  sax: nmf\n  violin: stem mic power (its prompt names no " \
        "instrument class" in result.stdout
    assert prior["used_by_source"] == {"piano": "nmf", "sax": "nmf", "violin": "stem_mic_power"}


def test_classnet_prior_with_a_checkpoint_made_here(rendered_session: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from studio_sep.classnet import save_checkpoint
    from studio_sep.classnet.query import QueriedClassNet
    from studio_sep.util.atomic import file_sha256

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = QueriedClassNet(net={"width": 0.125, "depth": 4}, query={"classes": ["violin", "saxophone", "piano"]})
    path = tmp_path / "tiny.safetensors"
    sha = save_checkpoint(model, path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["separate", str(rendered_session), "--out", str(out), "--iterations", "3",
                                 "--prior", "classnet", "--prior-model", str(path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "prior: classnet (tiny.safetensors, sha256 " + sha[:12] in result.stdout
    run = json.loads((out / "ircam_trio" / "run.json").read_text())
    recorded = run["separation"]["prior"]
    assert recorded["kind"] == "classnet" and recorded["model_sha256"] == sha
    assert Path(recorded["model"]) == path.resolve() and recorded["clap"] is None
    assert run["stages"]["prior"]["prior"]["mics"]["violin"] == "spot_violin"
    assert file_sha256(path)  # the file itself is untouched
    # a prompt outside the model's classes: queried by the source's solo take alone, and
    # without one its stem mic's power stands in (as with nmf), said per source
    manifest = _copy_session(rendered_session, tmp_path, {'prompt = "violin"': 'prompt = "flute"'})
    by_take = _classnet_record(manifest, path, tmp_path / "o2")
    assert by_take["queries"] == {"piano": "piano", "sax": "tenor saxophone", "violin": None}
    assert by_take["level_db"].keys() == {"piano", "sax", "violin"}  # every source's network estimate measured
    assert "names no instrument class" not in by_take["rejected"].get("violin", "")
    manifest = _copy_session(rendered_session, tmp_path / "b", {'prompt = "violin"': 'prompt = "flute"',
                                                                'reference = "reference/violin.wav"\n': ""})
    bare = _classnet_record(manifest, path, tmp_path / "o3")
    assert bare["used_by_source"]["violin"] == "stem_mic_power"
    assert bare["rejected"]["violin"] == "its prompt names no instrument class the prior knows"
    assert bare["level_db"].keys() == {"piano", "sax"}


def _classnet_record(manifest: Path, model: Path, out: Path) -> dict:
    """``prior`` of run.json and the summary's per-source lines after a 2-iteration classnet run."""
    result = runner.invoke(app, ["separate", str(manifest), "--out", str(out), "--iterations", "2", "--prior",
                                 "classnet", "--prior-model", str(model), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "ircam_trio" / "run.json").read_text())["separation"]["prior"]
    replaced = [f"  {name}: stem mic power ({why})" for name, why in record["rejected"].items()]
    assert all(line in result.stdout for line in replaced)
    return record


def test_run_passes_the_prior_to_every_session(rendered_session: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(rendered_session), "--out", str(tmp_path), "--no-mix", "--no-evaluate",
                                 "--iterations", "2", "--prior", "nmf", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "ircam_trio" / "run.json").read_text())
    assert run["separation"]["prior"]["kind"] == "nmf" and "prior" in run["separation"]["init"]


def test_a_collapsed_prior_is_replaced_by_the_stem_mic(rendered_session: Path, tmp_path: Path) -> None:
    """A network whose mask is ~0 for a query would start that source silent: refused, recorded."""
    torch = pytest.importorskip("torch")
    from studio_sep.classnet import save_checkpoint
    from studio_sep.classnet.query import QueriedClassNet
    from studio_sep.dsp import stft
    from studio_sep.priors import PriorSpec, compute_prior
    from studio_sep.priors.spec import PRIOR_FLOOR_DB
    from studio_sep.session import load_mics
    from studio_sep.stages import resolve_settings

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = QueriedClassNet(net={"width": 0.125, "depth": 4}, query={"classes": ["violin", "saxophone", "piano"]})
    with torch.no_grad():
        model.net.unet.after_conv2.bias.fill_(-30.0)  # sigmoid(-30): the mask is 1e-13 everywhere
    path = tmp_path / "collapsed.safetensors"
    save_checkpoint(model, path)
    session = load_session(rendered_session)
    settings = resolve_settings(session, SeparationOptions(prior="classnet", prior_model=str(path), device="cpu"))
    x = load_mics(session)
    X = stft.stft(x, n_fft=settings.n_fft, hop=settings.hop)
    result = compute_prior(PriorSpec.from_dict(settings.prior), session, settings, x, X)
    assert set(result.record["rejected"]) == {"piano", "sax", "violin"}
    assert all(level < PRIOR_FLOOR_DB for level in result.record["level_db"].values())
    mics = [m.name for m in session.mics]
    for n, s in enumerate(session.sources):
        m = mics.index(s.spot_mic)
        # the stem mic's channel of the session's STFT, as the prior stage has it
        np.testing.assert_array_equal(result.V_NFT[n], X[:, :, m].real ** 2 + X[:, :, m].imag ** 2)


def test_the_shipped_model_keeps_every_source_and_a_replaced_prior_is_reported_per_source(
        rendered_session: Path) -> None:
    """The shipped classnet-small (issue #17's fine-tune: its saxophone no longer collapses) gives
    every source of the trio its prior, and the summary says nothing; the weights before it kept
    −36 … −39 dB for the sax: such a replaced prior is said per source in run.json and in
    `separate`'s and `run`'s summaries."""
    pytest.importorskip("torch")
    from studio_sep.batch.display import summary_rows
    from studio_sep.batch.runner import SessionOutcome
    from studio_sep.cli.printing import prior_by_source_lines
    from studio_sep.dsp import stft
    from studio_sep.priors import PriorSpec, compute_prior
    from studio_sep.session import load_mics
    from studio_sep.stages import resolve_settings

    session = load_session(rendered_session)
    settings = resolve_settings(session, SeparationOptions(prior="classnet", device="cpu"))
    x = load_mics(session)
    X = stft.stft(x, n_fft=settings.n_fft, hop=settings.hop)
    record = compute_prior(PriorSpec.from_dict(settings.prior), session, settings, x, X).record
    assert record["used_by_source"] == {"piano": "classnet", "sax": "classnet", "violin": "classnet"}
    assert min(record["level_db"].values()) > -20 and not record["rejected"]
    assert prior_by_source_lines(record) == []
    why = "the classnet prior kept -38.6 dB of its mic's energy, floor -20 dB"  # the previous weights' sax
    replaced = {**record, "used_by_source": {**record["used_by_source"], "sax": "stem_mic_power"},
                "rejected": {"sax": why}}
    lines = [line.plain for line in prior_by_source_lines(replaced)]
    assert lines == ["prior used per source:", "  piano: classnet", f"  sax: stem mic power ({why})", "  violin: classnet"]
    _, notes = summary_rows([SessionOutcome(0, str(rendered_session), "ircam_trio", "done",
                                            prior_replaced=replaced["rejected"])])
    assert notes == [f"ircam_trio: sax's prior replaced: {why}"]
