"""A faiss inner-product index over every item's collaborative vector, growing as items register.

Positions are faiss ids: the n-th vector added is item n. Exclusion (a user's
seen items) and an allow-list (a candidate filter) are faiss ID selectors, so
one exact search answers both, however many items are excluded.
"""

from __future__ import annotations

import faiss
import numpy as np


class ItemIndex:
    def __init__(self, dim: int):
        self.dim = dim
        self.index = faiss.IndexFlatIP(dim)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append rows; returns their positions."""
        vectors = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        if not np.isfinite(vectors).all():
            raise ValueError("item vectors must be finite")
        start = len(self)
        self.index.add(vectors)
        return np.arange(start, start + len(vectors))

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, np.int64)
        return np.stack([self.index.reconstruct(int(p)) for p in positions]) if len(positions) \
            else np.zeros((0, self.dim), np.float32)

    def search(self, query: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the k best items by inner product, best first; fewer if fewer qualify."""
        query = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, self.dim))
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # faiss does not keep Python references to nested selectors: hold them here until the search ends.
        keep = []
        selector = None
        if exclude is not None and len(exclude):
            keep.append(faiss.IDSelectorBatch(np.asarray(exclude, np.int64)))
            selector = faiss.IDSelectorNot(keep[-1])
            keep.append(selector)
        if allowed is not None:
            keep.append(faiss.IDSelectorBatch(np.asarray(allowed, np.int64)))
            selector = keep[-1] if selector is None else faiss.IDSelectorAnd(keep[-1], selector)
            keep.append(selector)
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, positions = self.index.search(query, k, params=params)
        found = positions[0] >= 0
        return positions[0][found], scores[0][found]
