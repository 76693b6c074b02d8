"""Named variants of the served models (an A/B test, a swap to new artifacts) and how requests are routed.

A variant is an artifacts folder served by its own encoder -> generator -> ranker
chain (on Ray Serve, a Serve app of its own). The app's routing, which variants
with which weights, is a record of the registration store, like registrations
are: every ingress replica follows it, and a restarted one reads the latest.

A request goes to the variant its header names (`X-Coldstart-Variant`), else to
the one a stable hash of its user id picks by weight, so a user stays with one
variant for the whole test; a new user's profile without an id is hashed as
sent. Writes (registrations, interactions, deletions) go through the first
variant unless the header names another: every variant reads them from the
store, made again with its own models where they were made with other ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from coldstart.serving.errors import Invalid
from coldstart.serving.bodies import (Deleted, Health, ItemInfo, NewInteraction, NewItem, NewUser, Recommendation,
                                       RecommendRequest, Recorded, Registered, VariantInfo)

log = logging.getLogger(__name__)

VARIANT_HEADER = "X-Coldstart-Variant"
ROUTING_KIND = "routing"
STORE_WAIT_S = 2.0  # how long a request waits on the store for a newer routing before the current one serves


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,32}$", description="What answers and metrics call it.")
    weight: float = Field(1.0, ge=0, description="Relative share of users routed to it (0: by header only).")
    app: str = Field("", description="The Ray Serve app holding its chain (empty in one process).")
    settings: dict = Field(..., description="Its ServeConfig fields: artifacts, generator, encoder, ...")


def routing_record(variants: list[Variant]) -> dict:
    """The store record that makes `variants` the app's routing, for every ingress from its next poll on."""
    if not variants:
        raise ValueError("a routing names at least one variant")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise Invalid("variant", f"variant names must differ, got {names}")
    if sum(v.weight for v in variants) <= 0:
        raise Invalid("weight", "at least one variant needs a weight above 0")
    return {"kind": ROUTING_KIND, "id": f"routing:{time.time_ns()}",
            "variants": [v.model_dump(mode="json") for v in variants], "at": time.time()}


def latest_routing(records: list[dict]) -> list[Variant] | None:
    """The variants of the last routing record among `records`, None if there is none."""
    for record in reversed(records):
        if record.get("kind") == ROUTING_KIND:
            return [Variant.model_validate(v) for v in record["variants"]]
    return None


def write_routing(store, variants: list[Variant]) -> dict:
    """Append a routing record to an open store (`coldstart.serving.stores.Store`), erasing the ones before it
    (only the last is followed: the history does not grow with every swap); durable on return."""
    record = routing_record(variants)
    with store.writing() as writer:
        writer.read_new()  # a writer appends only after it has read everything before it
        writer.delete(record)
    return record


