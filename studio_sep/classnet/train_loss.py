"""CLASS-net's training loss and validation scores: what training minimises and how it picks its best model.

**Loss** (:func:`separation_loss`, :func:`loss_from_mask`): the paper's eq. 18 (mean
absolute error between the estimate's magnitude ``mask · |X|`` and the target's
``|Y|``) plus ``sdr_weight`` times the negative signal-to-distortion ratio of the
estimate's waveform (:func:`signal_sdr`, in dB)::

    loss = mean|M·|X| − |Y||  −  sdr_weight · SDR(ŝ, s),   ŝ = iSTFT(M · X)

Why the waveform term: under uncertainty the L1 loss is minimised per bin by the
conditional median of ``|Y| / |X|``, which is 0 wherever the target is sparse; a
network unsure of a class then learns a mask of zero for it (the shipped model's
saxophone query) and, the sigmoid saturating, never leaves it. With the SDR term an
all-zero estimate scores SDR 0 dB, which any Wiener-like gain beats (for ``ŝ = g·x``,
``SDR = 10 log10(1 + SNR)`` > 0 at the best ``g``); its gradient at ŝ = 0 is
``−(20/ln 10)·s/|s|²`` (non-zero, toward the target). SI-SDR would not do: it is
−∞ at ŝ = 0 and its gradient there is zero (the scale of the projection vanishes), so
it cannot pull a collapsed mask back. The plain SDR is given a soft ceiling
(``tau``: at most 30 dB) and a floor for silent target crops (``eps`` relative to the
mixture's energy), as the thresholded SDR of Wisdom et al. (2020).

**Validation** (:func:`validation_scores`): per example SDR, SI-SDR of the estimate and
of the mixture, and the estimate's level against the target; per class the means,
SDR improvement (SDRi = SDR − SDR(mixture)), SI-SDRi, and whether the class has
*collapsed*: the median level of its estimates is below :data:`COLLAPSE_DB` (the
−20 dB floor at which a separation run replaces a prior by its stem mic's power).

**Best model** (:func:`selection_key`): among the validations, the one with the fewest
collapsed classes, then the highest worst-class SDRi; a validation with a collapsed
class is never chosen over one without.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from studio_sep.dsp.metrics import si_sdr

__all__ = ["COLLAPSE_DB", "loss_from_mask", "magnitude_mae", "sdr", "selection_key", "separation_loss",
           "signal_sdr", "validation_scores"]

#: A class whose estimates are, in median, this far below its targets' energy (dB) has collapsed.
COLLAPSE_DB = -20.0
#: Default weight of the SDR term per dB (0.02: 15 dB of SDR weigh as much as eq. 18's whole span
#: on the augmentation data, a zero mask at ≈ 0.31, the ideal ratio mask at ≈ 0.01).
SDR_WEIGHT = 0.02


def signal_sdr(est_BS: torch.Tensor, target_BS: torch.Tensor, mixture_BS: torch.Tensor, *,
               tau: float = 1e-3, eps: float = 1e-6) -> torch.Tensor:
    """Per-example SDR in dB, differentiable: ``10 log10((|s|² + ε) / (|s − ŝ|² + τ|s|² + ε))``.

    ``ε = eps·|x|²`` (x the mixture) keeps silent target crops finite; ``τ`` caps the
    SDR at ``−10 log10 τ`` (30 dB) so that easy examples do not dominate.

    Parameters
    ----------
    est_BS, target_BS, mixture_BS : torch.Tensor, shape (B, S)

    Returns
    -------
    torch.Tensor, shape (B,)
    """
    power_B = target_BS.pow(2).sum(-1)
    floor_B = eps * mixture_BS.pow(2).sum(-1) + 1e-12
    error_B = (target_BS - est_BS).pow(2).sum(-1)
    return 10 * torch.log10((power_B + floor_B) / (error_B + tau * power_B + floor_B))


def magnitude_mae(net, mixture_BS: torch.Tensor, target_BS: torch.Tensor, cond_BC: torch.Tensor) -> torch.Tensor:
    """The paper's training loss (eq. 18) alone: mean |mask · |X| − |Y||, X, Y the STFTs of mixture and target."""
    mixture_BS, cond_BC = net._check_inputs(mixture_BS, cond_BC)
    mag_BFT = net.spectrogram(mixture_BS).abs()
    est_BFT = net.predict_mask(mag_BFT, cond_BC) * mag_BFT
    return (est_BFT - net.spectrogram(target_BS.to(mixture_BS.dtype)).abs()).abs().mean()


def loss_from_mask(net, mask_BFT: torch.Tensor, X_BFT: torch.Tensor, target_BS: torch.Tensor,
                   mixture_BS: torch.Tensor, *, sdr_weight: float = SDR_WEIGHT) -> tuple[torch.Tensor, dict]:
    """The training loss of a mask on a mixture STFT (module docstring).

    Parameters
    ----------
    net : ClassNet
        Gives the STFT and its inverse (``spectrogram``, ``waveform``).
    mask_BFT : torch.Tensor, shape (B, F, T), in [0, 1]
    X_BFT : torch.Tensor, complex, shape (B, F, T)
        The mixture's STFT.
    target_BS, mixture_BS : torch.Tensor, shape (B, S)
    sdr_weight : float
        Weight of the SDR term per dB (0: eq. 18 alone).

    Returns
    -------
    loss : torch.Tensor, scalar
    parts : dict
        ``{"mae": float, "sdr": float}`` (batch means, for the log).
    """
    mae = (mask_BFT * X_BFT.abs() - net.spectrogram(target_BS).abs()).abs().mean()
    if sdr_weight == 0:
        return mae, {"mae": float(mae.detach()), "sdr": math.nan}
    est_BS = net.waveform(mask_BFT * X_BFT, target_BS.shape[-1])
    sdr_B = signal_sdr(est_BS, target_BS, mixture_BS)
    loss = mae - sdr_weight * sdr_B.mean()
    return loss, {"mae": float(mae.detach()), "sdr": float(sdr_B.detach().mean())}


