"""knn-residual: knn-bag plus a correction learnt on warm items (`coldstart.models.residual`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.models.neighbours import KNNGenerator
from coldstart.models.residual import ResidualGenerator, leave_one_out, ridge_cv

pytestmark = pytest.mark.timeout(60)

TEXT, ATTRS, DIM = 8, 4, 6


def arrays(n_items=300, n_users=40, seed=0, signal=1.0):
    """Items whose backbone vectors are a linear map of their attributes (`signal`) plus noise; text random."""
    rng = np.random.default_rng(seed)
    attrs = rng.integers(0, 2, (n_items, ATTRS)).astype(np.float32)
    items = np.hstack([rng.normal(size=(n_items, TEXT)), attrs]).astype(np.float32)
    vectors = (signal * attrs @ rng.normal(size=(ATTRS, DIM)) + 0.3 * rng.normal(size=(n_items, DIM)))
    users = rng.normal(size=(n_users, TEXT + 2)).astype(np.float32)
    return {"item_features": items, "user_features": users, "item_vectors": vectors.astype(np.float32),
            "user_vectors": rng.normal(size=(n_users, DIM)).astype(np.float32),
            "warm_items": np.arange(n_items) < n_items * 0.8, "warm_users": np.ones(n_users, bool)}


def fit(a, counts=None):
    counts = np.full(len(a["item_features"]), 5) if counts is None else counts
    bag = KNNGenerator.bag(**a, item_dims=TEXT, item_counts=counts)
    model = ResidualGenerator.fit(bag, **a, item_counts=counts, user_counts=np.full(len(a["user_features"]), 5),
                                  text_dim=TEXT)
    return bag, model


def test_a_warm_item_is_never_its_own_neighbour():
    a = arrays(n_items=60)
    counts = np.where(np.arange(60) % 7 == 0, 1, 4)  # items trained once are nobody's neighbour
    bag = KNNGenerator.bag(**a, item_dims=TEXT, item_counts=counts)
    pool = a["warm_items"] & (counts >= 2)
    rows = np.flatnonzero(a["warm_items"])
    placed = leave_one_out(bag, "item", a["item_features"], rows, pool)
    # By hand: each member's mean over the k most similar pool items other than the row itself.
    expected = []
    for member in bag.members:
        space = member.item_space(a["item_features"])
        sims = space[rows] @ space[pool].T
        pool_ids = np.flatnonzero(pool)
        sims[pool_ids[None, :] == rows[:, None]] = -np.inf
        top = np.argsort(-sims, axis=1, kind="stable")[:, :member.k]
        expected.append(a["item_vectors"][pool_ids[top]].mean(axis=1))
    np.testing.assert_allclose(placed, np.mean(expected, axis=0), atol=1e-5)
    # With the row counted (what the exclusion guards against), a pool item's placement would differ.
    with_self = np.mean([m.generate_items(torch.as_tensor(a["item_features"][rows])).numpy() for m in bag.members], 0)
    assert not np.allclose(placed[pool[rows]], with_self[pool[rows]], atol=1e-3)


def test_it_places_new_items_closer_than_knn_bag_where_content_predicts_the_vector():
    a = arrays(signal=1.0)
    bag, model = fit(a)
    cold = ~a["warm_items"]
    x = torch.as_tensor(a["item_features"][cold])
    truth = a["item_vectors"][cold]
    with torch.no_grad():
        bag_error = ((bag.generate_items(x).numpy() - truth) ** 2).sum(1).mean()
        residual_error = ((model.generate_items(x).numpy() - truth) ** 2).sum(1).mean()
    assert residual_error < 0.7 * bag_error
    assert model.config["item_alpha"] is not None


def test_where_content_says_nothing_it_stays_near_knn_bag():
    a = arrays(signal=0.0)  # vectors are noise: there is no correction to learn
    bag, model = fit(a)
    x = torch.as_tensor(a["item_features"][~a["warm_items"]])
    with torch.no_grad():
        prior, placed = bag.generate_items(x).numpy(), model.generate_items(x).numpy()
    assert np.linalg.norm(placed - prior, axis=1).mean() < 0.25 * np.linalg.norm(prior, axis=1).mean()


def test_the_strength_is_the_one_that_predicts_held_out_rows_best():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5))
    y = x @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(400, 2))
    _, alpha, errors = ridge_cv(x, y, np.ones(400))
    assert alpha == min(errors, key=errors.get) and alpha <= 30.0  # a clean signal: little shrinkage
    _, alpha, _ = ridge_cv(x, rng.normal(size=(400, 2)), np.ones(400))
    assert alpha >= 1000.0  # noise: the most shrinkage
