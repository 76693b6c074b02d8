"""knn-warm and the ensemble as servable generators: what they compute, and that their artifacts rebuild."""

from __future__ import annotations

import numpy as np
import torch

from coldstart.data.schema import validate
from coldstart.data.split import make_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.baselines import KNNWarmRecommender, RandomRecommender
from coldstart.models.coldstart_model import load_cold_model, load_recommender_artifact, save_cold_model
from coldstart.models.neighbours import EnsembleGenerator, KNNGenerator
from coldstart.models.towers import ColdStartTowers, cold_start_vectors
from coldstart.testing import make_tables


def _world(seed=0):
    inter, items, users = make_tables(n_users=80, n_items=120, per_user=15, seed=seed)
    data = SplitData.from_split(make_split(validate(inter, items, users), "items", seed=0))
    rng = np.random.default_rng(seed)
    genre = items.set_index("item_id").reindex(data.item_ids)["genres"].str.split("|").str[0]
    # Content that knows the genre, and backbone vectors that cluster by genre: neighbours carry the signal.
    centers = {g: rng.normal(size=8) for g in genre.unique()}
    item_vectors = np.stack([centers[g] + 0.3 * rng.normal(size=8) for g in genre]).astype(np.float32)
    text = np.stack([np.eye(len(centers))[sorted(centers).index(g)] for g in genre]).astype(np.float32)
    text += 0.1 * rng.normal(size=text.shape).astype(np.float32)
    user_vectors = rng.normal(size=(data.n_users, 8)).astype(np.float32)
    user_x = rng.normal(size=(data.n_users, 3)).astype(np.float32)
    return data, user_vectors, item_vectors, text, user_x


