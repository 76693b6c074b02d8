"""Latency and throughput of the Ray Serve app against a plain FastAPI + uvicorn single process.

Both serve the same objects (`coldstart.serving`: encoder, generator, ranker,
store) behind the same FastAPI app; the plain one calls them in-process, Serve
through deployment handles, behind each HTTP front of `--proxy` (HAProxy, what
`coldstart serve` starts, and Serve's proxy actor). Load: warm-user, new-user (profile text) and
item-registration requests at each concurrency, from this process to loopback
only, a fixed number of requests per cell after a warm-up. The servers take
turns over `--repeats` rounds (their order alternating), each started, measured
and stopped in its turn, never both up at once, so the machine's noise falls on
both; each figure is the median over the rounds.

    python -m benchmarks.serve_latency --artifacts out/demo [--repeats 3] [--proxy haproxy ray]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from coldstart.data.schema import find_table, read_table
from coldstart.ports import free_port

KINDS = ("warm-user", "new-user", "register-item")


class Requests:
    """Request bodies drawn from the artifacts' own users and items, every one different."""

    def __init__(self, artifacts: Path, seed: int = 0):
        split = artifacts / "split"
        train = read_table(find_table(split, "train")).astype({"user_id": str})
        self.users = sorted(set(train["user_id"]))
        items = read_table(find_table(split, "items"))
        self.items = items.drop(columns=["item_id"]).to_dict("records")
        users_path = find_table(split, "users", required=False)
        self.profiles = (read_table(users_path).drop(columns=["user_id"]).to_dict("records") if users_path
                         else [{}])
        self.rng = np.random.default_rng(seed)
        self.count = 0

    @staticmethod
    def _clean(record: dict) -> dict:
        out = {}
        for k, v in record.items():
            v = v.item() if hasattr(v, "item") else v
            if v is None or (isinstance(v, float) and v != v):
                continue
            out[k] = v if isinstance(v, (str, int, float, bool)) else str(v)
        return out

    def body(self, kind: str, tag: str) -> tuple[str, dict]:
        self.count += 1
        if kind == "warm-user":
            return "/v1/recommend", {"user_id": self.users[self.rng.integers(len(self.users))], "k": 10}
        if kind == "new-user":
            profile = self._clean(self.profiles[self.rng.integers(len(self.profiles))])
            return "/v1/recommend", {"profile": {"attributes": profile,
                                                 "text": f"Likes films like number {self.count}."}, "k": 10}
        item = self._clean(self.items[self.rng.integers(len(self.items))])
        title = str(item.pop("title", "item"))
        return "/v1/items", {"item_id": f"bench-{tag}-{self.count}", "title": f"{title} II", "attributes": item,
                             "text": "A sequel nobody has rated yet."}


async def _load(url: str, requests: Requests, kind: str, concurrency: int, n: int, tag: str) -> dict:
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        queue = [requests.body(kind, tag) for _ in range(n)]

        async def worker():
            nonlocal failures
            while queue:
                path, body = queue.pop()
                started = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                failures += response.status_code >= 300

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{url} {kind} c={concurrency}: {failures} of {n} requests failed")
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "rps": n / wall}


def measure(url: str, requests: Requests, kinds: list[str], concurrencies: list[int], n: int, warmup: int,
            tag: str) -> dict:
    for kind in kinds:
        asyncio.run(_load(url, requests, kind, 4, warmup, f"{tag}-warmup"))
    return {(kind, c): asyncio.run(_load(url, requests, kind, c, n, f"{tag}-c{c}"))
            for kind in kinds for c in concurrencies}


def _wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up")


def plain_server(artifacts: Path, port: int, store: Path, threads: int, encoder: str = "auto",
                 precision: str = "auto", runtime: str = "auto") -> None:
    """The baseline: one uvicorn process, the same objects called in-process."""
    import torch
    import uvicorn

    from coldstart.serving.routes import create_api
    from coldstart.serving.service import local_service

    torch.set_num_threads(threads)
    service = local_service(artifacts, store, encoder=encoder, encoder_precision=precision, encoder_runtime=runtime)
    uvicorn.run(create_api(service), host="127.0.0.1", port=port, workers=1, log_level="warning")


