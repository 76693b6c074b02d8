"""Closed by default, over HTTP, on a Serve app of its own: `coldstart serve` with API keys and a database
password, fuzzed with each key, then searched for the secrets everywhere they could land.

The command starts a Ray cluster of its own (its temporary folder is the test's) with a write and a read key in
its environment and a PostgreSQL store whose URL carries a password. Through its HTTP port: the smoke's requests
with the write key (registrations reach the database), then the API fuzzed from the schema the app publishes
(behind the key, `--docs`) with the write key, the read key and none: never a 5xx, no key a 401 everywhere but
/livez, the read key a 403 on every write. After a SIGTERM, the store's table (registrations and the app's
routing records), every file of that Ray cluster's folder (every process's logs, the session's metadata), the
artifacts and the command's own output are read whole: no secret is in any of them.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from coldstart.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
PASSWORD = "pw-Zq81-do-not-log"
KEYS = {"write": "key-Hm47-write-never-stored-0123456789", "read": "key-Rt52-read-never-stored-9876543210",
        "none": None}


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


def _wait_answering(url: str, process: subprocess.Popen, output: Path, seconds: float = 400) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"coldstart serve exited ({process.returncode}): {output.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/livez", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"coldstart serve did not answer in {seconds} s: {output.read_text()[-3000:]}")


def test_keys_hold_over_http_and_no_secret_reaches_the_store_or_any_ray_log(serving_artifacts, postgres_url,
                                                                          tmp_path, request):
    import psycopg
    import schemathesis
    from schemathesis import GenerationMode

    from coldstart.serving.pg_connection import TABLE
    from coldstart.serving.smoke import run_smoke
    from coldstart.testing.api_fuzz import OPERATIONS, check_scope, fuzz

    role = f"r_{tmp_path.name[-8:].replace('-', '_').lower()}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # the server trusts 127.0.0.1: any password
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    store = postgres_url.replace("postgresql://postgres@", f"postgresql://{role}:{PASSWORD}@")
    ray_root = Path(tempfile.mkdtemp(prefix="cs-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    request.addfinalizer(lambda: shutil.rmtree(ray_root, ignore_errors=True))
    env = {**os.environ, "COLDSTART_API_KEY": KEYS["write"], "COLDSTART_READ_KEY": KEYS["read"],
           "RAY_TMPDIR": str(ray_root), "RAY_ADDRESS": "local"}
    env.pop("COLDSTART_STORE", None)
    port, output = free_port(), tmp_path / "serve.out"
    with open(output, "w") as out:
        process = subprocess.Popen([str(BIN / "coldstart"), "serve", "--artifacts", str(serving_artifacts),
                                    "--store", store, "--port", str(port), "--docs"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_answering(url, process, output)
        assert all(status < 300 for _, status in run_smoke(url, serving_artifacts, api_key=KEYS["write"],
                                                           echo=lambda _: None))
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers={"X-API-Key": KEYS["read"]})
        assert sorted(op.ok().label for op in schema.get_all_operations()) == sorted(OPERATIONS)
        seen: collections.Counter = collections.Counter()
        for key, secret in KEYS.items():
            headers = {"X-API-Key": secret} if secret else {}
            for label in OPERATIONS:
                fuzz(schema.find_operation_by_label(label), GenerationMode.POSITIVE, 5,
                     lambda case: case.call(base_url=url, headers=headers, timeout=60), seen, tag=f"key {key}",
                     also=lambda case, response: check_scope(label, key, response))
        print("\nfuzzed over HTTP behind keys:", dict(sorted(seen.items())), "total", sum(seen.values()))
        assert sum(seen.values()) >= 100
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # stops Serve and Ray as Ctrl-C does
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)

    secrets = (PASSWORD.encode(), KEYS["write"].encode(), KEYS["read"].encode())
    with psycopg.connect(store) as conn:
        rows = [str(row) for row in conn.execute(f"SELECT * FROM {TABLE}")]
    assert any("routing" in row for row in rows) and any("demo-item" in row for row in rows)
    assert not [row for row in rows if any(s.decode() in row for s in secrets)]
    # the search has teeth: the replicas' logs, which it reads, hold the requests sent
    assert _files_holding(ray_root, (b"/v1/items",)), "no Ray log holds a request: the search read nothing"
    assert _files_holding(ray_root, secrets) == []
    assert _files_holding(serving_artifacts, secrets) == []
    assert _files_holding(tmp_path, secrets) == []  # the command's output
