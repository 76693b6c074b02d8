"""One request of each kind against a running endpoint, printed: what `make demo` ends with."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd

from coldstart.data.schema import find_table, read_table
from coldstart.serving.served_models import content_spec


def _examples(artifacts: Path) -> tuple[str, dict, dict]:
    """A warm user id, an item table row to model a new item on (its title under "title"), and a user attribute
    profile."""
    split = artifacts / "split"
    train = read_table(find_table(split, "train")).astype({"user_id": str, "item_id": str})
    items = read_table(find_table(split, "items"))
    users_path = find_table(split, "users", required=False)
    users = read_table(users_path) if users_path else pd.DataFrame({"user_id": train["user_id"]})
    user = train["user_id"].value_counts().index[0]
    item = items.dropna(axis=1, how="all").iloc[0].to_dict()
    title = content_spec(artifacts)["templates"]["title_column"]  # the run's title column, if it found one
    item["title"] = _json_value(item.pop(title, None)) if title is not None else None
    profile = users.drop(columns=["user_id"]).dropna(axis=1, how="all").iloc[0].to_dict() if users.shape[1] > 1 else {}
    return str(user), item, profile


def _json_value(value):
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value != value:
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def run_smoke(base_url, artifacts: Path, *, api_key: str | None = None,
              echo: Callable[[str], None] = print) -> list[tuple[str, int]]:
    """Every endpoint once; returns (request, status) pairs and raises if any answer is not a success.

    `base_url` is a URL, or an open client with httpx's `request` (a TestClient over an in-process app)."""
    warm_user, item, profile = _examples(artifacts)
    stamp = time.strftime("%Y%m%d%H%M%S")
    attributes = {k: _json_value(v) for k, v in item.items() if k not in ("item_id", "title")}
    profile = {k: _json_value(v) for k, v in profile.items()}
    new_item = {"item_id": f"demo-item-{stamp}", "title": f"A new {item.get('title') or 'item'}",
                "attributes": attributes, "text": "Registered by the demo a moment ago."}
    calls = [
        ("GET", "/livez", None),
        ("GET", "/healthz", None),
        ("POST", "/v1/recommend", {"user_id": warm_user, "k": 5}),
        ("POST", "/v1/recommend", {"profile": {"attributes": profile, "text": "Enjoys thoughtful dramas."}, "k": 5}),
        ("POST", "/v1/items", new_item),
        ("GET", f"/v1/items/{new_item['item_id']}", None),
        ("POST", "/v1/users", {"user_id": f"demo-user-{stamp}", "attributes": profile,
                               "liked": [new_item["item_id"]]}),
        ("POST", "/v1/recommend", {"user_id": f"demo-user-{stamp}", "k": 5}),
    ]
    headers = {"X-API-Key": api_key} if api_key else {}
    logging.getLogger("httpx").setLevel(logging.WARNING)  # we print each exchange ourselves
    results = []
    with (httpx.Client(base_url=base_url, timeout=60) if isinstance(base_url, (str, httpx.URL))
          else contextlib.nullcontext(base_url)) as client:
        for method, path, body in calls:
            started = time.perf_counter()
            response = client.request(method, path, json=body, headers=headers)
            ms = (time.perf_counter() - started) * 1000
            echo(f"\n{method} {path}" + (f"  {json.dumps(body)}" if body else ""))
            echo(f"-> {response.status_code} in {ms:.0f} ms: {json.dumps(response.json())}")
            results.append((f"{method} {path}", response.status_code))
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text}")
    return results
