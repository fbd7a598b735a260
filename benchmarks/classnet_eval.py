#!/usr/bin/env python
"""CLASS-net alone on a held-out augmented test set, as the paper's Table 3.

For every example of the data set's ``test`` split (written by ``studio-sep augment``,
never seen in training), the checkpoint separates the queried source from the 10 s
mixture with its query (prompt and 10 s reference, eq. 17), and the estimate is scored
against the target by fast-bss-eval (SDR, SAR with BSS Eval's 512-tap filter; SIR is
not defined with one reference; SI-SDR). The unprocessed mixture is scored the same
way, so the table gives the improvement too. Means and medians over examples, per
class and overall; the paper's figures for comparison: LASS-net 5.89 dB SDR, CLASS-net
4.15 dB SDR (Table 3, on the authors' own augmented data, not this one).

Usage::

    python benchmarks/classnet_eval.py CHECKPOINT DATA [--split test] [--limit N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    import torch
    from fast_bss_eval.numpy import bss_eval_sources, si_bss_eval_sources

    from studio_sep.classnet import load_checkpoint
    from studio_sep.classnet.train_data import read_dataset_index, read_wave

    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model
    index = read_dataset_index(args.data)
    examples = list(index.splits.get(args.split, ()))[: args.limit]
    if not examples:
        sys.exit(f"{args.data}: no examples in split {args.split!r}")
    rows = []
    clock = time.perf_counter()
    for k, ex in enumerate(examples):
        mix, target, ref = (read_wave(p) for p in (ex.mixture, ex.target, ex.reference))
        with torch.no_grad():
            if hasattr(model, "condition"):
                cond = model.condition([ex.prompt], [torch.from_numpy(ref)])
                net = model.net
            else:
                sys.exit(f"{args.checkpoint}: a plain ClassNet needs CLAP queries; use a QueriedClassNet checkpoint")
            est = net(torch.from_numpy(mix)[None], cond).wave_BS[0].double().numpy()
        refs = target[None].astype(np.float64)
        row = {"id": ex.id, "class": ex.cls}
        for name, signal in (("est", est), ("mix", mix.astype(np.float64))):
            try:
                with np.errstate(divide="ignore", invalid="ignore"):
                    sdr, _, sar = bss_eval_sources(refs, signal[None], compute_permutation=False)[:3]
                    si = si_bss_eval_sources(refs, signal[None], compute_permutation=False)[0]
                row[name] = {"sdr": float(sdr[0]), "sar": float(sar[0]), "si_sdr": float(si[0])}
            except np.linalg.LinAlgError:  # an all-zero estimate (a collapsed mask): no score
                row[name] = {"sdr": float("nan"), "sar": float("nan"), "si_sdr": float("nan")}
        rows.append(row)
        print(f"{k + 1}/{len(examples)} {ex.id} {ex.cls:<10} SDR {row['est']['sdr']:6.2f} "
              f"(mixture {row['mix']['sdr']:6.2f}) SI-SDR {row['est']['si_sdr']:6.2f}", flush=True)
    elapsed = time.perf_counter() - clock

    def stats(selected):
        out = {}
        for kind in ("est", "mix"):
            for metric in ("sdr", "sar", "si_sdr"):
                values = np.array([r[kind][metric] for r in selected])
                finite = values[np.isfinite(values)]
                out[f"{kind}_{metric}_mean"] = float(finite.mean()) if finite.size else float("nan")
                out[f"{kind}_{metric}_median"] = float(np.median(finite)) if finite.size else float("nan")
        out["n"] = len(selected)
        out["unscored"] = int(sum(not np.isfinite(r["est"]["sdr"]) for r in selected))
        return out

    classes = sorted({r["class"] for r in rows})
    table = {c: stats([r for r in rows if r["class"] == c]) for c in classes}
    table["all"] = stats(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    lines = [f"# CLASS-net on the held-out {args.split} split ({dt.date.today()})", "",
             f"checkpoint `{args.checkpoint.name}` (sha256 {ckpt.sha256[:12]}…, {ckpt.name} {json.dumps(ckpt.kwargs)}), "
             f"data `{args.data}` ({len(rows)} examples of 10 s), commit {commit}, {machine}, "
             f"{args.threads} thread(s), {elapsed:.0f} s in all.", "",
             "Means and medians over the finite scores; `unscored`: estimates BSS Eval cannot score "
             "(all-zero output, a collapsed mask), left out of the means.", "",
             "| class | n | unscored | SDR mean (median) | SI-SDR mean (median) | SAR mean | mixture SDR | mixture SI-SDR | "
             "SDR improvement | SI-SDR improvement |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c, s in table.items():
        lines.append(f"| {c} | {s['n']} | {s['unscored']} | {s['est_sdr_mean']:.2f} ({s['est_sdr_median']:.2f}) | "
                     f"{s['est_si_sdr_mean']:.2f} ({s['est_si_sdr_median']:.2f}) | {s['est_sar_mean']:.2f} | "
                     f"{s['mix_sdr_mean']:.2f} | {s['mix_si_sdr_mean']:.2f} | "
                     f"{s['est_sdr_mean'] - s['mix_sdr_mean']:+.2f} | {s['est_si_sdr_mean'] - s['mix_si_sdr_mean']:+.2f} |")
    lines += ["", "Paper, Table 3 (its own data): LASS-net 5.89 dB SDR, CLASS-net 4.15 dB SDR."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"classnet-{args.data.resolve().name}-{args.split}-{dt.date.today()}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "sha256": ckpt.sha256,
                                                     "table": table, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
