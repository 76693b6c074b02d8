"""Encoder distillation on Ray Train: 2 CPU workers, loss falls, the artifact loads.

A killed worker's resume is checked where it is exact: every job, the encoder's included, resumes as an
uninterrupted run in tests/unit/test_training_loop.py, and a worker killed under Ray Train resumes from its
checkpoint in tests/integration/test_reliability_training.py (the same skeleton and context for every job)."""

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
    from coldstart.testing import make_tables

    root = tmp_path_factory.mktemp("distill")
    inter, items, users = make_tables(n_users=60, n_items=100, seed=1)
    split = save_split(make_split(validate(inter, items, users), "items", 0), root / "split")
    embed(EmbedConfig(split=split, out=root / "emb", replicas=1))
    return root / "emb"


def test_two_workers_learn_and_write_a_loadable_encoder(embeddings, tmp_path):
    cfg = DistillEncoderConfig(embeddings=embeddings, out=tmp_path / "student", epochs=2, batch_size=16, lr=5e-4,
                               holdout=0.2, scale={"num_workers": 2, "storage": tmp_path / "runs"})
    result = run(cfg)
    assert result.restarts == 0 and [h["epoch"] for h in result.history] == [0, 1]
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    meta = json.loads((tmp_path / "student" / "coldstart_encoder.json").read_text())
    assert meta["pooling"] == "mean" and meta["val_cosine"] == pytest.approx(result.best["val_cosine"])

    student = TextEncoder(model=str(tmp_path / "student"))
    assert student.dim == 384 and student.model.config.num_hidden_layers == 2
    items = pd.read_parquet(embeddings / "items.parquet").iloc[:20]
    vectors = student.encode(items["text"].tolist())
    cosine = (vectors * np.stack(items["vector"])).sum(1).mean()
    assert cosine == pytest.approx(result.best["val_cosine"], abs=0.15)
