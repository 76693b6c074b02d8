"""Online warm-up from first interactions (POST /v1/interactions), in-process over the HTTP API."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.service import local_service
from coldstart.serving.stores import open_store
from coldstart.serving.warmup import fold_in


def test_fold_in_starts_at_the_prior_and_follows_the_interactions_as_they_add_up():
    rng = np.random.default_rng(0)
    prior = rng.normal(size=8)
    users = rng.normal(size=(40, 8))
    assert np.allclose(fold_in(prior, users[:0], 1.0, 1.0), prior)
    fits = [np.abs(users[:n] @ fold_in(prior, users[:n], 3.0, 1.0) - 3.0).mean() for n in (1, 5, 20)]
    pulls = [np.linalg.norm(fold_in(prior, users[:n], 3.0, 1.0) - prior) for n in (1, 5, 20)]
    before = np.abs(users[:20] @ prior - 3.0).mean()
    assert fits[2] < before  # the interacting users' scores moved toward a positive's
    assert pulls[0] < pulls[1] < pulls[2]  # each interaction pulls the vector further from its content
    fans = users[:20][users[:20] @ prior > 0.5]  # users the content already puts it high for
    assert np.allclose(fold_in(prior, fans, 0.5, 1.0), prior)  # nothing lacking: it never pulls them down
    stiff = fold_in(prior, users[:5], 3.0, 1e6)
    assert np.linalg.norm(stiff - prior) < 1e-3 * np.linalg.norm(prior)  # a strong prior barely moves


@pytest.fixture(scope="module")
def artifacts(serving_artifacts):
    return serving_artifacts


def _rank(client, user_id: str, item_id: str) -> int:
    items = client.post("/v1/recommend", json={"user_id": user_id, "k": 100, "exclude_seen": False}).json()["items"]
    ids = [i["item_id"] for i in items]
    return ids.index(item_id) if item_id in ids else len(ids)


def test_a_registered_item_rises_in_the_lists_of_its_users_and_of_users_like_them(artifacts, tmp_path):
    store = tmp_path / "store"
    service = local_service(artifacts, store)
    ranker = service.ranker.target  # the Catalogue the ranker deployment holds
    with TestClient(create_api(service)) as client:
        item = {"item_id": "new-film", "title": "A Quiet Documentary",
                "attributes": {"year": 1999, "genres": "Documentary"}, "text": "A film about gardens."}
        assert client.post("/v1/items", json=item).status_code == 201
        users = [f"u{i}" for i in range(120)]
        before = {u: _rank(client, u, "new-film") for u in users}
        fans = sorted(users, key=before.get, reverse=True)[:8]  # users whose lists had it lowest
        for n, user in enumerate(fans):
            r = client.post("/v1/interactions", json={"user_id": user, "item_id": "new-film", "timestamp": 100 + n})
            assert r.status_code == 201, r.text
            assert r.json()["moved"] == ["item"] and r.json()["item_interactions"] == n + 1
        after = {u: _rank(client, u, "new-film") for u in users}
        assert all(after[u] < before[u] for u in fans), [(before[u], after[u]) for u in fans]
        # Users the interactions did not come from, but whose tastes are closest to the fans', see it rise too.
        centre = np.mean([ranker.users[u].vector for u in fans], axis=0)
        others = [u for u in users if u not in fans and ranker.users[u].warm]
        similar = sorted(others, key=lambda u: -float(ranker.users[u].vector @ centre))[:10]
        assert np.mean([before[u] - after[u] for u in similar]) > 0

        # A retry is the same interaction; the same key with another rating is a conflict; unknown ids are 404.
        again = client.post("/v1/interactions", json={"user_id": fans[0], "item_id": "new-film", "timestamp": 100})
        assert again.status_code == 201
        clash = client.post("/v1/interactions",
                            json={"user_id": fans[0], "item_id": "new-film", "timestamp": 100, "rating": 2})
        assert clash.status_code == 409 and clash.json()["field"] == "rating"
        missing = client.post("/v1/interactions", json={"user_id": "nobody", "item_id": "new-film"})
        assert missing.status_code == 404 and missing.json()["field"] == "user_id"
        bad = client.post("/v1/interactions", json={"user_id": fans[0], "item_id": "new-film", "timestamp": -1})
        assert bad.status_code == 422 and bad.json()["field"] == "timestamp"
        moved = ranker.index.vectors([ranker.item_pos["new-film"]])[0]

    records = open_store(store).read_new()
    assert sum(r["kind"] == "interaction" for r in records) == len(fans)  # the retry wrote nothing
    # A restarted app replays the store: the same vector, the same lists.
    service = local_service(artifacts, store)
    ranker = service.ranker.target
    with TestClient(create_api(service)) as client:
        assert np.allclose(ranker.index.vectors([ranker.item_pos["new-film"]])[0], moved, atol=1e-6)
        assert {u: _rank(client, u, "new-film") for u in fans} == {u: after[u] for u in fans}


def test_a_registered_user_moves_toward_what_it_interacts_with_and_warm_ones_wait(artifacts, tmp_path):
    service = local_service(artifacts, tmp_path / "store")
    ranker = service.ranker.target
    with TestClient(create_api(service)) as client:
        assert client.post("/v1/users", json={"user_id": "newbie", "attributes": {"age": 30}}).status_code == 201
        first = client.post("/v1/recommend", json={"user_id": "newbie", "k": 10}).json()["items"]
        warm_items = [i for i, w in zip(ranker.item_ids, ranker.warm_items) if w]
        chosen = [i for i in warm_items if i not in {x["item_id"] for x in first}][:5]
        targets = ranker.index.vectors([ranker.item_pos[i] for i in chosen]).mean(axis=0)
        start = float(ranker.users["newbie"].vector @ targets)
        for n, item_id in enumerate(chosen):
            r = client.post("/v1/interactions", json={"user_id": "newbie", "item_id": item_id, "rating": 5})
            assert r.json()["moved"] == ["user"] and r.json()["user_interactions"] == n + 1
        assert float(ranker.users["newbie"].vector @ targets) > start
        listed = client.post("/v1/recommend", json={"user_id": "newbie", "k": 100}).json()["items"]
        listed = {i["item_id"] for i in listed}
        assert not listed & set(chosen)  # they are seen now

        warm_user = next(u for u, e in ranker.users.items() if e.warm)
        vector = ranker.users[warm_user].vector.copy()
        r = client.post("/v1/interactions", json={"user_id": warm_user, "item_id": warm_items[0]})
        assert r.status_code == 201 and r.json()["moved"] == []
        assert np.array_equal(ranker.users[warm_user].vector, vector)



def test_a_popular_new_item_folds_from_its_latest_users_so_each_interaction_costs_the_same(artifacts, tmp_path,
                                                                                         monkeypatch):
    """The fold re-reads the item's users at each interaction: bounded to the latest `FOLD_LIMIT`, an item's
    thousandth interaction costs what its tenth did (it re-read all of them: quadratic in an item's users)."""
    from coldstart.serving import state

    monkeypatch.setattr(state, "FOLD_LIMIT", 3)
    ranker = local_service(artifacts, tmp_path / "store").ranker.target
    ranker.register_item("popular", np.ones(ranker.item_vectors.shape[1], np.float32), title=None, attributes={},
                         text="", generator="distill")
    pos = ranker.item_pos["popular"]
    prior = ranker.index.vectors([pos])[0].copy()
    users = [f"u{i}" for i in range(6)]
    for n, user in enumerate(users):
        ranker.record_interaction(user, "popular", timestamp=float(n))
    latest = np.stack([ranker.users[u].vector for u in users[-3:]])
    expected = fold_in(prior, latest, ranker.positive_score, ranker.item_strength)
    np.testing.assert_allclose(ranker.index.vectors([pos])[0], expected, rtol=1e-5, atol=1e-6)
