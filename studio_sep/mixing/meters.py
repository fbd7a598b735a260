"""Streaming level meters: integrated loudness (ITU-R BS.1770-4, as pyloudnorm measures
it) and true peak (4× oversampled), fed one block at a time, so a long remix is measured
without holding it (or its 4× oversampled copy) in memory.

Both give the whole-signal measurement of :func:`studio_sep.mixing.render.measure_loudness`
and :func:`studio_sep.mixing.render.measure_true_peak` to rounding, whatever the blocks
(tested against them). Arrays are ``(channels, samples)`` float64.
"""

from __future__ import annotations

import math

import numpy as np

TRUE_PEAK_OVERSAMPLING = 4
#: Input samples of context on each side of a block when oversampling it: more than
#: the half-length of scipy's ``resample_poly`` filter for 4× (10·4 taps at the
#: oversampled rate, i.e. 10 input samples), so every oversampled value inside the
#: block is the one the whole signal gives.
_TRUE_PEAK_MARGIN = 64


class TruePeakMeter:
    """True peak of a signal given block by block: ``push`` the blocks in order, then
    ``finish()`` gives dBTP (-inf for silence)."""

    def __init__(self, n_channels: int):
        self._history = np.zeros((n_channels, _TRUE_PEAK_MARGIN))  # samples before the pending ones
        self._pending = np.zeros((n_channels, 0))
        self._peak = 0.0

    def push(self, x_CB: np.ndarray) -> None:
        if x_CB.shape[1] == 0:
            return
        self._peak = max(self._peak, float(np.max(np.abs(x_CB))))
        buffered = np.concatenate([self._pending, x_CB], axis=1)
        if buffered.shape[1] > _TRUE_PEAK_MARGIN:
            self._scan(buffered[:, :-_TRUE_PEAK_MARGIN], buffered[:, -_TRUE_PEAK_MARGIN:])
            buffered = buffered[:, -_TRUE_PEAK_MARGIN:]
        self._pending = buffered

    def finish(self) -> float:
        if self._pending.shape[1]:  # the signal ends: zeros after it, as for the whole signal
            self._scan(self._pending, np.zeros((self._pending.shape[0], _TRUE_PEAK_MARGIN)))
            self._pending = self._pending[:, :0]
        return 20.0 * math.log10(self._peak) if self._peak > 0 else -math.inf

    def _scan(self, ready_CB: np.ndarray, after_CB: np.ndarray) -> None:
        from scipy.signal import resample_poly

        up = resample_poly(np.concatenate([self._history, ready_CB, after_CB], axis=1), TRUE_PEAK_OVERSAMPLING, 1,
                           axis=-1)
        inner = up[:, TRUE_PEAK_OVERSAMPLING * _TRUE_PEAK_MARGIN:
                   TRUE_PEAK_OVERSAMPLING * (_TRUE_PEAK_MARGIN + ready_CB.shape[1])]
        self._peak = max(self._peak, float(np.max(np.abs(inner))))
        self._history = np.concatenate([self._history, ready_CB], axis=1)[:, -_TRUE_PEAK_MARGIN:]


