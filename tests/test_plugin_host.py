"""plugin_host: built-in filter facts, VST3 parameters in fresh workers, latency, crashes, refusals.

Real pedalboard and Debian's zam-plugins VST3s (apt-get install zam-plugins), no mocks.
Crash, hang and cross-talk cases start the workers through the test-only fault wrapper
(tests/plugin_faults.py), which fails a render job on purpose or runs the real worker.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from studio_sep.mixing.plugins.host import (
    PluginError,
    PluginJobError,
    describe_plugin,
    render_chain,
    render_chain_with_report,
    scan_plugins,
    validate_chain,
)
from studio_sep.mixing.plugins.spec import PluginSpec

from . import plugin_faults

VST3_DIR = Path("/usr/lib/vst3")
ZAMCOMP = VST3_DIR / "ZamComp.vst3"        # mono (1 channel) compressor
ZAMCOMPX2 = VST3_DIR / "ZamCompX2.vst3"    # stereo compressor
ZAMAXIMX2 = VST3_DIR / "ZaMaximX2.vst3"    # stereo lookahead maximiser, reports latency
needs_zam = pytest.mark.skipif(
    not all(p.is_dir() for p in (ZAMCOMP, ZAMCOMPX2, ZAMAXIMX2)),
    reason="zam-plugins VST3s not installed in /usr/lib/vst3 (apt-get install zam-plugins)")

RATE = 48000


def builtin(name: str, **params) -> PluginSpec:
    return PluginSpec(kind="builtin", name=name, params=params, where=f"test.toml: chain.{name}")


def vst3(path: Path, dual_mono: bool = False, where: str = "test.toml: chain.vst3", **params) -> PluginSpec:
    return PluginSpec(kind="vst3", name=path.stem, params=params, path=path, dual_mono=dual_mono, where=where)


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64))))


def noise(n_channels: int, n_samples: int, rms: float = 0.5, seed: int = 0) -> np.ndarray:
    return (rms * np.random.default_rng(seed).standard_normal((n_channels, n_samples))).astype(np.float32)


# --------------------------------------------------------------------------- built-in chains


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_chain_returns_input_exactly_plus_tail(dtype) -> None:
    x_CS = noise(2, 1001).astype(dtype)  # odd length
    before = x_CS.copy()
    y_CS = render_chain([], x_CS, sample_rate=RATE, tail_samples=7)
    assert y_CS.dtype == dtype and y_CS.shape == (2, 1008)
    np.testing.assert_array_equal(y_CS[:, :1001], x_CS)
    np.testing.assert_array_equal(y_CS[:, 1001:], 0.0)
    np.testing.assert_array_equal(x_CS, before)  # the caller's array is untouched


@pytest.mark.parametrize(("name", "dtype"), [("HighpassFilter", np.float32), ("LowpassFilter", np.float64)])
def test_builtin_filter_is_minus_3_db_at_its_cutoff(name: str, dtype) -> None:
    cutoff_hz = 1000.0
    t_s = np.arange(RATE) / RATE
    x_CS = np.stack([np.sin(2 * np.pi * cutoff_hz * t_s)] * 2).astype(dtype)
    chain = [builtin(name, cutoff_frequency_hz=cutoff_hz)]
    y_CS, report = render_chain_with_report(chain, x_CS, sample_rate=RATE)
    assert not report.in_worker  # built-in only: rendered in-process
    assert y_CS.dtype == dtype and y_CS.shape == x_CS.shape
    half = RATE // 2  # steady state
    assert level_db(y_CS[:, half:]) - level_db(x_CS[:, half:]) == pytest.approx(-3.01, abs=0.1)


def test_builtin_tail_keeps_a_delay_echo() -> None:
    x_CS = np.zeros((1, 100), dtype=np.float32)
    x_CS[0, 0] = 1.0
    chain = [builtin("Delay", delay_seconds=0.01, mix=1.0)]
    y_CS = render_chain(chain, x_CS, sample_rate=RATE, tail_samples=1000)
    assert y_CS.shape == (1, 1100)
    # The echo lies in the padded tail (pedalboard 0.9.26's Delay puts it at 479, not 480).
    assert abs(int(np.argmax(np.abs(y_CS[0]))) - 480) <= 1 and np.max(np.abs(y_CS[0, 400:])) > 0.5


def test_builtin_output_overflow_is_a_job_error() -> None:
    with pytest.raises(PluginJobError, match="NaN or inf"):
        render_chain([builtin("Gain", gain_db=1000.0)], noise(1, 1000), sample_rate=RATE)


# --------------------------------------------------------------------------- refusals before rendering


BAD_BUILTIN_CHAINS = [
    (builtin("Reverbb"), RATE, "unknown built-in plugin 'Reverbb'; did you mean 'Reverb'"),
    (builtin("Pedalboard"), RATE, "unknown built-in plugin 'Pedalboard'"),
    (builtin("Reverb", room_sise=0.5), RATE, "did you mean 'room_size'"),
    (builtin("Reverb", room_size=2.0), RATE, "Room Size value must be between 0.0 and 1.0"),
    (builtin("Gain", gain_db="loud"), RATE, "gain_db must be a finite number"),
    (builtin("Reverb"), 1, "sample rate 1 Hz is outside 8000..384000 Hz for chain [Reverb (test.toml: "),
    (builtin("Reverb"), 0, "sample rate 0 Hz is outside"),
]


@pytest.mark.parametrize(("spec", "rate", "message"), BAD_BUILTIN_CHAINS)
def test_bad_builtin_chain_fails_in_one_line(spec: PluginSpec, rate: float, message: str) -> None:
    with pytest.raises(PluginError) as caught:
        render_chain([spec], noise(2, 100), sample_rate=rate)
    text = str(caught.value)
    assert message in text and "\n" not in text and "test.toml: chain." in text


def test_bad_audio_layout_is_refused() -> None:
    with pytest.raises(PluginError, match=r"\(channels, samples\)"):
        render_chain([], np.zeros(100, dtype=np.float32), sample_rate=RATE)


@needs_zam
@pytest.mark.parametrize(("spec", "message"), [
    (vst3(VST3_DIR / "NoSuchPlugin.vst3"), "VST3 plugin not found"),
    (vst3(ZAMCOMP, dual_mono=True, treshold_db=-20.0), "did you mean 'threshold_db'? valid names: "),
    (vst3(ZAMCOMP, dual_mono=True, threshold_db=10.0), "threshold_db = 10.0 is outside -80..0 dB"),
    (vst3(ZAMCOMP, dual_mono=True, threshold_db="loud"), "threshold_db must be a finite number"),
    (vst3(ZAMCOMP, dual_mono=True, gain_reduction_db=3.0), "gain_reduction_db is a read-only parameter"),
    (vst3(ZAMCOMP, dual_mono=True, current_program="Nope"), "'Zero', 'PoppySnare', 'VocalLeveller'"),
    (vst3(ZAMCOMP, threshold_db=-20.0), "ZamComp is a mono plugin (1 channel) on a 2-channel signal "
                                        "(fix: set dual_mono = true"),
    (vst3(ZAMCOMPX2, dual_mono=True), "dual_mono needs a mono plugin but ZamCompX2 takes 2 channels"),
])
def test_bad_vst3_chain_fails_before_rendering(monkeypatch, spec: PluginSpec, message: str) -> None:
    # A worker would die at once: a PluginError proves nothing was rendered.
    plugin_faults.inject(monkeypatch, "exit")
    with pytest.raises(PluginError) as caught:
        render_chain([builtin("Gain", gain_db=0.0), spec], noise(2, 100), sample_rate=RATE)
    text = str(caught.value)
    assert message in text and "\n" not in text and "test.toml: chain.vst3" in text


@needs_zam
def test_unknown_vst3_parameter_lists_the_writable_names_only() -> None:
    with pytest.raises(PluginError) as caught:
        validate_chain([vst3(ZAMCOMP, attak_ms=5.0)], sample_rate=RATE, n_channels=1)
    text = str(caught.value)
    assert "did you mean 'attack_ms'?" in text and "threshold_db" in text and "makeup_db" in text
    assert "gain_reduction_db" not in text and "buffer_size_frames" not in text


# --------------------------------------------------------------------------- VST3 rendering


@needs_zam
def test_scan_reports_zam_plugins_and_survives_a_broken_bundle(tmp_path: Path) -> None:
    broken = tmp_path / "Broken.vst3" / "Contents" / "x86_64-linux"
    broken.mkdir(parents=True)
    (broken / "Broken.so").write_bytes(b"not a shared object")
    infos = {Path(i.path).name: i for i in scan_plugins([tmp_path, VST3_DIR])}
    assert infos["Broken.vst3"].error and not infos["Broken.vst3"].ok
    comp, maxim = infos["ZamComp.vst3"], infos["ZaMaximX2.vst3"]
    assert comp.ok and comp.is_mono and maxim.channel_counts == (2,)
    assert maxim.latency_samples > 0 and comp.latency_samples == 0
    threshold = comp.param("threshold_db")
    assert (threshold.min_value, threshold.max_value, threshold.label) == (-80.0, 0.0, "dB")
    assert threshold.writable
    assert not comp.param("gain_reduction_db").writable
    start = time.perf_counter()
    assert describe_plugin(ZAMCOMP) == comp  # cached per path and mtime: no worker
    assert time.perf_counter() - start < 0.1


@needs_zam
def test_vst3_threshold_lowers_a_loud_signal_and_reads_back() -> None:
    x_CS = noise(1, RATE // 2)
    levels = {}
    for threshold_db in (-40.0, 0.0):
        spec = vst3(ZAMCOMP, threshold_db=threshold_db, ratio=20.0)
        y_CS, report = render_chain_with_report([spec], x_CS, sample_rate=RATE)
        assert report.in_worker and y_CS.shape == x_CS.shape and y_CS.dtype == np.float32
        got = report.readback[0][0]  # read back in the worker, after rendering
        assert got["threshold_db"] == pytest.approx(threshold_db, abs=1e-3)
        assert got["ratio"] == pytest.approx(20.0, abs=1e-3)
        levels[threshold_db] = level_db(y_CS[:, RATE // 10:])
    assert levels[0.0] == pytest.approx(level_db(x_CS[:, RATE // 10:]), abs=1.0)  # -6 dBFS: below 0 dB
    assert levels[-40.0] < levels[0.0] - 25.0


@needs_zam
def test_two_instances_keep_their_own_values(monkeypatch) -> None:
    first = vst3(ZAMCOMPX2, where="a", threshold_db=-30.0, ratio=20.0, makeup_db=20.0)
    second = vst3(ZAMCOMPX2, where="b", threshold_db=-10.0, ratio=4.0)
    x_CS = noise(2, RATE // 4, rms=0.1)
    y_CS, report = render_chain_with_report([first, second], x_CS, sample_rate=RATE)
    assert report.readback[0][0]["threshold_db"] == pytest.approx(-30.0, abs=1e-3)
    assert report.readback[1][0]["threshold_db"] == pytest.approx(-10.0, abs=1e-3)
    # The same stages as two jobs, each with a single instance in its own worker.
    reference = render_chain([second], render_chain([first], x_CS, sample_rate=RATE), sample_rate=RATE)
    np.testing.assert_allclose(y_CS, reference, atol=1e-6)
    # Values swapped between instances (simulated by the fault wrapper) are caught by read-back.
    plugin_faults.inject(monkeypatch, "crosstalk")
    with pytest.raises(PluginJobError, match=r"\[a\] failed: parameter read-back mismatch after setting"):
        render_chain([first, second], x_CS, sample_rate=RATE)


@needs_zam
def test_dual_mono_runs_one_instance_per_channel() -> None:
    x_CS = noise(2, RATE // 4)
    x_CS[1] *= 0.01  # -46 dBFS: below a -30 dB threshold
    y_CS, report = render_chain_with_report([vst3(ZAMCOMP, dual_mono=True, threshold_db=-30.0, ratio=20.0)],
                                            x_CS, sample_rate=RATE)
    assert y_CS.shape == (2, RATE // 4) and len(report.readback[0]) == 2
    tail = slice(RATE // 10, None)
    assert level_db(y_CS[0, tail]) < level_db(x_CS[0, tail]) - 15.0
    assert level_db(y_CS[1, tail]) == pytest.approx(level_db(x_CS[1, tail]), abs=0.5)


@needs_zam
def test_reported_latency_is_compensated_to_the_sample() -> None:
    assert describe_plugin(ZAMAXIMX2).latency_samples == 480
    x_CS = np.zeros((2, 4000), dtype=np.float32)
    x_CS[:, 1000] = 0.25  # well below the 0 dB threshold: the maximiser only delays
    x_CS[1, 2500] = -0.125
    y_CS = render_chain([vst3(ZAMAXIMX2)], x_CS, sample_rate=RATE)
    for channel in (0, 1):
        lags = np.correlate(y_CS[channel], x_CS[channel], mode="full")
        assert int(np.argmax(np.abs(lags))) - (x_CS.shape[1] - 1) == 0
    assert int(np.argmax(y_CS[0])) == 1000 and int(np.argmin(y_CS[1])) == 2500


@needs_zam
@pytest.mark.parametrize(("fault", "message"), [
    ("exit", "worker exited with status 3 without a result"),
    ("segv", "worker crashed (SIGSEGV)"),
    ("hang", "timed out after 3 s (worker killed)"),
])
def test_crashing_or_hanging_job_fails_alone(monkeypatch, fault: str, message: str) -> None:
    spec = vst3(ZAMCOMPX2, where="mix.toml: master[0]", threshold_db=-20.0)
    x_CS = noise(2, 4800)
    plugin_faults.inject(monkeypatch, fault)
    with pytest.raises(PluginJobError) as caught:
        render_chain([spec], x_CS, sample_rate=RATE, timeout_s=3.0)
    text = str(caught.value)
    assert message in text and "ZamCompX2 (mix.toml: master[0])" in text and "\n" not in text
    monkeypatch.undo()  # the real worker entry point again
    y_CS = render_chain([spec], x_CS, sample_rate=RATE)  # the next job runs fine
    assert y_CS.shape == x_CS.shape and np.all(np.isfinite(y_CS))
