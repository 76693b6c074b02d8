"""`coldstart serve` without Ray: the preflight (what passes, what fails in one line naming the path), which
encoder and generator serving picks from DIR/serving.json, and the wait for the app (against a fake status)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import types

import pytest

from coldstart import artifacts as io
from coldstart.config import ConfigError
from coldstart.data.schema import DataError
from coldstart.serving.config import ServeConfig
from coldstart.serving.served_models import ServingEncoder, pick_encoder, resolve_encoder
from coldstart.serving.preflight import check_artifacts
from coldstart.text.encoder import ARTIFACT_FILE
from coldstart.testing.serving_folder import build_artifacts


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm):
    # Two epochs: the preflight checks what is there and loads, not how well it was trained.
    return build_artifacts(tmp_path_factory.mktemp("preflight-artifacts"), minilm, epochs=2)


@pytest.fixture
def folder(built, tmp_path):
    """A copy to break."""
    return shutil.copytree(built, tmp_path / "artifacts")


def _fails(cfg: ServeConfig, error: type[Exception], *names: str) -> str:
    with pytest.raises(error) as caught:
        check_artifacts(cfg)
    message = str(caught.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    return message


def test_preflight_passes_and_says_what_will_be_served(folder):
    facts = check_artifacts(ServeConfig(artifacts=folder))
    text = "\n".join(facts)
    assert "generator: distill" in text and "no serving.json" in text
    assert "encoder: teacher" in text and "384-d" in text
    assert "90 items" in text and "120 users" in text
    assert "registration store" in text and "(new)" in text
    assert not (folder / "registry").exists()  # checked, not created: --smoke serves from a scratch store


def test_missing_split_items(folder):
    (folder / "split" / "items.parquet").unlink()
    _fails(ServeConfig(artifacts=folder), DataError, str(folder / "split"), "items")


def test_missing_split_folder(folder):
    shutil.rmtree(folder / "split")
    _fails(ServeConfig(artifacts=folder), DataError, str(folder / "split"), "folder not found")


def test_split_of_other_items(folder):
    import pandas as pd

    table = pd.read_parquet(folder / "split" / "items.parquet")
    table.assign(item_id="other-" + table["item_id"]).to_parquet(folder / "split" / "items.parquet")
    _fails(ServeConfig(artifacts=folder), DataError, "items.parquet", "not in this table")


def test_missing_generator_artifact(folder):
    shutil.rmtree(folder / "distill")
    _fails(ServeConfig(artifacts=folder), ConfigError, str(folder / "distill"), "generator distill")


def test_missing_generator_weights(folder):
    (folder / "distill" / "weights.safetensors").unlink()
    _fails(ServeConfig(artifacts=folder), DataError, str(folder / "distill"), "cannot load the generator")


def test_serving_json_names_a_generator_that_is_not_there(folder):
    io.write_json(folder / "serving.json", {"generator": "vae", "cold_val_ndcg@20": {"vae": 0.3},
                                            "selected_on": "cold_val_ndcg@20"})
    _fails(ServeConfig(artifacts=folder), ConfigError, str(folder / "vae"), "serving.json's choice")


def test_serving_json_that_is_not_json(folder):
    (folder / "serving.json").write_text("{generator: vae")
    _fails(ServeConfig(artifacts=folder), ConfigError, str(folder / "serving.json"))


def test_student_chosen_but_absent(folder):
    io.write_json(folder / "serving.json", {"generator": "distill", "encoder": "student"})
    _fails(ServeConfig(artifacts=folder), ConfigError, str(folder / "encoder"), "encoder student")
    _fails(ServeConfig(artifacts=folder, encoder="student"), ConfigError, str(folder / "encoder"))


def test_encoder_of_the_wrong_dimension(folder, tmp_path):
    """The teacher the artifact names is a real (tiny, 32-d) model: the generator wants 384-d vectors."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from coldstart.text.encoder import resolve_model_path

    tiny = tmp_path / "tiny-encoder"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("default"))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    model_json = folder / "distill" / "model.json"
    meta = json.loads(model_json.read_text())
    meta["content"]["encoder"]["model"] = str(tiny)
    model_json.write_text(json.dumps(meta))
    _fails(ServeConfig(artifacts=folder), ConfigError, str(tiny), "32-d", "384-d")
    meta["content"]["encoder"]["model"] = str(tmp_path / "nowhere")
    model_json.write_text(json.dumps(meta))
    _fails(ServeConfig(artifacts=folder), ConfigError, str(tmp_path / "nowhere"), "not found")


