"""Limits every request meets before a model or the store: body size, rate per key, time.

- `BodyLimit`: an ASGI wrapper that answers 413 to a body over `max_bytes`, told by
  its Content-Length or counted as it streams, before the app reads it whole.
- `Deadline`: an ASGI wrapper that answers 503 (with Retry-After) to a request
  still unanswered after `seconds`; a slow store or model never holds a client.
- `RateLimiter`: a token bucket per caller (its key, else its address): `rate`
  requests a second on average, bursts of `burst`; over it, 429 with Retry-After.
  Each ingress replica keeps its own buckets, so a cluster allows replicas x rate.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import OrderedDict

from starlette.exceptions import HTTPException

MAX_BODY_BYTES = 2 * 1024 * 1024  # 10,000 candidate ids of 128 characters fit
REQUEST_TIMEOUT_S = 30.0
RATE_PER_S, BURST = 1000.0, 2000  # per caller: far above what one client of a replica needs, a cap on abuse


async def _answer(send, status: int, field: str, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": f"{field}: {message}", "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised into the app's body read: FastAPI passes an HTTPException on (any other error becomes its 400)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"larger than {max_bytes} bytes")


class BodyLimit:
    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = f"larger than {self.max_bytes} bytes"
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _answer(send, 413, "body", too_large)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if not started:
                await _answer(send, 413, "body", too_large)


class Deadline:
    def __init__(self, app, seconds: float = REQUEST_TIMEOUT_S):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.seconds:
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, sending), self.seconds)
        except asyncio.TimeoutError:
            if not started:
                await _answer(send, 503, "request", f"not answered within {self.seconds:g} s; try again",
                              [(b"retry-after", b"1")])


class RateLimiter:
    """Token buckets by caller; the least recently seen callers are forgotten past `callers`."""

    def __init__(self, rate: float = RATE_PER_S, burst: int = BURST, callers: int = 10_000):
        self.rate, self.burst, self.callers = rate, burst, callers
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, when)
        self.lock = threading.Lock()

    def wait(self, caller: str) -> float:
        """0 if `caller` may go now (and takes a token), else the seconds until it may."""
        if not self.rate:
            return 0.0
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            ok = tokens >= 1.0
            self.buckets[caller] = (tokens - 1.0 if ok else tokens, now)
            while len(self.buckets) > self.callers:
                self.buckets.popitem(last=False)
        return 0.0 if ok else max((1.0 - tokens) / self.rate, 1e-3)

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
