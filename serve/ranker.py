"""Ranker deployment: the faiss index over every item, users' seen items, and registrations.

A thin shell over `coldstart.serving.catalogue.Catalogue`. Replicas share the
append-only registration store and follow its tail, so an item registered
through one replica is ranked by all of them from the next request on.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from coldstart.serving.catalogue import Catalogue
from coldstart.serving.config import ServeConfig
from coldstart.serving.served_models import ServingGenerator
from serve.prometheus import index_size_gauge


def build_catalogue(cfg: ServeConfig, follower: bool = False) -> Catalogue:
    """The catalogue a replica holds: every item in the index, users, and the store followed from its tail.
    `follower`: the ingress's copy, which makes no registration of other artifacts again (no encoder loaded,
    nothing re-encoded after a swap) and leaves those users to the ranker."""
    torch.set_num_threads(cfg.torch_threads)
    faiss.omp_set_num_threads(1)  # exact search over thousands of items: threads cost more than they give
    generator = ServingGenerator(cfg.artifacts, cfg.generator)  # for the catalogue's cold vectors only
    return Catalogue.from_artifacts(cfg.artifacts, generator, cfg.open_store(), text_weight=cfg.text_weight,
                                    stated_share=cfg.stated_share, encoder=None if follower else cfg.encoder,
                                    follower=follower, encoder_precision=cfg.encoder_precision,
                                    encoder_runtime=cfg.encoder_runtime)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class Ranker:
    def __init__(self, settings: dict, *chain: DeploymentHandle):
        """`chain`: the variant's encoder and generator, bound here so that one Serve app holds the three
        deployments (`serve.app.build_chain`); the ingress calls each by name, the ranker none of them."""
        self.catalogue = build_catalogue(ServeConfig.model_validate(settings))
        self.index_size = index_size_gauge()
        self._report()

    def _report(self) -> None:
        self.index_size.set(len(self.catalogue.index))

    def recommend_user(self, user_id: str, k: int, exclude_seen: bool = True, candidates=None,
                       explain: bool = False) -> dict:
        return self.catalogue.recommend_user(user_id, k, exclude_seen, candidates, explain)

    def recommend_profile(self, content_vector, liked: list[str], k: int, exclude_seen: bool = True,
                          candidates=None, text_vector=None, explain: bool = False, said: str = "") -> dict:
        return self.catalogue.recommend_profile(content_vector, liked, k, exclude_seen, candidates, text_vector,
                                                explain, said)

    def register_item(self, item_id: str, vector: np.ndarray, **fields) -> dict:
        result = self.catalogue.register_item(item_id, vector, **fields)
        self._report()
        return result

    def register_user(self, user_id: str, content_vector, **fields) -> dict:
        return self.catalogue.register_user(user_id, content_vector, **fields)

    def record_interaction(self, user_id: str, item_id: str, **fields) -> dict:
        return self.catalogue.record_interaction(user_id, item_id, **fields)

    def delete(self, kind: str, entity_id: str) -> dict:
        result = self.catalogue.delete(kind, entity_id)
        self._report()
        return result

    def item_info(self, item_id: str) -> dict:
        return self.catalogue.item_info(item_id)

    def stats(self) -> dict:
        stats = self.catalogue.stats()
        self._report()  # registrations made through another replica grow this one's index too
        return stats
