"""separate and evaluate on a rendered session: outputs, naming, sums, scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from studio_sep.cli import app
from studio_sep.io import audio as audio_io
from studio_sep.session import load_mics, load_session
from studio_sep.stages import SeparationOptions, evaluate_run, read_images, separate_session
from studio_sep.util.errors import InputError

runner = CliRunner()


@pytest.fixture(scope="module")
def guided_run(rendered_session: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    session = load_session(rendered_session)
    result = separate_session(session, out, SeparationOptions(n_iter=30, device="cpu"))
    metrics = evaluate_run(session, out)
    return session, out, result, metrics


def test_outputs_exist_at_native_rate_and_length(guided_run) -> None:
    session, out, result, _ = guided_run
    folder = out / session.name
    for source in session.sources:
        for mic in session.mics:
            info = audio_io.audio_info(folder / "images" / source.name / f"{mic.name}.wav")
            assert (info.sample_rate, info.n_samples, info.n_channels) == (session.sample_rate, session.n_samples, 1)
        stem, _ = audio_io.read_audio(folder / "stems" / f"{source.name}.wav")
        image, _ = audio_io.read_audio(folder / "images" / source.name / f"{source.spot_mic}.wav")
        np.testing.assert_array_equal(stem, image)  # the stem is the image at the spot mic
    assert not (folder / "images" / "_residual").exists()


def test_run_json_records_everything(guided_run) -> None:
    session, out, result, _ = guided_run
    run = json.loads((out / session.name / "run.json").read_text())
    sep = run["separation"]
    # the default where every source has a spot mic of its own: both spatial starts, the better kept
    assert sep["init"] == ["geometry", "spot"]
    kept, ll, spread = (sep["spatial_starts"][key] for key in ("kept", "log_likelihood", "spread"))
    assert kept == ("spot" if ll["spot"] - ll["geometry"] > max(spread.values()) else "geometry")
    assert sep["spectral_init"].startswith("W, H by NMF of " + {"geometry": "the geometric demixer",
                                                                 "spot": "the spot mics' demixer"}[kept])
    assert (sep["n_iter"], sep["n_basis"], sep["n_fft"], sep["hop"]) == (30, 8, 1024, 256)
    # a number of iterations asked: exactly that many in every fit, no stopping rule
    assert sep["iterations"] == 30 and sep["iterations_run"] == {"geometry": [30, 30, 30], "spot": [30, 30, 30]}
    assert sep["stop_tolerance"] == 0
    assert sep["device"] == "cpu" and sep["dtype"] == "float32" and sep["seed"] == 0
    assert sep["prior"]["kind"] == "none" and sep["stem_mics"]["violin"] == "spot_violin"
    ll = run["log_likelihood"]["values"]
    assert run["log_likelihood"]["iterations"] == [0, 5, 10, 15, 20, 25, 30]
    assert len(ll) == 7 and run["log_likelihood"]["final"] == pytest.approx(ll[-1], abs=1e-5)
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(ll, ll[1:]))
    assert run["timings_s"]["fit_s"] > 0 and "numpy" in run["versions"]
    assert len(run["session"]["manifest_sha256"]) == 64


def test_images_add_back_to_the_mixture(guided_run) -> None:
    session, out, _, _ = guided_run
    images = read_images(out / session.name, session)
    mix = load_mics(session)
    # float32 files: equal to the mixture to float32 rounding of each image
    assert np.abs(images.sum(axis=0) - mix).max() < 1e-5 * max(1.0, np.abs(mix).max()) + 1e-6


def test_guided_separation_beats_the_mixture_clearly(guided_run) -> None:
    _, _, _, metrics = guided_run
    means = metrics["means"]["at_reference_mic"]
    assert means["improvement"]["sdr"] > 6.0, means
    assert means["separated"]["sir"] > means["mixture"]["sir"] + 6.0
    assert metrics["means"]["at_stem_mic"]["improvement"]["sdr"] > 5.0


def test_dictionary_from_solo_takes_also_separates(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    result = separate_session(session, tmp_path, SeparationOptions(n_iter=20, init=("geometry", "dictionary")))
    assert result.run["separation"]["spectral_init"].startswith("dictionary W, H by NNLS")
    metrics = evaluate_run(session, tmp_path)
    assert metrics["means"]["at_reference_mic"]["improvement"]["sdr"] > 5.0, metrics["means"]


def test_metrics_report_files(guided_run) -> None:
    session, out, _, metrics = guided_run
    report = out / session.name / "report"
    saved = json.loads((report / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["reference_mic"] == "trio_l"
    assert set(saved["mics_evaluated"]) == {"trio_l", "spot_piano", "spot_sax", "spot_violin"}
    for kind in ("separated", "mixture", "improvement"):
        assert set(saved[kind]) == {"piano", "sax", "violin"}
        assert set(saved[kind]["sax"]) >= {"trio_l", "spot_sax"}
        assert set(saved[kind]["sax"]["trio_l"]) == {"sdr", "sir", "sar", "si_sdr"}
    sep, mix, imp = (saved[k]["violin"]["spot_violin"]["sdr"] for k in ("separated", "mixture", "improvement"))
    assert imp == pytest.approx(sep - mix, abs=2e-3)
    text = (report / "metrics.md").read_text()
    assert "| violin | spot_violin (stem) |" in text and "ΔSDR" in text


def test_processing_rate_below_native_writes_a_residual(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    result = separate_session(session, tmp_path, SeparationOptions(n_iter=3, processing_sample_rate=8000,
                                                                   init=("geometry",)))
    folder = tmp_path / session.name
    assert result.run["separation"]["n_fft"] == 512 and result.run["separation"]["residual_image"]
    residual = np.stack([audio_io.read_audio(folder / "images" / "_residual" / f"{m.name}.wav")[0][0]
                         for m in session.mics])
    images = read_images(folder, session)
    mix = load_mics(session)
    assert audio_io.audio_info(folder / "stems" / "sax.wav").sample_rate == 16000
    assert np.abs(images.sum(axis=0) + residual - mix).max() < 1e-5
    # the residual holds what the 8 kHz model could not see: the band above 4 kHz
    spectrum = np.abs(np.fft.rfft(residual[0])) ** 2
    freqs = np.fft.rfftfreq(residual.shape[1], 1 / 16000)
    assert spectrum[freqs > 4200].sum() > 10 * spectrum[freqs < 3500].sum()


@pytest.fixture(scope="module")
def close_miked_session(tmp_path_factory) -> Path:
    """Three distinct noise-like sources, each with an omni spot mic 0.3 m away, plus a
    pair of room mics: a scene blind FastMNMF2 separates, to test naming end to end."""
    from scipy.signal import butter, sosfilt

    from tests.small_sessions import write_noise_band_session

    folder = tmp_path_factory.mktemp("close")
    sr, n = 8000, 8000 * 5
    rng = np.random.default_rng(0)
    bands = [(100, 500), (600, 1500), (1800, 3500)]
    dry = []
    for k, band in enumerate(bands):
        envelope = np.repeat(rng.uniform(size=n // 800) ** 2, 800)
        dry.append(sosfilt(butter(4, band, "bandpass", fs=sr, output="sos"), rng.standard_normal(n)) * envelope)
    dry = np.stack(dry) / 10
    sources = [(1.5, 1.0, 1.0), (3.0, 2.5, 1.0), (4.5, 1.0, 1.0)]
    spots = [(x, y + 0.3, z) for x, y, z in sources]
    # The blind start gives channel m to output m mod 3: spots first, each to its own
    # output, but in an order unrelated to the sources', so only the naming step can
    # put the outputs in manifest order.
    mics = [spots[1], spots[2], spots[0], (3.0, 0.5, 1.5), (3.2, 0.5, 1.5)]
    return write_noise_band_session(folder, "close", dry, sample_rate=sr, sources=sources, mics=mics,
                                    source_names=["low", "mid", "high"],
                                    mic_names=["spot_mid", "spot_high", "spot_low", "room_a", "room_b"])


def mic_names_of(session) -> list[str]:
    return [m.name for m in session.mics]


def test_blind_runs_name_sources_the_same_way_across_seeds(close_miked_session: Path, tmp_path: Path) -> None:
    session = load_session(close_miked_session)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])
    named = []
    for seed in (1, 2):
        result = separate_session(session, tmp_path / str(seed),
                                  SeparationOptions(init=("circular",), n_iter=40, seed=seed, n_basis=4))
        assert result.run["separation"]["source_order"].startswith("assigned")
        named.append(read_images(tmp_path / str(seed) / session.name, session))
    spot = [mic_names_of(session).index(f"spot_{s.name}") for s in session.sources]
    for images in named:  # output n is manifest source n, at its spot mic
        for n in range(3):
            corr = [abs(np.corrcoef(images[k, spot[n]], truth[n, spot[n]])[0, 1]) for k in range(3)]
            assert int(np.argmax(corr)) == n and corr[n] > 0.8, corr
    assert not np.allclose(named[0], named[1])  # two different runs, named alike



def test_spot_mics_name_the_sources_when_the_typed_positions_swap_them(close_miked_session: Path,
                                                                        tmp_path: Path) -> None:
    """Sources 0 and 1 typed at each other's places: the geometric start names them the wrong
    way round; with a spot mic of its own for every source, the outputs take their names
    from the spot mics' energy shares (what the recording shows), and come out right."""
    import dataclasses

    from studio_sep.session import dump_session

    session = load_session(close_miked_session)
    a, b = session.sources[0], session.sources[1]
    swapped = (dataclasses.replace(a, position_m=b.position_m), dataclasses.replace(b, position_m=a.position_m),
               *session.sources[2:])
    path = close_miked_session.parent / "swapped.toml"
    dump_session(dataclasses.replace(session, sources=swapped, path=path), path)
    session = load_session(path)
    result = separate_session(session, tmp_path, SeparationOptions(n_iter=30, n_basis=4, ensemble=1,
                                                                   init=("geometry",)))
    assert result.run["separation"]["source_order"] == "assigned (spot-mic energy share)"
    assert result.run["separation"]["assignment"][:2] == [1, 0]  # the geometric outputs 0 and 1, renamed
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])
    images = read_images(tmp_path / session.name, session)
    spot = [mic_names_of(session).index(f"spot_{s.name}") for s in session.sources]
    for n in range(3):
        corr = [abs(np.corrcoef(images[k, spot[n]], truth[n, spot[n]])[0, 1]) for k in range(3)]
        assert int(np.argmax(corr)) == n and corr[n] > 0.8, corr

