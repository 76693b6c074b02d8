"""The serving core without Ray: store, index, content, catalogue, and the HTTP API in-process."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from coldstart.serving.routes import create_api
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.errors import Conflict
from coldstart.serving.index import ItemIndex
from coldstart.serving.served_models import ServingEncoder, ServingGenerator
from coldstart.serving.service import LocalStage, RecommendService
from coldstart.serving.file_store import RegistrationStore, encode_record
from coldstart.text.templates import TextTemplates, item_texts

SCI_FI_JOB = "job5"  # make_tables: users with occupation jobN mostly like genre N; GENRES[5] is Sci-Fi


# ---- store ------------------------------------------------------------------------------------------

def _append(store: RegistrationStore, record: dict) -> None:
    with store.writing() as writer:
        writer.read_new()
        writer.append(record)


def test_store_survives_reopening_and_other_writers(tmp_path):
    a, b = RegistrationStore(tmp_path), RegistrationStore(tmp_path)  # two replicas, one log
    _append(a, {"kind": "item", "id": "x"})
    _append(b, {"kind": "item", "id": "y"})
    assert [r["id"] for r in a.read_new()] == ["y"]  # a wrote x itself; it reads only what it has not seen
    assert [r["id"] for r in RegistrationStore(tmp_path).read_new()] == ["x", "y"]


def test_store_append_needs_a_caught_up_reader(tmp_path):
    a, b = RegistrationStore(tmp_path), RegistrationStore(tmp_path)
    _append(a, {"kind": "item", "id": "x"})
    with pytest.raises(RuntimeError, match="read_new"), b.writing() as writer:
        writer.append({"kind": "item", "id": "x"})  # b never saw x: its duplicate check would be wrong
    assert len(RegistrationStore(tmp_path).read_new()) == 1


def test_store_drops_a_torn_last_record_and_appends_cleanly(tmp_path, caplog):
    store = RegistrationStore(tmp_path)
    _append(store, {"kind": "item", "id": "x"})
    with open(store.path, "ab") as f:  # a crash in the middle of a write
        f.write(encode_record({"kind": "item", "id": "torn"})[:-7])
    reader = RegistrationStore(tmp_path)
    assert [r["id"] for r in reader.read_new()] == ["x"]  # the partial line is never served
    with caplog.at_level(logging.WARNING):
        _append(reader, {"kind": "item", "id": "z"})
    assert "torn last record" in caplog.text
    assert [r["id"] for r in RegistrationStore(tmp_path).read_new()] == ["x", "z"]


def test_store_skips_a_damaged_record(tmp_path, caplog):
    store = RegistrationStore(tmp_path)
    _append(store, {"kind": "item", "id": "x"})
    line = encode_record({"kind": "item", "id": "y"}).replace(b'"y"', b'"Y"')  # checksum no longer matches
    with open(store.path, "ab") as f:
        f.write(line)
    _append(store, {"kind": "item", "id": "z"})
    with caplog.at_level(logging.WARNING):
        records = RegistrationStore(tmp_path).read_new()
    assert [r["id"] for r in records] == ["x", "z"]
    assert "damaged record" in caplog.text


# ---- index ------------------------------------------------------------------------------------------

def test_index_excludes_filters_and_grows():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    index = ItemIndex(8)
    index.add(vectors)
    query = rng.normal(size=8).astype(np.float32)
    order = np.argsort(-(vectors @ query))
    positions, scores = index.search(query, 5)
    np.testing.assert_array_equal(positions, order[:5])
    np.testing.assert_allclose(scores, (vectors @ query)[order[:5]], rtol=1e-5)
    positions, _ = index.search(query, 5, exclude=order[:3])
    np.testing.assert_array_equal(positions, order[3:8])
    positions, _ = index.search(query, 10, allowed=np.array([7, 3, 9]), exclude=np.array([9]))
    assert sorted(positions) == [3, 7]  # fewer than k qualify: only those come back
    assert index.add(query * 100)[0] == 50
    assert index.search(query, 1)[0][0] == 50
    assert len(index.search(query, 10, allowed=np.array([], np.int64))[0]) == 0


# ---- the in-process service -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(serving_artifacts):
    return serving_artifacts


@pytest.fixture(scope="module")
def models(artifacts):
    generator = ServingGenerator(artifacts)
    return generator, ServingEncoder(artifacts, generator.meta["content"])


@pytest.mark.parametrize("precision, least", [("bfloat16", 0.999), ("int8", 0.9)])
def test_the_encoder_runs_in_the_precision_serving_asks_for(artifacts, models, precision, least):
    """`coldstart serve --encoder-precision`: bfloat16 keeps float32's vectors (cosine 1.0000 on ml-100k's texts),
    int8 comes near them; each says so in why the encoder was picked."""
    import torch

    generator, float32 = models
    encoder = ServingEncoder(artifacts, generator.meta["content"], precision=precision)
    if precision == "bfloat16":
        assert next(encoder.encoder.model.parameters()).dtype == torch.bfloat16
    else:
        assert not any(type(m) is torch.nn.Linear for m in encoder.encoder.model.modules())
    texts = ["A 25-year-old male student.", "Mostly horror films for me.", "Toy Story (1995). Genres: Animation."]
    assert (encoder.encode(texts) * float32.encode(texts)).sum(1).min() > least
    assert precision in encoder.reason and precision not in float32.reason


def test_registrations_made_again_use_the_serving_encoders_precision(artifacts, models, tmp_path):
    """After a swap the ranker makes other artifacts' registrations again; it encodes them as the endpoint's
    encoder does (here int8), not in another precision."""
    import torch

    generator, _ = models
    catalogue = Catalogue.from_artifacts(artifacts, generator, RegistrationStore(tmp_path / "store"),
                                         encoder_precision="int8", encoder_runtime="torch")
    encoder = catalogue.regenerate.encoder
    assert not any(type(m) is torch.nn.Linear for m in encoder.encoder.model.modules())
    assert "int8" in encoder.reason and encoder.encoder.runtime == "torch"


def test_the_serving_encoder_runs_in_onnx_runtime_where_it_can_and_says_so(artifacts, models, monkeypatch):
    """auto: ONNX Runtime on a CPU (torch's vectors, sooner); without onnxruntime, torch, and the reason says why;
    asked for by name, its absence is a clear error."""
    import sys

    from coldstart.config import ConfigError

    generator, auto = models
    torch_run = ServingEncoder(artifacts, generator.meta["content"], runtime="torch")
    assert auto.encoder.runtime == "onnxruntime" and "ONNX Runtime" in auto.reason
    assert torch_run.encoder.runtime == "torch"
    texts = ["A 25-year-old male student.", "Mostly horror films for me."]
    np.testing.assert_allclose(auto.encode(texts), torch_run.encode(texts), atol=1e-5)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it is not installed
    fallback = ServingEncoder(artifacts, generator.meta["content"])
    assert fallback.encoder.runtime == "torch" and "torch (ONNX Runtime: ModuleNotFoundError" in fallback.reason
    with pytest.raises(ConfigError, match="encoder runtime onnx"):
        ServingEncoder(artifacts, generator.meta["content"], runtime="onnx")


def _client(artifacts, models, store_dir, api_key=None) -> TestClient:
    generator, encoder = models
    catalogue = Catalogue.from_artifacts(artifacts, generator, RegistrationStore(store_dir))
    service = RecommendService(encoder=LocalStage(encoder), generator=LocalStage(generator),
                               ranker=LocalStage(catalogue), content=generator.content,
                               generator_name=generator.name, encoder_name=encoder.kind)
    return TestClient(create_api(service, api_key))


def test_new_item_content_is_built_as_training_built_it(artifacts, models):
    generator, encoder = models
    items = pd.read_parquet(artifacts / "split" / "items.parquet")
    expected_text = item_texts(items, TextTemplates())["text"]
    row = items.iloc[3]
    attributes = {"year": int(row["year"]), "genres": row["genres"]}
    text = generator.content.text("item", attributes, title=row["title"])
    assert text == expected_text.iloc[3]
    features = generator.content.features("item", encoder.embed(text), attributes)
    position = generator.meta["item_ids"].index(row["item_id"])
    np.testing.assert_allclose(features[0], generator.arrays["item_features"][position], atol=1e-5)


def test_every_endpoint_in_process(artifacts, models, tmp_path):
    client = _client(artifacts, models, tmp_path / "store")
    health = client.get("/healthz").json()
    assert health["items"] == 90 and health["users"] == 120 and health["generator"] == "distill"
    warm = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).json()
    assert warm["path"] == "warm" and len(warm["items"]) == 5
    seen = set(pd.read_parquet(artifacts / "split" / "train.parquet").query("user_id == 'u1'")["item_id"])
    assert not seen & {i["item_id"] for i in warm["items"]}
    with_seen = client.post("/v1/recommend", json={"user_id": "u1", "k": 90, "exclude_seen": False}).json()
    assert seen <= {i["item_id"] for i in with_seen["items"]}
    only = client.post("/v1/recommend", json={"user_id": "u1", "k": 5, "candidates": ["i1", "i2"]}).json()
    assert {i["item_id"] for i in only["items"]} <= {"i1", "i2"}

    created = client.post("/v1/items", json={"item_id": "new-scifi", "title": "Star Voyage",
                                             "attributes": {"year": 1998, "genres": "Sci-Fi"}})
    assert created.status_code == 201 and created.json()["index_size"] == 91
    assert client.get("/v1/items/new-scifi").json() == {"item_id": "new-scifi", "title": "Star Voyage",
                                                         "cold": True, "registered": True}
    user = client.post("/v1/users", json={"user_id": "new-user", "attributes": {"occupation": SCI_FI_JOB},
                                          "liked": ["new-scifi"]})
    assert user.status_code == 201
    mine = client.post("/v1/recommend", json={"user_id": "new-user", "k": 5}).json()
    assert mine["path"] == "cold" and "new-scifi" not in {i["item_id"] for i in mine["items"]}  # liked = seen


def test_registered_item_reaches_a_matching_user_and_survives_a_restart(artifacts, models, tmp_path):
    client = _client(artifacts, models, tmp_path / "store")
    # k = 20 of 91 items: the new item ranks among the Sci-Fi items (about 15) for a Sci-Fi fan, far below for others.
    profile = {"profile": {"attributes": {"occupation": SCI_FI_JOB, "age": 30, "gender": "M"}}, "k": 20}
    before = client.post("/v1/recommend", json=profile).json()
    client.post("/v1/items", json={"item_id": "new-scifi", "title": "Star Voyage",
                                   "attributes": {"year": 1998, "genres": "Sci-Fi"}})
    after = client.post("/v1/recommend", json=profile).json()
    assert "new-scifi" in [i["item_id"] for i in after["items"]]
    assert [i for i in after["items"] if i["item_id"] == "new-scifi"][0]["cold"] is True
    assert len(before["items"]) == len(after["items"]) == 20
    horror = client.post("/v1/recommend", json={"profile": {"attributes": {"occupation": "job3"}}, "k": 20}).json()
    assert "new-scifi" not in [i["item_id"] for i in horror["items"]]  # not merely recommended to everyone

    restarted = _client(artifacts, models, tmp_path / "store")
    assert restarted.post("/v1/recommend", json=profile).json() == after
    assert restarted.get("/healthz").json()["registered_items"] == 1


def test_two_ranker_replicas_share_registrations_through_the_store(artifacts, models, tmp_path):
    generator, _ = models
    a = Catalogue.from_artifacts(artifacts, generator, RegistrationStore(tmp_path / "store"))
    b = Catalogue.from_artifacts(artifacts, generator, RegistrationStore(tmp_path / "store"))
    vector = generator.arrays["item_vectors"][0] * 10  # scores highest for most users
    a.register_item("shared", vector, title="Shared", attributes={}, text="", generator="distill")
    assert b.item_info("shared")["registered"] is True  # b never saw the call, only the log
    with pytest.raises(Conflict):
        b.register_item("shared", vector, title="again", attributes={}, text="", generator="distill")
    assert len(a.index) == len(b.index) == 91


def test_a_retried_registration_is_answered_again_and_written_once(artifacts, models, tmp_path):
    """A client that lost the answer retries with the same body: the same answer, one record; another body: 409."""
    client = _client(artifacts, models, tmp_path / "store")
    item = {"item_id": "retried", "title": "Star Voyage", "attributes": {"year": 1998, "genres": "Sci-Fi"}}
    user = {"user_id": "retried-user", "attributes": {"occupation": SCI_FI_JOB}, "liked": ["retried"]}
    first = [client.post("/v1/items", json=item), client.post("/v1/users", json=user)]
    again = [client.post("/v1/items", json=item), client.post("/v1/users", json=user)]
    assert [r.status_code for r in first + again] == [201] * 4
    assert [r.json() for r in again] == [r.json() for r in first]
    assert len(RegistrationStore(tmp_path / "store").read_new()) == 2
    other = client.post("/v1/items", json={**item, "title": "Another film"})
    assert other.status_code == 409 and other.json()["field"] == "item_id"
    assert client.post("/v1/users", json={**user, "liked": []}).status_code == 409
    restarted = _client(artifacts, models, tmp_path / "store")  # the digest is in the log, so a restart keeps it
    assert restarted.post("/v1/items", json=item).status_code == 201
    assert restarted.post("/v1/items", json={**item, "text": "changed"}).status_code == 409


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("post", "/v1/recommend", {"user_id": "nobody"}, 404, "user_id"),
    ("post", "/v1/recommend", {"user_id": "u1", "k": 0}, 422, "k"),
    ("post", "/v1/recommend", {"user_id": "u1", "k": 101}, 422, "k"),
    ("post", "/v1/recommend", {"user_id": "u1", "profile": {"text": "x"}}, 422, "user_id, profile"),
    ("post", "/v1/recommend", {}, 422, "user_id, profile"),
    ("post", "/v1/recommend", {"profile": {}}, 422, "profile"),
    ("post", "/v1/recommend", {"profile": {"attributes": {"hobby": "chess"}}}, 422, "profile"),
    ("post", "/v1/recommend", {"profile": {"text": "x" * 2001}}, 422, "profile.text"),
    ("post", "/v1/recommend", {"profile": {"liked": ["nope"]}}, 404, "profile.liked"),
    ("post", "/v1/recommend", {"profile": {"attributes": {"age": "old"}}}, 422, "profile.attributes.age"),
    ("post", "/v1/recommend", {"profile": {"attributes": {f"a{i}": 1 for i in range(65)}}}, 422,
     "profile.attributes"),
    ("post", "/v1/recommend", {"user_id": "u1", "candidates": ["nope"]}, 404, "candidates"),
    ("post", "/v1/users", b'{"user_id": "w", "attributes": {"occupation": NaN}}', 422, "attributes"),
    ("post", "/v1/recommend", {"user_id": "u1", "kk": 3}, 422, "kk"),
    ("post", "/v1/items", {"item_id": "i1", "title": "again"}, 409, "item_id"),
    ("post", "/v1/items", {"item_id": "bad id!", "title": "t"}, 422, "item_id"),
    ("post", "/v1/items", {"item_id": "empty"}, 422, "title, attributes, text"),
    ("post", "/v1/items", {"item_id": "long", "text": "y" * 2001}, 422, "text"),
    ("post", "/v1/items", {"item_id": "y", "attributes": {"year": "soon", "genres": "Drama"}}, 422,
     "attributes.year"),
    ("post", "/v1/users", {"user_id": "u1", "text": "again"}, 409, "user_id"),
    ("post", "/v1/users", {"user_id": "v", "liked": ["nope"]}, 404, "liked"),
    ("post", "/v1/users", {"user_id": "v"}, 422, "attributes, text, liked"),
    ("get", "/v1/items/nope", None, 404, "item_id"),
])
def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(artifacts, models, tmp_path, method, path, body,
                                                                 status, field):
    client = _client(artifacts, models, tmp_path / "store")
    if isinstance(body, bytes):  # JSON that Python's reader takes but httpx would not write (NaN)
        response = client.request(method.upper(), path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert field.split(".")[-1].split(",")[0] in response.json()["error"]
    assert (tmp_path / "store" / "registrations.log").stat().st_size == 0


def test_malformed_json_and_the_api_key(artifacts, models, tmp_path):
    client = _client(artifacts, models, tmp_path / "store", api_key="s3cret")
    assert client.get("/livez").json() == {"status": "ok"}  # probes need no key, and learn nothing
    assert client.get("/healthz").status_code == 401  # what is served is for key holders
    assert client.post("/v1/recommend", json={"user_id": "u1"}).status_code == 401
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = client.post("/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    bad = client.post("/v1/items", content=b'{"item_id": "x", ', headers={"X-API-Key": "s3cret",
                                                                           "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["field"] == "body" and "malformed JSON" in bad.json()["error"]


def test_serve_command_names_a_missing_artifact_before_starting_ray(tmp_path):
    from typer.testing import CliRunner

    from coldstart.cli import app

    result = CliRunner().invoke(app, ["serve", "--artifacts", str(tmp_path), "--generator", "vae"])
    assert result.exit_code == 2
    assert "generator vae: no model artifact" in result.output


def test_vae_and_student_encoder_are_served_when_present(artifacts, tmp_path, minilm):
    """DIR/serving.json picks the VAE; a distilled student in DIR/encoder replaces the teacher."""
    import shutil

    import torch

    from coldstart import artifacts as io
    from coldstart.evaluate import SplitData
    from coldstart.data.split import load_split
    from coldstart.models.coldstart_model import save_cold_model
    from coldstart.models.student_encoder import build_student, save_student
    from coldstart.models.vae import ConditionalVAE
    from coldstart.serving.served_models import resolve_generator

    folder = tmp_path / "artifacts"
    shutil.copytree(artifacts, folder)
    towers = ServingGenerator(folder)
    data = SplitData.from_split(load_split(folder / "split"))
    a = towers.arrays
    torch.manual_seed(0)
    vae = ConditionalVAE(a["item_features"].shape[1], a["user_features"].shape[1], a["item_vectors"].shape[1])
    save_cold_model(folder / "vae", data, vae, user_vectors=a["user_vectors"], item_vectors=a["item_vectors"],
                    user_features=a["user_features"], item_features=a["item_features"],
                    content=towers.meta["content"], meta={})
    assert resolve_generator(folder)[0] == "distill"  # no serving.json: distill
    io.write_json(folder / "serving.json", {"generator": "vae"})
    generator = ServingGenerator(folder)
    assert generator.name == "vae"
    student, tokenizer = build_student("default", layers=2)
    save_student(folder / "encoder", student, tokenizer, max_length=64)
    encoder = ServingEncoder(folder, generator.meta["content"])
    assert encoder.kind == "student"
    text = "Star Voyage (1998). Genres: Sci-Fi."
    student_vector, teacher_vector = encoder.embed(text), minilm.encode([text])[0]
    assert encoder.encoder.cfg.model == str((folder / "encoder").resolve())
    assert abs(float(np.linalg.norm(student_vector)) - 1.0) < 1e-4
    assert float(student_vector @ teacher_vector) < 0.999  # an (untrained) 2-layer student, not the teacher
    client = _client(folder, (generator, encoder), tmp_path / "store")
    assert client.get("/healthz").json()["generator"] == "vae"
    created = client.post("/v1/items", json={"item_id": "v1", "title": "Star Voyage",
                                             "attributes": {"year": 1998, "genres": "Sci-Fi"}})
    assert created.status_code == 201
    vae_vector = generator.item_vector(student_vector, {"year": 1998, "genres": "Sci-Fi"})
    assert vae_vector.shape == (a["item_vectors"].shape[1],) and np.isfinite(vae_vector).all()
    assert client.post("/v1/recommend", json={"user_id": "u1", "k": 3}).status_code == 200
