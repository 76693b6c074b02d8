"""Does the pseudo-cold figure pick what test rewards? The generators fitted without a training job, scored on
pseudo-cold folds of warm entities (`coldstart.pseudo_cold`, what serving's default is chosen on) beside
cold-val's audit half (what the rule used to rest on) and test.

Each FOLDER holds a split, its embeddings and a backbone: a pipeline's `OUT/seed-N`, or a folder
`benchmarks/quality.py` prepared (`COLDSTART_CACHE/quality/ml-100k-items-42`). knn-warm (k 5, users' 50),
knn-bag and knn-residual are fitted here as the pipeline's stages fit them.

    python -m benchmarks.pseudo_cold FOLDER [FOLDER ...]

Per folder: each generator's pseudo-cold, val-audit and test cold NDCG@20, and the 95% interval (entities
resampled) of knn-residual minus knn-bag on pseudo-cold; then, over the folders, how often the pseudo-cold
winner and the val-audit winner were test's winner among the three.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

NAMES = ("knn-warm", "knn-bag", "knn-residual")


def generators(inputs) -> dict:
    bag = inputs.knn_bag()
    return {"knn-warm": inputs.knn_warm(5, 50), "knn-bag": bag, "knn-residual": inputs.knn_residual(bag)}


def measure(folder: Path) -> dict[str, dict]:
    from coldstart import pseudo_cold
    from coldstart.data.split import load_split
    from coldstart.evaluate import SplitData, evaluate
    from coldstart.models.inputs import GeneratorInputs
    from coldstart.models.mf import EmbeddingRecommender
    from coldstart.serving.evidence import item_interval

    data = SplitData.from_split(load_split(folder / "split"))
    inputs = GeneratorInputs.from_folders(data, folder)
    side = pseudo_cold.side_of(data.split.cold)
    out, shares = {}, {}
    for name, model in generators(inputs).items():
        shares[name] = pseudo_cold.shares(inputs, model, side)
        recommender = EmbeddingRecommender(*inputs.vectors(model))
        out[name] = {"pseudo": float(sum(shares[name].values())),
                     **{on: evaluate(recommender, data, on=on, ks=(20,))["cold"]["ndcg@20"]
                        for on in ("val-audit", "test")}}
    out["knn-residual"]["minus knn-bag"] = item_interval(shares["knn-residual"], shares["knn-bag"])
    if side == "user":
        out["popularity"] = {"pseudo": float(sum(pseudo_cold.popularity_shares(inputs).values()))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| folder | generator | pseudo-cold | val-audit cold | test cold |\n|---|---|---|---|---|")
    agree = {"pseudo-cold": 0, "val-audit": 0}
    for folder in args.folders:
        started = time.perf_counter()
        figures = measure(folder)
        for name, f in figures.items():
            extra = f" (minus knn-bag {f['minus knn-bag'][0]:+.4f} to {f['minus knn-bag'][1]:+.4f})" \
                if "minus knn-bag" in f else ""
            print(f"| {folder.name} | {name} | {f['pseudo']:.4f}{extra} | {f.get('val-audit', np.nan):.4f} | "
                  f"{f.get('test', np.nan):.4f} |", flush=True)
        best = max(NAMES, key=lambda n: figures[n]["test"])
        agree["pseudo-cold"] += max(NAMES, key=lambda n: figures[n]["pseudo"]) == best
        agree["val-audit"] += max(NAMES, key=lambda n: figures[n]["val-audit"]) == best
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\nTest's best of {', '.join(NAMES)} picked by: " +
          ", ".join(f"{k} {v} of {len(args.folders)}" for k, v in agree.items()))


if __name__ == "__main__":
    main()
