"""A small but real artifacts folder for serving tests, built in-process in seconds.

Tiny generated data (users who like one genre) -> split -> MiniLM embeddings of
the real templates -> an MF-BPR backbone and distilled towers trained for a few
dozen epochs, written with the same save functions as the pipeline. The towers
learn that genre, so a new item's genre decides who it is recommended to.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import torch

from coldstart import artifacts
from coldstart.content import build_content
from coldstart.data.schema import validate
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.coldstart_model import save_backbone, save_cold_model
from coldstart.models.mf import BackboneTraining, EmbeddingRecommender, MatrixFactorization, TrainPairs
from coldstart.models.towers import ColdStartTowers, DistillWeights, TowerTraining, cold_start_vectors
from coldstart.models.vectors import write_vectors
from coldstart.text.encoder import EncoderConfig
from coldstart.text.templates import TextTemplates, item_texts, user_texts
from coldstart.testing import make_tables


class WordEncoder:
    """A text encoder in miniature: a text's vector is the unit sum of its words' (each a fixed random vector),
    so texts that share words (a genre) lie close. Nothing to load, for tests that need content with signal."""

    dim = 32

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def write_embeddings(split, encoder, out: Path) -> Path:
    """The embed job's folder for `split`, encoded in this process by `encoder` (the packaged MiniLM): what
    the trainers read, without starting a Ray Data job."""
    templates = TextTemplates().resolve(split.items, split.users)  # as the embedding stage records them
    item_text = item_texts(split.items, templates)
    user_text = user_texts(split.users, split.train, split.items, templates)
    write_vectors(out / "items.parquet", "item_id", item_text["item_id"], encoder.encode(list(item_text["text"])))
    write_vectors(out / "users.parquet", "user_id", user_text["user_id"], encoder.encode(list(user_text["text"])))
    artifacts.write_json(out / "embed.json", {"encoder": EncoderConfig().model_dump(), "dim": encoder.dim,
                                              "templates": templates.model_dump()})
    return out


def run_folder(root: Path, cold: str = "items", *, seed: int = 0, split_seed: int | None = None, n_users: int = 80,
               n_items: int = 120, per_user: int = 12) -> SplitData:
    """A pipeline's OUT up to its stages: generated data split on `cold` (root/split) and its texts embedded by
    `WordEncoder` (root/embeddings, the profiles' vectors kept beside them, so no stage loads an encoder).
    `seed`: the data's; `split_seed` (default `seed`): the split's."""
    interactions, items, users = make_tables(n_users=n_users, n_items=n_items, per_user=per_user, seed=seed)
    split = load_split(save_split(make_split(validate(interactions, items, users, name="tiny"), cold,
                                             seed=seed if split_seed is None else split_seed), root / "split"))
    data = SplitData.from_split(split)
    encoder = WordEncoder()
    write_embeddings(split, encoder, root / "embeddings")
    build_content(data, root / "embeddings", encoder)
    return data


def build_artifacts(root: Path, encoder, *, epochs: int = 40, seed: int = 0, n_users: int = 120, n_items: int = 90,
                    per_user: int = 15, model_seed: int | None = None) -> Path:
    """`n_users`, `n_items`, `per_user`: the generated data's size (benchmarks build ml-100k-sized ones).
    `model_seed` (default `seed`): another one trains other models over the same data and split."""
    torch.manual_seed(seed if model_seed is None else model_seed)
    interactions, items, users = make_tables(n_users=n_users, n_items=n_items, per_user=per_user, seed=seed)
    split_dir = save_split(make_split(validate(interactions, items, users, name="tiny"), "items", seed=seed),
                           root / "split")
    split = load_split(split_dir)
    data = SplitData.from_split(split)

    emb = write_embeddings(split, encoder, root / "embeddings")

    train = split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=seed if model_seed is None else model_seed)
    mf = MatrixFactorization(data.n_users, data.n_items, 32)
    training = BackboneTraining(mf, lr=2e-2)
    for _ in range(epochs):
        training.train_epoch(pairs.batches(256))
    user_vectors = mf.user.weight.detach().numpy().copy()
    item_vectors = mf.item.weight.detach().numpy().copy()
    item_vectors[~data.warm_items] = 0.0  # as the real backbone: nothing learnt for items it never saw
    save_backbone(root / "backbone", data, user_vectors, item_vectors, {"epoch": epochs})

    item_features, user_features, user_text_vectors, item_text_vectors, spec = build_content(data, emb, encoder)
    towers = ColdStartTowers(item_features.shape[1], user_features.shape[1], 32, hidden=128, dropout=0.1)
    tower_training = TowerTraining(towers, user_vectors=user_vectors, item_vectors=item_vectors,
                                   item_features=item_features, user_features=user_features,
                                   weights=DistillWeights(), lr=3e-3)
    for _ in range(epochs):
        tower_training.train_epoch(pairs.batches(256))
    towers.eval()
    users, items = cold_start_vectors(towers, user_vectors=user_vectors, item_vectors=item_vectors,
                                      warm_users=data.train.getnnz(axis=1) > 0, warm_items=data.warm_items,
                                      user_features=user_features, item_features=item_features)
    cold_val = evaluate(EmbeddingRecommender(users, items), data, on="val", ks=(20,))["cold"]["ndcg@20"]
    save_cold_model(root / "distill", data, towers, user_vectors=user_vectors, item_vectors=item_vectors,
                    user_features=user_features, item_features=item_features, content=spec.to_json(),
                    meta={"epoch": epochs, "metrics": {"cold_val_ndcg@20": cold_val}})
    return root
