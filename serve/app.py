"""The application: a FastAPI ingress that chains encoder -> generator -> ranker through handles.

The front app (`build_app`, HTTP at /) holds only the ingress. Each served
variant, an artifacts folder, is a Serve app of its own (`build_chain`, no
route): its encoder, generator and ranker. The ingress follows the app's
routing in the registration store (`coldstart.serving.routing`), so moving to
new artifacts, or adding a variant for an A/B test, starts a new chain app
beside the running one and then writes a routing record; the ingress switches
once the new chain answers, and is never restarted (`serve.local.swap`).

A request for a known user (`user_id`: trained, cold or registered) needs no
model, only the catalogue: the ingress holds one of its own, following the same
registration store as the ranker replicas, and answers it in-process. The hop
to a ranker replica and back was most of such a request's time. Profiles,
registrations, interactions and deletions take the encoder -> generator ->
ranker path, and the ranker replicas write the store.

`build_app(args)` and `build_chain(args)` are the builders for `serve deploy
serve/config.yaml` and `coldstart serve`. The routes, validation and error
bodies are `coldstart.serving.routes.create_api`, the same app the plain-uvicorn
baseline serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from coldstart.serving.routes import create_api
from coldstart.serving.config import ServeConfig
from coldstart.serving.new_content import NewContent
from coldstart.serving.errors import RequestError
from coldstart.serving.served_models import content_spec, resolve_encoder, resolve_generator
from coldstart.serving.routing import FollowingRouter, Variant, write_routing
from coldstart.serving.service import LocalStage, RecommendService
from coldstart.serving.stores import open_store, without_password
from serve.encoder import Encoder
from serve.generator import Generator
from serve.prometheus import RayServeMetrics
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


CHAIN_APP = "coldstart-main"  # the one variant's chain app when a config file deploys the app
ROUTING_POLL_S = 0.5  # how often an ingress reads the store for a new routing while it serves


def variant_service(variant: Variant) -> RecommendService:
    """A variant's request path: handles to its chain app's deployments, and its own catalogue and generator
    (in the ingress's process, following the store) for requests by `user_id`, profiles' vectors and lists,
    and new entities' vectors: each a hop saved. The replicas write the store."""
    cfg = ServeConfig.model_validate(variant.settings)
    spec = content_spec(cfg.artifacts, cfg.generator)
    handles = {name: HandleStage(serve.get_deployment_handle(name, app_name=variant.app))
               for name in ("Encoder", "Generator", "Ranker")}
    catalogue = build_catalogue(cfg, follower=True)  # with the generator its cold vectors came from
    return RecommendService(
        encoder=handles["Encoder"], generator=handles["Generator"], ranker=handles["Ranker"],
        content=NewContent(spec), generator_name=resolve_generator(cfg.artifacts, cfg.generator)[0],
        encoder_name=resolve_encoder(cfg.artifacts, spec, cfg.encoder)[0], metrics=RayServeMetrics(variant.name),
        known_users=LocalStage(catalogue), near_generator=LocalStage(catalogue.generator), variant=variant.name)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128, health_check_period_s=2)
@serve.ingress()
class Ingress:
    """`settings`: {"variants": [Variant fields], "store": ..., "limits": ServeConfig.limits()}: the routing it
    starts with when the store holds none yet. Keys come from the replica's environment (`ApiKeys.from_env`),
    never from these arguments, which Ray keeps and shows."""

    def __init__(self, settings: dict):
        variants = [Variant.model_validate(v) for v in settings["variants"]]
        self.limits, self.store = settings.get("limits") or {}, settings["store"]
        self.front = FollowingRouter(open_store(settings["store"]), variants, variant_service, ROUTING_POLL_S)

    async def check_health(self) -> None:
        await self.front.follow()  # an idle replica takes a new routing too (Serve calls this every 2 s)

    async def routing(self) -> dict:
        """This replica's routing: what `serve.local.swap` waits on before it deletes the chains left behind."""
        await self.front.follow()
        return {"replica": serve.get_replica_context().replica_id.unique_id, "store": self.store,
                "variants": [v.model_dump(mode="json") for v in self.front.router.variants],
                "building": self.front.building}

    def __serve_build_asgi_app__(self):
        return create_api(self.front, **self.limits)


def settled(args: dict) -> ServeConfig:
    """`args` as ServeConfig with the artifacts folder absolute and the store decided: here, once, for every
    replica (wherever they run and whatever their environment)."""
    cfg = ServeConfig.model_validate(args)
    store = cfg.store_location()  # a database URL without its password: replicas find it in their environment
    return cfg.model_copy(update={"artifacts": cfg.artifacts.resolve(),
                                  "store": store.resolve() if isinstance(store, Path) else without_password(store)})


def build_chain(args: dict) -> Application:
    """One variant's app: encoder -> generator -> ranker over `args` (ServeConfig fields; artifacts required)."""
    cfg = settled(args)
    content_spec(cfg.artifacts, cfg.generator)  # fail here, with the reason, rather than in a replica's log
    settings = cfg.model_dump(mode="json")
    gpus = cfg.encoder_gpus
    if gpus is None:
        gpus = 1 if torch.cuda.is_available() else 0
    encoder = Encoder.options(ray_actor_options={"num_cpus": 1, "num_gpus": gpus}).bind(settings)
    return Ranker.bind(settings, encoder, Generator.bind(settings))  # the ranker is the app's root


def build_app(args: dict) -> Application:
    """The front app: the HTTP ingress. `args`: {"variants": [{"name", "weight", "app", "settings"}], "store",
    "limits"}, or the ServeConfig fields of one variant, "main", whose chain is the app `args["app"]` (default
    "coldstart-main", as serve/config.yaml names it). The routing is written to the store here: what is
    deployed is what the ingress routes to, whatever an earlier app on the same store routed."""
    if "variants" not in args:
        one = {k: v for k, v in args.items() if k != "app"}
        cfg = settled(one)
        args = {"variants": [{"name": "main", "app": args.get("app", CHAIN_APP),  # the key stays out of the store
                              "settings": cfg.model_dump(mode="json")}],
                "store": cfg.model_dump(mode="json")["store"], "limits": cfg.limits()}
    store = str(args["store"])
    write_routing(open_store(store), [Variant.model_validate(v) for v in args["variants"]])
    return Ingress.bind({"variants": args["variants"], "store": store, "limits": args.get("limits")})
