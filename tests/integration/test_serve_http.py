"""The HTTP API through real requests against a real local Ray Serve app (encoder -> generator -> ranker)."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest


pytestmark = pytest.mark.slow

SCI_FI_JOB = "job5"  # make_tables: users with occupation jobN mostly like genre N; GENRES[5] is Sci-Fi
NEW_ITEM = {"item_id": "new-scifi", "title": "Star Voyage", "attributes": {"year": 1998, "genres": "Sci-Fi"},
            "text": "A crew crosses the galaxy."}


@pytest.fixture(scope="module")
def app(serve_app):
    """The session's Serve app (tests/conftest.py); these tests run first on it, so it starts empty."""
    return serve_app


def test_health_and_openapi(app):
    client = app["client"]
    health = client.get("/healthz").json()
    variants = health.pop("variants")
    assert health == {"status": "ok", "items": 90, "users": 120, "registered_items": 0, "registered_users": 0,
                      "generator": "distill", "encoder": "teacher"}
    assert [(v["name"], v["generator"], v["weight"]) for v in variants] == [("main", "distill", 1.0)]
    assert variants[0]["app"].startswith("coldstart-main-")  # the Serve app of its encoder, generator, ranker
    schema = client.get("/openapi.json").json()
    assert schema["info"]["version"] == "1"
    assert {"/v1/recommend", "/v1/items", "/v1/users", "/v1/interactions", "/v1/items/{item_id}",
            "/v1/users/{user_id}", "/healthz"} <= set(schema["paths"])
    assert {"get", "delete"} <= set(schema["paths"]["/v1/items/{item_id}"])


def test_warm_user_and_new_profile(app):
    client = app["client"]
    warm = client.post("/v1/recommend", json={"user_id": "u1", "k": 5})
    assert warm.status_code == 200
    body = warm.json()
    assert body["path"] == "warm" and len(body["items"]) == 5
    assert [i["score"] for i in body["items"]] == sorted((i["score"] for i in body["items"]), reverse=True)
    assert set(body["items"][0]) == {"item_id", "title", "score", "cold", "explanation"}
    assert body["items"][0]["explanation"] is None  # only when asked
    explained = client.post("/v1/recommend", json={"user_id": "u1", "k": 5, "explain": True}).json()["items"]
    assert [i["item_id"] for i in explained] == [i["item_id"] for i in body["items"]]
    assert all(i["explanation"]["because"] and i["explanation"]["vector"]["source"] for i in explained)
    cold = client.post("/v1/recommend", json={"profile": {"attributes": {"occupation": SCI_FI_JOB, "age": 30},
                                                          "text": "likes space films"}, "k": 7}).json()
    assert cold["path"] == "cold" and cold["user_id"] is None and len(cold["items"]) == 7


def test_registered_item_is_recommended_to_a_matching_profile_next_request(app):
    client = app["client"]
    profile = {"profile": {"attributes": {"occupation": SCI_FI_JOB, "age": 30, "gender": "M"}}, "k": 20}
    assert "new-scifi" not in [i["item_id"] for i in client.post("/v1/recommend", json=profile).json()["items"]]
    created = client.post("/v1/items", json=NEW_ITEM)
    assert created.status_code == 201 and created.json() == {"id": "new-scifi", "kind": "item", "index_size": 91}
    items = client.post("/v1/recommend", json=profile).json()["items"]
    assert "new-scifi" in [i["item_id"] for i in items]
    assert next(i for i in items if i["item_id"] == "new-scifi")["cold"] is True
    other = client.post("/v1/recommend", json={"profile": {"attributes": {"occupation": "job3"}}, "k": 20}).json()
    assert "new-scifi" not in [i["item_id"] for i in other["items"]]
    assert client.get("/v1/items/new-scifi").json() == {"item_id": "new-scifi", "title": "Star Voyage",
                                                         "cold": True, "registered": True}
    assert client.get("/v1/items/i1").json()["registered"] is False


def test_registered_user_gets_recommendations_by_id(app):
    client = app["client"]
    created = client.post("/v1/users", json={"user_id": "fan", "attributes": {"occupation": SCI_FI_JOB},
                                             "liked": ["i5"]})
    assert created.status_code == 201 and created.json()["kind"] == "user"
    body = client.post("/v1/recommend", json={"user_id": "fan", "k": 5}).json()
    assert body["path"] == "cold" and len(body["items"]) == 5
    assert "i5" not in [i["item_id"] for i in body["items"]]  # liked counts as seen


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("post", "/v1/recommend", {"user_id": "nobody"}, 404, "user_id"),
    ("post", "/v1/recommend", {"profile": {}}, 422, "profile"),
    ("post", "/v1/recommend", {"user_id": "u1", "k": 0}, 422, "k"),
    ("post", "/v1/recommend", {"user_id": "u1", "k": 1000}, 422, "k"),
    ("post", "/v1/recommend", {"profile": {"text": "x" * 5000}}, 422, "profile.text"),
    ("post", "/v1/recommend", {"profile": {"liked": ["nope"]}}, 404, "profile.liked"),
    ("post", "/v1/items", {"item_id": "i1", "title": "taken"}, 409, "item_id"),
    ("post", "/v1/items", {"item_id": "half", "attributes": {"year": "soon"}, "title": "t"}, 422, "attributes.year"),
    ("post", "/v1/users", {"user_id": "half", "liked": ["nope"]}, 404, "liked"),
    ("get", "/v1/items/nope", None, 404, "item_id"),
])
def test_bad_input_is_a_4xx_naming_the_field(app, method, path, body, status, field):
    client = app["client"]
    before = (app["store"] / "registrations.log").read_bytes()
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert (app["store"] / "registrations.log").read_bytes() == before  # nothing half-registered
    if path != "/v1/recommend" and body:
        key = "item_id" if path == "/v1/items" else "user_id"
        if body[key] == "half":
            assert client.get(f"/v1/items/{body[key]}").status_code == 404


