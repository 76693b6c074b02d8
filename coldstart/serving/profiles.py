"""What a new user's words say beyond their vector: the items and attribute values their text names, the taste of
users who favour what they named, their vector made of all they give, and the scale that puts a stated
interest's text match beside the collaborative score (over a `ServingState`)."""

from __future__ import annotations

import numpy as np

from coldstart.serving.errors import Invalid


def users_taste(state, labels: tuple[str, ...]) -> np.ndarray | None:
    """What users who favour the items carrying `labels` have in common: the mean of warm users' vectors, each
    weighted by the square of how far their share of those items exceeds those items' share of all training
    interactions, so the strongest fans lead; None if no user's does. Computed once per set of labels, over the
    training interactions. Squared rather than linear weights lifted a stated genre's held-out NDCG on val and
    test on each of four user-cold seeds (benchmarks/RESULTS.md, stated interest)."""
    key = tuple(sorted(labels))
    if key not in state.tastes:
        rows, seen, vectors = warm_interactions(state)
        carries = carriers(state, labels)
        totals = np.bincount(rows, minlength=0 if vectors is None else len(vectors))
        shares = np.bincount(rows, weights=carries[seen], minlength=len(totals)) / np.maximum(totals, 1)
        weights = np.maximum(shares - carries[seen].mean(), 0.0) ** 2 if len(seen) else shares
        state.tastes[key] = None if not weights.sum() else \
            (weights @ vectors / weights.sum()).astype(np.float32)
    return state.tastes[key]


def carriers(state, labels: tuple[str, ...]) -> np.ndarray:
    """Which items (by position) carry any of `labels`: a mask; `mask[seen].mean()` over the training
    interactions is those items' share of them."""
    carries = np.zeros(len(state.item_ids), bool)
    carries[list(set().union(*(state.labelled.get(label, set()) for label in labels)))] = True
    return carries


def warm_interactions(state) -> tuple:
    """(the warm user row of each training interaction, its item position, the warm users' vectors), made once
    per state."""
    if state.warm_rows is None:
        warm = [u for u in state.users.values() if u.warm and len(u.seen)]
        rows = np.repeat(np.arange(len(warm)), [len(u.seen) for u in warm])
        seen = np.concatenate([u.seen for u in warm]) if warm else np.zeros(0, np.int64)
        state.warm_rows = rows, seen, np.stack([u.vector for u in warm]) if warm else None
    return state.warm_rows


def design(generated: np.ndarray, taste: np.ndarray) -> np.ndarray:
    """The row of a stated interest's map (`coldstart.serving.statements`): [unit generated vector | unit
    taste | 1]."""
    unit = [np.asarray(v, np.float64) / max(float(np.linalg.norm(v)), 1e-12) for v in (generated, taste)]
    return np.concatenate([*unit, [1.0]])


def column_of(label: str) -> str:
    """The attribute column of a value as `state.labelled` names it ("genres: Drama" -> "genres")."""
    return label.split(":", 1)[0]


def for_labels(maps: dict[str, np.ndarray] | None, labels: tuple[str, ...]) -> np.ndarray | None:
    """The map that places a user who named `labels`: their column's, when they all come from one column
    that has a map; None otherwise (the mean of the generated vector and the taste)."""
    columns = {column_of(label) for label in labels}
    return maps.get(columns.pop()) if maps and len(columns) == 1 else None


def spread_ratio(item_vectors: np.ndarray, item_text: np.ndarray | None, user_vectors: list[np.ndarray],
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


def named_items(state, text: str) -> list[str]:
    """Ids of the items `text` names by title ("I loved Fargo"), deleted ones left out (`TitleMatcher`)."""
    return [state.item_ids[p] for p in state.title_index.find(text or "") if p not in state.deleted_items]


def named_values(state, text: str) -> tuple[str, ...]:
    """The attribute values `text` names ("Mostly horror films" names "genres: Horror"), outside the titles
    it names, and carried by some item."""
    spans = [span for span in state.title_index.spans(text or "") if span[2] not in state.deleted_items]
    return tuple(label for label in state.label_index.find(text or "", spans) if state.labelled.get(label))


def with_named(state, text: str, liked: list[str], text_vector):
    """(`liked` with the items `text` names added, the text vector or None, the ids added, the attribute
    values `text` names): named items count as liked, named values get their share of the slots
    (`stated_share`), and where it names either the text is not matched to items' texts."""
    named = named_items(state, text)
    stated = named_values(state, text)
    added = [i for i in named if i not in liked]
    return list(liked) + added, (None if named or stated else text_vector), added, stated


def profile_query(state, content_vector: np.ndarray | None, liked: np.ndarray,
                  stated: tuple[str, ...] = ()) -> np.ndarray:
    """A new user's vector: the mean of what they give, each part on a warm user's typical norm: the
    generated vector, the mean of liked items' vectors, the taste of users who favour what they named. With a
    stated interest's map (`state.stated_map`, `coldstart.serving.statements`), the generated vector and the
    taste are one part, the map's placement of the two."""
    parts = []
    taste = users_taste(state, stated) if stated else None
    placed = content_vector is not None  # a vector placed in the collaborative space comes first, as it is
    weights = for_labels(state.stated_map, stated) if taste is not None else None
    if content_vector is not None and weights is not None:
        parts.append((design(content_vector, taste) @ weights * state.user_norm).astype(np.float32))
        taste = None
    elif content_vector is not None:
        parts.append(np.asarray(content_vector, np.float32))
    if len(liked):
        parts.append(state.index.vectors(liked).mean(axis=0))
    if taste is not None:
        parts.append(taste)
    if not parts:
        raise Invalid("profile", "nothing to recommend from: give attributes, text or liked items")
    if len(parts) == 1 and placed:
        return parts[0]
    # Users' and items' vectors differ in scale: put each part on the typical warm user's norm first.
    scaled = [p / max(float(np.linalg.norm(p)), 1e-12) * state.user_norm for p in parts]
    return np.mean(scaled, axis=0).astype(np.float32)
