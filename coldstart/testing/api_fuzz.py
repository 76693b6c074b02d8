"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis): the operations, the checks and the driver that
the in-process fuzz test (tests/unit/test_serving_fuzz.py) and the one over HTTP against a real Serve app
(tests/integration/test_serve_http.py) share.

Whatever is sent: never a 5xx; every 4xx is a JSON body whose `error` begins with the `field` it names; every
2xx matches the schema.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

OPERATIONS = ["POST /v1/recommend", "POST /v1/items", "POST /v1/users", "POST /v1/interactions",
              "GET /v1/items/{item_id}", "DELETE /v1/items/{item_id}", "DELETE /v1/users/{user_id}", "GET /healthz",
              "GET /livez"]
# Invalid input exists only for operations with a body: a path id or a header is any string.
RUNS = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + \
       [(label, GenerationMode.NEGATIVE) for label in OPERATIONS if label.startswith("POST")]


def check_response(case, response) -> None:
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("field"), str) and body["field"], response.text
        assert isinstance(body.get("error"), str) and body["error"].startswith(body["field"]), response.text
    else:
        case.validate_response(response, checks=[response_schema_conformance])


def check_scope(label: str, key: str, response) -> None:
    """What a key (`key`: "write", "read" or "none") may do: without one every route but /livez is a 401; a read
    key gets a 403 on every write (registrations, interactions, deletions)."""
    writes = label.split()[0] in ("POST", "DELETE") and label != "POST /v1/recommend"
    if label == "GET /livez":
        assert response.status_code == 200
    elif key == "none":
        assert response.status_code == 401, (label, response.text)
    elif key == "read" and writes:
        assert response.status_code == 403, (label, response.text)


def fuzz(operation, mode: GenerationMode, examples: int, call: Callable, seen: collections.Counter,
         tag: str | None = None, also: Callable | None = None) -> None:
    """Send `examples` cases of `operation` drawn in `mode` (the same ones every run) with `call(case)`; count
    their status classes in `seen` under (label, `tag` or the mode, class); check each response, and `also`
    (case, response) where given. The schemathesis pytest plugin does not run under pytest 9, so the
    operation's hypothesis strategy is driven here with `given`; strategies and checks are schemathesis' own."""
    label = operation.label

    @given(case=operation.as_strategy(generation_mode=mode))
    @seed(0)  # derandomize=True makes negative generation unsatisfiable
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        response = call(case)
        seen[(label, tag or mode.value, f"{response.status_code // 100}xx")] += 1
        check_response(case, response)
        if also is not None:
            also(case, response)

    run()
