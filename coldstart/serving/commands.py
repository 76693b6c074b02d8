"""Commands on the serving state: register an item or a user, record an interaction, delete an entity.

Each is a record: checked against every record so far, appended to the store
durably, then applied to the state (`ServingState.apply`), so nothing is ever
half-registered and every replica that follows the store applies the same.

Registration is idempotent by id and body: the same id registered again with the
same body (a client's retry after an answer it never got) is answered as the
first time and writes nothing; a different body under a taken id is a 409. The
same (user, item, timestamp) again is the same interaction. A deletion holds only
the kind and id; once applied, the store erases every earlier record about the
entity (`coldstart.serving.records.erased`): its registration with its text and
attributes, and its interactions. A deleted trained user or item is hidden the
same way; its rows in the training artifacts stay until the next training run
leaves them out. The id may be registered again afterwards, as a new entity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np

from coldstart.serving.errors import Conflict, NotFound
from coldstart.serving.records import compaction_due
from coldstart.serving.profiles import profile_query, with_named
from coldstart.serving.state import ServingState
from coldstart.serving.file_store import RegistrationStore

log = logging.getLogger(__name__)


def _digest(record: dict) -> str:
    """What the client sent (not the vector, not the time): equal for a retry of the same request."""
    fields = ("kind", "id", "title", "attributes", "text", "liked", "generator")
    if record["kind"] == "interaction":
        fields = ("kind", "id", "rating")
    elif record["kind"] == "deletion":
        fields = ("kind", "id")
    sent = {k: record.get(k) for k in fields}
    return hashlib.sha1(json.dumps(sent, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class Commands:
    def __init__(self, state: ServingState, store: RegistrationStore | None):
        self.state, self.store = state, store

    def _register(self, record: dict, taken, field_name: str | None = None) -> None:
        """Check against every record so far, append durably, then apply: never half-registered.

        `taken()` says whether the id is already in use; a registered record with the same digest is
        this very registration retried, answered without a second record, anything else a conflict.
        """
        if self.store is None:
            raise RuntimeError("this catalogue has no registration store")
        record["digest"] = _digest(record)
        with self.state.lock, self.store.writing() as writer:
            self.state.apply_all(writer.read_new())
            if taken():
                if self.state.digests.get((record["kind"], record["id"])) == record["digest"]:
                    return
                raise Conflict(field_name or f"{record['kind']}_id",
                               f"{record['kind']} {record['id']!r} already exists (with another body)")
            writer.append(record)
            self.state.apply(record)

    def register_item(self, item_id: str, vector: np.ndarray, *, title: str | None, attributes: dict,
                      text: str, generator: str, text_vector: np.ndarray | None = None) -> dict:
        vector = np.asarray(vector, np.float32)
        self._register({"kind": "item", "id": item_id, "title": title, "attributes": attributes, "text": text,
                        "vector": vector.tolist(), "text_vector": _listed(text_vector), "generator": generator,
                        "space": self.state.space, "at": time.time()}, lambda: item_id in self.state.item_pos)
        return {"id": item_id, "kind": "item", "index_size": len(self.state.index)}

    def register_user(self, user_id: str, content_vector: np.ndarray | None, *, liked: list[str],
                      attributes: dict, text: str, generator: str, text_vector: np.ndarray | None = None) -> dict:
        liked, text_vector, _, stated = with_named(self.state, text, liked, text_vector)  # as `recommend_profile`
        with self.state.lock:
            liked_positions = self.state.positions(liked, "liked")
            vector = profile_query(self.state, content_vector, liked_positions, stated)
            self._register({"kind": "user", "id": user_id, "attributes": attributes, "text": text, "liked": liked,
                            "vector": vector.tolist(), "text_vector": _listed(text_vector), "generator": generator,
                            "space": self.state.space, "at": time.time()}, lambda: user_id in self.state.users)
        return {"id": user_id, "kind": "user", "index_size": len(self.state.index)}

    def record_interaction(self, user_id: str, item_id: str, *, rating: float | None = None,
                           timestamp: float | None = None) -> dict:
        """Store the interaction durably, then apply it: the item joins the user's seen items, and a cold
        item's or user's vector moves toward what its interactions say."""
        with self.state.lock:
            if user_id not in self.state.users:
                raise NotFound("user_id", f"unknown user {user_id!r}")
            if item_id not in self.state.item_pos:
                raise NotFound("item_id", f"unknown item {item_id!r}")
            interaction_id = f"{user_id}|{item_id}|{'' if timestamp is None else repr(float(timestamp))}"
            self._register({"kind": "interaction", "id": interaction_id, "user_id": user_id, "item_id": item_id,
                            "rating": rating, "timestamp": timestamp, "space": self.state.space, "at": time.time()},
                           lambda: interaction_id in self.state.interactions, field_name="rating")
            pos, user = self.state.item_pos[item_id], self.state.users[user_id]
            moved = (["item"] if self.state.item_cold[pos] else []) + ([] if user.warm else ["user"])
            return {"user_id": user_id, "item_id": item_id, "moved": moved,
                    "item_interactions": len(self.state.item_events.get(pos, [])),
                    "user_interactions": len(self.state.user_events.get(user_id, []))}

    def delete(self, kind: str, entity_id: str) -> dict:
        """Delete a user or an item (trained or registered): durable before the answer, applied at once, every
        earlier record about it erased from the store. Deleting what is not there is a 404."""
        if kind not in ("user", "item"):
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        if self.store is None:
            raise RuntimeError("this catalogue has no registration store")
        field_name = f"{kind}_id"
        with self.state.lock, self.store.writing() as writer:
            self.state.apply_all(writer.read_new())
            if entity_id not in (self.state.users if kind == "user" else self.state.item_pos):
                raise NotFound(field_name, f"unknown {kind} {entity_id!r}")
            record = {"kind": "deletion", "id": f"{kind}:{entity_id}:{time.time_ns()}", "target": kind,
                      "target_id": entity_id, "at": time.time()}
            record["digest"] = _digest(record)
            erased = writer.delete(record)  # the deletion and its erasure: one step, durable together
            self.state.apply_deletion(record)
            compaction = compaction_due(list(self.state.deletions.values()))
            if compaction is not None:  # deletion records older than a week go, about once a week
                writer.delete(compaction)
                self.state.apply_compaction(compaction)
        log.info("deleted %s %r; %d record(s) about it erased from the store", kind, entity_id, erased)
        return {"id": entity_id, "kind": kind, "deleted": True, "erased_records": erased}


def _listed(vector: np.ndarray | None) -> list[float] | None:
    return None if vector is None else np.asarray(vector, np.float32).tolist()
