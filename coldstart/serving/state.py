"""The serving state one ranker replica holds, built from artifacts and changed only by store records.

Every item in a faiss index (`ItemIndex`), every user's vector and seen items,
the new items' exposure bookkeeping, and what follows from records of the
registration store (`apply_all`): registrations, interactions and deletions.
Requests read it through `coldstart.serving.ranking.Queries` and change it only
by writing a record and applying it (`coldstart.serving.commands.Commands`);
`coldstart.serving.catalogue.Catalogue` puts the three together over a store.

Interactions (a user with an item, after the training run) move a cold or
registered item's vector, and a cold or registered user's, from its content
vector toward what its interactions say (`coldstart.serving.warmup.fold_in`), in
the index in place. Warm items and users keep their trained vectors until the
next training run. A deletion takes the entity out of every answer (a deleted
item is never ranked, a deleted user is unknown) and its interactions back out
of the vectors they moved. A registration made against other artifacts (another
space) is made again with these (`regenerate`) before it is applied. Nothing a
user or item registered (text, attributes, titles) is ever logged; log lines name
ids only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from coldstart.features import AttributeEncoder
from coldstart.serving.errors import NotFound
from coldstart.serving.index import ItemIndex
from coldstart.serving.profiles import profile_query, spread_ratio, with_named
from coldstart.serving import records
from coldstart.serving.slots import STATED_SHARE, Slots
from coldstart.serving.titles import LabelMatcher, TitleMatcher
from coldstart.serving.warmup import fold_in, positive_target, typical_strength

log = logging.getLogger(__name__)

# Online warm-up folds a new item's (user's) vector from at most this many of its latest users (items): an item
# this popular is warm by the next training, and each interaction's fold costs the same from here on.
FOLD_LIMIT = 500


@dataclass
class UserEntry:
    vector: np.ndarray
    seen: np.ndarray  # item positions
    warm: bool
    registered: bool = False
    text: np.ndarray | None = None  # LLM vector of what the user said about themselves, if anything
    stated: tuple[str, ...] = ()  # the attribute values what they said names ("genres: Horror")


@dataclass
class ServingState:
    item_ids: list[str]
    titles: list[str | None]
    item_vectors: np.ndarray
    warm_items: np.ndarray
    users: dict[str, UserEntry]
    space: str = ""  # fingerprint of the backbone space; a record from another space is not served
    item_text: np.ndarray | None = None  # items' LLM text vectors: what a stated interest is matched against
    text_weight: float = 1.0  # a stated interest's weight, in units of the two scores' spreads
    prior_weight: float = 1.0  # online warm-up: a content vector counts as this many interactions
    attribute_encoder: AttributeEncoder | None = None  # items' attributes as explanations name them
    item_labels: list[list[str]] | None = None  # each item's attribute values ("genres: Drama"), for explanations
    regenerate: Callable[[dict, str], dict] | None = None  # a record of another space -> this space's (`Regenerator`)
    # The slots of a list kept for new items (`coldstart.serving.slots`; `coldstart.serving.evidence` learns
    # them): generated vectors score on another scale than trained ones, and without them new items rarely
    # reach a list.
    new_slots: Slots = field(default_factory=Slots)
    # A new item keeps its place among the new (and their slots) until this many users interacted with it. Let
    # go after its second interaction, a warmed-up item competed with old items by a folded-in vector that
    # ranked badly, and a replay of clicks lost a third of what the slots gained (RESULTS, exposure replay).
    new_until: int = 20
    # The share of a list's first 10 slots (`ranking.STATED_HEAD`) kept for the items that carry an attribute
    # value the user's text names ("Mostly horror films for me"), ranked among themselves by the collaborative
    # score; the user's vector also takes the taste of users who favour those items (`profiles.users_taste`).
    # Matching the text's vector to items' texts instead ranked text look-alikes first and cost held-out
    # accuracy (RESULTS, stated interest). The default: `slots.STATED_SHARE`.
    stated_share: float = STATED_SHARE
    # Where a stated interest places a new user: per attribute column, the map the pipeline learnt on warm
    # users from (generated vector, taste) to the collaborative space (`coldstart.serving.statements`); None
    # or a column without one: the mean of the two.
    stated_map: dict[str, np.ndarray] | None = None
    # A follower (the ingress's copy, for requests by user_id) makes nothing again: a registration of another
    # space is left, quietly, to the ranker, which the ingress asks for any user it does not know.
    follower: bool = False
    index: ItemIndex = field(init=False)
    title_index: TitleMatcher = field(init=False)  # what a user's text names by title
    label_index: LabelMatcher = field(init=False)  # the attribute values a user's text names
    labelled: dict[str, set[int]] = field(init=False)  # attribute value -> positions of the items that carry it
    item_pos: dict[str, int] = field(init=False)
    item_cold: list[bool] = field(init=False)
    registered_items: int = field(init=False, default=0)
    registered_users: int = field(init=False, default=0)
    stale: int = field(init=False, default=0)
    left_items: int = field(init=False, default=0)  # a follower's: items of another space it left to the ranker
    digests: dict[tuple[str, str], str | None] = field(init=False, default_factory=dict)
    interactions: dict[str, tuple[str, int]] = field(init=False, default_factory=dict)  # id -> (user, item pos)
    deleted_items: set[int] = field(init=False, default_factory=set)  # positions never ranked again
    dead_rows: int = field(init=False, default=0)  # index rows of registered items deleted since built
    deleted_array: np.ndarray = field(init=False, default_factory=lambda: np.zeros(0, np.int64))  # the same, sorted
    # per entity: the ids of its interactions, so a deletion costs what the entity did, not every interaction
    user_interactions: dict[str, set[str]] = field(init=False, default_factory=dict)
    item_interactions: dict[int, set[str]] = field(init=False, default_factory=dict)
    deletions: dict[str, float] = field(init=False, default_factory=dict)  # deletion records applied: id -> when
    # When this copy last read the whole store (`Catalogue.sync`); a compaction record that erased deletion records
    # it may not have read (made before then) asks for a rebuild from the store (`needs_rebuild`).
    synced_at: float | None = field(init=False, default=None)
    needs_rebuild: bool = field(init=False, default=False)
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
        self.text_scale = self.text_weight * spread_ratio(self.item_vectors, self.item_text,
                                                           [u.vector for u in self.users.values() if u.warm])
        self.item_pos = {item: i for i, item in enumerate(self.item_ids)}
        self.title_index = TitleMatcher(self.titles)
        self.item_cold = [not bool(w) for w in self.warm_items]
        if self.item_labels is None:
            self.item_labels = [[] for _ in self.item_ids]
        self.label_index = LabelMatcher(self.item_labels)
        self.tastes: dict[tuple[str, ...], np.ndarray | None] = {}
        self.warm_rows: tuple | None = None  # `profiles.users_taste`'s training interactions, once
        self.labelled = {}
        for pos, labels in enumerate(self.item_labels):
            for label in labels:
                self.labelled.setdefault(label, set()).add(pos)
        warm_norms = [np.linalg.norm(u.vector) for u in self.users.values() if u.warm]
        self.user_norm = float(np.median(warm_norms)) if warm_norms else 1.0
        self._warmup_scales()
        self.lock = threading.RLock()  # faiss adds and searches, and the dicts, are not thread-safe together

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

    def apply_all(self, records: list[dict]) -> None:
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
                self.apply_deletion(record)
            elif kind == "compaction":
                self.apply_compaction(record)
            elif kind not in ("item", "user", "interaction"):  # the app's own records (routing)
                continue
            elif record.get("space") == self.space:
                self.apply(record)
            elif self.regenerate is None and self.follower:
                if kind == "interaction":  # ids only: a fact about users and items this copy may know
                    self.apply(record)
                elif kind == "item":  # the ranker holds an item this copy does not: it ranks no list alone
                    self.left_items += 1
            elif self.regenerate is None:
                self.stale += 1
                log.warning("registered %s %r was made against other artifacts; not served (register it again)",
                            kind, record.get("id"))
            elif kind == "interaction":  # ids only: the same fact in every space
                self.apply(record)
            elif (kind == "item" and record["id"] in self.item_pos) or (kind == "user" and record["id"] in self.users):
                continue  # a replayed duplicate: the first registration wins, nothing to make again
            else:
                try:
                    self.apply(self.regenerate(record, self.space))
                except Exception as exc:  # noqa: BLE001 - one record the new models cannot read must not stop the rest
                    self.stale += 1
                    log.warning("registered %s %r could not be made again with these artifacts (%s); not served",
                                kind, record.get("id"), type(exc).__name__)

    def apply(self, record: dict) -> None:
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
            _, text, _, stated = with_named(self, record.get("text") or "", [], record.get("text_vector"))
            if "content_vector" in record:  # made again from its content (`regenerate`): add the liked items' share
                content = record["content_vector"]
                vector = profile_query(self, None if content is None else np.asarray(content, np.float32), seen,
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
            if self.follower:  # an entity only the ranker made again: its business
                return
            log.warning("interaction %r names an unknown user or item; not applied", record["id"])
            return
        self.interactions[record["id"]] = (record["user_id"], pos)
        self.user_interactions.setdefault(record["user_id"], set()).add(record["id"])
        self.item_interactions.setdefault(pos, set()).add(record["id"])
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
        # the latest FOLD_LIMIT users: each interaction costs the same however many came before (not quadratic)
        others = [self.users[u].vector for u in self.item_events.get(pos, []) if u in self.users][-FOLD_LIMIT:]
        prior = self.item_priors[pos]
        self.index.update(pos, fold_in(prior, np.stack(others), self.positive_score, self.item_strength)
                          if others else prior)
        if len(others) < self.new_until:
            self.fresh.add(pos)
        else:
            self.fresh.discard(pos)

    def _fold_user(self, user_id: str) -> None:
        events = self.user_events.get(user_id, [])[-FOLD_LIMIT:]
        prior = self.user_priors[user_id]
        self.users[user_id].vector = fold_in(prior, self.index.vectors(np.asarray(events)), self.positive_score,
                                             self.user_strength) if events else prior.copy()

    def _forget_interactions(self, interactions: set[str], side: int) -> set:
        """Drop `interactions` (one entity's) from the store of them and from the other side's index; the
        other side's entities they touched (`side` 1: item positions, 0: user ids)."""
        touched = set()
        for interaction in interactions:
            entry = self.interactions.pop(interaction)
            self.digests.pop(("interaction", interaction), None)  # else it outlives the entity, one per interaction
            other = self.item_interactions if side == 1 else self.user_interactions
            other.get(entry[side], set()).discard(interaction)
            touched.add(entry[side])
        return touched

    def apply_compaction(self, record: dict) -> None:
        """The store dropped the deletion records older than the record's cutoff: forget their ids (a store read
        again never replays them); if this copy last read the store before then, it may have missed one of them
        and serve a deleted entity: it must be rebuilt from the store (`needs_rebuild`)."""
        cutoff = float(record["cutoff"])
        if self.synced_at is not None and self.synced_at < cutoff + records.MARGIN_S:
            self.needs_rebuild = True
        self.deletions = {i: at for i, at in self.deletions.items() if at >= cutoff}

    def apply_deletion(self, record: dict) -> None:
        """Take the entity out of every answer, and its interactions out of the vectors they moved."""
        if record["id"] in self.deletions:  # a replayed duplicate (the log is read again after an erasure)
            return
        self.deletions[record["id"]] = float(record.get("at", 0.0))
        kind, target = record.get("target"), record.get("target_id")
        self.digests.pop((kind, target), None)
        if kind == "user" and target in self.users:
            user = self.users.pop(target)
            self.registered_users -= user.registered
            self.user_priors.pop(target, None)
            self.user_events.pop(target, None)
            for pos in self._forget_interactions(self.user_interactions.pop(target, set()), side=1):
                if pos in self.item_events:
                    self.item_events[pos] = [u for u in self.item_events[pos] if u != target]
                    self._fold_item(pos)
        elif kind == "item" and target in self.item_pos:
            pos = self.item_pos.pop(target)
            self.deleted_items.add(pos)
            self.deleted_array = np.asarray(sorted(self.deleted_items), np.int64)
            self.registered_items -= pos >= len(self.warm_items)
            self.dead_rows += pos >= len(self.warm_items)  # a registered item's row: zeroed, a rebuild drops it
            self.titles[pos] = None
            for label in self.item_labels[pos]:
                self.labelled.get(label, set()).discard(pos)
            self.item_labels[pos] = []
            self.index.clear(pos)
            self.fresh.discard(pos)
            self.item_priors.pop(pos, None)
            self.item_events.pop(pos, None)
            for user_id in self._forget_interactions(self.item_interactions.pop(pos, set()), side=0):
                user = self.users.get(user_id)
                if user is not None:
                    user.seen = user.seen[user.seen != pos]
                if user_id in self.user_events:
                    self.user_events[user_id] = [p for p in self.user_events[user_id] if p != pos]
                    self._fold_user(user_id)

    def positions(self, ids: list[str], field_name: str) -> np.ndarray:
        unknown = [i for i in ids if i not in self.item_pos]
        if unknown:
            raise NotFound(field_name, f"unknown item id(s): {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))
        return np.asarray([self.item_pos[i] for i in ids], np.int64)
