"""The mixing stage: separated images + a preset → stereo stems and a stereo remix.

:func:`mix` renders whole signals: it is the reference (and short mixes' shortcut); the
mix stage renders the same signal flow block by block (:mod:`studio_sep.mixing.stream`),
whose samples equal these (tested).

Signal flow for each source (all arrays ``(channels, samples)``, float64):

1. every feed takes the source's image at one mic (mono), runs the feed's chain,
   applies its gain and delay, and pans it into stereo (constant-power law: −3 dB
   per side at centre);
2. the feeds are summed into the source's stereo bus, which runs the source's chain:
   that bus is the source's **stem** (pre-fader), as written for the DAW;
3. the fader applies the source's gain, balance (stereo pan: the far side is
   attenuated linearly, the near side kept at unity) and mute/solo.

The faded stems sum to the **remix input**; the master chain turns it into the remix,
which is then brought to the preset's loudness (ITU-R BS.1770, pyloudnorm) without its
true peak (4× oversampled) exceeding the preset's ceiling. Every buffer is padded by
the preset's tail plus the longest feed delay before processing, so effect tails are
kept; stems and remix all have ``n_samples + tail`` samples.

Routing (which mic images feed each source, pans and delays resolved against the
session) is :mod:`studio_sep.mixing.routing`. Chains run through
:mod:`studio_sep.mixing.plugins.host` (VST3 plugins in a fresh worker process per chain
render).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from studio_sep.mixing.meters import TRUE_PEAK_OVERSAMPLING
from studio_sep.mixing.presets import Preset
from studio_sep.mixing.routing import Route, balance_gains, pan_gains
from studio_sep.util.errors import InputError


@dataclass(frozen=True)
class MixResult:
    stems_N2S: np.ndarray  #: pre-fader stereo stems, one per source
    remix_2S: np.ndarray
    routes: tuple[Route, ...]
    report: dict


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def mix(
    images_NMS: np.ndarray,
    routes: tuple[Route, ...],
    preset: Preset,
    *,
    sample_rate: int,
    render_chain: Callable[..., np.ndarray],
    callback: Callable[..., None] | None = None,
) -> MixResult:
    """Render stems and the remix from separated images.

    Parameters
    ----------
    images_NMS : ndarray, shape (N, M, S), or an object with that ``shape`` whose
        ``images_NMS[n, m]`` gives one (S,) image
        Each source's image at every mic, in session order. Only the images the routes
        feed are read, one at a time (``studio_sep.stages.images.LazyImages`` reads them from files,
        so a long session's images are never all in memory).
    routes : from :func:`studio_sep.mixing.routing.resolve_routes`
    render_chain : callable
        ``render_chain(specs, audio_CS, sample_rate=...) -> audio_CS`` (the plugin host).
    """
    report_progress = callback or (lambda stage, done, total, detail="": None)
    N, _, S = images_NMS.shape
    length = mix_length(routes, preset, n_samples=S, sample_rate=sample_rate)
    stems = np.zeros((N, 2, length))
    for n, route in enumerate(routes):
        bus = np.zeros((2, length))
        for feed in route.feeds:
            x = np.zeros((1, length))
            x[0, feed.delay_samples:feed.delay_samples + S] = images_NMS[n, feed.mic]
            if feed.chain:
                x = check_chain_output(render_chain(list(feed.chain), x, sample_rate=sample_rate), length,
                                       f"{route.source} feed")
                x = x.mean(axis=0, keepdims=True) if x.shape[0] > 1 else x
            left, right = pan_gains(feed.pan)
            bus += db_to_gain(feed.gain_db) * np.concatenate([left * x, right * x])
        if route.chain:
            bus = check_chain_output(render_chain(list(route.chain), bus, sample_rate=sample_rate), length,
                                     route.source)
        stems[n] = bus
        report_progress("mix sources", n + 1, N)

    remix_input = np.zeros((2, length))
    for n, route in enumerate(routes):
        if route.audible:
            left, right = balance_gains(route.pan)
            remix_input += db_to_gain(route.gain_db) * stems[n] * np.array([[left], [right]])
    remix = remix_input
    if preset.master:
        remix = check_chain_output(render_chain(list(preset.master), remix_input, sample_rate=sample_rate), length,
                                   "master")
    report_progress("master", 1, 1)
    remix, level = normalise(remix, sample_rate, loudness_lufs=preset.loudness_lufs,
                             true_peak_dbtp=preset.true_peak_dbtp)
    report = mix_report(routes, preset, n_samples=S, length=length, sample_rate=sample_rate, level=level)
    return MixResult(stems_N2S=stems, remix_2S=remix, routes=routes, report=report)


def mix_length(routes: tuple[Route, ...], preset: Preset, *, n_samples: int, sample_rate: int) -> int:
    """Samples of the stems and the remix: the images' plus the preset's tail and the
    longest feed delay."""
    max_delay = max((feed.delay_samples for r in routes for feed in r.feeds), default=0)
    return n_samples + round(preset.tail_s * sample_rate) + max_delay


def mix_report(routes: tuple[Route, ...], preset: Preset, *, n_samples: int, length: int, sample_rate: int,
               level: dict) -> dict:
    """The mix's report: lengths, the level report of :func:`level_gain`, the routes and chains."""
    return {"length_samples": length, "tail_samples": length - n_samples, "sample_rate": sample_rate, **level,
            "routes": [{"source": r.source, "gain_db": r.gain_db, "pan": round(r.pan, 4), "audible": r.audible,
                        "feeds": [{"mic": f.mic, "gain_db": f.gain_db, "pan": round(f.pan, 4),
                                   "delay_samples": f.delay_samples, "chain": [spec.to_dict() for spec in f.chain]}
                                  for f in r.feeds],
                        "chain": [spec.to_dict() for spec in r.chain]} for r in routes],
            "master": [spec.to_dict() for spec in preset.master]}


def check_chain_output(y: np.ndarray, length: int, what: str) -> np.ndarray:
    """A chain's output as float64, checked: ``(channels, length)`` and finite."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != length:
        raise InputError(None, what, f"a chain returned shape {y.shape}, expected (channels, {length})",
                         "this is a bug in the plugin host; please report it")
    if not np.all(np.isfinite(y)):
        raise InputError(None, what, "a chain produced NaN/inf samples", "check the chain's plugins and values")
    return y


def measure_true_peak(x_CS: np.ndarray, sample_rate: int) -> float:
    """True peak in dBTP: the peak of the signal oversampled 4× (ITU-R BS.1770-4 Annex 2)."""
    from scipy.signal import resample_poly

    up = resample_poly(x_CS, TRUE_PEAK_OVERSAMPLING, 1, axis=-1)
    peak = max(float(np.max(np.abs(up))), float(np.max(np.abs(x_CS))))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def measure_loudness(x_CS: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS, ITU-R BS.1770 via pyloudnorm); -inf for silence or
    for signals shorter than one 400 ms gating block."""
    import pyloudnorm

    if x_CS.shape[1] < int(0.4 * sample_rate):
        return -math.inf
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x_CS.T))


