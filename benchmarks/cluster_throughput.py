"""Throughput of `studio-sep run` on a local Dask cluster against the local process pool.

Eight copies of one rendered session (the reference trio) run three ways, each into a
fresh OUT, each as the `studio-sep run` command a user would type:

- `--jobs 1`: one after the other in one process;
- `--jobs 2`: a local process pool of two;
- `--cluster local:2`: a local Dask cluster of two workers (`studio_sep.batch.cluster`).

Every way with the same settings and BLAS threads (cores / 2 per session in the parallel
ways, `--blas-threads`), so the arithmetic is the same and only the engine differs.
Reported: wall time, sessions per hour, the mean time a session took inside its worker
(`elapsed_s` of the summary) and the overhead per session of each path (wall time ×
parallel slots / sessions − mean session time). A second run of each command on its
finished OUT (every stage up to date: the session is validated and skipped) measures the
fixed cost per task alone.

    python benchmarks/cluster_throughput.py              # the run's defaults (slow: ~1 h on 2 cores)
    python benchmarks/cluster_throughput.py --quick      # one 20-iteration fit at 8 kHz per session

The load average before and after each command is recorded: on a shared machine the
numbers are only comparable within one run of this script.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_model, memory_gib, package_versions, write_results

REPO = Path(__file__).resolve().parent.parent
#: Renders and outputs (reused renders; outputs made afresh): outside the repository.
WORK = Path.home() / ".cache" / "studio-sep" / "cluster_throughput"
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
QUICK = ["--init", "geometry", "--iterations", "20", "--ensemble", "1", "--processing-rate", "8000"]


def make_sessions(n: int, duration_s: float) -> Path:
    """``n`` copies (own names, own folders) of one rendered trio of ``duration_s`` at 16 kHz."""
    sys.path.insert(0, str(REPO))
    from studio_sep.sim import SimulationSettings, simulate_session

    source = WORK / f"trio-{duration_s:g}s"
    if not (source / "session.toml").is_file():
        simulate_session(source, SimulationSettings(seed=0, duration_s=duration_s, sample_rate=16000,
                                                    soundfont=SOUNDFONT, reference_duration_s=6.0))
    root = WORK / f"sessions-{n}x{duration_s:g}s"
    for i in range(n):
        folder = root / f"s{i}"
        if not (folder / "session.toml").is_file():
            shutil.copytree(source, folder, dirs_exist_ok=True)
            text = (folder / "session.toml").read_text()
            (folder / "session.toml").write_text(re.sub(r'(?m)^name = ".*"$', f'name = "s{i}"', text, count=1))
    return root


def run(sessions: Path, out: Path, mode: list[str], settings: list[str]) -> dict:
    """One `studio-sep run … --json`: wall time, the summary, the load average around it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "studio_sep.cli", "run", str(sessions), "--out", str(out),
                           "--no-evaluate", "--json", *settings, *mode], capture_output=True, text=True, env=env,
                          timeout=4 * 3600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(mode)} failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.splitlines()[-1])
    elapsed = [s["elapsed_s"] for s in summary["sessions"]]
    return {"wall_s": round(wall, 2), "session_mean_s": round(sum(elapsed) / len(elapsed), 2),
            "statuses": sorted({s["status"] for s in summary["sessions"]}),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def _noop(x: int) -> int:
    return x


def cluster_costs(sessions: Path, n_tasks: int = 20) -> dict:
    """The cluster path's own costs, in this process: starting `local:2` and checking it
    (resources, the shared-storage probe, the memory plans), then ``n_tasks`` empty tasks
    submitted one after the other with a session's resources (submit → result), then closing."""
    sys.path.insert(0, str(REPO))
    from studio_sep.batch.cluster import open_cluster
    from studio_sep.batch.runner import RunOptions, SessionJob, find_sessions
    from studio_sep.stages import SeparationOptions

    out = WORK / "out-costs"
    jobs = [SessionJob(i, m, out, RunOptions(SeparationOptions())) for i, m in enumerate(find_sessions([sessions]))]
    t0 = time.perf_counter()
    batch = open_cluster("local:2", jobs, blas_threads=1)
    opened = time.perf_counter() - t0
    trips = []
    for i in range(n_tasks):
        t0 = time.perf_counter()
        batch.client.submit(_noop, i, resources=batch.requests[0], pure=False).result()
        trips.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    batch.close()
    closed = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    trips.sort()
    return {"open_and_check_s": round(opened, 2), "task_round_trip_median_ms": round(1000 * trips[len(trips) // 2], 1),
            "close_s": round(closed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each session")
    parser.add_argument("--quick", action="store_true", help="one 20-iteration fit at 8 kHz per session")
    parser.add_argument("--costs-only", action="store_true", help="only the cluster path's own costs")
    args = parser.parse_args()
    if args.costs_only:
        print(json.dumps(cluster_costs(make_sessions(args.sessions, args.duration))))
        return

    cores = len(os.sched_getaffinity(0))
    threads = str(max(1, cores // 2))
    settings = [*(QUICK if args.quick else []), "--blas-threads", threads]
    sessions = make_sessions(args.sessions, args.duration)
    modes = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"], "--cluster local:2": ["--cluster", "local:2"]}
    slots = {"--jobs 1": 1, "--jobs 2": 2, "--cluster local:2": 2}
    rows = {}
    for name, mode in modes.items():
        out = WORK / f"out-{name.strip('-').replace(' ', '').replace(':', '')}"
        shutil.rmtree(out, ignore_errors=True)
        fresh = run(sessions, out, mode, settings)
        again = run(sessions, out, mode, settings)  # every stage up to date: the fixed cost per task
        n = args.sessions
        rows[name] = {"fresh": fresh, "up_to_date": again,
                      "sessions_per_hour": round(n * 3600 / fresh["wall_s"], 1),
                      "overhead_per_session_s": round(fresh["wall_s"] * slots[name] / n - fresh["session_mean_s"], 2),
                      "up_to_date_per_session_s": round(again["wall_s"] * slots[name] / n, 2)}
        print(name, json.dumps(rows[name]), flush=True)

    costs = cluster_costs(sessions)
    print("cluster path", json.dumps(costs), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    data = {"date": _dt.date.today().isoformat(), "commit": commit, "cpu": cpu_model(), "cores": cores,
            "memory_gib": memory_gib(), "sessions": args.sessions, "duration_s": args.duration,
            "settings": settings, "versions": package_versions(["distributed", "studio-sep"]), "rows": rows,
            "cluster_costs": costs}
    lines = [f"# Cluster throughput ({args.sessions} sessions of {args.duration:g} s, "
             f"{'quick: ' + ' '.join(QUICK) if args.quick else 'default settings'}, --blas-threads {threads})", "",
             f"studio-sep {commit}, {data['cpu']}, {cores} cores, {data['memory_gib']} GiB, {data['date']}", "",
             "| way | wall | sessions/hour | mean session | overhead/session | up-to-date rerun/session | "
             "load before → after |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        f = r["fresh"]
        lines.append(f"| `{name}` | {f['wall_s']:.1f} s | {r['sessions_per_hour']:.0f} | {f['session_mean_s']:.1f} s "
                     f"| {r['overhead_per_session_s']:+.1f} s | {r['up_to_date_per_session_s']:.1f} s "
                     f"| {f['load_before']:.1f} → {f['load_after']:.1f} |")
    lines += ["", f"The cluster path alone (`local:2`, in-process): start and checks {costs['open_and_check_s']:.1f} s, "
              f"an empty task with a session's resources {costs['task_round_trip_median_ms']:.0f} ms from submit to "
              f"result (median of 20), close {costs['close_s']:.1f} s."]
    stem = REPO / "benchmarks" / "results" / (f"cluster_throughput-{data['date']}-{commit}"
                                              + ("-quick" if args.quick else ""))
    write_results(stem, "\n".join(lines) + "\n", data)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
