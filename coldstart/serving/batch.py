"""Top-k recommendations for many users at once: the Ray-free core of `coldstart recommend`.

`BatchRecommender` builds the ranker's `Catalogue` from an artifacts folder and
the registrations in its store, read-only, and answers a batch of user ids with
one row per recommended item: `user_id, rank, item_id, score, path` (rank 1 is
the best; path `warm` for a user ranked with its backbone vector, `cold` for the
artifact's cold users and registered users). Each user is ranked by
`Catalogue.recommend_user`, exactly as `POST /v1/recommend {"user_id": ...}`
ranks it, seen items excluded.

Users: `all` (every user the catalogue knows: the artifact's warm and cold users
in its order, then registered users in registration order) or a file of ids,
read by `read_user_ids`. An id that is nobody's stops the job before it starts,
with an error naming the file, the count and an example: a batch that silently
drops users looks complete and is not.

Registrations are read up to a position (`upto`, a byte offset of the file log
or an id of the database table), so that every Ray Data actor of one job serves
the same registrations even while the HTTP endpoint keeps registering; the
driver reads the store first and hands its position to the actors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from coldstart.data.schema import DataError
from coldstart.serving.config import GeneratorChoice
from coldstart.serving.stores import StoreSpec, describe_store, read_snapshot, store_location

log = logging.getLogger(__name__)

COLUMNS = ("user_id", "rank", "item_id", "score", "path")


def output_schema():
    return pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                      ("score", pa.float32()), ("path", pa.string())])


class BatchOptions(BaseModel):
    """What to rank and from where; the job configs of `coldstart recommend` extend it."""

    model_config = ConfigDict(extra="forbid")
    artifacts: Path = Field(..., description="Folder that `coldstart pipeline` wrote (split/, distill/, ...).")
    store: StoreSpec = Field(
        None, description="Registration store to include (a folder or a postgresql:// URL); default "
                          "$COLDSTART_STORE, else DIR/registry, as `coldstart serve`. Read only.")
    generator: GeneratorChoice = Field(
        "auto", description="Content -> collaborative vector model for cold users and items; auto: "
                            "DIR/serving.json's choice, else distill (what `coldstart serve` picks).")
    k: int = Field(100, gt=0, description="Items per user (fewer where fewer are left once seen ones are out).")
    exclude_seen: bool = Field(True, description="Leave out the items a user interacted with in training "
                                                 "(or liked, for a registered user).")
    upto: int | None = Field(None, description="Read registrations up to this position of the store (set by the "
                                               "driver, so every actor serves the same ones); default: all.")

    def store_location(self) -> Path | str:
        return store_location(self.artifacts, self.store)


# ---- registrations, read-only -------------------------------------------------------------------------

def read_registrations(spec: Path | str, upto: int | None = None) -> tuple[list[dict], int]:
    """(records, position) of a store up to `upto` (all when None), writing nothing: not the log file
    nor its folder when there is none, not the table when it is missing."""
    return read_snapshot(spec, upto)


class _Snapshot:
    """A store that holds a fixed list of records: the catalogue replays them once and never writes."""

    def __init__(self, records: list[dict]):
        self.records = records

    def read_new(self, chunk: bool = False) -> list[dict]:
        records, self.records = self.records, []
        return records

    def writing(self):
        raise RuntimeError("batch recommendations read the registration store; they never register")


# ---- users --------------------------------------------------------------------------------------------

def read_user_ids(path: str | Path) -> list[str]:
    """User ids from a file: parquet or CSV with a `user_id` column, else text with one id per line (blank
    lines and lines starting with # skipped). Duplicates are dropped, the first kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError("users file not found (give a file of user ids, or 'all')", file=path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
        if "user_id" not in table.columns:
            raise DataError(f"missing column (found {list(table.columns)[:10]})", file=path, column="user_id")
        column = table["user_id"]
        if column.isna().any():
            raise DataError("empty user id", file=path, column="user_id", value=int(np.flatnonzero(column.isna())[0]))
        ids = [str(v).strip() for v in column]
    else:
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        ids = [i for i in ids if i and not i.startswith("#")]
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        log.warning("%s: %d repeated user id(s) ranked once", path, len(ids) - len(unique))
    return unique


# ---- the recommender ----------------------------------------------------------------------------------

class BatchRecommender:
    """The catalogue of an artifacts folder and its registrations, ranking users batch by batch."""

    def __init__(self, options: BatchOptions):
        # faiss and torch: loaded where a catalogue is built, not where these options are only read
        from coldstart.serving.catalogue import Catalogue
        from coldstart.serving.served_models import ServingGenerator

        self.options = options
        self.store = options.store_location()
        records, self.position = read_registrations(self.store, options.upto)
        generator = ServingGenerator(options.artifacts, options.generator)
        self.catalogue = Catalogue.from_artifacts(options.artifacts, generator, _Snapshot(records))
        self.generator = generator.name

    @property
    def registered_users(self) -> int:
        return self.catalogue.registered_users

    def all_users(self) -> list[str]:
        """Every user, in the catalogue's order: the artifact's (warm and cold), then the registered ones."""
        return list(self.catalogue.users)

    def users(self, which: str | Path) -> list[str]:
        """`all`, or the ids in a file (see `read_user_ids`), every one of them known."""
        if str(which) == "all":
            return self.all_users()
        ids = read_user_ids(which)
        unknown = [u for u in ids if u not in self.catalogue.users]
        if unknown:
            raise DataError(f"{len(unknown)} of {len(ids)} user id(s) are neither users of {self.options.artifacts} "
                            f"nor registered in {describe_store(self.store)}", file=which, value=unknown[0])
        return ids

    def recommend(self, user_ids: Iterable[str]) -> pd.DataFrame:
        """One row per (user, recommended item), users in the order given, ranks 1..k."""
        users, ranks, items, scores, paths = [], [], [], [], []
        for user_id in user_ids:
            answer = self.catalogue.recommend_user(user_id, self.options.k, exclude_seen=self.options.exclude_seen)
            n = len(answer["items"])
            users += [user_id] * n
            ranks += range(1, n + 1)
            items += [item["item_id"] for item in answer["items"]]
            scores += [item["score"] for item in answer["items"]]
            paths += [answer["path"]] * n
        return pd.DataFrame({"user_id": pd.Series(users, dtype=object), "rank": np.asarray(ranks, np.int32),
                             "item_id": pd.Series(items, dtype=object), "score": np.asarray(scores, np.float32),
                             "path": pd.Series(paths, dtype=object)})

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """A batch of a user-id frame (column `user_id`) to its rows: what a Ray Data actor calls."""
        return self.recommend(batch["user_id"].astype(str))


def recommend_in_process(options: BatchOptions, users: str | Path | Sequence[str] = "all") -> pd.DataFrame:
    """The whole job in this process, no Ray: what small catalogues need, and the benchmark's baseline."""
    recommender = BatchRecommender(options)
    ids = recommender.users(users) if isinstance(users, (str, Path)) else list(users)
    return recommender.recommend(ids)
