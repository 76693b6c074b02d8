"""Online warm-up: a cold entity's vector moves from its content prior toward what its interactions say.

An item (or user) placed from its content has a prior vector `p`. Each user who
interacts with it says its score for them should be at least that of a typical
positive (`target`, the median score of training interactions under the
backbone). The new vector is the prior plus the ridge least-squares step, with
everything else frozen, that lifts each interacting user's score by what it
lacks (nothing for a user the prior already scores that high):

    r_j = max(0, target - x_j . p)
    v   = p + argmin_d  sum_j (x_j . d - r_j)^2  +  strength * |d|^2
        = p + (X'X + strength I)^-1 X'r

where the x_j are the interacting users' (or items') vectors. With no
interaction it is the prior; each interaction pulls harder, so the blend of
content and interactions follows their count. Lifting only (a plain least
squares to the target would also pull down the users a strong prior already
ranks it high for) is what made the warm-up help at every phase in
`benchmarks/warmup.py`. `strength` is `prior_weight` times the typical squared
norm of the x's: the prior counts as about `prior_weight` interactions. One
solve of a d x d system (d = 64): about a hundred microseconds.
"""

from __future__ import annotations

import numpy as np


def fold_in(prior: np.ndarray, others: np.ndarray, target: float, strength: float) -> np.ndarray:
    """`prior` (d,) plus the ridge step that lifts each of `others` (n x d) to a score of at least `target`."""
    prior = np.asarray(prior, np.float64)
    others = np.asarray(others, np.float64).reshape(-1, prior.shape[0])
    if not len(others):
        return prior.astype(np.float32)
    lacking = np.maximum(0.0, target - others @ prior)
    step = np.linalg.solve(others.T @ others + strength * np.eye(prior.shape[0]), others.T @ lacking)
    return (prior + step).astype(np.float32)


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
