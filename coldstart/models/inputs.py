"""What a generator is fitted on and saved with: a split, the backbone's vectors in its order, content features.

Read from a pipeline's folders (OUT/backbone, OUT/embeddings) by the stages that make generators without a
training job (knn-warm, knn-bag, knn-residual, the ensemble: `trainers.stages`) and by the quality benchmark's models
(`benchmarks/quality_models.py`); saved with the same figures as the trained ones, so serving's choice
weighs them all alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coldstart.content import build_content
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.coldstart_model import load_recommender_artifact, save_cold_model
from coldstart.models.mf import EmbeddingRecommender
from coldstart.models.neighbours import EnsembleGenerator, KNNGenerator
from coldstart.models.residual import ResidualGenerator
from coldstart.models.towers import cold_start_vectors
from coldstart.text.encoder import TextEncoder


@dataclass
class GeneratorInputs:
    data: SplitData
    user_vectors: np.ndarray  # the backbone's, in `data`'s user order
    item_vectors: np.ndarray
    item_features: np.ndarray  # [LLM text vector | attribute one-hots] (`coldstart.content`)
    user_features: np.ndarray
    user_text: np.ndarray
    item_text: np.ndarray
    content: dict  # the content spec serving builds a new item's or user's features with

    @classmethod
    def from_folders(cls, data: SplitData, out: Path, embeddings: Path | None = None,
                     encoder: TextEncoder | None = None) -> "GeneratorInputs":
        """From OUT/backbone (aligned with `data`'s ids) and OUT/embeddings (or `embeddings`)."""
        backbone = load_recommender_artifact(Path(out) / "backbone", data)
        item_features, user_features, user_text, item_text, spec = build_content(
            data, embeddings or Path(out) / "embeddings", encoder)
        return cls(data, backbone.user_vectors, backbone.item_vectors, item_features, user_features, user_text,
                   item_text, spec.to_json())

    @property
    def warm_users(self) -> np.ndarray:
        return self.data.train.getnnz(axis=1) > 0

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The features as a generator job takes them (`trainers.cold_model.ColdModelJob`)."""
        return {"item_features": self.item_features, "user_features": self.user_features,
                "user_text": self.user_text, "item_text": self.item_text}

    def vectors(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(users, items): the backbone's for warm ones, `model`'s for the others."""
        return cold_start_vectors(model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                                  warm_users=self.warm_users, warm_items=self.data.warm_items,
                                  user_features=self.user_features, item_features=self.item_features)

    def val_metrics(self, model) -> dict[str, float]:
        val = evaluate(EmbeddingRecommender(*self.vectors(model)), self.data, on="val-select", ks=(20,))
        return {f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}

    def cold_val(self, model) -> float:
        return self.val_metrics(model)["cold_val_ndcg@20"]

    def fit_arrays(self, warm_items: np.ndarray | None = None, warm_users: np.ndarray | None = None) -> dict:
        """What a generator fitted without a training job is fitted on (`KNNGenerator.fit`, `ResidualGenerator.fit`,
        their `refit`): the features, the backbone's vectors, the training counts and the warm entities (the
        split's, or `warm_items` / `warm_users` where some are hidden: `coldstart.pseudo_cold`)."""
        return {"item_features": self.item_features, "user_features": self.user_features,
                "item_vectors": self.item_vectors, "user_vectors": self.user_vectors,
                "warm_items": np.asarray(self.data.warm_items if warm_items is None else warm_items, bool),
                "warm_users": np.asarray(self.warm_users if warm_users is None else warm_users, bool),
                "item_counts": self.data.item_popularity(), "user_counts": self.data.train.getnnz(axis=1)}

    def knn_warm(self, k: int = 5, user_k: int | None = None, **warm) -> KNNGenerator:
        """knn-warm (`KNNGenerator.fit`): the mean vector of the k content-nearest warm items (`user_k` users),
        every warm item a neighbour; `warm`: `fit_arrays`' masks where some warm entities are hidden."""
        arrays = self.fit_arrays(**warm)
        arrays.pop("item_counts"), arrays.pop("user_counts")
        return KNNGenerator.fit(**arrays, item_dims=self.content["text_dim"], k=k, user_k=user_k)

    def knn_bag(self) -> EnsembleGenerator:
        """knn-bag (`KNNGenerator.bag`) over these vectors and features, neighbours among items trained twice."""
        arrays = self.fit_arrays()
        arrays.pop("user_counts")
        return KNNGenerator.bag(**arrays, item_dims=self.content["text_dim"])

    def knn_residual(self, bag: EnsembleGenerator | None = None) -> ResidualGenerator:
        """knn-residual (`ResidualGenerator`): `bag` (knn-bag over these arrays; made when not given) plus a
        correction learnt on the warm items and users."""
        return ResidualGenerator.fit(bag or self.knn_bag(), **self.fit_arrays(), text_dim=self.content["text_dim"])

    def save(self, folder: Path, model) -> None:
        """Save `model` with its cold-val figures, so serving's choice can weigh it with the trained ones."""
        metrics = self.val_metrics(model)
        save_cold_model(folder, self.data, model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                        user_features=self.user_features, item_features=self.item_features, content=self.content,
                        meta={"epoch": None, "metrics": metrics, "selected_on": None})
