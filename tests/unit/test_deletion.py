"""Deletion (DELETE /v1/users/{id}, DELETE /v1/items/{id}), in-process over the HTTP API, on both stores.

A deleted user or item is gone from every answer at once, from a second replica
on the same store from its next request, and from the store before the answer:
a restarted app still does not know it, and the store's bytes (and the logs, at
every level) hold none of what was registered about it.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.service import local_service
from coldstart.serving.stores import erased, open_store

SECRET_TEXT = "Zanzibar-quokka-enthusiast who journals about xylophones"
SECRET_ATTRIBUTE = "lighthouse-keeper-7731"


@pytest.fixture(scope="module")
def artifacts(serving_artifacts):
    return serving_artifacts


def _stored_bytes(store: str) -> bytes:
    """Everything the store holds: the folder's files, or the table's rows as text."""
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store) as conn, conn.cursor() as cur:
            cur.execute("SELECT record::text FROM coldstart_registrations")
            return "\n".join(r[0] for r in cur.fetchall()).encode()
    from pathlib import Path

    return b"".join(p.read_bytes() for p in Path(store).rglob("*") if p.is_file())


def _ranked(client, user_id: str, k: int = 100) -> list[str]:
    r = client.post("/v1/recommend", json={"user_id": user_id, "k": k, "exclude_seen": False})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def test_the_erasure_rule_keeps_deletions_and_what_came_after():
    records = [{"kind": "user", "id": "a"}, {"kind": "item", "id": "x"},
               {"kind": "interaction", "id": "a|x|", "user_id": "a", "item_id": "x"},
               {"kind": "interaction", "id": "b|x|", "user_id": "b", "item_id": "x"},
               {"kind": "deletion", "id": "user:a:1", "target": "user", "target_id": "a"},
               {"kind": "user", "id": "a"},  # the id registered again: a new user, kept
               {"kind": "interaction", "id": "a|x|2", "user_id": "a", "item_id": "x"}]
    assert erased(records) == [True, False, True, False, False, False, False]


def test_a_deleted_user_and_item_are_gone_from_answers_replicas_restarts_the_store_and_the_logs(
        artifacts, store, caplog):
    caplog.set_level(logging.DEBUG)
    service, other = local_service(artifacts, store), local_service(artifacts, store)  # two ranker replicas
    with TestClient(create_api(service)) as client, TestClient(create_api(other)) as replica:
        user = {"user_id": "leaver", "text": SECRET_TEXT, "attributes": {"occupation": SECRET_ATTRIBUTE, "age": 41},
                "liked": ["i1"]}
        assert client.post("/v1/users", json=user).status_code == 201
        item = {"item_id": "withdrawn", "title": "A Withdrawn Film", "text": SECRET_TEXT,
                "attributes": {"year": 2001, "genres": "Drama"}}
        assert client.post("/v1/items", json=item).status_code == 201
        for n, u in enumerate(["leaver", "u3", "u5"]):
            assert client.post("/v1/interactions", json={"user_id": u, "item_id": "withdrawn",
                                                         "timestamp": n}).status_code == 201
        assert client.post("/v1/interactions", json={"user_id": "leaver", "item_id": "i7"}).status_code == 201
        assert "withdrawn" in _ranked(replica, "u3")
        catalogue = service.ranker.target
        moved = catalogue.index.vectors([catalogue.item_pos["withdrawn"]])[0].copy()

        r = client.delete("/v1/users/leaver")
        assert r.status_code == 200, r.text
        assert r.json()["erased_records"] == 3  # the registration and its two interactions
        # The item the user moved is refolded from the interactions that remain.
        assert not np.allclose(catalogue.index.vectors([catalogue.item_pos["withdrawn"]])[0], moved)
        for c in (client, replica):  # this replica at once, the other from its next request
            r = c.post("/v1/recommend", json={"user_id": "leaver", "k": 5})
            assert r.status_code == 404 and r.json()["field"] == "user_id"
        assert client.delete("/v1/users/leaver").status_code == 404

        assert client.delete("/v1/items/withdrawn").status_code == 200
        for c in (client, replica):
            assert "withdrawn" not in _ranked(c, "u3")
            assert c.get("/v1/items/withdrawn").status_code == 404
            r = c.post("/v1/recommend", json={"user_id": "u3", "k": 5, "candidates": ["withdrawn", "i1"]})
            assert r.status_code == 404 and r.json()["field"] == "candidates"
        # A trained user and a trained item are hidden the same way.
        assert client.delete("/v1/users/u9").status_code == 200
        assert client.delete("/v1/items/i2").status_code == 200
        assert replica.post("/v1/recommend", json={"user_id": "u9", "k": 5}).status_code == 404
        assert "i2" not in _ranked(replica, "u3")
        assert client.get("/healthz").json()["registered_users"] == 0

        stored = _stored_bytes(store)
        assert SECRET_TEXT.encode() not in stored and SECRET_ATTRIBUTE.encode() not in stored
        assert b"A Withdrawn Film" not in stored

    # A restart replays the store: everything deleted stays deleted; the id can be registered anew.
    with TestClient(create_api(local_service(artifacts, store))) as restarted:
        assert restarted.post("/v1/recommend", json={"user_id": "leaver", "k": 5}).status_code == 404
        assert restarted.post("/v1/recommend", json={"user_id": "u9", "k": 5}).status_code == 404
        assert restarted.get("/v1/items/withdrawn").status_code == 404
        assert "i2" not in _ranked(restarted, "u3")
        again = {"user_id": "leaver", "attributes": {"age": 30}}
        assert restarted.post("/v1/users", json=again).status_code == 201
        assert restarted.post("/v1/recommend", json={"user_id": "leaver", "k": 5}).status_code == 200

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_TEXT not in logged and SECRET_ATTRIBUTE not in logged and "Withdrawn Film" not in logged
    assert len(open_store(store).read_new()) > 0


def test_a_registration_made_while_a_deletion_lands_never_fails_it_and_the_user_is_erased(artifacts, store,
                                                                                           monkeypatch):
    """Two replicas on one store. The deletion used to commit, then erase in a second transaction, which
    raised (a 500 after the deletion was durable, the user's text still stored) when the other replica
    registered between the two. Deletion and erasure are now one step under the writers' lock."""
    from coldstart.serving.state import ServingState

    one, two = (TestClient(create_api(local_service(artifacts, store))) for _ in range(2))
    assert one.post("/v1/users", json={"user_id": "leaving", "text": SECRET_TEXT, "liked": ["i1"]}).status_code == 201
    applied = ServingState.apply_deletion

    def meanwhile(self, record):  # the other replica writes as soon as this one's deletion lets the lock go
        applied(self, record)
        if record["target_id"] == "leaving" and not getattr(meanwhile, "done", False):
            meanwhile.done = True
            assert two.post("/v1/items", json={"item_id": "arriving", "title": "Arriving"}).status_code == 201

    monkeypatch.setattr(ServingState, "apply_deletion", meanwhile)
    answer = one.delete("/v1/users/leaving")
    assert answer.status_code == 200 and answer.json()["erased_records"] == 1, answer.text
    assert getattr(meanwhile, "done", False)
    assert SECRET_TEXT.encode() not in _stored_bytes(store)
    assert two.get("/v1/items/arriving").status_code == 200


def test_a_deletion_touches_only_what_the_entity_did(artifacts, tmp_path):
    """Per-entity interaction indexes: deleting a user or an item never walks every interaction of the store
    (it did, for each deletion, under the catalogue's lock)."""
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.served_models import ServingGenerator

    catalogue = Catalogue.from_artifacts(artifacts, ServingGenerator(artifacts, "auto"), open_store(tmp_path / "s"),
                                         encoder=None)
    catalogue.register_user("leaving", None, liked=["i1"], attributes={}, text="", generator="distill")
    for n, item in enumerate(["i2", "i3", "i2"]):
        catalogue.record_interaction("leaving", item, timestamp=float(n))
    catalogue.record_interaction("u1", "i3", timestamp=1.0)

    class NoScan(dict):
        def _scan(self, *_):
            raise AssertionError("a deletion walked every interaction")

        __iter__ = items = values = keys = _scan

    catalogue.interactions = NoScan(catalogue.interactions)
    assert catalogue.delete("user", "leaving")["erased_records"] == 4
    assert catalogue.delete("item", "i3")["deleted"] and dict.__len__(catalogue.interactions) == 0
    assert catalogue.stats()["deleted"] == 2
    # nothing kept per interaction outlives it (the retry digests did, one per interaction ever recorded)
    assert not [key for key in catalogue.digests if key[0] == "interaction"]


def test_a_compaction_erases_the_deletion_records_older_than_its_cutoff_and_the_compaction_before_it():
    records = [{"kind": "deletion", "id": "d1", "target": "user", "target_id": "u1", "at": 10.0},
               {"kind": "compaction", "id": "c1", "cutoff": 5.0, "at": 15.0},
               {"kind": "user", "id": "u2"},
               {"kind": "deletion", "id": "d2", "target": "user", "target_id": "u9", "at": 30.0},
               {"kind": "compaction", "id": "c2", "cutoff": 20.0, "at": 40.0},
               {"kind": "deletion", "id": "d3", "target": "item", "target_id": "i1", "at": 12.0}]  # after c2: stays
    assert erased(records) == [True, True, False, False, False, False]


def test_old_deletion_records_are_compacted_away_and_a_replica_that_missed_one_rebuilds(artifacts, store,
                                                                                       monkeypatch):
    """Deletion records stay a while (a week; a second here), then a deletion compacts the older ones away. A
    replica that had not read the store since before a compacted deletion cannot learn of it from the store:
    it rebuilds from the store and no longer serves the deleted item; a new replica never knew it."""
    import time

    from coldstart.serving import records
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.served_models import ServingGenerator
    from coldstart.serving.stores import read_snapshot

    monkeypatch.setattr(records, "KEEP_DELETIONS_S", 1.0)
    monkeypatch.setattr(records, "MARGIN_S", 0.05)
    generator = ServingGenerator(artifacts, "auto")
    writer = Catalogue.from_artifacts(artifacts, generator, open_store(store), encoder=None)
    behind = Catalogue.from_artifacts(artifacts, generator, open_store(store), encoder=None)
    vector = np.ones(writer.item_vectors.shape[1], np.float32)
    for item in ("gone-early", "gone-late"):
        writer.register_item(item, vector, title=None, attributes={}, text="", generator=generator.name)
    assert behind.has_item("gone-early")
    writer.delete("item", "gone-early")  # `behind` reads nothing from here on, until after the compaction
    time.sleep(2.2)
    writer.delete("item", "gone-late")  # the first deletion record is now over twice the keep old
    kinds = [(r["kind"], r.get("target_id")) for r in read_snapshot(store)[0]]
    assert kinds == [("deletion", "gone-late"), ("compaction", None)], kinds
    assert not behind.has_item("gone-early") and not behind.has_item("gone-late")
    assert not Catalogue.from_artifacts(artifacts, generator, open_store(store), encoder=None).has_item("gone-early")
    assert not writer.needs_rebuild and len(writer.deletions) == 1
