"""LLM embeddings of every item and user, as a Ray Data batch-inference job.

An actor pool of encoder replicas (one GPU each where GPUs exist, CPUs
otherwise) embeds texts sorted by length, so each batch pads little. From
`stream_rows` texts on, they are written as parquet files beside the output
(one file a block) and `read_parquet` -> `map_batches` over the pool ->
`write_parquet` streams them through the actors, so no row passes through the
driver's object store; the driver reads the vectors back from those files to
assemble the artifact. Like every job's paths, the output's folder must then be
storage the workers share on a cluster of several machines. Fewer texts go from
the driver's memory as blocks, which starts faster. Output:
`items.parquet` (item_id, vector, text_hash, text), `users.parquet` (user_id, ...)
and `embed.json` (encoder, dimension, templates, counts). The folder is also a
vectors model: `coldstart evaluate --model OUT` scores a user's text against
items' text. A rerun embeds only new or changed texts, and a text the vector
cache holds (`coldstart.text.vector_cache`: any earlier run's, whatever its
output folder) is not embedded again. Actors get blocks of about equal work
(`cut_blocks`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from coldstart import artifacts
from coldstart.config import JobConfig
from coldstart.data.split import load_split
from coldstart.text import EmbedOptions
from coldstart.text.encoder import EncoderConfig, TextEncoder, set_threads
from coldstart.text.templates import TextTemplates, item_texts, text_hash, user_texts
from coldstart.text.vector_cache import VectorCache, vector_settings
from coldstart.config import RayOptions
from trainers.common import ensure_ray

log = logging.getLogger(__name__)

KINDS = {"items": "item_id", "users": "user_id"}


class EmbedConfig(JobConfig, EmbedOptions):
    split: Path = Field(..., description="Split folder whose items and users to embed.")
    out: Path = Field(..., description="Embeddings folder (items.parquet, users.parquet, embed.json).")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


@dataclass
class EmbedResult:
    out: Path
    embedded: dict[str, int]
    reused: dict[str, int]
    seconds: float
    texts_per_second: float
    cached: dict[str, int] | None = None  # of `reused`, how many came from the vector cache


def build_texts(split_dir: Path, templates: TextTemplates, *, announce: bool = True
                ) -> tuple[dict[str, pd.DataFrame], TextTemplates]:
    """(id, text, text_hash) for items and users, and the templates as this split resolves them (what the
    folder records); user text uses train interactions only. `announce`: log what was resolved."""
    split = load_split(split_dir)
    templates = templates.resolve(split.items, split.users, announce=announce)
    all_users = sorted(set().union(*(set(f["user_id"]) for f in split.sets.values())))
    frames = {"items": item_texts(split.items, templates).rename(columns={"item_id": "id"}),
              "users": user_texts(split.users, split.train, split.items, templates, all_users)
              .rename(columns={"user_id": "id"})}
    for frame in frames.values():
        frame["text_hash"] = frame["text"].map(text_hash)
    return frames, templates


class EncodeBatch:
    """One Ray Data actor: loads the encoder once, then embeds batch after batch."""

    def __init__(self, encoder: dict, threads: int):
        set_threads(threads)
        self.encoder = TextEncoder(EncoderConfig.model_validate(encoder))

    def __call__(self, batch: pd.DataFrame):
        vectors = np.ascontiguousarray(self.encoder.encode(batch["text"].tolist()), np.float32)
        return pa.table({"id": pa.array(batch["id"].astype(str).to_numpy()),
                         "kind": pa.array(batch["kind"].to_numpy()),
                         "text_hash": pa.array(batch["text_hash"].to_numpy()),
                         "text": pa.array(batch["text"].to_numpy()),
                         "empty": pa.array(batch["text"].str.strip().eq("").to_numpy()),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()),
                                                                     vectors.shape[1])})


def _reusable(out: Path, kind: str, fingerprint: dict) -> pd.DataFrame | None:
    meta_path, path = out / "embed.json", out / f"{kind}.parquet"
    if not (meta_path.is_file() and path.is_file()):
        return None
    if artifacts.read_json(meta_path).get("fingerprint") != fingerprint:
        log.info("encoder settings changed: re-embedding every %s", kind)
        return None
    return pd.read_parquet(path).rename(columns={KINDS[kind]: "id"})


def run(cfg: EmbedConfig) -> EmbedResult:
    texts, templates = build_texts(cfg.split, cfg.templates)
    return embed_texts(texts, cfg.model_copy(update={"templates": templates}))


def embed_texts(texts: dict[str, pd.DataFrame], cfg: EmbedConfig) -> EmbedResult:
    """Embed (id, text, text_hash) frames per kind ("items", "users") into `cfg.out`, reusing stored vectors."""
    started = time.perf_counter()
    fingerprint = vector_settings(cfg.encoder)  # what must match for stored vectors to be reused
    todo, kept = [], {}
    for kind, frame in texts.items():
        old = _reusable(cfg.out, kind, fingerprint)
        if old is not None:
            same = frame.merge(old[["id", "text_hash", "vector"]], on=["id", "text_hash"], how="inner")
            kept[kind] = same[["id", "vector", "text_hash", "text"]]
            frame = frame.loc[~frame["id"].isin(set(same["id"]))]
        else:
            kept[kind] = pd.DataFrame(columns=["id", "vector", "text_hash", "text"])
        todo.append(frame.assign(kind=kind))
    pending = pd.concat(todo, ignore_index=True)
    cache = VectorCache.for_encoder(cfg.encoder) if cfg.keep_vectors else None
    pending, cached = _from_cache(pending, cache, kept)
    log.info("embedding %d text(s); reusing %s%s", len(pending), {k: len(v) for k, v in kept.items()},
             f", {sum(cached.values())} of them from the vector cache {cache.folder}" if any(cached.values()) else "")

    if not len(pending) and not any(cached.values()) and (cfg.out / "embed.json").is_file() and all(
            len(kept[k]) == len(texts[k]) for k in texts):
        # Nothing new: leave the folder as it is, so concurrent readers (Tune trials) never see it move.
        return EmbedResult(out=cfg.out, embedded={k: 0 for k in texts}, reused={k: len(v) for k, v in kept.items()},
                           seconds=time.perf_counter() - started, texts_per_second=0.0)
    workdir = cfg.out.parent / f".{cfg.out.name}.embedding"
    new = embed_with_ray(pending, cfg, workdir) if len(pending) else pd.DataFrame(
        columns=["id", "kind", "text_hash", "text", "empty", "vector"])
    new["id"] = new["id"].map(dict(zip(pending["id"].astype(str), pending["id"])))  # parquet gave strings
    if cache is not None and len(new):
        texts_made = new.loc[~new["empty"].astype(bool)].drop_duplicates("text_hash")
        cache.add(texts_made["text_hash"], np.stack([np.asarray(v, np.float32) for v in texts_made["vector"]]))
    embedded, reused, empty = {}, {}, int(new["empty"].sum()) if len(new) else 0
    if empty:
        log.warning("%d empty text(s) got zero vectors", empty)
    dim = None
    with artifacts.atomic_dir(cfg.out) as tmp:
        for kind in texts:
            id_column = KINDS[kind]
            fresh = new.loc[new["kind"] == kind, ["id", "vector", "text_hash", "text"]]
            table = pd.concat([kept[kind], fresh], ignore_index=True)
            table = table.set_index("id").loc[texts[kind]["id"]].reset_index()  # the split's order
            table["vector"] = [np.asarray(v, dtype=np.float32) for v in table["vector"]]
            dim = len(table["vector"].iloc[0])
            table.rename(columns={"id": id_column}).to_parquet(tmp / f"{kind}.parquet", index=False)
            embedded[kind], reused[kind] = len(fresh), len(kept[kind])
        artifacts.write_json(tmp / "embed.json", {
            "fingerprint": fingerprint, "encoder": cfg.encoder.model_dump(), "dim": dim,
            "templates": cfg.templates.model_dump(), "templates_fingerprint": cfg.templates.fingerprint(),
            "split": str(cfg.split), "counts": {k: len(v) for k, v in texts.items()},
            "embedded": embedded, "empty_texts": empty})
    seconds = time.perf_counter() - started
    n = sum(embedded.values())
    return EmbedResult(out=cfg.out, embedded=embedded, reused=reused, seconds=seconds,
                       texts_per_second=n / seconds if seconds else 0.0, cached=cached)


# Blocks per actor of the pool, at least: the last block's actor works alone while the others have finished.
BLOCKS_PER_REPLICA = 4
TEXT_OVERHEAD_CHARS = 20  # a text's fixed cost beside its length (special tokens, pooling), in characters


def cut_blocks(lengths: np.ndarray, block_rows: int, parts: int) -> list[slice]:
    """Row ranges over texts of these `lengths` (longest first) of about equal cost, at least `parts` of them
    (with as many texts) and at most `block_rows` rows each.

    A text's encoding time grows with its length, so equal row counts are not equal work: on ml-100k the
    943 user texts (about 230 characters) fell in the first block of 1,024 rows with 81 titles, and one actor
    encoded them while the other finished the 1,601 remaining titles and waited.
    """
    n = len(lengths)
    if n == 0:
        return []
    count = min(n, max(parts, -(-n // block_rows)))
    cost = np.cumsum(np.asarray(lengths, np.float64) + TEXT_OVERHEAD_CHARS)
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, count) / count, side="left") + 1
    edges = sorted({0, n, *(int(c) for c in cuts if 0 < c < n)})
    ranges = []
    for start, stop in zip(edges[:-1], edges[1:]):
        ranges += [slice(i, min(i + block_rows, stop)) for i in range(start, stop, block_rows)]
    return ranges


def _from_cache(pending: pd.DataFrame, cache: VectorCache | None, kept: dict[str, pd.DataFrame]
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Move the rows of `pending` whose text the cache holds into `kept` (per kind), with the cached vector;
    return what is left to embed and how many rows of each kind came from the cache."""
    cached = {kind: 0 for kind in kept}
    if cache is None or not len(pending):
        return pending, cached
    written = pending["text"].str.strip().ne("")  # an empty text gets zeros, never a cached vector
    found = cache.lookup(pending.loc[written, "text_hash"])
    hit = pending["text_hash"].isin(found.keys()) & written
    for kind, rows in pending.loc[hit].groupby("kind"):
        rows = rows.assign(vector=[found[h] for h in rows["text_hash"]])[["id", "vector", "text_hash", "text"]]
        kept[kind] = pd.concat([kept[kind], rows], ignore_index=True)
        cached[kind] = len(rows)
    return pending.loc[~hit].reset_index(drop=True), cached


