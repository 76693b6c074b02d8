"""Student towers: content -> the backbone's embedding space, for cold items and users.

The item tower maps an item's content (LLM text vector + attribute one-hots)
to a vector in the warm backbone's space; the user tower does the same for a
user's profile. They are trained on warm entities with three losses:

- interaction (BPR) against the backbone's fixed vectors of the other side;
- alignment (MSE) to the backbone's own vector of the entity;
- ranking distillation, `-sum_k p_teacher(k) log p_student(k)` at a
  temperature, over the batch's items, where the teacher is the backbone, the
  LLM similarity of user text and item text, or a weighted mix.

Scoring keeps a warm entity's backbone vector and gives a cold one its tower
vector. A cold entity has no train interactions, so nothing it is scored with
was learnt from its own interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from coldstart.models.kinds import cold_model
from coldstart.models.layers import Dropout
from coldstart.models.mf import bpr_loss
from coldstart.training import StepTraining, as_input, unwrap


class TowerOptions(BaseModel):
    """Hyper-parameters of the student towers, shared by `coldstart train distill` and the pipeline."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(256, gt=0, description="Tower hidden width.")
    dropout: float = Field(0.5, ge=0, lt=1, description="Tower dropout.")
    epochs: int = Field(30, gt=0, description="Most epochs.")
    patience: int = Field(6, gt=0, description="Stop after this many epochs without a better cold-val NDCG@20.")
    batch_size: int = Field(1024, gt=0, description="Interactions per step, over all workers.")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="AdamW weight decay.")
    bpr: float = Field(1.0, ge=0, description="Weight of the interaction (BPR) loss.")
    align: float = Field(1.0, ge=0, description="Weight of alignment to the backbone's vectors.")
    distill: float = Field(1.0, ge=0, description="Weight of ranking distillation.")
    temperature: float = Field(1.0, gt=0, description="Temperature of the teacher and student distributions.")
    teacher_backbone: float = Field(1.0, ge=0, description="Teacher mix: weight of backbone scores.")
    teacher_llm: float = Field(0.0, ge=0, description="Teacher mix: weight of LLM user-text x item-text similarity.")
    seed: int = Field(42, description="Seed of initialisation and sampling.")


