"""Where a stated interest places a new user: the map learnt on warm users (`coldstart.serving.statements`)
and how a profile uses it (`coldstart.serving.profiles.profile_query`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from coldstart.serving import statements
from coldstart.serving.profiles import design, profile_query, users_taste

pytestmark = pytest.mark.timeout(60)

DIM = 6


def _state(n_users: int = 240, seed: int = 0, noise: float = 0.3) -> tuple[SimpleNamespace, np.ndarray, list[str]]:
    """Warm users who are each a fan of one of three genres (items 0-19, 20-39, 40-59; one axis of the space
    each), with a small decade column beside (every item '1990s' or '1980s'). A user's vector is their genre's
    axis plus a personal part; the generator's guess (`placed`) sees the personal part only, through `noise`,
    and leans to the first genre whoever the user is (as generators lean to what most users watch). The map can
    learn both; the plain mean of the guess and the taste keeps the lean."""
    rng = np.random.default_rng(seed)
    item_vectors = np.zeros((60, DIM), np.float32)
    for g in range(3):
        item_vectors[20 * g:20 * (g + 1), g] = 1.0
    item_vectors[:, 3:] = rng.normal(scale=0.3, size=(60, 3))
    labels = [[f"genres: G{j // 20}", "year: 1990s" if j % 2 else "year: 1980s"] for j in range(60)]
    users, placed, ids = {}, [], []
    for u in range(n_users):
        genre = u % 3
        personal = rng.normal(size=DIM - 3)
        vector = np.concatenate([np.eye(3)[genre] * 2.0, personal]).astype(np.float32)
        own = rng.choice(np.arange(20 * genre, 20 * (genre + 1)), 12, replace=False)
        other = rng.choice(np.setdiff1d(np.arange(60), own), 4, replace=False)
        users[f"u{u}"] = SimpleNamespace(vector=vector, seen=np.concatenate([own, other]), warm=True)
        lean = np.array([1.5, 0.0, 0.0]) + rng.normal(scale=0.2, size=3)  # every guess leans to the first genre
        placed.append(np.concatenate([lean, personal + noise * rng.normal(size=DIM - 3)]))
        ids.append(f"u{u}")
    labelled: dict[str, set[int]] = {}
    for j, item in enumerate(labels):
        for label in item:
            labelled.setdefault(label, set()).add(j)
    state = SimpleNamespace(users=users, item_labels=labels, labelled=labelled, item_ids=[f"i{j}" for j in range(60)],
                            item_vectors=item_vectors, warm_items=np.ones(60, bool), tastes={}, warm_rows=None,
                            user_norm=float(np.median([np.linalg.norm(u.vector) for u in users.values()])),
                            stated_map=None)
    return state, np.asarray(placed, np.float32), ids


def test_a_warm_user_states_the_value_most_of_their_told_items_carry_and_the_one_most_out_of_proportion():
    state, _, _ = _state()
    shares = {"genres: G0": 0.5, "genres: G1": 0.1, "year: 1990s": 0.5, "year: 1980s": 0.5}
    # told: five G0 items from the 1980s and two G1 items from the 1990s
    said = statements.stated_values(state, np.array([0, 2, 4, 6, 8, 21, 23]), shares)
    # most: G0; lift: G1's (2/7 / 0.1) beats G0's (5/7 / 0.5); the decades' most and lift are one value
    assert said == ["genres: G0", "genres: G1", "year: 1980s"]


def test_the_map_places_a_stated_interest_nearer_the_users_real_vector_than_the_mean():
    state, placed, ids = _state()
    maps, record = statements.fit(state, ids, placed)
    assert set(maps) == {"genres", "year"} and record["genres"]["statements"] >= len(ids)
    assert record["genres"]["alpha"] in statements.ALPHAS
    fresh, fresh_placed, _ = _state(n_users=60, seed=1)  # users the map never saw
    near = {"map": [], "mean": []}
    for (user, entry), generated in zip(fresh.users.items(), fresh_placed):
        label = (f"genres: G{int(np.argmax(entry.vector[:3]))}",)
        taste = users_taste(state, label)
        mapped = design(generated, taste) @ maps["genres"]
        mean = generated / np.linalg.norm(generated) + taste / np.linalg.norm(taste)
        for name, vector in (("map", mapped), ("mean", mean)):
            near[name].append(vector @ entry.vector / np.linalg.norm(vector) / np.linalg.norm(entry.vector))
    assert np.mean(near["map"]) > np.mean(near["mean"]) + 0.05


def test_a_profile_takes_its_columns_map_and_the_mean_without_one():
    state, placed, ids = _state()
    maps, _ = statements.fit(state, ids, placed)
    generated = placed[0]
    means = {labels: profile_query(state, generated, np.zeros(0, np.int64), labels)
             for labels in (("genres: G1",), ("genres: G1", "year: 1990s"))}
    state.stated_map = {"genres": maps["genres"]}
    mapped = profile_query(state, generated, np.zeros(0, np.int64), ("genres: G1",))
    expected = design(generated, users_taste(state, ("genres: G1",))) @ maps["genres"] * state.user_norm
    np.testing.assert_allclose(mapped, expected, rtol=1e-5)
    assert not np.allclose(mapped, means[("genres: G1",)], atol=1e-3)
    # two columns named at once, or a column without a map: the mean, as before any map
    np.testing.assert_allclose(profile_query(state, generated, np.zeros(0, np.int64), ("genres: G1", "year: 1990s")),
                               means[("genres: G1", "year: 1990s")])
    state.stated_map = {"year": maps["year"]}
    np.testing.assert_allclose(profile_query(state, generated, np.zeros(0, np.int64), ("genres: G1",)),
                               means[("genres: G1",)])


def test_maps_are_kept_per_generator_and_column(tmp_path):
    assert statements.load(tmp_path, "knn-bag") is None  # a folder from before maps
    first = {"genres": np.ones((3, 2), np.float32), "year": np.zeros((3, 2), np.float32)}
    statements.save(tmp_path, "knn-bag", first)
    statements.save(tmp_path, "knn-residual", {"genres": np.full((3, 2), 2.0, np.float32)})
    statements.save(tmp_path, "knn-bag", {"genres": np.full((3, 2), 3.0, np.float32)})  # fitted again
    assert set(statements.load(tmp_path, "knn-residual")) == {"genres"}
    again = statements.load(tmp_path, "knn-bag")
    assert set(again) == {"genres"} and (again["genres"] == 3.0).all()
    assert statements.load(tmp_path, "vae") is None
    assert [p.name for p in tmp_path.iterdir()] == [statements.FILE]
    statements.save(tmp_path, "knn-bag", {})  # fitted again and found nothing: no map of the last fit stays
    assert statements.load(tmp_path, "knn-bag") is None and set(statements.load(tmp_path, "knn-residual")) == {"genres"}
    statements.save(tmp_path, "knn-residual", {})
    assert not any(tmp_path.iterdir())
