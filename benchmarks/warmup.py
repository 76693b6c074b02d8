"""Online warm-up of cold items from their first interactions, through the endpoint's own code.

CVAR-style phases: for every cold-test item of the artifacts' split with more than
20 test interactions, its first 0, 5, 10 and 20 interactions (by timestamp where
the split keeps one, else in a seeded random order) are fed through
`Catalogue.record_interaction` (what `POST /v1/interactions` calls: the store
write, the fold-in, the index update), into a fresh store per phase. Every phase
is evaluated on the same held-out part, each item's interactions after its first
20: for each user in it, NDCG@20 over the cold-test items (the user's fed items
left out), with the user's vector and the items' vectors as the ranker holds them.
Phase 0 is no warm-up: the items' content vectors.

Also timed: the fold-in and index update alone (`fold_in` + `ItemIndex.update`), and
the whole `record_interaction` with its durable store write.

With `--retrain`, each phase is also compared with retraining from scratch: the
backbone (the pipeline's BPR-MF job, in-process, its default settings and the
artifacts' seed) trained on the split's train set plus the phase's fed
interactions, so the fed items are warm items with that many interactions, and
evaluated on the same held-out part with its own user and item vectors.

    python -m benchmarks.warmup --artifacts out/demo [--retrain]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.schema import find_table, read_table
from coldstart.serving.service import local_service
from coldstart.serving.warmup import fold_in

PHASES = (0, 5, 10, 20)


def read_json_or(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}
HELD_BACK = 20  # interactions per item that phases may feed; the rest are evaluated


def ordered_test(artifacts: Path, seed: int) -> pd.DataFrame:
    test = read_table(find_table(artifacts / "split", "cold_test")).astype({"user_id": str, "item_id": str})
    if "timestamp" in test.columns:
        return test.sort_values(["item_id", "timestamp"], kind="stable")
    order = np.random.default_rng(seed).permutation(len(test))
    return test.iloc[order].sort_values("item_id", kind="stable")


def ndcg_at_20(catalogue, held: pd.DataFrame, fed: pd.DataFrame, items: list[str]) -> float:
    positions = np.asarray([catalogue.item_pos[i] for i in items])
    return ranked_ndcg(lambda user: catalogue.users[user].vector, catalogue.index.vectors(positions), held, fed,
                       items)


def ranked_ndcg(user_vector, item_vectors: np.ndarray, held: pd.DataFrame, fed: pd.DataFrame,
                items: list[str]) -> float:
    """Mean NDCG@20 of the held-out users over `items` (rows of `item_vectors`), their fed items left out."""
    column = {item: j for j, item in enumerate(items)}
    fed_by_user = fed.groupby("user_id")["item_id"].apply(list).to_dict()
    gains = []
    for user, group in held.groupby("user_id"):
        scores = item_vectors @ user_vector(user)
        for item in fed_by_user.get(user, []):
            scores[column[item]] = -np.inf
        top = np.argsort(-scores)[:20]
        relevant = {column[i] for i in group["item_id"]}
        dcg = sum(1 / np.log2(rank + 2) for rank, j in enumerate(top) if j in relevant)
        ideal = sum(1 / np.log2(rank + 2) for rank in range(min(20, len(relevant))))
        gains.append(dcg / ideal)
    return float(np.mean(gains))


def retrained_ndcg(artifacts: Path, fed: pd.DataFrame, held: pd.DataFrame, items: list[str], seed: int) -> float:
    """Retraining from scratch: the backbone trained on train + `fed`, evaluated like a phase."""
    from coldstart.data.split import load_split, save_split
    from coldstart.evaluate import SplitData
    from coldstart.models.coldstart_model import load_backbone
    from trainers.backbone import BackboneConfig, BackboneJob
    from trainers.loop import LocalContext, fit

    split = load_split(artifacts / "split")
    train = split.sets["train"]
    as_train = fed[["user_id", "item_id"]].astype({c: train[c].dtype for c in ("user_id", "item_id")})
    split.sets["train"] = pd.concat([train, as_train], ignore_index=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_split(split, Path(tmp) / "split")
        data = SplitData.from_split(split)
        job = BackboneJob(BackboneConfig(split=Path(tmp) / "split", out=Path(tmp) / "unused", seed=seed), data=data)
        fit(job, LocalContext(folder=Path(tmp) / "run"))
        _, users, item_matrix = load_backbone(Path(tmp) / "run" / "best")
    user_row = {str(u): i for i, u in enumerate(data.user_ids)}
    item_row = {str(i): j for j, i in enumerate(data.item_ids)}
    return ranked_ndcg(lambda user: users[user_row[user]], item_matrix[[item_row[i] for i in items]], held, fed, items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="Order of the interactions when there is no timestamp.")
    parser.add_argument("--generator", default="auto", help="The served generator (as coldstart serve takes it).")
    parser.add_argument("--retrain", action="store_true", help="Also retrain the backbone from scratch per phase.")
    args = parser.parse_args()

    test = ordered_test(args.artifacts, args.seed)
    counts = test.groupby("item_id").size()
    items = sorted(counts[counts > HELD_BACK].index)
    test = test[test["item_id"].isin(items)]
    rank = test.groupby("item_id").cumcount()
    held = test[rank >= HELD_BACK]
    print(f"generator {args.generator}: {len(items)} cold-test items with more than {HELD_BACK} interactions; "
          f"{len(held)} held-out interactions of {held['user_id'].nunique()} users evaluated in every phase")
    rows = []
    for phase in PHASES:
        fed = test[rank < phase]
        with tempfile.TemporaryDirectory() as store:
            service = local_service(args.artifacts, store, generator=args.generator)
            catalogue = service.ranker.target
            started = time.perf_counter()
            for user, item in zip(fed["user_id"], fed["item_id"]):
                catalogue.record_interaction(user, item)
            per = (time.perf_counter() - started) / max(len(fed), 1) * 1000
            rows.append({"phase": phase, "fed": len(fed), "ndcg@20": ndcg_at_20(catalogue, held, fed, items),
                         "ms per interaction (with the store's fsync)": per if len(fed) else float("nan")})
            if args.retrain and phase > 0:  # phase 0 retrained would be the backbone, the items untrained
                started = time.perf_counter()
                seed = int(read_json_or(args.artifacts / "split" / "split.json").get("seed", 42))
                rows[-1]["retrained ndcg@20"] = retrained_ndcg(args.artifacts, fed, held, items, seed)
                rows[-1]["retrain s"] = time.perf_counter() - started
            if phase == PHASES[-1]:  # the fold-in and index update alone, on this catalogue's sizes
                pos = catalogue.item_pos[items[0]]
                others = np.stack([catalogue.users[u].vector for u in fed["user_id"][:HELD_BACK]])
                prior = catalogue.index.vectors([pos])[0]
                n, started = 1000, time.perf_counter()
                for _ in range(n):
                    catalogue.index.update(pos, fold_in(prior, others, catalogue.positive_score,
                                                        catalogue.item_strength))
                fold_ms = (time.perf_counter() - started) / n * 1000
    table = pd.DataFrame(rows)
    base = table.loc[0, "ndcg@20"]
    table["vs phase 0"] = table["ndcg@20"] / base
    print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
    for _, row in table.iterrows():
        print("| " + " | ".join(str(int(v)) if k in ("phase", "fed") else f"{v:.4f}" if isinstance(v, float) else str(v)
                                for k, v in row.items()) + " |")
    print(f"fold-in + index update alone ({HELD_BACK} interactions, dim {len(prior)}): {fold_ms * 1000:.0f} µs")


if __name__ == "__main__":
    main()