def test_unwritable_store(folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # A path under a regular file cannot be created by anyone, root included (chmod would not stop root).
    _fails(ServeConfig(artifacts=folder, store=blocker / "registry"), ConfigError, str(blocker / "registry"))
    _fails(ServeConfig(artifacts=folder, store=blocker), ConfigError, str(blocker))


def test_an_existing_store_is_read_not_changed(folder):
    from coldstart.serving.file_store import RegistrationStore

    store = RegistrationStore(folder / "registry")
    with store.writing() as writer:
        writer.read_new()
        writer.append({"kind": "item", "id": "x"})
    before = store.path.read_bytes()
    assert "1 records to replay" in "\n".join(check_artifacts(ServeConfig(artifacts=folder)))
    assert store.path.read_bytes() == before


def test_missing_artifacts_folder(tmp_path):
    _fails(ServeConfig(artifacts=tmp_path / "nope"), ConfigError, str(tmp_path / "nope"))


# ---- which encoder: DIR/serving.json, else DIR/encoder ----------------------------------------------

def _spec(folder) -> dict:
    return json.loads((folder / "distill" / "model.json").read_text())["content"]


def test_resolve_encoder_follows_serving_json(folder):
    spec = _spec(folder)
    assert resolve_encoder(folder, spec)[0] == "teacher"  # no record, no student
    (folder / "encoder").mkdir()
    (folder / "encoder" / ARTIFACT_FILE).write_text("{}")  # resolving only looks for the student, never loads it
    assert resolve_encoder(folder, spec)[0] == "student"  # no record: the student when present (today's rule)
    io.write_json(folder / "serving.json", {"generator": "distill"})  # an older record, without "encoder"
    assert resolve_encoder(folder, spec)[0] == "student"
    io.write_json(folder / "serving.json", {"generator": "distill", "encoder": "teacher", "encoder_cosine": 0.9,
                                            "encoder_threshold": 0.95})
    kind, cfg, reason = pick_encoder(folder, spec)
    assert kind == "teacher" and cfg.model == spec["encoder"]["model"]  # even though DIR/encoder exists
    assert "serving.json" in reason and "0.9" in reason and "0.95" in reason
    assert resolve_encoder(folder, spec, "student")[0] == "student"  # an explicit choice wins over the record
    io.write_json(folder / "serving.json", {"generator": "distill", "encoder": "student"})
    kind, cfg = resolve_encoder(folder, spec)
    assert kind == "student" and cfg.model == str((folder / "encoder").resolve())
    shutil.rmtree(folder / "encoder")
    with pytest.raises(ConfigError, match="no distilled encoder in .*encoder"):
        resolve_encoder(folder, spec)
    io.write_json(folder / "serving.json", {"generator": "distill", "encoder": "students"})
    with pytest.raises(ConfigError, match="serving.json: encoder 'students'"):
        resolve_encoder(folder, spec)


def test_the_loaded_encoder_and_generator_are_logged_with_the_reason(folder, caplog):
    from coldstart.serving.served_models import ServingGenerator

    io.write_json(folder / "serving.json", {"generator": "distill", "cold_val_ndcg@20": {"distill": 0.25},
                                            "selected_on": "cold_val_ndcg@20", "encoder": "teacher"})
    with caplog.at_level(logging.INFO, logger="coldstart.serving.served_models"):
        generator = ServingGenerator(folder)
        ServingEncoder(folder, generator.meta["content"])
    lines = [r.getMessage() for r in caplog.records if r.name == "coldstart.serving.served_models"]
    assert any(line.startswith("generator: distill") and "0.25" in line for line in lines), lines
    assert any(line.startswith("encoder: teacher") and "serving.json" in line for line in lines), lines


# ---- the command ------------------------------------------------------------------------------------

def test_serve_command_stops_at_once_on_a_broken_folder_without_ray(folder, monkeypatch):
    from typer.testing import CliRunner

    from coldstart.cli import app

    calls = []
    stub = types.ModuleType("serve.local")  # stands in for the Ray side: it must never be reached
    stub.run_local = lambda *args, **kwargs: calls.append(args)
    monkeypatch.setitem(sys.modules, "serve.local", stub)
    import ray

    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: calls.append("ray.init"))
    (folder / "split" / "items.parquet").unlink()
    result = CliRunner().invoke(app, ["serve", "--artifacts", str(folder)])
    assert result.exit_code == 2, result.output
    assert f"{folder / 'split'}: missing table 'items'" in result.output
    assert not calls  # neither Ray nor the deployment was touched


