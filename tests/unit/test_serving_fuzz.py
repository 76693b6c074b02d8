"""Hostile input: the HTTP API fuzzed from its own OpenAPI schema (schemathesis), in-process, no Ray.

Schemathesis draws valid and invalid bodies, paths and headers for every operation
(a bounded number per operation). Whatever it sends: never a 5xx; every 4xx is a
JSON body whose `error` begins with the `field` it names; every 2xx matches the
schema. The registrations it manages to make go to a throwaway store.
"""

from __future__ import annotations

import collections

import pytest
import schemathesis
from schemathesis import GenerationMode

from coldstart.serving.routes import create_api
from coldstart.serving.service import local_service
from coldstart.testing.api_fuzz import OPERATIONS, RUNS, check_scope, fuzz
from coldstart.testing.serving_folder import build_artifacts

EXAMPLES_PER_OPERATION = 50  # per operation and mode (valid, invalid)
SEEN: collections.Counter = collections.Counter()  # status classes per operation, printed at the end


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, minilm):
    artifacts = build_artifacts(tmp_path_factory.mktemp("fuzz-artifacts"), minilm, epochs=5)
    service = local_service(artifacts, tmp_path_factory.mktemp("store"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_api(service))
    assert sorted(op.ok().label for op in schema.get_all_operations()) == sorted(OPERATIONS)  # none left out
    yield schema
    print("\nfuzzed requests by operation, mode and status class:",
          dict(sorted(SEEN.items())), "total", sum(SEEN.values()))


@pytest.fixture(scope="module")
def keyed_schema(tmp_path_factory, minilm):
    """The same API closed by keys (a read and a write key; docs on by the flag, for the schema)."""
    from coldstart.serving.keys import ApiKeys

    artifacts = build_artifacts(tmp_path_factory.mktemp("fuzz-keyed"), minilm, epochs=2)
    service = local_service(artifacts, tmp_path_factory.mktemp("keyed-store"))
    app = create_api(service, keys=ApiKeys.of(write=KEYS["write"], read=KEYS["read"]), docs=True)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


KEYS = {"write": "w" * 32, "read": "r" * 32, "none": None}


@pytest.mark.parametrize(("label", "mode"), RUNS, ids=[f"{label}-{mode.value}" for label, mode in RUNS])
def test_fuzzed_requests_get_no_5xx_and_named_4xx(api_schema, label, mode):
    fuzz(api_schema.find_operation_by_label(label), mode, EXAMPLES_PER_OPERATION, lambda case: case.call(), SEEN)


@pytest.mark.parametrize("key", ["write", "read", "none"])
def test_fuzzed_requests_behind_keys_get_no_5xx_and_only_what_the_key_allows(keyed_schema, key):
    """With keys: no key is a 401 everywhere, a read key a 403 on every write, never a 5xx."""
    headers = {"X-API-Key": KEYS[key]} if KEYS[key] else {}
    for label in OPERATIONS:
        fuzz(keyed_schema.find_operation_by_label(label), GenerationMode.POSITIVE, 10,
             lambda case: case.call(headers=headers), SEEN, tag=f"key {key}",
             also=lambda case, response: check_scope(label, key, response))
