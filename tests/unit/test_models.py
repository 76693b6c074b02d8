"""The backbone and the student towers learn, and cold entities are scored from content alone."""

import numpy as np
import pytest
import torch

from coldstart.data.schema import validate
from coldstart.data.split import make_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.features import AttributeEncoder
from coldstart.models.baselines import RandomRecommender
from coldstart.models.mf import BackboneTraining, EmbeddingRecommender, MatrixFactorization, TrainPairs
from coldstart.models.towers import ColdStartTowers, DistillWeights, TowerTraining, cold_start_vectors
from coldstart.testing import make_tables


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    inter, items, users = make_tables(n_users=200, n_items=300, per_user=25, seed=4)
    data = SplitData.from_split(make_split(validate(inter, items, users), "items", seed=0))
    train = data.split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=0)
    return data, pairs


def train_backbone(data, pairs, epochs=30):
    torch.manual_seed(0)
    mf = MatrixFactorization(data.n_users, data.n_items, 16)
    training = BackboneTraining(mf, lr=1e-2)
    losses = [training.train_epoch(pairs.batches(256))["train_loss"] for _ in range(epochs)]
    return mf, losses


def test_backbone_loss_falls_and_beats_random_on_warm_items(setup):
    data, pairs = setup
    mf, losses = train_backbone(data, pairs)
    assert losses[-1] < 0.7 * losses[0]
    model = EmbeddingRecommender(mf.user.weight.detach().numpy(), mf.item.weight.detach().numpy())
    assert evaluate(model, data)["warm"]["ndcg@20"] > 2 * evaluate(RandomRecommender(data), data)["warm"]["ndcg@20"]


def test_towers_rank_cold_items_from_content(setup):
    data, pairs = setup
    mf, _ = train_backbone(data, pairs)
    U, V = mf.user.weight.detach().numpy(), mf.item.weight.detach().numpy()
    items = data.split.items.set_index("item_id").reindex(data.item_ids).reset_index(names="item_id")
    item_x = AttributeEncoder.fit(items, "item_id").transform(items)
    user_x = np.ones((data.n_users, 1), np.float32)
    torch.manual_seed(0)
    towers = ColdStartTowers(item_x.shape[1], 1, 16, hidden=64, dropout=0.0)
    training = TowerTraining(towers, user_vectors=U, item_vectors=V, item_features=item_x, user_features=user_x,
                             weights=DistillWeights())
    losses = [training.train_epoch(pairs.batches(256))["train_loss"] for _ in range(15)]
    assert losses[-1] < losses[0]
    warm_users = data.train.getnnz(axis=1) > 0
    users, items_v = cold_start_vectors(towers, user_vectors=U, item_vectors=V, warm_users=warm_users,
                                        warm_items=data.warm_items, user_features=user_x, item_features=item_x)
    ndcg = evaluate(EmbeddingRecommender(users, items_v), data)["cold"]["ndcg@20"]
    assert ndcg > 1.5 * evaluate(RandomRecommender(data), data)["cold"]["ndcg@20"]


def test_cold_items_never_use_their_backbone_rows(setup):
    """By construction: poison the backbone rows of cold items; their scores must not change."""
    data, _ = setup
    rng = np.random.default_rng(0)
    U = rng.normal(size=(data.n_users, 8)).astype(np.float32)
    V = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    item_x = rng.normal(size=(data.n_items, 5)).astype(np.float32)
    user_x = rng.normal(size=(data.n_users, 3)).astype(np.float32)
    towers = ColdStartTowers(5, 3, 8, hidden=16)
    warm_users = data.train.getnnz(axis=1) > 0
    kwargs = dict(user_vectors=U, warm_users=warm_users, warm_items=data.warm_items, user_features=user_x,
                  item_features=item_x)
    _, clean = cold_start_vectors(towers, item_vectors=V, **kwargs)
    poisoned = V.copy()
    poisoned[~data.warm_items] = np.nan
    _, after = cold_start_vectors(towers, item_vectors=poisoned, **kwargs)
    np.testing.assert_array_equal(clean, after)
    assert np.isfinite(after).all()
    # And the train set, the only thing the backbone learns from, holds no cold item.
    cold = set(data.split.cold_ids["val"]) | set(data.split.cold_ids["test"])
    assert not cold & set(data.split.train["item_id"])
