"""The conditional-VAE generator of warm-like embeddings for cold items and users, as a Ray Train job.

The model and its loss are `coldstart/models/vae.py`'s; model selection on
cold-val NDCG@20 is `trainers/cold_model.py`'s, the same as the distilled
towers', so the two are compared on equal terms.
"""

from __future__ import annotations

from coldstart.models.vae import ConditionalVAE, VAEOptions, VAETraining
from trainers import cold_model
from trainers.common import TrainResult


class GeneratorConfig(cold_model.ColdModelInputs, VAEOptions):
    pass


class VAEJob(cold_model.ColdModelJob):
    name = "vae"
    config_class = GeneratorConfig

    def build_model(self) -> ConditionalVAE:
        return ConditionalVAE(*self.dims, self.cfg.latent, self.cfg.hidden, self.cfg.dropout)

    def build_training(self, model, device, precision) -> VAETraining:
        cfg = self.cfg
        return VAETraining(model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                           item_features=self.arrays["item_features"], user_features=self.arrays["user_features"],
                           beta=cfg.beta, rec=cfg.rec, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           match_warm_scale=cfg.match_warm_scale, device=device, precision=precision)


def run(cfg: GeneratorConfig, callbacks: list | None = None, context=None) -> TrainResult:
    return cold_model.run(VAEJob, cfg, callbacks, context)
