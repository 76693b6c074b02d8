"""Import a user's own data (parquet or CSV) into the canonical format.

The source folder holds `interactions`, `items` and optionally `users` tables
(.parquet or .csv). Their column names map to ours through a small YAML file:

    interactions: {user_id: uid, item_id: movie, rating: stars, timestamp: ts}
    items: {item_id: movie}
    users: {user_id: uid}

or through CLI flags for the id columns. Other columns keep their names.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coldstart.data.schema import DataError, Dataset, find_table, read_table, save_dataset, validate

CANONICAL = {
    "interactions": ("user_id", "item_id", "rating", "timestamp"),
    "items": ("item_id",),
    "users": ("user_id",),
}


class ColumnMapping(BaseModel):
    """Our column name -> the source's, per table."""

    model_config = ConfigDict(extra="forbid")
    interactions: dict[str, str] = Field(default_factory=dict, description="Columns of the interactions table.")
    items: dict[str, str] = Field(default_factory=dict, description="Columns of the items table.")
    users: dict[str, str] = Field(default_factory=dict, description="Columns of the users table.")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ColumnMapping":
        path = Path(path)
        if not path.is_file():
            raise DataError("mapping file not found", file=path)
        try:
            return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
            raise DataError(f"invalid column mapping: {exc}", file=path) from exc


def _rename(frame, mapping: dict[str, str], table: str, file: Path):
    unknown = [ours for ours in mapping if ours not in CANONICAL[table]]
    if unknown:
        raise DataError(f"mapping names unknown target column(s) {unknown}; "
                        f"map onto {list(CANONICAL[table])}", file=file)
    sources = list(mapping.values())
    twice = sorted({src for src in sources if sources.count(src) > 1})
    if twice:
        raise DataError(f"source column(s) {twice} mapped onto more than one of our columns", file=file,
                        column=twice[0])
    missing = [src for src in mapping.values() if src not in frame.columns]
    if missing:
        raise DataError(f"mapped column(s) {missing} not found; found {list(frame.columns)}", file=file,
                        column=missing[0])
    renamed = frame.rename(columns={src: ours for ours, src in mapping.items()})
    clash = renamed.columns[renamed.columns.duplicated()].tolist()
    if clash:  # e.g. mapping user_id to `uid` while the file also has a `user_id` column
        raise DataError(f"after mapping, column(s) {clash} occur twice; drop or rename the original", file=file,
                        column=str(clash[0]))
    return renamed


def import_dataset(source: str | Path, out: str | Path, *, mapping: ColumnMapping | None = None,
                   name: str | None = None, drop_unknown: bool = False) -> Dataset:
    """Read, map, validate and write a dataset; nothing is written unless all checks pass."""
    source = Path(source)
    if not source.is_dir():
        raise DataError("source folder not found", file=source)
    mapping = mapping or ColumnMapping()
    paths = {"interactions": find_table(source, "interactions"), "items": find_table(source, "items"),
             "users": find_table(source, "users", required=False)}
    tables = {}
    for table, path in paths.items():
        if path is None:
            tables[table] = None
            continue
        tables[table] = _rename(read_table(path), getattr(mapping, table), table, path)
    ds = validate(tables["interactions"], tables["items"], tables["users"], name=name or source.name,
                  files={k: str(p) for k, p in paths.items() if p is not None}, drop_unknown=drop_unknown)
    save_dataset(ds, out, meta={"source": str(source)})
    return ds
