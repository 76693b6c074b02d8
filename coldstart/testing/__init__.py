"""Shared test data: tiny generated datasets and artifacts, crash and fuzz drivers.

Importable by the tests and the benchmarks alike (neither imports the other);
built from the core alone, in seconds, with nothing downloaded but what the
caller passes in (a text encoder for `artifacts.build_artifacts`). The training
jobs on tiny inputs live a layer up, in `trainers.testing`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def make_tables(n_users: int = 40, n_items: int = 60, per_user: int = 12, seed: int = 0):
    """Users who like one genre each and mostly rate items of it: content carries real signal."""
    rng = np.random.default_rng(seed)
    item_genre = rng.integers(0, len(GENRES), n_items)
    items = pd.DataFrame({
        "item_id": [f"i{j}" for j in range(n_items)],
        "title": [f"Movie {j}" for j in range(n_items)],
        "year": rng.integers(1950, 2000, n_items),
        "genres": [GENRES[g] + ("|Drama" if j % 5 == 0 and GENRES[g] != "Drama" else "")
                   for j, g in enumerate(item_genre)],
    })
    user_genre = rng.integers(0, len(GENRES), n_users)
    users = pd.DataFrame({
        "user_id": [f"u{u}" for u in range(n_users)],
        "age": rng.integers(18, 70, n_users),
        "gender": rng.choice(["F", "M"], n_users),
        "occupation": [f"job{g}" for g in user_genre],
    })
    rows = []
    for u in range(n_users):
        liked = np.flatnonzero(item_genre == user_genre[u])
        others = np.flatnonzero(item_genre != user_genre[u])
        n_liked = min(len(liked), int(per_user * 0.8))
        chosen = list(rng.choice(liked, n_liked, replace=False)) + list(
            rng.choice(others, per_user - n_liked, replace=False))
        for j in chosen:
            rows.append((f"u{u}", f"i{j}", float(rng.integers(1, 6)), int(rng.integers(8e8, 9e8))))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return interactions, items, users
