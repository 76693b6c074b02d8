"""Encoder distillation on Ray Train: 2 CPU workers, loss falls, the artifact loads, a failure resumes."""

import json

import numpy as np
import pandas as pd
import pytest

from coldstart.text.encoder import TextEncoder
from trainers.embed import EmbedConfig
from trainers.embed import run as embed
from trainers.distill_encoder import DistillEncoderConfig, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embeddings(ray_cluster, tmp_path_factory):
    from coldstart.data.schema import validate
    from coldstart.data.split import make_split, save_split
    from tests.conftest import make_tables

    root = tmp_path_factory.mktemp("distill")
    inter, items, users = make_tables(n_users=80, n_items=160, seed=1)
    split = save_split(make_split(validate(inter, items, users), "items", 0), root / "split")
    embed(EmbedConfig(split=split, out=root / "emb", replicas=1))
    return root / "emb"


def test_two_workers_learn_and_write_a_loadable_encoder(embeddings, tmp_path):
    cfg = DistillEncoderConfig(embeddings=embeddings, out=tmp_path / "student", epochs=3, batch_size=16, lr=5e-4,
                               holdout=0.2, scale={"num_workers": 2, "storage": tmp_path / "runs"})
    result = run(cfg)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    meta = json.loads((tmp_path / "student" / "coldstart_encoder.json").read_text())
    assert meta["pooling"] == "mean" and meta["val_cosine"] == pytest.approx(result.best["val_cosine"])

    student = TextEncoder(model=str(tmp_path / "student"))
    assert student.dim == 384 and student.model.config.num_hidden_layers == 2
    items = pd.read_parquet(embeddings / "items.parquet").iloc[:20]
    vectors = student.encode(items["text"].tolist())
    cosine = (vectors * np.stack(items["vector"])).sum(1).mean()
    assert cosine == pytest.approx(result.best["val_cosine"], abs=0.15)


def test_a_failed_worker_resumes_from_the_last_checkpoint(embeddings, tmp_path):
    cfg = DistillEncoderConfig(embeddings=embeddings, out=tmp_path / "student", epochs=3, batch_size=32,
                               holdout=0.2, limit=120, scale={"num_workers": 2, "storage": tmp_path / "runs",
                                                              "kill_at_epoch": 2})
    result = run(cfg)
    epochs = [h["epoch"] for h in result.history]
    assert epochs[-1] == 2  # finished despite the kill at epoch 2
    assert 0 in epochs  # epochs before the kill were not retrained from scratch
    assert epochs.count(0) == 1
