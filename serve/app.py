"""The application: a FastAPI ingress that chains encoder -> generator -> ranker through handles.

A request for a known user (`user_id`: trained, cold or registered) needs no
model, only the catalogue: the ingress holds one of its own, following the same
registration store as the ranker replicas, and answers it in-process. The hop
to a ranker replica and back was most of such a request's time. Profiles,
registrations, interactions and deletions take the encoder -> generator ->
ranker path, and the ranker replicas write the store.

`build_app(args)` is the builder for `serve run serve.app:build_app
artifacts=DIR`, `serve deploy serve/config.yaml` and `coldstart serve`. The
routes, validation and error bodies are `coldstart.serving.api.create_api`,
the same app the plain-uvicorn baseline serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from coldstart.serving.api import create_api
from coldstart.serving.config import ServeConfig
from coldstart.serving.content import NewContent
from coldstart.serving.errors import RequestError
from coldstart.serving.models import content_spec, resolve_encoder, resolve_generator
from coldstart.serving.service import LocalStage, RecommendService
from serve.encoder import Encoder
from serve.generator import Generator
from serve.metrics import RayServeMetrics
from serve.ranker import Ranker, build_catalogue


def _request_error(exc: BaseException) -> RequestError | None:
    """The client error a replica raised, under the RayTaskError that carried it across."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, RequestError) and type(exc).__init__ is RequestError.__init__:
            return exc
        exc = getattr(exc, "cause", None)
        seen += 1
    return None


class HandleStage:
    """A stage behind a Serve deployment handle."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.handle, method).remote(*args, **kwargs)
        except Exception as exc:
            cause = _request_error(exc)
            if cause is None:
                raise
            raise type(cause)(cause.field, cause.message) from None


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
@serve.ingress()
class Ingress:
    def __init__(self, encoder: DeploymentHandle, generator: DeploymentHandle, ranker: DeploymentHandle,
                 settings: dict):
        cfg = ServeConfig.model_validate(settings)
        spec = content_spec(cfg.artifacts, cfg.generator)
        self.api_key = cfg.api_key
        self.service = RecommendService(
            encoder=HandleStage(encoder), generator=HandleStage(generator), ranker=HandleStage(ranker),
            content=NewContent(spec), generator_name=resolve_generator(cfg.artifacts, cfg.generator)[0],
            encoder_name=resolve_encoder(cfg.artifacts, spec, cfg.encoder)[0], metrics=RayServeMetrics(),
            known_users=LocalStage(build_catalogue(cfg)))

    def __serve_build_asgi_app__(self):
        return create_api(self.service, self.api_key)


def build_app(args: dict) -> Application:
    """The bound application; `args` are ServeConfig fields (artifacts required)."""
    cfg = ServeConfig.model_validate(args)
    # The store is decided here, once, for every replica (wherever they run and whatever their environment).
    store = cfg.store_location()
    cfg = cfg.model_copy(update={"artifacts": cfg.artifacts.resolve(),
                                 "store": store.resolve() if isinstance(store, Path) else store})
    content_spec(cfg.artifacts, cfg.generator)  # fail here, with the reason, rather than in a replica's log
    settings = cfg.model_dump(mode="json")
    gpus = cfg.encoder_gpus
    if gpus is None:
        import torch

        gpus = 1 if torch.cuda.is_available() else 0
    encoder = Encoder.options(ray_actor_options={"num_cpus": 1, "num_gpus": gpus}).bind(settings)
    return Ingress.bind(encoder, Generator.bind(settings), Ranker.bind(settings), settings)
