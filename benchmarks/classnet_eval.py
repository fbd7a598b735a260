#!/usr/bin/env python
"""CLASS-net alone on a held-out augmented test set, as the paper's Table 3, against the targets of issue #17.

For every example of the data set's ``test`` split (written by ``studio-sep augment``;
the unseen-timbre set by ``studio-sep augment --heldout``, MuseScore General renders
never seen in training), each checkpoint separates the queried source from the 10 s
mixture with its query (prompt and 10 s reference, eq. 17), and the estimate is scored
against the target by fast-bss-eval (SDR, SAR with BSS Eval's 512-tap filter; SIR is
not defined with one reference; SI-SDR). The unprocessed mixture is scored the same
way, so the table gives the improvements too. Per class and overall: means and
medians over examples, the 95 % confidence interval of the mean SDR (Student's t over
the examples: how far the mean may move with another draw of examples), and whether the
class has *collapsed* (its estimates are in
median more than 20 dB below their targets' energy: the floor at which a separation
run replaces a prior; an all-zero estimate, which BSS Eval cannot score, counts as
collapsed and is left out of the means).

Targets (issue #17, the paper's Table 3 CLASS-net): every class ≥ +4.15 dB SDR, a
positive SI-SDR improvement, no class collapsed. The paper's figures, on its own
data: LASS-net 5.89 dB SDR, CLASS-net 4.15 dB.

``--also DATA2`` pools the same split of another data set (another seed of the held-out
renders: more examples, a tighter interval). With several checkpoints, a summary ranks
them by their worst class and gives each one's per-class difference from the first
checkpoint, paired over the same examples, with its 95 % interval.

Usage::

    python benchmarks/classnet_eval.py DATA CHECKPOINT [CHECKPOINT ...] [--also DATA2 ...] [--split test]
        [--limit N] [--threads 1] [--out benchmarks/results] [--name NAME]

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
from dataclasses import replace
from pathlib import Path

import numpy as np

TARGET_SDR_DB = 4.15  #: the paper's CLASS-net, Table 3


def mean_ci95(values) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95 % confidence interval
    (Student's t with n − 1 degrees of freedom; NaN for fewer than two values)."""
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(student_t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


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
    out["est_sdr_ci95"] = mean_ci95([r["est"]["sdr"] for r in scored])[1]
    out["sdri"] = out["est_sdr_mean"] - out["mix_sdr_mean"]
    out["si_sdri"] = out["est_si_sdr_mean"] - out["mix_si_sdr_mean"]
    out["level_db_median"] = float(np.median([r["level_db"] for r in selected]))
    out["collapsed"] = bool(out["level_db_median"] < COLLAPSE_DB or out["unscored"] > len(selected) / 2)
    out["meets_target"] = bool(out["est_sdr_mean"] >= TARGET_SDR_DB and out["si_sdri"] > 0 and not out["collapsed"])
    return out


def table_lines(name: str, table: dict) -> list[str]:
    lines = [f"### {name}", "",
             "| class | n | SDR mean ± 95 % (median) | SI-SDR mean (median) | SAR | mixture SDR | mixture SI-SDR | "
             "SDR improvement | SI-SDR improvement | level (median) | collapsed | target met |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for c, s in table.items():
        lines.append(f"| {c} | {s['n']} | {s['est_sdr_mean']:.2f} ± {s['est_sdr_ci95']:.2f} ({s['est_sdr_median']:.2f}) | "
                     f"{s['est_si_sdr_mean']:.2f} ({s['est_si_sdr_median']:.2f}) | {s['est_sar_mean']:.2f} | "
                     f"{s['mix_sdr_mean']:.2f} | {s['mix_si_sdr_mean']:.2f} | {s['sdri']:+.2f} | {s['si_sdri']:+.2f} | "
                     f"{s['level_db_median']:.1f} dB | {'**yes**' if s['collapsed'] else 'no'} | "
                     f"{'yes' if s['meets_target'] else 'no'} |")
    return lines + [""]


def paired_differences(rows_a: list[dict], rows_b: list[dict]) -> dict[str, tuple[float, float]]:
    """Per class and over all: the mean of SDR(b) − SDR(a) over the examples both score,
    with its 95 % half-width (paired, so the examples' own spread cancels)."""
    by_id = {r["id"]: r for r in rows_a}
    diffs: dict[str, list[float]] = {}
    for r in rows_b:
        a = by_id.get(r["id"])
        if a is None or not (np.isfinite(r["est"]["sdr"]) and np.isfinite(a["est"]["sdr"])):
            continue
        for key in (r["class"], "all"):
            diffs.setdefault(key, []).append(r["est"]["sdr"] - a["est"]["sdr"])
    return {c: mean_ci95(v) for c, v in diffs.items()}


def summary_lines(results: dict) -> list[str]:
    """Checkpoints ranked by their worst class's mean SDR, each with its per-class
    difference from the first checkpoint (paired, ± 95 %)."""
    paths = list(results)
    first = results[paths[0]]
    classes = [c for c in first["table"] if c != "all"]
    worst = {p: min(classes, key=lambda c: results[p]["table"][c]["est_sdr_mean"]) for p in paths}
    lines = [f"### Summary, by worst class (differences from `{Path(paths[0]).name}`, paired, ± 95 %)", "",
             "| checkpoint | " + " | ".join(f"{c} SDR" for c in classes) + " | all SDR | worst class | every class met |",
             "|---|" + "---:|" * (len(classes) + 1) + "---|---|"]
    for p in sorted(paths, key=lambda p: -results[p]["table"][worst[p]]["est_sdr_mean"]):
        table, diff = results[p]["table"], paired_differences(first["rows"], results[p]["rows"])
        cells = [f"{table[c]['est_sdr_mean']:.2f}" + ("" if p == paths[0] else
                                                       f" ({diff[c][0]:+.2f} ± {diff[c][1]:.2f})")
                 for c in [*classes, "all"]]
        lines.append(f"| `{Path(p).name}` | " + " | ".join(cells) + f" | {worst[p]} | "
                     f"{'yes' if results[p]['all_targets_met'] else 'no'} |")
    return lines + [""]


def read_examples(indices: dict, split: str) -> list:
    """The split's examples of every data set (folder → its index); with several, ids carry
    their folder's name."""
    examples = []
    for folder, index in indices.items():
        for ex in index.splits.get(split, ()):
            examples.append(replace(ex, id=f"{folder.resolve().name}/{ex.id}") if len(indices) > 1 else ex)
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another data set whose split joins the examples (repeatable)")
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
    folders = [args.data, *args.also]
    indices = {f: read_dataset_index(f) for f in folders}
    examples = read_examples(indices, args.split)[: args.limit]
    if not examples:
        sys.exit(f"{args.data}: no examples in split {args.split!r}")
    metas = [index.meta for index in indices.values()]
    soundfonts = sorted({str((m.get("pool") or {}).get("soundfont")) for m in metas})
    seeds = ", ".join(str(m.get("seed")) for m in metas)
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
    names = " + ".join(f"`{f.resolve().name}`" for f in folders)
    lines = [f"# CLASS-net on the {args.split} split of {names} ({dt.date.today()})", "",
             f"{len(examples)} examples of 10 s, SoundFont(s) {', '.join(soundfonts)}, seed(s) {seeds}; "
             f"commit {commit}, {machine}, {args.threads} thread(s), {elapsed:.0f} s in all.", "",
             "Means and medians over the finite scores; improvements over the unprocessed mixture; `level`: the "
             "estimate's energy against the target's; collapsed: median level below −20 dB (or most estimates "
             "all-zero). Target (issue #17): SDR ≥ +4.15 dB, SI-SDR improvement > 0, not collapsed.", ""]
    for path, res in results.items():
        lines += table_lines(f"`{Path(path).name}` (sha256 {res['sha256'][:12]}…, {res['name']} "
                             f"{json.dumps(res['kwargs'])}): every class meets the target: "
                             f"{'yes' if res['all_targets_met'] else 'no'}", res["table"])
    if len(results) > 1:
        lines += summary_lines(results)
    lines += ["Paper, Table 3 (its own data): LASS-net 5.89 dB SDR, CLASS-net 4.15 dB SDR."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"classnet-{'+'.join(f.resolve().name for f in folders)}-{args.split}-{dt.date.today()}"
                       + (f"-{args.name}" if args.name else ""))
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"data": [str(f) for f in folders], "split": args.split,
                                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
