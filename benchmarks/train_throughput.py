"""Training throughput of the distillation job: Ray Train (2 workers) against a plain loop.

Same model (student towers over a fixed MF backbone), same data (ml-100k
item-cold split, seed 42), same batch size per step and the same total
threads (2 workers x 1 thread against 1 process x 2 threads), one run.
Reports interactions/s of the training epochs alone, and of the whole job
with its start-up, validation and checkpoints.

    python benchmarks/train_throughput.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray

    from coldstart.content import build_content
    from coldstart.data import movielens
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import load_split, make_split, save_split
    from coldstart.evaluate import SplitData
    from coldstart.models.coldstart_model import load_backbone
    from coldstart.models.mf import TrainPairs
    from coldstart.models.towers import ColdStartTowers, DistillWeights, TowerTraining
    from trainers.backbone import BackboneConfig
    from trainers.backbone import run as train_backbone
    from trainers.distill import DistillConfig
    from trainers.distill import run as train_distill
    from trainers.embed import EmbedConfig
    from trainers.embed import run as embed

    work = Path(tempfile.mkdtemp(prefix="coldstart-train-bench-"))
    split_dir = save_split(make_split(load_dataset(movielens.fetch("ml-100k")), "items", 42), work / "split")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    embed(EmbedConfig(split=split_dir, out=work / "embeddings"))
    train_backbone(BackboneConfig(split=split_dir, out=work / "backbone", epochs=5, scale={"storage": work / "runs"}))

    cfg = DistillConfig(split=split_dir, embeddings=work / "embeddings", backbone=work / "backbone",
                        out=work / "distill", epochs=args.epochs, patience=args.epochs,
                        scale={"num_workers": args.workers, "threads_per_worker": 1, "storage": work / "runs"})
    t = time.perf_counter()
    result = train_distill(cfg)
    ray_wall = time.perf_counter() - t
    ray_rate = float(np.mean([h["interactions_per_second"] for h in result.history]))
    ray.shutdown()

    torch.set_num_threads(args.workers)
    data = SplitData.from_split(load_split(split_dir))
    item_x, user_x, user_text, item_text, _ = build_content(data, work / "embeddings")
    _, U, V = load_backbone(work / "backbone")
    train = data.split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=0)
    torch.manual_seed(0)
    towers = ColdStartTowers(item_x.shape[1], user_x.shape[1], U.shape[1], cfg.hidden, cfg.dropout)
    training = TowerTraining(towers, user_vectors=U, item_vectors=V, item_features=item_x, user_features=user_x,
                             user_text=user_text, item_text=item_text, weights=DistillWeights(), lr=cfg.lr)
    seconds = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        training.train_epoch(pairs.batches(cfg.batch_size))
        seconds.append(time.perf_counter() - t)
    plain_rate = len(pairs) / float(np.mean(seconds))
    plain_wall = sum(seconds)

    n = len(pairs) * args.epochs
    print(f"{len(pairs)} train interactions x {args.epochs} epochs, {args.workers} threads in all")
    print(f"  plain loop, 1 process x {args.workers} threads   {plain_rate:10.0f} interactions/s (epochs only)")
    print(f"  Ray Train, {args.workers} workers x 1 thread      {ray_rate:10.0f} interactions/s (epochs only)"
          f"  ratio {ray_rate / plain_rate:.2f}x")
    print(f"  whole job: Ray {n / ray_wall:.0f} interactions/s ({ray_wall:.0f} s with start-up, validation, "
          f"checkpoints) vs plain {n / plain_wall:.0f} ({plain_wall:.0f} s): ratio {plain_wall / ray_wall:.2f}x")


if __name__ == "__main__":
    main()
