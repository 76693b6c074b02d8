"""The registration store's contract, run against both back ends: the file log and PostgreSQL.

What `Catalogue` relies on: records come back in the order they were appended,
to any other store object or process (durable once `append` returns); `read_new`
returns only what this reader has not seen; writers in different processes
exclude each other, so none is lost or duplicated; a record reads back as the
dict that went in; and registration on top stays idempotent by id and body.
The PostgreSQL server is the session's (`postgres_server` in tests/conftest.py).
"""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from coldstart.config import ConfigError
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.errors import Conflict
from coldstart.serving.pg_store import PostgresStore, display_url
from coldstart.serving.file_store import RegistrationStore
from coldstart.serving.stores import Store, describe_store, open_store, parse_store_spec


@pytest.fixture(params=["file", "postgres"])
def spec(request, tmp_path):
    """What `--store` would say: a folder, or a URL of a fresh database."""
    if request.param == "file":
        return str(tmp_path / "store")
    return request.getfixturevalue("postgres_url")


def _append(store, *records: dict) -> None:
    for record in records:
        with store.writing() as writer:
            writer.read_new()
            writer.append(record)


def test_the_factory_picks_the_back_end(spec):
    store = open_store(spec)
    assert isinstance(store, Store)
    assert isinstance(store, PostgresStore if spec.startswith("postgresql://") else RegistrationStore)
    assert store.read_new() == []


def test_order_is_kept_and_another_store_object_sees_every_record(spec):
    writer = open_store(spec)
    records = [{"kind": "item", "id": f"x{i}", "n": i} for i in range(25)]
    _append(writer, *records)
    assert open_store(spec).read_new() == records  # a replica started later: every record, in order


def test_read_new_returns_only_what_this_reader_has_not_seen(spec):
    a, b = open_store(spec), open_store(spec)
    assert a.read_new() == []
    _append(b, {"id": "x"})
    assert a.read_new() == [{"id": "x"}]
    assert a.read_new() == []
    _append(a, {"id": "y"})
    assert a.read_new() == []  # its own record: applied by the writer, not read again
    assert b.read_new() == [{"id": "y"}]


def test_append_needs_a_caught_up_reader(spec):
    a, b = open_store(spec), open_store(spec)
    _append(a, {"id": "x"})
    with pytest.raises(RuntimeError, match="read_new"), b.writing() as writer:
        writer.append({"id": "x"})  # b never saw x: its duplicate check would be wrong
    assert open_store(spec).read_new() == [{"id": "x"}]
    _append(b, {"id": "y"})  # the failed attempt left the store usable
    assert [r["id"] for r in open_store(spec).read_new()] == ["x", "y"]


ODD = {
    "kind": "item", "id": "ünïcode-✓", "title": 'quotes " and \\ backslash\nnewline\ttab \u0000 nul',
    "attributes": {"year": 1998, "genres": "Sci-Fi|Adventure", "nested": {"list": [1, 2.5, None, True, False, ""]}},
    "vector": [0.1, -0.0, 1e300, -1e-300, 5e-324, 1.7976931348623157e308, 0.30000000000000004, 1.0, 3.0e-7],
    "big": 2**62, "negative": -(2**53) - 1, "empty": {}, "none": None, "emoji": "🎬", "at": 1750000000.123456,
}


def test_a_record_reads_back_as_the_dict_that_went_in(spec):
    _append(open_store(spec), ODD)
    (back,) = open_store(spec).read_new()
    assert back == ODD
    # ==, and the same types and spellings too: 1.0 stays a float, -0.0 keeps its sign, 2**62 an int
    assert json.dumps(back) == json.dumps(ODD)


def test_a_record_must_be_json(spec):
    store = open_store(spec)
    with pytest.raises((ValueError, TypeError)), store.writing() as writer:
        writer.read_new()
        writer.append({"vector": [float("nan")]})
    assert open_store(spec).read_new() == []


# ---- two processes ----------------------------------------------------------------------------------

def _write_counted(spec: str, name: str, n: int, start) -> None:
    """Append n records, each numbered by how many records this writer had seen: with real exclusion the
    numbers of all writers together are 0, 1, 2, ... each once; an interleaving would repeat one."""
    store = open_store(spec)
    seen = len(store.read_new())
    start.wait()
    for i in range(n):
        with store.writing() as writer:
            seen += len(writer.read_new())
            time.sleep(0.001)  # widen the window between the check and the append
            writer.append({"writer": name, "i": i, "seq": seen})
            seen += 1


