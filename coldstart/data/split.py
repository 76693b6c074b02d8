"""The cold-start split protocol, and loading any split folder (ours or brought by a user).

Protocol `coldrec-v1` (the one the published cold-start toolkits use, so figures compare):

1. Every interaction is a positive; duplicate (user, item) pairs count once.
2. 20% of the entities on the cold side (items or users that have interactions),
   drawn by the seed, become cold with all their interactions.
3. The warm interactions are split 80/10/10 at random into train, warm_val and
   warm_test; a warm_val or warm_test row whose user or item is absent from train
   moves into train.
4. The cold entities are split 50/50 into cold-val and cold-test entities, their
   interactions going with them.
5. all_val (all_test) is the union of warm_val and cold_val (warm_test and
   cold_test) rows, kept only for the warm-side entities (users for item
   cold-start, items for user cold-start) that appear in both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from coldstart import artifacts
from coldstart.data.columns import clean_entity_table
from coldstart.data.schema import DataError, Dataset, find_table, ids_as_strings, read_table, require_columns

log = logging.getLogger(__name__)

PROTOCOL = "coldrec-v1"
ColdSide = Literal["items", "users"]
EVAL_SETS = ("warm_val", "warm_test", "cold_val", "cold_test", "all_val", "all_test")
INTERACTION_SETS = ("train", *EVAL_SETS)


def _key(side: ColdSide) -> str:
    return "item_id" if side == "items" else "user_id"


def _other(side: ColdSide) -> str:
    return "user_id" if side == "items" else "item_id"


@dataclass
class Split:
    """Interaction sets (user_id, item_id) plus the entity tables and metadata."""

    cold: ColdSide
    sets: dict[str, pd.DataFrame]
    items: pd.DataFrame
    users: pd.DataFrame | None
    info: dict = field(default_factory=dict)

    @property
    def train(self) -> pd.DataFrame:
        return self.sets["train"]

    @property
    def cold_ids(self) -> dict[str, list[str]]:
        """Cold entity ids by role: {'val': [...], 'test': [...]}."""
        key = _key(self.cold)
        return {"val": sorted(set(self.sets["cold_val"][key])), "test": sorted(set(self.sets["cold_test"][key]))}

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            name: {"interactions": len(df), "users": int(df["user_id"].nunique()),
                   "items": int(df["item_id"].nunique())}
            for name, df in self.sets.items()
        }


def make_split(ds: Dataset, cold: ColdSide = "items", seed: int = 42, *, cold_fraction: float = 0.2,
               warm_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Apply the cold-start protocol to a dataset. The same seed gives the same split."""
    if cold not in ("items", "users"):
        raise ValueError(f"cold must be 'items' or 'users', got {cold!r}")
    key, other = _key(cold), _other(cold)
    rng = np.random.default_rng(seed)

    pairs = (ds.interactions[["user_id", "item_id"]].drop_duplicates()
             .sort_values(["user_id", "item_id"], kind="stable").reset_index(drop=True))

    entities = np.array(sorted(pairs[key].unique()), dtype=object)
    rng.shuffle(entities)
    n_warm = int((1.0 - cold_fraction) * len(entities))
    cold_entities = entities[n_warm:]
    if len(cold_entities) < 2:
        raise DataError(f"too few {cold} ({len(entities)}) to draw cold-val and cold-test entities")
    is_cold = pairs[key].isin(set(cold_entities))
    warm, cold_rows = pairs.loc[~is_cold], pairs.loc[is_cold]

    order = rng.permutation(len(warm))
    n_val = int(warm_fractions[1] * len(warm))
    n_test = int(warm_fractions[2] * len(warm))
    n_train = len(warm) - n_val - n_test
    train = warm.iloc[order[:n_train]]
    val = warm.iloc[order[n_train:n_train + n_val]]
    test = warm.iloc[order[n_train + n_val:]]
    # A warm val/test row must be rankable: its user and item need train history.
    train, val = _move_unseen_to_train(train, val)
    train, test = _move_unseen_to_train(train, test)

    n_cold_val = int(0.5 * len(cold_entities))
    cold_val_ids, cold_test_ids = set(cold_entities[:n_cold_val]), set(cold_entities[n_cold_val:])
    cold_val = cold_rows.loc[cold_rows[key].isin(cold_val_ids)]
    cold_test = cold_rows.loc[cold_rows[key].isin(cold_test_ids)]

    sets = {
        "train": train, "warm_val": val, "warm_test": test, "cold_val": cold_val, "cold_test": cold_test,
        "all_val": _union_on_shared(val, cold_val, other),
        "all_test": _union_on_shared(test, cold_test, other),
    }
    sets = {k: v.sort_values(["user_id", "item_id"]).reset_index(drop=True) for k, v in sets.items()}
    split = Split(cold=cold, sets=sets, items=ds.items, users=ds.users)
    split.info = {
        "protocol": PROTOCOL, "dataset": ds.name, "cold": cold, "seed": seed,
        "cold_fraction": cold_fraction, "warm_fractions": list(warm_fractions),
        "counts": split.counts(),
        "cold_ids": {"val": sorted(cold_val_ids), "test": sorted(cold_test_ids)},
    }
    return split


