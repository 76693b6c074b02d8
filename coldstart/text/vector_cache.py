"""Text vectors kept across runs and output folders, by encoder and text.

The embed job already reuses the vectors of its own output folder. A new folder
(another `--out`, each seed of `--seeds`, the transfer source's titles in every
run) embedded the same texts again: on 2 cores MiniLM takes about 20 s per 1,000
MovieLens texts. The job now looks every text up here first, by the hash of the
text, under a key of everything that makes its vector: the encoder's settings
and, for a model on disk, the names, sizes and times of its files (a model
retrained in place is another key). Folder: `$COLDSTART_VECTORS`, default
`$COLDSTART_CACHE/vectors` (`~/.cache/coldstart/vectors`); remove it to free the
space. Each run adds one parquet file (text_hash, vector); past `MAX_SHARDS` they
are merged into one. Concurrent writers never lose a vector to each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart import artifacts
from coldstart.data.movielens import default_cache_dir
from coldstart.text.encoder import EncoderConfig, resolve_model_path, resolved_dtype

log = logging.getLogger(__name__)

VECTORS_ENV = "COLDSTART_VECTORS"
MAX_SHARDS = 8


def default_vector_dir() -> Path:
    return Path(os.environ.get(VECTORS_ENV) or default_cache_dir() / "vectors")


def vector_settings(cfg: EncoderConfig) -> dict:
    """The encoder settings a text's vector depends on (not batch size or device): the dtype it actually runs
    in, so bf16 vectors from a GPU and fp32 ones from a CPU never share an entry under `auto`."""
    return {"model": cfg.model, "pooling": cfg.pooling, "max_length": cfg.max_length, "normalize": cfg.normalize,
            "dtype": resolved_dtype(cfg)}


def weights_digest(model: str) -> str | None:
    """Names, sizes and modification times of a model folder's files; None for a name that is not a folder."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class VectorCache:
    """Vectors one encoder gave, by text hash."""

    def __init__(self, folder: Path, key: dict | None = None):
        self.folder, self.key = Path(folder), key or {}

    @classmethod
    def for_encoder(cls, cfg: EncoderConfig, root: Path | None = None) -> "VectorCache":
        key = {**vector_settings(cfg), "weights": weights_digest(resolve_model_path(cfg.model))}
        name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return cls((root or default_vector_dir()) / name, key)

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []

    def _read(self, shards: list[Path]) -> pd.DataFrame:
        frames = []
        for shard in shards:
            try:
                frames.append(pd.read_parquet(shard))
            except FileNotFoundError:  # merged away by another writer since it was listed
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["text_hash", "vector"])

    def lookup(self, hashes) -> dict[str, np.ndarray]:
        """{text hash: vector} of those of `hashes` the cache holds."""
        wanted = set(hashes)
        if not wanted:
            return {}
        try:
            table = self._read(self._shards())
        except OSError as exc:  # an unreadable cache is a cache miss, never a failed job
            log.warning("vector cache %s not read: %s", self.folder, exc)
            return {}
        found = table[table["text_hash"].isin(wanted)].drop_duplicates("text_hash")
        return {h: np.asarray(v, np.float32) for h, v in zip(found["text_hash"], found["vector"])}

    def add(self, hashes, vectors) -> None:
        """Keep `vectors` (rows aligned with `hashes`): one new file, then the files merged past `MAX_SHARDS`."""
        hashes = list(hashes)
        if not hashes:
            return
        frame = pd.DataFrame({"text_hash": hashes, "vector": list(np.asarray(vectors, np.float32))})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            artifacts.write_json(self.folder / "encoder.json", self.key)  # what the folder's name stands for
            artifacts.write_parquet(self.folder / f"part-{uuid.uuid4().hex}.parquet", frame)
            shards = self._shards()
            if len(shards) > MAX_SHARDS:
                merged = self._read(shards).drop_duplicates("text_hash")
                artifacts.write_parquet(self.folder / f"part-{uuid.uuid4().hex}.parquet", merged)
                for shard in shards:  # only those merged: a shard another writer added since stays
                    shard.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("vectors not kept in %s: %s", self.folder, exc)
