"""Serving under faults: replicas killed under load, and the whole app SIGKILLed mid-registration.

The client retries a request that got a 5xx or no answer, with backoff. That is
safe for every request it sends: a recommendation changes nothing, and a
registration is idempotent by id and body (the same id and body again is answered
as the first time, without a second record), so a registration that was written
but whose answer was lost in the kill is answered 201 on the retry, never 409.

Each drill runs against both registration stores: the file log and PostgreSQL
(the session's server from tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
import psutil
import pytest

from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.bodies import RecommendRequest
from coldstart.serving.service import local_service
from coldstart.serving.file_store import LOG_FILE, decode_record, encode_record
from coldstart.serving.records import erased
from coldstart.serving.stores import open_store
from coldstart.ports import free_port
from tests.conftest import deploy_app

pytestmark = pytest.mark.slow

RETRIED = {500, 502, 503, 504}


def _item(item_id: str) -> dict:
    return {"item_id": item_id, "title": f"Film {item_id}", "attributes": {"year": 1999, "genres": "Sci-Fi"}}


def _user(user_id: str) -> dict:
    return {"user_id": user_id, "attributes": {"occupation": "job5", "age": 30}, "liked": ["i1"]}


def send_with_retries(client: httpx.Client, method: str, path: str, body: dict | None, *, deadline_s: float = 120,
                      stats: dict | None = None) -> httpx.Response:
    """The answer to a request, retried on 5xx or no answer until `deadline_s`; a 4xx is final."""
    give_up, wait = time.monotonic() + deadline_s, 0.2
    while True:
        try:
            response = client.request(method, path, json=body)
            if response.status_code not in RETRIED:
                return response
        except httpx.TransportError:
            response = None
        if time.monotonic() > give_up:
            raise TimeoutError(f"{method} {path}: no success in {deadline_s} s (last {response})")
        if stats is not None:
            stats["retries"] = stats.get("retries", 0) + 1
        time.sleep(wait)
        wait = min(wait * 2, 3.0)


@pytest.fixture(scope="module")
def artifacts(serving_artifacts):
    return serving_artifacts


# ---- a replica killed under load ------------------------------------------------------------------

def _replicas(deployment: str, app: str) -> list[dict]:
    import ray
    from ray.util.state import list_actors

    # This session's dashboard by address: with other clusters on the machine, "auto" is ambiguous.
    dashboard = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]
    return [a for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True,
                                   raise_on_missing_output=False)
            if a["class_name"] == f"ServeReplica:{app}:{deployment}"]


@pytest.fixture(params=["file", "postgres"])
def app_under_load(request, serve_app):
    """(base URL, Serve app name, store) of a running app: the session's (file store), or for PostgreSQL a second
    app beside it under /pg, deleted afterwards."""
    url = f"http://127.0.0.1:{serve_app['port']}"
    if request.param == "file":
        yield url, "coldstart", str(serve_app["store"])
        return
    from serve.local import delete

    store = request.getfixturevalue("postgres_url")
    deploy_app(serve_app["artifacts"], store, name="coldstart-pg", route_prefix="/pg")
    try:
        yield url + "/pg", "coldstart-pg", store
    finally:
        delete("coldstart-pg")


def test_killing_replicas_under_load_loses_no_request(app_under_load):
    import ray

    from serve.local import chain_apps

    base, app, store = app_under_load
    client = httpx.Client(base_url=base, timeout=60)
    stop, stats, acknowledged, interactions, failures = threading.Event(), {}, [], [], []

    def load(worker: int):
        with httpx.Client(base_url=base, timeout=60) as mine:
            n, mine_acknowledged = 0, []
            while not stop.is_set():
                n += 1
                try:
                    if n % 4 == 1 and mine_acknowledged:  # a user meets an item registered a moment ago
                        body = {"user_id": f"u{n % 100}", "item_id": mine_acknowledged[-1], "timestamp": n}
                        r = send_with_retries(mine, "POST", "/v1/interactions", body, stats=stats)
                        assert r.status_code == 201, r.text  # a retry is the same interaction, never a 409
                        interactions.append(f"u{n % 100}|{mine_acknowledged[-1]}|{float(n)!r}")
                    elif n % 2:
                        r = send_with_retries(mine, "POST", "/v1/recommend", {"user_id": f"u{n % 100}", "k": 5},
                                              stats=stats)
                        assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
                    else:
                        item_id = f"kill-{worker}-{n}"
                        r = send_with_retries(mine, "POST", "/v1/items", _item(item_id), stats=stats)
                        assert r.status_code == 201, r.text  # a 409 here would be a retry taken for a clash
                        acknowledged.append(item_id)
                        mine_acknowledged.append(item_id)
                except Exception as exc:  # noqa: BLE001 - collected and reported by the main thread
                    failures.append(repr(exc))
                    return

    threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    killed = []
    (chain,) = chain_apps(app)  # the Serve app holding the variant's encoder, generator and ranker
    for deployment in ("Ranker", "Generator"):
        time.sleep(2)
        victim = _replicas(deployment, chain)[0]
        killed.append(victim["actor_id"])
        ray.kill(ray.get_actor(victim["name"], namespace="serve"), no_restart=True)
    time.sleep(3)
    # Serve notices the dead replicas and starts new ones; the load keeps going meanwhile.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        alive = {d: [a["actor_id"] for a in _replicas(d, chain)] for d in ("Ranker", "Generator")}
        if all(alive.values()) and not set(killed) & {a for ids in alive.values() for a in ids}:
            break
        time.sleep(1)
    time.sleep(2)  # and keeps going a moment on the new replicas
    stop.set()
    for t in threads:
        t.join(180)
    print(f"\nreplicas killed {len(killed)}, requests retried {stats.get('retries', 0)}, "
          f"registrations acknowledged {len(acknowledged)}, interactions {len(interactions)}")
    assert not failures, failures
    assert all(alive.values()) and not set(killed) & {a for ids in alive.values() for a in ids}
    assert len(acknowledged) >= 3
    for item_id in acknowledged:
        assert client.get(f"/v1/items/{item_id}").json()["registered"] is True
    records = [r for r in open_store(store).read_new() if "kill-" in r["id"]]  # the session app's store has more
    # Each exactly once, retries included: registrations and interactions.
    assert sorted(r["id"] for r in records if r["kind"] == "item") == sorted(acknowledged)
    assert sorted(r["id"] for r in records if r["kind"] == "interaction") == sorted(interactions)
    assert client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).status_code == 200


# ---- the whole app SIGKILLed in the middle of registrations ---------------------------------------

# The plain-process app: the same API over the same objects, in one uvicorn process.
PLAIN_APP = """
import sys, uvicorn
from coldstart.serving.routes import create_api
from coldstart.serving.service import local_service
uvicorn.run(create_api(local_service(sys.argv[1], sys.argv[2])), host="127.0.0.1", port=int(sys.argv[3]),
            log_level="warning")
