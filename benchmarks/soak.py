"""Soak: a bounded run of mixed traffic against a real local Ray Serve app, watching memory and p99.

Traffic, at a fixed concurrency for `--seconds`: recommendations for warm users,
for new users' profiles, and registrations of new items mixed in. Every 5 s the
resident memory of each Serve replica process (this run's own Ray cluster) is
sampled; latencies are cut into 30-s windows. At the end every item whose
registration was acknowledged (201) is fetched back. The artifacts are copied
to a scratch folder first, so the registrations never touch the original.

    python -m benchmarks.soak --artifacts /tmp/cs/p42 --generator distill --seconds 300
    python -m benchmarks.soak --seconds 60          # builds ml-100k artifacts first (slow)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from benchmarks.serve_latency import Requests, _wait_ready
from coldstart.ports import free_port

WINDOW_S = 30
MIX = {"warm-user": 0.5, "new-user": 0.3, "register-item": 0.2}
COPY_IGNORE = shutil.ignore_patterns("ray_results", "report", "registry", "transfer-*", "source-embeddings")


def replica_rss_mb() -> dict[str, float]:
    """RSS of this run's Serve replicas by deployment: Ray's worker processes are our descendants."""
    out: dict[str, float] = collections.defaultdict(float)
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
            if "ServeReplica:coldstart:" in title:
                name = title.split("ServeReplica:coldstart:")[1].split()[0].split(".")[0]  # title: Deployment.method
                out[name] += proc.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    return dict(out)


async def drive(url: str, requests: Requests, seconds: float, concurrency: int, seed: int) -> tuple[list, list]:
    """(start time, kind, latency ms, status) of every request, and the ids of acknowledged registrations."""
    rng = np.random.default_rng(seed)
    kinds, weights = list(MIX), np.array(list(MIX.values()))
    records, registered = [], []
    t0 = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker():
            while time.monotonic() - t0 < seconds:
                kind = kinds[rng.choice(len(kinds), p=weights)]
                path, body = requests.body(kind, "soak")
                started = time.monotonic()
                try:
                    status = (await client.post(path, json=body)).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                records.append((started - t0, kind, (time.monotonic() - started) * 1000, status))
                if kind == "register-item" and status == 201:
                    registered.append(body["item_id"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records, registered


def windows(records: list, memory: list, seconds: float) -> list[dict]:
    rows = []
    for start in range(0, int(np.ceil(seconds)), WINDOW_S):
        inside = [r for r in records if start <= r[0] < start + WINDOW_S]
        rss = [m for t, m in memory if start <= t < start + WINDOW_S]
        if not inside:
            continue
        latencies = np.array([r[2] for r in inside])
        rows.append({"window": f"{start}-{start + WINDOW_S}s", "requests": len(inside),
                     "errors": sum(not 200 <= r[3] < 300 for r in inside),
                     "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
                     "rss_mb": rss[-1] if rss else {}})
    return rows


def report(rows: list[dict], registered: int, retrievable: int, args) -> str:
    names = sorted({n for r in rows for n in r["rss_mb"]})
    lines = ["| window | requests | errors | p50 ms | p99 ms | " + " | ".join(f"RSS {n} MB" for n in names) + " |",
             "|---" * (5 + len(names)) + "|"]
    for r in rows:
        lines.append(f"| {r['window']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     + " | ".join(f"{r['rss_mb'].get(n, float('nan')):.0f}" for n in names) + " |")
    first, last = rows[0], rows[-1]
    total = {k: sum(r["rss_mb"].values()) for k, r in (("first", first), ("last", last))}
    lines.append("")
    lines.append(f"concurrency {args.concurrency}, mix {MIX}; replicas' RSS first window {total['first']:.0f} MB, "
                 f"last {total['last']:.0f} MB ({total['last'] - total['first']:+.0f} MB); p99 first "
                 f"{first['p99_ms']:.0f} ms, last {last['p99_ms']:.0f} ms; registered {registered}, retrievable "
                 f"{retrievable} (lost {registered - retrievable})")
    return "\n".join(lines)


def build_artifacts(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "coldstart.cli", "pipeline", "--dataset", "ml-100k",
                    "--stages", "[embed, backbone, distill]", "--out", str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, help="A pipeline output folder (copied, never written).")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--num-cpus", type=int, default=4, help="Logical CPUs of this run's own Ray cluster.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator", default="auto", choices=["auto", "distill", "vae"])
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve.local import deploy_artifacts

    with tempfile.TemporaryDirectory(prefix="coldstart-soak-") as scratch:
        scratch = Path(scratch)
        artifacts = scratch / "artifacts"
        if args.artifacts:
            shutil.copytree(args.artifacts, artifacts, ignore=COPY_IGNORE)
        else:
            build_artifacts(artifacts)
        requests = Requests(artifacts, seed=args.seed)
        # address="local": always a cluster of our own, never another user's on this machine.
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            deploy_artifacts({"artifacts": str(artifacts), "store": str(scratch / "store"), "torch_threads": 1,
                              "generator": args.generator}, wait=False)
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url)
            memory, done = [], threading.Event()
            t0 = time.monotonic()

            def sample():
                while not done.is_set():
                    memory.append((time.monotonic() - t0, replica_rss_mb()))
                    done.wait(5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            records, registered = asyncio.run(drive(url, requests, args.seconds, args.concurrency, args.seed))
            done.set()
            sampler.join()
            with httpx.Client(base_url=url, timeout=60) as client:
                retrievable = sum(client.get(f"/v1/items/{item}").json().get("registered") is True
                                  for item in registered)
        finally:
            serve.shutdown()
            ray.shutdown()
    print(report(windows(records, memory, args.seconds), len(registered), retrievable, args))
    if retrievable != len(registered):
        sys.exit(1)


if __name__ == "__main__":
    main()
