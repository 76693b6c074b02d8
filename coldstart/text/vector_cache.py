"""Text vectors kept across runs and output folders, by encoder and text.

The embed job already reuses the vectors of its own output folder. A new folder
(another `--out`, each seed of `--seeds`, the transfer source's titles in every
run) embedded the same texts again: on 2 cores MiniLM takes about 20 s per 1,000
MovieLens texts. The job now looks every text up here first, by the hash of the
text, under a key of everything that makes its vector: the encoder's settings
and, for a model on disk, the names, sizes and times of its files (a model
retrained in place is another key). Folder: `$COLDSTART_VECTORS`, default
`$COLDSTART_CACHE/vectors` (`~/.cache/coldstart/vectors`). Vectors are kept in
16 buckets by their hash's first character, so a lookup reads only the buckets
of the texts it asks for; each run adds one parquet file (text_hash, vector) to
each bucket it touches, and past `MAX_SHARDS` a bucket's files are merged into
one. Concurrent writers never lose a vector to each other. The whole cache is
capped (`$COLDSTART_VECTORS_MAX_BYTES`, 4 GiB): past it, the encoders' folders
used least recently (looked up or added to) are removed first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart import artifacts
from coldstart.data.movielens import default_cache_dir
from coldstart.text.encoder import EncoderConfig, resolve_model_path, resolved_dtype

log = logging.getLogger(__name__)

VECTORS_ENV = "COLDSTART_VECTORS"
MAX_BYTES_ENV = "COLDSTART_VECTORS_MAX_BYTES"
MAX_SHARDS = 8
MAX_BYTES = 4 * 1024 ** 3
USED = "encoder.json"  # its modification time is the folder's last use


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

    @staticmethod
    def bucket(text_hash: str) -> str:
        first = str(text_hash)[:1].lower()
        return f"bucket-{first if first.isalnum() else '_'}"

    def _shards(self, buckets=None) -> list[Path]:
        """The files of `buckets` (all when None), and any from before buckets, which every lookup reads."""
        if not self.folder.is_dir():
            return []
        places = [self.folder / b for b in sorted(buckets)] if buckets is not None else \
            sorted(self.folder.glob("bucket-*"))
        return sorted(self.folder.glob("part-*.parquet")) + [p for d in places for p in sorted(d.glob("part-*.parquet"))]

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
            table = self._read(self._shards({self.bucket(h) for h in wanted}))
        except OSError as exc:  # an unreadable cache is a cache miss, never a failed job
            log.warning("vector cache %s not read: %s", self.folder, exc)
            return {}
        found = table[table["text_hash"].isin(wanted)].drop_duplicates("text_hash")
        if len(found):
            with contextlib.suppress(OSError):
                os.utime(self.folder / USED)  # used now: the last to be evicted
        return {h: np.asarray(v, np.float32) for h, v in zip(found["text_hash"], found["vector"])}

    def add(self, hashes, vectors) -> None:
        """Keep `vectors` (rows aligned with `hashes`): one new file, then the files merged past `MAX_SHARDS`."""
        hashes = list(hashes)
        if not hashes:
            return
        frame = pd.DataFrame({"text_hash": hashes, "vector": list(np.asarray(vectors, np.float32))})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            artifacts.write_json(self.folder / USED, self.key)  # what the folder's name stands for
            for bucket, part in frame.groupby(frame["text_hash"].map(self.bucket)):
                (self.folder / bucket).mkdir(exist_ok=True)
                artifacts.write_parquet(self.folder / bucket / f"part-{uuid.uuid4().hex}.parquet", part)
                shards = sorted((self.folder / bucket).glob("part-*.parquet"))
                if len(shards) > MAX_SHARDS:
                    merged = self._read(shards).drop_duplicates("text_hash")
                    artifacts.write_parquet(self.folder / bucket / f"part-{uuid.uuid4().hex}.parquet", merged)
                    for shard in shards:  # only those merged: a shard another writer added since stays
                        shard.unlink(missing_ok=True)
            evict(self.folder.parent, keep=self.folder)
        except OSError as exc:
            log.warning("vectors not kept in %s: %s", self.folder, exc)


def evict(root: Path, keep: Path | None = None, max_bytes: int | None = None) -> list[Path]:
    """Remove the encoders' folders under `root` used least recently until the cache fits `max_bytes`
    ($COLDSTART_VECTORS_MAX_BYTES, else `MAX_BYTES`); `keep` (the one in use) stays. The folders removed."""
    max_bytes = int(os.environ.get(MAX_BYTES_ENV) or MAX_BYTES) if max_bytes is None else max_bytes
    folders = []
    for folder in (d for d in Path(root).iterdir() if d.is_dir()):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        used = (folder / USED).stat().st_mtime if (folder / USED).exists() else 0.0
        folders.append((used, size, folder))
    total, removed = sum(size for _, size, _ in folders), []
    for _, size, folder in sorted(folders, key=lambda f: f[0]):
        if total <= max_bytes:
            break
        if keep is not None and folder.resolve() == Path(keep).resolve():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
        removed.append(folder)
        log.info("vector cache: removed %s (least recently used) to stay under %d bytes", folder.name, max_bytes)
    return removed