"""


def _start_app(artifacts, store, ray_tmp, *, on_ray: bool = True) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # RAY_ADDRESS=local: its own Ray cluster, never the session's or another user's on this machine;
    # its own session (process group) so one killpg takes the app and its Ray processes together.
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": str(ray_tmp)}
    command = ([sys.executable, "-m", "coldstart.cli", "serve", "--artifacts", str(artifacts), "--store", str(store),
                "--port", str(port), "--num-cpus", "4"] if on_ray
               else [sys.executable, "-c", PLAIN_APP, str(artifacts), str(store), str(port)])
    output = os.path.join(ray_tmp, "app.log")  # what the app said, shown if it fails to come up
    with open(output, "wb") as sink:
        proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(output, errors="replace") as f:
                raise AssertionError(f"the app exited with {proc.returncode}:\n{f.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    _kill_app(proc)
    raise TimeoutError("the app did not come up")


def _kill_app(proc: subprocess.Popen) -> int:
    """SIGKILL the app's process group, then any of its processes that left the group; how many had."""
    family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    _, strays = psutil.wait_procs(family, timeout=15)
    for p in strays:
        p.kill()
    _, left = psutil.wait_procs(strays, timeout=15)
    assert not left, f"processes of the killed app still alive: {left}"
    return len(strays)


