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

With `--compare A B` (two pipeline folders on the same split, say one trained
with `--scale.num-workers 1` and one with 2), the backbones' warm NDCG@20 on val
and test instead, with a 95% bootstrap interval over users of B - A.

    python -m benchmarks.train_scaling --compare OUT_1_WORKER OUT_2_WORKERS
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


def per_user_ndcg(model, data, group: str, on: str, k: int = 20) -> np.ndarray:
    """Each evaluated user's NDCG@k in `group` (`SplitData.eval_set`), as `coldstart.evaluate` scores them."""
    import scipy.sparse as sp
    import torch

    from coldstart.evaluate import TIE_SEED
    from coldstart.metrics import batch_metrics, topk_hit_matrix

    pairs = data.eval_set(group, on)
    rows, cols = data.user_ids.get_indexer(pairs["user_id"]), data.item_ids.get_indexer(pairs["item_id"])
    truth = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(data.n_users, data.n_items))
    users = np.unique(rows)
    scores = torch.from_numpy(np.asarray(model.score(users), np.float32)).clone()
    scores[:, torch.from_numpy(~data.candidates(group))] = -np.inf
    seen = data.train[users].tocoo()
    scores[torch.from_numpy(seen.row.astype(np.int64)), torch.from_numpy(seen.col.astype(np.int64))] = -np.inf
    held = torch.from_numpy(truth[users].toarray())
    tie_order = torch.from_numpy(np.random.default_rng(TIE_SEED).permutation(data.n_items))
    return batch_metrics(topk_hit_matrix(scores, held, k, tie_order), held.sum(1), (k,))[f"ndcg@{k}"].numpy()


def compare(a: Path, b: Path) -> None:
    """The backbones of two pipeline folders on one split: warm NDCG@20 per set, and B - A over users."""
    from coldstart.data.split import load_split
    from coldstart.evaluate import SplitData
    from coldstart.models.coldstart_model import load_recommender_artifact
    from coldstart.serving.evidence import paired_interval

    data = SplitData.from_split(load_split(a / "split"))
    models = [load_recommender_artifact(folder / "backbone", data) for folder in (a, b)]
    print(f"| set | {a} | {b} | B - A (95% over users) |\n|---|---|---|---|")
    for on in ("val", "test"):
        first, second = (per_user_ndcg(m, data, "warm", on) for m in models)
        low, high = paired_interval(second, first)
        print(f"| warm {on} NDCG@20 | {first.mean():.4f} | {second.mean():.4f} | "
              f"{second.mean() - first.mean():+.4f} ({low:+.4f} to {high:+.4f}) |")


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
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="two pipeline folders on one split: their backbones' warm NDCG@20, B against A")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)

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
