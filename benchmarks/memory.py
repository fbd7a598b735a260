"""Estimated vs measured peak memory of ``separate_session`` (studio_sep.stages.memory's model).

For each size, cuts the first D seconds of a rendered session (optionally upsampled to
48 kHz, processed at 16 kHz), runs ``separate_session`` (all three stages, a few
iterations) in a fresh interpreter with one BLAS thread, and reads its peak RSS
(``VmHWM``). Also runs one size in blocks under a budget. Prints a markdown table.

    OPENBLAS_NUM_THREADS=1 python benchmarks/memory.py \\
        --scene ~/.cache/studio-sep/benchmarks/scenes/seed0-rt60_0.5-300s --work /tmp/mem_bench

The scene is the 300 s render of ``benchmarks/separation.py`` (any rendered session works).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from common import without_takes

GiB = 1024**3


def cut_session(scene: Path, out: Path, seconds: float, rate: int) -> Path:
    """The first ``seconds`` of ``scene`` (mics and truth images) at ``rate`` Hz."""
    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly

    manifest = out / "session.toml"
    if manifest.is_file():
        return manifest
    for rel in ["audio/mics.wav", *(f"truth/images/{n}.wav" for n in ("piano", "sax", "violin"))]:
        info = sf.info(str(scene / rel))
        x, sr = sf.read(str(scene / rel), frames=int(seconds * info.samplerate), dtype="float64", always_2d=True)
        if rate != sr:
            x = resample_poly(x, rate // sr, 1, axis=0)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out / rel), x.astype(np.float32), rate, subtype="FLOAT")
    manifest.write_text(without_takes((scene / "session.toml").read_text()))
    return manifest


def worker(spec: dict) -> None:
    from studio_sep.session import load_session
    from studio_sep.stages import SeparationOptions, peak_rss_bytes, plan_memory, separate_session

    session = load_session(spec["manifest"])
    options = SeparationOptions(n_iter=spec["n_iter"], device="cpu", dtype=spec["dtype"],
                                processing_sample_rate=16000, max_memory=spec.get("budget") or 10**15)
    plan = plan_memory(session, options)
    baseline = peak_rss_bytes()
    result = separate_session(session, spec["out"], options)
    sep = result.run["separation"]
    print(json.dumps({"peak": peak_rss_bytes(), "baseline": baseline, "plan": plan.to_dict(),
                      "shape": sep["shape_FTM"], "per_iteration_s": result.run["timings_s"]["per_iteration_s"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", type=Path, default=Path.home() / ".cache/studio-sep/benchmarks/scenes/seed0-rt60_0.5-300s")
    ap.add_argument("--work", type=Path, default=Path("/tmp/studio-sep-memory-bench"))
    ap.add_argument("--sizes", default="15@16000,60@16000,150@16000,30@48000,90@48000",
                    help="comma-separated SECONDS@RATE")
    ap.add_argument("--blocks", default="150@16000:1.2G", help="SECONDS@RATE:BUDGET run in blocks ('' for none)")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker.read_text()))
        return
    from studio_sep.stages import format_size, parse_size

    runs = [(s, None) for s in args.sizes.split(",") if s] + (
        [tuple(args.blocks.split(":"))] if args.blocks else [])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    for size, budget in runs:
        seconds, rate = size.split("@")
        manifest = cut_session(args.scene, args.work / f"{seconds}s-{rate}", float(seconds), int(rate))
        spec = {"manifest": str(manifest), "out": str(args.work / "out" / f"{size}-{budget}"), "n_iter": args.iterations,
                "dtype": args.dtype, "budget": parse_size(budget) if budget else None}
        spec_file = args.work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        done = subprocess.run([sys.executable, __file__, "--worker", str(spec_file)], env=env, check=True,
                              capture_output=True, text=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
        plan = res["plan"]
        estimate = plan["block_estimated_bytes"]
        rows.append(f"| {seconds} | {rate} | {res['shape'][1]} | {plan['blocks']} | "
                    f"{format_size(res['peak'])} | {format_size(estimate)} | {estimate / res['peak']:.2f} | "
                    f"{res['per_iteration_s']} |")
        print(rows[-1], flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.0f} GiB; {platform.platform(terse=True)}; "
          f"{args.dtype}, {args.iterations} iterations, 1 BLAS thread\n")
    print("| seconds | native Hz | T frames (16 kHz) | blocks | measured peak RSS | estimate | estimate ÷ measured | s/iter |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
