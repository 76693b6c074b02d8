"""The request logic: text -> encoder -> generator -> ranker, once for every way it is deployed.

Each stage is reached through `Stage.call(method, *args)`: in one process
(`LocalStage`, what the tests and the plain-uvicorn baseline use) or through a
Ray Serve deployment handle (`serve/app.py`). Validation that needs no model
happens here, before any stage runs, so bad input costs nothing and writes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, Protocol

import numpy as np

from coldstart.serving.new_content import NewContent
from coldstart.serving.errors import Invalid, NotFound
from coldstart.serving.service_metrics import ServiceMetrics
from coldstart.serving.served_models import ServingEncoder, ServingGenerator
from coldstart.serving.routing import VARIANT_HEADER
from coldstart.serving.bodies import (Deleted, Health, ItemInfo, NewInteraction, NewItem, NewUser, Recommendation,
                                       RecommendRequest, Recorded, Registered)
from coldstart.serving.slots import STATED_SHARE
from coldstart.serving.stores import open_store


class Stage(Protocol):
    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...


class LocalStage:
    """A stage object in this process, called in a worker thread: its methods block (a catalogue reads its
    store first, a model runs), and the event loop must keep answering other requests and health checks."""

    def __init__(self, target: Any):
        self.target = target

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.target, method), *args, **kwargs)


class RecommendService:
    def __init__(self, *, encoder: Stage, generator: Stage, ranker: Stage, content: NewContent,
                 generator_name: str, encoder_name: str, metrics: ServiceMetrics | None = None,
                 known_users: Stage | None = None, near_generator: Stage | None = None, variant: str | None = None):
        """`variant`: the name its answers carry when it is one of several (`coldstart.serving.routing`).
        `known_users`: a catalogue that answers requests by `user_id` (default: the ranker), e.g. one held in
        the ingress's own process, following the same store, to save a hop on the commonest request; it ranks
        profiles too while it holds every item the ranker does. `near_generator`: the same generator held in
        this process (that catalogue's), to save the hop to the generator's replicas."""
        self.encoder, self.generator, self.ranker = encoder, generator, ranker
        self.known_users = known_users or ranker
        self.near_generator = near_generator or generator
        self.content = content
        self.generator_name, self.encoder_name = generator_name, encoder_name
        self.metrics = metrics or ServiceMetrics()
        self.variant = variant

    def _check(self, variant: str | None) -> None:
        """A request that names a variant (the header) must name this one."""
        if variant is not None and variant != self.variant:
            serving = f"serving only {self.variant!r}" if self.variant else "this app serves no named variants"
            raise Invalid(VARIANT_HEADER, f"unknown variant {variant!r}; {serving}")

    @contextlib.contextmanager
    def _timed(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.stage(stage, (time.perf_counter() - started) * 1000.0)

    async def _content_vector(self, side: str, attributes: dict, text: str, title: str | None = None,
                              stated: bool = False) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(generated vector, LLM vector of the whole text, LLM vector of the free text alone) of a new item or
        user; None where there is nothing to encode. The free text alone is what a user says they like
        (`stated`); both texts go to the encoder at once, so they share one batch."""
        plan = self.content.to_encode(side, attributes, text, title, stated)
        with self._timed("encode"):
            text_vector, stated_vector = plan.vectors(await self.encoder.call("encode", plan.texts) if plan.texts
                                                      else [])
        if not plan.usable:
            return None, text_vector, stated_vector
        with self._timed("generate"):
            asked = (plan.generator_input(text_vector), attributes) + ((title,) if side == "item" else ())
            vector = await self.near_generator.call(f"{side}_vector", *asked)
        return vector, text_vector, stated_vector

    async def recommend(self, request: RecommendRequest, variant: str | None = None) -> Recommendation:
        self._check(variant)
        if request.user_id is not None:
            asked = (request.user_id, request.k, request.exclude_seen, request.candidates)
            with self._timed("rank"):
                try:
                    result = await self.known_users.call("recommend_user", *asked, explain=request.explain)
                except NotFound:
                    if self.known_users is self.ranker:
                        raise
                    # a user the ingress's copy does not hold (made again by the ranker after a swap, or just
                    # registered through another replica): the ranker's catalogue decides
                    result = await self.ranker.call("recommend_user", *asked, explain=request.explain)
        else:
            profile = request.profile
            self.content.check("user", profile.attributes, "profile.attributes")
            has_content = self.content.usable("user", profile.attributes, profile.text)
            if not has_content and not profile.liked:
                raise Invalid("profile", "empty: give attributes, text or liked item ids")
            vector, _, stated = await self._content_vector("user", profile.attributes, profile.text, stated=True)
            asked = (vector, profile.liked, request.k, request.exclude_seen, request.candidates, stated)
            with self._timed("rank"):
                result = None
                if self.known_users is not self.ranker:  # this process's copy, while it holds every item
                    result = await self.known_users.call("recommend_profile_held", *asked, explain=request.explain,
                                                         said=profile.text)
                if result is None:
                    result = await self.ranker.call("recommend_profile", *asked, explain=request.explain,
                                                    said=profile.text)
        self.metrics.request("recommend", result["path"])
        return Recommendation.model_validate({**result, "variant": self.variant})

    async def register_item(self, item: NewItem, variant: str | None = None) -> Registered:
        self._check(variant)
        self.content.check("item", item.attributes)
        if not self.content.usable("item", item.attributes, item.text, item.title):
            raise Invalid("title, attributes, text", "nothing describes the item: give a title, attributes or text")
        vector, text_vector, _ = await self._content_vector("item", item.attributes, item.text, item.title)
        with self._timed("register"):
            result = await self.ranker.call("register_item", item.item_id, vector, title=item.title,
                                            attributes=item.attributes, text=item.text, generator=self.generator_name,
                                            text_vector=text_vector)
        self.metrics.request("register_item", "cold")
        return Registered.model_validate(result)

    async def register_user(self, user: NewUser, variant: str | None = None) -> Registered:
        self._check(variant)
        self.content.check("user", user.attributes)
        has_content = self.content.usable("user", user.attributes, user.text)
        if not has_content and not user.liked:
            raise Invalid("attributes, text, liked", "nothing describes the user: give attributes, text or liked ids")
        vector, _, stated = await self._content_vector("user", user.attributes, user.text, stated=True)
        with self._timed("register"):
            result = await self.ranker.call("register_user", user.user_id, vector, liked=user.liked,
                                            attributes=user.attributes, text=user.text, generator=self.generator_name,
                                            text_vector=stated)
        self.metrics.request("register_user", "cold")
        return Registered.model_validate(result)

    async def record_interaction(self, interaction: NewInteraction, variant: str | None = None) -> Recorded:
        self._check(variant)
        with self._timed("interaction"):
            result = await self.ranker.call("record_interaction", interaction.user_id, interaction.item_id,
                                            rating=interaction.rating, timestamp=interaction.timestamp)
        self.metrics.request("interaction", "cold" if result["moved"] else "warm")
        return Recorded.model_validate(result)

    async def delete(self, kind: str, entity_id: str, variant: str | None = None) -> Deleted:
        self._check(variant)
        with self._timed("delete"):
            result = await self.ranker.call("delete", kind, entity_id)
        self.metrics.request(f"delete_{kind}", "cold")
        return Deleted.model_validate(result)

    async def item(self, item_id: str, variant: str | None = None) -> ItemInfo:
        self._check(variant)
        info = ItemInfo.model_validate(await self.ranker.call("item_info", item_id))
        self.metrics.request("get_item", "cold" if info.cold else "warm")
        return info

    async def health(self) -> Health:
        stats = await self.ranker.call("stats")
        return Health(status="ok", generator=self.generator_name, encoder=self.encoder_name,
                      **{k: stats[k] for k in ("items", "users", "registered_items", "registered_users")})


def local_service(artifacts, store, *, generator: str = "auto", encoder: str = "auto",
                  text_weight: float = 1.0, stated_share: float = STATED_SHARE,
                  variant: str | None = None, encoder_precision: str = "auto",
                  encoder_runtime: str = "auto") -> RecommendService:
    """The whole request path in this process over an artifacts folder and a registration store (a folder, a
    `postgresql://` URL, or an open store): what the unit tests, the benchmarks' plain-uvicorn baseline and a
    restart check serve, with the objects the Serve deployments hold."""
    from coldstart.serving.catalogue import Catalogue  # faiss: only the local path holds the ranker in-process

    serving_generator = ServingGenerator(artifacts, generator)
    serving_encoder = ServingEncoder(artifacts, serving_generator.meta["content"], encoder, precision=encoder_precision,
                                     runtime=encoder_runtime)
    opened = open_store(store) if isinstance(store, (str, os.PathLike)) else store
    catalogue = Catalogue.from_artifacts(artifacts, serving_generator, opened, text_weight=text_weight, encoder=encoder,
                                         stated_share=stated_share, encoder_precision=encoder_precision,
                                         encoder_runtime=encoder_runtime)
    return RecommendService(encoder=LocalStage(serving_encoder), generator=LocalStage(serving_generator),
                            ranker=LocalStage(catalogue), content=serving_generator.content,
                            generator_name=serving_generator.name, encoder_name=serving_encoder.kind,
                            variant=variant)
