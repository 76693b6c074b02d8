"""Content features of items and users, as the towers see them.

item: [LLM vector of the item's text | attribute one-hots]
user: [LLM vector of the user's profile text (attributes only) | attribute one-hots]

The user's profile text leaves out liked titles on purpose: a cold user has
none, so a tower trained on history-laden text would meet other inputs at
serving time than in training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart import artifacts
from coldstart.evaluate import SplitData
from coldstart.features import AttributeEncoder
from coldstart.models.vectors import read_vectors, write_vectors
from coldstart.text.encoder import EncoderConfig, TextEncoder
from coldstart.text.templates import TextTemplates, render, text_hash

log = logging.getLogger(__name__)


@dataclass
class ContentSpec:
    """What a serving process needs to build the same features for a new item or user."""

    encoder: dict
    templates: dict
    item_attributes: dict
    user_attributes: dict
    text_dim: int

    def to_json(self) -> dict:
        return self.__dict__.copy()


def aligned(ids: pd.Index, matrix: np.ndarray, order: pd.Index) -> np.ndarray:
    pos = ids.get_indexer(order)
    out = np.zeros((len(order), matrix.shape[1]), np.float32)
    out[pos >= 0] = matrix[pos[pos >= 0]]
    return out


def profile_texts(users: pd.DataFrame, templates: TextTemplates) -> list[str]:
    return render(templates.user, users, "user_id", roles=templates.roles("user"),
                  extra={"liked": pd.Series([""] * len(users))})


def build_content(data: SplitData, embeddings: str | Path, encoder: TextEncoder | None = None):
    """(item_features, user_features, user_text, item_text, spec), rows in `data`'s order."""
    embeddings = Path(embeddings)
    meta = artifacts.read_json(embeddings / "embed.json")
    item_ids, item_matrix = read_vectors(embeddings / "items.parquet", "item_id")
    item_text = aligned(item_ids, item_matrix, data.item_ids)
    user_ids, user_matrix = read_vectors(embeddings / "users.parquet", "user_id")
    user_text = aligned(user_ids, user_matrix, data.user_ids)

    items = data.split.items.set_index("item_id").reindex(data.item_ids).reset_index(names="item_id")
    # As the embedding stage resolved them (resolving again changes nothing), or resolved here for a folder
    # another tool wrote: the spec that serving reads names the columns this data has.
    templates = TextTemplates.model_validate(meta["templates"]).resolve(items, data.split.users, announce=False)
    item_attr = AttributeEncoder.fit(items, "item_id", roles=templates.roles("item"))
    item_features = np.concatenate([item_text, item_attr.transform(items)], axis=1)

    if data.split.users is not None:
        users = data.split.users.set_index("user_id").reindex(data.user_ids).reset_index(names="user_id")
    else:
        users = pd.DataFrame({"user_id": list(data.user_ids)})
    user_attr = AttributeEncoder.fit(users, "user_id", roles=templates.roles("user"))
    texts = profile_texts(users, templates)
    vectors = profile_vectors(texts, embeddings, meta["encoder"], encoder)
    profile = np.stack([vectors[t] for t in texts]) if texts else np.zeros((0, item_text.shape[1]), np.float32)
    user_features = np.concatenate([profile, user_attr.transform(users)], axis=1)
    spec = ContentSpec(encoder=meta["encoder"], templates=templates.model_dump(), item_attributes=item_attr.to_json(),
                       user_attributes=user_attr.to_json(), text_dim=int(item_text.shape[1]))
    return item_features.astype(np.float32), user_features.astype(np.float32), user_text, item_text, spec


def profile_cache(embeddings: Path, encoder: dict) -> Path:
    """Where the profile vectors of `encoder` (its config) are kept, beside the embeddings they go with."""
    key = hashlib.sha1(json.dumps(encoder, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(embeddings) / f"profiles-{key}.parquet"


_PROFILES = threading.Lock()


def profile_vectors(texts: list[str], embeddings: Path, encoder_config: dict,
                    encoder: TextEncoder | None = None) -> dict[str, np.ndarray]:
    """{profile text: its LLM vector}, kept beside the embeddings by text hash (`profile_cache`).

    Every cold-model job, each search trial and each retrain builds these features; encoding the few
    distinct profiles (age x gender x occupation) is quick, but loading the encoder to do it took about
    16 s of a 2-core machine each time. Only the first job on a folder loads it now; a folder that
    cannot be written is served by encoding every time.
    """
    distinct = sorted(set(texts))
    path = profile_cache(embeddings, encoder_config)
    known: dict[str, np.ndarray] = {}
    with _PROFILES:  # pipeline stages side by side: the first encodes, the others read what it kept
        if path.is_file():
            hashes, matrix = read_vectors(path, "text_hash")
            known = dict(zip(hashes, matrix))
        missing = [t for t in distinct if text_hash(t) not in known]
        if missing:
            encoder = encoder or TextEncoder(EncoderConfig.model_validate(encoder_config))
            known.update(zip(map(text_hash, missing), encoder.encode(missing)))
            try:
                write_vectors(path, "text_hash", list(known), np.stack(list(known.values())))
            except OSError as exc:
                log.warning("profile vectors not kept in %s: %s", path.parent, exc)
    return {t: known[text_hash(t)] for t in distinct}
