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
from tests.conftest import make_tables


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
