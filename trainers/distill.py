"""Distillation into student towers for cold items and users, as a Ray Train job.

The towers learn from the warm backbone (interaction BPR, alignment, ranking
distillation; see `coldstart/models/towers.py`); model selection on cold-val
NDCG@20 is `trainers/cold_model.py`'s, the loop `trainers/loop.py`'s.
"""

from __future__ import annotations

from coldstart.models.towers import ColdStartTowers, DistillWeights, TowerOptions, TowerTraining
from trainers import cold_model
from trainers.common import TrainResult


class DistillConfig(cold_model.ColdModelInputs, TowerOptions):
    pass


class DistillJob(cold_model.ColdModelJob):
    name = "distill"
    config_class = DistillConfig

    def build_model(self) -> ColdStartTowers:
        return ColdStartTowers(*self.dims, self.cfg.hidden, self.cfg.dropout)

    def build_training(self, model, device, precision) -> TowerTraining:
        cfg = self.cfg
        weights = DistillWeights(cfg.bpr, cfg.align, cfg.distill, cfg.temperature, cfg.teacher_backbone,
                                 cfg.teacher_llm)
        return TowerTraining(model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                             item_features=self.arrays["item_features"], user_features=self.arrays["user_features"],
                             user_text=self.arrays["user_text"], item_text=self.arrays["item_text"], weights=weights,
                             lr=cfg.lr, weight_decay=cfg.weight_decay, device=device, precision=precision)


def run(cfg: DistillConfig, callbacks: list | None = None, context=None) -> TrainResult:
    return cold_model.run(DistillJob, cfg, callbacks, context)
