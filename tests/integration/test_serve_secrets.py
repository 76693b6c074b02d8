"""Secrets never stored or logged: `coldstart serve` with a database password and an API key, then every place
a secret could land is searched for both.

The command starts a Ray cluster of its own (its temporary folder under the test's) with the key in its
environment and a PostgreSQL store whose URL carries a password, answers the smoke's requests (registrations
included, with the key), and stops. Then the store's table (registrations and the app's routing records), every
file of that Ray cluster's folder (every process's logs, the session's metadata) and the command's own output
are read whole: neither secret is in any of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from coldstart.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
PASSWORD = "pw-Zq81-do-not-log"
API_KEY = "key-Hm47-never-stored-anywhere-0123456789"


def _files_holding(root: Path, secrets: tuple[bytes, ...]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path} holds {secret.decode()!r}" for secret in secrets if secret in data]
    return found


def test_neither_the_store_password_nor_the_api_key_reaches_the_store_or_any_ray_log(serving_artifacts, postgres_url,
                                                                                   tmp_path, request):
    import psycopg

    from coldstart.serving.pg_connection import TABLE

    role = f"r_{tmp_path.name[-8:].replace('-', '_').lower()}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # the server trusts 127.0.0.1: any password
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://{role}:{PASSWORD}@")
    ray_root = Path(tempfile.mkdtemp(prefix="cs-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    request.addfinalizer(lambda: shutil.rmtree(ray_root, ignore_errors=True))
    env = {**os.environ, "COLDSTART_API_KEY": API_KEY, "RAY_TMPDIR": str(ray_root), "RAY_ADDRESS": "local"}
    env.pop("COLDSTART_STORE", None)
    run = subprocess.run([str(BIN / "coldstart"), "serve", "--artifacts", str(serving_artifacts), "--store", url,
                          "--port", str(free_port()), "--smoke"], env=env, capture_output=True, text=True,
                         timeout=540)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "-> 201" in run.stdout  # the smoke registered, with the key, into the database

    secrets = (PASSWORD.encode(), API_KEY.encode())
    with psycopg.connect(url) as conn:
        rows = [str(row) for row in conn.execute(f"SELECT * FROM {TABLE}")]
    assert any("routing" in row for row in rows) and any("demo-item" in row for row in rows)
    assert not [row for row in rows if any(s.decode() in row for s in secrets)]
    assert any(ray_root.rglob("*.log")) or any(ray_root.rglob("*.out")), "the Ray cluster wrote no logs here"
    # the search has teeth: the replicas' logs, which it reads, hold the requests the smoke sent
    assert _files_holding(ray_root, (b"/v1/items",)), "no Ray log holds a request: the search read nothing"
    assert _files_holding(ray_root, secrets) == []
    assert _files_holding(serving_artifacts, secrets) == []
    assert not [s for s in secrets if s.decode() in run.stdout + run.stderr]
