"""The ranker's catalogue: the serving state over a registration store, and the requests it answers.

Built from an artifacts folder (`from_artifacts`), it replays the store at start
and follows its tail while serving: every public method first catches up with
the store, so a registration made through another ranker replica is visible in
the next request. The state itself is `coldstart.serving.state.ServingState`
(warm users rank with their backbone vectors; cold and registered ones with
generated ones); queries are `coldstart.serving.ranking.Queries`; registrations,
interactions and deletions are `coldstart.serving.commands.Commands`, each a
store record written durably before it is applied.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.schema import find_table, read_table
from coldstart.serving import statements
from coldstart.serving.commands import Commands
from coldstart.serving.served_models import serving_record
from coldstart.serving.ranking import Queries
from coldstart.serving.slots import STATED_SHARE, Slots
from coldstart.serving.state import ServingState, UserEntry
from coldstart.serving.file_store import RegistrationStore

log = logging.getLogger(__name__)

# Deleted registered items' index rows a catalogue tolerates (and no more than the live registered items) before
# it starts over from the store: the index stays within a constant factor of the live set.
REBUILD_DEAD_ROWS = 10_000


@dataclass
class Catalogue(ServingState):
    store: RegistrationStore | None = None
    origin: dict | None = None  # `from_artifacts`' arguments: what a rebuild starts from (`sync`)

    def __post_init__(self):
        super().__post_init__()
        self.queries, self.commands = Queries(self), Commands(self, self.store)
        if self.store is not None:
            self.sync()

    @classmethod
    def from_artifacts(cls, artifacts: str | Path, generator, store: RegistrationStore | None = None,
                       text_weight: float = 1.0, encoder: str | None = "auto",
                       new_slots: Slots | None = None, stated_share: float = STATED_SHARE,
                       follower: bool = False, encoder_precision: str = "auto",
                       encoder_runtime: str = "auto") -> "Catalogue":
        """Build from an artifacts folder and a `ServingGenerator` (which provides the cold vectors and the
        items' text vectors). Registrations made against other artifacts are made again with `generator` and
        the `encoder` serving picks, in its `encoder_precision` and `encoder_runtime` (`Regenerator`);
        `encoder=None` leaves them out instead. `new_slots`: the
        slots for new items; None takes what the pipeline learnt for this generator (serving.json), else none."""
        from coldstart.serving.regenerate import Regenerator

        split = Path(artifacts) / "split"
        meta, arrays = generator.meta, generator.arrays
        user_vectors, item_vectors = generator.catalogue_vectors()
        item_ids, user_ids = list(meta["item_ids"]), list(meta["user_ids"])
        items = read_table(find_table(split, "items")).astype({"item_id": str}).set_index("item_id")
        title_column = generator.content.templates.title_column  # what the run resolved, not a dataset's name
        if title_column is not None and title_column in items.columns:
            titles = items[title_column].reindex(item_ids)
        else:
            titles = pd.Series([None] * len(item_ids))
            log.info("items have no titles (%s): items a new user names are not found by title",
                     "the run found no title column" if title_column is None else f"no column {title_column!r}")
        titles = [None if pd.isna(t) else str(t) for t in titles]
        train = read_table(find_table(split, "train")).astype({"user_id": str, "item_id": str})
        item_pos = pd.Index(item_ids)
        seen = train.assign(pos=item_pos.get_indexer(train["item_id"])).query("pos >= 0").groupby("user_id")["pos"]
        seen = {user: np.asarray(positions, np.int64) for user, positions in seen}
        empty = np.zeros(0, np.int64)
        warm_users = arrays["warm_users"].astype(bool)
        users = {user: UserEntry(user_vectors[i], seen.get(user, empty), bool(warm_users[i]))
                 for i, user in enumerate(user_ids)}
        space = hashlib.sha1(np.ascontiguousarray(arrays["item_vectors"], np.float32).tobytes()).hexdigest()[:16]
        attributes = generator.content.attribute_encoders["item"]
        labels = attributes.labels(items.reindex(item_ids).rename_axis("item_id").reset_index())
        if new_slots is None:
            new_slots = Slots.served(serving_record(artifacts), generator.name)
        origin = {"artifacts": artifacts, "generator": generator, "text_weight": text_weight, "encoder": encoder,
                  "new_slots": new_slots, "stated_share": stated_share, "follower": follower,
                  "encoder_precision": encoder_precision, "encoder_runtime": encoder_runtime}
        return cls(item_ids, titles, item_vectors, arrays["warm_items"].astype(bool), users, space=space, store=store,
                   origin=origin,
                   item_text=generator.catalogue_text(), text_weight=text_weight, attribute_encoder=attributes,
                   item_labels=labels,
                   regenerate=None if encoder is None else Regenerator(artifacts, generator, encoder, encoder_precision,
                                                                       encoder_runtime),
                   new_slots=new_slots, stated_share=stated_share, follower=follower,
                   stated_map=statements.load(artifacts, generator.name))

    def sync(self) -> None:
        """Apply what other replicas wrote to the store since the last call; rebuilt from the artifacts and the
        whole store when a compaction dropped deletion records this copy may not have read."""
        if self.store is None:
            return
        with self.lock:
            started = time.time()
            self._catch_up()
            if self.needs_rebuild and self.origin is not None:
                log.warning("the store was compacted since this replica last read it: rebuilding from the store")
                self.rebuild()
            elif self.origin is not None and self.dead_rows > max(REBUILD_DEAD_ROWS, self.registered_items):
                # deleted registered items' rows (zeroed, never ranked) outnumber the live: the index starts over
                log.info("%d deleted items' rows in the index: rebuilding it from the store", self.dead_rows)
                self.rebuild()
            self.synced_at = started

    def rebuild(self) -> None:
        """Under the lock: this catalogue's state made again from its artifacts and every record of the store."""
        fresh = Catalogue.from_artifacts(**self.origin, store=None)
        lock, store = self.lock, self.store
        self.__dict__.update(fresh.__dict__)
        self.lock, self.store = lock, store
        self.queries, self.commands = Queries(self), Commands(self, store)
        store.rewind()
        self._catch_up()

    def _catch_up(self) -> None:
        """Under the lock: apply every record the store has that this catalogue has not read, chunk by chunk (a
        long store, at start, is never held whole)."""
        while records := self.store.read_new(chunk=True):
            self.apply_all(records)

    # ---- requests: each catches up with the store first ----------------------------------------------

    def recommend_user(self, *args, **kwargs) -> dict:
        self.sync()
        return self.queries.recommend_user(*args, **kwargs)

    def recommend_profile(self, *args, **kwargs) -> dict:
        self.sync()
        return self.queries.recommend_profile(*args, **kwargs)

    def holds_every_item(self) -> bool:
        """Whether this copy ranks what the ranker ranks: not a follower that left another space's registered
        items to the ranker (after a swap of artifacts, until they are made again)."""
        self.sync()
        return not self.left_items

    def recommend_profile_held(self, *args, **kwargs) -> dict | None:
        """`recommend_profile` from this copy when it holds every item the ranker does; None when not (the
        ranker's to answer). One catch-up with the store for both."""
        return self.queries.recommend_profile(*args, **kwargs) if self.holds_every_item() else None

    @property
    def generator(self):
        """The generator this catalogue's cold vectors came from (the served one)."""
        return self.origin["generator"]

    def item_info(self, item_id: str) -> dict:
        self.sync()
        return self.queries.item_info(item_id)

    def has_item(self, item_id: str) -> bool:
        self.sync()
        return self.queries.has_item(item_id)

    def stats(self) -> dict:
        self.sync()
        return self.queries.stats()

    def register_item(self, *args, **kwargs) -> dict:
        self.sync()
        return self.commands.register_item(*args, **kwargs)

    def register_user(self, *args, **kwargs) -> dict:
        self.sync()
        return self.commands.register_user(*args, **kwargs)

    def record_interaction(self, *args, **kwargs) -> dict:
        self.sync()
        return self.commands.record_interaction(*args, **kwargs)

    def delete(self, kind: str, entity_id: str) -> dict:
        self.sync()
        return self.commands.delete(kind, entity_id)
