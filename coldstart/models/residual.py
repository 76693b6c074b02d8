"""knn-residual: knn-bag's vector plus a correction learnt on the warm entities.

knn-bag places a new item at the mean backbone vector of its content neighbours. What it gets wrong is
systematic enough to learn: each warm entity is placed as knn-bag would place it if it were new (its own
row left out of its neighbours), and a ridge regression from its content (unit text vector, unit
attribute one-hots, a bias) to the gap between its real vector and that placement is fitted on all of
them, each weighted by its training interactions (capped: a vector one user taught is mostly noise). The
ridge strength is chosen by k-fold cross-validation over the warm entities alone, never on validation
users or items. A new entity gets knn-bag's vector plus the regression's prediction.

Measured (benchmarks/RESULTS.md, "Item cold-start quality"): test cold NDCG@20 1.030x knn-bag over nine
ml-100k item-cold seeds (inside the noise; 0.985x on the last three) and 1.073x over three ml-1m seeds;
in mixed lists of old and new items it is above knn-bag on every seed measured. The cross-validation
picked the same strength on each; picking it on cold-val would have taken the corrections test liked least.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from coldstart.models.kinds import COLD_MODELS, cold_model
from coldstart.models.neighbours import MIN_INTERACTIONS, EnsembleGenerator, KNNGenerator, neighbour_pool

ALPHAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)  # ridge strengths cross-validated
FOLDS = 5
WEIGHT_CAP = 50  # an entity's weight: its training interactions, at most this many


def design(features, text_dim: int):
    """[unit text vector | unit attributes | 1]: numpy or torch rows of content features."""
    if isinstance(features, np.ndarray):
        parts = [np.asarray(features[:, :text_dim], np.float64), np.asarray(features[:, text_dim:], np.float64)]
        units = [p / np.where((n := np.linalg.norm(p, axis=1, keepdims=True)) > 0, n, 1.0) for p in parts]
        return np.hstack([*units, np.ones((len(features), 1))])
    parts = [features[:, :text_dim], features[:, text_dim:]]
    units = [p / p.norm(dim=1, keepdim=True).clamp_min(1e-12) for p in parts]
    return torch.cat([*units, torch.ones(len(features), 1, dtype=features.dtype, device=features.device)], dim=1)


def ridge_cv(x: np.ndarray, y: np.ndarray, weights: np.ndarray, alphas=ALPHAS, folds: int = FOLDS,
             seed: int = 0) -> tuple[np.ndarray, float, dict[float, float]]:
    """(coefficients, the strength with the least weighted held-out squared error, each strength's error
    relative to the least) of a weighted ridge regression `x @ B ~ y`, strengths compared over `folds` folds."""
    fold = np.random.default_rng(seed).integers(0, folds, len(x))
    root = np.sqrt(weights)[:, None]

    def solve(rows, alpha):
        xw, yw = x[rows] * root[rows], y[rows] * root[rows]
        return np.linalg.solve(xw.T @ xw + alpha * np.eye(x.shape[1]), xw.T @ yw)

    errors = {}
    for alpha in alphas:
        errors[alpha] = float(sum((weights[fold == f, None] * (x[fold == f] @ solve(fold != f, alpha)
                                                                - y[fold == f]) ** 2).sum()
                                  for f in range(folds) if (fold == f).any() and (fold != f).any()))
    best = min(errors, key=errors.get)
    low = errors[best] or 1.0
    return solve(np.ones(len(x), bool), best), best, {a: e / low for a, e in errors.items()}


def _positions(pool: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Each of `rows`' position among the pool's entities (the neighbours' order), -1 where not in it."""
    position = np.cumsum(pool) - 1
    return torch.as_tensor(np.where(pool[rows], position[rows], -1), dtype=torch.long)


