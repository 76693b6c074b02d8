"""Pseudo-cold folds: the cold signal from thousands of warm entities instead of cold-val's ~170 new ones.

The warm items (user cold-start: the warm users) are cut into `FOLDS` random
folds. For each fold, a generator that fits without a training job (its
`refit`: knn-warm, knn-bag, knn-residual) is fitted again with the fold hidden
from it, places the fold's entities from their content as it places new ones,
and is scored as the protocol scores a cold set: NDCG@20 of each user who has
training interactions with the fold, ranking the fold's items by the backbone's
user vectors (user cold-start: each hidden user, ranking the warm items by the
placed vector). The users' and items' vectors were trained with the hidden
interactions, alike for every generator compared.

Each entity gets its share of the figure (`shares`): the NDCG its hits earn,
so the shares sum to the mean over folds and resampling entities resamples it
(`coldstart.serving.evidence.item_interval`). Serving's choice takes its
default generator from these figures (`coldstart.serving.evidence`).
"""

from __future__ import annotations

import numpy as np
import torch

FOLDS = 5
K = 20
MAX_HIDDEN = 5000  # warm entities hidden in all (a random sample beyond it): the figure's cost stays bounded
CHUNK = 2048  # users scored at a time: memory stays bounded on a large catalogue
_DISCOUNTS = 1.0 / np.log2(np.arange(2, K + 2))
_IDEAL = np.cumsum(_DISCOUNTS)


def side_of(cold: str) -> str:
    """The entity a split's cold start is about: "item" (item cold-start) or "user"."""
    return "user" if cold == "users" else "item"


def folds_of(count: int, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each of `count` entities' fold, at random with `seed`; -1 (never hidden) for all but a random
    `MAX_HIDDEN` of them where there are more."""
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, count)
    if count > MAX_HIDDEN:
        fold[rng.permutation(count)[MAX_HIDDEN:]] = -1
    return fold


def ndcg_gains(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the top K columns of each row of `scores`, each one's NDCG gain for its row's `truth`)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    hits = np.take_along_axis(truth, top, axis=1)
    ideal = _IDEAL[np.minimum(truth.sum(axis=1), K) - 1]
    return top, hits * _DISCOUNTS[:top.shape[1]] / ideal[:, None]


def _users_ndcg(train, users: np.ndarray, items: np.ndarray, scores) -> np.ndarray:
    """Each of `users`' NDCG@20 over their training items among `items`, ranked by `scores(block)` (the scores of
    the users `users[block]` for `items`), a `CHUNK` of users at a time; 0 for a user with none of them."""
    out = np.zeros(len(users))
    for start in range(0, len(users), CHUNK):
        block = slice(start, start + CHUNK)
        truth = train[users[block]][:, items].toarray() > 0
        scored = truth.any(axis=1)
        if scored.any():
            _, gains = ndcg_gains(np.asarray(scores(block))[scored], truth[scored])
            out[np.arange(len(truth))[scored] + start] = gains.sum(axis=1)
    return out


def placements(inputs, model, side: str = "item", folds: int = FOLDS, seed: int = 0):
    """[(a fold's warm entities (rows), their vectors as `model` refitted without them places them from their
    content), fold by fold], or None when `model` cannot be refitted (trained by a job) or there are fewer warm
    entities than folds. `inputs`: the run's `coldstart.models.inputs.GeneratorInputs`; `side`: "item" or "user"."""
    if getattr(model, "refit", None) is None:
        return None
    warm = {"item": np.asarray(inputs.data.warm_items, bool), "user": np.asarray(inputs.warm_users, bool)}
    rows = np.flatnonzero(warm[side])
    if len(rows) < folds:
        return None
    fold = folds_of(len(rows), folds, seed)
    features = inputs.item_features if side == "item" else inputs.user_features
    out = []
    for f in range(folds):
        hidden = rows[fold == f]
        if not len(hidden):
            continue
        kept = warm[side].copy()
        kept[hidden] = False
        refitted = model.refit(**inputs.fit_arrays(**{f"warm_{side}s": kept}))
        if refitted is None:
            return None
        with torch.no_grad():
            placed = getattr(refitted, f"generate_{side}s")(torch.as_tensor(np.asarray(features[hidden], np.float32)))
        out.append((hidden, placed.numpy()))
    return out


def shares(inputs, model, side: str = "item", folds: int = FOLDS, seed: int = 0) -> dict[str, float] | None:
    """{warm entity id: its share of `model`'s pseudo-cold NDCG@20} (the module docstring), or None when the
    model cannot be refitted (trained by a job) or there are fewer warm entities than folds.

    `inputs`: the run's `coldstart.models.inputs.GeneratorInputs`; `side`: "item" or "user" (`side_of`)."""
    placed_folds = placements(inputs, model, side, folds, seed)
    if placed_folds is None:
        return None
    data = inputs.data
    train = data.train.tocsr()
    ids = data.item_ids if side == "item" else data.user_ids
    hidden_in_all = sum(len(hidden) for hidden, _ in placed_folds)
    out: dict[str, float] = {}
    for hidden, placed in placed_folds:
        if side == "item":  # the users who trained on the fold rank its items
            per = np.zeros(len(hidden))
            users = np.flatnonzero(np.asarray(train[:, hidden].getnnz(axis=1)) > 0)
            for start in range(0, len(users), CHUNK):
                chunk = users[start:start + CHUNK]
                top, gains = ndcg_gains(inputs.user_vectors[chunk] @ placed.T, train[chunk][:, hidden].toarray() > 0)
                np.add.at(per, top.ravel(), gains.ravel())
            per /= max(len(users), 1) * folds
        else:  # each hidden user ranks the warm items
            items = np.flatnonzero(np.asarray(data.warm_items, bool))
            per = _users_ndcg(train, hidden, items, lambda block: placed[block] @ inputs.item_vectors[items].T)
            per /= hidden_in_all
        out.update({str(ids[e]): float(p) for e, p in zip(hidden, per)})
    return out


def popularity_shares(inputs, folds: int = FOLDS, seed: int = 0) -> dict[str, float]:
    """User cold-start's reference: each warm user's share of pseudo-cold NDCG@20 when a hidden user gets the
    warm items by their training interactions from the other folds' users (what a new user with nothing to
    go on is shown)."""
    data = inputs.data
    warm = np.asarray(inputs.warm_users, bool)
    rows = np.flatnonzero(warm)
    fold = folds_of(len(rows), folds, seed)
    train = data.train.tocsr()
    items = np.flatnonzero(np.asarray(data.warm_items, bool))
    out: dict[str, float] = {}
    for f in range(folds):
        hidden = rows[fold == f]
        if not len(hidden):
            continue
        counts = np.asarray(train[rows[fold != f]][:, items].sum(axis=0)).ravel().astype(np.float64)
        # ties broken by position, as `ndcg_gains` breaks every generator's
        per = _users_ndcg(train, hidden, items,
                          lambda block: np.broadcast_to(counts, (len(hidden[block]), len(items))))
        out.update({str(data.user_ids[e]): float(p) for e, p in zip(hidden, per / (fold >= 0).sum())})
    return out
