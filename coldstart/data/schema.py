"""The canonical dataset: three tables, string ids, and the checks that guard them.

- `interactions`: user_id, item_id, optional rating, optional timestamp
- `items`: item_id plus any attribute and text columns
- `users` (optional): user_id plus attributes

Ids are strings at every boundary; contiguous integer indices exist only
inside models and the evaluator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart import artifacts
from coldstart.data.columns import clean_entity_table

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".csv")


class DataError(ValueError):
    """Bad input data. The message names the file, the column and an example value."""

    def __init__(self, message: str, *, file: str | Path | None = None, column: str | None = None,
                 value: object = None):
        parts = []
        if file is not None:
            parts.append(f"{file}")
        if column is not None:
            parts.append(f"column '{column}'")
        where = ", ".join(parts)
        text = f"{where}: {message}" if where else message
        if value is not None:
            example = repr(value)  # cut: a 10 MB field must not become a 10 MB message
            text += f" (example: {example if len(example) <= 200 else example[:200] + '...'})"
        super().__init__(text)
        self.file = str(file) if file is not None else None
        self.column = column
        self.value = value


def find_table(folder: str | Path, stem: str, *, required: bool = True) -> Path | None:
    """The file `stem.parquet` or `stem.csv` in `folder` (parquet wins)."""
    folder = Path(folder)
    for suffix in TABLE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if required:
        raise DataError(f"missing table '{stem}' (expected {stem}.parquet or {stem}.csv)", file=folder)
    return None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV file; any reader failure becomes a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(f"unsupported file type '{path.suffix}' (use .parquet or .csv)", file=path)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype_backend="numpy_nullable", keep_default_na=True,
                                encoding="utf-8", encoding_errors="strict")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the readers raise many types for a bad file (Arrow, OS,
        # parser, Unicode, and TypeError/KeyError from odd parquet metadata); each means "cannot read this file"
        raise DataError(f"cannot read table: {type(exc).__name__}: {exc}".strip(), file=path) from exc
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], *, file: str | Path) -> None:
    """The columns are present, each once (parquet allows a name twice; every check here assumes one)."""
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError(f"duplicate column name(s) {duplicated}", file=file, column=str(duplicated[0]))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(frame.columns)}", file=file,
                        column=missing[0])


# Floats hold every integer exactly only up to 2**53; beyond it distinct ids could collapse
# into one integer, so those stay as their (distinct) float text.
_EXACT_FLOAT_INT = 2 ** 53


def ids_as_strings(frame: pd.DataFrame, column: str, *, file: str | Path) -> pd.DataFrame:
    """Turn an id column into plain Python strings, rejecting nulls, blanks and non-scalar values."""
    col = frame[column]
    null = col.isna()
    if null.any():
        row = int(np.flatnonzero(null.to_numpy())[0])
        raise DataError(f"{int(null.sum())} null id(s), first at row {row}", file=file, column=column)
    if pd.api.types.is_bool_dtype(col):
        raise DataError("ids must be text or whole numbers, not true/false", file=file, column=column,
                        value=col.iloc[0])
    if col.dtype == object:
        odd = ~col.map(lambda v: isinstance(v, (str, int, float, np.integer, np.floating))
                       and not isinstance(v, bool))
        if odd.any():
            row = int(np.flatnonzero(odd.to_numpy())[0])
            raise DataError(f"{int(odd.sum())} id(s) that are not text or numbers "
                            f"({type(col.iloc[row]).__name__}), first at row {row}", file=file, column=column,
                            value=col.iloc[row])
    if pd.api.types.is_float_dtype(col) and (col % 1 == 0).all() and (col.abs() < _EXACT_FLOAT_INT).all():
        col = col.astype("int64")
    as_str = col.astype(str).str.strip()
    blank = as_str == ""
    if blank.any():
        row = int(np.flatnonzero(blank.to_numpy())[0])
        raise DataError(f"{int(blank.sum())} empty id(s), first at row {row}", file=file, column=column,
                        value=str(col.iloc[row]))
    frame = frame.copy()
    frame[column] = as_str.astype(object)
    return frame


@dataclass
class Dataset:
    """A validated dataset: every table checked, every id a string."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None

    def summary(self) -> dict:
        return {
            "name": self.name,
            "interactions": len(self.interactions),
            "users": int(self.interactions["user_id"].nunique()),
            "items": int(self.interactions["item_id"].nunique()),
            "item_rows": len(self.items),
            "user_rows": None if self.users is None else len(self.users),
        }


