#!/usr/bin/env python
"""CLASS-net alone on a held-out augmented test set, as the paper's Table 3, against the targets of issue #17.

For every example of the data set's ``test`` split (written by ``studio-sep augment``;
the unseen-timbre set by ``studio-sep augment --heldout``, MuseScore General renders
never seen in training), each checkpoint separates the queried source from the 10 s
mixture with its query (prompt and 10 s reference, eq. 17), and the estimate is scored
against the target by fast-bss-eval (SDR, SAR with BSS Eval's 512-tap filter; SIR is
not defined with one reference; SI-SDR). The unprocessed mixture is scored the same
way, so the table gives the improvements too. Per class and overall: means and
medians over examples, and whether the class has *collapsed* (its estimates are in
median more than 20 dB below their targets' energy: the floor at which a separation
run replaces a prior; an all-zero estimate, which BSS Eval cannot score, counts as
collapsed and is left out of the means).

Targets (issue #17, the paper's Table 3 CLASS-net): every class ≥ +4.15 dB SDR, a
positive SI-SDR improvement, no class collapsed. The paper's figures, on its own
data: LASS-net 5.89 dB SDR, CLASS-net 4.15 dB.

Usage::

    python benchmarks/classnet_eval.py DATA CHECKPOINT [CHECKPOINT ...] [--split test] [--limit N]
        [--threads 1] [--out benchmarks/results] [--name NAME]

Writes ``<out>/classnet-<data folder>-<split>-<date>[-NAME].md`` and ``.json``.
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

TARGET_SDR_DB = 4.15  #: the paper's CLASS-net, Table 3


def score(model, examples, label: str) -> list[dict]:
    """Separate and score every example (one row each)."""
    import torch
    from fast_bss_eval.numpy import bss_eval_sources, si_bss_eval_sources

    from studio_sep.classnet.train_data import read_wave

    rows = []
    for k, ex in enumerate(examples):
        mix, target, ref = (read_wave(p) for p in (ex.mixture, ex.target, ex.reference))
        with torch.no_grad():
            cond = model.condition([ex.prompt], [torch.from_numpy(ref)])
            est = model.net(torch.from_numpy(mix)[None], cond).wave_BS[0].double().numpy()
        refs = target[None].astype(np.float64)
        level = 10 * np.log10(max(float(np.sum(est**2)), 1e-30) / max(float(np.sum(refs**2)), 1e-30))
        row = {"id": ex.id, "class": ex.cls, "level_db": float(level)}
        for name, signal in (("est", est), ("mix", mix.astype(np.float64))):
            try:
                with np.errstate(divide="ignore", invalid="ignore"):
                    sdr, _, sar = bss_eval_sources(refs, signal[None], compute_permutation=False)[:3]
                    si = si_bss_eval_sources(refs, signal[None], compute_permutation=False)[0]
                row[name] = {"sdr": float(sdr[0]), "sar": float(sar[0]), "si_sdr": float(si[0])}
            except np.linalg.LinAlgError:  # an all-zero estimate (a collapsed mask): no score
                row[name] = {"sdr": float("nan"), "sar": float("nan"), "si_sdr": float("nan")}
        rows.append(row)
        print(f"{label} {k + 1}/{len(examples)} {ex.id} {ex.cls:<10} SDR {row['est']['sdr']:6.2f} "
              f"(mixture {row['mix']['sdr']:6.2f}) SI-SDR {row['est']['si_sdr']:6.2f} level {level:6.1f} dB",
              flush=True)
    return rows


def stats(selected: list[dict]) -> dict:
    """Means and medians over the finite scores, improvements (paired: the examples with a
    finite estimate score), the median level and the collapse flag."""
    from studio_sep.classnet.train_loss import COLLAPSE_DB

    out = {"n": len(selected)}
    scored = [r for r in selected if np.isfinite(r["est"]["sdr"])]
    out["unscored"] = len(selected) - len(scored)
    for kind in ("est", "mix"):
        for metric in ("sdr", "sar", "si_sdr"):
            values = np.array([r[kind][metric] for r in scored])
            out[f"{kind}_{metric}_mean"] = float(values.mean()) if values.size else float("nan")
            out[f"{kind}_{metric}_median"] = float(np.median(values)) if values.size else float("nan")
    out["sdri"] = out["est_sdr_mean"] - out["mix_sdr_mean"]
    out["si_sdri"] = out["est_si_sdr_mean"] - out["mix_si_sdr_mean"]
    out["level_db_median"] = float(np.median([r["level_db"] for r in selected]))
    out["collapsed"] = bool(out["level_db_median"] < COLLAPSE_DB or out["unscored"] > len(selected) / 2)
    out["meets_target"] = bool(out["est_sdr_mean"] >= TARGET_SDR_DB and out["si_sdri"] > 0 and not out["collapsed"])
    return out


def table_lines(name: str, table: dict) -> list[str]:
    lines = [f"### {name}", "",
             "| class | n | SDR mean (median) | SI-SDR mean (median) | SAR | mixture SDR | mixture SI-SDR | "
             "SDR improvement | SI-SDR improvement | level (median) | collapsed | target met |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for c, s in table.items():
        lines.append(f"| {c} | {s['n']} | {s['est_sdr_mean']:.2f} ({s['est_sdr_median']:.2f}) | "
                     f"{s['est_si_sdr_mean']:.2f} ({s['est_si_sdr_median']:.2f}) | {s['est_sar_mean']:.2f} | "
                     f"{s['mix_sdr_mean']:.2f} | {s['mix_si_sdr_mean']:.2f} | {s['sdri']:+.2f} | {s['si_sdri']:+.2f} | "
                     f"{s['level_db_median']:.1f} dB | {'**yes**' if s['collapsed'] else 'no'} | "
                     f"{'yes' if s['meets_target'] else 'no'} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=None, help="suffix of the result files")
    args = parser.parse_args()

    import torch

    from studio_sep.classnet import load_checkpoint
    from studio_sep.classnet.train_data import read_dataset_index

    torch.set_num_threads(args.threads)
    index = read_dataset_index(args.data)
    examples = list(index.splits.get(args.split, ()))[: args.limit]
    if not examples:
        sys.exit(f"{args.data}: no examples in split {args.split!r}")
    pool = index.meta.get("pool") or {}
    results, clock = {}, time.perf_counter()
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        if not hasattr(ckpt.model, "condition"):
            sys.exit(f"{path}: a plain ClassNet needs CLAP queries; use a QueriedClassNet checkpoint")
        ckpt.model.eval()
        rows = score(ckpt.model, examples, path.name)
        table = {c: stats([r for r in rows if r["class"] == c]) for c in sorted({r["class"] for r in rows})}
        table["all"] = stats(rows)
        classes = [c for c in table if c != "all"]
        results[str(path)] = {"sha256": ckpt.sha256, "name": ckpt.name, "kwargs": ckpt.kwargs, "table": table,
                              "all_targets_met": all(table[c]["meets_target"] for c in classes), "rows": rows}
    elapsed = time.perf_counter() - clock
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    lines = [f"# CLASS-net on the {args.split} split of `{args.data.resolve().name}` ({dt.date.today()})", "",
             f"{len(examples)} examples of 10 s, SoundFont(s) {pool.get('soundfont')}, seed {index.meta.get('seed')}; "
             f"commit {commit}, {machine}, {args.threads} thread(s), {elapsed:.0f} s in all.", "",
             "Means and medians over the finite scores; improvements over the unprocessed mixture; `level`: the "
             "estimate's energy against the target's; collapsed: median level below −20 dB (or most estimates "
             "all-zero). Target (issue #17): SDR ≥ +4.15 dB, SI-SDR improvement > 0, not collapsed.", ""]
    for path, res in results.items():
        lines += table_lines(f"`{Path(path).name}` (sha256 {res['sha256'][:12]}…, {res['name']} "
                             f"{json.dumps(res['kwargs'])}): every class meets the target: "
                             f"{'yes' if res['all_targets_met'] else 'no'}", res["table"])
    lines += ["Paper, Table 3 (its own data): LASS-net 5.89 dB SDR, CLASS-net 4.15 dB SDR."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"classnet-{args.data.resolve().name}-{args.split}-{dt.date.today()}"
                       + (f"-{args.name}" if args.name else ""))
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"data": str(args.data), "split": args.split,
                                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
