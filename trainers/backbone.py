"""The warm collaborative backbone (matrix factorisation, BPR) as a Ray Train job.

Each worker trains on an equal shard of the train interactions (DDP keeps the
replicas identical), evaluates warm validation NDCG@20 every epoch, and stops
early when it has not improved for `patience` epochs. The loop, checkpoints
and resume are `trainers/loop.py`'s; the artifact keeps the best epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate_set
from coldstart.models.coldstart_model import load_backbone, save_backbone
from coldstart.models.mf import BackboneOptions, BackboneTraining, EmbeddingRecommender, MatrixFactorization, TrainPairs
from trainers.common import TrainResult
from trainers.loop import TrainJob, per_worker, run_job


class BackboneConfig(JobConfig, BackboneOptions):
    split: Path = Field(..., description="Split folder to train on (its train set).")
    out: Path = Field(..., description="Where the backbone artifact is written.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


def train_pairs(data: SplitData, seed: int) -> TrainPairs:
    """The split's train interactions as index pairs, negatives drawn among the warm items the user has not
    interacted with."""
    train = data.split.train
    return TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                      np.flatnonzero(data.warm_items), seed=seed, seen=data.train)


class BackboneJob(TrainJob):
    name = "backbone"
    key = "warm_val_ndcg@20"
    config_class = BackboneConfig

    def __init__(self, cfg: BackboneConfig, data: SplitData | None = None):
        super().__init__(cfg)
        self.data = data or SplitData.from_split(load_split(cfg.split))
        self.pairs = train_pairs(self.data, cfg.seed)

    def build_model(self) -> MatrixFactorization:
        return MatrixFactorization(self.data.n_users, self.data.n_items, self.cfg.dim, self.cfg.init_std)

    def build_training(self, model, device, precision) -> BackboneTraining:
        return BackboneTraining(model, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, device=device,
                                precision=precision)

    def batches(self, epoch, rank, world):
        self.pairs.reseed(self.cfg.seed + 1000 * epoch + rank)  # this rank's negatives
        return self.pairs.batches(per_worker(self.cfg.batch_size, world),
                                  order=self.shard(len(self.pairs), epoch, rank, world))

    def validate(self, model):
        user, item = (t.detach().float().cpu().numpy() for t in (model.user.weight, model.item.weight))
        val = evaluate_set(EmbeddingRecommender(user, item), self.data, self.data.split.sets["warm_val"],
                           self.data.candidates("warm"), ks=(20,))
        return {"warm_val_ndcg@20": val["ndcg@20"]}, 1.0

    def save(self, folder, model, meta):
        user, item = (t.detach().float().cpu().numpy() for t in (model.user.weight, model.item.weight))
        save_backbone(folder, self.data, user, item, meta)

    def load(self, folder):
        _, user, item = load_backbone(folder)
        return {"user.weight": torch.from_numpy(user), "item.weight": torch.from_numpy(item)}


def run(cfg: BackboneConfig, callbacks: list | None = None, context=None) -> TrainResult:
    return run_job(BackboneJob, cfg, callbacks=callbacks, context=context)