def validate(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None = None,
    *,
    name: str = "dataset",
    files: dict[str, str | Path] | None = None,
    drop_unknown: bool = False,
) -> Dataset:
    """Check the three tables and return a Dataset with string ids.

    Interactions that reference an item (or user, when a users table exists)
    missing from its table are an error, or are dropped with a logged count
    when `drop_unknown` is set. Item and user attribute columns are read by
    `coldstart.data.columns` (a year that is no number becomes missing, with a warning).
    """
    files = {"interactions": "interactions", "items": "items", "users": "users", **(files or {})}

    f = files["interactions"]
    require_columns(interactions, ["user_id", "item_id"], file=f)
    if interactions.empty:
        raise DataError("table is empty", file=f)
    interactions = ids_as_strings(interactions, "user_id", file=f)
    interactions = ids_as_strings(interactions, "item_id", file=f)
    for numeric in ("rating", "timestamp"):
        if numeric in interactions.columns:
            interactions = _numeric_column(interactions, numeric, file=f)

    f = files["items"]
    require_columns(items, ["item_id"], file=f)
    if items.empty:
        raise DataError("table is empty", file=f)
    items = ids_as_strings(items, "item_id", file=f)
    _no_duplicates(items, "item_id", file=f)
    items = clean_entity_table(items, "item_id", file=f)

    if users is not None:
        f = files["users"]
        require_columns(users, ["user_id"], file=f)
        if users.empty:
            raise DataError("table is empty", file=f)
        users = ids_as_strings(users, "user_id", file=f)
        _no_duplicates(users, "user_id", file=f)
        users = clean_entity_table(users, "user_id", file=f)

    known = {"item_id": (items, files["items"])}
    if users is not None:
        known["user_id"] = (users, files["users"])
    for column, (table, table_file) in known.items():
        unknown = ~interactions[column].isin(set(table[column]))
        if unknown.any():
            count = int(unknown.sum())
            example = interactions.loc[unknown, column].iloc[0]
            if not drop_unknown:
                raise DataError(
                    f"{count} interaction(s) reference ids absent from {table_file}; "
                    "pass --drop-unknown to drop them",
                    file=files["interactions"], column=column, value=example)
            log.warning("dropped %d interaction(s) whose %s is not in %s (example %r)",
                        count, column, table_file, example)
            interactions = interactions.loc[~unknown]
    if interactions.empty:
        raise DataError("no interactions left after dropping unknown ids", file=files["interactions"])
    return Dataset(name=name, interactions=interactions.reset_index(drop=True),
                   items=items.reset_index(drop=True),
                   users=None if users is None else users.reset_index(drop=True))


def _numeric_column(frame: pd.DataFrame, column: str, *, file: str | Path) -> pd.DataFrame:
    col = frame[column]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return frame
    converted = pd.to_numeric(col, errors="coerce")
    bad = converted.isna() & col.notna()
    if bad.any():
        raise DataError(f"{int(bad.sum())} non-numeric value(s)", file=file, column=column,
                        value=col[bad].iloc[0])
    frame = frame.copy()
    frame[column] = converted.astype("float64")
    return frame


def _no_duplicates(frame: pd.DataFrame, column: str, *, file: str | Path) -> None:
    dup = frame[column].duplicated()
    if dup.any():
        raise DataError(f"{int(dup.sum())} duplicate id(s)", file=file, column=column,
                        value=frame.loc[dup, column].iloc[0])


def save_dataset(ds: Dataset, folder: str | Path, *, meta: dict | None = None) -> Path:
    """Write the dataset as parquet plus `dataset.json`, atomically."""
    with artifacts.atomic_dir(folder) as tmp:
        ds.interactions.to_parquet(tmp / "interactions.parquet", index=False)
        ds.items.to_parquet(tmp / "items.parquet", index=False)
        if ds.users is not None:
            ds.users.to_parquet(tmp / "users.parquet", index=False)
        artifacts.write_json(tmp / "dataset.json", {**ds.summary(), **(meta or {})})
    return Path(folder)


def load_dataset(folder: str | Path, *, drop_unknown: bool = False, name: str | None = None) -> Dataset:
    """Load and validate a dataset folder in the canonical format (parquet or CSV)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("dataset folder not found", file=folder)
    paths = {"interactions": find_table(folder, "interactions"), "items": find_table(folder, "items"),
             "users": find_table(folder, "users", required=False)}
    tables = {k: (read_table(p) if p is not None else None) for k, p in paths.items()}
    return validate(tables["interactions"], tables["items"], tables["users"], name=name or folder.name,
                    files={k: str(p) for k, p in paths.items() if p is not None}, drop_unknown=drop_unknown)