def test_a_cold_item_gets_the_mean_vector_of_its_k_nearest_warm_items():
    data, U, V, text, _ = _world()
    knn = KNNWarmRecommender(data, U, V, text, k=3)
    warm, cold = np.flatnonzero(data.warm_items), np.flatnonzero(~data.warm_items)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    for c in cold[:10]:
        nearest = warm[np.argsort(-(unit[warm] @ unit[c]))[:3]]
        np.testing.assert_allclose(knn.item_vectors[c], V[nearest].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(knn.item_vectors[warm], V[warm])  # warm items keep their backbone vectors
    np.testing.assert_array_equal(knn.user_vectors, U)  # and, on an item-cold split, every user
    random = evaluate(RandomRecommender(data), data)["cold"]["ndcg@20"]
    assert evaluate(knn, data)["cold"]["ndcg@20"] > random  # the neighbours' signal reaches the ranking


def test_an_item_without_content_gets_the_mean_warm_vector():
    data, U, V, text, user_x = _world()
    knn = KNNGenerator.fit(item_features=text, user_features=user_x, item_vectors=V, user_vectors=U,
                           warm_items=data.warm_items, warm_users=np.ones(data.n_users, bool), item_dims=text.shape[1])
    out = knn.generate_items(torch.zeros(2, text.shape[1])).numpy()
    np.testing.assert_allclose(out, np.repeat(V[data.warm_items].mean(0, keepdims=True), 2, 0), rtol=1e-5)


def test_the_ensemble_is_the_mean_of_its_members_and_both_rebuild_from_their_artifacts(tmp_path):
    data, U, V, text, user_x = _world()
    warm_users = data.train.getnnz(axis=1) > 0
    knn = KNNGenerator.fit(item_features=text, user_features=user_x, item_vectors=V, user_vectors=U,
                           warm_items=data.warm_items, warm_users=warm_users, item_dims=text.shape[1], k=3)
    torch.manual_seed(0)
    towers = ColdStartTowers(text.shape[1], user_x.shape[1], 8, hidden=16).eval()
    center = U[warm_users].mean(axis=0)
    ensemble = EnsembleGenerator.of([knn, towers], center, user_shrink=0.5)
    x, y = torch.as_tensor(text[:7]), torch.as_tensor(user_x[:7])
    torch.testing.assert_close(ensemble.generate_items(x), (knn.generate_items(x) + towers.generate_items(x)) / 2)
    with torch.no_grad():
        mean_user = (knn.generate_users(y) + towers.generate_users(y)) / 2
        torch.testing.assert_close(ensemble.generate_users(y), torch.as_tensor(center) + 0.5 * (mean_user - center))
    common = dict(user_vectors=U, item_vectors=V, user_features=user_x, item_features=text,
                  content={"text_dim": text.shape[1]}, meta={"metrics": {}})
    for name, model in (("knn", knn), ("ensemble", ensemble)):
        save_cold_model(tmp_path / name, data, model, **common)
        _, again, _ = load_cold_model(tmp_path / name)
        torch.testing.assert_close(again.generate_items(x), model.generate_items(x))
        scored = load_recommender_artifact(tmp_path / name, data)
        expected = cold_start_vectors(model, user_vectors=U, item_vectors=V, warm_users=warm_users,
                                      warm_items=data.warm_items, user_features=user_x, item_features=text)[1]
        np.testing.assert_allclose(scored.item_vectors, expected, rtol=1e-5, atol=1e-6)


def test_knn_bag_takes_neighbours_among_items_seen_often_enough_and_in_both_spaces(tmp_path):
    data, U, V, text, user_x = _world()
    warm, cold = np.flatnonzero(data.warm_items), np.flatnonzero(~data.warm_items)
    counts = np.zeros(data.n_items, int)
    counts[warm] = 5
    twin = warm[0]
    counts[twin] = 1  # seen once: its vector is one user's taste
    text = text.copy()
    text[cold[0]] = text[twin]  # the cold item's text matches that rare item exactly (a sequel, a namesake)
    fit = dict(item_features=text, user_features=user_x, item_vectors=V, user_vectors=U, warm_items=data.warm_items,
               warm_users=np.ones(data.n_users, bool), item_dims=text.shape[1], item_counts=counts, k=1)
    x = torch.as_tensor(text[cold[:1]])
    assert np.allclose(KNNGenerator.fit(**fit, min_interactions=1).generate_items(x).numpy()[0], V[twin])
    assert not np.allclose(KNNGenerator.fit(**fit, min_interactions=2).generate_items(x).numpy()[0], V[twin])

    # With attributes, the second space weighs them: an attribute shared with another item changes the neighbour.
    attributes = np.zeros((data.n_items, 2), np.float32)
    attributes[cold[0], 0] = attributes[warm[1], 0] = 1.0
    both = np.hstack([text, attributes])
    spaced = {**fit, "item_features": both, "min_interactions": 2}
    text_only = KNNGenerator.fit(**spaced, attribute_weight=0.0).generate_items(torch.as_tensor(both[cold[:1]]))
    with_attributes = KNNGenerator.fit(**spaced, attribute_weight=5.0).generate_items(torch.as_tensor(both[cold[:1]]))
    assert np.allclose(with_attributes.numpy()[0], V[warm[1]]) and not np.allclose(text_only.numpy()[0], V[warm[1]])

    # The bag is the mean of its members, and rebuilds from its artifact as any generator does.
    bag = KNNGenerator.bag(**{k: v for k, v in spaced.items() if k not in ("k", "min_interactions")}, ks=(1, 3),
                           user_ks=(2, 4))
    members = [KNNGenerator.fit(**{**spaced, "k": k, "user_k": uk}, attribute_weight=w)
               for w in (0.0, 0.5) for k, uk in ((1, 2), (3, 4))]
    x = torch.as_tensor(both[cold])
    expected = torch.stack([m.generate_items(x) for m in members]).mean(0)
    np.testing.assert_allclose(bag.generate_items(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    save_cold_model(tmp_path / "knn-bag", data, bag, user_vectors=U, item_vectors=V, user_features=user_x,
                    item_features=both, content={}, meta={})
    _, rebuilt, _ = load_cold_model(tmp_path / "knn-bag")
    np.testing.assert_allclose(rebuilt.generate_items(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
