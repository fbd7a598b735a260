"""The streaming mix (block by block, chains keeping their state) against the whole-signal
mix, and the streaming level meters against the whole-signal ones. Real pedalboard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from studio_sep import mixing
from studio_sep.io import audio as audio_io
from studio_sep.mixing.plugins import host as plugin_host
from studio_sep.mixing.plugins.errors import PluginJobError
from studio_sep.mixing.plugins.spec import PluginSpec
from studio_sep.mixing.presets import load_preset
from studio_sep.mixing.routing import Route, RoutedFeed
from studio_sep.mixing.stream import PEDALBOARD_BUFFER
from studio_sep.session import load_session
from studio_sep.stages import mix_session
from studio_sep.util.errors import InputError

from . import plugin_faults

SR = 16000


class ArrayImages:
    """An ``(N, M, S)`` array with the ``segment`` reader the streaming mix uses."""

    def __init__(self, images_NMS: np.ndarray):
        self.images_NMS = images_NMS
        self.shape = images_NMS.shape

    def __getitem__(self, key):
        return self.images_NMS[key]

    def segment(self, n, m, start, stop):
        return self.images_NMS[n, m, start:stop]


def _spec(name: str, **params) -> PluginSpec:
    return PluginSpec("builtin", name, params)


def _session_like(tmp_path: Path, seconds: float, tail_s: float = 1.5):
    """Three bursty sources at three mics (silences so reverb tails cross block bounds),
    routes with delays and stateful chains on feeds, buses and the master."""
    rng = np.random.default_rng(7)
    S = int(seconds * SR)
    envelope = (np.sin(2 * np.pi * 0.7 * np.arange(S) / SR) > 0.3).astype(float)
    images = 0.1 * rng.standard_normal((3, 3, S)) * envelope
    preset_file = tmp_path / "stream.toml"
    preset_file.write_text(f"""
[preset]
tail_s = {tail_s}
loudness_lufs = -20.0
true_peak_dbtp = -1.0
format = "pcm24"

[defaults]
feeds = [{{ mic = "@spot" }}]

