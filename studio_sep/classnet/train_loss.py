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

**Mask cross-entropy** (:func:`mask_bce`, ``mask_bce_weight``): both terms above reach
the network through the sigmoid, whose slope ``σ(z)(1 − σ(z))`` is ≈ 1e−3 at a logit of
−7: a collapsed query gets almost no gradient from either (issue #17). The binary
cross-entropy of the mask's *logits* against the ideal ratio mask
``m* = clip(|Y|/|X|, 0, 1)``, computed by torch's numerically stable
``binary_cross_entropy_with_logits``, has the gradient ``σ(z) − m*`` per logit: a mask
saturated off is pulled up by ≈ m* however far it has saturated. Per bin, weighted by the
mixture's magnitude normalised to mean 1 per example (``bins="magnitude"``, the default:
the loud bins, which carry the waveform, count most and the near-silent bins, whose ratio
is noise, least) or uniformly (``"uniform"``). Measured from the shipped model's collapsed
saxophone (weight 0.1, 100 steps, same batches): magnitude bins brought it to −13 dB,
uniform bins left it collapsed at −25 dB and cost the violin (benchmarks/README.md)::

    loss = MAE + mask_bce_weight · mean_b w_b · BCE(z_b, m*_b) − sdr_weight · SDR

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

__all__ = ["COLLAPSE_DB", "MASK_BCE_BINS", "estimate_and_loss", "ideal_ratio_mask", "loss_from_logits", "loss_from_mask",
           "magnitude_mae", "mask_bce", "sdr", "selection_key", "separation_loss", "signal_sdr", "validation_scores"]

#: A class whose estimates are, in median, this far below its targets' energy (dB) has collapsed.
COLLAPSE_DB = -20.0
#: Default weight of the SDR term per dB (0.02: 15 dB of SDR weigh as much as eq. 18's whole span
#: on the augmentation data, a zero mask at ≈ 0.31, the ideal ratio mask at ≈ 0.01).
SDR_WEIGHT = 0.02
#: Default weight of the mask cross-entropy (0: none, the loss of the runs before it). Measured (issue #17,
#: benchmarks/README.md): from the collapsed shipped saxophone, 0.3 brought it to −11 dB in 50 steps, 0.1 to −17 dB.
MASK_BCE_WEIGHT = 0.3
#: How the cross-entropy weighs the time-frequency bins: by the mixture's magnitude, or uniformly.
MASK_BCE_BINS = ("magnitude", "uniform")


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


def ideal_ratio_mask(mag_BFT: torch.Tensor, target_mag_BFT: torch.Tensor) -> torch.Tensor:
    """``clip(|Y| / |X|, 0, 1)`` from the magnitudes of mixture and target (0 where |X| = 0)."""
    tiny = torch.finfo(mag_BFT.dtype).tiny
    return torch.where(mag_BFT > 0, target_mag_BFT / mag_BFT.clamp_min(tiny), 0.0).clamp(0, 1)


def mask_bce(logits_BFT: torch.Tensor, mag_BFT: torch.Tensor, target_mag_BFT: torch.Tensor, *,
             bins: str = "magnitude") -> torch.Tensor:
    """Binary cross-entropy of the mask's logits against the ideal ratio mask (module docstring).

    Parameters
    ----------
    logits_BFT : torch.Tensor, shape (B, F, T)
        The mask's logits (``ClassNet.predict_logits``).
    mag_BFT, target_mag_BFT : torch.Tensor, shape (B, F, T)
        ``|X|`` and ``|Y|``, the magnitudes of the mixture's and the target's STFT.
    bins : {"magnitude", "uniform"}
        ``"magnitude"``: each bin weighted by ``|X|`` over its example's mean ``|X|``;
        ``"uniform"``: all bins alike.

    Returns
    -------
    torch.Tensor, scalar
        The weighted mean over all bins; its gradient per logit is ``w_b (σ(z_b) − m*_b) / n_bins``.
    """
    irm_BFT = ideal_ratio_mask(mag_BFT, target_mag_BFT).detach()
    bce_BFT = torch.nn.functional.binary_cross_entropy_with_logits(logits_BFT, irm_BFT, reduction="none")
    if bins == "uniform":
        return bce_BFT.mean()
    if bins != "magnitude":
        raise ValueError(f"bins must be one of {MASK_BCE_BINS}, got {bins!r}")
    mean_B11 = mag_BFT.mean(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(mag_BFT.dtype).tiny)
    return (bce_BFT * (mag_BFT / mean_B11).detach()).mean()


