"""Distillation into student towers for cold items and users, as a Ray Train job.

The towers learn from the warm backbone (interaction BPR, alignment, ranking
distillation; see `coldstart/models/towers.py`); the loop, checkpoints and model
selection on cold-val NDCG@20 are `trainers/cold_model.py`'s.
"""

from __future__ import annotations

from coldstart.models.towers import ColdStartTowers, DistillWeights, TowerOptions, TowerTraining
from trainers import cold_model
from trainers.common import TrainResult


class DistillConfig(cold_model.ColdModelInputs, TowerOptions):
    pass


def build_model(cfg: DistillConfig, item_dim: int, user_dim: int, dim: int) -> ColdStartTowers:
    return ColdStartTowers(item_dim, user_dim, dim, cfg.hidden, cfg.dropout)


def build_training(cfg: DistillConfig, model, user_vectors, item_vectors, arrays) -> TowerTraining:
    weights = DistillWeights(cfg.bpr, cfg.align, cfg.distill, cfg.temperature, cfg.teacher_backbone, cfg.teacher_llm)
    return TowerTraining(model, user_vectors=user_vectors, item_vectors=item_vectors,
                         item_features=arrays["item_features"], user_features=arrays["user_features"],
                         user_text=arrays["user_text"], item_text=arrays["item_text"], weights=weights,
                         lr=cfg.lr, weight_decay=cfg.weight_decay)


JOB = cold_model.ColdModelJob("distill", DistillConfig, build_model, build_training)


def run(cfg: DistillConfig, callbacks: list | None = None) -> TrainResult:
    return cold_model.run(JOB, cfg, callbacks)
