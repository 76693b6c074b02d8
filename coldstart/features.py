"""Attribute one-hot features for items and users, from whatever columns a table has.

Column handling, so that any user's table works without configuration:
- text containing '|' (e.g. genres): multi-hot over the values;
- a column named like a year: one-hot by decade;
- other numbers: one-hot by quantile bin;
- other text with few distinct values: one-hot;
- free text and near-unique columns (titles, zip codes): skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_CATEGORIES = 64


def attribute_matrix(table: pd.DataFrame, id_column: str, *, n_bins: int = 5) -> tuple[np.ndarray, list[str]]:
    """Rows aligned with `table`, L2-normalised; returns the matrix and the feature names."""
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for column in table.columns:
        if column == id_column:
            continue
        col = table[column]
        if col.isna().all():
            continue
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = pd.to_numeric(col, errors="coerce").astype("float64")
            if "year" in column.lower():
                labels = (values // 10 * 10).astype("Int64").astype(str)
            else:
                labels = pd.qcut(values, q=n_bins, duplicates="drop").astype(str)
            labels = labels.where(values.notna(), None)
            block, feats = _one_hot(labels)
        else:
            text = col.astype("string")
            if text.str.contains("|", regex=False).any():
                block, feats = _multi_hot(text)
            else:
                n_unique = text.nunique(dropna=True)
                if n_unique > MAX_CATEGORIES or n_unique > 0.5 * len(text):
                    continue
                block, feats = _one_hot(text)
        blocks.append(block)
        names.extend(f"{column}={f}" for f in feats)
    if not blocks:
        return np.zeros((len(table), 0), dtype=np.float32), []
    matrix = np.concatenate(blocks, axis=1).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0), names


def _one_hot(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    cats = sorted(v for v in pd.unique(labels.dropna()) if v not in ("", "<NA>", "nan"))
    index = {c: i for i, c in enumerate(cats)}
    out = np.zeros((len(labels), len(cats)), dtype=np.float32)
    for row, value in enumerate(labels):
        j = index.get(value)
        if j is not None:
            out[row, j] = 1.0
    return out, [str(c) for c in cats]


def _multi_hot(text: pd.Series) -> tuple[np.ndarray, list[str]]:
    parts = text.fillna("").str.split("|")
    cats = sorted({p.strip() for row in parts for p in row if p.strip()})
    index = {c: i for i, c in enumerate(cats)}
    out = np.zeros((len(text), len(cats)), dtype=np.float32)
    for row, values in enumerate(parts):
        for v in values:
            j = index.get(v.strip())
            if j is not None:
                out[row, j] = 1.0
    return out, cats
