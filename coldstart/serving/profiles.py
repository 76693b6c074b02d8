"""What a new user's words say beyond their vector: the taste of users who favour what they named, and the
scale that puts a stated interest's text match beside the collaborative score (`ServingState`)."""

from __future__ import annotations

import numpy as np


def users_taste(state, labels: tuple[str, ...]) -> np.ndarray | None:
    """What users who favour the items carrying `labels` have in common: the mean of warm users' vectors, each
    weighted by how far its share of those items exceeds their share of all training interactions; None if
    no user's does. Computed once per set of labels, over the training interactions."""
    key = tuple(sorted(labels))
    if key not in state.tastes:
        if state.warm_rows is None:  # (user row of each training interaction, its item position, users' vectors)
            warm = [u for u in state.users.values() if u.warm and len(u.seen)]
            rows = np.repeat(np.arange(len(warm)), [len(u.seen) for u in warm])
            seen = np.concatenate([u.seen for u in warm]) if warm else np.zeros(0, np.int64)
            state.warm_rows = rows, seen, np.stack([u.vector for u in warm]) if warm else None
        rows, seen, vectors = state.warm_rows
        carries = np.zeros(len(state.item_ids), bool)
        carries[list(set().union(*(state.labelled.get(label, set()) for label in labels)))] = True
        totals = np.bincount(rows, minlength=0 if vectors is None else len(vectors))
        shares = np.bincount(rows, weights=carries[seen], minlength=len(totals)) / np.maximum(totals, 1)
        weights = np.maximum(shares - carries[seen].mean(), 0.0) if len(seen) else shares
        state.tastes[key] = None if not weights.sum() else \
            (weights @ vectors / weights.sum()).astype(np.float32)
    return state.tastes[key]


def spread_ratio(item_vectors: np.ndarray, item_text: np.ndarray | None, user_vectors: list[np.ndarray],
                  sample: int = 256) -> float:
    """Spread of warm users' collaborative scores over items / spread of text-to-text cosines among items:
    what puts a unit of stated interest on the scale of a unit of collaborative score."""
    if item_text is None or not len(user_vectors):
        return 0.0
    rng = np.random.default_rng(0)
    users = np.stack(user_vectors)[rng.choice(len(user_vectors), min(sample, len(user_vectors)), replace=False)]
    texts = item_text[rng.choice(len(item_text), min(sample, len(item_text)), replace=False)]
    collaborative = float(np.std(users @ item_vectors.T, axis=1).mean())
    stated = float(np.std(texts @ item_text.T, axis=1).mean())
    return collaborative / stated if stated > 0 else 0.0