class Tower(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@cold_model
class ColdStartTowers(nn.Module):
    KIND = "coldstart-towers"

    def __init__(self, item_in: int, user_in: int, dim: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.config = {"item_in": item_in, "user_in": user_in, "dim": dim, "hidden": hidden, "dropout": dropout}
        self.item_tower = Tower(item_in, hidden, dim, dropout)
        self.user_tower = Tower(user_in, hidden, dim, dropout)

    def forward(self, item_x: torch.Tensor, user_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item_tower(item_x), self.user_tower(user_x)

    def generate_items(self, x: torch.Tensor) -> torch.Tensor:
        return self.item_tower(x)

    def generate_users(self, x: torch.Tensor) -> torch.Tensor:
        return self.user_tower(x)


@dataclass
class DistillWeights:
    bpr: float = 1.0
    align: float = 1.0
    distill: float = 1.0
    temperature: float = 1.0
    teacher_backbone: float = 1.0  # mix of teachers: backbone scores ...
    teacher_llm: float = 0.0  # ... and LLM user-text x item-text similarity


class TowerTraining(StepTraining):
    """Interaction, alignment and ranking-distillation losses over (user, pos, neg) batches."""

    def __init__(self, model: nn.Module, *, user_vectors: np.ndarray, item_vectors: np.ndarray,
                 item_features: np.ndarray, user_features: np.ndarray, weights: DistillWeights,
                 user_text: np.ndarray | None = None, item_text: np.ndarray | None = None,
                 lr: float = 1e-3, weight_decay: float = 1e-5, device=None, precision: str = "fp32"):
        super().__init__(model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay),
                         device=device, precision=precision)
        self.U, self.V = self.place(user_vectors), self.place(item_vectors)
        self.item_x, self.user_x = self.place(item_features), self.place(user_features)
        self.user_text, self.item_text = self.place(user_text), self.place(item_text)
        self.w = weights

    def teacher_logits(self, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """The teacher's scores of `cands` for `users`: backbone, LLM user-text x item-text, or a mix."""
        logits = self.w.teacher_backbone * (self.U[users] @ self.V[cands].T)
        if self.w.teacher_llm and self.user_text is not None and self.item_text is not None:
            # Cosines live in [-1, 1]; scale them to the backbone's logit range.
            scale = self.U[users].norm(dim=1).mean() * self.V[cands].norm(dim=1).mean()
            logits = logits + self.w.teacher_llm * scale * (self.user_text[users] @ self.item_text[cands].T)
        return logits / self.w.temperature

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted sum of the three terms. A term of weight 0 is still measured and reported, outside the
        autograd graph: the regression baseline (alignment alone) spent most of its backward pass on the other two."""
        users, pos, neg = batch
        cands = torch.unique(torch.cat([pos, neg]))
        batch_users, user_at = torch.unique(users, return_inverse=True)  # each user's tower runs once a batch
        g_cands, h_batch = self.model(self.item_x[cands], self.user_x[batch_users])
        h_users = h_batch[user_at]
        U, V = self.U[users], self.V[cands]

        def item_bpr():
            where = torch.searchsorted(cands, torch.stack([pos, neg]))
            return bpr_loss((U * g_cands[where[0]]).sum(-1), (U * g_cands[where[1]]).sum(-1))

        def user_bpr():
            return bpr_loss((h_users * self.V[pos]).sum(-1), (h_users * self.V[neg]).sum(-1))

        def align():
            return nn.functional.mse_loss(g_cands, V) + nn.functional.mse_loss(h_users, U)

        def distill():
            teacher = torch.softmax(self.teacher_logits(users, cands), dim=1)
            t = self.w.temperature
            return ranking_distillation(teacher, U @ g_cands.T / t) + ranking_distillation(teacher, h_users @ V.T / t)

        terms = {"item_bpr": (self.w.bpr, item_bpr), "user_bpr": (self.w.bpr, user_bpr), "align": (self.w.align, align),
                 "distill": (self.w.distill, distill)}
        parts, loss = {}, None
        for name, (weight, term) in terms.items():
            with torch.set_grad_enabled(bool(weight) and torch.is_grad_enabled()):
                parts[name] = term()
            if weight:
                loss = weight * parts[name] if loss is None else loss + weight * parts[name]
        if loss is None:  # every weight 0: nothing to learn, the loss is still a number with a graph
            loss = 0.0 * (g_cands.sum() + h_batch.sum())
        return loss, parts


def ranking_distillation(teacher: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's softmax over the candidates against the teacher's distribution
    (KL up to the teacher's entropy, a constant for the student)."""
    return -(teacher * torch.log_softmax(student_logits.float(), dim=1)).sum(1).mean()


@torch.no_grad()
def cold_start_vectors(model: nn.Module, *, user_vectors: np.ndarray, item_vectors: np.ndarray,
                       warm_users: np.ndarray, warm_items: np.ndarray, user_features: np.ndarray,
                       item_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backbone vectors for warm entities, generated ones (towers or VAE) for the others."""
    generator = unwrap(model)
    was_training = generator.training
    generator.eval()
    users = np.asarray(user_vectors, np.float32).copy()
    items = np.asarray(item_vectors, np.float32).copy()
    cold_u, cold_i = np.flatnonzero(~warm_users), np.flatnonzero(~warm_items)
    if len(cold_i):
        items[cold_i] = generator.generate_items(as_input(item_features[cold_i], generator)).float().cpu().numpy()
    if len(cold_u):
        users[cold_u] = generator.generate_users(as_input(user_features[cold_u], generator)).float().cpu().numpy()
    generator.train(was_training)
    return users, items
