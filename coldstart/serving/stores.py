"""What a registration store is, and which one a `--store` names.

A store keeps registered items and users as an ordered list of JSON records.
`Catalogue` needs only this:

- `read_new()`: the records appended since this object last read, in order
  (every record, the first time); `read_new(chunk=True)`: the next chunk of them,
  so a replica starting over a long store never holds all of it at once.
- `writing()`: a context manager that excludes every other writer, in this
  process and in others (other ranker replicas, on other machines too). The
  writer it yields has `read_new()` (catch up, under the lock) and
  `append(record)`, which returns only once the record is durable. A writer must
  have read every record before it appends, so a check it made (is this id
  taken?) saw all of them. `writer.delete(record)` appends a deletion record and
  removes, for good and in the same step, every earlier record about its entity
  (`records.erased`): a deleted user's registration, text and interactions leave
  the store, the deletion record (kind and id only) stays, so every replica and
  every restart applies it. `rewind()`: the next `read_new()` returns every record
  again (a replica rebuilding its state).
- Compaction: a deletion record stays `records.KEEP_DELETIONS_S` (a week); a
  compaction record (`records.compaction_due`), written with `writer.delete`,
  erases the older ones and the compaction before it. A replica that had not read
  the store for that long when it meets one rebuilds its state from the store.

Two back ends:

- a folder: the file log of `coldstart.serving.file_store` (one machine; `flock` and
  `O_APPEND`, which network volumes do not reliably honour);
- a `postgresql://` URL: a table in PostgreSQL (`coldstart.serving.pg_store`),
  for ranker replicas on several machines.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Protocol, runtime_checkable

from pydantic import BeforeValidator

from coldstart.config import ConfigError
from coldstart.serving import file_store, pg_store
from coldstart.serving.pg_store import PostgresStore, display_url
from coldstart.serving.records import erased  # noqa: F401 - part of the contract above; its home is records
from coldstart.serving.file_store import RegistrationStore

DATABASE_SCHEMES = ("postgresql://", "postgres://")
STORE_ENV = "COLDSTART_STORE"


class StoreWriter(Protocol):
    def read_new(self) -> list[dict]: ...

    def append(self, record: dict) -> None: ...

    def delete(self, record: dict) -> int: ...


@runtime_checkable
class Store(Protocol):
    def read_new(self, chunk: bool = False) -> list[dict]: ...

    def rewind(self) -> None: ...

    def writing(self) -> contextlib.AbstractContextManager[StoreWriter]: ...


def is_database_url(spec: object) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(DATABASE_SCHEMES)


def parse_store_spec(spec: str | Path) -> str | Path:
    """A database URL stays a string; anything else is a folder. An unknown URL scheme is an error
    (read as a folder it would quietly become a directory named `mysql:`)."""
    if isinstance(spec, Path):
        return spec
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("registration store: empty; give a folder or a postgresql:// URL")
    if is_database_url(spec):
        return spec
    if "://" in spec:
        raise ConfigError(f"registration store {spec.split('://')[0]}://...: unsupported; give a folder or a "
                          f"postgresql:// URL")
    return Path(spec)


def _folder_or_url(value: object) -> str | Path | None:
    return None if value is None else parse_store_spec(value)


# A config field that names a store: a folder stays a Path, a database URL a str, anything else is an error.
StoreSpec = Annotated[Path | str | None, BeforeValidator(_folder_or_url)]


def store_location(artifacts: Path, store: str | Path | None = None) -> Path | str:
    """The store to use: `store` when given, else $COLDSTART_STORE, else the artifacts' `registry/` folder."""
    spec = store if store is not None else os.environ.get(STORE_ENV) or None
    return Path(artifacts) / "registry" if spec is None else parse_store_spec(spec)


def describe_store(spec: str | Path) -> str:
    """The store for a log line: a URL without its password."""
    if not is_database_url(spec):
        return str(spec)
    return display_url(str(spec))


def without_password(url: str) -> str:
    """A database URL without its password (in the user part or a `password=` parameter): what may travel in
    Serve's arguments and the routing records. The password comes back from the environment (`with_password`)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def with_password(url: str) -> str:
    """`url` with the password $COLDSTART_STORE holds for the same database (the Secret every replica's
    environment has, or what `coldstart serve` put there before Ray started); else `url` as it is, and libpq
    reads PGPASSWORD or ~/.pgpass."""
    full = os.environ.get(STORE_ENV) or ""
    return full if is_database_url(full) and full != url and without_password(full) == url else url


def read_snapshot(spec: str | Path, upto: int | None = None) -> tuple[list[dict], int]:
    """(records, position) of the store `spec` names up to `upto` (all when None), writing nothing: not a log
    file nor its folder when there is none, not the table when it is missing. A later call with the position
    reads the same records again (the batch job's fixed view while the endpoint keeps writing)."""
    spec = parse_store_spec(spec)
    if isinstance(spec, Path):
        return file_store.read_snapshot(spec, upto)
    return pg_store.read_snapshot(spec, upto)


def open_store(spec: str | Path) -> Store:
    """The store a folder path or a `postgresql://` URL names; a new folder or table is created."""
    spec = parse_store_spec(spec)
    if isinstance(spec, Path):
        return RegistrationStore(spec)
    return PostgresStore(with_password(spec))