def test_writers_in_two_processes_never_lose_or_duplicate(spec):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    n = 40
    procs = [ctx.Process(target=_write_counted, args=(spec, name, n, start)) for name in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = open_store(spec).read_new()
    assert sorted(r["seq"] for r in records) == list(range(2 * n))  # none lost, none duplicated
    assert [r["seq"] for r in records] == list(range(2 * n))  # and read back in the order they were written
    for name in ("a", "b"):
        assert [r["i"] for r in records if r["writer"] == name] == list(range(n))


def _append_one(spec: str, record: dict) -> None:
    _append(open_store(spec), record)


def test_a_record_written_by_another_process_is_durable(spec):
    proc = multiprocessing.get_context("spawn").Process(target=_append_one, args=(spec, {"id": "from-child"}))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0  # the writer process is gone; its acknowledged record is not
    assert open_store(spec).read_new() == [{"id": "from-child"}]


# ---- the catalogue on top ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, minilm):
    from coldstart.serving.served_models import ServingGenerator
    from coldstart.testing.serving_folder import build_artifacts

    # Two epochs: registration's bookkeeping is under test here, not how well the model ranks.
    artifacts = build_artifacts(tmp_path_factory.mktemp("store-contract"), minilm, epochs=2)
    return artifacts, ServingGenerator(artifacts)


def test_catalogue_replicas_share_registrations_idempotently(spec, served):
    artifacts, generator = served
    a = Catalogue.from_artifacts(artifacts, generator, open_store(spec))
    b = Catalogue.from_artifacts(artifacts, generator, open_store(spec))
    vector = generator.arrays["item_vectors"][0]
    fields = {"title": "Shared", "attributes": {"year": 1998}, "text": "", "generator": "distill"}
    first = a.register_item("shared", vector, **fields)
    assert b.item_info("shared")["registered"] is True  # b never saw the call, only the store
    assert b.register_item("shared", vector, **fields) == first  # a retry through another replica: same answer
    with pytest.raises(Conflict):
        b.register_item("shared", vector, **{**fields, "title": "Another film"})
    a.register_user("fan", None, liked=["shared"], attributes={}, text="", generator="distill")
    assert b.recommend_user("fan", 3)["path"] == "cold"
    records = open_store(spec).read_new()
    assert [(r["kind"], r["id"]) for r in records] == [("item", "shared"), ("user", "fan")]  # written once each

    restarted = Catalogue.from_artifacts(artifacts, generator, open_store(spec))  # the digest is in the store
    assert restarted.register_item("shared", vector, **fields)["id"] == "shared"
    with pytest.raises(Conflict):
        restarted.register_item("shared", vector, **{**fields, "text": "changed"})
    assert restarted.stats()["registered_items"] == 1 and restarted.stats()["registered_users"] == 1
    assert len(open_store(spec).read_new()) == 2


# ---- specs ------------------------------------------------------------------------------------------

def test_store_specs_and_what_a_log_line_shows(tmp_path):
    from pathlib import Path

    assert parse_store_spec(str(tmp_path)) == tmp_path
    assert parse_store_spec("postgresql://u:pw@db:5432/reg") == "postgresql://u:pw@db:5432/reg"
    with pytest.raises(ConfigError, match="mysql://"):
        parse_store_spec("mysql://u@db/reg")
    assert describe_store("postgresql://u:s3cret@db:5432/reg?sslmode=require") == "postgresql://u@db:5432/reg"
    assert "s3cret" not in display_url("postgres://u:s3cret@db/reg")
    assert describe_store(Path("/x/registry")) == "/x/registry"


def test_an_unreachable_database_is_one_line_without_the_password():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError) as caught:
        open_store(f"postgresql://u:s3cret@127.0.0.1:{port}/reg")
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(f"registration store postgresql://u@127.0.0.1:{port}/reg: cannot connect")


# ---- serving's config and preflight with a database store ------------------------------------------

