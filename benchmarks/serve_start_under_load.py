"""`coldstart serve --smoke` on a loaded machine: Serve's own proxy readiness check (5 s) against ours.

Serve's controller gives a new proxy `RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S` to answer, three times, then
kills it and `serve.start` fails; a local cluster started by `coldstart serve` sets 60 s
(`serve.local.PROXY_READY_CHECK`). Each round starts `--busy` processes that spin for `--busy-seconds`,
then runs the smoke with Serve's default forced through the variable ("serve's 5 s"), and then with ours,
alternating, and prints each run's exit code and seconds (counts, not a timing target).

    python -m benchmarks.serve_start_under_load --artifacts out/demo --rounds 2 --busy 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SPIN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"


def smoke(artifacts: str, port: int, ready_check: str | None, busy: int, busy_seconds: float, log: Path) -> tuple:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN, str(busy_seconds)]) for _ in range(busy)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"}
    if ready_check is not None:
        env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] = ready_check
    started = time.monotonic()
    try:
        with open(log, "wb") as out:
            command = [str(Path(sys.executable).parent / "coldstart"), "serve", "--artifacts", artifacts,
                       "--port", str(port), "--smoke"]
            code = subprocess.run(command, env={**env, "RAY_ADDRESS": "local"}, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=900).returncode
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return code, time.monotonic() - started, os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", required=True, help="A `coldstart pipeline` output folder.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", type=int, default=8, help="Busy processes beside each run.")
    parser.add_argument("--busy-seconds", type=float, default=240.0)
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--logs", default="/tmp/serve-start-under-load")
    args = parser.parse_args()
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(args.rounds):
        for name, value in (("serve's 5 s", "5"), ("ours (60 s)", None)):
            log = Path(args.logs) / f"round{n}-{'serve' if value else 'ours'}.log"
            code, seconds, load = smoke(args.artifacts, args.port, value, args.busy, args.busy_seconds, log)
            rows.append((name, code))
            print(f"round {n}, {name}: exit {code} in {seconds:.0f} s (load average {load:.1f}; {log})", flush=True)
            time.sleep(5)
    for name in ("serve's 5 s", "ours (60 s)"):
        codes = [c for n, c in rows if n == name]
        print(f"{name}: {sum(c == 0 for c in codes)} of {len(codes)} smokes served")


if __name__ == "__main__":
    main()
