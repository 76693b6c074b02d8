"""The warm collaborative backbone: matrix factorisation trained with BPR.

It only knows users and items seen in train; an entity it never saw has a
zero vector (never learnt from anything), so it cannot rank cold items.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from coldstart.training import StepTraining


class BackboneOptions(BaseModel):
    """Hyper-parameters of the backbone, shared by `coldstart train backbone` and the pipeline."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(64, gt=0, description="Embedding dimension.")
    epochs: int = Field(500, gt=0, description="Most epochs (early stopping ends it well before).")
    patience: int = Field(10, gt=0, description="Stop after this many epochs without a better warm-val NDCG@20.")
    batch_size: int = Field(4096, gt=0, description="Interactions per step, over all workers.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="L2 on the embeddings of each batch.")
    init_std: float | None = Field(None, gt=0, description="Std of normal initial rows; null: Xavier-uniform.")
    seed: int = Field(42, description="Seed of initialisation and sampling.")


class MatrixFactorization(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64, init_std: float | None = None):
        """`init_std` None: Xavier-uniform rows (the toolkits' choice); else normal with that std."""
        super().__init__()
        self.config = {"n_users": n_users, "n_items": n_items, "dim": dim}
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        for table in (self.user, self.item):
            if init_std is None:
                nn.init.xavier_uniform_(table.weight)
            else:
                nn.init.normal_(table.weight, std=init_std)

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        """Scores of (user, pos) and (user, neg), and the squared norms of the rows used.

        One call per step, so DDP sees a single forward before each backward.
        """
        u, p, n = self.user(users), self.item(pos), self.item(neg)
        sq = u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()
        return (u * p).sum(-1), (u * n).sum(-1), sq


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return -nn.functional.logsigmoid(pos - neg).mean()


class TrainPairs:
    """Train (user, item) pairs with uniform negative sampling among warm items.

    With `seen` (users x items, nonzero where the user interacted), a negative the
    user interacted with is drawn again, so BPR never pushes a positive down.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, warm_items: np.ndarray, seed: int = 0,
                 seen: "sp.csr_matrix | None" = None):
        self.users, self.items = users.astype(np.int64), items.astype(np.int64)
        self.warm_items = warm_items.astype(np.int64)
        self.rng = np.random.default_rng(seed)
        self.seen = seen

    def __len__(self) -> int:
        return len(self.users)

    def reseed(self, seed: int) -> None:
        """Seed the negatives each epoch from (seed, epoch, rank): a run resumed from a checkpoint then draws
        the same negatives as one never interrupted."""
        self.rng = np.random.default_rng(seed)

    def batches(self, batch_size: int, order: np.ndarray | None = None) -> Iterable[tuple[torch.Tensor, ...]]:
        """(user, pos, neg) batches over the pairs at `order` (a rank's shard of the epoch, from the training
        skeleton's `epoch_shard`), or over all of them shuffled."""
        order = self.rng.permutation(len(self.users)) if order is None else np.asarray(order, np.int64)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            neg = self.negatives(self.users[idx])
            yield (torch.from_numpy(self.users[idx]), torch.from_numpy(self.items[idx]), torch.from_numpy(neg))


    def negatives(self, users: np.ndarray) -> np.ndarray:
        neg = self.warm_items[self.rng.integers(0, len(self.warm_items), len(users))]
        if self.seen is None:
            return neg
        clash = np.flatnonzero(np.asarray(self.seen[users, neg]).ravel())
        for _ in range(20):  # a user who interacted with nearly everything keeps a rare clash
            if not len(clash):
                break
            neg[clash] = self.warm_items[self.rng.integers(0, len(self.warm_items), len(clash))]
            clash = clash[np.asarray(self.seen[users[clash], neg[clash]]).ravel() > 0]
        return neg


class BackboneTraining(StepTraining):
    """BPR plus L2 on the batch's embeddings; the Ray worker loop, Tune and tests all drive `train_epoch`."""

    def __init__(self, model: nn.Module, *, lr: float = 5e-3, weight_decay: float = 1e-4, device=None,
                 precision: str = "fp32"):
        super().__init__(model, torch.optim.Adam(model.parameters(), lr=lr), device=device, precision=precision)
        self.weight_decay = weight_decay

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        users, pos, neg = batch
        pos_scores, neg_scores, sq = self.model(users, pos, neg)
        bpr = bpr_loss(pos_scores, neg_scores)
        return bpr + self.weight_decay * sq / len(users), {"bpr": bpr}


class EmbeddingRecommender:
    """Score = user vector . item vector; what the evaluator and the index consume."""

    def __init__(self, user_vectors: np.ndarray, item_vectors: np.ndarray, name: str = "model",
                 item_bias: np.ndarray | None = None):
        self.user_vectors = np.asarray(user_vectors, np.float32)
        self.item_vectors = np.asarray(item_vectors, np.float32)
        self.item_bias = None if item_bias is None else np.asarray(item_bias, np.float32)
        self.name = name

    def score(self, users: np.ndarray) -> np.ndarray:
        out = self.user_vectors[users] @ self.item_vectors.T
        if self.item_bias is not None:
            out += self.item_bias
        return out
