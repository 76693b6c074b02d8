"""The Ray Data embedding job against the in-process encoder on the same texts.

Both use the same total threads (Ray: `replicas` actors x `threads` each). Each
path is timed at two sizes (n/10 and n texts, interleaved: in-process, job,
in-process, job), and a line through the two times splits it into a fixed cost
(the job: starting the actor pool and loading a model in each actor, writing
and reading the parquet files; in-process: loading the model) and a per-text
rate. `--stream-rows` is the job's threshold (0, the default here: parquet to
parquet at both sizes; above n: the driver's memory at both).

    python -m benchmarks.embed_job [--n 20000] [--replicas 2] [--threads-per-replica 1] [--stream-rows 0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import movielens_texts
from coldstart.text.templates import text_hash


def fixed_and_rate(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """(fixed seconds, texts per second) of the line through two (size, seconds) points."""
    (n1, n2), (t1, t2) = sizes, seconds
    per_text = (t2 - t1) / (n2 - n1)
    return t2 - per_text * n2, 1.0 / per_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--threads-per-replica", type=int, default=1)
    parser.add_argument("--stream-rows", type=int, default=0, help="The job's stream_rows: 0 streams parquet to "
                                                                   "parquet at every size; a size above n keeps "
                                                                   "every text in the driver's memory.")
    args = parser.parse_args()
    total_threads = args.replicas * args.threads_per_replica

    import ray

    from coldstart.text.encoder import TextEncoder
    from trainers.embed import EmbedConfig, embed_with_ray

    all_texts = movielens_texts(args.n)
    ray.init(num_cpus=max(4, total_threads), include_dashboard=False, log_to_driver=False)
    torch.set_num_threads(total_threads)
    cfg = EmbedConfig(split=".", out=".", replicas=args.replicas, threads_per_replica=args.threads_per_replica,
                      block_rows=1024, stream_rows=args.stream_rows)
    sizes, local, job = [max(args.n // 10, 1), args.n], [], []
    scratch = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    try:
        for n in sizes:
            texts = all_texts[:n]
            t = time.perf_counter()
            TextEncoder(device="cpu").encode(texts)
            local.append(time.perf_counter() - t)

            pending = pd.DataFrame({"id": [str(i) for i in range(n)], "text": texts, "kind": "items"})
            pending["text_hash"] = pending["text"].map(text_hash)
            t = time.perf_counter()
            out = embed_with_ray(pending, cfg, scratch / f"work-{n}")
            job.append(time.perf_counter() - t)
            assert len(out) == n
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        ray.shutdown()
    how = "parquet to parquet" if args.stream_rows <= sizes[0] else \
        "from the driver's memory" if args.stream_rows > sizes[-1] else f"streaming from {args.stream_rows} texts"
    print(f"{total_threads} threads in all; Ray Data job: {args.replicas} actors x {args.threads_per_replica} "
          f"thread(s), {how}\n")
    print("| path | " + " | ".join(f"{n} texts: s (texts/s)" for n in sizes) + " | fixed s | per-text rate |")
    print("|---|" + "---|" * (len(sizes) + 2))
    for name, times in (("in-process encoder (model load included)", local), ("Ray Data job", job)):
        fixed, rate = fixed_and_rate(sizes, times)
        print(f"| {name} | " + " | ".join(f"{t:.1f} ({n / t:.1f})" for n, t in zip(sizes, times))
              + f" | {fixed:.1f} | {rate:.1f} texts/s |")
    print(f"\nratio at {sizes[-1]} texts (job throughput / in-process): {local[-1] / job[-1]:.2f}x")


if __name__ == "__main__":
    main()