def test_serve_config_takes_a_folder_or_a_url_or_the_environment(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from coldstart.serving.config import ServeConfig

    monkeypatch.delenv("COLDSTART_STORE", raising=False)
    url = "postgresql://coldstart@db:5432/registry"
    assert ServeConfig(artifacts=tmp_path).store_dir == tmp_path / "registry"
    assert ServeConfig(artifacts=tmp_path, store=str(tmp_path / "s")).store_dir == tmp_path / "s"
    cfg = ServeConfig(artifacts=tmp_path, store=url)
    assert cfg.store_location() == url  # not a Path: "//" would collapse
    assert ServeConfig.model_validate(cfg.model_dump(mode="json")).store_location() == url  # crosses to replicas
    with pytest.raises(ValueError, match="database URL"):
        cfg.store_dir
    with pytest.raises(ValidationError, match="unsupported"):
        ServeConfig(artifacts=tmp_path, store="redis://db")
    monkeypatch.setenv("COLDSTART_STORE", url)
    assert ServeConfig(artifacts=tmp_path).store_location() == url
    assert ServeConfig(artifacts=tmp_path, store=tmp_path / "s").store_location() == tmp_path / "s"  # flag wins
    monkeypatch.setenv("COLDSTART_STORE", str(tmp_path / "env"))
    assert ServeConfig(artifacts=tmp_path).store_dir == tmp_path / "env"


def test_preflight_connects_to_a_database_store(served, postgres_url):
    from coldstart.serving.config import ServeConfig
    from coldstart.serving.preflight import check_artifacts

    artifacts, generator = served
    shown = display_url(postgres_url)
    facts = "\n".join(check_artifacts(ServeConfig(artifacts=artifacts, store=postgres_url)))
    assert f"registration store: {shown} (new table coldstart_registrations)" in facts
    _append(open_store(postgres_url), {"kind": "item", "id": "x"})
    facts = "\n".join(check_artifacts(ServeConfig(artifacts=artifacts, store=postgres_url)))
    assert f"registration store: {shown}, table coldstart_registrations (1 records to replay)" in facts

    wrong = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(ConfigError) as caught:
        check_artifacts(ServeConfig(artifacts=artifacts, store=wrong))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"registration store {display_url(wrong)}: cannot connect")
    assert "no_such_database" in message


def test_a_database_store_reconnects_after_losing_its_connection(postgres_url):
    """A server restart or a network blip ends the session: the next read or write reconnects once."""
    import psycopg

    store, other = open_store(postgres_url), open_store(postgres_url)
    _append(store, {"id": "x"})

    def cut() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    cut()
    _append(other, {"id": "y"})  # other's connection was cut too: it reconnects to write
    cut()
    assert store.read_new() == [{"id": "y"}]  # and store's to read, from where it was
    cut()
    _append(store, {"id": "z"})
    assert [r["id"] for r in open_store(postgres_url).read_new()] == ["x", "y", "z"]


def test_a_new_routing_erases_the_ones_before_it(store):
    """Routing records do not pile up with every swap: the store keeps the last, which is the one followed."""
    from coldstart.serving.routing import Variant, latest_routing, write_routing

    opened = open_store(store)
    for n in range(5):
        write_routing(opened, [Variant(name=f"v{n}", weight=1.0, app=f"app-{n}", settings={})])
    records = open_store(store).read_new()
    assert [r["kind"] for r in records] == ["routing"] and latest_routing(records)[0].name == "v4"


def test_a_long_store_is_read_chunk_by_chunk_as_it_is_read_whole(store, monkeypatch):
    """Start-up reads the store in chunks (`read_new(chunk=True)`), never all of it at once: the chunks are
    bounded, and together they are every record, in order, once."""
    from coldstart.serving import file_store, pg_store

    monkeypatch.setattr(file_store, "CHUNK_BYTES", 200)  # about two short records
    monkeypatch.setattr(pg_store, "CHUNK_ROWS", 3)
    writer = open_store(store)
    with writer.writing() as w:
        w.read_new()
        for n in range(10):
            w.append({"kind": "item", "id": f"c{n}", "text": "x" * (500 if n == 4 else 10)})  # one longer than a chunk
    reader, chunks = open_store(store), []
    while records := reader.read_new(chunk=True):
        chunks.append([r["id"] for r in records])
    assert [i for chunk in chunks for i in chunk] == [f"c{n}" for n in range(10)]
    assert len(chunks) >= 4 and max(len(c) for c in chunks) <= 3, chunks
    assert [r["id"] for r in open_store(store).read_new()] == [i for chunk in chunks for i in chunk]  # whole
