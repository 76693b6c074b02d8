"""What users get, measured through the catalogue the ranker replicas hold (`coldstart.serving.evidence`)."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.data.split import load_split
from coldstart.evaluate import GROUPS, SplitData, evaluate
from coldstart.models.coldstart_model import load_recommender_artifact
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.evidence import mixed, served_metrics
from coldstart.serving.served_models import ServingGenerator
from coldstart.serving.slots import Slots


@pytest.fixture(scope="module")
def served(serving_artifacts):
    data = SplitData.from_split(load_split(serving_artifacts / "split"))
    catalogue = Catalogue.from_artifacts(serving_artifacts, ServingGenerator(serving_artifacts, "distill"),
                                         encoder=None, new_slots=Slots())
    return serving_artifacts, data, catalogue


def test_without_exposure_the_served_row_is_the_generators_offline_row(served):
    artifacts, data, catalogue = served
    figures, _ = served_metrics(catalogue, data, on="test")
    offline = evaluate(load_recommender_artifact(artifacts / "distill", data), data, on="test")
    for group in GROUPS:
        assert figures[group]["users"] == offline[group]["users"] > 0
        for name, value in offline[group].items():
            assert figures[group][name] == pytest.approx(value, abs=1e-9), (group, name)


def test_slots_bring_new_items_into_mixed_lists_as_the_catalogue_ranks_them(served):
    """The grid's merge of two searches ranks as the catalogue's own lists do with those slots (a share, the
    learnt pattern, none), and a share of a half puts a new item in every other slot."""
    _, data, catalogue = served
    lists = mixed(catalogue, data, "val")
    learnt = lists.learnt()
    for slots in (Slots(), Slots.share(0.3), Slots.share(0.5), learnt):
        catalogue.new_slots = slots
        try:
            _, per_user = served_metrics(catalogue, data, on="val", groups=("all",))
        finally:
            catalogue.new_slots = Slots()
        np.testing.assert_allclose(per_user["all"], lists.ndcg(slots), atol=1e-9)
    # learnt on these users, no share of slots does better on them
    assert lists.ndcg(learnt).mean() >= max(lists.ndcg(Slots.share(s)).mean() for s in (0.1, 0.3, 0.5, 0.7)) - 1e-9
    user = next(u for u, e in catalogue.users.items() if e.warm)
    catalogue.new_slots = Slots.share(0.5)
    try:
        listed = catalogue.recommend_user(user, 10)["items"]
    finally:
        catalogue.new_slots = Slots()
    assert [i["cold"] for i in listed] == [False, True] * 5
    assert sum(i["cold"] for i in catalogue.recommend_user(user, 10)["items"]) < 5


def test_items_shares_sum_to_the_ndcg_and_the_item_interval_is_wider_than_the_users(served):
    """Resampling items, not users: users of one split share its few new items, and which of them are popular
    decides most of a cold figure."""
    from coldstart.serving.evidence import item_interval, paired_interval

    _, data, catalogue = served
    shares: dict = {}
    _, per_user = served_metrics(catalogue, data, on="val", groups=("cold",), item_shares=shares)
    assert sum(shares["cold"].values()) == pytest.approx(per_user["cold"].mean(), abs=1e-12)
    half = {i: v / 2 for i, v in shares["cold"].items()}
    low, high = item_interval(shares["cold"], half)
    assert low <= per_user["cold"].mean() / 2 <= high
    users_low, users_high = paired_interval(per_user["cold"], per_user["cold"] / 2)
    assert high - low > users_high - users_low


def _synthetic(users: int, new_hit_rank: int | None, seed: int = 0):
    """Each user likes their 3rd old item and, when `new_hit_rank` is given, the new item at that rank (80% of
    users)."""
    from coldstart.serving.evidence import Mixed

    rng = np.random.default_rng(seed)
    old = [[f"o{u}-{r}" for r in range(20)] for u in range(users)]
    new = [[f"n{u}-{r}" for r in range(20)] for u in range(users)]
    truths = [{old[u][2]} | ({new[u][new_hit_rank]} if new_hit_rank is not None and rng.random() < 0.8 else set())
              for u in range(users)]
    scores = [np.linspace(1, 0, 20) for _ in range(users)]
    new_share = sum(len(t) - 1 for t in truths) / sum(len(t) for t in truths)
    return Mixed(old, new, scores, [s - 2 for s in scores], truths, new_share)


def test_the_slots_go_where_new_items_are_liked_and_nowhere_when_they_are_not():
    liked_first, never = _synthetic(200, 0), _synthetic(200, None)
    slots, evidence = liked_first.choose_slots()
    assert slots(0) and not slots(1) and not slots(2)  # the liked new item leads, the old ones follow
    crossfit = evidence["crossfit"]
    assert crossfit["learnt"] > crossfit["share 0.5"] > crossfit["share 0"]
    assert evidence["challenger"] == "learnt" and evidence["challenger_vs_default"][0] > 0
    slots, _ = never.choose_slots()
    assert not slots and never.ndcg(slots).mean() == pytest.approx(never.ndcg(None).mean())


def test_validations_best_pattern_replaces_the_default_share_only_beyond_the_noise_of_its_items():
    """Every user likes one old and one new item at random ranks: no slot pattern is better than another, and the
    best on validation is the one its noise favours. Served before, it kept 0 to 4 of 20 slots on two ml-100k
    seeds where test wanted 8 to 12; the default, new items' share of what users liked (here a half), is served
    unless the challenger clears the noise over the held-out items."""
    from coldstart.serving.evidence import Mixed

    rng = np.random.default_rng(0)
    old = [[f"o{u}-{r}" for r in range(20)] for u in range(100)]
    new = [[f"n{u}-{r}" for r in range(20)] for u in range(100)]
    truths = [{old[u][int(rng.integers(0, 20))], new[u][int(rng.integers(0, 20))]} for u in range(100)]
    scores = [np.linspace(1, 0, 20) for _ in range(100)]
    mixed = Mixed(old, new, scores, [s - 2 for s in scores], truths, new_share=0.5)
    slots, evidence = mixed.choose_slots()
    crossfit = evidence["crossfit"]
    assert crossfit[evidence["challenger"]] > crossfit["share 0.5"]  # validation's best led the default, by chance
    low, high = evidence["challenger_vs_default"]
    assert low <= 0 <= high
    assert slots == Slots.share(0.5) and evidence["default"] == Slots.share(0.5).record()


def test_the_default_share_is_new_items_share_of_what_validations_users_liked(served):
    _, data, catalogue = served
    lists = mixed(catalogue, data, "val")
    cold = set(data.item_ids[~data.warm_items])
    held = sum(len(t) for t in lists.truths)
    assert held and lists.new_share == pytest.approx(sum(len(t & cold) for t in lists.truths) / held)
    assert 0 < lists.new_share < 1