def separation_loss(net, mixture_BS: torch.Tensor, target_BS: torch.Tensor, cond_BC: torch.Tensor, *,
                    sdr_weight: float = SDR_WEIGHT) -> tuple[torch.Tensor, dict]:
    """:func:`loss_from_mask` of the network's mask for ``cond_BC`` on ``mixture_BS``."""
    mixture_BS, cond_BC = net._check_inputs(mixture_BS, cond_BC)
    X_BFT = net.spectrogram(mixture_BS)
    mask_BFT = net.predict_mask(X_BFT.abs(), cond_BC)
    return loss_from_mask(net, mask_BFT, X_BFT, target_BS.to(mixture_BS.dtype), mixture_BS, sdr_weight=sdr_weight)


def sdr(ref_S: np.ndarray, est_S: np.ndarray) -> float:
    """Plain SDR in dB: 10 log10(|s|² / |s − ŝ|²) (no filter, no scaling)."""
    ref = np.asarray(ref_S, dtype=np.float64)
    err = ref - np.asarray(est_S, dtype=np.float64)
    return float(10 * np.log10(max(np.sum(ref**2), 1e-30) / max(np.sum(err**2), 1e-30)))


def example_scores(target_S: np.ndarray, est_S: np.ndarray, mixture_S: np.ndarray) -> dict:
    """One validation example: SDR and SI-SDR of the estimate and of the mixture, the
    estimate's level against the target (dB).

    An example whose mixture is its target (no interferer sounded: the augmentation's
    insertions can all miss) has no mixture score and no improvement: those are NaN, and
    left out of the means, instead of a +300 dB mixture that would sink its class's mean.
    """
    target = np.asarray(target_S, dtype=np.float64)
    power = max(float(np.sum(target**2)), 1e-30)
    level = 10 * np.log10(max(float(np.sum(np.square(est_S, dtype=np.float64))), 1e-30) / power)
    interfered = float(np.sum((np.asarray(mixture_S, dtype=np.float64) - target) ** 2)) > 1e-9 * power
    nan = float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"sdr": sdr(target, est_S), "sdr_mixture": sdr(target, mixture_S) if interfered else nan,
                "si_sdr": float(np.clip(si_sdr(target, est_S), -300, 300)),
                "si_sdr_mixture": float(si_sdr(target, mixture_S)) if interfered else nan, "level_db": float(level)}


def validation_scores(rows: Sequence[dict]) -> dict:
    """The validation entry from per-example rows (``class``, ``val_loss`` and :func:`example_scores`).

    Returns
    -------
    dict
        Means over all examples (``val_loss``, ``sdr``, ``si_sdr``, ``si_sdr_mixture``,
        ``si_sdri``, ``sdri``); ``per_class``: ``{class: {n, sdr, sdri, si_sdr, si_sdri,
        level_db (median), collapsed}}``; ``worst_class`` and ``worst_sdri`` (the class
        with the lowest SDRi); ``collapsed``: the collapsed classes.
    """
    def mean(key, subset):  # NaN (no mixture score) left out
        values = np.array([r[key] for r in subset], dtype=np.float64)
        return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")

    def gain(key, subset):  # paired: the examples that have a mixture score
        return mean(key, [{key: r[key] - r[f"{key}_mixture"]} for r in subset])

    per_class = {}
    for cls in sorted({str(r["class"]) for r in rows}):
        sub = [r for r in rows if str(r["class"]) == cls]
        level = float(np.median([r["level_db"] for r in sub]))
        per_class[cls] = {"n": len(sub), "sdr": mean("sdr", sub), "sdri": gain("sdr", sub), "si_sdr": mean("si_sdr", sub),
                          "si_sdri": gain("si_sdr", sub), "level_db": level, "collapsed": bool(level < COLLAPSE_DB)}
    worst = min(per_class, key=lambda c: per_class[c]["sdri"])
    return {"val_loss": mean("val_loss", rows), "sdr": mean("sdr", rows), "si_sdr": mean("si_sdr", rows),
            "si_sdr_mixture": mean("si_sdr_mixture", rows), "si_sdri": gain("si_sdr", rows), "sdri": gain("sdr", rows),
            "per_class": per_class, "worst_class": worst, "worst_sdri": per_class[worst]["sdri"],
            "collapsed": [c for c, v in per_class.items() if v["collapsed"]]}


def selection_key(entry: dict) -> tuple[float, float]:
    """Rank of a validation entry for ``best``: fewer collapsed classes first, then a higher
    worst-class SDR improvement (compare keys with ``>``)."""
    return (-float(len(entry.get("collapsed", ()))), float(entry["worst_sdri"]))
