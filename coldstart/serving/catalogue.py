"""The ranker's state: every item in a faiss index, every user's vector and seen items, and
registrations, replayed from the store at start and followed from its tail while serving.

Warm users rank with their backbone vectors; cold ones (the artifact's cold
users and registered users) with generated ones. A new user's profile may name
liked items: their mean vector and the generated content vector each count
half. Every public method first catches up with the store, so a registration
made through another ranker replica is visible in the next request.

Registration is idempotent by id and body: the same id registered again with the
same body (a client's retry after an answer it never got) is answered as the
first time and writes nothing; a different body under a taken id is a 409.

Interactions (a user with an item, after the training run) are records of the
same store. Each adds the item to the user's seen items; a cold or registered
item's vector, and a cold or registered user's, moves from its content vector
toward what its interactions say (`coldstart.serving.warmup.fold_in`), in the
index in place. Warm items and users keep their trained vectors until the next
training run. The same (user, item, timestamp) again is the same interaction.

Deletion (a user who leaves, an item withdrawn) is a record too, holding only
the kind and id. Applied, it takes the entity out of every answer (a deleted
item is never ranked, a deleted user is unknown), and takes its interactions
back out of the vectors they moved. Then the store erases every earlier record
about it (`coldstart.serving.stores.erased`): its registration with its text
and attributes, and its interactions. A deleted trained (warm) user or item is
hidden the same way; its rows in the training artifacts stay until the next
training run leaves them out. The id may be registered again afterwards, as a
new entity. Nothing a user or item registered (text, attributes, titles) is
ever logged; log lines name ids only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.schema import find_table, read_table
from coldstart.features import AttributeEncoder
from coldstart.serving.errors import Conflict, Invalid, NotFound
from coldstart.serving.index import ItemIndex
from coldstart.serving.models import serving_record
from coldstart.serving.titles import LabelMatcher, TitleMatcher
from coldstart.serving.store import RegistrationStore
from coldstart.serving.warmup import fold_in, positive_target, typical_strength

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


@dataclass
class UserEntry:
    vector: np.ndarray
    seen: np.ndarray  # item positions
    warm: bool
    registered: bool = False
    text: np.ndarray | None = None  # LLM vector of what the user said about themselves, if anything
    stated: tuple[str, ...] = ()  # the attribute values what they said names ("genres: Horror")


@dataclass
class Catalogue:
    item_ids: list[str]
    titles: list[str | None]
    item_vectors: np.ndarray
    warm_items: np.ndarray
    users: dict[str, UserEntry]
    store: RegistrationStore | None = None
    space: str = ""  # fingerprint of the backbone space; a record from another space is not served
    item_text: np.ndarray | None = None  # items' LLM text vectors: what a stated interest is matched against
    text_weight: float = 1.0  # a stated interest's weight, in units of the two scores' spreads
    prior_weight: float = 1.0  # online warm-up: a content vector counts as this many interactions
    attribute_encoder: AttributeEncoder | None = None  # items' attributes as explanations name them
    item_labels: list[list[str]] | None = None  # each item's attribute values ("genres: Drama"), for explanations
    regenerate: Callable[[dict, str], dict] | None = None  # a record of another space -> this space's (`Regenerator`)
    # The share of a list's slots kept for new items (`interleave`; `coldstart.serving.evidence` learns it):
    # generated vectors score on another scale than trained ones, and without it new items rarely reach a list.
    new_share: float = 0.0
    # A new item keeps its place among the new (and their slots) until this many users interacted with it. Let
    # go after its second interaction, a warmed-up item competed with old items by a folded-in vector that
    # ranked badly, and a replay of clicks lost a third of what the slots gained (RESULTS, exposure replay).
    new_until: int = 20
    # The share of a list's slots kept for the items that carry an attribute value the user's text names
    # ("Mostly horror films for me"), ranked among themselves by the collaborative score; the user's vector also
    # takes the taste of users who favour those items (`taste`). Matching the text's vector to items' texts
    # instead ranked text look-alikes first and cost held-out accuracy; larger shares honour the statement more
    # and predict less (RESULTS, stated interest).
    stated_share: float = 0.3
    index: ItemIndex = field(init=False)
    title_index: TitleMatcher = field(init=False)  # what a user's text names by title
    label_index: LabelMatcher = field(init=False)  # the attribute values a user's text names
    labelled: dict[str, set[int]] = field(init=False)  # attribute value -> positions of the items that carry it
    item_pos: dict[str, int] = field(init=False)
    item_cold: list[bool] = field(init=False)
    registered_items: int = field(init=False, default=0)
    registered_users: int = field(init=False, default=0)
    stale: int = field(init=False, default=0)
    digests: dict[tuple[str, str], str | None] = field(init=False, default_factory=dict)
    interactions: dict[str, tuple[str, int]] = field(init=False, default_factory=dict)  # id -> (user, item pos)
    deleted_items: set[int] = field(init=False, default_factory=set)  # positions never ranked again
    deletions: set[str] = field(init=False, default_factory=set)  # ids of the deletion records applied
    item_priors: dict[int, np.ndarray] = field(init=False, default_factory=dict)  # content vectors, once moved
    item_events: dict[int, list[str]] = field(init=False, default_factory=dict)  # users who interacted
    user_priors: dict[str, np.ndarray] = field(init=False, default_factory=dict)
    user_events: dict[str, list[int]] = field(init=False, default_factory=dict)  # item positions

    def __post_init__(self):
        text_dim = 0 if self.item_text is None else self.item_text.shape[1]
        self.index = ItemIndex(self.item_vectors.shape[1], text_dim)
        self.index.add(self.item_vectors, self.item_text)
        # new items: the cold ones and those registered since, until `new_until` users interacted with each
        self.fresh = set(np.flatnonzero(~np.asarray(self.warm_items, bool)).tolist())
        self.text_scale = self.text_weight * _spread_ratio(self.item_vectors, self.item_text,
                                                           [u.vector for u in self.users.values() if u.warm])
        self.item_pos = {item: i for i, item in enumerate(self.item_ids)}
        self.title_index = TitleMatcher(self.titles)
        self.item_cold = [not bool(w) for w in self.warm_items]
        if self.item_labels is None:
            self.item_labels = [[] for _ in self.item_ids]
        self.label_index = LabelMatcher(self.item_labels)
        self._tastes: dict[tuple[str, ...], np.ndarray | None] = {}
        self._warm: tuple | None = None
        self.labelled = {}
        for pos, labels in enumerate(self.item_labels):
            for label in labels:
                self.labelled.setdefault(label, set()).add(pos)
        warm_norms = [np.linalg.norm(u.vector) for u in self.users.values() if u.warm]
        self.user_norm = float(np.median(warm_norms)) if warm_norms else 1.0
        self._warmup_scales()
        self._lock = threading.RLock()  # faiss adds and searches, and the dicts, are not thread-safe together
        if self.store is not None:
            self.sync()

    @classmethod
    def from_artifacts(cls, artifacts: str | Path, generator, store: RegistrationStore | None = None,
                       text_weight: float = 1.0, encoder: str | None = "auto",
                       new_share: float | None = None, stated_share: float = 0.3) -> "Catalogue":
        """Build from an artifacts folder and a `ServingGenerator` (which provides the cold vectors and the
        items' text vectors). Registrations made against other artifacts are made again with `generator` and
        the `encoder` serving picks (`Regenerator`); `encoder=None` leaves them out instead. `new_share`: the
        share of slots for new items; None takes what the pipeline learnt for this generator (serving.json),
        else 0."""
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
        if new_share is None:
            new_share = float(serving_record(artifacts).get("new_share", {}).get(generator.name, 0.0))
        return cls(item_ids, titles, item_vectors, arrays["warm_items"].astype(bool), users, store, space,
                   generator.catalogue_text(), text_weight, attribute_encoder=attributes, item_labels=labels,
                   regenerate=None if encoder is None else Regenerator(artifacts, generator, encoder),
                   new_share=new_share, stated_share=stated_share)

    def _warmup_scales(self) -> None:
        """What a positive interaction scores (the median over training interactions), and how strongly a
        content vector holds against interactions (see `coldstart.serving.warmup`)."""
        warm = [u for u in self.users.values() if u.warm]
        vectors = np.stack([u.vector for u in warm]) if warm else np.zeros((0, self.item_vectors.shape[1]))
        pairs = np.asarray([(i, p) for i, u in enumerate(warm) for p in u.seen], np.int64).reshape(-1, 2)
        self.positive_score = positive_target(vectors, self.item_vectors, pairs)
        self.item_strength = typical_strength(vectors, self.prior_weight)  # an item's prior vs users' pull
        self.user_strength = typical_strength(self.item_vectors[np.asarray(self.warm_items, bool)],
                                              self.prior_weight)

    # ---- the store ----------------------------------------------------------------------------------

    def sync(self) -> None:
        if self.store is None:
            return
        with self._lock:
            self._apply_all(self.store.read_new())

    def _apply_all(self, records: list[dict]) -> None:
        prepare = getattr(self.regenerate, "prepare", None)
        # one batched encoding for every registration to make again (not yet applied: a log read again after
        # an erasure replays what is already here); none in the usual sync, which then encodes nothing
        again = [r for r in records if r.get("space") != self.space and (
            (r.get("kind") == "item" and r.get("id") not in self.item_pos)
            or (r.get("kind") == "user" and r.get("id") not in self.users))] if prepare is not None else []
        if again:
            prepare(again)
        for record in records:
            kind = record.get("kind")
            if kind == "deletion":  # whatever the space: a deleted entity stays deleted
                self._apply_deletion(record)
            elif kind not in ("item", "user", "interaction"):  # the app's own records (routing)
                continue
            elif record.get("space") == self.space:
                self._apply(record)
            elif self.regenerate is None:
                self.stale += 1
                log.warning("registered %s %r was made against other artifacts; not served (register it again)",
                            kind, record.get("id"))
            elif kind == "interaction":  # ids only: the same fact in every space
                self._apply(record)
            elif (kind == "item" and record["id"] in self.item_pos) or (kind == "user" and record["id"] in self.users):
                continue  # a replayed duplicate: the first registration wins, nothing to make again
            else:
                try:
                    self._apply(self.regenerate(record, self.space))
                except Exception as exc:  # noqa: BLE001 - one record the new models cannot read must not stop the rest
                    self.stale += 1
                    log.warning("registered %s %r could not be made again with these artifacts (%s); not served",
                                kind, record.get("id"), type(exc).__name__)

    def _apply(self, record: dict) -> None:
        self.digests.setdefault((record["kind"], record["id"]), record.get("digest"))
        if record["kind"] == "interaction":
            self._apply_interaction(record)
        elif record["kind"] == "item":
            if record["id"] in self.item_pos:  # a replayed duplicate: the first registration wins
                return
            text = record.get("text_vector")
            self.item_pos[record["id"]] = int(self.index.add(np.asarray(record["vector"], np.float32),
                                                             None if text is None else np.asarray(text))[0])
            self.fresh.add(self.item_pos[record["id"]])
            self.item_ids.append(record["id"])
            self.titles.append(record.get("title"))
            self.title_index.add(self.item_pos[record["id"]], record.get("title"))
            self.item_labels.append([] if self.attribute_encoder is None else self.attribute_encoder.labels(
                pd.DataFrame([{**(record.get("attributes") or {}), "item_id": record["id"]}], dtype=object))[0])
            self.label_index.add(self.item_labels[-1])
            for label in self.item_labels[-1]:
                self.labelled.setdefault(label, set()).add(self.item_pos[record["id"]])
            self.item_cold.append(True)
            self.registered_items += 1
        elif record["kind"] == "user":
            if record["id"] in self.users:
                return
            seen = np.asarray([self.item_pos[i] for i in record["liked"] if i in self.item_pos], np.int64)
            _, text, _, stated = self._with_named(record.get("text") or "", [], record.get("text_vector"))
            if "content_vector" in record:  # made again from its content (`regenerate`): add the liked items' share
                content = record["content_vector"]
                vector = self.profile_query(None if content is None else np.asarray(content, np.float32), seen,
                                            stated)
            else:
                vector = np.asarray(record["vector"], np.float32)
            self.users[record["id"]] = UserEntry(vector, seen, False, True,
                                                 None if text is None else np.asarray(text, np.float32), stated)
            self.registered_users += 1

    def _apply_interaction(self, record: dict) -> None:
        if record["id"] in self.interactions:  # a replayed duplicate
            return
        user, pos = self.users.get(record["user_id"]), self.item_pos.get(record["item_id"])
        if user is None or pos is None:  # checked when written; a record from a store shared with other data
            log.warning("interaction %r names an unknown user or item; not applied", record["id"])
            return
        self.interactions[record["id"]] = (record["user_id"], pos)
        if pos not in user.seen:
            user.seen = np.append(user.seen, pos)
        if self.item_cold[pos]:
            if pos not in self.item_priors:  # its content vector, kept from the first interaction on
                self.item_priors[pos] = self.index.vectors([pos])[0]
            self.item_events.setdefault(pos, []).append(record["user_id"])
            self._fold_item(pos)
        if not user.warm:
            if record["user_id"] not in self.user_priors:
                self.user_priors[record["user_id"]] = user.vector.copy()
            self.user_events.setdefault(record["user_id"], []).append(pos)
            self._fold_user(record["user_id"])

    def _fold_item(self, pos: int) -> None:
        others = [self.users[u].vector for u in self.item_events.get(pos, []) if u in self.users]
        prior = self.item_priors[pos]
        self.index.update(pos, fold_in(prior, np.stack(others), self.positive_score, self.item_strength)
                          if others else prior)
        if len(others) < self.new_until:
            self.fresh.add(pos)
        else:
            self.fresh.discard(pos)

    def _fold_user(self, user_id: str) -> None:
        events = self.user_events.get(user_id, [])
        prior = self.user_priors[user_id]
        self.users[user_id].vector = fold_in(prior, self.index.vectors(np.asarray(events)), self.positive_score,
                                             self.user_strength) if events else prior.copy()

    def _apply_deletion(self, record: dict) -> None:
        """Take the entity out of every answer, and its interactions out of the vectors they moved."""
        if record["id"] in self.deletions:  # a replayed duplicate (the log is read again after an erasure)
            return
        self.deletions.add(record["id"])
        kind, target = record.get("target"), record.get("target_id")
        self.digests.pop((kind, target), None)
        if kind == "user" and target in self.users:
            user = self.users.pop(target)
            self.registered_users -= user.registered
            self.user_priors.pop(target, None)
            self.user_events.pop(target, None)
            moved = {pos for i, (u, pos) in self.interactions.items() if u == target}
            self.interactions = {i: e for i, e in self.interactions.items() if e[0] != target}
            for pos in moved:
                if pos in self.item_events:
                    self.item_events[pos] = [u for u in self.item_events[pos] if u != target]
                    self._fold_item(pos)
        elif kind == "item" and target in self.item_pos:
            pos = self.item_pos.pop(target)
            self.deleted_items.add(pos)
            self.registered_items -= pos >= len(self.warm_items)
            self.titles[pos] = None
            for label in self.item_labels[pos]:
                self.labelled.get(label, set()).discard(pos)
            self.item_labels[pos] = []
            self.index.clear(pos)
            self.fresh.discard(pos)
            self.item_priors.pop(pos, None)
            self.item_events.pop(pos, None)
            users = {u for i, (u, p) in self.interactions.items() if p == pos}
            self.interactions = {i: e for i, e in self.interactions.items() if e[1] != pos}
            for user_id in users:
                user = self.users.get(user_id)
                if user is not None:
                    user.seen = user.seen[user.seen != pos]
                if user_id in self.user_events:
                    self.user_events[user_id] = [p for p in self.user_events[user_id] if p != pos]
                    self._fold_user(user_id)

    def _register(self, record: dict, taken, field_name: str | None = None) -> None:
        """Check against every record so far, append durably, then apply: never half-registered.

        `taken()` says whether the id is already in use; a registered record with the same digest is
        this very registration retried, answered without a second record, anything else a conflict.
        """
        if self.store is None:
            raise RuntimeError("this catalogue has no registration store")
        record["digest"] = _digest(record)
        with self._lock, self.store.writing() as writer:
            self._apply_all(writer.read_new())
            if taken():
                if self.digests.get((record["kind"], record["id"])) == record["digest"]:
                    return
                raise Conflict(field_name or f"{record['kind']}_id",
                               f"{record['kind']} {record['id']!r} already exists (with another body)")
            writer.append(record)
            self._apply(record)

    # ---- requests -----------------------------------------------------------------------------------

    def _positions(self, ids: list[str], field_name: str) -> np.ndarray:
        unknown = [i for i in ids if i not in self.item_pos]
        if unknown:
            raise NotFound(field_name, f"unknown item id(s): {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))
        return np.asarray([self.item_pos[i] for i in ids], np.int64)

    def _rank(self, query: np.ndarray, k: int, exclude: np.ndarray | None, candidates: list[str] | None,
              text: np.ndarray | None = None, history: np.ndarray | None = None,
              stated: tuple[str, ...] = ()) -> list[dict]:
        """The top k; with `history` (the user's item positions), each item explained from it; with `stated`
        (attribute values the user named), `stated_share` of the slots for the items that carry one."""
        allowed = None if candidates is None else self._positions(candidates, "candidates")
        if self.deleted_items:
            deleted = np.fromiter(self.deleted_items, np.int64, len(self.deleted_items))
            exclude = deleted if exclude is None else np.concatenate([np.asarray(exclude, np.int64), deleted])
        positions, scores = self._mixed(query, k, exclude, allowed, text)
        if stated and self.stated_share > 0:
            carriers = np.fromiter(set().union(*(self.labelled.get(label, set()) for label in stated)), np.int64)
            if allowed is not None:
                carriers = np.intersect1d(carriers, allowed)
            named = self._mixed(query, k, exclude, carriers, None)
            order = interleave(list(zip(positions, scores)), list(zip(*named)), k,
                               self.stated_share, distinct=lambda pair: pair[0])
            positions = np.asarray([p for p, _ in order], np.int64)
            scores = np.asarray([s for _, s in order], np.float32)
        items = [{"item_id": self.item_ids[p], "title": self.titles[p], "score": float(s), "cold": self.item_cold[p]}
                 for p, s in zip(positions, scores)]
        if history is not None:
            history = np.asarray([h for h in history if h not in self.deleted_items], np.int64)
            theirs = self.index.vectors(history)
            theirs = theirs / np.maximum(np.linalg.norm(theirs, axis=1, keepdims=True), 1e-12)
            counts: dict[str, int] = {}
            for h in history:
                for label in self.item_labels[h]:
                    counts[label] = counts.get(label, 0) + 1
            for item, p in zip(items, positions):
                item["explanation"] = self._explain(int(p), history, theirs, counts, text)
                item["explanation"]["stated"] = [label for label in stated if label in self.item_labels[int(p)]]
        return items

    def _mixed(self, query: np.ndarray, k: int, exclude: np.ndarray | None, allowed: np.ndarray | None,
               text: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The top k, with `new_share` of the slots kept for new items (the best of them, `interleave`)."""
        if not self.new_share or not self.fresh:
            return self._search(query, k, exclude, allowed, text)
        fresh = np.fromiter(self.fresh, np.int64, len(self.fresh))
        old = self._search(query, k, fresh if exclude is None else np.concatenate([exclude, fresh]), allowed, text)
        new = self._search(query, k, exclude, fresh if allowed is None else np.intersect1d(fresh, allowed), text)
        order = interleave([("old", i) for i in range(len(old[0]))], [("new", i) for i in range(len(new[0]))], k,
                           self.new_share)
        lists = {"old": old, "new": new}
        return (np.asarray([lists[side][0][i] for side, i in order], np.int64),
                np.asarray([lists[side][1][i] for side, i in order], np.float32))

    def _search(self, query: np.ndarray, k: int, exclude: np.ndarray | None, allowed: np.ndarray | None,
                text: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(query, k, exclude=exclude, allowed=allowed, text=text, text_weight=self.text_scale)

    def _explain(self, pos: int, history: np.ndarray, theirs: np.ndarray, counts: dict[str, int],
                 text: np.ndarray | None, because: int = 3, shared: int = 5) -> dict:
        """Why item `pos`: the user's items (`history`, their unit collaborative vectors `theirs`, their attribute
        values' `counts`) closest to it by cosine, the attribute values it shares with them, how well it matches
        what the user said, and where its vector came from."""
        closest = []
        if len(history):
            mine = self.index.vectors([pos])[0]
            cosine = theirs @ (mine / max(float(np.linalg.norm(mine)), 1e-12))
            for j in np.argsort(-cosine)[:because]:
                h = int(history[j])
                closest.append({"item_id": self.item_ids[h], "title": self.titles[h],
                                "similarity": round(float(cosine[j]), 4)})
        common = sorted((label for label in self.item_labels[pos] if label in counts), key=lambda x: -counts[x])
        explanation = {"because": closest,
                       "shared_attributes": [{"attribute": label, "your_items": counts[label]}
                                             for label in common[:shared]],
                       "vector": self._vector_source(pos), "text_match": None}
        if text is not None:
            stated = self.item_text[pos] if self.item_text is not None and pos < len(self.item_text) \
                else self.index.text_vector(pos)  # a registered item's text vector is in its index row
            explanation["text_match"] = round(float(np.dot(stated, text)), 4)
        return explanation

    def _vector_source(self, pos: int) -> dict:
        """Trained items: their training interactions. Cold and registered ones: their content, and from their
        first interaction on both, the content counting as `prior_weight` interactions (fold-in's ridge)."""
        if not self.item_cold[pos]:
            return {"source": "interactions", "content_weight": 0.0, "interactions": None}
        n = len(self.item_events.get(pos, []))
        weight = self.prior_weight / (self.prior_weight + n)
        return {"source": "content" if n == 0 else "content+interactions", "content_weight": round(weight, 4),
                "interactions": n}

    def taste(self, labels: tuple[str, ...]) -> np.ndarray | None:
        """What users who favour the items carrying `labels` have in common: the mean of warm users' vectors, each
        weighted by how far its share of those items exceeds their share of all training interactions; None if
        no user's does. Computed once per set of labels, over the training interactions."""
        key = tuple(sorted(labels))
        if key not in self._tastes:
            if self._warm is None:  # (user row of each training interaction, its item position, users' vectors)
                warm = [u for u in self.users.values() if u.warm and len(u.seen)]
                rows = np.repeat(np.arange(len(warm)), [len(u.seen) for u in warm])
                seen = np.concatenate([u.seen for u in warm]) if warm else np.zeros(0, np.int64)
                self._warm = rows, seen, np.stack([u.vector for u in warm]) if warm else None
            rows, seen, vectors = self._warm
            carries = np.zeros(len(self.item_ids), bool)
            carries[list(set().union(*(self.labelled.get(label, set()) for label in labels)))] = True
            totals = np.bincount(rows, minlength=0 if vectors is None else len(vectors))
            shares = np.bincount(rows, weights=carries[seen], minlength=len(totals)) / np.maximum(totals, 1)
            weights = np.maximum(shares - carries[seen].mean(), 0.0) if len(seen) else shares
            self._tastes[key] = None if not weights.sum() else \
                (weights @ vectors / weights.sum()).astype(np.float32)
        return self._tastes[key]

    def profile_query(self, content_vector: np.ndarray | None, liked: np.ndarray,
                      stated: tuple[str, ...] = ()) -> np.ndarray:
        """A new user's vector: the mean of what they give, each part on a warm user's typical norm: the
        generated vector, the mean of liked items' vectors, the taste of users who favour what they named."""
        parts = []
        if content_vector is not None:
            parts.append(np.asarray(content_vector, np.float32))
        if len(liked):
            parts.append(self.index.vectors(liked).mean(axis=0))
        taste = self.taste(stated) if stated else None
        if taste is not None:
            parts.append(taste)
        if not parts:
            raise Invalid("profile", "nothing to recommend from: give attributes, text or liked items")
        if len(parts) == 1 and content_vector is not None:
            return parts[0]
        # Users' and items' vectors differ in scale: put each part on the typical warm user's norm first.
        scaled = [p / max(float(np.linalg.norm(p)), 1e-12) * self.user_norm for p in parts]
        return np.mean(scaled, axis=0).astype(np.float32)

    def recommend_user(self, user_id: str, k: int, exclude_seen: bool = True,
                       candidates: list[str] | None = None, explain: bool = False) -> dict:
        self.sync()
        with self._lock:
            user = self.users.get(user_id)
            if user is None:
                raise NotFound("user_id", f"unknown user {user_id!r}")
            items = self._rank(user.vector, k, user.seen if exclude_seen else None, candidates, user.text,
                               history=user.seen if explain else None, stated=user.stated)
            return {"user_id": user_id, "path": "warm" if user.warm else "cold", "items": items,
                    "stated": list(user.stated)}

    def named(self, text: str) -> list[str]:
        """Ids of the items `text` names by title ("I loved Fargo"), deleted ones left out (`TitleMatcher`)."""
        return [self.item_ids[p] for p in self.title_index.find(text or "") if p not in self.deleted_items]

    def stated(self, text: str) -> tuple[str, ...]:
        """The attribute values `text` names ("Mostly horror films" names "genres: Horror"), outside the titles
        it names, and carried by some item."""
        spans = [span for span in self.title_index.spans(text or "") if span[2] not in self.deleted_items]
        return tuple(label for label in self.label_index.find(text or "", spans) if self.labelled.get(label))

    def _with_named(self, text: str, liked: list[str], text_vector):
        """(`liked` with the items `text` names added, the text vector or None, the ids added, the attribute
        values `text` names): named items count as liked, named values get their share of the slots
        (`stated_share`), and where it names either the text is not matched to items' texts."""
        named = self.named(text)
        stated = self.stated(text)
        added = [i for i in named if i not in liked]
        return list(liked) + added, (None if named or stated else text_vector), added, stated

    def recommend_profile(self, content_vector: np.ndarray | None, liked: list[str], k: int,
                          exclude_seen: bool = True, candidates: list[str] | None = None,
                          text_vector: np.ndarray | None = None, explain: bool = False, said: str = "") -> dict:
        """`text_vector`: the LLM vector of the profile's free text, a stated interest matched to items' text;
        `said`: that text. Items it names by title count as liked (the answer's `named`), and then its words are
        not matched to items' texts: that match ranks the named films' namesakes and sequels, and the named
        films already say what the user likes (`benchmarks/stated_interest_users.py`)."""
        self.sync()
        with self._lock:
            liked, text_vector, named, stated = self._with_named(said, liked, text_vector)
            liked_positions = self._positions(liked, "profile.liked")
            query = self.profile_query(content_vector, liked_positions, stated)
            items = self._rank(query, k, liked_positions if exclude_seen else None, candidates, text_vector,
                               history=liked_positions if explain else None, stated=stated)
            return {"user_id": None, "path": "cold", "items": items, "named": named, "stated": list(stated)}

    def register_item(self, item_id: str, vector: np.ndarray, *, title: str | None, attributes: dict,
                      text: str, generator: str, text_vector: np.ndarray | None = None) -> dict:
        vector = np.asarray(vector, np.float32)
        self.sync()

        self._register({"kind": "item", "id": item_id, "title": title, "attributes": attributes, "text": text,
                        "vector": vector.tolist(), "text_vector": _listed(text_vector), "generator": generator,
                        "space": self.space, "at": time.time()}, lambda: item_id in self.item_pos)
        return {"id": item_id, "kind": "item", "index_size": len(self.index)}

    def register_user(self, user_id: str, content_vector: np.ndarray | None, *, liked: list[str],
                      attributes: dict, text: str, generator: str, text_vector: np.ndarray | None = None) -> dict:
        self.sync()
        with self._lock:
            liked, text_vector, _, stated = self._with_named(text, liked, text_vector)  # as `recommend_profile`
            liked_positions = self._positions(liked, "liked")
            vector = self.profile_query(content_vector, liked_positions, stated)
            self._register({"kind": "user", "id": user_id, "attributes": attributes, "text": text, "liked": liked,
                            "vector": vector.tolist(), "text_vector": _listed(text_vector), "generator": generator,
                            "space": self.space, "at": time.time()}, lambda: user_id in self.users)
        return {"id": user_id, "kind": "user", "index_size": len(self.index)}

    def record_interaction(self, user_id: str, item_id: str, *, rating: float | None = None,
                           timestamp: float | None = None) -> dict:
        """Store the interaction durably, then apply it: the item joins the user's seen items, and a cold
        item's or user's vector moves toward what its interactions say."""
        self.sync()
        with self._lock:
            if user_id not in self.users:
                raise NotFound("user_id", f"unknown user {user_id!r}")
            if item_id not in self.item_pos:
                raise NotFound("item_id", f"unknown item {item_id!r}")
            interaction_id = f"{user_id}|{item_id}|{'' if timestamp is None else repr(float(timestamp))}"
            self._register({"kind": "interaction", "id": interaction_id, "user_id": user_id, "item_id": item_id,
                            "rating": rating, "timestamp": timestamp, "space": self.space, "at": time.time()},
                           lambda: interaction_id in self.interactions, field_name="rating")
            pos, user = self.item_pos[item_id], self.users[user_id]
            moved = (["item"] if self.item_cold[pos] else []) + ([] if user.warm else ["user"])
            return {"user_id": user_id, "item_id": item_id, "moved": moved,
                    "item_interactions": len(self.item_events.get(pos, [])),
                    "user_interactions": len(self.user_events.get(user_id, []))}

    def delete(self, kind: str, entity_id: str) -> dict:
        """Delete a user or an item (trained or registered): durable before the answer, applied at once, every
        earlier record about it erased from the store. Deleting what is not there is a 404."""
        if kind not in ("user", "item"):
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        if self.store is None:
            raise RuntimeError("this catalogue has no registration store")
        field_name = f"{kind}_id"
        self.sync()
        with self._lock, self.store.writing() as writer:
            self._apply_all(writer.read_new())
            if entity_id not in (self.users if kind == "user" else self.item_pos):
                raise NotFound(field_name, f"unknown {kind} {entity_id!r}")
            record = {"kind": "deletion", "id": f"{kind}:{entity_id}:{time.time_ns()}", "target": kind,
                      "target_id": entity_id, "at": time.time()}
            record["digest"] = _digest(record)
            writer.append(record)
            self._apply_deletion(record)
            erased = writer.erase()
        log.info("deleted %s %r; %d record(s) about it erased from the store", kind, entity_id, erased)
        return {"id": entity_id, "kind": kind, "deleted": True, "erased_records": erased}

    def item_info(self, item_id: str) -> dict:
        self.sync()
        with self._lock:
            pos = self.item_pos.get(item_id)
            if pos is None:
                raise NotFound("item_id", f"unknown item {item_id!r}")
            return {"item_id": item_id, "title": self.titles[pos], "cold": self.item_cold[pos],
                    "registered": pos >= len(self.warm_items)}

    def has_item(self, item_id: str) -> bool:
        self.sync()
        return item_id in self.item_pos

    def stats(self) -> dict:
        self.sync()
        return {"items": len(self.index) - len(self.deleted_items), "users": len(self.users),
                "registered_items": self.registered_items, "registered_users": self.registered_users,
                "interactions": len(self.interactions), "deleted": len(self.deletions), "stale_records": self.stale}


def interleave(old: list, new: list, k: int, share: float, distinct=None) -> list:
    """The first k of two ranked lists merged with `share` of the slots for `new`, spread evenly (slot i is new's
    when floor((i + 1) * share) > floor(i * share)); when one list runs out the other fills the rest. With
    `distinct` (an entry -> its key), an entry whose key is already listed is skipped (lists that overlap)."""
    old, new, out, listed = list(old), list(new), [], set()
    while len(out) < k and (old or new):
        slot = len(out)
        wants_new = int(round((slot + 1) * share, 9)) > int(round(slot * share, 9))
        entry = (new if new and (wants_new or not old) else old).pop(0)
        if distinct is not None:
            if distinct(entry) in listed:
                continue
            listed.add(distinct(entry))
        out.append(entry)
    return out


def _listed(vector: np.ndarray | None) -> list[float] | None:
    return None if vector is None else np.asarray(vector, np.float32).tolist()


def _spread_ratio(item_vectors: np.ndarray, item_text: np.ndarray | None, user_vectors: list[np.ndarray],
                  sample: int = 256) -> float:
    """Spread of warm users' collaborative scores over items / spread of text-to-text cosines among items:
    what puts a unit of stated interest on the scale of a unit of collaborative score."""
    if item_text is None or not len(user_vectors):
        return 0.0
    rng = np.random.default_rng(0)
    users = np.stack(user_vectors)[rng.choice(len(user_vectors), min(sample, len(user_vectors)), replace=False)]
    texts = item_text[rng.choice(len(item_text), min(sample, len(item_text)), replace=False)]
    collaborative = float(np.std(users @ item_vectors.T, axis=1).mean())
    stated = float(np.std(texts @ item_text.T, axis=1).mean())
    return collaborative / stated if stated > 0 else 0.0
