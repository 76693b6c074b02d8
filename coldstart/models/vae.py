"""Conditional VAE generator: warm-like collaborative embeddings from content.

For each side (items, users) a CVAE learns the distribution of the warm
backbone's embedding `e` given the entity's content `c`:

- encoder q(z | e, c) and a conditional prior p(z | c), both diagonal Gaussians;
- a decoder (z, c) -> e in the backbone's space;
- loss = reconstruction (squared error, summed over dimensions) + beta * KL(q || p),
  plus an optional recommendation loss (BPR against the backbone's other side)
  on the embeddings generated from the prior's mean, the path a cold entity takes.

A cold entity, which has no `e`, gets decoder(mean of p(z | c), c); `sample=True`
draws z from the prior instead, for diversity.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from coldstart.models.kinds import cold_model
from coldstart.models.layers import Dropout
from coldstart.models.mf import bpr_loss
from coldstart.training import StepTraining, unwrap

LOGVAR_RANGE = (-8.0, 8.0)  # keeps exp(logvar) and the KL finite whatever the batch


class VAEOptions(BaseModel):
    """Hyper-parameters of the generator, shared by `coldstart train vae`, Tune and the pipeline."""

    model_config = ConfigDict(extra="forbid")
    latent: int = Field(32, gt=0, description="Latent size of z.")
    hidden: int = Field(256, gt=0, description="Hidden width of encoder, prior and decoder.")
    beta: float = Field(0.1, ge=0, description="Weight of KL(q(z|e,c) || p(z|c)).")
    rec: float = Field(1.0, ge=0, description="Weight of the BPR loss on embeddings generated from the prior mean.")
    match_warm_scale: bool = Field(False, description="Rescale generations to the warm embeddings' mean norm "
                                                      "(they come out shorter; ranking prefers them so).")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on the content input and hidden layers.")
    epochs: int = Field(30, gt=0, description="Most epochs.")
    patience: int = Field(6, gt=0, description="Stop after this many epochs without a better cold-val NDCG@20.")
    batch_size: int = Field(1024, gt=0, description="Interactions per step, over all workers.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Seed of initialisation and sampling.")


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, out_dim))


class GaussianHead(nn.Module):
    """x -> (mean, log-variance) of a diagonal Gaussian."""

    def __init__(self, in_dim: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * latent, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=-1)
        return mean, logvar.clamp(*LOGVAR_RANGE)


class EntityCVAE(nn.Module):
    def __init__(self, content_dim: int, dim: int, latent: int, hidden: int, dropout: float):
        super().__init__()
        self.content_dropout = Dropout(dropout)
        self.posterior = GaussianHead(dim + content_dim, hidden, latent, dropout)
        self.prior = GaussianHead(content_dim, hidden, latent, dropout)
        self.decoder = mlp(latent + content_dim, hidden, dim, dropout)
        # Generations from the prior's mean regress towards the average embedding and come out shorter
        # than warm ones (0.41x on ml-100k). That shrinkage is what uncertainty should do to a ranking
        # score: matching the warm scale cost the all-items NDCG@20 0.17 -> 0.12 there. So `scale` stays 1
        # unless a consumer asks for warm-scaled vectors (`match_warm_scale`).
        self.register_buffer("scale", torch.ones(()))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, c], dim=-1))

    def decode_many(self, zs: list[torch.Tensor], c: torch.Tensor) -> list[torch.Tensor]:
        """`decode(z, c)` for each z of `zs` with the same `c`: the first layer's content half is computed once
        (the same sums as `decode`; training decodes every row twice, from the posterior and the prior)."""
        first, rest = self.decoder[0], self.decoder[1:]
        latent = zs[0].shape[-1]
        from_c = nn.functional.linear(c, first.weight[:, latent:], first.bias)
        return [rest(nn.functional.linear(z, first.weight[:, :latent]) + from_c) for z in zs]

    def forward(self, e: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction, KL per row, and the prior-mean generation of the same rows."""
        c = self.content_dropout(c)
        q_mean, q_logvar = self.posterior(torch.cat([e, c], dim=-1))
        p_mean, p_logvar = self.prior(c)
        z = q_mean + torch.randn_like(q_mean) * (0.5 * q_logvar).exp() if self.training else q_mean
        kl = 0.5 * (p_logvar - q_logvar + (q_logvar.exp() + (q_mean - p_mean).pow(2)) / p_logvar.exp() - 1).sum(-1)
        recon, generated = self.decode_many([z, p_mean], c)
        return {"recon": recon, "kl": kl, "generated": generated}

    def generate(self, c: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        p_mean, p_logvar = self.prior(c)
        z = p_mean
        if sample:
            # `generator`, when given, lives on the model's device (noise is drawn where the model runs).
            noise = torch.randn(p_mean.shape, generator=generator, device=p_mean.device, dtype=p_mean.dtype)
            z = p_mean + noise * (0.5 * p_logvar).exp()
        return self.decode(z, c) * self.scale

    @torch.no_grad()
    def calibrate(self, e: torch.Tensor, c: torch.Tensor, apply: bool) -> float:
        """Mean norm of prior-mean generations / mean norm of the warm embeddings `e` they stand for;
        with `apply`, set `scale` so that the ratio becomes 1."""
        was_training = self.training
        self.eval()
        generated = self.generate(c).norm(dim=-1).mean() / self.scale
        ratio = float(generated / e.norm(dim=-1).mean().clamp_min(1e-12))
        if apply:
            self.scale.fill_(1.0 / max(ratio, 1e-12))
        self.train(was_training)
        return ratio


@cold_model
class ConditionalVAE(nn.Module):
    """One CVAE for items and one for users; the cold-start generator `coldstart train vae` trains."""

    KIND = "coldstart-vae"

    def __init__(self, item_in: int, user_in: int, dim: int, latent: int = 32, hidden: int = 256,
                 dropout: float = 0.2):
        super().__init__()
        self.config = {"item_in": item_in, "user_in": user_in, "dim": dim, "latent": latent, "hidden": hidden,
                       "dropout": dropout}
        self.item = EntityCVAE(item_in, dim, latent, hidden, dropout)
        self.user = EntityCVAE(user_in, dim, latent, hidden, dropout)

    def forward(self, item_e, item_x, user_e, user_x) -> tuple[dict, dict]:
        return self.item(item_e, item_x), self.user(user_e, user_x)

    def generate_items(self, x: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return self.item.generate(x, sample, generator)

    def generate_users(self, x: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return self.user.generate(x, sample, generator)


class VAETraining(StepTraining):
    """Reconstruction + beta * KL + rec * BPR over (user, pos, neg) batches; calibrates the scale after each epoch."""

    def __init__(self, model: nn.Module, *, user_vectors: np.ndarray, item_vectors: np.ndarray,
                 item_features: np.ndarray, user_features: np.ndarray, beta: float = 0.1, rec: float = 1.0,
                 lr: float = 1e-3, weight_decay: float = 1e-5, match_warm_scale: bool = False, device=None,
                 precision: str = "fp32"):
        super().__init__(model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay),
                         device=device, precision=precision)
        self.U, self.V = self.place(user_vectors), self.place(item_vectors)
        self.item_x, self.user_x = self.place(item_features), self.place(user_features)
        self.beta, self.rec, self.match_warm_scale = beta, rec, match_warm_scale
        self.seen_items = torch.zeros(len(self.V), dtype=torch.bool, device=self.device)
        self.seen_users = torch.zeros(len(self.U), dtype=torch.bool, device=self.device)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        users, pos, neg = batch
        items = torch.unique(torch.cat([pos, neg]))
        batch_users = torch.unique(users)
        self.seen_items[items], self.seen_users[batch_users] = True, True
        out_i, out_u = self.model(self.V[items], self.item_x[items], self.U[batch_users], self.user_x[batch_users])
        recon = (out_i["recon"].float() - self.V[items]).pow(2).sum(-1).mean() \
            + (out_u["recon"].float() - self.U[batch_users]).pow(2).sum(-1).mean()
        kl = out_i["kl"].float().mean() + out_u["kl"].float().mean()
        where = torch.searchsorted(items, torch.stack([pos, neg]))
        g_pos, g_neg = out_i["generated"][where[0]], out_i["generated"][where[1]]
        h = out_u["generated"][torch.searchsorted(batch_users, users)]
        U = self.U[users]
        rec = bpr_loss((U * g_pos).sum(-1), (U * g_neg).sum(-1)) \
            + bpr_loss((h * self.V[pos]).sum(-1), (h * self.V[neg]).sum(-1))
        return recon + self.beta * kl + self.rec * rec, {"recon": recon, "kl": kl, "rec": rec}

    def train_epoch(self, batches) -> dict[str, float]:
        self.seen_items.zero_()
        self.seen_users.zero_()
        metrics = super().train_epoch(batches)
        vae = unwrap(self.model)
        apply = self.match_warm_scale
        scales = {"item_norm_ratio": vae.item.calibrate(self.V[self.seen_items], self.item_x[self.seen_items], apply),
                  "user_norm_ratio": vae.user.calibrate(self.U[self.seen_users], self.user_x[self.seen_users], apply)}
        return {**metrics, **scales}
