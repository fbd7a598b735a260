"""The mix, block by block: the signal flow of :func:`studio_sep.mixing.render.mix`
(feeds → source bus → stem → faders → master), with every chain kept running across
blocks, so memory does not grow with the session's length.

:func:`mix_blocks` yields the pre-fader stems and the master bus's output one block at a
time; the caller writes them and feeds :class:`~studio_sep.mixing.meters.LoudnessMeter`
and :class:`~studio_sep.mixing.meters.TruePeakMeter`, then brings the master output to the
preset's level (:func:`studio_sep.mixing.render.level_gain`) in a second pass over what it
wrote. The blocks equal the whole-signal mix's samples (tested against
:func:`~studio_sep.mixing.render.mix`).

Each chain is a :class:`studio_sep.mixing.plugins.host.ChainStream`, which may give fewer
samples than it is given while a plugin's latency fills; every chain's output goes
through a small queue that hands on blocks of the input's sizes (:func:`_through`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from studio_sep.mixing.presets import Preset
from studio_sep.mixing.render import check_chain_output, db_to_gain, mix_length
from studio_sep.mixing.routing import Route, balance_gains, pan_gains
from studio_sep.util.errors import InputError

#: pedalboard's buffer size: blocks of a multiple of it meet the plugins in the same
#: 8192-sample pieces as a whole-signal render (pedalboard.process's default buffer_size).
PEDALBOARD_BUFFER = 8192
#: Samples per block of the streaming mix (5.5 s at 48 kHz; a few MB per bus).
BLOCK_SAMPLES = 32 * PEDALBOARD_BUFFER


# Long by its docstring; the signal flow is its small nested generators, one per node.
def mix_blocks(
    images,
    routes: tuple[Route, ...],
    preset: Preset,
    *,
    sample_rate: int,
    open_chain: Callable[..., object],
    block_samples: int = BLOCK_SAMPLES,
    callback: Callable[..., None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The mix of :func:`studio_sep.mixing.render.mix`, one block at a time.

    Parameters
    ----------
    images : object with ``shape == (N, M, S)`` and ``segment(n, m, start, stop)``
        giving source n's image at mic m, samples ``start:stop`` as ``(stop - start,)``
        float64 (``studio_sep.stages.images.LazyImages``).
    routes : from :func:`studio_sep.mixing.routing.resolve_routes`
    open_chain : callable
        ``open_chain(specs, sample_rate=..., n_channels=...) -> ChainStream``
        (:func:`studio_sep.mixing.plugins.host.open_chain_stream`).
    block_samples : int
        Samples per block, a positive multiple of :data:`PEDALBOARD_BUFFER` (then the
        blocks hold the whole-signal mix's samples).

    Yields
    ------
    stems_N2B : ndarray, shape (N, 2, B)
        The pre-fader stems' next B samples.
    master_2B : ndarray, shape (2, B)
        The master chain's output, before the level gain, same samples.

    The blocks cover :func:`studio_sep.mixing.render.mix_length` samples in order.
    """
    if block_samples < 1 or block_samples % PEDALBOARD_BUFFER:
        raise InputError(None, "block_samples", f"{block_samples} is not a positive multiple of "
                         f"{PEDALBOARD_BUFFER}", "use a multiple of pedalboard's buffer size")
    report_progress = callback or (lambda stage, done, total, detail="": None)
    S = images.shape[2]
    length = mix_length(routes, preset, n_samples=S, sample_rate=sample_rate)
    sizes = [min(block_samples, length - start) for start in range(0, length, block_samples)]

    def feed_input(n: int, mic: int, delay: int) -> Iterator[np.ndarray]:
        start = 0
        for size in sizes:  # the image delayed by `delay` samples, zeros around it
            x = np.zeros((1, size))
            lo, hi = max(start - delay, 0), min(start + size - delay, S)
            if hi > lo:
                x[0, lo + delay - start:hi + delay - start] = images.segment(n, mic, lo, hi)
            yield x
            start += size

    def chain(specs, blocks: Iterator[np.ndarray], n_channels: int, what: str) -> Iterator[np.ndarray]:
        if not specs:
            return blocks
        return _through(open_chain(list(specs), sample_rate=sample_rate, n_channels=n_channels), blocks, what)

    def feed(n: int, route: Route, f) -> Iterator[np.ndarray]:
        left, right = pan_gains(f.pan)
        gain = db_to_gain(f.gain_db)
        for x in chain(f.chain, feed_input(n, f.mic, f.delay_samples), 1, f"{route.source} feed"):
            x = x.mean(axis=0, keepdims=True) if x.shape[0] > 1 else x
            yield gain * np.concatenate([left * x, right * x])

    def bus(n: int, route: Route) -> Iterator[np.ndarray]:
        feeds = [feed(n, route, f) for f in route.feeds]
        for blocks in zip(*feeds):
            total = np.zeros_like(blocks[0])
            for b in blocks:  # in feed order, as the whole-signal mix adds them
                total += b
            yield total

    stems = [chain(route.chain, bus(n, route), 2, route.source) for n, route in enumerate(routes)]
    faders = [(db_to_gain(r.gain_db), np.array([balance_gains(r.pan)]).T, r.audible) for r in routes]
    pending: deque = deque()  # stems whose master output has not come out yet (master latency)

    def remix_input() -> Iterator[np.ndarray]:
        for blocks in zip(*stems):
            stems_N2B = np.stack(blocks)
            pending.append(stems_N2B)
            total = np.zeros((2, stems_N2B.shape[2]))
            for n, (gain, balance, audible) in enumerate(faders):
                if audible:
                    total += gain * stems_N2B[n] * balance
            yield total

    for done, master in enumerate(chain(preset.master, remix_input(), 2, "master")):
        stems_N2B = pending.popleft()
        report_progress("mix", done + 1, len(sizes))  # blocks
        yield stems_N2B, master


def _through(stream, blocks: Iterator[np.ndarray], what: str) -> Iterator[np.ndarray]:
    """A chain's output in blocks of its input's sizes (a plugin's latency makes a
    stream's outputs lag its inputs: they wait here until a whole block is there)."""
    sizes: deque = deque()
    ready: list[np.ndarray] = []
    n_ready = 0

    def take(size: int) -> np.ndarray:
        nonlocal ready, n_ready
        joined = np.concatenate(ready, axis=1) if len(ready) > 1 else ready[0]
        ready, n_ready = [joined[:, size:]], n_ready - size
        return check_chain_output(joined[:, :size], size, what)

    for x in blocks:
        sizes.append(x.shape[1])
        y = stream.push(x)
        ready.append(y)
        n_ready += y.shape[1]
        while sizes and n_ready >= sizes[0]:
            yield take(sizes.popleft())
    y = stream.finish()
    ready.append(y)
    n_ready += y.shape[1]
    while sizes:
        if n_ready < sizes[0]:
            raise InputError(None, what, f"a chain returned {n_ready} samples, expected {sum(sizes)}",
                             "this is a bug in the plugin host; please report it")
        yield take(sizes.popleft())
