"""Generators without training: a cold entity placed at the mean backbone vector of its content neighbours,
and an ensemble that averages several generators.

`KNNGenerator` is the knn-warm baseline as a servable model: it keeps the warm
items' (and users') content and backbone vectors as buffers, so a new item's
vector is the mean of its k content-nearest warm items' vectors, in training,
evaluation and serving alike. `EnsembleGenerator` averages the vectors its
members generate (towers, VAE, kNN: any generator with `generate_items` and
`generate_users`); each member sees the same content features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from coldstart.models.kinds import COLD_MODELS, cold_model


MIN_INTERACTIONS = 2  # knn-bag's neighbour items: those trained at least twice (`KNNGenerator.bag`)


@cold_model
class KNNGenerator(nn.Module):
    """Mean backbone vector of the k warm entities whose content is nearest (cosine).

    Items are compared on the first `item_dims` feature columns (the LLM text
    vector), or with `attribute_weight` > 0 on the unit text vector and that
    weight times the unit attribute one-hots; users on all of theirs (profile
    text and attribute one-hots); `k` neighbours for items, `user_k` (default
    `k`) for users, whose profiles say less and need more of them. An entity
    with no content gets the mean of all warm vectors.
    """

    KIND = "coldstart-knn"

    def __init__(self, item_in: int, user_in: int, dim: int, n_items: int, n_users: int, item_dims: int,
                 k: int = 5, user_k: int | None = None, attribute_weight: float = 0.0, min_interactions: int = 1):
        super().__init__()
        self.config = {"item_in": item_in, "user_in": user_in, "dim": dim, "n_items": n_items, "n_users": n_users,
                       "item_dims": item_dims, "k": k, "user_k": user_k, "attribute_weight": attribute_weight,
                       "min_interactions": min_interactions}
        self.k, self.user_k, self.item_dims = k, user_k or k, item_dims
        self.attribute_weight = attribute_weight
        item_width = item_in if attribute_weight > 0 else item_dims
        for side, width, count in (("item", item_width, n_items), ("user", user_in, n_users)):
            self.register_buffer(f"{side}_content", torch.zeros(count, width))
            self.register_buffer(f"{side}_vectors", torch.zeros(count, dim))

    @classmethod
    def fit(cls, *, item_features: np.ndarray, user_features: np.ndarray, item_vectors: np.ndarray,
            user_vectors: np.ndarray, warm_items: np.ndarray, warm_users: np.ndarray, item_dims: int,
            k: int = 5, user_k: int | None = None, attribute_weight: float = 0.0,
            item_counts: np.ndarray | None = None, min_interactions: int = 1) -> "KNNGenerator":
        """Keep the warm entities' content and vectors. With `item_counts` (training interactions per item),
        only warm items with at least `min_interactions` are neighbours: an item seen once has a vector that
        one user taught it, and it often matches a new item's title closely (a sequel, a namesake)."""
        pool = neighbour_pool(warm_items, item_counts, min_interactions)
        model = cls(item_features.shape[1], user_features.shape[1], item_vectors.shape[1], int(pool.sum()),
                    int(warm_users.sum()), item_dims, k, user_k, attribute_weight, min_interactions)
        model.item_content.copy_(torch.as_tensor(model.item_space(np.asarray(item_features[pool], np.float32))))
        model.item_vectors.copy_(torch.as_tensor(item_vectors[pool], dtype=torch.float32))
        model.user_content.copy_(torch.as_tensor(_unit(user_features[warm_users])))
        model.user_vectors.copy_(torch.as_tensor(user_vectors[warm_users], dtype=torch.float32))
        return model.eval()

    def refit(self, *, item_counts: np.ndarray | None = None, user_counts: np.ndarray | None = None,
              **arrays) -> "KNNGenerator | None":
        """The same generator (its neighbour counts, similarity space, neighbour pool rule) fitted on `arrays`
        (`fit`'s: features, backbone vectors, the warm masks; `user_counts` is not read): warm entities hidden
        from it are placed as new ones would be (`coldstart.pseudo_cold`). None for an artifact saved before its
        neighbour pool rule was recorded: it cannot be fitted again as it was."""
        config = self.config
        if "min_interactions" not in config:
            return None
        return type(self).fit(**arrays, item_dims=config["item_dims"], k=config["k"], user_k=config["user_k"],
                              attribute_weight=config["attribute_weight"], item_counts=item_counts,
                              min_interactions=config["min_interactions"])

    def item_space(self, features):
        """Items' features (numpy or torch) -> the vectors whose cosine picks neighbours."""
        unit = _unit if isinstance(features, np.ndarray) else _unit_torch
        text = unit(features[:, :self.item_dims])
        if self.attribute_weight <= 0:
            return text
        both = (np.hstack if isinstance(features, np.ndarray) else lambda parts: torch.cat(parts, dim=1))(
            [text, self.attribute_weight * unit(features[:, self.item_dims:])])
        return unit(both)

    @classmethod
    def bag(cls, *, ks: tuple[int, ...] = (5, 10, 20), user_ks: tuple[int, ...] = (25, 50, 100),
            attribute_weights: tuple[float, ...] = (0.0, 0.5), min_interactions: int = MIN_INTERACTIONS,
            **fit_args) -> "EnsembleGenerator":
        """knn-bag: the mean of knn-warm over several neighbour counts and similarity spaces (text alone, text
        and attributes), neighbours taken among items with at least `min_interactions`: no count or space to
        pick on a noisy validation set. `fit_args`: as `fit` (with `item_counts`)."""
        members = [cls.fit(k=k, user_k=user_k, attribute_weight=weight, min_interactions=min_interactions,
                           **fit_args) for weight in attribute_weights for k, user_k in zip(ks, user_ks)]
        center = fit_args["user_vectors"][fit_args["warm_users"]].mean(axis=0)
        return EnsembleGenerator.of(members, center)

    def _neighbours(self, x: torch.Tensor, content: torch.Tensor, vectors: torch.Tensor, k: int,
                    exclude: torch.Tensor | None = None) -> torch.Tensor:
        if not len(content):
            return torch.zeros(len(x), vectors.shape[1], dtype=vectors.dtype, device=x.device)
        norms = x.norm(dim=1, keepdim=True)
        sims = (x / norms.clamp_min(1e-12)) @ content.T
        k = min(k, len(content))
        if exclude is not None:  # leave each row's own entity out of its neighbours
            rows = torch.nonzero(exclude >= 0).flatten()
            sims[rows, exclude[rows]] = -torch.inf
            k = min(k, max(len(content) - 1, 1))
        top = sims.topk(k, dim=1).indices
        out = vectors[top].mean(dim=1)
        return torch.where(norms > 0, out, vectors.mean(dim=0, keepdim=True).expand_as(out))

    def generate_items(self, x: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """`exclude`: per row, the position among the neighbours of an entity to leave out (-1: none), so a
        warm item is placed as if it were new (`coldstart.models.residual`)."""
        return self._neighbours(self.item_space(x.float()), self.item_content, self.item_vectors, self.k, exclude)

    def generate_users(self, x: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        return self._neighbours(x.float(), self.user_content, self.user_vectors, self.user_k, exclude)


@cold_model
class EnsembleGenerator(nn.Module):
    """The mean of its members' generated vectors (each member a generator over the same features).

    A new user's vector is then pulled towards the mean warm user by `user_shrink` (1 keeps it, 0 makes
    every new user the average one, whose ranking is the catalogue's popularity): a profile of age,
    gender and job says little, and shrinking what little it says towards the average is what holds up
    on new users. Items are not shrunk: a shift towards the mean item moves every item's score for a
    user alike.
    """

    KIND = "coldstart-ensemble"

    def __init__(self, members: list[dict], dim: int, user_shrink: float = 1.0):
        """`members`: [{"kind": KIND, "config": {...}}], rebuilt through `kinds.COLD_MODELS`."""
        super().__init__()
        self.config = {"members": members, "dim": dim, "user_shrink": user_shrink}
        self.members = nn.ModuleList(COLD_MODELS[m["kind"]](**m["config"]) for m in members)
        self.user_shrink = user_shrink
        self.register_buffer("user_center", torch.zeros(dim))

    @classmethod
    def of(cls, models: list[nn.Module], user_center: np.ndarray, user_shrink: float = 1.0) -> "EnsembleGenerator":
        ensemble = cls([{"kind": m.KIND, "config": m.config} for m in models], len(user_center), user_shrink)
        for target, source in zip(ensemble.members, models):
            target.load_state_dict(source.state_dict())
        ensemble.user_center.copy_(torch.as_tensor(user_center, dtype=torch.float32))
        return ensemble.eval()

    def refit(self, **arrays) -> "EnsembleGenerator | None":
        """The same ensemble fitted on `arrays` (`KNNGenerator.refit`'s), or None when a member is trained by a
        job (towers, VAE) and cannot be refitted here."""
        members = [getattr(m, "refit", lambda **_: None)(**arrays) for m in self.members]
        if any(m is None for m in members):
            return None
        center = arrays["user_vectors"][arrays["warm_users"]].mean(axis=0)
        return type(self).of(members, center, self.user_shrink)

    def generate_items(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.generate_items(x) for m in self.members]).mean(dim=0)

    def generate_users(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([m.generate_users(x) for m in self.members]).mean(dim=0)
        return self.user_center + self.user_shrink * (mean - self.user_center)


def neighbour_pool(warm: np.ndarray, counts: np.ndarray | None = None, min_interactions: int = 1) -> np.ndarray:
    """The warm entities that are neighbours: those with at least `min_interactions` training interactions
    (all warm ones where none has that many)."""
    pool = np.asarray(warm, bool).copy()
    if counts is not None and min_interactions > 1 and (pool & (np.asarray(counts) >= min_interactions)).any():
        pool &= np.asarray(counts) >= min_interactions
    return pool


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _unit_torch(matrix: torch.Tensor) -> torch.Tensor:
    return matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)
