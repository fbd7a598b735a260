"""Peak memory of the mix stage against the session's length: the streaming mix
(``mix_session``, what a run uses) and, in the same run as its peer, the whole-signal
reference (``studio_sep.mixing.mix`` + ``normalise`` on whole-length images, what the mix
stage did before it streamed).

Renders a short reference trio session (7 mics, 3 sources) once, tiles its mics and
truth images to each length, and mixes the truth images with a preset in a fresh
interpreter per (length, mode), reading its peak RSS (``VmHWM``) and its RSS after the
imports (the baseline). Prints a markdown table with the machine noted and writes it
with a JSON of every number to ``benchmarks/results/mix_memory-<date>-<commit>.{md,json}``.

    python benchmarks/mix_memory.py --seconds 30,60,120 --rate 48000 --work /tmp/mix_mem
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_model, memory_gib, without_takes, write_results

REPO = Path(__file__).resolve().parent.parent
GiB = 1024**3
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


def rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024


def tiled_session(base: Path, out: Path, seconds: float) -> Path:
    """``base``'s mics and truth images repeated to ``seconds``, written block by block."""
    import soundfile as sf

    manifest = out / "session.toml"
    if manifest.is_file():
        return manifest
    for rel in ["audio/mics.wav", *(f"truth/images/{n}.wav" for n in ("piano", "sax", "violin"))]:
        x, sr = sf.read(str(base / rel), dtype="float32", always_2d=True)
        total = int(seconds * sr)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        with sf.SoundFile(str(out / rel), "w", sr, x.shape[1], "FLOAT") as f:
            for start in range(0, total, len(x)):
                f.write(x[:min(len(x), total - start)])
        del x
    manifest.write_text(without_takes((base / "session.toml").read_text()))
    return manifest


def worker(spec: dict) -> None:
    import numpy as np  # noqa: F401 - the imports count in the baseline, not in the mix
    import pedalboard  # noqa: F401
    import pyloudnorm  # noqa: F401
    import scipy.signal  # noqa: F401

    from studio_sep import mixing
    from studio_sep.io import audio as audio_io
    from studio_sep.mixing.plugins import host as plugin_host
    from studio_sep.session import load_session
    from studio_sep.stages import mix_session
    from studio_sep.stages.images import LazyImages
    from studio_sep.stages.settings import choose_stem_mics

    session = load_session(spec["manifest"])
    baseline = rss_bytes("VmRSS")
    clock = time.perf_counter()
    if spec["mode"] == "stream":
        outcome = mix_session(session, spec["out"], spec["preset"], source="truth")
        length = outcome.report["length_samples"]
    else:
        preset = mixing.load_preset(spec["preset"])
        routes = mixing.resolve_routes(session, preset, choose_stem_mics(session, {}), sample_rate=session.sample_rate)
        names = [s.name for s in session.sources]
        read = lambda n, m, start, stop: audio_io.read_audio(  # noqa: E731
            session.truth.images[names[n]], channels=[m], start=start, stop=stop)[0][0]
        images = LazyImages(read, len(names), len(session.mics), session.n_samples)
        result = mixing.mix(images, routes, preset, sample_rate=session.sample_rate,
                            render_chain=plugin_host.render_chain)
        length = result.remix_2S.shape[1]
    print(json.dumps({"peak": rss_bytes("VmHWM"), "baseline": baseline, "length": length,
                      "wall_s": time.perf_counter() - clock}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="30,60,120", help="comma-separated session lengths")
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--modes", default="stream,whole", help="stream (the mix stage), whole (the reference)")
    ap.add_argument("--preset", type=Path, default=REPO / "presets" / "paper.toml")
    ap.add_argument("--work", type=Path, default=Path("/tmp/studio-sep-mix-memory"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker.read_text()))
        return
    sys.path.insert(0, str(REPO))
    from studio_sep.sim import SimulationSettings, simulate_session

    base = simulate_session(args.work / f"base-{args.rate}", SimulationSettings(
        seed=0, duration_s=10.0, sample_rate=args.rate, soundfont=SOUNDFONT, reference_duration_s=2.0)).manifest.parent
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    rows = []
    for seconds in [float(s) for s in args.seconds.split(",") if s]:
        manifest = tiled_session(base, args.work / f"{seconds:g}s-{args.rate}", seconds)
        for mode in args.modes.split(","):
            spec = {"manifest": str(manifest), "out": str(args.work / "out" / f"{seconds:g}-{mode}"),
                    "preset": str(args.preset), "mode": mode}
            spec_file = args.work / "spec.json"
            spec_file.write_text(json.dumps(spec))
            done = subprocess.run([sys.executable, __file__, "--worker", str(spec_file)], env=env, check=True,
                                  capture_output=True, text=True)
            res = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"seconds": seconds, "rate": args.rate, "mode": mode, **res})
            print(f"{seconds:g} s {mode}: peak {res['peak'] / GiB:.2f} GiB, above baseline "
                  f"{(res['peak'] - res['baseline']) / GiB:.2f} GiB, {res['wall_s']:.1f} s", flush=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib()} GiB; {platform.platform(terse=True)}; "
               f"studio-sep {commit}{' (tree changed)' if dirty else ''}; preset {args.preset.name}; "
               "another job shared the machine (it does not change a process's own peak RSS)")
    by = {(r["seconds"], r["mode"]): r for r in rows}
    lines = [f"# Mix stage peak memory against length ({args.rate} Hz, 7 mics, 3 sources)", "", f"Machine: {machine}",
             "", ("| seconds | stream peak RSS GiB | stream above baseline GiB | whole peak RSS GiB | "
                  "whole above baseline GiB | whole ÷ stream (above baseline) |"), "|---:|---:|---:|---:|---:|---:|"]
    for seconds in dict.fromkeys(r["seconds"] for r in rows):
        s, w = by.get((seconds, "stream")), by.get((seconds, "whole"))

        def cell(r, key):
            if r is None:
                return "–"
            return f"{(r['peak'] - (r['baseline'] if key == 'above' else 0)) / GiB:.2f}"

        ratio = (f"{(w['peak'] - w['baseline']) / max(s['peak'] - s['baseline'], 1):.1f}" if s and w else "–")
        lines.append(f"| {seconds:g} | {cell(s, 'peak')} | {cell(s, 'above')} | {cell(w, 'peak')} | "
                     f"{cell(w, 'above')} | {ratio} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    write_results(args.out / f"mix_memory-{datetime.date.today().isoformat()}-{commit}{'-tree' if dirty else ''}",
                  table, {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