def test_sigkill_mid_registration_loses_no_acknowledged_record(artifacts, store):
    """The file log's drill kills the whole Ray app (Serve, its replicas, the cluster); PostgreSQL's kills the
    same API in one process: what it checks, a registration committed before it is acknowledged, lives in the
    store, and the Ray app over PostgreSQL is drilled by the replica kill above."""
    log_file = None if store.startswith("postgresql://") else os.path.join(store, LOG_FILE)
    with tempfile.TemporaryDirectory(prefix="csrel-", dir="/tmp") as ray_tmp:  # short: Ray's socket paths
        proc, url = _start_app(artifacts, store, ray_tmp, on_ray=log_file is not None)
        items, users, deleted = [], [], []
        try:
            def register(worker: int):
                with httpx.Client(base_url=url, timeout=30) as client:
                    for n in range(100_000):
                        item_id, user_id = f"crash-{worker}-{n}", f"crash-user-{worker}-{n}"
                        try:
                            if client.post("/v1/items", json=_item(item_id)).status_code == 201:
                                items.append(item_id)
                                if n % 4 == 3:  # some are deleted again: the deletion, once answered, must hold
                                    items.remove(item_id)  # unknown if the kill takes the answer: not checked
                                    answer = client.delete(f"/v1/items/{item_id}")
                                    (deleted if answer.status_code == 200 else items).append(item_id)
                            if client.post("/v1/users", json=_user(user_id)).status_code == 201:
                                users.append(user_id)
                        except httpx.TransportError:
                            return  # the app is gone: what was acknowledged so far is the test

            threads = [threading.Thread(target=register, args=(w,)) for w in range(3)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(items) + len(users) < 30 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            strays = _kill_app(proc)
        for t in threads:
            t.join(60)
        acknowledged_items, acknowledged_users = list(items), list(users)
        assert len(acknowledged_items) + len(acknowledged_users) >= 30 and deleted

        if log_file is not None:
            with open(log_file, "rb") as f:
                lines = f.read().split(b"\n")
            torn = len(lines[-1])  # bytes after the last newline: a record the kill cut in half
            damaged = sum(decode_record(line + b"\n") is None for line in lines[:-1])
            print(f"\nacknowledged {len(acknowledged_items)} items, {len(acknowledged_users)} users, "
                  f"{len(deleted)} deletions; {len(lines) - 1} whole records, torn tail {torn} bytes, "
                  f"damaged {damaged}; strays killed {strays}")
            assert damaged == 0  # only the very last line may be cut short
        else:  # the database rolls back what the kill left uncommitted: nothing torn to look for
            print(f"\nacknowledged {len(acknowledged_items)} items and {len(acknowledged_users)} users; "
                  f"{len(open_store(store).read_new())} records committed; strays killed {strays}")

        # What a restarted app answers: the same request path over the same artifacts and store, in this
        # process (the objects its deployments hold; starting a second cluster would prove Serve, not the store).
        with TestClient(create_api(local_service(artifacts, store))) as client:
            for item_id in acknowledged_items:
                assert client.get(f"/v1/items/{item_id}").json()["registered"] is True, item_id
            for item_id in deleted:
                assert client.get(f"/v1/items/{item_id}").status_code == 404, item_id
            for user_id in acknowledged_users:
                r = client.post("/v1/recommend", json={"user_id": user_id, "k": 3})
                assert r.status_code == 200 and r.json()["path"] == "cold", r.text
            for start in range(0, len(acknowledged_items), 100):  # recommendable, not only stored
                chunk = acknowledged_items[start:start + 100]
                r = client.post("/v1/recommend", json={"user_id": "u1", "k": len(chunk), "candidates": chunk,
                                                       "exclude_seen": False})
                assert sorted(i["item_id"] for i in r.json()["items"]) == sorted(chunk)
            health = client.get("/healthz").json()
            after = client.post("/v1/items", json=_item("after-restart"))  # cuts a torn tail first
            assert after.status_code == 201
    # What the store holds live: a kill between a deletion's record and the erasure it makes of the entity's
    # earlier records leaves both in the log (the entity stays deleted; the next erasure drops them)
    records = open_store(store).read_new()
    live = [r for r, gone in zip(records, erased(records)) if not gone]
    assert health["registered_items"] == sum(r["kind"] == "item" for r in live) - 1
    assert health["registered_users"] == sum(r["kind"] == "user" for r in live)
    if log_file is not None:
        with open(log_file, "rb") as f:
            assert f.read().endswith(b"\n")
    assert {r["id"] for r in records} >= set(acknowledged_items) | set(acknowledged_users)
    assert not {r["id"] for r in records if r["kind"] == "item"} & set(deleted)  # erased, not only hidden
    assert {r["target_id"] for r in records if r["kind"] == "deletion"} >= set(deleted)


# ---- moving the running app to new artifacts, through an A/B test, under load -------------------------
# Last in this file: it leaves the session's app on the other artifacts. The new chain and the ingress's new
# variant start from the store alone, so this is also the restart drill: what was registered, deleted or torn
# before is served, gone or never served by replicas that were not there when it happened.

SECRET = "Quokka-whisperer from Zanzibar"


def test_swapping_to_an_ab_test_then_to_new_artifacts_under_load_fails_no_request(serve_app, serving_artifacts_b,
                                                                                  tmp_path):
    import shutil
    from pathlib import Path

    import ray
    from ray import serve

    from coldstart.serving.config import ServeConfig
    from serve.local import chain_apps, swap

    base = f"http://127.0.0.1:{serve_app['port']}"
    client = httpx.Client(base_url=base, timeout=60)
    user = {"user_id": "swap-user", "attributes": {"occupation": "job2", "age": 41}, "text": "westerns and jazz",
            "liked": ["i2", "i9"]}
    assert client.post("/v1/users", json=user).status_code == 201
    assert client.post("/v1/items", json=_item("swap-item")).status_code == 201
    # A user who leaves before the swap: deleted, and erased from the store at once.
    leaver = {"user_id": "leaver", "text": SECRET, "attributes": {"occupation": SECRET, "age": 33}, "liked": ["i3"]}
    assert client.post("/v1/users", json=leaver).status_code == 201
    assert client.post("/v1/interactions", json={"user_id": "leaver", "item_id": "i4"}).status_code == 201
    deleted = client.delete("/v1/users/leaver")
    assert deleted.status_code == 200 and deleted.json()["erased_records"] == 2, deleted.text
    log_file = serve_app["store"] / LOG_FILE
    with open(log_file, "ab") as log:  # a writer that died in the middle of its write (it held no lock now)
        log.write(encode_record({"kind": "item", "id": "torn-item", "vector": [0.0]})[:-9])
    stop, failures, registered, variants = threading.Event(), [], ["swap-item"], []

    def load(worker: int):
        with httpx.Client(base_url=base, timeout=60) as mine:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 5 == 0:
                        item_id = f"swap-{worker}-{n}"
                        r = mine.post("/v1/items", json=_item(item_id))
                        assert r.status_code == 201, r.text
                        registered.append(item_id)
                    else:
                        body = {"user_id": f"u{n % 100}", "k": 5} if n % 2 else \
                            {"profile": {"attributes": {"age": 20 + n % 40, "occupation": "job1"}}, "k": 5}
                        r = mine.post("/v1/recommend", json=body)  # no retries: every answer must be a 200
                        assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
                        variants.append(r.json()["variant"])
                except Exception as exc:  # noqa: BLE001 - collected and reported by the main thread
                    failures.append(repr(exc))
                    return

    threads = [threading.Thread(target=load, args=(w,)) for w in range(1)]  # 2 cores: the new chain starts too
    for t in threads:
        t.start()
    try:
        (old_chain,) = chain_apps()
        time.sleep(1)
        a, b = ServeConfig(artifacts=serve_app["artifacts"]), ServeConfig(artifacts=serving_artifacts_b)
        ab = swap({"main": a, "b": b})  # an A/B test: main's chain stays as it is, b's starts beside it
        assert ab[0].app == old_chain
        answered_before, deadline = len(variants), time.monotonic() + 60
        while len(variants) < answered_before + 40 and time.monotonic() < deadline and not failures:
            time.sleep(0.2)
        assert set(variants[answered_before:]) == {"main", "b"}, variants[answered_before:]  # users split
        (new,) = swap({"b": b})  # then everybody on b: main's chain is deleted
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    print(f"\nrequests answered {len(variants)} ({variants.count('main')} by main, {variants.count('b')} by b), "
          f"registrations {len(registered)}")
    assert not failures, failures
    assert variants[-1] == "b" and len(registered) >= 5
    assert chain_apps() == [new.app] and old_chain not in serve.status().applications
    assert [v["name"] for v in client.get("/healthz").json()["variants"]] == ["b"]
    # What the old replicas were told holds in the new ones: registered, deleted, torn.
    assert client.get("/v1/items/swap-item").json()["registered"] is True
    assert client.get("/v1/items/torn-item").status_code == 404  # never served
    assert b"torn-item" not in log_file.read_bytes()  # cut by the next write
    assert client.post("/v1/items", json=_item("swap-item")).status_code == 201  # a retry, answered as the first
    assert client.post("/v1/items", json={**_item("swap-item"), "title": "other"}).status_code == 409
    assert client.post("/v1/recommend", json={"user_id": "leaver", "k": 3}).status_code == 404
    assert all(SECRET.encode() not in f.read_bytes() for f in serve_app["store"].rglob("*") if f.is_file())
    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    files = [f for f in logs.rglob("*") if f.is_file()]
    assert files and not [f for f in files if SECRET.encode() in f.read_bytes()]  # nor in any of Ray's logs

    # Every registration, made through the old model, is answered by the new one: the same answers as a
    # process over the new artifacts and a copy of the store.
    copy = tmp_path / "store"
    shutil.copytree(serve_app["store"], copy)
    local = local_service(serving_artifacts_b, copy)
    request = {"user_id": "swap-user", "k": 10}
    served = client.post("/v1/recommend", json=request).json()
    expected = asyncio.run(local.recommend(RecommendRequest(**request)))
    assert [i["item_id"] for i in served["items"]] == [i.item_id for i in expected.items]
    some = registered[:100]  # a request ranks at most 100
    request = {"profile": {"attributes": {"age": 30, "occupation": "job3"}}, "k": len(some), "candidates": some}
    served = client.post("/v1/recommend", json=request).json()
    expected = asyncio.run(local.recommend(RecommendRequest(**request)))
    assert sorted(i["item_id"] for i in served["items"]) == sorted(some)
    assert np.allclose([i["score"] for i in served["items"]], [i.score for i in expected.items], atol=1e-4)
