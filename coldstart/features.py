"""Attribute one-hot features for items and users, fitted on one table and applied to new rows.

Column handling, so that any user's table works without configuration (values
first read as `coldstart.data.columns` reads them, for tables and serving rows alike):
- text containing '|' (e.g. genres): multi-hot over the values;
- a column named like a year: one-hot by decade;
- other numbers: one-hot by quantile bin;
- other text with few distinct values: one-hot;
- free text and near-unique columns (titles, zip codes): skipped.

Column roles (`coldstart.data.columns.ColumnRoles`, what the user said of their
columns) come first: the title and free-text columns are skipped, categorical
ones are one-hot whatever their number of values (the most frequent
`MAX_FORCED_CATEGORIES`), and list columns split on their own separator. The
roles are kept in the fitted JSON, so serving reads a new row as training did.

The fitted vocabulary is plain JSON, so a serving process encodes a new
item's attributes exactly as training did; unseen values get no bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from coldstart.data.columns import DEFAULT_ROLES, ColumnRoles, clean_entity_table, is_missing, is_year_column

MAX_CATEGORIES = 64
MAX_FORCED_CATEGORIES = 1024


@dataclass
class AttributeEncoder:
    id_column: str
    columns: list[dict] = field(default_factory=list)  # {"name", "kind", "values" | "edges"}
    roles: ColumnRoles = DEFAULT_ROLES

    @classmethod
    def fit(cls, table: pd.DataFrame, id_column: str, n_bins: int = 5,
            roles: ColumnRoles = DEFAULT_ROLES) -> "AttributeEncoder":
        enc = cls(id_column, roles=roles)
        table = clean_entity_table(table, id_column, roles=roles)  # the loaders' reading, and the user's roles
        for column in table.columns:
            if column == id_column or column in roles.text or column == roles.title:
                continue
            col = table[column]
            if col.isna().all():
                continue
            if column in roles.categorical:
                counts = col.dropna().astype(str).value_counts()
                enc.columns.append({"name": column, "kind": "one",
                                    "values": sorted(counts.index[:MAX_FORCED_CATEGORIES])})
            elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                values = pd.to_numeric(col, errors="coerce").astype("float64").dropna()
                if is_year_column(column):
                    decades = sorted({int(v // 10 * 10) for v in values})
                    enc.columns.append({"name": column, "kind": "decade", "values": decades})
                else:
                    edges = sorted(set(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]).tolist()))
                    enc.columns.append({"name": column, "kind": "bins", "edges": edges})
            else:
                text = col.dropna().astype(str)
                if text.str.contains("|", regex=False).any():
                    values = sorted({p.strip() for row in text for p in row.split("|") if p.strip()})
                    enc.columns.append({"name": column, "kind": "multi", "values": values})
                else:
                    n_unique = text.nunique()
                    if n_unique > MAX_CATEGORIES or n_unique > 0.5 * len(col):
                        continue
                    enc.columns.append({"name": column, "kind": "one", "values": sorted(text.unique())})
        return enc

    @property
    def names(self) -> list[str]:
        out = []
        for c in self.columns:
            labels = c["values"] if c["kind"] != "bins" else [f"bin{i}" for i in range(len(c["edges"]) + 1)]
            out += [f"{c['name']}={v}" for v in labels]
        return out

    @property
    def dim(self) -> int:
        return len(self.names)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Rows aligned with `table`, L2-normalised; absent columns and unseen values give zeros."""
        # A serving row's year "1995" and genres "Action; Drama" read as the training table's did.
        table = clean_entity_table(table, self.id_column, roles=self.roles)
        blocks = []
        for c in self.columns:
            col = table[c["name"]] if c["name"] in table.columns else pd.Series([None] * len(table))
            if c["kind"] == "bins":
                block = np.zeros((len(table), len(c["edges"]) + 1), np.float32)
                values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                ok = ~np.isnan(values)
                block[np.flatnonzero(ok), np.searchsorted(c["edges"], values[ok], side="right")] = 1.0
            else:
                index = {v: i for i, v in enumerate(c["values"])}
                block = np.zeros((len(table), len(index)), np.float32)
                for row, value in enumerate(col):
                    if is_missing(value):
                        continue
                    if c["kind"] == "decade":
                        keys = [int(float(value) // 10 * 10)]
                    elif c["kind"] == "multi":
                        keys = [p.strip() for p in str(value).split("|")]
                    else:
                        keys = [str(value)]  # astype(str) in `fit`: a categorical number reads as its text
                    for key in keys:
                        j = index.get(key)
                        if j is not None:
                            block[row, j] = 1.0
            blocks.append(block)
        if not blocks:
            return np.zeros((len(table), 0), np.float32)
        matrix = np.concatenate(blocks, axis=1)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms > 0, norms, 1.0)

    def labels(self, table: pd.DataFrame) -> list[list[str]]:
        """Per row, its encoded values as a person reads them ("genres: Drama", "year: 1990s", "age: 25-34"),
        the values `transform` sets a bit for."""
        matrix = self.transform(table)
        names = []
        for c in self.columns:
            if c["kind"] == "bins":
                bounds = [None, *c["edges"], None]
                names += [f"{c['name']}: " + (f"under {hi:g}" if lo is None else f"{lo:g} and over" if hi is None
                                              else f"{lo:g}-{hi:g}") for lo, hi in zip(bounds[:-1], bounds[1:])]
            elif c["kind"] == "decade":
                names += [f"{c['name']}: {v}s" for v in c["values"]]
            else:
                names += [f"{c['name']}: {v}" for v in c["values"]]
        return [[names[j] for j in np.flatnonzero(row)] for row in matrix]

    def to_json(self) -> dict:
        return {"id_column": self.id_column, "columns": self.columns, "roles": self.roles.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "AttributeEncoder":
        return cls(data["id_column"], data["columns"], ColumnRoles.from_json(data.get("roles")))


def attribute_matrix(table: pd.DataFrame, id_column: str, *, n_bins: int = 5,
                     roles: ColumnRoles = DEFAULT_ROLES) -> tuple[np.ndarray, list[str]]:
    """Fit on `table` and encode it: the matrix and the feature names."""
    enc = AttributeEncoder.fit(table, id_column, n_bins, roles)
    return enc.transform(table), enc.names
