"""A textbook BPR-MF, written apart from our trainers, as the yardstick of the backbone.

The public cold-start toolkits' recipe (ColdRec's MF): dimension 64, Xavier-uniform
initialisation, Adam at lr 1e-3, batches of 4,096 shuffled train pairs, one
negative per pair drawn uniformly among the train items the user has not
interacted with, BPR loss plus 1e-4 times the L2 norms of the batch's
embeddings divided by the batch size (twice, as the toolkit does), up to 500
epochs, early stopping on warm-validation NDCG@20 with patience 10. It is a
benchmark, not a model: nothing in the pipeline uses it.

    python -m benchmarks.reference_mf --dataset ml-100k --seeds 42 43 44

prints, per seed, the reference's and our backbone's (`trainers/backbone.py`'s job,
run in-process through the training skeleton) warm NDCG@20 on val and test and
the ratio, then the mean ± std.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from coldstart.evaluate import SplitData, evaluate_set
from coldstart.models.mf import EmbeddingRecommender


@dataclass
class Recipe:
    dim: int = 64
    lr: float = 1e-3
    batch_size: int = 4096
    reg: float = 1e-4
    epochs: int = 500
    patience: int = 10
    seed: int = 0


def _warm_ndcg(data: SplitData, user: np.ndarray, item: np.ndarray, on: str) -> float:
    return evaluate_set(EmbeddingRecommender(user, item), data, data.split.sets[f"warm_{on}"],
                        data.candidates("warm"), ks=(20,))["ndcg@20"]


def train_reference(data: SplitData, recipe: Recipe = Recipe()) -> dict:
    """Train the reference; returns its best epoch, warm val/test NDCG@20 and seconds."""
    rng = np.random.default_rng(recipe.seed)
    torch.manual_seed(recipe.seed)
    train = data.split.train
    users = data.user_ids.get_indexer(train["user_id"]).astype(np.int64)
    items = data.item_ids.get_indexer(train["item_id"]).astype(np.int64)
    train_items = np.flatnonzero(data.warm_items)
    seen = data.train.tocsr()
    user_emb = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(data.n_users, recipe.dim)))
    item_emb = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(data.n_items, recipe.dim)))
    optimizer = torch.optim.Adam([user_emb, item_emb], lr=recipe.lr)
    best, best_state, since, started = (-1.0, -1), None, 0, time.perf_counter()
    for epoch in range(recipe.epochs):
        order = rng.permutation(len(users))
        for start in range(0, len(order), recipe.batch_size):
            idx = order[start:start + recipe.batch_size]
            u, i = users[idx], items[idx]
            j = train_items[rng.integers(0, len(train_items), len(idx))]
            clash = np.flatnonzero(np.asarray(seen[u, j]).ravel() > 0)
            while len(clash):  # redraw negatives the user has interacted with
                j[clash] = train_items[rng.integers(0, len(train_items), len(clash))]
                clash = clash[np.asarray(seen[u[clash], j[clash]]).ravel() > 0]
            ue, pe, ne = user_emb[u], item_emb[i], item_emb[torch.from_numpy(j)]
            loss = -torch.log(1e-5 + torch.sigmoid((ue * pe).sum(1) - (ue * ne).sum(1))).mean()
            reg = sum(torch.norm(e, p=2) / e.shape[0] for e in (ue, pe, ne)) * recipe.reg / len(idx)
            optimizer.zero_grad()
            (loss + reg).backward()
            optimizer.step()
        with torch.no_grad():
            score = _warm_ndcg(data, user_emb.numpy(), item_emb.numpy(), "val")
        if score > best[0]:
            best, best_state, since = (score, epoch), (user_emb.detach().clone(), item_emb.detach().clone()), 0
        else:
            since += 1
            if since >= recipe.patience:
                break
    user, item = (t.numpy() for t in best_state)
    return {"epoch": best[1], "val": best[0], "test": _warm_ndcg(data, user, item, "test"),
            "seconds": time.perf_counter() - started}


def train_ours(data: SplitData, split_dir, folder, seed: int, **overrides) -> dict:
    """Our backbone job with its defaults, in-process through the training skeleton."""
    from trainers.backbone import BackboneConfig, BackboneJob
    from trainers.loop import fit_in_process

    job = BackboneJob(BackboneConfig(split=split_dir, out=folder / "unused", seed=seed, **overrides), data=data)
    started = time.perf_counter()
    model, stopping = fit_in_process(job, folder)
    user, item = (t.detach().numpy() for t in (model.user.weight, model.item.weight))
    return {"epoch": stopping.best["epoch"], "val": stopping.best["warm_val_ndcg@20"],
            "test": _warm_ndcg(data, user, item, "test"), "seconds": time.perf_counter() - started}


def main() -> None:
    from pathlib import Path
    import tempfile

    from coldstart.data import movielens
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import load_split, make_split, save_split
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--cold", default="items")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(movielens.fetch(args.dataset), name=args.dataset)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            split_dir = save_split(make_split(dataset, args.cold, seed), Path(tmp) / "split")
            data = SplitData.from_split(load_split(split_dir))
            reference = train_reference(data, Recipe(seed=seed))
            ours = train_ours(data, split_dir, Path(tmp) / "ours", seed)
        rows.append((seed, reference, ours))
        print(f"seed {seed}: reference warm NDCG@20 val {reference['val']:.4f} test {reference['test']:.4f} "
              f"(best epoch {reference['epoch']}, {reference['seconds']:.0f} s); ours val {ours['val']:.4f} "
              f"test {ours['test']:.4f} (best epoch {ours['epoch']}, {ours['seconds']:.0f} s); "
              f"ratio on test {ours['test'] / reference['test']:.3f}", flush=True)
    ref = np.array([r["test"] for _, r, _ in rows])
    our = np.array([o["test"] for _, _, o in rows])
    print(f"\n{args.dataset} {args.cold}-cold, seeds {args.seeds}, warm test NDCG@20: reference "
          f"{ref.mean():.4f} ± {ref.std():.4f}, ours {our.mean():.4f} ± {our.std():.4f}, "
          f"ratio of means {our.mean() / ref.mean():.3f}")


if __name__ == "__main__":
    main()
