"""Training on 1 and 2 Ray Train workers: epoch time, coverage of the interactions, DDP efficiency, quality.

The backbone (MF-BPR) and the distilled towers are trained on the same ml-100k
item-cold split with the same global batch, once per worker count, the runs
interleaved over `--repeats`. Per run: the median epoch time (from each epoch's
reported throughput), the warm or cold validation NDCG@20 of the best epoch,
and the coverage of an epoch: the distinct training rows the ranks' shards hold
over all rows, for the skeleton's sampler (`trainers.loop.epoch_shard`) and for
the one it replaced (each rank slicing a permutation of its own). DDP
efficiency is 2-worker throughput over twice the 1-worker throughput; on this
2-core machine two workers share the cores the one worker had, so it measures
the overhead of sharding and gradient all-reduce, not a speed-up.

    python -m benchmarks.train_scaling --epochs 8 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np


def coverage(n: int, world: int, seed: int = 0, epoch: int = 0) -> tuple[float, float]:
    """(distinct rows over all rows in one epoch) for the skeleton's sampler and for the one it replaced."""
    from trainers.loop import epoch_shard

    now = np.unique(np.concatenate([epoch_shard(n, seed=seed, epoch=epoch, rank=r, world=world)
                                    for r in range(world)]))
    per = n // world
    before = np.unique(np.concatenate([np.random.default_rng(seed + 1000 * epoch + r).permutation(n)
                                       [r * per:(r + 1) * per] for r in range(world)]))
    return len(now) / n, len(before) / n


def run_job(name: str, split: Path, root: Path, workers: int, epochs: int) -> dict:
    from trainers.backbone import BackboneConfig
    from trainers.backbone import run as backbone
    from trainers.distill import DistillConfig
    from trainers.distill import run as distill

    scale = {"num_workers": workers, "threads_per_worker": max(1, 2 // workers), "storage": root / "runs",
             "checkpoint_every_s": 3600}
    if name == "backbone":
        result = backbone(BackboneConfig(split=split, out=root / f"backbone-{workers}", epochs=epochs,
                                         patience=epochs, scale=scale))
        key, rows = "warm_val_ndcg@20", "interactions_per_second"
    else:
        result = distill(DistillConfig(split=split, embeddings=root / "embeddings", backbone=root / "backbone-1",
                                       out=root / f"distill-{workers}", epochs=epochs, patience=epochs, scale=scale))
        key, rows = "cold_val_ndcg@20", "interactions_per_second"
    speeds = [h[rows] for h in result.history if h.get(rows)]
    return {"speed": statistics.median(speeds), "best": result.best[key], "key": key}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from coldstart.data import movielens
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import load_split, make_split, save_split
    from trainers.common import ensure_ray
    from trainers.embed import EmbedConfig
    from trainers.embed import run as embed

    ensure_ray()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        split = save_split(make_split(load_dataset(movielens.fetch("ml-100k")), "items", args.seed), root / "split")
        embed(EmbedConfig(split=split, out=root / "embeddings"))
        n = len(load_split(split).train)
        now, before = coverage(n, 2)
        print(f"{n} training interactions; coverage of an epoch at 2 workers: {now:.1%} now, {before:.1%} with the "
              f"old sampler (1 worker: {coverage(n, 1)[0]:.1%})\n")
        results: dict[tuple[str, int], list[dict]] = {}
        for _ in range(args.repeats):
            for name in ("backbone", "distill"):
                for workers in (1, 2):
                    results.setdefault((name, workers), []).append(run_job(name, split, root, workers, args.epochs))
        print("| job | workers | rows/s (median epoch) | best val NDCG@20 | DDP efficiency |\n|---|---|---|---|---|")
        for (name, workers), runs in results.items():
            speed = statistics.median(r["speed"] for r in runs)
            base = statistics.median(r["speed"] for r in results[(name, 1)])
            best = statistics.mean(r["best"] for r in runs)
            print(f"| {name} | {workers} | {speed:,.0f} | {best:.4f} ({runs[0]['key']}) | "
                  f"{speed / (workers * base):.2f} |")


if __name__ == "__main__":
    main()
