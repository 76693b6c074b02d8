"""The trained recommender as one artifact: backbone vectors, a cold-start generator, content features.

The generator is any registered one (`coldstart.registry`): it maps content
features to the backbone's space (`generate_items`, `generate_users`).
`save_*` write self-describing folders (model.json + weights.safetensors);
`load_recommender_artifact` rebuilds a scorer over any SplitData from the
folder alone, aligning ids (an id the artifact does not know scores zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from coldstart import registry
from coldstart.evaluate import SplitData
from coldstart.models.saved import load_artifact, save_artifact
from coldstart.models.kinds import COLD_MODELS
from coldstart.models.mf import EmbeddingRecommender
from coldstart.models.towers import cold_start_vectors

MF_KIND = "mf-bpr"
TRANSFER_KIND = "coldstart-transfer"


def save_backbone(folder: str | Path, data: SplitData, user: np.ndarray, item: np.ndarray, meta: dict) -> Path:
    return save_artifact(folder, MF_KIND, {
        "config": {"n_users": data.n_users, "n_items": data.n_items, "dim": int(user.shape[1])},
        "user_ids": list(data.user_ids), "item_ids": list(data.item_ids), **meta},
        {"user": user, "item": item})


def load_backbone(folder: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    meta, tensors = load_artifact(folder)
    if meta["kind"] != MF_KIND:
        raise ValueError(f"{folder}: expected a {MF_KIND} artifact, found {meta['kind']}")
    return meta, tensors["user"].numpy(), tensors["item"].numpy()


def save_cold_model(folder: str | Path, data: SplitData, model, *, user_vectors, item_vectors,
                    user_features, item_features, content: dict, meta: dict,
                    placed_items: np.ndarray | None = None) -> Path:
    """A generator with everything serving needs: the space's vectors, features, content spec.

    The generator places the items `placed_items` does not mark (default: the cold ones); marked items keep
    `item_vectors` as given (a transfer model's items all have learnt vectors, cold ones included).
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(user_vectors=user_vectors, item_vectors=item_vectors, user_features=user_features,
                   item_features=item_features,
                   warm_users=np.asarray(data.train.getnnz(axis=1) > 0, np.uint8),
                   warm_items=data.warm_items.astype(np.uint8))
    if placed_items is not None:
        tensors["placed_items"] = np.asarray(placed_items, np.uint8)
    return save_artifact(folder, model.KIND, {"config": model.config, "content": content,
                                              "user_ids": list(data.user_ids), "item_ids": list(data.item_ids),
                                              **meta}, tensors)


def generator_kinds() -> dict[str, type]:
    """kind -> class of every generator an artifact may name: the registered generators' modules are imported
    here, so each class has entered `kinds.COLD_MODELS` (from which an ensemble also rebuilds its members)."""
    for spec in registry.generators():
        registry.resolve(spec.model)
    return COLD_MODELS


def load_cold_model(folder: str | Path):
    """(meta, generator in eval mode, arrays) from a generator's artifact (any registered generator's kind)."""
    meta, tensors = load_artifact(folder)
    kinds = generator_kinds()
    if meta["kind"] not in kinds:
        raise ValueError(f"{folder}: expected one of {sorted(kinds)} artifacts, found {meta['kind']}")
    model = kinds[meta["kind"]](**meta["config"])
    model.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("model.")})
    model.eval()
    arrays = {k: v.numpy() for k, v in tensors.items() if not k.startswith("model.")}
    return meta, model, arrays


def placed_items(arrays: dict) -> np.ndarray:
    """Items whose saved vector is final (the generator places the rest): `placed_items`, else the warm ones."""
    return arrays.get("placed_items", arrays["warm_items"]).astype(bool)


def _align(source_ids: list[str], matrix: np.ndarray, target: pd.Index) -> np.ndarray:
    pos = pd.Index(source_ids).get_indexer(target)
    out = np.zeros((len(target), matrix.shape[1]), np.float32)
    out[pos >= 0] = matrix[pos[pos >= 0]]
    return out


def load_recommender_artifact(folder: str | Path, data: SplitData) -> EmbeddingRecommender:
    meta, _ = load_artifact(folder)
    name = Path(folder).name
    if meta["kind"] == MF_KIND:
        _, user, item = load_backbone(folder)
        return EmbeddingRecommender(_align(meta["user_ids"], user, data.user_ids),
                                    _align(meta["item_ids"], item, data.item_ids), name=name)
    if meta["kind"] in generator_kinds():
        meta, generator, arrays = load_cold_model(folder)
        users, items = cold_start_vectors(
            generator, user_vectors=arrays["user_vectors"], item_vectors=arrays["item_vectors"],
            warm_users=arrays["warm_users"].astype(bool), warm_items=placed_items(arrays),
            user_features=arrays["user_features"], item_features=arrays["item_features"])
        return EmbeddingRecommender(_align(meta["user_ids"], users, data.user_ids),
                                    _align(meta["item_ids"], items, data.item_ids), name=name)
    if meta["kind"] == TRANSFER_KIND:  # target vectors computed at save time
        _, tensors = load_artifact(folder)
        return EmbeddingRecommender(_align(meta["user_ids"], tensors["user_vectors"].numpy(), data.user_ids),
                                    _align(meta["item_ids"], tensors["item_vectors"].numpy(), data.item_ids),
                                    name=name)
    raise ValueError(f"{folder}: unknown model kind {meta['kind']!r}")
