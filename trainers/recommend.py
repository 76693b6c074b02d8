"""Batch recommendations as a Ray Data job: every user (or a file of them) ranked by an actor pool.

The driver reads what it needs to plan (the artifacts' users and the
registration store's position, a few ids per user, never a row of output),
checks the users asked for, and hands the ids to a fixed pool of actors, each
of which builds the catalogue once (`coldstart.serving.batch.BatchRecommender`,
with the registrations up to the driver's position, so every actor serves the
same ones) and ranks batch after batch. The rows are written by the dataset
itself, to part files in a temporary folder beside `--out`:

- `--out` ending in `.parquet`: one file. The driver copies the parts into it
  one at a time (one part in memory, not the job's output), in the order the
  users were asked for, then moves it into place; a reader sees the old file or
  the whole new one.
- otherwise: a folder of part files (`pd.read_parquet` reads it as one table),
  swapped in whole; the driver never reads a row.

`--actors 0` runs the same core in this process, without Ray: for catalogues
too small to repay starting actors.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from coldstart import artifacts
from coldstart.config import JobConfig, RayOptions
from coldstart.serving.batch import COLUMNS, BatchOptions, BatchRecommender, output_schema
from trainers.common import ensure_ray

log = logging.getLogger(__name__)

MAX_BLOCK_USERS = 2048  # users per input block: more blocks than actors keeps the pool evenly busy


class RecommendConfig(JobConfig, BatchOptions):
    users: str = Field("all", description="'all' (every known user, registered ones included) or a file of user ids "
                                          "(parquet/CSV with a user_id column, or one id per line).")
    out: Path = Field(..., description="recs.parquet (one file), or a folder of part files.")
    actors: int = Field(2, ge=0, description="Ray Data actors, each holding the catalogue (one CPU each); 0: rank "
                                             "in this process without Ray.")
    batch_size: int = Field(256, gt=0, description="Users per call of an actor.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")

    def batch_options(self) -> dict:
        return BatchOptions.model_validate(self.model_dump(include=set(BatchOptions.model_fields))).model_dump(
            mode="json")


@dataclass
class RecommendResult:
    out: Path
    users: int
    rows: int
    registered_users: int
    seconds: float


class RecommendBatch:
    """One Ray Data actor: builds the catalogue once, then ranks batch after batch."""

    def __init__(self, options: dict):
        import faiss  # faiss and torch: the actors load them, the driver that plans does not
        import torch

        torch.set_num_threads(1)  # one CPU per actor: the pool, not threads, is the parallelism
        faiss.omp_set_num_threads(1)
        self.recommender = BatchRecommender(BatchOptions.model_validate(options))
        self.schema = output_schema()

    def __call__(self, batch):
        return pa.Table.from_pandas(self.recommender(batch), schema=self.schema, preserve_index=False)


def run(cfg: RecommendConfig) -> RecommendResult:
    started = time.perf_counter()
    # The plan: which users, and up to where the store is read. The driver's catalogue is dropped before
    # the actors start theirs.
    planner = BatchRecommender(BatchOptions.model_validate(cfg.batch_options()))
    users = planner.users(cfg.users)
    options = {**cfg.batch_options(), "upto": planner.position}
    registered = planner.registered_users
    if cfg.actors == 0:
        rows = write_in_process(planner, users, cfg.out)
        return RecommendResult(cfg.out, len(users), rows, registered, time.perf_counter() - started)
    del planner
    rows = _rank_with_ray(users, options, cfg)
    return RecommendResult(cfg.out, len(users), rows, registered, time.perf_counter() - started)


def _single_file(out: Path) -> bool:
    """`--out` names one parquet file (else a folder of part files)."""
    return out.suffix.lower() == ".parquet"


def write_in_process(recommender: BatchRecommender, users: list[str], out: Path) -> int:
    """The plain loop: rank every user here and write the rows, in the layout the Ray job writes."""
    table = pa.Table.from_pandas(recommender.recommend(users), schema=output_schema(), preserve_index=False)
    if _single_file(out):
        with artifacts.atomic_file(out) as tmp:
            pq.write_table(table, tmp)
    else:
        with artifacts.atomic_dir(out) as tmp:
            pq.write_table(table, tmp / "part-000000.parquet")
    return len(table)


def _rank_with_ray(users: list[str], options: dict, cfg: RecommendConfig) -> int:
    ensure_ray(cfg.ray)
    import ray.data  # ray: heavy, only the Ray path loads it

    blocks = min(len(users), max(cfg.actors * 4, math.ceil(len(users) / MAX_BLOCK_USERS))) or 1
    ds = ray.data.from_items([{"user_id": u} for u in users], override_num_blocks=blocks)
    ds.context.execution_options.preserve_order = True  # parts in the users' order: the merge keeps it cheaply
    ranked = ds.map_batches(RecommendBatch, fn_constructor_kwargs={"options": options},
                            compute=ray.data.ActorPoolStrategy(size=min(cfg.actors, blocks)),
                            batch_size=cfg.batch_size, batch_format="pandas", num_cpus=1)
    if not _single_file(cfg.out):
        with artifacts.atomic_dir(cfg.out) as parts:  # the folder is the output: swapped in whole at the end
            ranked.write_parquet(str(parts))
            return sum(_rows(f) for f in parts.glob("*.parquet"))
    # Beside the output, on the same storage: the workers write there, the driver reads back from there.
    with tempfile.TemporaryDirectory(prefix=f".{cfg.out.name}.parts-", dir=cfg.out.parent) as parts:
        ranked.write_parquet(parts)
        return _merge(sorted(Path(parts).glob("*.parquet")), users, cfg.out)


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _merge(files: list[Path], users: list[str], out: Path) -> int:
    """Copy the part files into one parquet file, in the order of `users`; one part in memory at a time."""
    position = {u: i for i, u in enumerate(users)}

    def first_user(path: Path) -> int:
        if not _rows(path):
            return -1
        return position[pq.ParquetFile(path).read_row_group(0, columns=["user_id"]).column(0)[0].as_py()]

    schema = output_schema()
    rows = 0
    with artifacts.atomic_file(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for path in sorted(files, key=first_user):
            table = pq.read_table(path).select(list(COLUMNS)).cast(schema)
            writer.write_table(table)
            rows += len(table)
    return rows
