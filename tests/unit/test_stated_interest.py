"""A new user's own words steer the list (the small-scale `benchmarks/stated_interest.py`, over HTTP).

Tiny catalogue of six genres: each first-person text must bring its genre well
above both its share of the catalogue and the popularity list, while a profile
without free text ranks exactly as it did before stated interest existed.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from benchmarks.stated_interest import genre_table, measure, popularity_list, start_app


@pytest.fixture(scope="module")
def artifacts(serving_artifacts):
    return serving_artifacts


def test_each_stated_genre_leads_its_list_over_http(artifacts, tmp_path):
    url, server = start_app(artifacts, tmp_path / "store", text_weight=1.0)
    try:
        table = measure(url, genre_table(artifacts), popularity_list(artifacts), k=10)
    finally:
        server.should_exit = True
    print(table)
    assert (table["stated"] > table["catalogue"]).all()
    assert table["stated"].mean() >= 0.7
    assert table["stated"].mean() > table["popularity"].mean() + 0.3


def test_a_profile_without_free_text_ranks_as_without_stated_interest(artifacts, tmp_path):
    """Attributes-only and liked-items-only profiles keep their lists whatever the text weight."""
    answers = {}
    for weight in (0.0, 1.0):
        url, server = start_app(artifacts, tmp_path / f"store-{weight}", text_weight=weight)
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                answers[weight] = [
                    client.post("/v1/recommend", json={"profile": body, "k": 10}).json()["items"]
                    for body in ({"attributes": {"age": 30, "occupation": "job5"}}, {"liked": ["i1", "i2"]})]
        finally:
            server.should_exit = True
    for with_text, without in zip(answers[1.0], answers[0.0]):
        assert [i["item_id"] for i in with_text] == [i["item_id"] for i in without]
        np.testing.assert_allclose([i["score"] for i in with_text], [i["score"] for i in without], rtol=1e-5)


def test_beside_attributes_free_text_steers_through_the_text_match_alone(artifacts, tmp_path):
    """The generator reads a profile's attributes, not its free text: a text that names no attribute value ranks
    exactly as the attributes alone with the text match off, and moves the list with it on."""
    import asyncio

    from coldstart.serving.bodies import RecommendRequest
    from coldstart.serving.service import local_service

    attributes = {"age": 30, "occupation": "job5"}
    lists = {}
    for weight in (0.0, 1.0):
        service = local_service(artifacts, tmp_path / f"store-{weight}", text_weight=weight)
        for text in ("", "something gloomy and slow"):
            request = RecommendRequest(profile={"attributes": attributes, "text": text}, k=10)
            answer = asyncio.run(service.recommend(request))
            assert answer.stated == []
            lists[weight, text] = [(i.item_id, round(i.score, 4)) for i in answer.items]
    assert lists[0.0, "something gloomy and slow"] == lists[0.0, ""]
    assert lists[1.0, "something gloomy and slow"] != lists[1.0, ""]


@pytest.mark.parametrize("text", ["Mostly horror films for me, that is what I watch on weekends.",
                                  "HORROR. Always horror!"])
def test_a_named_genre_takes_its_share_of_the_list_ranked_by_the_collaborative_score(artifacts, tmp_path, text):
    """A text that names a genre gets `stated_share` of the slots at least for that genre's items, whatever the
    text weight (the text is then not matched to items' texts), and the answer says what it understood."""
    import asyncio

    from coldstart.serving.bodies import RecommendRequest
    from coldstart.serving.service import local_service

    by_item = dict(zip(*genre_table(artifacts)[["item_id", "genres"]].T.values))
    attributes = {"age": 30, "occupation": "job5"}
    lists = {}
    for weight, share in ((0.0, 0.5), (1.0, 0.5), (0.0, 0.0)):
        service = local_service(artifacts, tmp_path / f"store-{weight}-{share}", text_weight=weight,
                                stated_share=share)
        answer = asyncio.run(service.recommend(RecommendRequest(profile={"attributes": attributes, "text": text},
                                                                k=20)))
        assert answer.stated == ["genres: Horror"]
        lists[weight, share] = [i.item_id for i in answer.items]
    assert lists[0.0, 0.5] == lists[1.0, 0.5]
    horror = [sum("Horror" in by_item[i] for i in items[:10]) for items in lists.values()]
    assert horror[0] >= 5 and horror[0] > horror[2]
    # the slots are in the first 10: after them the list is the ranking's, less what the first 10 hold
    head = lists[0.0, 0.5][:10]
    assert lists[0.0, 0.5][10:] == [i for i in lists[0.0, 0.0] if i not in head][:10]
