#!/usr/bin/env python
"""Which way each term of CLASS-net's training loss pushes a query's mask (issue #17).

For the first 6 training examples of each class (a 3 s crop from 1 s in), the
gradient of eq. 18's magnitude MAE and of the negative waveform SDR with respect to the
network's mask logits, summed over the batch: a negative sum raises the mask under
gradient descent. The ratio is the ``--sdr-weight`` (per dB) above which the SDR term
wins; a collapsed query (mask ≈ 0) comes back only above it. The mask cross-entropy
(``--mask-bce-weight``, computed on the logits: ``mask_bce``), with its bins weighted by
the mixture's magnitude and uniformly: its sum and the weight at which it balances the
MAE term's push.

Usage::

    python benchmarks/classnet_mask_gradient.py CHECKPOINT DATA
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()

    import torch

    from studio_sep.classnet.checkpoint import load_checkpoint
    from studio_sep.classnet.train_data import read_dataset_index, read_wave
    from studio_sep.classnet.train_loss import mask_bce, signal_sdr

    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint).model.eval()
    net = model.net
    index = read_dataset_index(args.data)
    for cls in index.classes:
        ex = [e for e in index.splits["train"] if e.cls == cls][:6]
        mix = torch.from_numpy(np.stack([read_wave(e.mixture)[16000:64000] for e in ex]))
        tgt = torch.from_numpy(np.stack([read_wave(e.target)[16000:64000] for e in ex]))
        with torch.no_grad():
            cond = model.condition([e.prompt for e in ex], [torch.from_numpy(read_wave(e.reference)) for e in ex])
            X = net.spectrogram(mix)
            logits = net.unet(X.abs().transpose(1, 2).unsqueeze(1), net.film_condition(cond)).squeeze(1).transpose(1, 2)
        logits.requires_grad_(True)
        mask = torch.sigmoid(logits)
        mae = (mask * X.abs() - net.spectrogram(tgt).abs()).abs().mean()
        sdr = signal_sdr(net.waveform(mask * X, tgt.shape[-1]), tgt, mix).mean()
        (g_mae,) = torch.autograd.grad(mae, logits, retain_graph=True)
        (g_sdr,) = torch.autograd.grad(-sdr, logits, retain_graph=True)
        g_bce = {}
        for bins in ("magnitude", "uniform"):
            bce = mask_bce(logits, X.abs(), net.spectrogram(tgt).abs(), bins=bins)
            (g_bce[bins],) = torch.autograd.grad(bce, logits)
        print(f"{cls:<10} mask median {float(mask.detach().median()):.2e}, logit median "
              f"{float(logits.detach().median()):+.1f}; sum dMAE/dlogit {float(g_mae.sum()):+.3e}, "
              f"sum d(-SDR)/dlogit {float(g_sdr.sum()):+.3e} per dB; balancing SDR weight "
              f"{float(-g_mae.sum() / g_sdr.sum()):+.3f} per dB; SDR {float(sdr.detach()):.2f} dB; "
              + "; ".join(f"sum dBCE/dlogit ({b}) {float(g.sum()):+.3e}, balancing BCE weight "
                          f"{float(-g_mae.sum() / g.sum()):+.3f}" for b, g in g_bce.items()))


if __name__ == "__main__":
    main()
