"""The Ray Data embedding job against the in-process encoder on the same texts.

Both use the same total threads (Ray: `replicas` actors x `threads` each).
The job's time includes starting its actors and loading a model in each: the
overhead a cluster job pays that an in-process call does not.

    python benchmarks/embed_job.py [--n 20000] [--replicas 2] [--threads-per-replica 1]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from benchmarks.common import movielens_texts
from coldstart.text.templates import text_hash


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--threads-per-replica", type=int, default=1)
    args = parser.parse_args()
    total_threads = args.replicas * args.threads_per_replica

    import ray

    from coldstart.text.encoder import TextEncoder
    from trainers.embed import EmbedConfig, _embed_with_ray

    texts = movielens_texts(args.n)
    ray.init(num_cpus=max(4, total_threads), include_dashboard=False, log_to_driver=False)
    torch.set_num_threads(total_threads)
    t = time.perf_counter()
    enc = TextEncoder(device="cpu")
    enc.encode(texts)
    local = time.perf_counter() - t

    pending = pd.DataFrame({"id": [str(i) for i in range(args.n)], "text": texts, "kind": "items"})
    pending["text_hash"] = pending["text"].map(text_hash)
    cfg = EmbedConfig(split=".", out=".", replicas=args.replicas, threads_per_replica=args.threads_per_replica,
                      block_rows=1024)
    t = time.perf_counter()
    out = _embed_with_ray(pending, cfg)
    job = time.perf_counter() - t
    assert len(out) == args.n
    print(f"{args.n} texts, {total_threads} threads in all")
    print(f"  in-process encoder (model load included)  {args.n / local:8.1f} texts/s  {local:6.1f} s")
    print(f"  Ray Data job, {args.replicas} actors x {args.threads_per_replica} thread(s)  "
          f"{args.n / job:8.1f} texts/s  {job:6.1f} s  ratio {local / job:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