def test_malformed_json_is_a_400(app):
    response = app["client"].post("/v1/recommend", content=b'{"user_id": ',
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["field"] == "body"


def test_the_demo_smoke_answers_every_kind_of_request(app):
    from coldstart.serving.smoke import run_smoke

    lines = []
    results = run_smoke(str(app["client"].base_url), app["artifacts"], echo=lines.append)
    assert [status for _, status in results] == [200, 200, 200, 200, 201, 200, 201, 200]  # /livez first
    assert sum(line.startswith("-> ") for line in lines) == 8


def test_metrics_reach_the_prometheus_endpoint(app, ray_cluster):
    """Ray exports custom metrics from each node's agent; they arrive within an export interval or two."""
    node = ray_cluster._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    app["client"].post("/v1/recommend", json={"user_id": "u1", "k": 3})
    wanted = ("coldstart_requests_total", "coldstart_stage_latency_ms", "coldstart_index_size")
    text, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(url, timeout=10).text
        if all(name in text for name in wanted):
            break
        time.sleep(2)
    for name in wanted:
        assert name in text, f"{name} not exported at {url}"
    assert 'endpoint="recommend"' in text and 'path="warm"' in text and 'stage="rank"' in text


def _rank(client, user_id: str, item_id: str) -> int:
    items = client.post("/v1/recommend", json={"user_id": user_id, "k": 100, "exclude_seen": False}).json()["items"]
    ids = [i["item_id"] for i in items]
    return ids.index(item_id) if item_id in ids else len(ids)


def test_a_registered_item_rises_in_the_lists_of_a_group_who_interact_with_it_and_of_users_like_them(app):
    """A group of users who like one genre (make_tables: occupation jobN likes genre N) meet an item of another
    genre: it rises in their lists, and in those of the group's other users, who never touched it, more than in
    everybody else's."""
    import pandas as pd

    client = app["client"]
    item = {"item_id": "warming", "title": "A Quiet Documentary", "attributes": {"year": 1999, "genres": "Documentary"},
            "text": "A film about gardens."}
    assert client.post("/v1/items", json=item).status_code == 201
    users = pd.read_parquet(app["artifacts"] / "split" / "users.parquet")
    group = sorted(users.loc[users["occupation"] == "job3", "user_id"])  # GENRES[3] is Horror
    fans, alike = group[:len(group) // 2], group[len(group) // 2:]
    others = sorted(users.loc[users["occupation"] != "job3", "user_id"])[::4]
    before = {u: _rank(client, u, "warming") for u in group + others}
    for n, user in enumerate(fans):
        r = client.post("/v1/interactions", json={"user_id": user, "item_id": "warming", "timestamp": n})
        assert r.status_code == 201 and r.json()["moved"] == ["item"], r.text
    after = {u: _rank(client, u, "warming") for u in group + others}
    rise = {u: before[u] - after[u] for u in before}
    assert all(rise[u] > 0 for u in fans), [(before[u], after[u]) for u in fans]
    assert sum(rise[u] > 0 for u in alike) > len(alike) / 2
    assert np.mean([rise[u] for u in alike]) > np.mean([rise[u] for u in others]), (rise, alike)


def test_fuzzed_requests_over_http_to_the_serve_app_get_no_5xx_and_named_4xx(app):
    """The API fuzzed from the schema the running Serve app publishes, each case sent over HTTP through Serve
    (proxy, ingress, encoder, generator, ranker): never a 5xx, every 4xx names its field. Last in this module:
    what it registers and deletes are its own random ids."""
    import collections

    import schemathesis

    from coldstart.testing.api_fuzz import OPERATIONS, RUNS, fuzz

    url = f"http://127.0.0.1:{app['port']}"
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    assert sorted(op.ok().label for op in schema.get_all_operations()) == sorted(OPERATIONS)
    seen: collections.Counter = collections.Counter()
    for label, mode in RUNS:
        fuzz(schema.find_operation_by_label(label), mode, 12, lambda case: case.call(base_url=url, timeout=60), seen)
    print("\nfuzzed over HTTP by operation, mode and status class:", dict(sorted(seen.items())),
          "total", sum(seen.values()))
    assert sum(seen.values()) >= 100 and not any(status == "5xx" for _, _, status in seen)
