"""The plots of the HTML session report, as PNG files (matplotlib, Agg backend: no display,
no fonts or files fetched): spectrograms of a mic, its stem and the bleed removed; the
log-likelihood per iteration; framewise SDR over time."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from studio_sep.stages.report_data import spectrogram_db
from studio_sep.util.atomic import write_bytes_atomic

#: Resolution of every plot (small files; a report is read on a screen).
DPI = 80


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a window, whatever the user's MPLBACKEND says
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def plot_spectrograms(path: Path, signals: list[tuple[str, np.ndarray]], sample_rate: int,
                      title: str) -> Path:
    """One panel per ``(label, signal)`` (mic, stem, mic − stem), on one colour scale
    (dB re full scale, the top 80 dB of the loudest panel)."""
    plt = _pyplot()
    spectra = [spectrogram_db(x, sample_rate) for _, x in signals]
    top = max(float(np.max(S)) for S, _, _ in spectra)
    fig, axes = plt.subplots(1, len(signals), figsize=(4.0 * len(signals), 2.8), sharey=True, squeeze=False)
    image = None
    for ax, (label, _), (S_db, freqs, times) in zip(axes[0], signals, spectra):
        extent = (0.0, float(times[-1] + times[0]), 0.0, freqs[-1] / 1000)
        image = ax.imshow(S_db, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                          interpolation="nearest", extent=extent)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel(f"{title}\nfrequency (kHz)")
    fig.colorbar(image, ax=axes[0].tolist(), label="dB FS", pad=0.01)
    return _save(fig, path)


def plot_log_likelihood(path: Path, iterations: list[int], values: list[float], note: str = "") -> Path:
    """The fit's log-likelihood at each recorded iteration. A start far below the rest
    (the initial model) is left off the axis and said in the title, so that the curve's
    climb stays visible."""
    plt = _pyplot()
    its, vals = np.asarray(iterations, dtype=float), np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    ax.plot(its, vals, marker="o", markersize=3)
    title = "log-likelihood per iteration" + (f" ({note})" if note else "")
    if len(vals) > 2:
        rest = vals[1:]
        spread = float(np.ptp(rest)) or 1.0
        if vals[0] < rest.min() - 3 * spread:
            ax.set_ylim(rest.min() - 0.1 * spread, rest.max() + 0.1 * spread)
            title += f"; initial {vals[0]:.2f} below the axis"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("iteration")
    ax.set_ylabel("log-likelihood / (F·T·M)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_framewise(path: Path, times_s: np.ndarray, series: list[tuple[str, np.ndarray, np.ndarray]],
                   where: str) -> Path:
    """Framewise SDR over time, one panel per source: ``(name, separated_W, mixture_W)``."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(series), 1, figsize=(7.0, 1.7 * len(series) + 0.6), sharex=True,
                             squeeze=False)
    step = float(times_s[1] - times_s[0]) if len(times_s) > 1 else 1.0
    edges = np.append(times_s, times_s[-1] + step)  # each window drawn to its end
    for ax, (name, sep, mix) in zip(axes[:, 0], series):
        ax.step(edges, np.append(sep, sep[-1:]), where="post", label="separated")
        ax.step(edges, np.append(mix, mix[-1:]), where="post", linestyle="--", label="unprocessed mic")
        ax.set_ylabel(f"{name}\nSDR (dB)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[0, 0].set_title(f"framewise SDR, 1 s windows ({where})", fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    return _save(fig, path)
