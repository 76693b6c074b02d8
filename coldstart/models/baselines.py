"""Baselines on the same code path as every model: random, popularity, content-kNN.

Each has a defined answer for every user and item: popularity gives cold items
zero (a floor); content-kNN ranks by content, and for a user with no history
falls back to users with similar attributes (or to popularity without them).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from coldstart.config import NotApplicable
from coldstart.evaluate import SplitData
from coldstart.features import attribute_matrix
from coldstart.models.neighbours import KNNGenerator
from coldstart.models.towers import cold_start_vectors

log = logging.getLogger(__name__)


class RandomRecommender:
    name = "random"

    def __init__(self, data: SplitData, seed: int = 0):
        self.n_items = data.n_items
        self.seed = seed

    def score(self, users: np.ndarray) -> np.ndarray:
        # One generator per user: a user's ranking does not depend on the batch it is in.
        return np.stack([np.random.default_rng([self.seed, int(u)]).random(self.n_items, dtype=np.float32)
                         for u in users]) if len(users) else np.zeros((0, self.n_items), np.float32)


class PopularityRecommender:
    name = "popularity"

    def __init__(self, data: SplitData):
        self.popularity = data.item_popularity().astype(np.float32)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity))).copy()


def item_attribute_vectors(data: SplitData) -> np.ndarray:
    items = data.split.items.set_index("item_id").reindex(data.item_ids).reset_index(names="item_id")
    return attribute_matrix(items, "item_id")[0]


def _check_attributes(data: SplitData, item_attributes: np.ndarray) -> None:
    """NotApplicable where attribute one-hots say nothing about the cold side: it would rank at random (items)
    or be the popularity list under another name (users)."""
    if data.split.cold == "items" and not item_attributes.shape[1]:
        raise NotApplicable("the items have no attributes (genres, year, ...) to compare: every item would tie; "
                            "content-knn-llm compares their text")
    users = data.split.users
    if data.split.cold == "users" and (users is None or not attribute_matrix(users, "user_id")[1]):
        raise NotApplicable("the users have no attributes (no users table, or none of its columns) to find a new "
                            "user's neighbours by: a new user would get the popularity list")


class ContentKNNRecommender:
    """An item's score is the cosine of its content vector to the mean of the user's history.

    `item_vectors` (rows aligned with `data.item_ids`) default to attribute
    one-hots; LLM embeddings plug in the same way. A user with no train history
    is scored through the `n_neighbours` train users with the most similar
    attributes (their interactions, weighted by similarity).
    """

    def __init__(self, data: SplitData, item_vectors: np.ndarray | None = None, *,
                 name: str = "content-knn", n_neighbours: int = 50):
        self.name = name
        vectors = item_attribute_vectors(data) if item_vectors is None else np.asarray(item_vectors, np.float32)
        if item_vectors is None:
            _check_attributes(data, vectors)
        if vectors.shape[0] != data.n_items:
            raise ValueError(f"item_vectors has {vectors.shape[0]} rows, expected {data.n_items}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.item_vectors = vectors / np.where(norms > 0, norms, 1.0)
        history = data.train
        counts = np.asarray(history.sum(axis=1)).ravel()
        profile = np.asarray(history @ self.item_vectors)
        self.user_vectors = (profile / np.maximum(counts, 1)[:, None]).astype(np.float32)
        self.has_history = counts > 0
        self._popularity = data.item_popularity().astype(np.float32)
        self._neighbour_scores = self._attribute_neighbours(data, n_neighbours)

    def _attribute_neighbours(self, data: SplitData, k: int):
        users = data.split.users
        if users is None or self.has_history.all():
            return None
        table = users.set_index("user_id").reindex(data.user_ids).reset_index(names="user_id")
        attrs, names = attribute_matrix(table, "user_id")
        if not names:
            return None
        warm = np.flatnonzero(self.has_history)
        cold = np.flatnonzero(~self.has_history)
        sims = attrs[cold] @ attrs[warm].T
        k = min(k, len(warm))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.zeros_like(sims)
        np.put_along_axis(weights, top, np.take_along_axis(sims, top, 1), 1)
        scores = np.asarray((data.train[warm].T @ weights.T).T, dtype=np.float32)
        return pd.Series(range(len(cold)), index=cold), scores

    def score(self, users: np.ndarray) -> np.ndarray:
        out = self.user_vectors[users] @ self.item_vectors.T
        no_history = ~self.has_history[users]
        if no_history.any():
            rows = np.flatnonzero(no_history)
            if self._neighbour_scores is not None:
                position, scores = self._neighbour_scores
                out[rows] = scores[position.loc[users[rows]].to_numpy()]
            else:
                out[rows] = self._popularity
        return out


BASELINES = {
    "random": RandomRecommender,
    "popularity": PopularityRecommender,
    "content-knn": ContentKNNRecommender,
}


class KNNWarmRecommender:
    """The strongest simple cold-start baseline: a cold item (or user) takes the mean backbone vector of
    its k content-nearest warm items (users), and is scored like a warm one.

    Items are compared by their content vectors (the LLM text vectors in the pipeline); users, on a
    user-cold split, by theirs (profile text and attribute one-hots). Warm entities keep their backbone
    vectors, so the warm figures are the backbone's. The same `KNNGenerator` serves it.
    """

    def __init__(self, data: SplitData, user_vectors: np.ndarray, item_vectors: np.ndarray,
                 item_content: np.ndarray, user_content: np.ndarray | None = None, *, k: int = 5,
                 user_k: int | None = None, name: str = "knn-warm"):
        self.name = name
        warm_users = data.train.getnnz(axis=1) > 0
        if user_content is None:  # users keep what they have: an item-cold split has no cold user to place
            user_content = np.zeros((data.n_users, 1), np.float32)
        self.generator = KNNGenerator.fit(item_features=item_content, user_features=user_content,
                                          item_vectors=item_vectors, user_vectors=user_vectors,
                                          warm_items=data.warm_items, warm_users=warm_users,
                                          item_dims=item_content.shape[1], k=k, user_k=user_k)
        self.user_vectors, self.item_vectors = cold_start_vectors(
            self.generator, user_vectors=user_vectors, item_vectors=item_vectors, warm_users=warm_users,
            warm_items=data.warm_items, user_features=user_content, item_features=item_content)

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.user_vectors[users] @ self.item_vectors.T
