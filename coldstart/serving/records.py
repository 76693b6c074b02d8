"""What a registration store's records mean for erasure: which entities a record is about, and which records a
later deletion erases.

Both back ends (`coldstart.serving.file_store`, `coldstart.serving.pg_store`) erase by this one rule, and
`coldstart.serving.stores`, which picks a back end, states it as part of the store contract; it lives here, a
leaf that imports nothing of the project, so the back ends and the module that opens them do not import each
other.
"""

from __future__ import annotations


ROUTING = ("routing", "current")  # what every routing record is about: the one routing the app follows


def concerns(record: dict) -> list[tuple[str, str]]:
    """The (kind, id) of every entity a record is about: a registration its own, an interaction its user and
    its item, a routing record the app's routing, a deletion none (it holds no more than the id it deletes,
    and must outlive what it erases)."""
    kind = record.get("kind")
    if kind in ("item", "user"):
        return [(kind, str(record.get("id")))]
    if kind == "interaction":
        return [("user", str(record.get("user_id"))), ("item", str(record.get("item_id")))]
    if kind == "routing":
        return [ROUTING]
    return []


def supersedes(record: dict) -> tuple[str, str] | None:
    """The entity whose earlier records `record` erases: a deletion its target, a routing record the routing
    before it (only the last one is ever followed); None for any other record."""
    if record.get("kind") == "deletion":
        return str(record.get("target")), str(record.get("target_id"))
    return ROUTING if record.get("kind") == "routing" else None


def erased(records: list[dict]) -> list[bool]:
    """For each record, in store order, whether a later deletion names an entity it concerns: what
    `writer.delete()` removes with it. A registration made after a deletion of the same id is a new entity and stays."""
    last_deletion: dict[tuple[str, str], int] = {}
    for position, record in enumerate(records):
        entity = supersedes(record)
        if entity is not None:
            last_deletion[entity] = position
    return [any(last_deletion.get(entity, -1) > position for entity in concerns(record))
            for position, record in enumerate(records)]
