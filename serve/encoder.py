"""Encoder deployment: text -> embedding, batched across concurrent requests (`@serve.batch`).

A thin shell over `coldstart.serving.served_models.ServingEncoder` (the distilled
student by default); it runs on a GPU where the replica is given one.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from ray import serve

from coldstart.serving.config import ServeConfig
from coldstart.serving.served_models import ServingEncoder, content_spec


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class Encoder:
    def __init__(self, settings: dict):
        cfg = ServeConfig.model_validate(settings)
        torch.set_num_threads(cfg.torch_threads)
        self.encoder = ServingEncoder(cfg.artifacts, content_spec(cfg.artifacts, cfg.generator), cfg.encoder,
                                      precision=cfg.encoder_precision, runtime=cfg.encoder_runtime)
        self.encode.set_max_batch_size(cfg.batch_size)
        self.encode.set_batch_wait_timeout_s(cfg.batch_wait_ms / 1000.0)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def encode(self, requests: list[list[str]]) -> list[np.ndarray]:
        """Each call's texts (a profile's rendered attributes and its free text), the calls of concurrent
        requests encoded as one batch."""
        texts = [text for request in requests for text in request]
        # Off the event loop, so the next batch gathers while this one runs.
        vectors = await asyncio.to_thread(self.encoder.encode, texts)
        ends = np.cumsum([len(request) for request in requests])
        return [vectors[end - len(request):end] for request, end in zip(requests, ends)]
