"""GCC-PHAT delays and the geometry check on signals with known delays."""

from __future__ import annotations

import numpy as np
import pytest

from studio_sep.dsp.delays import arrival_times_s, check_delays, gcc_phat_delay

RATE = 16000


def _delayed(x_S: np.ndarray, delay: float) -> np.ndarray:
    """``x`` delayed by a fractional number of samples (a phase ramp; circular, on a padded copy)."""
    n = len(x_S) + 4096
    X = np.fft.rfft(x_S, n)
    f = np.fft.rfftfreq(n)
    return np.fft.irfft(X * np.exp(-2j * np.pi * f * delay), n)[:len(x_S)]


def _scene(mics_m, sources_m, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Anechoic mixture: every source white noise, at every mic with its travel time and 1/d."""
    rng = np.random.default_rng(seed)
    tau = arrival_times_s(mics_m, sources_m)
    s = rng.standard_normal((len(sources_m), int(seconds * RATE)))
    return np.stack([sum(_delayed(s[n], tau[m, n] * RATE) / (343.0 * tau[m, n]) for n in range(len(sources_m)))
                     for m in range(len(mics_m))])


@pytest.mark.parametrize("delay", [0.0, 12.0, -37.0, 7.3, -101.6])
def test_gcc_phat_recovers_a_known_delay_within_one_sample(delay: float) -> None:
    x = np.random.default_rng(1).standard_normal(3 * RATE)
    y = 0.6 * _delayed(x, delay) + 0.01 * np.random.default_rng(2).standard_normal(len(x))
    found, peak = gcc_phat_delay(x, y)
    assert abs(found - delay) < 1.0
    assert abs(found - delay) <= 0.25  # the interpolated peak does better than the bar
    assert peak > 0.5


def test_gcc_phat_finds_an_inverted_copy_with_negative_peak() -> None:
    x = np.random.default_rng(3).standard_normal(2 * RATE)
    found, peak = gcc_phat_delay(x, -_delayed(x, 20.0))
    assert found == pytest.approx(20.0, abs=0.25)
    assert peak < -0.5


def test_search_window_picks_the_peak_inside_it() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 2 * RATE))
    x = a + b
    y = _delayed(a, 30.0) + _delayed(b, -50.0)
    assert gcc_phat_delay(x, y, window=(10, 40))[0] == pytest.approx(30.0, abs=0.25)
    assert gcc_phat_delay(x, y, window=(-60, -40))[0] == pytest.approx(-50.0, abs=0.25)


MICS = np.array([[0.0, 0.0, 1.5], [0.3, 0.0, 1.5], [3.0, 2.0, 1.8], [1.0, 3.0, 1.2], [4.0, -1.0, 1.6]])
SOURCES = np.array([[2.0, 1.0, 1.0], [1.0, -1.5, 1.2], [3.5, 0.5, 0.8]])


def test_exact_geometry_has_no_range_error() -> None:
    x = _scene(MICS, SOURCES)
    check = check_delays(x, RATE, MICS, SOURCES, reference=[2, 0, 4])
    assert np.nanmax(np.abs(check.measured_s - check.implied_s)) * RATE < 0.5
    assert np.all(check.mic_error_m < 0.02)


def test_a_misplaced_mic_stands_out() -> None:
    x = _scene(MICS, SOURCES)  # recorded at the true positions
    typed = MICS.copy()
    typed[3] += [0.25, -0.1, 0.0]  # the manifest has mic 3 off by 27 cm
    check = check_delays(x, RATE, typed, SOURCES, reference=[2, 0, 4])
    assert check.mic_error_m[3] > 0.10
    assert np.all(np.delete(check.mic_error_m, 3) < 0.03)


# -- the check on a rendered session (studio_sep.stages.geometry) --------------------------


@pytest.fixture(scope="module")
def misplaced(rendered_session, tmp_path_factory):
    """The rendered trio's manifest with trio_c typed 30 cm off (the audio is the same)."""
    import dataclasses

    from studio_sep.session import dump_session, load_session

    session = load_session(rendered_session)
    mics = tuple(dataclasses.replace(m, position_m=(m.position_m[0] - 0.3, m.position_m[1], m.position_m[2]))
                 if m.name == "trio_c" else m for m in session.mics)
    path = rendered_session.parent / "misplaced.toml"
    dump_session(dataclasses.replace(session, mics=mics, path=path), path)
    return path


def test_geometry_check_agrees_with_an_exact_manifest(rendered_session) -> None:
    from studio_sep.session import load_session
    from studio_sep.stages.geometry import check_geometry

    report = check_geometry(load_session(rendered_session))
    assert report.warnings == []
    assert max(v for v in report.mic_error_cm.values() if v is not None) < 2.0
    assert len(report.rows) == 3 * 6  # every source against the six mics besides its spot mic


def test_geometry_check_names_the_misplaced_mic(misplaced) -> None:
    from studio_sep.session import load_session
    from studio_sep.stages.geometry import check_geometry

    report = check_geometry(load_session(misplaced))
    assert len(report.warnings) == 1 and report.warnings[0].startswith("mic 'trio_c' looks misplaced")
    assert 15 <= report.mic_error_cm["trio_c"] <= 31
    assert str(misplaced) in report.warnings[0]


def test_validate_check_geometry_prints_the_table_and_one_warning(misplaced) -> None:
    from typer.testing import CliRunner

    from studio_sep.cli import app

    result = CliRunner().invoke(app, ["validate", str(misplaced), "--check-geometry"])
    assert result.exit_code == 0, result.output
    assert "measured" in result.stdout and "trio_c" in result.stdout and "implied" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "trio_c" in warnings[0] and "cm" in warnings[0]


def test_run_warns_once_before_separating(misplaced, tmp_path) -> None:
    from typer.testing import CliRunner

    from studio_sep.cli import app

    result = CliRunner().invoke(app, ["run", str(misplaced), "--out", str(tmp_path), "--no-mix",
                                                      "--no-evaluate", "--iterations", "1", "--quiet"])
    lines = [line for line in result.output.splitlines() if "looks misplaced" in line]
    assert result.exit_code == 0, result.output
    assert len(lines) <= 1  # --quiet prints no info lines
    result = CliRunner().invoke(app, ["run", str(misplaced), "--out", str(tmp_path / "2"), "--no-mix",
                                                      "--no-evaluate", "--iterations", "1"])
    lines = [line for line in result.stderr.splitlines() if "looks misplaced" in line]  # a log line: stderr
    assert result.exit_code == 0, result.output
    assert len(lines) == 1 and "trio_c" in lines[0]
    log = next((tmp_path / "2").glob("*/logs/run-*.log")).read_text()
    assert log.count("looks misplaced") == 1


def test_measured_delays_correct_only_a_misplaced_mic(rendered_session: Path) -> None:
    """The geometric start's delay corrections (the measured_delays lever): none on the
    manifest that is right; on one whose ambience mic is typed 40 cm off, that mic's
    corrections are what the move implies, and no other mic is touched."""
    import dataclasses

    from studio_sep.dsp.delays import arrival_times_s
    from studio_sep.dsp.resample import resample
    from studio_sep.session import dump_session, load_mics, load_session
    from studio_sep.stages.geometry import delay_corrections_s

    session = load_session(rendered_session)
    x = resample(load_mics(session), session.sample_rate, 16000)
    assert not np.any(delay_corrections_s(session, x, 16000))
    m = [mic.name for mic in session.mics].index("ambience")
    typed = np.add(session.mics[m].position_m, (0.4, 0.0, 0.0))
    mics = tuple(dataclasses.replace(mic, position_m=tuple(typed)) if i == m else mic
                 for i, mic in enumerate(session.mics))
    path = rendered_session.parent / "ambience-off.toml"
    dump_session(dataclasses.replace(session, mics=mics, path=path), path)
    moved = load_session(path)
    corrections = delay_corrections_s(moved, x, 16000)
    assert not np.any(np.delete(corrections, m, axis=0))
    assert np.count_nonzero(corrections[m]) >= 1
    sources = [s.position_m for s in session.sources]
    true_tau = arrival_times_s([mic.position_m for mic in session.mics], sources)
    typed_tau = arrival_times_s([mic.position_m for mic in moved.mics], sources)
    expected = true_tau[m] - typed_tau[m]  # the reference (stem) mics are where the manifest says
    measured = corrections[m][corrections[m] != 0]
    np.testing.assert_allclose(measured, expected[corrections[m] != 0], atol=0.03 / 343.0)
