"""The spot start: the spatial model started from transfer functions measured on the
recording against every source's spot mic, not from the typed positions and patterns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from studio_sep.separation.initial import initial_model, spot_transfer
from studio_sep.session import dump_session, load_session
from studio_sep.stages import SeparationOptions, separate_session
from studio_sep.stages.settings import resolve_settings
from studio_sep.util.errors import InputError
from tests.test_starts import _misled, _reference_sdr


def _mixture(seed: int = 0, F: int = 40, T: int = 400, M: int = 5, N: int = 3):
    """Sources sparse in time and frequency, mixed in every bin by a known (F, M, N)
    matrix whose row ``n`` (the spot mic of source n) is 1 for its own source and weak
    for the others."""
    rng = np.random.default_rng(seed)
    active = rng.uniform(size=(F, T, N)) < 0.3
    S = active * (rng.normal(size=(F, T, N)) + 1j * rng.normal(size=(F, T, N))) * rng.uniform(0.5, 2, size=(1, 1, N))
    A = (rng.normal(size=(F, M, N)) + 1j * rng.normal(size=(F, M, N))) * 0.5
    for n in range(N):
        A[:, n, :] *= 0.1  # bleed into a spot mic is ~20 dB down …
        A[:, n, n] = 1.0  # … from its own source, the reference of its column
    X = np.einsum("fmn,ftn->ftm", A, S)
    X += 1e-3 * (rng.normal(size=X.shape) + 1j * rng.normal(size=X.shape))
    return X, A


def test_spot_transfer_recovers_known_transfer_functions() -> None:
    X, A = _mixture()
    found = spot_transfer(X, [0, 1, 2])
    assert found.shape == A.shape
    error = np.linalg.norm(found - A, axis=1) / np.linalg.norm(A, axis=1)  # (F, N)
    assert np.median(error) < 0.05 and error.max() < 0.3, (np.median(error), error.max())
    np.testing.assert_allclose(found[:, [0, 1, 2], [0, 1, 2]], 1.0)  # every column relative to its spot mic


def test_spot_transfer_with_no_dominated_frames_is_the_spot_mic_alone() -> None:
    X, _ = _mixture()
    X[:, :, 1] = X[:, :, 0]  # spot mics 0 and 1 identical: neither ever takes 0.6 of the power
    found = spot_transfer(X, [0, 1, 2])
    expected = np.zeros(X.shape[2], dtype=complex)
    expected[1] = 1.0
    np.testing.assert_array_equal(found[:, :, 1], np.broadcast_to(expected, (X.shape[0], X.shape[2])))


def test_the_spot_start_makes_the_demixer_from_the_measured_columns() -> None:
    X, A = _mixture(F=16, T=300)
    init, described = initial_model(X, n_sources=3, init_kinds=("spot",), n_basis=4, seed=0, sample_rate=16000,
                                    n_fft=30, spot_mic_index=[0, 1, 2])
    assert described == "W, H by NMF of the spot mics' demixer's output power"
    # its first N rows nearly invert the true mixing matrix: each output is one source
    QA = np.abs(init.Q_FMM[:, :3] @ A)  # (F, N, N)
    diagonal = np.diagonal(QA, axis1=1, axis2=2)
    off = QA.sum(axis=2) - diagonal
    assert np.median(off / diagonal) < 0.1


def test_the_spot_start_does_not_read_the_typed_geometry_and_survives_a_misleading_manifest(
        rendered_session: Path, tmp_path: Path) -> None:
    """On the manifest whose patterns and positions are wrong (every source 1–1.6 m off), the
    geometric start is misled; the spot start is not: it gives the same images as on the
    right manifest, and the better separation."""
    misled = load_session(_misled(rendered_session))
    right = load_session(rendered_session)
    options = SeparationOptions(n_iter=40, ensemble=1, init=("spot",))
    spot = separate_session(misled, tmp_path / "spot", options)
    spot_right = separate_session(right, tmp_path / "spot-right", options)
    geometry = separate_session(misled, tmp_path / "geometry", dataclasses.replace(options, init=("geometry",)))
    assert spot.run["separation"]["init"] == ["spot"] and geometry.run["separation"]["init"] == ["geometry"]
    assert spot.run["separation"]["spectral_init"] == "W, H by NMF of the spot mics' demixer's output power"
    assert spot.run["log_likelihood"]["final"] == spot_right.run["log_likelihood"]["final"]
    sdr_spot, sdr_geometry = _reference_sdr(misled, tmp_path / "spot"), _reference_sdr(misled, tmp_path / "geometry")
    assert sdr_spot > sdr_geometry + 3.0, (sdr_spot, sdr_geometry)


def test_by_default_both_spatial_starts_run_and_the_higher_likelihood_is_kept(rendered_session: Path,
                                                                           tmp_path: Path) -> None:
    """Every source has a spot mic: the default fits from the geometric start and from the spot
    start and keeps the one whose fits end with the higher log-likelihood; the kept fit is the
    one that start gives alone."""
    misled = load_session(_misled(rendered_session))
    assert resolve_settings(misled).init == ("geometry", "spot")
    both = separate_session(misled, tmp_path / "both", SeparationOptions(n_iter=40, ensemble=1))
    alone = {kind: separate_session(misled, tmp_path / kind, SeparationOptions(n_iter=40, ensemble=1, init=(kind,)))
             for kind in ("geometry", "spot")}
    starts = both.run["separation"]["spatial_starts"]
    finals = {kind: run.run["log_likelihood"]["final"] for kind, run in alone.items()}
    assert starts["log_likelihood"] == pytest.approx(finals, abs=1e-6)
    assert starts["kept"] == max(finals, key=finals.get) == "spot"  # the misled geometric start fits worse
    assert both.run["log_likelihood"]["final"] == pytest.approx(finals["spot"], abs=1e-9)
    assert both.run["separation"]["iterations_run"] == {"geometry": [40], "spot": [40]}
    work = tmp_path / "both" / misled.name / ".studio-sep"
    assert (work / "prior-spot-0.npz").is_file() and (work / "fit-spot-member-0.npz").is_file()
    from studio_sep.io import audio as audio_io

    for source in misled.sources:
        ours = audio_io.read_audio(tmp_path / "both" / misled.name / "stems" / f"{source.name}.wav")[0]
        spot_alone = audio_io.read_audio(tmp_path / "spot" / misled.name / "stems" / f"{source.name}.wav")[0]
        np.testing.assert_array_equal(ours, spot_alone)
    # a second run finds every fit done
    again = separate_session(misled, tmp_path / "both", SeparationOptions(n_iter=40, ensemble=1), force=False)
    assert again.stages == {"prior": "skipped", "separate": "skipped", "images": "skipped"}


def _with_spot_mics(rendered_session: Path, spots: dict[str, str | None], name: str) -> Path:
    session = load_session(rendered_session)
    sources = tuple(dataclasses.replace(s, spot_mic=spots.get(s.name, s.spot_mic)) for s in session.sources)
    path = rendered_session.parent / name
    dump_session(dataclasses.replace(session, sources=sources, path=path), path)
    return path


def test_the_spot_start_needs_a_spot_mic_of_its_own_for_every_source(rendered_session: Path) -> None:
    session = load_session(rendered_session)
    assert resolve_settings(session, SeparationOptions(init=("spot",))).init == ("spot",)
    # with the blind start (one guided fit against the blind one) the default keeps the geometric start
    assert resolve_settings(session, SeparationOptions(blind_start=True)).init == ("geometry",)
    missing = load_session(_with_spot_mics(rendered_session, {"sax": None}, "no-spot.toml"))
    with pytest.raises(InputError, match=r"no-spot\.toml.*sources\[1\]\.spot_mic.*'sax' has none.*use init geometry"):
        resolve_settings(missing, SeparationOptions(init=("spot",)))
    first = session.sources[0].spot_mic
    shared = load_session(_with_spot_mics(rendered_session, {"sax": first}, "shared-spot.toml"))
    with pytest.raises(InputError, match=rf"sources\[1\]\.spot_mic.*'sax' and 'piano' share the spot mic '{first}'"):
        resolve_settings(shared, SeparationOptions(init=("spot",)))
    with pytest.raises(InputError, match="circular and spot both set the spatial model"):
        resolve_settings(session, SeparationOptions(init=("circular", "spot")))
    # without a spot mic for every source, the default is the geometric start alone
    assert resolve_settings(missing).init == ("geometry",)