class LoudnessMeter:
    """Integrated loudness (LUFS) of a signal of known length given block by block.

    pyloudnorm's algorithm (K-weighting, 400 ms gating blocks every 100 ms, absolute
    gate −70 LUFS, relative gate −10 LU), with its block bounds and filter
    coefficients, but the K-weighting runs with its state carried across blocks
    and only each gating block's sum of squares is kept (≈ 10 numbers per channel and
    second). ``finish()`` gives -inf for silence or a signal shorter than one
    gating block, as :func:`studio_sep.mixing.render.measure_loudness` does.
    """

    BLOCK_S = 0.4
    OVERLAP = 0.75
    CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)

    def __init__(self, sample_rate: int, *, n_channels: int, n_samples: int):
        import pyloudnorm
        from scipy.signal import lfilter_zi

        self.sample_rate = sample_rate
        self.n_samples = n_samples
        meter = pyloudnorm.Meter(sample_rate, block_size=self.BLOCK_S, overlap=self.OVERLAP)
        self._filters = [(f.b, f.a, f.passband_gain) for f in meter._filters.values()]
        self._states = [np.zeros((n_channels, len(lfilter_zi(b, a)))) for b, a, _ in self._filters]
        rate, T_g, step = sample_rate, self.BLOCK_S, 1.0 - self.OVERLAP
        n_blocks = int(np.round((n_samples / rate - T_g) / (T_g * step))) + 1 if n_samples >= T_g * rate else 0
        # the gating blocks' bounds exactly as pyloudnorm computes them
        self._lower = np.array([int(T_g * (j * step) * rate) for j in range(n_blocks)], dtype=np.int64)
        self._upper = np.array([int(T_g * (j * step + 1) * rate) for j in range(n_blocks)], dtype=np.int64)
        self._edges = np.unique(np.concatenate([[0], self._lower, np.minimum(self._upper, n_samples), [n_samples]]))
        self._segment_sums = np.zeros((n_channels, len(self._edges) - 1))  # sum of squares between edges
        self._position = 0

    def push(self, x_CB: np.ndarray) -> None:
        from scipy.signal import lfilter

        start, stop = self._position, self._position + x_CB.shape[1]
        if stop > self.n_samples:
            raise ValueError(f"LoudnessMeter: {stop} samples given, the signal has {self.n_samples}")
        y = np.asarray(x_CB, dtype=np.float64)
        for k, (b, a, gain) in enumerate(self._filters):
            y, self._states[k] = lfilter(b, a, y, axis=-1, zi=self._states[k])
            y = gain * y
        squares = y**2
        first = np.searchsorted(self._edges, start, side="right") - 1
        for s in range(first, len(self._edges) - 1):
            lo, hi = max(self._edges[s], start), min(self._edges[s + 1], stop)
            if lo >= hi:
                break
            self._segment_sums[:, s] += squares[:, lo - start:hi - start].sum(axis=1)
        self._position = stop

    def finish(self) -> float:
        self._check_complete()
        if len(self._lower) == 0:
            return -math.inf
        z, G, block_lufs = self._blocks()
        with np.errstate(divide="ignore", invalid="ignore"):
            gated = block_lufs >= -70.0
            z_avg = z[:, gated].mean(axis=1) if gated.any() else np.full(z.shape[0], np.nan)
            relative = -0.691 + 10.0 * np.log10(np.sum(G[:, 0] * z_avg)) - 10.0
            gated = (block_lufs > relative) & (block_lufs > -70.0)
            z_avg = np.nan_to_num(z[:, gated].mean(axis=1)) if gated.any() else np.zeros(z.shape[0])
            return float(-0.691 + 10.0 * np.log10(np.sum(G[:, 0] * z_avg)))

    def max_momentary(self) -> float:
        """The highest momentary loudness (LUFS): the loudest 400 ms gating block (EBU R 128
        momentary window, every 100 ms); -inf for silence or a signal shorter than one block."""
        self._check_complete()
        if len(self._lower) == 0:
            return -math.inf
        return float(np.max(self._blocks()[2]))

    def _check_complete(self) -> None:
        if self._position != self.n_samples:
            raise ValueError(f"LoudnessMeter: {self._position} of {self.n_samples} samples given")

    def _blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each gating block's mean square per channel ``z`` (C, J), the channel gains
        ``G`` (C, 1) and each block's loudness (J,) in LUFS."""
        T_g, rate = self.BLOCK_S, self.sample_rate
        index = {int(e): i for i, e in enumerate(self._edges)}
        lo = np.array([index[int(v)] for v in self._lower])
        hi = np.array([index[int(min(v, self.n_samples))] for v in self._upper])
        # per block, the sum of its few segments (no difference of large running sums)
        z = np.stack([[self._segment_sums[c, lo[j]:hi[j]].sum() for j in range(len(lo))]
                      for c in range(self._segment_sums.shape[0])]) / (T_g * rate)
        G = np.array(self.CHANNEL_GAINS[:z.shape[0]])[:, None]
        with np.errstate(divide="ignore"):
            return z, G, -0.691 + 10.0 * np.log10(np.sum(G * z, axis=0))
