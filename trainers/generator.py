"""The conditional-VAE generator of warm-like embeddings for cold items and users, as a Ray Train job.

The model and its loss are `coldstart/models/vae.py`'s; the loop, checkpoints
and model selection on cold-val NDCG@20 are `trainers/cold_model.py`'s, the
same as the distilled towers', so the two are compared on equal terms.
"""

from __future__ import annotations

from coldstart.models.vae import ConditionalVAE, VAEOptions, VAETraining
from trainers import cold_model
from trainers.common import TrainResult


class GeneratorConfig(cold_model.ColdModelInputs, VAEOptions):
    pass


def build_model(cfg: GeneratorConfig, item_dim: int, user_dim: int, dim: int) -> ConditionalVAE:
    return ConditionalVAE(item_dim, user_dim, dim, cfg.latent, cfg.hidden, cfg.dropout)


def build_training(cfg: GeneratorConfig, model, user_vectors, item_vectors, arrays) -> VAETraining:
    return VAETraining(model, user_vectors=user_vectors, item_vectors=item_vectors,
                       item_features=arrays["item_features"], user_features=arrays["user_features"],
                       beta=cfg.beta, rec=cfg.rec, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       match_warm_scale=cfg.match_warm_scale)


JOB = cold_model.ColdModelJob("vae", GeneratorConfig, build_model, build_training)


def run(cfg: GeneratorConfig, callbacks: list | None = None) -> TrainResult:
    return cold_model.run(JOB, cfg, callbacks)
