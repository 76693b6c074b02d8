"""Top-K ranking metrics, vectorised over a batch of users.

Definitions (per user, then averaged over users):
- Recall@K: hits in the top K over the size of the user's test set.
- Precision@K: hits over K.
- Hit@K: 1 if any test item is in the top K.
- NDCG@K: DCG with gains 1/log2(rank + 1), over the IDCG of min(|test|, K) hits.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("recall", "ndcg", "precision", "hit")


def _discounts(k: int) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))


def topk_hit_matrix(scores: torch.Tensor, truth: torch.Tensor, k: int,
                    tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (B, k): whether the r-th ranked item of each row is a test item.

    Ties are broken by `tie_order` (a permutation of the columns; default their
    index). Breaking them by item index would reward a model that scores
    everything alike whenever ids happen to follow popularity, as MovieLens's do.
    """
    k = min(k, scores.shape[1])
    if tie_order is not None:
        scores, truth = scores[:, tie_order], truth[:, tie_order]
    # A stable sort makes the tie-break exact; topk alone does not promise one.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(truth, 1, order)


def batch_metrics(hits: torch.Tensor, n_true: torch.Tensor, ks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-user metric values (float64, shape (B,)) for each metric@k."""
    out: dict[str, torch.Tensor] = {}
    hits = hits.to(torch.float64)
    n_true = n_true.to(torch.float64)
    disc = _discounts(max(ks))
    ideal_cum = torch.cumsum(disc, 0)
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        dcg = (h * disc[: h.shape[1]]).sum(1)
        idcg = ideal_cum[(torch.clamp(n_true, max=k) - 1).long().clamp(min=0)]
        out[f"recall@{k}"] = n_hit / n_true
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"precision@{k}"] = n_hit / k
        out[f"hit@{k}"] = (n_hit > 0).to(torch.float64)
    return out


def metric_names(ks: tuple[int, ...]) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in METRICS]


def reference_metrics(ranked: list[str], relevant: set[str], k: int) -> dict[str, float]:
    """Plain-Python metrics for one ranked list: the readable definition the tests compare with."""
    top = ranked[:k]
    gains = [1.0 if item in relevant else 0.0 for item in top]
    dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
    idcg = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    n_hit = sum(gains)
    return {f"recall@{k}": n_hit / len(relevant), f"ndcg@{k}": dcg / idcg,
            f"precision@{k}": n_hit / k, f"hit@{k}": float(n_hit > 0)}
