"""Full-ranking evaluation of any recommender on a cold-start split.

Each user's train items are excluded. Candidates, by protocol:
- item cold-start: cold sets rank among all cold items (cold-val and cold-test
  alike), warm sets among warm (train) items, all sets among warm and cold items;
- user cold-start: every set ranks among all items.
"All items" means the items that occur in some interaction of the split.

Validation comes in two halves of the cold-val entities (items, or users for
user cold-start), fixed by a hash of their ids: `val-select`, what training
selects on (early stopping, searches, ensembles), and `val-audit`, what the
served configuration is chosen on (`coldstart.serving.evidence`). A model picked
on the same items it is then judged by looks better than it is: on three
ml-100k splits the tuned VAE's cold-val NDCG@20 ran 0.225 / 0.263 / 0.298
against 0.125 / 0.299 / 0.208 on test. `val` is both halves.

The JSON shape scripts rely on (stable):
  {"cold": {"recall@10": .., "ndcg@10": .., "precision@10": .., "hit@10": ..,
            "recall@20": .., ..., "users": N}, "warm": {...}, "all": {...}}
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from coldstart.data.split import Split
from coldstart.metrics import batch_metrics, metric_names, topk_hit_matrix

log = logging.getLogger(__name__)

GROUPS = ("cold", "warm", "all")
SETS = ("test", "val", "val-select", "val-audit")
DEFAULT_KS = (10, 20)
TIE_SEED = 20150101


class Recommender(Protocol):
    """What the evaluator needs: scores for a batch of users over every item of the index."""

    def score(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores; users and items are indices of `SplitData`."""
        ...


@dataclass
class SplitData:
    """A split with contiguous indices, train matrices and candidate masks, shared by all models."""

    split: Split
    user_ids: pd.Index
    item_ids: pd.Index
    train: sp.csr_matrix  # users x items, 1 where the pair is in train
    warm_items: np.ndarray  # bool mask over items
    cold_items: np.ndarray
    universe: np.ndarray  # bool mask: items that occur in some interaction

    @classmethod
    def from_split(cls, split: Split) -> "SplitData":
        sets = split.sets
        item_order = list(split.items["item_id"])
        seen = set(item_order)
        for frame in sets.values():  # load_split guarantees every item is in the table
            item_order.extend(i for i in pd.unique(frame["item_id"]) if i not in seen and not seen.add(i))
        item_ids = pd.Index(item_order, dtype=object)
        user_order = [] if split.users is None else list(split.users["user_id"])
        seen_users = set(user_order)
        for frame in sets.values():
            for u in pd.unique(frame["user_id"]):
                if u not in seen_users:
                    seen_users.add(u)
                    user_order.append(u)
        user_ids = pd.Index(user_order, dtype=object)

        train = sets["train"]
        rows = user_ids.get_indexer(train["user_id"])
        cols = item_ids.get_indexer(train["item_id"])
        matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                               shape=(len(user_ids), len(item_ids)))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0

        def mask(ids) -> np.ndarray:
            m = np.zeros(len(item_ids), dtype=bool)
            m[item_ids.get_indexer(pd.Index(list(ids)))] = True
            return m

        warm = mask(set(train["item_id"]))
        universe = mask(set().union(*(set(f["item_id"]) for f in sets.values())))
        if split.cold == "items":
            cold = mask(set(sets["cold_val"]["item_id"]) | set(sets["cold_test"]["item_id"]))
        else:
            cold = universe.copy()
        return cls(split=split, user_ids=user_ids, item_ids=item_ids, train=matrix,
                   warm_items=warm, cold_items=cold, universe=universe)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def candidates(self, group: str) -> np.ndarray:
        if self.split.cold == "users":
            return self.universe
        return {"cold": self.cold_items, "warm": self.warm_items,
                "all": self.warm_items | self.cold_items}[group]

    def eval_set(self, group: str, on: str) -> pd.DataFrame:
        """The `group` pairs of `on` (`SETS`); a validation half keeps the rows of its own cold-val entities
        (the warm rows of `all` and every warm row stay in both)."""
        if on not in SETS:
            raise ValueError(f"on must be one of {', '.join(SETS)}, got {on!r}")
        pairs = self.split.sets[f"{group}_{on.split('-')[0]}"]
        if on in ("test", "val") or group == "warm":
            return pairs
        column = "item_id" if self.split.cold == "items" else "user_id"
        cold = set(self.split.cold_ids["val"])
        half = pairs[column].map(lambda i: i not in cold or is_audit(i) == (on == "val-audit"))
        return pairs[half.astype(bool)]

    def item_popularity(self) -> np.ndarray:
        return np.asarray(self.train.sum(axis=0)).ravel()


def is_audit(entity_id: str) -> bool:
    """Whether a cold-val entity is in the audit half (`val-audit`): a fixed hash of its id, about half."""
    return hashlib.md5(str(entity_id).encode()).digest()[0] % 2 == 1


def evaluate(model: Recommender, data: SplitData,
             on: Literal["test", "val", "val-select", "val-audit"] = "test",
             ks: tuple[int, ...] = DEFAULT_KS, batch_size: int = 1024) -> dict[str, dict[str, float]]:
    """Metrics per group ('cold', 'warm', 'all') on the test (or val, or a validation half) sets."""
    return {group: evaluate_set(model, data, data.eval_set(group, on), data.candidates(group),
                                ks=ks, batch_size=batch_size)
            for group in GROUPS}


def evaluate_set(model: Recommender, data: SplitData, pairs: pd.DataFrame, candidates: np.ndarray,
                 ks: tuple[int, ...] = DEFAULT_KS, batch_size: int = 1024) -> dict[str, float]:
    names = metric_names(ks)
    if pairs.empty:
        log.warning("empty evaluation set; metrics are NaN")
        return {**{n: float("nan") for n in names}, "users": 0}
    rows = data.user_ids.get_indexer(pairs["user_id"])
    cols = data.item_ids.get_indexer(pairs["item_id"])
    truth_all = sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)),
                              shape=(data.n_users, data.n_items))
    users = np.unique(rows)
    # Fixed random tie-break: scores that tie (popularity's cold items, say) rank as chance would.
    tie_order = torch.from_numpy(np.random.default_rng(TIE_SEED).permutation(data.n_items))
    blocked = torch.from_numpy(~candidates)
    sums = {n: 0.0 for n in names}
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = torch.from_numpy(np.asarray(model.score(batch), dtype=np.float32)).clone()
        if scores.shape != (len(batch), data.n_items):
            raise ValueError(f"model returned scores of shape {tuple(scores.shape)}, "
                             f"expected {(len(batch), data.n_items)}")
        scores = torch.nan_to_num(scores, nan=-np.inf)
        scores[:, blocked] = -np.inf
        seen = data.train[batch].tocoo()
        scores[torch.from_numpy(seen.row.astype(np.int64)), torch.from_numpy(seen.col.astype(np.int64))] = -np.inf
        truth = torch.from_numpy(truth_all[batch].toarray())
        hits = topk_hit_matrix(scores, truth, max(ks), tie_order)
        values = batch_metrics(hits, truth.sum(1), ks)
        for n in names:
            sums[n] += float(values[n].sum())
    return {**{n: sums[n] / len(users) for n in names}, "users": int(len(users))}
