"""Queries over the serving state: a user's or a profile's list, explained on request, and item facts.

Lists come from one exact faiss search (`ServingState.index`), with the slots
kept for new items (`new_slots`, learnt on validation: `coldstart.serving.slots`)
and for the items that carry an attribute value the user named (`stated_share` of the first
`STATED_HEAD` slots). `Queries` only reads the
state, under its lock; `Catalogue` catches up with the store before each call.
"""

from __future__ import annotations

import numpy as np

from coldstart.serving.errors import NotFound
from coldstart.serving.slots import Slots, interleave
from coldstart.serving.profiles import profile_query, with_named
from coldstart.serving.state import ServingState


# The stated slots are in the first 10 of every 20: what a user sees first honours what they said, and the
# rest of the list goes back to the ranking. Over all 20, held-out NDCG fell to 0.810x popularity at share 0.7
# (a genre stated out of proportion); in the first 10 alone, 0.958x at the same precision@10
# (benchmarks/stated_interest_users.py, RESULTS).
STATED_HEAD = 10


class Queries:
    def __init__(self, state: ServingState):
        self.state = state

    def _rank(self, query: np.ndarray, k: int, exclude: np.ndarray | None, candidates: list[str] | None,
              text: np.ndarray | None = None, history: np.ndarray | None = None,
              stated: tuple[str, ...] = ()) -> list[dict]:
        """The top k; with `history` (the user's item positions), each item explained from it; with `stated`
        (attribute values the user named), `stated_share` of the slots for the items that carry one."""
        allowed = None if candidates is None else self.state.positions(candidates, "candidates")
        if self.state.deleted_items:  # kept sorted as deletions are applied, not rebuilt here
            deleted = self.state.deleted_array
            exclude = deleted if exclude is None else np.concatenate([np.asarray(exclude, np.int64), deleted])
        positions, scores = self._mixed(query, k, exclude, allowed, text)
        if stated and self.state.stated_share > 0:
            carriers = np.fromiter(set().union(*(self.state.labelled.get(label, set()) for label in stated)), np.int64)
            if allowed is not None:
                carriers = np.intersect1d(carriers, allowed)
            named = self._mixed(query, k, exclude, carriers, None)
            order = interleave(list(zip(positions, scores)), list(zip(*named)), k,
                               Slots.head(self.state.stated_share, STATED_HEAD), distinct=lambda pair: pair[0])
            positions = np.asarray([p for p, _ in order], np.int64)
            scores = np.asarray([s for _, s in order], np.float32)
        items = [{"item_id": self.state.item_ids[p], "title": self.state.titles[p], "score": float(s), "cold": self.state.item_cold[p]}
                 for p, s in zip(positions, scores)]
        if history is not None:
            history = np.asarray([h for h in history if h not in self.state.deleted_items], np.int64)
            theirs = self.state.index.vectors(history)
            theirs = theirs / np.maximum(np.linalg.norm(theirs, axis=1, keepdims=True), 1e-12)
            counts: dict[str, int] = {}
            for h in history:
                for label in self.state.item_labels[h]:
                    counts[label] = counts.get(label, 0) + 1
            for item, p in zip(items, positions):
                item["explanation"] = self._explain(int(p), history, theirs, counts, text)
                item["explanation"]["stated"] = [label for label in stated if label in self.state.item_labels[int(p)]]
        return items

    def _mixed(self, query: np.ndarray, k: int, exclude: np.ndarray | None, allowed: np.ndarray | None,
               text: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The top k, with the `new_slots` kept for new items (the best of them, `interleave`)."""
        if not self.state.new_slots or not self.state.fresh:
            return self._search(query, k, exclude, allowed, text)
        fresh = np.fromiter(self.state.fresh, np.int64, len(self.state.fresh))
        old = self._search(query, k, fresh if exclude is None else np.concatenate([exclude, fresh]), allowed, text)
        new = self._search(query, k, exclude, fresh if allowed is None else np.intersect1d(fresh, allowed), text)
        order = interleave([("old", i) for i in range(len(old[0]))], [("new", i) for i in range(len(new[0]))], k,
                           self.state.new_slots)
        lists = {"old": old, "new": new}
        return (np.asarray([lists[side][0][i] for side, i in order], np.int64),
                np.asarray([lists[side][1][i] for side, i in order], np.float32))

    def _search(self, query: np.ndarray, k: int, exclude: np.ndarray | None, allowed: np.ndarray | None,
                text: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return self.state.index.search(query, k, exclude=exclude, allowed=allowed, text=text, text_weight=self.state.text_scale)

    def _explain(self, pos: int, history: np.ndarray, theirs: np.ndarray, counts: dict[str, int],
                 text: np.ndarray | None, because: int = 3, shared: int = 5) -> dict:
        """Why item `pos`: the user's items (`history`, their unit collaborative vectors `theirs`, their attribute
        values' `counts`) closest to it by cosine, the attribute values it shares with them, how well it matches
        what the user said, and where its vector came from."""
        closest = []
        if len(history):
            mine = self.state.index.vectors([pos])[0]
            cosine = theirs @ (mine / max(float(np.linalg.norm(mine)), 1e-12))
            for j in np.argsort(-cosine)[:because]:
                h = int(history[j])
                closest.append({"item_id": self.state.item_ids[h], "title": self.state.titles[h],
                                "similarity": round(float(cosine[j]), 4)})
        common = sorted((label for label in self.state.item_labels[pos] if label in counts), key=lambda x: -counts[x])
        explanation = {"because": closest,
                       "shared_attributes": [{"attribute": label, "your_items": counts[label]}
                                             for label in common[:shared]],
                       "vector": self._vector_source(pos), "text_match": None}
        if text is not None:
            stated = self.state.item_text[pos] if self.state.item_text is not None and pos < len(self.state.item_text) \
                else self.state.index.text_vector(pos)  # a registered item's text vector is in its index row
            explanation["text_match"] = round(float(np.dot(stated, text)), 4)
        return explanation

    def _vector_source(self, pos: int) -> dict:
        """Trained items: their training interactions. Cold and registered ones: their content, and from their
        first interaction on both, the content counting as `prior_weight` interactions (fold-in's ridge)."""
        if not self.state.item_cold[pos]:
            return {"source": "interactions", "content_weight": 0.0, "interactions": None}
        n = len(self.state.item_events.get(pos, []))
        weight = self.state.prior_weight / (self.state.prior_weight + n)
        return {"source": "content" if n == 0 else "content+interactions", "content_weight": round(weight, 4),
                "interactions": n}

    def recommend_user(self, user_id: str, k: int, exclude_seen: bool = True,
                       candidates: list[str] | None = None, explain: bool = False) -> dict:
        with self.state.lock:
            user = self.state.users.get(user_id)
            if user is None:
                raise NotFound("user_id", f"unknown user {user_id!r}")
            items = self._rank(user.vector, k, user.seen if exclude_seen else None, candidates, user.text,
                               history=user.seen if explain else None, stated=user.stated)
            return {"user_id": user_id, "path": "warm" if user.warm else "cold", "items": items,
                    "stated": list(user.stated)}

    def recommend_profile(self, content_vector: np.ndarray | None, liked: list[str], k: int,
                          exclude_seen: bool = True, candidates: list[str] | None = None,
                          text_vector: np.ndarray | None = None, explain: bool = False, said: str = "") -> dict:
        """`text_vector`: the LLM vector of the profile's free text, a stated interest matched to items' text;
        `said`: that text. Items it names by title count as liked (the answer's `named`), and then its words are
        not matched to items' texts: that match ranks the named films' namesakes and sequels, and the named
        films already say what the user likes (`benchmarks/stated_interest_users.py`)."""
        # what the text names is read outside the lock: the matchers' indexes are safe to read while they grow
        liked, text_vector, named, stated = with_named(self.state, said, liked, text_vector)
        with self.state.lock:
            liked_positions = self.state.positions(liked, "profile.liked")
            query = profile_query(self.state, content_vector, liked_positions, stated)
            items = self._rank(query, k, liked_positions if exclude_seen else None, candidates, text_vector,
                               history=liked_positions if explain else None, stated=stated)
            return {"user_id": None, "path": "cold", "items": items, "named": named, "stated": list(stated)}

    def item_info(self, item_id: str) -> dict:
        with self.state.lock:
            pos = self.state.item_pos.get(item_id)
            if pos is None:
                raise NotFound("item_id", f"unknown item {item_id!r}")
            return {"item_id": item_id, "title": self.state.titles[pos], "cold": self.state.item_cold[pos],
                    "registered": pos >= len(self.state.warm_items)}

    def has_item(self, item_id: str) -> bool:
        return item_id in self.state.item_pos

    def stats(self) -> dict:
        return {"items": len(self.state.index) - len(self.state.deleted_items), "users": len(self.state.users),
                "registered_items": self.state.registered_items, "registered_users": self.state.registered_users,
                "interactions": len(self.state.interactions), "deleted": len(self.state.deletions), "stale_records": self.state.stale}

