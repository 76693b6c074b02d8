"""A faiss inner-product index over every item's collaborative vector, growing as items register.

Positions are faiss ids: the n-th vector added is item n. Exclusion (a user's
seen items) and an allow-list (a candidate filter) are faiss ID selectors, so
one exact search answers both, however many items are excluded.

With `text_dim`, each row also carries the item's LLM text vector after its
collaborative one, so one search can rank by `q . v + w * t_q . t`: the
collaborative score plus a weighted match of a stated interest to the item's
text. A query without text leaves that part zero and ranks as before.
"""

from __future__ import annotations

import faiss
import numpy as np


class ItemIndex:
    def __init__(self, dim: int, text_dim: int = 0):
        self.dim, self.text_dim = dim, text_dim
        self.index = faiss.IndexFlatIP(dim + text_dim)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """Append rows (and their text vectors, zeros if none); returns their positions."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        if self.text_dim:
            text = np.zeros((len(vectors), self.text_dim), np.float32) if text is None \
                else np.asarray(text, np.float32).reshape(len(vectors), self.text_dim)
            vectors = np.concatenate([vectors, text], axis=1)
        vectors = np.ascontiguousarray(vectors)
        if not np.isfinite(vectors).all():
            raise ValueError("item vectors must be finite")
        start = len(self)
        self.index.add(vectors)
        return np.arange(start, start + len(vectors))

    def update(self, position: int, vector: np.ndarray) -> None:
        """Replace the collaborative vector at `position` in place (its text vector stays)."""
        vector = np.asarray(vector, np.float32).reshape(self.dim)
        if not np.isfinite(vector).all():
            raise ValueError("item vectors must be finite")
        self._rows()[int(position), :self.dim] = vector

    def clear(self, position: int) -> None:
        """Zero the row at `position` (a deleted item: its vectors leave memory; searches exclude it)."""
        self._rows()[int(position)] = 0.0

    def _rows(self) -> np.ndarray:
        """The index's rows, a writable view of faiss' own memory (collaborative | text)."""
        rows = faiss.rev_swig_ptr(self.index.get_xb(), len(self) * (self.dim + self.text_dim))
        return rows.reshape(len(self), self.dim + self.text_dim)

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """The collaborative vectors at `positions`."""
        positions = np.asarray(positions, np.int64)
        return np.stack([self.index.reconstruct(int(p))[:self.dim] for p in positions]) if len(positions) \
            else np.zeros((0, self.dim), np.float32)

    def text_vector(self, position: int) -> np.ndarray:
        """The text vector at `position` (zeros without one)."""
        return self.index.reconstruct(int(position))[self.dim:] if self.text_dim else np.zeros(0, np.float32)

    def search(self, query: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
               allowed: np.ndarray | None = None, text: np.ndarray | None = None,
               text_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the k best items by `query . v + text_weight * text . t`, best first;
        fewer if fewer qualify."""
        query = np.asarray(query, np.float32).reshape(1, self.dim)
        if self.text_dim:
            stated = np.zeros((1, self.text_dim), np.float32) if text is None \
                else text_weight * np.asarray(text, np.float32).reshape(1, self.text_dim)
            query = np.concatenate([query, stated], axis=1)
        query = np.ascontiguousarray(query)
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