def test_blind_naming_does_not_depend_on_output_order(rendered_session: Path, tmp_path: Path) -> None:
    from studio_sep.stages import resolve_settings
    from studio_sep.stages.images import assign_sources

    session = load_session(rendered_session)
    settings = resolve_settings(session, SeparationOptions(init=("circular",)))
    images = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])
    for perm in ([0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]):
        shuffled = images[perm]
        named = shuffled[assign_sources(session, settings, np.sum(shuffled**2, axis=-1))]
        np.testing.assert_array_equal(named, images)


def test_bad_settings_stop_before_work(rendered_session: Path, tmp_path: Path) -> None:
    session = load_session(rendered_session)
    cases = [
        (SeparationOptions(n_fft=1000, hop=300), "hop"),
        (SeparationOptions(init=("circular", "geometry")), "pick one"),
        (SeparationOptions(init=("geometry", "prior"), prior="none"), "the prior init needs a prior"),
        (SeparationOptions(prior="classnet", prior_model="/nonexistent/model.safetensors"),
         "CLASS-net checkpoint not found"),
        (SeparationOptions(prior="fancy"), "unknown prior 'fancy'"),
        (SeparationOptions(processing_sample_rate=48000), "above the recording"),
        (SeparationOptions(stem_mics={"violin": "spot_viola"}), "'spot_viola' is not a mic"),
        (SeparationOptions(device="tpu"), "not one of cpu, cuda, auto"),
    ]
    for options, message in cases:
        with pytest.raises(InputError, match=message):
            separate_session(session, tmp_path, options)
    assert list(tmp_path.iterdir()) == []


