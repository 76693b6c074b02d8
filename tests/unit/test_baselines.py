import numpy as np
import pytest

from coldstart.data.split import make_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.models.baselines import ContentKNNRecommender, PopularityRecommender, RandomRecommender
from coldstart.data.schema import DataError
from coldstart.data.schema import validate
from coldstart.testing import make_tables


@pytest.fixture(scope="module")
def item_cold():
    inter, items, users = make_tables(n_users=150, n_items=240, per_user=20, seed=5)
    return SplitData.from_split(make_split(validate(inter, items, users), "items", seed=0))


@pytest.fixture(scope="module")
def user_cold():
    inter, items, users = make_tables(n_users=150, n_items=240, per_user=20, seed=5)
    return SplitData.from_split(make_split(validate(inter, items, users), "users", seed=0))


def test_popularity_gives_cold_items_nothing(item_cold):
    scores = PopularityRecommender(item_cold).score(np.arange(3))
    assert (scores[:, item_cold.cold_items] == 0).all()
    assert (scores[:, item_cold.warm_items] > 0).all()


def test_random_is_deterministic_per_user():
    inter, items, users = make_tables()
    data = SplitData.from_split(make_split(validate(inter, items, users), "items", 0))
    model = RandomRecommender(data, seed=3)
    np.testing.assert_array_equal(model.score(np.array([4, 5]))[1], model.score(np.array([5]))[0])


def test_content_knn_beats_random_on_cold_items_when_content_carries_signal(item_cold):
    knn = evaluate(ContentKNNRecommender(item_cold), item_cold)["cold"]["ndcg@20"]
    rnd = evaluate(RandomRecommender(item_cold), item_cold)["cold"]["ndcg@20"]
    assert knn > 1.5 * rnd


def test_content_knn_answers_cold_users_through_attribute_neighbours(user_cold):
    model = ContentKNNRecommender(user_cold)
    cold_users = user_cold.user_ids.get_indexer(sorted(set(user_cold.split.sets["cold_test"]["user_id"])))
    scores = model.score(cold_users)
    assert np.isfinite(scores).all() and (scores.std(axis=1) > 0).all()
    knn = evaluate(model, user_cold)["cold"]["ndcg@20"]
    rnd = evaluate(RandomRecommender(user_cold), user_cold)["cold"]["ndcg@20"]
    assert knn > rnd


def test_content_knn_without_user_attributes_falls_back_to_popularity():
    """Over item vectors of its own (the LLM's), a new user without attributes gets the popularity list; the
    attribute baseline itself then says it does not apply (it would be popularity under another name)."""
    from coldstart.config import NotApplicable

    inter, items, _ = make_tables(n_users=60, n_items=80, seed=2)
    data = SplitData.from_split(make_split(validate(inter, items, None), "users", seed=0))
    model = ContentKNNRecommender(data, np.random.default_rng(0).normal(size=(data.n_items, 8)))
    cold = data.user_ids.get_indexer(sorted(set(data.split.sets["cold_test"]["user_id"])))
    np.testing.assert_allclose(model.score(cold[:1])[0], data.item_popularity())
    with pytest.raises(NotApplicable, match="the users have no attributes"):
        ContentKNNRecommender(data)


def test_unknown_model_spec_is_a_clear_error(item_cold):
    with pytest.raises(DataError, match="neither a baseline"):
        load_recommender("no-such-model", item_cold)