@contextlib.contextmanager
def plain_up(args, scratch: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.serve_latency", "--plain-server",
                             "--artifacts", str(args.artifacts), "--port", str(port),
                             "--store", str(scratch / "plain-store"), "--plain-threads", str(args.plain_threads),
                             "--encoder", args.encoder, "--encoder-precision", args.encoder_precision,
                             "--encoder-runtime", args.encoder_runtime])
    try:
        _wait_ready(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def serve_up(args, scratch: Path, proxy: str = "haproxy") -> Iterator[str]:
    import ray
    from ray import serve

    from serve.local import deploy_artifacts, proxy_environment

    with proxy_environment(proxy):  # what `coldstart serve --proxy PROXY` starts
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deploy_artifacts({"artifacts": str(args.artifacts), "store": str(scratch / "serve-store"),
                          "torch_threads": args.serve_threads, "rate_limit": 0,  # load, not abuse
                          "encoder": args.encoder, "encoder_precision": args.encoder_precision,
                          "encoder_runtime": args.encoder_runtime,
                          "batch_wait_ms": args.batch_wait_ms}, wait=False)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def interleaved(args, requests: Requests, scratch: Path) -> dict[str, dict]:
    """{server: figures}, each the median over `args.repeats` rounds: "plain" and "serve-PROXY" for each of
    `args.proxy`. In every round each server is started, warmed up, measured on every cell and stopped, the order
    reversed round by round: never two up at once (an idle Ray cluster and Serve app take CPU from the plain
    process on 2 cores)."""
    servers = {"plain": plain_up, **{f"serve-{proxy}": functools.partial(serve_up, proxy=proxy)
                                     for proxy in args.proxy}}
    rounds: dict[str, list[dict]] = {name: [] for name in servers}
    for r in range(args.repeats):
        for name in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
            with servers[name](args, scratch / f"{name}-{r}") as url:
                for kind in args.kinds:
                    asyncio.run(_load(url, requests, kind, 4, args.warmup, f"{name}-r{r}-warmup"))
                rounds[name].append({(kind, c): asyncio.run(_load(url, requests, kind, c, args.requests,
                                                                  f"{name}-r{r}-c{c}"))
                                     for kind in args.kinds for c in args.concurrency})
    return {name: {cell: {k: float(np.median([f[cell][k] for f in runs])) for k in runs[0][cell]}
                   for cell in runs[0]} for name, runs in rounds.items()}


def report(figures: dict[str, dict]) -> str:
    rows = []
    served = [(name, cell, s) for name, cells in figures.items() if name != "plain" for cell, s in cells.items()]
    for name, (kind, c), s in sorted(served, key=lambda row: row[1]):
        p = figures["plain"][(kind, c)]
        rows.append({"request": kind, "concurrency": c, "proxy": name.removeprefix("serve-"),
                     "Serve p50 ms": s["p50_ms"], "Serve p99 ms": s["p99_ms"],
                     "Serve req/s": s["rps"], "plain p50 ms": p["p50_ms"], "plain p99 ms": p["p99_ms"],
                     "plain req/s": p["rps"], "throughput vs plain": s["rps"] / p["rps"]})
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=200, help="Requests per (kind, concurrency) cell.")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved rounds; figures are their medians.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--num-cpus", type=int, default=4, help="Logical CPUs of the local Ray cluster.")
    parser.add_argument("--proxy", nargs="+", default=["haproxy"], choices=["haproxy", "ray"],
                        help="HTTP in front of the Serve app (ServeConfig.proxy); each is a server of its own.")
    parser.add_argument("--serve-threads", type=int, default=1, help="Torch threads of each Serve replica.")
    parser.add_argument("--plain-threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="Torch threads of the plain server (default: every core; it runs alone).")
    parser.add_argument("--encoder", default="auto", choices=["auto", "student", "teacher"],
                        help="The text encoder both servers use (auto: what serving.json names).")
    parser.add_argument("--encoder-precision", default="auto", choices=["auto", "bfloat16", "int8"],
                        help="Both servers' encoder arithmetic (`coldstart serve --encoder-precision`).")
    parser.add_argument("--encoder-runtime", default="auto", choices=["auto", "torch", "onnx"],
                        help="What runs both servers' float32 encoder (`coldstart serve --encoder-runtime`).")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0,
                        help="How long Serve's encoder replica waits to fill a batch (`coldstart serve`'s setting).")
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.artifacts = args.artifacts.resolve()
    if args.plain_server:
        plain_server(args.artifacts, args.port, args.store, args.plain_threads, args.encoder, args.encoder_precision,
                     args.encoder_runtime)
        return
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        requests = Requests(args.artifacts)
        figures = interleaved(args, requests, Path(scratch))
    print(f"\n{args.requests} requests per cell after {args.warmup} warm-up, median of {args.repeats} interleaved "
          f"rounds; {os.cpu_count()} cores; "
          f"Ray num_cpus {args.num_cpus}; torch threads: Serve replicas {args.serve_threads}, "
          f"plain server {args.plain_threads}; encoder {args.encoder} ({args.encoder_precision}, runtime {args.encoder_runtime}); Serve's batch wait {args.batch_wait_ms:g} ms; "
          f"RAY_SERVE_THROUGHPUT_OPTIMIZED={os.environ.get('RAY_SERVE_THROUGHPUT_OPTIMIZED', 'unset')}\n")
    print(report(figures))


if __name__ == "__main__":
    main()
