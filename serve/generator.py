"""Generator deployment: content (text vector + attributes) -> collaborative vector (towers or VAE).

A thin shell over `coldstart.serving.served_models.ServingGenerator`.
"""

from __future__ import annotations

import numpy as np
import torch
from ray import serve

from coldstart.serving.config import ServeConfig
from coldstart.serving.served_models import ServingGenerator


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class Generator:
    def __init__(self, settings: dict):
        cfg = ServeConfig.model_validate(settings)
        torch.set_num_threads(cfg.torch_threads)
        self.generator = ServingGenerator(cfg.artifacts, cfg.generator)

    def item_vector(self, text_vector: np.ndarray, attributes: dict, title: str | None = None) -> np.ndarray:
        return self.generator.item_vector(text_vector, attributes, title)

    def user_vector(self, text_vector: np.ndarray, attributes: dict) -> np.ndarray:
        return self.generator.user_vector(text_vector, attributes)
