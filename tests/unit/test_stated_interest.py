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
    """The generator reads a profile's attributes, not its free text: with the text match off, attributes with
    a stated interest rank exactly as the attributes alone; with it on, the text moves the list."""
    import asyncio

    from coldstart.serving.schemas import RecommendRequest
    from coldstart.serving.service import local_service

    attributes = {"age": 30, "occupation": "job5"}
    lists = {}
    for weight in (0.0, 1.0):
        service = local_service(artifacts, tmp_path / f"store-{weight}", text_weight=weight)
        for text in ("", "I love Horror movies."):
            request = RecommendRequest(profile={"attributes": attributes, "text": text}, k=10)
            answer = asyncio.run(service.recommend(request))
            lists[weight, text] = [(i.item_id, round(i.score, 4)) for i in answer.items]
    assert lists[0.0, "I love Horror movies."] == lists[0.0, ""]
    assert lists[1.0, "I love Horror movies."] != lists[1.0, ""]