# ---- waiting for the app: the first replica that cannot start ends the wait ------------------------

RANKER_FAILED = ("A replica failed to start with exception. Retrying 2 more time(s). Error:\n"
                 "ray::ServeReplica:coldstart:Ranker.initialize_and_get_metadata() (pid=1, ip=10.0.0.1)\n"
                 "  File \"/work/main/coldstart/data/schema.py\", line 57, in find_table\n"
                 "    raise DataError(...)\n"
                 "coldstart.data.schema.DataError: /x/split: missing table 'items' (expected items.parquet or "
                 "items.csv)")


def _status(app_status: str, **deployments: tuple[str, str]):
    """What serve.status() answers (only the fields read), for the app `coldstart`."""
    deps = {name: types.SimpleNamespace(status=s, message=m) for name, (s, m) in deployments.items()}
    app = types.SimpleNamespace(status=app_status, message="", deployments=deps)
    return types.SimpleNamespace(applications={"coldstart": app})


def _serve_answers(monkeypatch, answers: list):
    from serve import local

    answers = iter(answers)
    last = {}

    def status():
        last["answer"] = next(answers, last.get("answer"))
        return last["answer"]

    monkeypatch.setattr(local.serve, "status", status)
    monkeypatch.setattr(local, "POLL_S", 0.01)
    return local


def test_wait_stops_at_the_first_replica_that_cannot_start(monkeypatch):
    local = _serve_answers(monkeypatch, [
        _status("DEPLOYING", Ranker=("UPDATING", ""), Encoder=("UPDATING", "")),
        _status("DEPLOYING", Ranker=("UPDATING", RANKER_FAILED), Encoder=("HEALTHY", "")),  # still UPDATING
    ])
    said = []
    with pytest.raises(ConfigError) as caught:
        local.wait_until_running("coldstart", echo=said.append)
    message = str(caught.value)
    assert message.startswith("Ranker could not start: DataError: /x/split: missing table 'items'"), message
    assert "\n" not in message and not said


def test_wait_reports_a_failed_app_and_returns_once_running(monkeypatch):
    failed = _status("DEPLOY_FAILED", Ingress=("DEPLOY_FAILED", "Error:\nValueError: x"))
    local = _serve_answers(monkeypatch, [failed])
    with pytest.raises(ConfigError, match="Ingress could not start: ValueError: x"):
        local.wait_until_running("coldstart", echo=lambda _: None)
    waiting = "Deployment 'Encoder' has 1 replicas that have taken more than 30s to initialize."
    local = _serve_answers(monkeypatch, [_status("DEPLOYING", Encoder=("UPDATING", waiting)),
                                         _status("RUNNING", Encoder=("HEALTHY", ""))])
    said = []
    local.wait_until_running("coldstart", echo=said.append)
    assert said == [f"Encoder: {waiting}"]
    local = _serve_answers(monkeypatch, [_status("DEPLOYING", Encoder=("UPDATING", ""))])
    with pytest.raises(ConfigError, match="did not start within 0 s .*Encoder UPDATING"):
        local.wait_until_running("coldstart", deadline_s=0.05, echo=lambda _: None)


def test_the_proxy_is_set_for_the_cluster_about_to_start_and_only_then(monkeypatch):
    """`proxy_environment` puts Serve's HAProxy flag and free ports in the environment a local cluster inherits,
    keeps what the user set, and leaves nothing behind for processes started later; a bad name is one clear
    error."""
    import os

    from serve.local import proxy_environment

    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    before = dict(os.environ)
    with proxy_environment("haproxy"):
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"  # the user's
        ports = [os.environ[n] for n in ("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")]
        assert all(p.isdigit() and p not in ("8500", "9101") for p in ports)
        # a proxy slow to import on a loaded machine is waited for, not killed after 3 x 5 s
        assert float(os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"]) >= 30
    assert dict(os.environ) == before
    with proxy_environment("ray"):
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
        assert float(os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"]) >= 30
    assert dict(os.environ) == before
    with pytest.raises(ConfigError, match="proxy: 'nginx'"):
        with proxy_environment("nginx"):
            pass
    with pytest.raises(ValueError, match="proxy"):
        ServeConfig(artifacts="x", proxy="nginx")
