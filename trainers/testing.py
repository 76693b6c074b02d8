"""Every training job of the project on tiny generated inputs, built in seconds and without Ray.

The GPU check (`benchmarks/gpu_check.py`) runs one epoch of each on CUDA, and the
unit tests of the training skeleton run them on the CPU: both see the jobs the
Ray workers run (`trainers/*`), only their inputs are small. Nothing is
downloaded: the encoder job's teacher is a two-layer BERT with random weights and
a word-level vocabulary written here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.data.schema import validate
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import SplitData
from coldstart.models.coldstart_model import save_backbone
from coldstart.testing import make_tables

WORDS = ("a film about cats space love war ghosts fish robots music crime dogs the of and in").split()


def tiny_teacher(folder: Path, hidden: int = 32) -> Path:
    """A random two-layer BERT and its tokenizer, saved as a Hugging Face folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


class FrameShard:
    """Ray Data's `iter_batches` over a pandas frame, so the encoder job runs without Ray."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def iter_batches(self, batch_size: int, batch_format: str = "numpy", **_):
        for start in range(0, len(self.frame), batch_size):
            part = self.frame.iloc[start:start + batch_size]
            yield {"text": part["text"].to_numpy(), "target": np.stack(part["target"].to_numpy())}


def tiny_jobs(root: Path, *, n_users: int = 40, n_items: int = 60, seed: int = 1) -> dict[str, Callable]:
    """name -> make(**config overrides) -> a TrainJob, for every job: backbone, distill, vae, transfer, encoder."""
    from trainers.backbone import BackboneConfig, BackboneJob
    from trainers.distill import DistillConfig, DistillJob
    from trainers.distill_encoder import DistillEncoderConfig, EncoderJob
    from trainers.generator import GeneratorConfig, VAEJob
    from trainers.transfer import TransferConfig, TransferJob

    root = Path(root)
    inter, items, users = make_tables(n_users=n_users, n_items=n_items, per_user=10, seed=seed)
    split_dir = save_split(make_split(validate(inter, items, users), "items", seed=0), root / "split")
    data = SplitData.from_split(load_split(split_dir))
    rng = np.random.default_rng(seed)
    user_vectors = rng.normal(size=(data.n_users, 8)).astype(np.float32)
    item_vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    item_vectors[~data.warm_items] = 0.0  # as a real backbone: nothing learnt for items it never saw
    save_backbone(root / "backbone", data, user_vectors, item_vectors, {"epoch": 0})
    arrays = {"item_features": rng.normal(size=(data.n_items, 6)).astype(np.float32),
              "user_features": rng.normal(size=(data.n_users, 5)).astype(np.float32),
              "item_text": rng.normal(size=(data.n_items, 4)).astype(np.float32),
              "user_text": rng.normal(size=(data.n_users, 4)).astype(np.float32)}
    paths = dict(split=split_dir, embeddings=root / "unused", backbone=root / "backbone", out=root / "unused")

    train = data.split.train
    n_source_items, n_source_users = data.n_items + 10, 30
    transfer_inputs = {
        "text": rng.normal(size=(n_source_items, 4)).astype(np.float32),
        "target_users": data.user_ids.get_indexer(train["user_id"]),
        "target_items": data.item_ids.get_indexer(train["item_id"]),
        "target_negatives": np.flatnonzero(data.warm_items),
        "source_users": rng.integers(0, n_source_users, 300), "source_items": rng.integers(0, n_source_items, 300),
        "source_negatives": np.arange(n_source_items), "n_source_users": n_source_users, "coverage": {}}

    teacher = tiny_teacher(root / "teacher")
    texts = [" ".join(rng.choice(WORDS, 6)) for _ in range(24)]
    frame = pd.DataFrame({"text": texts, "target": list(rng.normal(size=(len(texts), 16)).astype(np.float32))})

    def backbone(**kw):
        return BackboneJob(BackboneConfig(split=split_dir, out=root / "unused", dim=8, batch_size=64, **kw), data=data)

    def distill(**kw):
        cfg = DistillConfig(**paths, batch_size=64, hidden=16, **{"teacher_llm": 0.5, **kw})
        return DistillJob(cfg, arrays, {}, data=data)

    def vae(**kw):
        return VAEJob(GeneratorConfig(**paths, batch_size=64, hidden=16, latent=4, **kw), arrays, {}, data=data)

    def transfer(**kw):
        cfg = TransferConfig(target=split_dir, embeddings=root / "unused", out=root / "unused", dim=8, hidden=16,
                             batch_size=64, **kw)
        return TransferJob(cfg, transfer_inputs, data=data)

    def encoder(**kw):
        cfg = DistillEncoderConfig(embeddings=root / "unused", out=root / "unused", teacher=str(teacher), layers=1,
                                   batch_size=8, **{"epochs": 1, **kw})
        return EncoderJob(cfg, 16, train=FrameShard(frame), val=FrameShard(frame.iloc[:8]))

    return {"backbone": backbone, "distill": distill, "vae": vae, "transfer": transfer, "encoder": encoder}