[master]
chain = [{{ plugin = "Compressor", threshold_db = -24.0, ratio = 3.0 }}, {{ plugin = "Reverb", room_size = 0.5 }}]
""")
    preset = load_preset(preset_file)
    reverb = (_spec("Reverb", room_size=0.9, wet_level=0.6),)
    routes = (
        Route("a", (RoutedFeed(0, 0.0, -0.5, 0, (_spec("HighpassFilter", cutoff_frequency_hz=80.0),)),
                    RoutedFeed(1, -6.0, 0.5, 97, (_spec("Delay", delay_seconds=0.25, feedback=0.4),))),
              reverb, 0.0, 0.0, True),
        Route("b", (RoutedFeed(1, -3.0, 0.2, 0, ()),), (_spec("Chorus"), _spec("Phaser")), 2.0, -0.3, True),
        Route("c", (RoutedFeed(2, 0.0, 0.0, 13, (_spec("MP3Compressor"),)),), reverb, 0.0, 0.4, False),
    )
    return ArrayImages(images), routes, preset


def _streamed(images, routes, preset, block_samples: int):
    events = []
    blocks = list(mixing.mix_blocks(images, routes, preset, sample_rate=SR, open_chain=plugin_host.open_chain_stream,
                                    block_samples=block_samples, callback=lambda *e: events.append(e)))
    assert events == [("mix", n + 1, len(blocks)) for n in range(len(blocks))]
    stems = np.concatenate([s for s, _ in blocks], axis=2)
    master = np.concatenate([m for _, m in blocks], axis=1)
    return stems, master, [m.shape[1] for _, m in blocks]


@pytest.mark.parametrize("block_samples", [PEDALBOARD_BUFFER, 3 * PEDALBOARD_BUFFER])
def test_streaming_mix_equals_the_whole_signal_mix(tmp_path: Path, block_samples: int) -> None:
    images, routes, preset = _session_like(tmp_path, seconds=6.3)
    whole = mixing.mix(images, routes, preset, sample_rate=SR, render_chain=plugin_host.render_chain)
    stems, master, sizes = _streamed(images, routes, preset, block_samples)
    assert len(sizes) > 4 and all(s == block_samples for s in sizes[:-1])
    assert stems.shape == whole.stems_N2S.shape
    assert np.max(np.abs(stems - whole.stems_N2S)) <= 1e-6
    # the reverb rings across block bounds: a tail after the last input sample
    assert np.sqrt(np.mean(stems[0, :, images.shape[2] + 100:images.shape[2] + 4000] ** 2)) > 1e-4
    loudness = mixing.LoudnessMeter(SR, n_channels=2, n_samples=master.shape[1])
    true_peak = mixing.TruePeakMeter(2)
    for start in range(0, master.shape[1], block_samples):
        loudness.push(master[:, start:start + block_samples])
        true_peak.push(master[:, start:start + block_samples])
    gain_db, level = mixing.level_gain(loudness.finish(), true_peak.finish(), loudness_lufs=preset.loudness_lufs,
                                       true_peak_dbtp=preset.true_peak_dbtp)
    remix = master * 10 ** (gain_db / 20)
    assert np.max(np.abs(remix - whole.remix_2S)) <= 1e-6
    assert level == {k: whole.report[k] for k in level}


def test_streaming_mix_refuses_blocks_that_split_pedalboards_buffers(tmp_path: Path) -> None:
    images, routes, preset = _session_like(tmp_path, seconds=1.0)
    with pytest.raises(InputError, match="multiple of 8192"):
        next(mixing.mix_blocks(images, routes, preset, sample_rate=SR, open_chain=plugin_host.open_chain_stream,
                               block_samples=1000))


@pytest.mark.parametrize("name", ["PitchShift", "GSMFullRateCompressor"])
def test_effects_that_do_not_stream_are_rendered_whole(name: str) -> None:
    x = 0.1 * np.random.default_rng(0).standard_normal((2, 5 * PEDALBOARD_BUFFER + 77))
    specs = [_spec(name)]
    stream = plugin_host.open_chain_stream(specs, sample_rate=SR, n_channels=2)
    parts = [stream.push(x[:, s:s + PEDALBOARD_BUFFER]) for s in range(0, x.shape[1], PEDALBOARD_BUFFER)]
    y = np.concatenate([*parts, stream.finish()], axis=1)
    assert np.array_equal(y, plugin_host.render_chain(specs, x, sample_rate=SR))


@pytest.mark.parametrize("rate, n_samples", [(48000, 48000 * 3 + 123), (44100, 19201), (16000, 7000), (16000, 5000)])
def test_streaming_meters_equal_the_whole_signal_meters(rate: int, n_samples: int) -> None:
    rng = np.random.default_rng(3)
    x = 0.3 * rng.standard_normal((2, n_samples)) * np.linspace(0, 1, n_samples) ** 3
    x[:, n_samples // 3:n_samples // 2] = 0.0  # a gated-out stretch
    whole_lufs, whole_peak = mixing.measure_loudness(x, rate), mixing.measure_true_peak(x, rate)
    for block in (1000, 8192, n_samples):
        loudness, true_peak = mixing.LoudnessMeter(rate, n_channels=2, n_samples=n_samples), mixing.TruePeakMeter(2)
        for start in range(0, n_samples, block):
            loudness.push(x[:, start:start + block])
            true_peak.push(x[:, start:start + block])
        lufs = loudness.finish()
        assert lufs == pytest.approx(whole_lufs, abs=1e-9) if math.isfinite(whole_lufs) else lufs == whole_lufs
        assert true_peak.finish() == pytest.approx(whole_peak, abs=1e-9)


ZAM = Path("/usr/lib/vst3")
needs_zam = pytest.mark.skipif(not all((ZAM / f"{n}.vst3").exists() for n in ("ZamEQ2", "ZamCompX2", "ZaMaximX2")),
                               reason="zam-plugins VST3s not installed (apt-get install zam-plugins)")


def _vst3(name: str, dual_mono: bool = False, **params) -> PluginSpec:
    return PluginSpec("vst3", name, params, path=ZAM / f"{name}.vst3", dual_mono=dual_mono, where=f"test: {name}")


def _stream_through(specs, x_CS: np.ndarray, block: int, **kwargs) -> np.ndarray:
    stream = plugin_host.open_chain_stream(specs, sample_rate=48000, n_channels=x_CS.shape[0], **kwargs)
    parts = [stream.push(x_CS[:, s:s + block]) for s in range(0, x_CS.shape[1], block)]
    return np.concatenate([*parts, stream.finish()], axis=1)


@needs_zam
def test_vst3_chain_streams_in_one_worker_as_the_whole_signal_job_renders() -> None:
    """A dual-mono EQ, a compressor and a limiter with 480 samples of latency."""
    specs = [_vst3("ZamEQ2", dual_mono=True), _vst3("ZamCompX2", threshold_db=-20.0), _vst3("ZaMaximX2")]
    x = 0.3 * np.random.default_rng(2).standard_normal((2, 6 * PEDALBOARD_BUFFER + 501))
    whole = plugin_host.render_chain(specs, x, sample_rate=48000)
    streamed = _stream_through(specs, x, 2 * PEDALBOARD_BUFFER)
    assert streamed.shape == whole.shape and np.max(np.abs(streamed - whole)) <= 1e-6


@needs_zam
@pytest.mark.parametrize(("fault", "message"), [
    ("exit", "worker exited with status 3 without a result"),
    ("hang", "timed out after 3 s (worker killed)"),
    ("crosstalk", "parameter read-back mismatch after setting every instance"),
])
def test_a_failing_stream_worker_is_one_job_error(monkeypatch: pytest.MonkeyPatch, fault: str, message: str) -> None:
    specs = [_vst3("ZamCompX2", threshold_db=-20.0), _vst3("ZamCompX2", threshold_db=-10.0)]
    plugin_faults.inject(monkeypatch, fault)
    with pytest.raises(PluginJobError) as caught:
        _stream_through(specs, 0.1 * np.ones((2, PEDALBOARD_BUFFER)), PEDALBOARD_BUFFER, timeout_s=3.0)
    assert message in str(caught.value) and "test: ZamCompX2" in str(caught.value)  # the plugin, by its place
    assert "\n" not in str(caught.value)


def test_clipper_over_blocks_says_what_clip_for_format_says() -> None:
    x = np.linspace(-1.5, 1.5, 3001)[None].repeat(2, axis=0)
    whole, warnings = mixing.clip_for_format(x, "pcm24", "remix")
    clipper = mixing.Clipper("pcm24", "remix")
    blocks = np.concatenate([clipper(x[:, s:s + 700]) for s in range(0, x.shape[1], 700)], axis=1)
    assert np.array_equal(blocks, whole) and clipper.warnings() == warnings


def test_the_mix_stage_writes_the_whole_signal_mix(rendered_session: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage in several blocks: the remix and stems files hold the reference mix's
    samples (to pcm24 resolution), with a reverb on every bus."""
    monkeypatch.setattr(mixing, "BLOCK_SAMPLES", 2 * PEDALBOARD_BUFFER)
    session = load_session(rendered_session)
    preset_file = tmp_path / "verb.toml"
    preset_file.write_text("""
[preset]
tail_s = 1.0
loudness_lufs = -20.0
format = "float32"

[defaults]
feeds = [{ mic = "@spot", pan = "@position" }]
chain = [{ plugin = "Reverb", room_size = 0.8 }]

[master]
chain = [{ plugin = "Compressor", threshold_db = -20.0 }]
""")
    outcome = mix_session(session, tmp_path / "out", preset_file, source="truth")
    preset = load_preset(preset_file)
    from studio_sep.stages.settings import choose_stem_mics

    routes = mixing.resolve_routes(session, preset, choose_stem_mics(session, {}), sample_rate=session.sample_rate)
    truth = np.stack([audio_io.read_audio(session.truth.images[s.name])[0] for s in session.sources])
    whole = mixing.mix(truth, routes, preset, sample_rate=session.sample_rate, render_chain=plugin_host.render_chain)
    remix = audio_io.read_audio(outcome.remix)[0]
    assert remix.shape[1] > 4 * 2 * PEDALBOARD_BUFFER
    assert np.max(np.abs(remix - whole.remix_2S)) <= 1e-6  # float32 files: float32 rounding of the same values
    for n, path in enumerate(outcome.stems):
        assert np.max(np.abs(audio_io.read_audio(path)[0] - whole.stems_N2S[n])) <= 1e-6
    assert outcome.report["gain_db"] == whole.report["gain_db"]
    assert audio_io.read_bext(outcome.stems[0]).description.endswith("(verb, pre-fader)")
    assert not list((tmp_path / "out").rglob("*.f64")) and not list((tmp_path / "out").rglob("*.part"))