def test_cli_separate_and_evaluate(rendered_session: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["separate", str(rendered_session), "--out", str(tmp_path), "--iterations", "5",
                                 "--init", "geometry", "--stem-mic", "trio_c", "--format", "pcm24"])
    assert result.exit_code == 0, result.output
    assert "separated ircam_trio" in result.stdout and "3 fits of 5 iterations on cpu" in result.stdout
    folder = tmp_path / "ircam_trio"
    assert audio_io.audio_info(folder / "stems" / "piano.wav").subtype == "PCM_24"
    run = json.loads((folder / "run.json").read_text())
    assert set(run["separation"]["stem_mics"].values()) == {"trio_c"}
    result = runner.invoke(app, ["evaluate", str(rendered_session), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "separation metrics" in result.stdout and "metrics.md" in result.stdout


def test_cli_evaluate_without_a_run_is_one_line(rendered_session: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(rendered_session), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no separation run found" in result.stderr and "studio-sep separate" in result.stderr
    mixed = runner.invoke(app, ["mix", str(rendered_session), "--out", str(tmp_path)])
    assert mixed.exit_code == 2 and "no separation run to mix" in mixed.stderr
    assert not list(tmp_path.iterdir())  # nothing written: not even the lock's folder


def test_fewer_mics_than_sources_start_blind_by_default(rendered_session: Path, tmp_path: Path) -> None:
    import dataclasses

    from studio_sep.session import dump_session
    from studio_sep.util.errors import InputError

    session = load_session(rendered_session)
    pair = tuple(m for m in session.mics if m.name in ("trio_l", "trio_r"))
    sources = tuple(dataclasses.replace(s, spot_mic=None) for s in session.sources)
    path = rendered_session.parent / "pair.toml"
    dump_session(dataclasses.replace(session, mics=pair, sources=sources, truth=None, path=path), path)
    two_mics = load_session(path)
    result = separate_session(two_mics, tmp_path, SeparationOptions(n_iter=2))
    assert result.run["separation"]["init"] == ["circular"]  # the geometric demixer needs M >= N
    with pytest.raises(InputError, match="geometry init needs at least as many mics as sources"):
        separate_session(two_mics, tmp_path / "asked", SeparationOptions(n_iter=2, init=("geometry",)))