def _move_unseen_to_train(train: pd.DataFrame, held: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    for col in ("user_id", "item_id"):
        unseen = ~held[col].isin(set(train[col]))
        if unseen.any():
            train = pd.concat([train, held.loc[unseen]])
            held = held.loc[~unseen]
    return train, held


def _union_on_shared(warm: pd.DataFrame, cold: pd.DataFrame, other: str) -> pd.DataFrame:
    shared = set(warm[other]) & set(cold[other])
    both = pd.concat([warm, cold])
    return both.loc[both[other].isin(shared)]


def save_split(split: Split, folder: str | Path) -> Path:
    """Write every set as parquet plus `split.json`, atomically."""
    with artifacts.atomic_dir(folder) as tmp:
        for name, frame in split.sets.items():
            frame[["user_id", "item_id"]].to_parquet(tmp / f"{name}.parquet", index=False)
        split.items.to_parquet(tmp / "items.parquet", index=False)
        if split.users is not None:
            split.users.to_parquet(tmp / "users.parquet", index=False)
        artifacts.write_json(tmp / "split.json", split.info)
    return Path(folder)


def load_split(folder: str | Path) -> Split:
    """Load a split folder in our format, parquet or CSV; `split.json` is optional.

    Without `split.json` the cold side is the one whose ids in cold_val and
    cold_test never occur in train; all_val/all_test are derived if absent.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("split folder not found", file=folder)
    sets: dict[str, pd.DataFrame] = {}
    for name in INTERACTION_SETS:
        path = find_table(folder, name, required=not name.startswith("all_"))
        if path is None:
            continue
        frame = read_table(path)
        require_columns(frame, ["user_id", "item_id"], file=path)
        frame = ids_as_strings(frame, "user_id", file=path)
        frame = ids_as_strings(frame, "item_id", file=path)
        sets[name] = frame[["user_id", "item_id"]].drop_duplicates().reset_index(drop=True)
    if sets["train"].empty:
        raise DataError("table is empty", file=find_table(folder, "train"))

    items_path = find_table(folder, "items")
    items = read_table(items_path)
    require_columns(items, ["item_id"], file=items_path)
    items = ids_as_strings(items, "item_id", file=items_path)
    items = clean_entity_table(items, "item_id", file=items_path)
    users_path = find_table(folder, "users", required=False)
    users = None
    if users_path is not None:
        users = read_table(users_path)
        require_columns(users, ["user_id"], file=users_path)
        users = ids_as_strings(users, "user_id", file=users_path)
        users = clean_entity_table(users, "user_id", file=users_path)

    info_path = folder / "split.json"
    info = _read_info(info_path) if info_path.is_file() else {}
    cold = info.get("cold") or _infer_cold_side(sets, folder)
    if cold not in ("items", "users"):
        raise DataError(f"'cold' must be 'items' or 'users', got {cold!r}", file=info_path, column="cold")
    key, other = _key(cold), _other(cold)

    train_keys = set(sets["train"][key])
    for name in ("cold_val", "cold_test"):
        leaked = sets[name][key].isin(train_keys)
        if leaked.any():
            raise DataError(f"cold {cold} also occur in train", file=find_table(folder, name), column=key,
                            value=sets[name].loc[leaked, key].iloc[0])
    known_items = set(items["item_id"])
    for name, frame in sets.items():
        unknown = ~frame["item_id"].isin(known_items)
        if unknown.any():
            raise DataError(f"{int(unknown.sum())} item id(s) absent from {items_path.name}",
                            file=find_table(folder, name), column="item_id",
                            value=frame.loc[unknown, "item_id"].iloc[0])
    for stage in ("val", "test"):
        if f"all_{stage}" not in sets:
            sets[f"all_{stage}"] = _union_on_shared(sets[f"warm_{stage}"], sets[f"cold_{stage}"], other)

    split = Split(cold=cold, sets=sets, items=items, users=users)
    split.info = {"protocol": info.get("protocol", "external"), "cold": cold, **info,
                  "counts": split.counts(), "cold_ids": split.cold_ids, "path": str(folder)}
    return split


def _read_info(path: Path) -> dict:
    try:
        info = artifacts.read_json(path)
    except (OSError, ValueError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise DataError(f"cannot read split metadata: {type(exc).__name__}: {exc}", file=path) from exc
    if not isinstance(info, dict):
        raise DataError(f"split metadata must be a JSON object, got {type(info).__name__}", file=path)
    return info


def _infer_cold_side(sets: dict[str, pd.DataFrame], folder: Path) -> ColdSide:
    cold_rows = pd.concat([sets["cold_val"], sets["cold_test"]])
    if cold_rows.empty:
        raise DataError("cold_val and cold_test are both empty; cannot tell the cold side", file=folder)
    disjoint = {side: not cold_rows[_key(side)].isin(set(sets["train"][_key(side)])).any()
                for side in ("items", "users")}
    if disjoint["items"] and not disjoint["users"]:
        return "items"
    if disjoint["users"] and not disjoint["items"]:
        return "users"
    if disjoint["items"] and disjoint["users"]:
        raise DataError("both the users and the items of cold_val/cold_test are absent from train; "
                        "write split.json with \"cold\": \"items\" or \"users\"", file=folder)
    raise DataError("neither the users nor the items of cold_val/cold_test are disjoint from train, "
                    "so this is not a cold-start split", file=folder)
