"""A model given as precomputed vectors: `users.parquet` and `items.parquet` (id, vector).

Score = dot product. Embeddings made by any other system are evaluated on
exactly our code path. Defined answers: an item with no vector is never
recommended; a user with no vector scores every item 0, so ties fall back to
item order (both counted in the log).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart import artifacts
from coldstart.data.schema import DataError, find_table, ids_as_strings, read_table, require_columns
from coldstart.evaluate import SplitData

log = logging.getLogger(__name__)


def read_vectors(path: Path, id_column: str) -> tuple[pd.Index, np.ndarray]:
    frame = read_table(path)
    require_columns(frame, [id_column, "vector"], file=path)
    frame = ids_as_strings(frame, id_column, file=path)
    dup = frame[id_column].duplicated()
    if dup.any():
        raise DataError("duplicate id(s)", file=path, column=id_column, value=frame.loc[dup, id_column].iloc[0])
    try:
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])
    except (ValueError, TypeError) as exc:
        raise DataError(f"vectors must be equal-length lists of numbers: {exc}", file=path,
                        column="vector") from exc
    if matrix.ndim != 2:
        raise DataError("vectors must be one-dimensional lists", file=path, column="vector")
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(1))[0])
        raise DataError("non-finite value in a vector", file=path, column="vector", value=frame[id_column].iloc[bad])
    return pd.Index(frame[id_column], dtype=object), matrix


def write_vectors(path: str | Path, id_column: str, ids, matrix: np.ndarray) -> Path:
    frame = pd.DataFrame({id_column: [str(i) for i in ids], "vector": list(np.asarray(matrix, np.float32))})
    return artifacts.write_parquet(path, frame)


class VectorsRecommender:
    def __init__(self, data: SplitData, folder: str | Path, name: str | None = None):
        folder = Path(folder)
        self.name = name or folder.name
        user_ids, users = read_vectors(find_table(folder, "users"), "user_id")
        item_ids, items = read_vectors(find_table(folder, "items"), "item_id")
        if users.shape[1] != items.shape[1]:
            raise DataError(f"user vectors have dimension {users.shape[1]} but item vectors {items.shape[1]}",
                            file=folder)
        dim = users.shape[1]
        self.user_vectors = np.zeros((data.n_users, dim), np.float32)
        self.item_vectors = np.zeros((data.n_items, dim), np.float32)
        u_pos = user_ids.get_indexer(data.user_ids)
        i_pos = item_ids.get_indexer(data.item_ids)
        self.user_vectors[u_pos >= 0] = users[u_pos[u_pos >= 0]]
        self.item_vectors[i_pos >= 0] = items[i_pos[i_pos >= 0]]
        self.missing_items = i_pos < 0
        if self.missing_items.any():
            log.warning("%s: %d item(s) have no vector and are never recommended", self.name,
                        int(self.missing_items.sum()))
        if (u_pos < 0).any():
            log.warning("%s: %d user(s) have no vector and score every item 0", self.name, int((u_pos < 0).sum()))

    def score(self, users: np.ndarray) -> np.ndarray:
        out = self.user_vectors[users] @ self.item_vectors.T
        out[:, self.missing_items] = -np.inf
        return out