def normalise(x_CS: np.ndarray, sample_rate: int, *, loudness_lufs: float | None,
              true_peak_dbtp: float | None) -> tuple[np.ndarray, dict]:
    """Bring a remix to a loudness target, never letting its true peak exceed a ceiling.

    The gain is the smaller of the loudness gain and the ceiling gain: when the ceiling
    wins, the loudness target is not reached and the report says so (no limiter is
    used: pedalboard's Limiter does not hold a true-peak ceiling).
    """
    gain_db, report = level_gain(measure_loudness(x_CS, sample_rate), measure_true_peak(x_CS, sample_rate),
                                 loudness_lufs=loudness_lufs, true_peak_dbtp=true_peak_dbtp)
    return x_CS * db_to_gain(gain_db), report


def level_gain(measured: float, peak: float, *, loudness_lufs: float | None,
               true_peak_dbtp: float | None) -> tuple[float, dict]:
    """The gain (dB) of :func:`normalise` from a signal's loudness (LUFS) and true peak
    (dBTP), and the level report."""
    gain_db = 0.0
    warnings = []
    if loudness_lufs is not None and math.isfinite(measured):
        gain_db = loudness_lufs - measured
    if true_peak_dbtp is not None and math.isfinite(peak) and peak + gain_db > true_peak_dbtp:
        limited = true_peak_dbtp - peak
        if loudness_lufs is not None:
            warnings.append(f"loudness target {loudness_lufs:g} LUFS not reached: the true-peak ceiling "
                            f"{true_peak_dbtp:g} dBTP allows {measured + limited:.1f} LUFS")
        gain_db = limited
    report = {"loudness_in_lufs": _round(measured), "true_peak_in_dbtp": _round(peak),
              "gain_db": round(gain_db, 3), "loudness_target_lufs": loudness_lufs,
              "true_peak_ceiling_dbtp": true_peak_dbtp, "loudness_out_lufs": _round(measured + gain_db),
              "true_peak_out_dbtp": _round(peak + gain_db), "warnings": warnings}
    return gain_db, report


def _round(v: float) -> float | None:
    return round(v, 3) if math.isfinite(v) else None


def clip_for_format(x_CS: np.ndarray, fmt: str, what: str) -> tuple[np.ndarray, list[str]]:
    """Integer formats hold [-1, 1): clip beyond it, and say how many samples were clipped."""
    clipper = Clipper(fmt, what)
    y = clipper(x_CS)
    return y, clipper.warnings()


class Clipper:
    """:func:`clip_for_format` over consecutive blocks of one signal: ``clipper(x_CB)``
    clips a block; ``warnings()`` then says, for the whole signal, what
    :func:`clip_for_format` says."""

    def __init__(self, fmt: str, what: str):
        self.fmt, self.what = fmt, what
        self.over, self.peak = 0, 0.0

    def __call__(self, x_CB: np.ndarray) -> np.ndarray:
        if self.fmt == "float32":
            return x_CB
        over = int(np.count_nonzero(np.abs(x_CB) > 1.0))
        if not over:
            return x_CB
        self.over += over
        self.peak = max(self.peak, float(np.max(np.abs(x_CB))))
        return np.clip(x_CB, -1.0, 1.0)

    def warnings(self) -> list[str]:
        if not self.over:
            return []
        peak_db = 20 * math.log10(self.peak)
        return [(f"{self.what}: {self.over} samples clipped at 0 dBFS (peak {peak_db:+.2f} dBFS); "
                 "lower the gains, set true_peak_dbtp, or use format = \"float32\"")]
