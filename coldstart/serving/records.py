"""What a registration store's records mean for erasure: which entities a record is about, and which records a
later deletion erases.

Both back ends (`coldstart.serving.file_store`, `coldstart.serving.pg_store`) erase by this one rule, and
`coldstart.serving.stores`, which picks a back end, states it as part of the store contract; it lives here, a
leaf that imports nothing of the project, so the back ends and the module that opens them do not import each
other.
"""

from __future__ import annotations

import time

ROUTING = ("routing", "current")  # what every routing record is about: the one routing the app follows
COMPACTION = ("compaction", "current")  # what every compaction record is about: only the last one stays
DELETIONS = ("deletions", "all")  # what every deletion record is about: a key to find them by (PostgreSQL)
# A deletion record stays this long after its deletion: every replica that served the entity reads it and takes
# the entity out. Older ones are compacted away (`compaction_due`); a replica that has not read the store for
# longer than this (less `MARGIN_S`) when it meets the compaction record rebuilds its state from the store.
KEEP_DELETIONS_S = 7 * 24 * 3600.0
MARGIN_S = 60.0  # clocks of replicas on several machines, and a record's time against its commit


def concerns(record: dict) -> list[tuple[str, str]]:
    """The (kind, id) of every entity a record is about: a registration its own, an interaction its user and
    its item, a routing record the app's routing, a deletion none (it holds no more than the id it deletes,
    and must outlive what it erases, so it is about the deletions as a whole)."""
    kind = record.get("kind")
    if kind in ("item", "user"):
        return [(kind, str(record.get("id")))]
    if kind == "interaction":
        return [("user", str(record.get("user_id"))), ("item", str(record.get("item_id")))]
    if kind == "routing":
        return [ROUTING]
    if kind == "deletion":
        return [DELETIONS]
    if kind == "compaction":
        return [COMPACTION]
    return []


def supersedes(record: dict) -> tuple[str, str] | None:
    """The entity whose earlier records `record` erases: a deletion its target, a routing record the routing
    before it (only the last one is ever followed), a compaction record the compaction before it; None for any
    other record. A compaction record also erases the deletion records older than its `cutoff`."""
    if record.get("kind") == "deletion":
        return str(record.get("target")), str(record.get("target_id"))
    return {"routing": ROUTING, "compaction": COMPACTION}.get(record.get("kind"))


def compaction_due(deleted_at: list[float], now: float | None = None) -> dict | None:
    """The compaction record to write when the oldest deletion record (`deleted_at`: when each one the store
    holds was made) is twice `KEEP_DELETIONS_S` old, so compactions come about once in that time; else None. It
    erases the deletion records older than `KEEP_DELETIONS_S`."""
    now = time.time() if now is None else now
    if not deleted_at or min(deleted_at) >= now - 2 * KEEP_DELETIONS_S:
        return None
    return {"kind": "compaction", "id": f"compaction:{time.time_ns()}", "cutoff": now - KEEP_DELETIONS_S, "at": now}


def expired(record: dict, cutoff: float) -> bool:
    """Whether a compaction of `cutoff` erases `record`: a deletion record made before it."""
    return record.get("kind") == "deletion" and float(record.get("at", cutoff)) < cutoff


def erased(records: list[dict]) -> list[bool]:
    """For each record, in store order, whether a later deletion names an entity it concerns: what
    `writer.delete()` removes with it. A registration made after a deletion of the same id is a new entity and stays."""
    last_deletion: dict[tuple[str, str], int] = {}
    cutoffs = []  # (position, cutoff) of each compaction record
    for position, record in enumerate(records):
        entity = supersedes(record)
        if entity is not None:
            last_deletion[entity] = position
        if record.get("kind") == "compaction":
            cutoffs.append((position, float(record["cutoff"])))
    return [any(last_deletion.get(entity, -1) > position for entity in concerns(record) if entity != DELETIONS)
            or any(later > position and expired(record, cutoff) for later, cutoff in cutoffs)
            for position, record in enumerate(records)]