def embed_with_ray(pending: pd.DataFrame, cfg: EmbedConfig, workdir: Path) -> pd.DataFrame:
    """Embed `pending` (id, kind, text, text_hash) with the actor pool; the rows with their vectors, longest texts
    first. From `cfg.stream_rows` rows on, parquet to parquet through `workdir` (removed afterwards); below, the
    blocks go from the driver's memory and the vectors come back to it (less fixed cost for a small job)."""
    ray = ensure_ray(cfg.ray)
    import ray.data  # ray: heavy, only the Ray path loads it

    lengths = pending["text"].str.len().to_numpy()
    order = np.argsort(-lengths, kind="stable")
    ordered = pending.iloc[order].reset_index(drop=True)
    ordered = ordered.astype({"id": str})  # ids of any type come back alike
    blocks = [ordered.iloc[rows]
              for rows in cut_blocks(lengths[order], cfg.block_rows, BLOCKS_PER_REPLICA * cfg.replicas)]

    def encode(ds):
        return ds.map_batches(
            EncodeBatch,
            fn_constructor_kwargs={"encoder": cfg.encoder.model_dump(), "threads": cfg.threads_per_replica},
            compute=ray.data.ActorPoolStrategy(size=min(cfg.replicas, len(blocks))),
            batch_size=cfg.encoder.batch_size,
            batch_format="pandas",
            num_gpus=1 if cfg.use_gpu else 0,
            num_cpus=0 if cfg.use_gpu else cfg.threads_per_replica,
        )

    if len(ordered) < cfg.stream_rows:
        return encode(ray.data.from_pandas(blocks)).to_pandas()
    shutil.rmtree(workdir, ignore_errors=True)  # what a failed run left
    (workdir / "texts").mkdir(parents=True)
    try:
        for n, block in enumerate(blocks):
            block.to_parquet(workdir / "texts" / f"part-{n:06d}.parquet", index=False)
        # Small files are read as one block; a block is an actor's unit of work, so split it back up.
        encode(ray.data.read_parquet(str(workdir / "texts")).repartition(len(blocks))).write_parquet(
            str(workdir / "vectors"))
        return pd.read_parquet(workdir / "vectors")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