def _unit(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / float(16 ** 12)


def assign(variants: list[Variant], key: str) -> Variant:
    """The variant `key` (a user id) falls to by weight: the same one for the same key while weights hold."""
    weighted = [v for v in variants if v.weight > 0]
    total = sum(v.weight for v in weighted)
    point, edge = _unit(key) * total, 0.0
    for variant in weighted:
        edge += variant.weight
        if point < edge:
            return variant
    return weighted[-1]


class VariantRouter:
    """The request interface of `RecommendService` over several, one per variant."""

    def __init__(self, variants: list[Variant], services: dict):
        self.variants = variants
        self.services = services  # name -> RecommendService

    def _named(self, name: str | None):
        if name is None:
            return self.variants[0]
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise Invalid(VARIANT_HEADER, f"unknown variant {name!r}; serving {', '.join(v.name for v in self.variants)}")

    def pick(self, key: str | None, header: str | None = None) -> Variant:
        if header is not None or len(self.variants) == 1:
            return self._named(header)
        return assign(self.variants, key or "")

    async def recommend(self, request: RecommendRequest, variant: str | None = None) -> Recommendation:
        key = request.user_id
        if key is None:  # a profile: hashed as sent, so the same profile meets the same variant
            key = json.dumps(request.profile.model_dump(mode="json"), sort_keys=True)
        chosen = self.pick(key, variant)
        result = await self.services[chosen.name].recommend(request)
        result.variant = chosen.name
        return result

    async def register_item(self, item: NewItem, variant: str | None = None) -> Registered:
        return await self.services[self._named(variant).name].register_item(item)

    async def register_user(self, user: NewUser, variant: str | None = None) -> Registered:
        return await self.services[self._named(variant).name].register_user(user)

    async def record_interaction(self, interaction: NewInteraction, variant: str | None = None) -> Recorded:
        return await self.services[self._named(variant).name].record_interaction(interaction)

    async def delete(self, kind: str, entity_id: str, variant: str | None = None) -> Deleted:
        return await self.services[self._named(variant).name].delete(kind, entity_id)

    async def item(self, item_id: str, variant: str | None = None) -> ItemInfo:
        return await self.services[self._named(variant).name].item(item_id)

    async def health(self) -> Health:
        first = self.variants[0]
        health = await self.services[first.name].health()
        health.variants = [VariantInfo(name=v.name, weight=v.weight, app=v.app,
                                       generator=self.services[v.name].generator_name) for v in self.variants]
        return health


class FollowingRouter:
    """A `VariantRouter` that follows the store's routing records: the request interface an ingress serves.

    `build(variant) -> RecommendService` makes a variant's service (its stages, its catalogue). A new routing
    is built beside the current one, in a thread, and takes over when it is ready; until then requests keep
    the current one, so a swap never leaves a request without a model. A service whose variant is unchanged
    (same name, app and settings) is kept.
    """

    def __init__(self, store, variants: list[Variant], build, poll_s: float = 0.5):
        self.store, self.build, self.poll_s = store, build, poll_s
        self._services: dict[tuple, object] = {}
        self.router = self._router(latest_routing(store.read_new()) or variants)
        self._pending = None
        self._reading: asyncio.Future | None = None  # a read of the store in a worker thread
        self._polled = time.monotonic()

    @staticmethod
    def _key(variant: Variant) -> tuple:
        return variant.name, variant.app, json.dumps(variant.settings, sort_keys=True)

    def _router(self, variants: list[Variant]) -> VariantRouter:
        services = {self._key(v): self._services.get(self._key(v)) or self.build(v) for v in variants}
        self._services = services
        return VariantRouter(variants, {v.name: services[self._key(v)] for v in variants})

    @property
    def building(self) -> bool:
        """Whether a new routing is being built (the current one serves meanwhile)."""
        return self._pending is not None and not self._pending.done()

    async def follow(self) -> None:
        """Take a routing that finished building; read the store for a newer one at most every `poll_s`."""
        if self._pending is not None:
            if not self._pending.done():
                return
            pending, self._pending = self._pending, None
            try:
                self.router = pending.result()
                log.info("serving variants %s", [v.name for v in self.router.variants])
            except Exception:  # noqa: BLE001 - a routing that cannot be built leaves the current one serving
                log.exception("the new routing could not be built; keeping the current one")
        now = time.monotonic()
        if now - self._polled < self.poll_s:
            return
        self._polled = now
        if self._reading is None:  # a read still out from a slow store is waited on again, its records kept
            self._reading = asyncio.ensure_future(asyncio.to_thread(self.store.read_new))  # off the event loop
        try:
            records = await asyncio.wait_for(asyncio.shield(self._reading), STORE_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("the store did not answer within %.0f s; the current routing serves", STORE_WAIT_S)
            return
        self._reading = None
        latest = latest_routing(records)
        if latest is not None and latest != self.router.variants:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._router, latest))

    async def recommend(self, request: RecommendRequest, variant: str | None = None) -> Recommendation:
        await self.follow()
        return await self.router.recommend(request, variant)

    async def register_item(self, item: NewItem, variant: str | None = None) -> Registered:
        await self.follow()
        return await self.router.register_item(item, variant)

    async def register_user(self, user: NewUser, variant: str | None = None) -> Registered:
        await self.follow()
        return await self.router.register_user(user, variant)

    async def record_interaction(self, interaction: NewInteraction, variant: str | None = None) -> Recorded:
        await self.follow()
        return await self.router.record_interaction(interaction, variant)

    async def delete(self, kind: str, entity_id: str, variant: str | None = None) -> Deleted:
        await self.follow()
        return await self.router.delete(kind, entity_id, variant)

    async def item(self, item_id: str, variant: str | None = None) -> ItemInfo:
        await self.follow()
        return await self.router.item(item_id, variant)

    async def health(self) -> Health:
        await self.follow()
        return await self.router.health()
