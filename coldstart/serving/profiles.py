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
        if state.warm_rows is None:  # (user row of each training interaction, its item position, users' vectors)
            warm = [u for u in state.users.values() if u.warm and len(u.seen)]
            rows = np.repeat(np.arange(len(warm)), [len(u.seen) for u in warm])
            seen = np.concatenate([u.seen for u in warm]) if warm else np.zeros(0, np.int64)
            state.warm_rows = rows, seen, np.stack([u.vector for u in warm]) if warm else None
        rows, seen, vectors = state.warm_rows
        carries = np.zeros(len(state.item_ids), bool)
        carries[list(set().union(*(state.labelled.get(label, set()) for label in labels)))] = True
        totals = np.bincount(rows, minlength=0 if vectors is None else len(vectors))
        shares = np.bincount(rows, weights=carries[seen], minlength=len(totals)) / np.maximum(totals, 1)
        weights = np.maximum(shares - carries[seen].mean(), 0.0) ** 2 if len(seen) else shares
        state.tastes[key] = None if not weights.sum() else \
            (weights @ vectors / weights.sum()).astype(np.float32)
    return state.tastes[key]


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
    generated vector, the mean of liked items' vectors, the taste of users who favour what they named."""
    parts = []
    if content_vector is not None:
        parts.append(np.asarray(content_vector, np.float32))
    if len(liked):
        parts.append(state.index.vectors(liked).mean(axis=0))
    taste = users_taste(state, stated) if stated else None
    if taste is not None:
        parts.append(taste)
    if not parts:
        raise Invalid("profile", "nothing to recommend from: give attributes, text or liked items")
    if len(parts) == 1 and content_vector is not None:
        return parts[0]
    # Users' and items' vectors differ in scale: put each part on the typical warm user's norm first.
    scaled = [p / max(float(np.linalg.norm(p)), 1e-12) * state.user_norm for p in parts]
    return np.mean(scaled, axis=0).astype(np.float32)
