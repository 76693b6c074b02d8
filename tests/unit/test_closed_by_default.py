"""Closed by default: keys with scopes, docs off behind keys, and the limits every request meets (issue 33).

The app is the real HTTP API (`coldstart.serving.routes.create_api`) over a stand-in
service that answers at once (or late, for the deadline): what is checked is
what happens before a request reaches a model or the store.
"""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.keys import ApiKeys, generate_key_file
from coldstart.serving.bodies import Health, ItemInfo, Recommendation, Registered

WRITE_KEY, READ_KEY = "w" * 24, "r" * 24


class Answers:
    """A service that answers every request at once (after `delay` seconds)."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.calls = delay, []

    async def recommend(self, request, variant=None):
        self.calls.append("recommend")
        await asyncio.sleep(self.delay)
        return Recommendation(user_id=request.user_id, path="warm", items=[])

    async def register_item(self, item, variant=None):
        self.calls.append("register_item")
        return Registered(id=item.item_id, kind="item", index_size=1)

    async def item(self, item_id, variant=None):
        return ItemInfo(item_id=item_id, title=None, cold=False, registered=False)

    async def health(self):
        return Health(status="ok", items=1, users=1, registered_items=0, registered_users=0, generator="g",
                      encoder="e")


def _client(service=None, **options) -> TestClient:
    return TestClient(create_api(service or Answers(), keys=ApiKeys.of(write=WRITE_KEY, read=READ_KEY), **options))


def test_keys_have_scopes_and_probes_learn_nothing():
    client = _client()
    recommend = lambda key: client.post("/v1/recommend", json={"user_id": "u1"},  # noqa: E731
                                        headers={"X-API-Key": key} if key else {}).status_code
    register = lambda key: client.post("/v1/items", json={"item_id": "x", "title": "X"},  # noqa: E731
                                       headers={"X-API-Key": key}).status_code
    assert recommend(None) == 401 and recommend("nope" * 6) == 401
    assert recommend(READ_KEY) == 200 and recommend(WRITE_KEY) == 200
    assert register(READ_KEY) == 403 and register(WRITE_KEY) == 201
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/healthz").status_code == 401
    assert client.get("/healthz", headers={"X-API-Key": READ_KEY}).status_code == 200
    assert client.get("/openapi.json").status_code == 404 and client.get("/docs").status_code == 404
    assert _client(docs=True).get("/openapi.json").status_code == 200  # on by a flag
    assert TestClient(create_api(Answers(), keys=ApiKeys())).get("/openapi.json").status_code == 200  # no keys


def test_keys_come_from_the_environment_or_a_file_and_never_show(tmp_path, monkeypatch):
    path = generate_key_file(tmp_path / "keys" / "api-keys")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_text().split()[-1]
    assert generate_key_file(path).read_text().split()[-1] == key  # an existing file is kept
    monkeypatch.setenv("COLDSTART_API_KEY", "")
    monkeypatch.setenv("COLDSTART_API_KEYS_FILE", str(path))
    keys = ApiKeys.from_env()
    assert keys.scope(key) == "write" and key not in repr(keys) and key not in str(keys)
    (tmp_path / "bad").write_text(f"admin {key}\n")
    with pytest.raises(ValueError, match="line 1: expected") as error:
        ApiKeys.from_file(tmp_path / "bad")
    assert key not in str(error.value)


def test_a_body_over_the_limit_is_a_413_before_the_app_reads_it():
    service = Answers()
    client = _client(service, max_body_bytes=1000)
    big = {"user_id": "u1", "candidates": ["i1"] * 500}
    answer = client.post("/v1/recommend", json=big, headers={"X-API-Key": READ_KEY})
    assert answer.status_code == 413 and answer.json()["field"] == "body" and service.calls == []
    streamed = client.post("/v1/recommend", content=iter([b'{"user_id": "u1", "candidates": [', b'"i1",' * 400]),
                           headers={"X-API-Key": READ_KEY, "Content-Type": "application/json"})
    assert streamed.status_code == 413 and service.calls == []


def test_a_caller_over_its_rate_gets_429_with_retry_after_and_others_do_not():
    client = _client(rate=1.0, burst=3)
    codes = [client.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": READ_KEY}).status_code
             for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    late = client.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": READ_KEY})
    assert int(late.headers["Retry-After"]) >= 1
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": WRITE_KEY}).status_code == 200


def test_a_request_past_the_deadline_is_a_503_not_a_stall():
    client = _client(Answers(delay=5.0), timeout_s=0.2)
    answer = client.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": READ_KEY})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"


@pytest.mark.parametrize("body, field", [
    ({"profile": {"attributes": {"age": int("1" + "0" * 400)}}}, "profile.attributes"),
    ({"profile": {"attributes": {"age": -(2 ** 60)}}}, "profile.attributes"),
    ({"profile": {"liked": ["x" * 10_000]}}, "profile.liked.0"),
    ({"user_id": "u1", "candidates": ["i1", "y" * 200]}, "candidates.1"),
])
def test_numbers_that_overflow_and_overlong_list_elements_are_422(body, field):
    answer = _client().post("/v1/recommend", json=body, headers={"X-API-Key": READ_KEY})
    assert answer.status_code == 422 and answer.json()["field"] == field, answer.json()


def test_serving_beyond_loopback_without_a_key_is_refused_and_a_key_never_reaches_a_dump(tmp_path, monkeypatch):
    from coldstart.config import ConfigError
    from coldstart.serving.config import ServeConfig
    from coldstart.serving.keys import closed_by_default

    for name in ("COLDSTART_API_KEY", "COLDSTART_READ_KEY", "COLDSTART_API_KEYS_FILE"):
        monkeypatch.setenv(name, "")  # empty is none; and the key written below is undone after the test
    assert not closed_by_default(ServeConfig(artifacts=tmp_path, host="127.0.0.1"))  # loopback may stay open
    with pytest.raises(ConfigError, match="host: 0.0.0.0 is reachable beyond this machine"):
        closed_by_default(ServeConfig(artifacts=tmp_path, host="0.0.0.0"))
    cfg = ServeConfig(artifacts=tmp_path, host="0.0.0.0", api_key=WRITE_KEY)
    assert closed_by_default(cfg).scope(WRITE_KEY) == "write"  # and the replicas started here inherit it
    assert WRITE_KEY not in str(cfg.model_dump(mode="json")) and WRITE_KEY not in cfg.model_dump_json()


def test_a_store_password_never_travels_in_serve_arguments_or_routing_records(serving_artifacts, tmp_path,
                                                                              monkeypatch):
    """Serve keeps every deployment's arguments (and shows them); the routing is a record of the store. Both
    carry the database URL without its password, which each replica takes from its environment."""
    from coldstart.serving.config import ServeConfig
    from coldstart.serving.stores import STORE_ENV, with_password, without_password
    from coldstart.serving.keys import closed_by_default
    from serve.local import variants_of

    url = "postgresql://coldstart:Sup3r-s3cret@db.internal:5432/coldstart?sslmode=require&password=Sup3r-s3cret"
    bare = without_password(url)
    assert "Sup3r-s3cret" not in bare and bare.startswith("postgresql://coldstart@db.internal:5432/coldstart?")
    monkeypatch.setenv(STORE_ENV, "")
    monkeypatch.setenv("COLDSTART_API_KEY", "")
    cfg = ServeConfig(artifacts=serving_artifacts, store=url)
    closed_by_default(cfg)  # what `coldstart serve` does before Ray starts
    variants = variants_of({"main": cfg})
    assert "Sup3r-s3cret" not in str([v.model_dump(mode="json") for v in variants])
    assert with_password(variants[0].settings["store"]) == url  # a replica finds it in its environment


def test_a_slow_store_never_blocks_the_event_loop(monkeypatch):
    """The ingress reads the store for a newer routing in a worker thread, and a local stage runs in one: while
    a read hangs, other requests (here, a ticker on the same loop) go on, and the current routing serves."""
    import time

    from coldstart.serving import routing
    from coldstart.serving.routing import FollowingRouter, Variant
    from coldstart.serving.service import LocalStage

    ticks, seen = [0], []

    class SlowStore:
        slow = False

        def read_new(self):
            if self.slow:
                time.sleep(0.5)  # a PostgreSQL that hangs
                seen.append(ticks[0])  # how far the loop got meanwhile
            return []

    monkeypatch.setattr(routing, "STORE_WAIT_S", 0.1)
    store = SlowStore()
    front = FollowingRouter(store, [Variant(name="a", weight=1.0, app="a", settings={})], lambda v: object(),
                            poll_s=0.0)
    store.slow = True

    async def ticker():
        for _ in range(100):
            await asyncio.sleep(0.01)
            ticks[0] += 1

    async def scenario():
        await asyncio.gather(front.follow(), LocalStage(store).call("read_new"), ticker())

    asyncio.run(scenario())
    assert len(seen) == 2 and min(seen) >= 10, seen  # the loop kept ticking through both reads
    assert front.router.variants[0].name == "a"