def leave_one_out(bag: EnsembleGenerator, side: str, features: np.ndarray, rows: np.ndarray,
                  pool: np.ndarray) -> np.ndarray:
    """knn-bag's placement of the warm entities `rows` as if each were new: its own row left out of its
    neighbours in every member."""
    exclude = _positions(pool, rows)
    x = torch.as_tensor(np.asarray(features[rows], np.float32))
    placed = []
    with torch.no_grad():
        for member in bag.members:
            if not isinstance(member, KNNGenerator):
                raise TypeError(f"knn-residual's prior must be knn-bag (kNN members); got {type(member).__name__}")
            neighbours = member.item_content if side == "item" else member.user_content
            if len(neighbours) != int(pool.sum()):
                raise ValueError(f"knn-bag's {side} neighbours ({len(neighbours)}) are not the pool "
                                 f"({int(pool.sum())}) the residual leaves rows out of")
            placed.append(getattr(member, f"generate_{side}s")(x, exclude).numpy())
    mean = np.mean(placed, axis=0)
    if side == "user":
        mean = bag.user_center.numpy() + bag.user_shrink * (mean - bag.user_center.numpy())
    return mean


@cold_model
class ResidualGenerator(nn.Module):
    """knn-bag's vector plus a linear correction of it learnt on warm entities (module docstring)."""

    KIND = "coldstart-knn-residual"

    def __init__(self, prior: dict, item_in: int, user_in: int, dim: int, text_dim: int,
                 item_alpha: float | None = None, user_alpha: float | None = None):
        """`prior`: {"kind": ..., "config": ...} of the knn-bag it corrects; the alphas are the strengths the
        cross-validation chose (a record: the weights are what serve)."""
        super().__init__()
        self.config = {"prior": prior, "item_in": item_in, "user_in": user_in, "dim": dim, "text_dim": text_dim,
                       "item_alpha": item_alpha, "user_alpha": user_alpha}
        self.prior = COLD_MODELS[prior["kind"]](**prior["config"])
        self.text_dim = text_dim
        self.register_buffer("item_weights", torch.zeros(item_in + 1, dim))
        self.register_buffer("user_weights", torch.zeros(user_in + 1, dim))

    @classmethod
    def fit(cls, bag: EnsembleGenerator, *, item_features: np.ndarray, user_features: np.ndarray,
            item_vectors: np.ndarray, user_vectors: np.ndarray, warm_items: np.ndarray, warm_users: np.ndarray,
            item_counts: np.ndarray, user_counts: np.ndarray, text_dim: int, seed: int = 0) -> "ResidualGenerator":
        """Fit each side's correction of `bag` (made by `KNNGenerator.bag` over the same arrays)."""
        model = cls({"kind": bag.KIND, "config": bag.config}, item_features.shape[1], user_features.shape[1],
                    item_vectors.shape[1], text_dim)
        model.prior.load_state_dict(bag.state_dict())
        sides = {"item": (item_features, item_vectors, warm_items, item_counts,
                          neighbour_pool(warm_items, item_counts, MIN_INTERACTIONS)),
                 "user": (user_features, user_vectors, warm_users, user_counts, np.asarray(warm_users, bool))}
        for side, (features, vectors, warm, counts, pool) in sides.items():
            rows = np.flatnonzero(warm)
            if len(rows) < FOLDS or not pool.any():
                continue  # nothing to learn from: the correction stays zero
            gap = vectors[rows] - leave_one_out(bag, side, features, rows, pool)
            weights = np.minimum(np.asarray(counts)[rows], WEIGHT_CAP).astype(np.float64)
            coefficients, alpha, _ = ridge_cv(design(features[rows], text_dim), gap, np.maximum(weights, 1.0),
                                              seed=seed)
            getattr(model, f"{side}_weights").copy_(torch.as_tensor(coefficients, dtype=torch.float32))
            model.config[f"{side}_alpha"] = alpha
        return model.eval()

    def refit(self, **arrays) -> "ResidualGenerator | None":
        """Its knn-bag refitted on `arrays` (`KNNGenerator.refit`'s) and the correction learnt again over the
        warm entities there, its strength cross-validated again (`coldstart.pseudo_cold`)."""
        prior = self.prior.refit(**arrays)
        return None if prior is None else type(self).fit(prior, **arrays, text_dim=self.text_dim)

    def generate_items(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.prior.generate_items(x) + design(x, self.text_dim) @ self.item_weights

    def generate_users(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.prior.generate_users(x) + design(x, self.text_dim) @ self.user_weights