def loss_from_logits(net, logits_BFT: torch.Tensor, X_BFT: torch.Tensor, target_BS: torch.Tensor,
                     mixture_BS: torch.Tensor, *, sdr_weight: float = SDR_WEIGHT,
                     mask_bce_weight: float = MASK_BCE_WEIGHT, mask_bce_bins: str = "magnitude"
                     ) -> tuple[torch.Tensor, dict]:
    """:func:`loss_from_mask` of ``sigmoid(logits)`` plus ``mask_bce_weight`` × :func:`mask_bce`.

    Returns the loss and its parts ``{"mae", "sdr", "bce"}`` (``bce`` NaN when its weight is 0).
    """
    loss, parts = loss_from_mask(net, torch.sigmoid(logits_BFT), X_BFT, target_BS, mixture_BS, sdr_weight=sdr_weight)
    if mask_bce_weight == 0:
        return loss, {**parts, "bce": math.nan}
    bce = mask_bce(logits_BFT, X_BFT.abs(), net.spectrogram(target_BS).abs(), bins=mask_bce_bins)
    return loss + mask_bce_weight * bce, {**parts, "bce": float(bce.detach())}


def _mask_logits(net, mixture_BS: torch.Tensor, cond_BC: torch.Tensor):
    """The checked mixture, its STFT ``X_BFT`` and the network's mask logits for ``cond_BC``."""
    mixture_BS, cond_BC = net._check_inputs(mixture_BS, cond_BC)
    X_BFT = net.spectrogram(mixture_BS)
    return mixture_BS, X_BFT, net.predict_logits(X_BFT.abs(), cond_BC)


def separation_loss(net, mixture_BS: torch.Tensor, target_BS: torch.Tensor, cond_BC: torch.Tensor, *,
                    sdr_weight: float = SDR_WEIGHT, mask_bce_weight: float = MASK_BCE_WEIGHT,
                    mask_bce_bins: str = "magnitude") -> tuple[torch.Tensor, dict]:
    """:func:`loss_from_logits` of the network's mask logits for ``cond_BC`` on ``mixture_BS``."""
    mixture_BS, X_BFT, logits_BFT = _mask_logits(net, mixture_BS, cond_BC)
    return loss_from_logits(net, logits_BFT, X_BFT, target_BS.to(mixture_BS.dtype), mixture_BS,
                            sdr_weight=sdr_weight, mask_bce_weight=mask_bce_weight, mask_bce_bins=mask_bce_bins)


def estimate_and_loss(net, mixture_BS: torch.Tensor, target_BS: torch.Tensor, cond_BC: torch.Tensor,
                      **loss_args) -> tuple[torch.Tensor, torch.Tensor]:
    """The separated waveform (B, S), as ``net(mixture_BS, cond_BC).wave_BS``, and the
    :func:`separation_loss`, from one pass of the network (validation)."""
    mixture_BS, X_BFT, logits_BFT = _mask_logits(net, mixture_BS, cond_BC)
    loss, _ = loss_from_logits(net, logits_BFT, X_BFT, target_BS.to(mixture_BS.dtype), mixture_BS, **loss_args)
    return net.waveform(torch.sigmoid(logits_BFT) * X_BFT, mixture_BS.shape[-1]), loss


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


def finite_mean(values) -> float | None:
    """The mean of the finite values, None when there are none (a loss term whose weight is
    0 logs NaN for every step)."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None
