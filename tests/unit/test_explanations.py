"""Explanations (`"explain": true` on /v1/recommend), in-process over the HTTP API."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.service import local_service


@pytest.fixture(scope="module")
def client(serving_artifacts, tmp_path_factory):
    service = local_service(serving_artifacts, tmp_path_factory.mktemp("explain-store"))
    with TestClient(create_api(service)) as client:
        client.catalogue = service.ranker.target
        yield client


def _recommend(client, body: dict) -> list[dict]:
    r = client.post("/v1/recommend", json={"k": 5, "explain": True, **body})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_a_warm_users_items_are_explained_by_their_closest_seen_items_and_shared_attributes(client):
    catalogue = client.catalogue
    user = catalogue.users["u3"]
    items = _recommend(client, {"user_id": "u3"})
    assert all(i["explanation"] is not None for i in items)
    seen_ids = {catalogue.item_ids[p] for p in user.seen}
    for item in items:
        why = item["explanation"]
        assert 1 <= len(why["because"]) <= 3 and {b["item_id"] for b in why["because"]} <= seen_ids
        # Closest first, and truly the closest of the user's items by cosine of collaborative vectors.
        pos = catalogue.item_pos[item["item_id"]]
        mine = catalogue.index.vectors([pos])[0]
        theirs = catalogue.index.vectors(user.seen)
        cosine = theirs @ mine / (np.linalg.norm(theirs, axis=1) * np.linalg.norm(mine))
        assert why["because"][0]["similarity"] == pytest.approx(cosine.max(), abs=1e-3)
        assert [b["similarity"] for b in why["because"]] == sorted((b["similarity"] for b in why["because"]),
                                                                   reverse=True)
        # Shared attributes are the item's own values, counted over the user's items.
        for shared in why["shared_attributes"]:
            assert shared["attribute"] in catalogue.item_labels[pos]
            assert shared["your_items"] == sum(shared["attribute"] in catalogue.item_labels[p] for p in user.seen)
        assert why["vector"]["source"] == ("interactions" if not item["cold"] else "content")
        assert why["text_match"] is None
    assert any(s["attribute"].startswith("genres: ") for i in items for s in i["explanation"]["shared_attributes"])
    plain = client.post("/v1/recommend", json={"user_id": "u3", "k": 5}).json()["items"]
    assert [i["item_id"] for i in plain] == [i["item_id"] for i in items]  # explaining changes no ranking
    assert all(i["explanation"] is None for i in plain)


def test_a_registered_items_vector_source_follows_its_interactions(client):
    item = {"item_id": "explained-new", "title": "A New Comedy", "attributes": {"year": 1997, "genres": "Comedy"}}
    assert client.post("/v1/items", json=item).status_code == 201

    def source(user_id: str) -> dict:
        found = _recommend(client, {"user_id": user_id, "candidates": ["explained-new", "i1"], "k": 2,
                                    "exclude_seen": False})
        return next(i for i in found if i["item_id"] == "explained-new")["explanation"]

    why = source("u4")
    assert why["vector"] == {"source": "content", "content_weight": 1.0, "interactions": 0}
    assert "genres: Comedy" in client.catalogue.item_labels[client.catalogue.item_pos["explained-new"]]
    for n, user in enumerate(["u5", "u6", "u7"]):
        assert client.post("/v1/interactions", json={"user_id": user, "item_id": "explained-new",
                                                     "timestamp": n}).status_code == 201
    why = source("u4")
    assert why["vector"]["source"] == "content+interactions" and why["vector"]["interactions"] == 3
    assert why["vector"]["content_weight"] == pytest.approx(0.25)


def test_a_new_users_list_is_explained_by_liked_items_and_stated_text(client):
    items = _recommend(client, {"profile": {"text": "Something funny and light.", "liked": ["i1", "i2"]}})
    for item in items:
        why = item["explanation"]
        assert {b["item_id"] for b in why["because"]} <= {"i1", "i2"} and why["because"]
        assert isinstance(why["text_match"], float) and why["stated"] == []
    named = _recommend(client, {"profile": {"text": "I love comedies.", "liked": ["i1", "i2"]}})
    stated = {tuple(i["explanation"]["stated"]) for i in named}
    assert ("genres: Comedy",) in stated and stated <= {(), ("genres: Comedy",)}
