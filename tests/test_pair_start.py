"""The pair start (``init = ["delays"]``, the default for two mics without a spot mic per
source): the typed geometry's steering vectors with the inter-mic delays the recording shows."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from studio_sep.dsp.delays import arrival_times_s, gcc_phat_peaks
from studio_sep.separation.initial import pair_transfer
from studio_sep.session import load_session
from studio_sep.stages import SeparationOptions, separate_session
from studio_sep.stages.fit import keep_start
from studio_sep.stages.settings import resolve_settings
from studio_sep.util.errors import InputError
from tests.test_starts import _reference_sdr


def _delayed(x: np.ndarray, delay: float) -> np.ndarray:
    """``x`` delayed by ``delay`` samples (fractional: a phase ramp in frequency, circular)."""
    f = np.fft.rfftfreq(len(x))
    return np.fft.irfft(np.fft.rfft(x) * np.exp(-2j * np.pi * f * delay), len(x))


def test_gcc_phat_peaks_find_each_source_of_a_pair() -> None:
    """Two sources, each loud in its own bursts, reach mic 1 3.0 and −4.5 samples after mic 0:
    the two highest peaks are those delays, to within an eighth of a sample."""
    rng = np.random.default_rng(0)
    n = 4 * 16000
    bursts = np.repeat(rng.uniform(size=(2, n // 1600)) < 0.5, 1600, axis=1)
    s = rng.normal(size=(2, n)) * (0.2 + bursts)
    x0 = s[0] + s[1]
    x1 = _delayed(s[0], 3.0) + 0.8 * _delayed(s[1], -4.5) + 1e-3 * rng.normal(size=n)
    found = gcc_phat_peaks(x0, x1, 2, max_lag=10.0)
    np.testing.assert_allclose(np.sort(found), [-4.5, 3.0], atol=0.125)
    # only lags within ±max_lag: the source at +3.0 is out of reach, the strongest left is repeated
    assert np.all(np.abs(gcc_phat_peaks(x0, x1, 3, max_lag=2.0)) <= 2.0)


def test_pair_transfer_puts_the_measured_delays_in_the_typed_order() -> None:
    """Source 0 is typed right of source 1 (its typed delay the larger); the measured delays,
    whatever their order, go to the sources in that order; magnitudes stay the typed ones."""
    F, n_fft = 9, 16
    typed_delays = [2.0, -1.0]
    rng = np.random.default_rng(1)
    magnitude = rng.uniform(0.5, 2.0, size=(F, 2, 2))
    magnitude[:, 0] = 1.0
    A_typed = magnitude * np.exp(1j * rng.uniform(-3, 3, size=(F, 2, 2)))
    A = pair_transfer(A_typed, typed_delays, [-5.0, 3.0], n_fft=n_fft)
    f = np.arange(F) / n_fft
    np.testing.assert_allclose(A[:, 0], 1.0)
    np.testing.assert_allclose(A[:, 1, 0], magnitude[:, 1, 0] * np.exp(-2j * np.pi * f * 3.0))
    np.testing.assert_allclose(A[:, 1, 1], magnitude[:, 1, 1] * np.exp(-2j * np.pi * f * -5.0))


def test_keep_start_overrules_the_typed_geometry_only_by_more_than_the_spread() -> None:
    assert keep_start({"geometry": [1.0, 1.1, 0.9]}) == "geometry"
    # 0.05 higher, but the geometric start's members spread by 0.08: the typed geometry stays
    assert keep_start({"geometry": [1.0, 1.1, 0.9], "spot": [1.05, 1.05, 1.05]}) == "geometry"
    assert keep_start({"geometry": [1.0, 1.0, 1.0], "spot": [1.2, 1.25, 1.15]}) == "spot"
    assert keep_start({"geometry": [1.0], "delays": [1.0]}) == "geometry"  # a tie: the first
    assert keep_start({"geometry": [1.0], "spot": [1.1], "delays": [1.3]}) == "delays"


def _pair_scene():
    """A stereo pair (17 cm, omni) and two GM sources 1.5 m away at −40° and +35°, typed at −65°
    and −15°: the typed order is right, the typed delays (−6.0 and −1.8 samples) are not (−4.7
    and +4.2)."""
    from studio_sep.sim.zoo_scenes import axis_values, draw_scene

    scene = draw_scene(next(i for i in range(40) if axis_values(i)["layout"] == "pair"
                            and axis_values(i)["material"] == "gm"))
    centre = np.mean([m.position_m for m in scene.mics], axis=0)

    def at(degrees: float) -> tuple[float, float, float]:
        a = math.radians(degrees)
        return (float(centre[0] + 1.5 * math.cos(a)), float(centre[1] + 1.5 * math.sin(a)), 1.2)

    mics = tuple(dataclasses.replace(m, pattern="omni", typed_pattern="omni", typed_position_m=m.position_m)
                 for m in scene.mics)
    sources = tuple(dataclasses.replace(s, position_m=at(true), typed_position_m=at(typed))
                    for s, true, typed in zip(scene.sources, (-40.0, 35.0), (-65.0, -15.0)))
    return dataclasses.replace(scene, soundfont="TimGM6mb", sample_rate=16000, rt60_s=0.3, snr_db=40.0,
                               mics=mics, sources=sources)


@pytest.fixture(scope="module")
def pair_session(tmp_path_factory) -> Path:
    if not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file():
        pytest.skip("TimGM6mb not installed (scripts/install-system-deps.sh)")
    from studio_sep.sim.zoo import render_scene

    return render_scene(_pair_scene(), tmp_path_factory.mktemp("pair") / "scene", duration_s=4.0)


def test_a_pair_starts_from_the_recorded_delays_and_separates_better_than_its_typed_geometry(
        pair_session: Path, tmp_path: Path) -> None:
    session = load_session(pair_session)
    assert resolve_settings(session).init == ("delays",)  # the default for a pair without spot mics
    pair = separate_session(session, tmp_path / "pair", SeparationOptions())
    separate_session(session, tmp_path / "geometry", SeparationOptions(init=("geometry",)))
    assert pair.run["separation"]["init"] == ["delays"]
    assert pair.run["separation"]["spectral_init"] == "W, H by NMF of the measured delays' demixer's output power"
    scene = _pair_scene()
    t = arrival_times_s([m.position_m for m in scene.mics], [s.position_m for s in scene.sources])
    true = (t[1] - t[0]) * 16000  # (−4.7, +4.2) samples
    measured = pair.run["stages"]["prior"]["pair_delays_samples"]
    np.testing.assert_allclose(np.sort(measured), np.sort(true), atol=1.0)
    sdr_pair, sdr_geometry = _reference_sdr(session, tmp_path / "pair"), _reference_sdr(session, tmp_path / "geometry")
    assert sdr_pair > sdr_geometry + 5.0, (sdr_pair, sdr_geometry)


def test_the_delays_init_needs_a_pair_and_no_circular(rendered_session: Path) -> None:
    session = load_session(rendered_session)  # the trio: seven mics
    with pytest.raises(InputError) as error:
        resolve_settings(session, SeparationOptions(init=("delays",)))
    assert "separation.init" in str(error.value) and "pair of mics; this session has 7" in str(error.value)
    with pytest.raises(InputError, match="circular and delays both set the spatial model"):
        resolve_settings(session, SeparationOptions(init=("circular", "delays")))
