"""What every cold-start generator job shares: distilled towers and the conditional VAE.

Inputs: a split, the LLM embeddings of its items and users (`coldstart embed`)
and the warm backbone (`coldstart train backbone`). Each worker trains on an
equal shard of the train interactions (DDP), then validates on the cold, warm
and all val sets. Model selection and early stopping are per path: the
generator kept is that of the best cold-val NDCG@20 epoch (the warm path is the
backbone, selected on warm-val when it was trained), because selecting on
all-val, which warm items dominate, leaves a cold mapper barely trained.

A generator job subclasses `ColdModelJob` with how to build its model and its
batch step; the loop, checkpoints and resume are `trainers/loop.py`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.content import build_content
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.coldstart_model import load_backbone, load_cold_model, save_cold_model
from coldstart.models.mf import EmbeddingRecommender
from coldstart.models.towers import cold_start_vectors
from trainers.backbone import train_pairs
from trainers.common import TrainResult
from trainers.loop import TrainJob, per_worker, run_job


class ColdModelInputs(JobConfig):
    split: Path = Field(..., description="Split folder.")
    embeddings: Path = Field(..., description="LLM embeddings of the split's items and users (coldstart embed).")
    backbone: Path = Field(..., description="Warm backbone artifact (coldstart train backbone).")
    out: Path = Field(..., description="Where the cold-start model artifact is written.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


class ColdModelJob(TrainJob):
    """A generator of backbone-space vectors from content; subclasses build the model and its step."""

    key = "cold_val_ndcg@20"

    def __init__(self, cfg, arrays: dict, content: dict, data: SplitData | None = None):
        super().__init__(cfg)
        self.data = data or SplitData.from_split(load_split(cfg.split))
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.content = content
        _, self.user_vectors, self.item_vectors = load_backbone(cfg.backbone)
        self.warm_users = self.data.train.getnnz(axis=1) > 0
        self.pairs = train_pairs(self.data, cfg.seed)

    @property
    def dims(self) -> tuple[int, int, int]:
        """(item feature width, user feature width, backbone dimension)."""
        return (self.arrays["item_features"].shape[1], self.arrays["user_features"].shape[1],
                self.user_vectors.shape[1])

    def batches(self, epoch, rank, world):
        self.pairs.reseed(self.cfg.seed + 1000 * epoch + rank)  # this rank's negatives
        return self.pairs.batches(per_worker(self.cfg.batch_size, world),
                                  order=self.shard(len(self.pairs), epoch, rank, world))

    def vectors(self, model) -> tuple[np.ndarray, np.ndarray]:
        return cold_start_vectors(model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                                  warm_users=self.warm_users, warm_items=self.data.warm_items,
                                  user_features=self.arrays["user_features"],
                                  item_features=self.arrays["item_features"])

    def validate(self, model):
        val = evaluate(EmbeddingRecommender(*self.vectors(model)), self.data, on="val-select", ks=(20,))
        return {f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}, 1.0

    def save(self, folder, model, meta):
        save_cold_model(folder, self.data, model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                        user_features=self.arrays["user_features"], item_features=self.arrays["item_features"],
                        content=self.content, meta=meta)

    def load(self, folder):
        return load_cold_model(folder)[1].state_dict()


def run(job_class: type[ColdModelJob], cfg, callbacks: list | None = None, context=None) -> TrainResult:
    """Build the content features once on the driver, then train on Ray Train and keep the best epoch."""
    data = SplitData.from_split(load_split(cfg.split))
    item_features, user_features, user_text, item_text, spec = build_content(data, cfg.embeddings)
    arrays = {"item_features": item_features, "user_features": user_features, "user_text": user_text,
              "item_text": item_text}
    return run_job(job_class, cfg, inputs={"arrays": arrays, "content": spec.to_json()}, callbacks=callbacks,
                   context=context)
