"""The HTTP API (v1) over a `RecommendService`: routes, error bodies and the optional API key.

One FastAPI app for every deployment: the Ray Serve ingress builds it around
its handles, the plain-uvicorn baseline around in-process objects. Every client
error is a 4xx whose `error` names the field; a request that fails validation
never reaches a model or the store.
"""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from coldstart.serving.errors import RequestError
from coldstart.serving.routing import VARIANT_HEADER
from coldstart.serving.schemas import (Deleted, FieldValueError, Health, ItemInfo, NewInteraction, NewItem, NewUser,
                                       Recommendation, RecommendRequest, Recorded, Registered)
from coldstart.serving.service import RecommendService

if TYPE_CHECKING:
    from coldstart.serving.routing import VariantRouter

API_KEY_ENV = "COLDSTART_API_KEY"
ERRORS = {400: {"description": "Malformed JSON"}, 401: {"description": "Missing or wrong X-API-Key"},
          404: {"description": "Unknown id"},
          409: {"description": "Id already registered, or the interaction already recorded with another rating"},
          422: {"description": "A field is invalid; `error` names it"}}


def _field(error: dict) -> str:
    parts = [str(p) for p in error["loc"] if p not in ("body", "path", "query")]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldValueError):  # a check across fields sits at the object's level: name them
        parts.append(cause.field)
    return ".".join(parts) or "body"


def create_api(service: RecommendService | VariantRouter, api_key: str | None = None) -> FastAPI:
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    api = FastAPI(title="coldstart", version="1",
                  description="Recommendations for warm and brand-new users; live registration of new items "
                              "and users. Paths are versioned (/v1).")

    async def require_key(x_api_key: str | None = Header(None, description="Needed when the server sets a key.")):
        if api_key is not None and not hmac.compare_digest((x_api_key or "").encode(), api_key.encode()):
            raise RequestError("X-API-Key", "missing or wrong API key") from None

    @api.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError):
        status = 401 if exc.field == "X-API-Key" else exc.status
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=status)

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException):
        # FastAPI's own: a body it cannot parse (a wrong or missing content type, bytes that are not
        # JSON), an unknown path, a method a path does not take. Same shape as every other error.
        field = {400: "body", 405: "method"}.get(exc.status_code, "path")
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

    v1 = [Depends(require_key)]
    Variant = Header(None, alias=VARIANT_HEADER, description="Route to this variant (when the app serves several).")

    @api.post("/v1/recommend", response_model=Recommendation, dependencies=v1, responses=ERRORS)
    async def recommend(request: RecommendRequest, variant: str | None = Variant) -> Recommendation:
        """Top-k items for a known or registered `user_id`, or for a new user's `profile`."""
        return await service.recommend(request, variant=variant)

    @api.post("/v1/items", response_model=Registered, status_code=201, dependencies=v1, responses=ERRORS)
    async def register_item(item: NewItem, variant: str | None = Variant) -> Registered:
        """Register a new item; it is recommendable from the next request on."""
        return await service.register_item(item, variant=variant)

    @api.post("/v1/users", response_model=Registered, status_code=201, dependencies=v1, responses=ERRORS)
    async def register_user(user: NewUser, variant: str | None = Variant) -> Registered:
        """Register a new user from a profile; recommend to it by `user_id` afterwards."""
        return await service.register_user(user, variant=variant)

    @api.post("/v1/interactions", response_model=Recorded, status_code=201, dependencies=v1, responses=ERRORS)
    async def record_interaction(interaction: NewInteraction, variant: str | None = Variant) -> Recorded:
        """A user interacted with an item. Durable before the answer; a cold or registered item's (or user's)
        vector moves toward what its interactions say, for every replica from the next request on."""
        return await service.record_interaction(interaction, variant=variant)

    @api.get("/v1/items/{item_id}", response_model=ItemInfo, dependencies=v1, responses=ERRORS)
    async def get_item(item_id: str, variant: str | None = Variant) -> ItemInfo:
        return await service.item(item_id, variant=variant)

    @api.delete("/v1/items/{item_id}", response_model=Deleted, dependencies=v1, responses=ERRORS)
    async def delete_item(item_id: str, variant: str | None = Variant) -> Deleted:
        """Delete an item, trained or registered: never recommended again, by any replica from the next request
        on; its registration and interactions are erased from the store before the answer."""
        return await service.delete("item", item_id, variant=variant)

    @api.delete("/v1/users/{user_id}", response_model=Deleted, dependencies=v1, responses=ERRORS)
    async def delete_user(user_id: str, variant: str | None = Variant) -> Deleted:
        """Delete a user, trained or registered: unknown from the next request on, and their registration
        (text, attributes, liked items) and interactions erased from the store before the answer."""
        return await service.delete("user", user_id, variant=variant)

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return await service.health()

    return api
