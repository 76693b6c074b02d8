"""Where `make demo`'s time goes: wall clock and the CPU each kind of process used.

The demo is CPU-bound on 2 cores (benchmarks/HISTORY.md, "Stages side by side"), so its
wall time follows the work it does. This runs a command (by default `make demo` into a
fresh folder), reads every process's CPU time from /proc once a second, and sums it by
what Ray's process titles (or the command line) name: Tune trials, Ray Data actors, Ray
Train workers and Ray Train's other actors, `full_run` tasks, the serving smoke, the
driver (`coldstart pipeline`), and Ray's own processes with the rest. The target is absolute
(issue 16: `make demo` <= 6 minutes on 2 cores with the dataset cached), so the ratio it
prints is the wall time against those 360 s; core-seconds against the 720 that 6 minutes
on 2 cores hold says how much work would have to go.

    python -m benchmarks.demo_cpu [--out DIR] [--port PORT] [--dump FILE] [-- COMMAND ...]
    python -m benchmarks.demo_cpu --from-dump FILE     # the table again, from a run's dump

Linux only (/proc). A process that starts and ends between two samples is missed
(a second's sampling; the demo's processes live for seconds to minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET_S = 360.0
KINDS = [  # (kind, substrings of any title a process had), first match wins
    ("Tune trials", ("ray::ImplicitFunc",)),
    ("Ray Data actors (the embedding pools)", ("ray::MapWorker",)),
    ("Ray Train workers", ("ray::RayTrainWorker",)),
    ("Ray tasks `full_run` (runs trained after a search)", ("ray::full_run",)),
    ("Ray Train's other actors", ("ray::TrainController", "ray::PlacementGroupCleaner", "ray::SynchronizationActor",
                                  "ray::DatasetManager", "ray::PreemptionWatcher", "ray::SplitCoordinator")),
    ("the serving smoke", ("coldstart serve", "SERVE_", "ray::ServeController", "ray::HAProxyManager",
                           "ray::ProxyActor")),
    ("the driver (`coldstart pipeline`)", ("coldstart pipeline",)),
]


def kind_of(titles: list[str]) -> str:
    """What a process was, from every title it had (a Ray worker's changes with what it runs)."""
    joined = " | ".join(titles)
    for kind, needles in KINDS:
        if any(n in joined for n in needles):
            return kind
    return "Ray's own (raylet, GCS, dashboard, Ray Data's coordinators, idle workers) and the rest"


def table(processes: dict) -> str:
    """Core-seconds by kind of process; `processes`: pid -> {"cpu": seconds, "titles": [...]}."""
    by_kind: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for p in processes.values():
        kind = kind_of(p["titles"])
        by_kind[kind] += p["cpu"]
        count[kind] += 1
    total = sum(by_kind.values())
    lines = [f"{total:.0f} core-s in the command's processes", "", "| processes | how many | core-s | share |",
             "|---|---|---|---|"]
    for kind, cpu in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {count[kind]} | {cpu:.0f} | {cpu / total:.0%} |")
    return "\n".join(lines)


def sample(own: int) -> dict[int, tuple[str, float]]:
    """pid -> (title, CPU seconds so far) for every process but this one."""
    tick = os.sysconf("SC_CLK_TCK")
    seen = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        seen[int(entry)] = (title, (int(fields[11]) + int(fields[12])) / tick)  # utime + stime
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="DEMO_OUT (default: a fresh temporary folder)")
    parser.add_argument("--port", type=int, default=8130, help="DEMO_PORT")
    parser.add_argument("--dump", help="Write every process's titles and CPU seconds to this JSON file.")
    parser.add_argument("--from-dump", help="Print the table of a run's --dump file instead of running anything.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND to time instead of `make demo`")
    args = parser.parse_args()
    if args.from_dump:
        print(table(json.loads(Path(args.from_dump).read_text())))
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="demo-cpu-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"demo_cpu: {out} is not empty; the demo would reuse its stages")
    command = [c for c in args.command if c != "--"] or \
        ["make", "demo", f"DEMO_OUT={out}", f"DEMO_PORT={args.port}"]
    before = set(sample(os.getpid()))  # processes already running are not the demo's
    last: dict[int, float] = {}
    titles: dict[int, set[str]] = defaultdict(set)  # a Ray worker's title changes with what it runs
    started = time.perf_counter()
    idle0 = _idle()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        for pid, (title, cpu) in sample(os.getpid()).items():
            if pid not in before:
                last[pid] = cpu
                titles[pid].add(title)
        time.sleep(1.0)
    wall = time.perf_counter() - started
    idle = _idle() - idle0
    processes = {pid: {"cpu": cpu, "titles": sorted(titles[pid])} for pid, cpu in last.items()}
    cores = os.cpu_count() or 1
    print(f"\n`{shlex.join(command)}`: exit {proc.returncode}, {wall:.1f} s wall "
          f"({wall / TARGET_S:.2f}x the {TARGET_S:.0f} s target), machine idle {idle / (wall * cores):.0%} "
          f"({cores} cores)\n")
    print(table(processes))
    if args.dump:
        Path(args.dump).write_text(json.dumps(processes, indent=1))
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    sys.exit(proc.returncode)


def _idle() -> float:
    """Idle seconds of all cores since boot (/proc/stat: idle + iowait)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
