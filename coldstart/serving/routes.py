"""The HTTP API (v1) over a `RecommendService`: routes, error bodies, keys and limits.

One FastAPI app for every deployment: the Ray Serve ingress builds it around
its handles, the plain-uvicorn baseline around in-process objects. Every client
error is a 4xx whose `error` names the field; a request that fails validation
never reaches a model or the store.

Keys (`coldstart.serving.keys`): with any key configured, every route but
`/livez` needs `X-API-Key`: a read key for recommendations, item facts and
`/healthz`, a write key for registrations, interactions and deletions (401 for
no or a wrong key, 403 for a read key that writes), and the OpenAPI docs are
off unless `docs=True`. Without keys (a server on loopback) everything is open.
Limits (`coldstart.serving.limits`): a body over `max_body_bytes` is a 413,
more than `rate` requests a second from one caller a 429, a request unanswered
after `timeout_s` a 503; field limits are in the schemas (422).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from coldstart.serving.errors import Forbidden, RequestError, TooMany, Unauthorized
from coldstart.serving.keys import READ, WRITE, ApiKeys
from coldstart.serving.limits import BURST, MAX_BODY_BYTES, REQUEST_TIMEOUT_S, BodyLimit, Deadline, RateLimiter
from coldstart.serving.routing import VARIANT_HEADER
from coldstart.serving.bodies import (Deleted, FieldValueError, Health, ItemInfo, NewInteraction, NewItem, NewUser,
                                       Recommendation, RecommendRequest, Recorded, Registered)
from coldstart.serving.service import RecommendService

if TYPE_CHECKING:
    from coldstart.serving.routing import VariantRouter

ERRORS = {400: {"description": "Malformed JSON"}, 401: {"description": "Missing or wrong X-API-Key"},
          403: {"description": "A read key on a route that writes"}, 404: {"description": "Unknown id"},
          409: {"description": "Id already registered, or the interaction already recorded with another rating"},
          413: {"description": f"A body over the server's limit ({MAX_BODY_BYTES} bytes by default)"},
          422: {"description": "A field is invalid; `error` names it"},
          429: {"description": "Over the caller's request rate; see Retry-After"},
          503: {"description": "Not answered within the server's time limit; see Retry-After"}}


def _field(error: dict) -> str:
    parts = [str(p) for p in error["loc"] if p not in ("body", "path", "query")]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldValueError):  # a check across fields sits at the object's level: name them
        parts.append(cause.field)
    return ".".join(parts) or "body"


def create_api(service: RecommendService | VariantRouter, api_key: str | None = None, *,
               keys: ApiKeys | None = None, docs: bool | None = None, rate: float = 0.0, burst: int = BURST,
               max_body_bytes: int = MAX_BODY_BYTES, timeout_s: float = REQUEST_TIMEOUT_S) -> FastAPI:
    """`keys`: default the environment's (`ApiKeys.from_env`); `api_key`, a write key, is added to them.
    `docs`: serve /docs and /openapi.json (default: only without keys). `rate`: requests a second per caller
    (0, the default here: no limit; a served app takes `ServeConfig.rate_limit`)."""
    keys = ApiKeys.from_env() if keys is None else keys
    if api_key:
        keys = ApiKeys(keys.keys + ApiKeys.of(write=api_key).keys)
    docs = not keys if docs is None else docs
    api = FastAPI(title="coldstart", version="1",
                  description="Recommendations for warm and brand-new users; live registration of new items "
                              "and users. Paths are versioned (/v1).",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    api.add_middleware(Deadline, seconds=timeout_s)
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    limiter = RateLimiter(rate, burst)

    def require(needed: str):
        async def check(request: Request,
                        x_api_key: str | None = Header(None, description="Needed when the server sets keys.")):
            if keys and not keys.allows(x_api_key, needed):
                if keys.scope(x_api_key) is None:
                    raise Unauthorized("X-API-Key", "missing or wrong API key") from None
                raise Forbidden("X-API-Key", f"this key may not {needed}: use a {WRITE} key") from None
            caller = hashlib.sha256(x_api_key.encode()).hexdigest()[:16] if x_api_key else \
                (request.client.host if request.client else "-")
            wait = limiter.wait(caller)
            if wait:
                error = TooMany("request", f"over {rate:g} requests a second; retry in {wait:.2f} s")
                error.headers = {"Retry-After": RateLimiter.retry_after(wait)}
                raise error
        return check

    @api.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError):
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status,
                            headers=getattr(exc, "headers", None))

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException):
        # FastAPI's own: a body it cannot parse (a wrong or missing content type, bytes that are not
        # JSON), an unknown path, a method a path does not take. Same shape as every other error.
        field = {400: "body", 405: "method", 413: "body"}.get(exc.status_code, "path")
        return JSONResponse({"error": f"{field}: {exc.detail}", "field": field}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            where = next(e for e in errors if e.get("type") == "json_invalid")
            return JSONResponse({"error": f"body: malformed JSON ({where.get('ctx', {}).get('error', 'invalid')} "
                                          f"at {_field(where) if len(where['loc']) > 1 else 'start'})",
                                 "field": "body"}, status_code=400)
        fields = [_field(e) for e in errors]
        message = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, errors))
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse({"error": message, "field": fields[0], "detail": jsonable_encoder(detail)},
                            status_code=422)

    v1, writes = [Depends(require(READ))], [Depends(require(WRITE))]
    Variant = Header(None, alias=VARIANT_HEADER, description="Route to this variant (when the app serves several).")

    @api.post("/v1/recommend", response_model=Recommendation, dependencies=v1, responses=ERRORS)
    async def recommend(request: RecommendRequest, variant: str | None = Variant) -> Recommendation:
        """Top-k items for a known or registered `user_id`, or for a new user's `profile`."""
        return await service.recommend(request, variant=variant)

    @api.post("/v1/items", response_model=Registered, status_code=201, dependencies=writes, responses=ERRORS)
    async def register_item(item: NewItem, variant: str | None = Variant) -> Registered:
        """Register a new item; it is recommendable from the next request on."""
        return await service.register_item(item, variant=variant)

    @api.post("/v1/users", response_model=Registered, status_code=201, dependencies=writes, responses=ERRORS)
    async def register_user(user: NewUser, variant: str | None = Variant) -> Registered:
        """Register a new user from a profile; recommend to it by `user_id` afterwards."""
        return await service.register_user(user, variant=variant)

    @api.post("/v1/interactions", response_model=Recorded, status_code=201, dependencies=writes, responses=ERRORS)
    async def record_interaction(interaction: NewInteraction, variant: str | None = Variant) -> Recorded:
        """A user interacted with an item. Durable before the answer; a cold or registered item's (or user's)
        vector moves toward what its interactions say, for every replica from the next request on."""
        return await service.record_interaction(interaction, variant=variant)

    @api.get("/v1/items/{item_id}", response_model=ItemInfo, dependencies=v1, responses=ERRORS)
    async def get_item(item_id: str, variant: str | None = Variant) -> ItemInfo:
        return await service.item(item_id, variant=variant)

    @api.delete("/v1/items/{item_id}", response_model=Deleted, dependencies=writes, responses=ERRORS)
    async def delete_item(item_id: str, variant: str | None = Variant) -> Deleted:
        """Delete an item, trained or registered: never recommended again, by any replica from the next request
        on; its registration and interactions are erased from the store before the answer."""
        return await service.delete("item", item_id, variant=variant)

    @api.delete("/v1/users/{user_id}", response_model=Deleted, dependencies=writes, responses=ERRORS)
    async def delete_user(user_id: str, variant: str | None = Variant) -> Deleted:
        """Delete a user, trained or registered: unknown from the next request on, and their registration
        (text, attributes, liked items) and interactions erased from the store before the answer."""
        return await service.delete("user", user_id, variant=variant)

    @api.get("/healthz", response_model=Health, dependencies=v1, responses=ERRORS)
    async def healthz() -> Health:
        """What is served: the generator, the encoder, counts of items and users (a read key, where keys are set)."""
        return await service.health()

    @api.get("/livez")
    async def livez() -> dict:
        """Liveness for probes: no key, and nothing about what is served."""
        return {"status": "ok"}

    return api
