import numpy as np
import pytest

from coldstart.data.split import make_split, save_split, load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.vectors import VectorsRecommender, write_vectors


class Oracle:
    """Scores each user's test items highest: every metric must be perfect where |test| <= K."""

    def __init__(self, data: SplitData, stage="test"):
        self.data = data
        self.truth = np.zeros((data.n_users, data.n_items), np.float32)
        for group in ("cold", "warm", "all"):
            pairs = data.split.sets[f"{group}_{stage}"]
            self.truth[data.user_ids.get_indexer(pairs["user_id"]), data.item_ids.get_indexer(pairs["item_id"])] = 1

    def score(self, users):
        return self.truth[users]


class Spy:
    def __init__(self, data):
        self.data = data
        self.shapes = []

    def score(self, users):
        self.shapes.append(len(users))
        return np.ones((len(users), self.data.n_items), np.float32)


@pytest.fixture
def data(tiny):
    return SplitData.from_split(make_split(tiny, "items", seed=0))


def test_oracle_is_perfect_on_hit_rate(data):
    metrics = evaluate(Oracle(data), data, ks=(10, 20))
    for group in ("cold", "warm", "all"):
        assert metrics[group]["hit@20"] == pytest.approx(1.0)
        assert metrics[group]["ndcg@20"] == pytest.approx(1.0)  # |test| <= 20 in the tiny data
        assert metrics[group]["users"] > 0


def test_candidates_follow_the_protocol(data):
    split = data.split
    cold_items = set(split.cold_ids["val"]) | set(split.cold_ids["test"])
    assert set(data.item_ids[data.candidates("cold")]) == cold_items
    assert set(data.item_ids[data.candidates("warm")]) == set(split.train["item_id"])
    assert not data.candidates("warm")[data.candidates("cold")].any()


def test_train_items_are_never_ranked(data):
    """A model that loves train items gets no credit from them."""
    train_scores = data.train.toarray().astype(np.float32)

    class LovesTrain:
        def score(self, users):
            return train_scores[users] * 100.0

    metrics = evaluate(LovesTrain(), data, ks=(5,))
    baseline = evaluate(Spy(data), data, ks=(5,))
    assert metrics["warm"]["recall@5"] == pytest.approx(baseline["warm"]["recall@5"])


def test_users_go_in_batches(data):
    spy = Spy(data)
    evaluate(spy, data, batch_size=7)
    assert max(spy.shapes) <= 7


def test_wrong_score_shape_is_an_error(data):
    class Bad:
        def score(self, users):
            return np.zeros((len(users), 3))

    with pytest.raises(ValueError, match="shape"):
        evaluate(Bad(), data)


def test_vectors_folder_model_with_unknown_user_and_item(tmp_path, data):
    rng = np.random.default_rng(0)
    users = [u for u in data.user_ids if u != "u0"]  # u0 has no vector
    items = [i for i in data.item_ids if i != data.item_ids[0]]  # first item has none
    write_vectors(tmp_path / "m" / "users.parquet", "user_id", users, rng.normal(size=(len(users), 4)))
    write_vectors(tmp_path / "m" / "items.parquet", "item_id", items, rng.normal(size=(len(items), 4)))
    model = VectorsRecommender(data, tmp_path / "m")
    scores = model.score(np.arange(data.n_users))
    assert np.isneginf(scores[:, 0]).all()  # never recommended
    assert (scores[data.user_ids.get_loc("u0"), 1:] == 0).all()  # defined: all ties
    metrics = evaluate(model, data)
    assert 0.0 <= metrics["cold"]["ndcg@20"] <= 1.0


def test_split_from_disk_evaluates_the_same(tmp_path, tiny):
    split = make_split(tiny, "users", seed=0)
    save_split(split, tmp_path / "s")
    a, b = SplitData.from_split(split), SplitData.from_split(load_split(tmp_path / "s"))

    class ByItemIndex:
        def __init__(self, d):
            self.v = -np.arange(d.n_items, dtype=np.float32)

        def score(self, users):
            return np.tile(self.v, (len(users), 1))

    assert evaluate(ByItemIndex(a), a) == evaluate(ByItemIndex(b), b)


def test_validation_halves_split_the_cold_val_entities_and_keep_every_warm_row():
    """Training selects on `val-select`, serving's choice is made on `val-audit`: the halves share no cold-val
    entity, together they are `val`, and the warm rows stay in both."""
    from coldstart.data.schema import validate
    from coldstart.data.split import make_split
    from coldstart.evaluate import is_audit
    from coldstart.testing import make_tables

    dataset = validate(*make_tables(n_users=200, n_items=100), name="halves")
    for cold, column in (("items", "item_id"), ("users", "user_id")):
        data = SplitData.from_split(make_split(dataset, cold, seed=0))
        cold = set(data.split.cold_ids["val"])
        for group in ("cold", "all"):
            whole, select, audit = (data.eval_set(group, on) for on in ("val", "val-select", "val-audit"))
            new = [frame[column].isin(cold) for frame in (whole, select, audit)]
            assert new[1].sum() + new[2].sum() == new[0].sum() and new[1].sum() > 0 and new[2].sum() > 0
            assert not set(select[column]) & set(audit[column]) & cold
            assert audit.loc[new[2], column].map(is_audit).all()
            for half, is_new in ((select, new[1]), (audit, new[2])):  # the warm rows stay in both halves
                assert half.loc[~is_new].reset_index(drop=True).equals(whole.loc[~new[0]].reset_index(drop=True))
        assert (~data.eval_set("all", "val-audit")[column].isin(cold)).sum() > 0 or cold == set()
        assert data.eval_set("warm", "val-audit").equals(data.eval_set("warm", "val"))
    with pytest.raises(ValueError, match="on must be one of"):
        data.eval_set("cold", "audit")
