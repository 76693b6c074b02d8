"""Online warm-up: a cold entity's vector moves from its content prior toward what its interactions say.

An item (or user) placed from its content has a prior vector `p`. Each user who
interacts with it says its score for them should be that of a typical positive
(`target`, the median score of training interactions under the backbone). The
new vector is the ridge least-squares fold-in, with everything else frozen:

    v = argmin_v  sum_j (x_j . v - target)^2  +  strength * |v - p|^2
      = (X'X + strength I)^-1 (target X'1 + strength p)

where the x_j are the interacting users' (or items') vectors. With no
interaction it is the prior; each interaction pulls harder, so the blend of
content and interactions follows their count. `strength` is `prior_weight`
times the typical squared norm of the x's: the prior counts as about
`prior_weight` interactions. One solve of a d x d system (d = 64): tens of
microseconds, whatever the catalogue's size.
"""

from __future__ import annotations

import numpy as np


def fold_in(prior: np.ndarray, others: np.ndarray, target: float, strength: float) -> np.ndarray:
    """The vector that fits `target` scores against `others` (n x d) and stays near `prior` (d,)."""
    prior = np.asarray(prior, np.float64)
    others = np.asarray(others, np.float64).reshape(-1, prior.shape[0])
    if not len(others):
        return prior.astype(np.float32)
    gram = others.T @ others + strength * np.eye(prior.shape[0])
    return np.linalg.solve(gram, target * others.sum(axis=0) + strength * prior).astype(np.float32)


def positive_target(user_vectors: np.ndarray, item_vectors: np.ndarray, pairs: np.ndarray, sample: int = 4096,
                    seed: int = 0) -> float:
    """The median score `u . v` of (user, item) training interactions: what a positive scores."""
    if not len(pairs):
        return 1.0
    rng = np.random.default_rng(seed)
    chosen = pairs[rng.choice(len(pairs), min(sample, len(pairs)), replace=False)]
    return float(np.median(np.einsum("ij,ij->i", user_vectors[chosen[:, 0]], item_vectors[chosen[:, 1]])))


def typical_strength(vectors: np.ndarray, prior_weight: float) -> float:
    """`prior_weight` times the median squared norm of `vectors`: the prior worth that many interactions."""
    if not len(vectors):
        return prior_weight
    return prior_weight * float(np.median(np.einsum("ij,ij->i", vectors, vectors)))
