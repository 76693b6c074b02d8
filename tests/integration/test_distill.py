"""The warm backbone and the student towers on real ml-100k, trained by Ray Train (2 CPU workers).

The MiniLM vectors are encoded in this process (the embed job has tests of its own)."""

import numpy as np
import pytest

from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.models.baselines import RandomRecommender
from coldstart.testing.serving_folder import write_embeddings
from trainers.distill import DistillConfig
from trainers.distill import run as train_distill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml100k_run(ml100k_backbone, minilm):
    root, split_dir, backbone = ml100k_backbone
    write_embeddings(load_split(split_dir), minilm, root / "embeddings")
    return root, SplitData.from_split(load_split(split_dir)), backbone


def test_backbone_learns_within_a_few_epochs(ml100k_run):
    root, data, result = ml100k_run
    random = evaluate(RandomRecommender(data), data, on="val")["warm"]["ndcg@20"]
    ndcg = [h["warm_val_ndcg@20"] for h in result.history]
    assert ndcg[4] > 5 * random  # well above random by epoch 5
    assert result.best["warm_val_ndcg@20"] == max(ndcg)


def test_checkpoint_reload_gives_identical_scores(ml100k_run):
    root, data, _ = ml100k_run
    a, b = load_recommender(str(root / "backbone"), data), load_recommender(str(root / "backbone"), data)
    users = np.arange(50)
    np.testing.assert_array_equal(a.score(users), b.score(users))
    assert evaluate(a, data, on="val")["warm"]["ndcg@20"] > 0.15


def test_distilled_towers_rank_cold_items_and_keep_warm(ml100k_run):
    root, data, backbone = ml100k_run
    result = train_distill(DistillConfig(split=root / "split", embeddings=root / "embeddings",
                                         backbone=root / "backbone", out=root / "distill", epochs=4, patience=4,
                                         scale={"storage": root / "runs"}))
    model = load_recommender(str(root / "distill"), data)
    metrics = evaluate(model, data, on="val-select")  # the half training selected its epoch on
    base = evaluate(load_recommender(str(root / "backbone"), data), data, on="val-select")
    random = evaluate(RandomRecommender(data), data, on="val-select")
    assert metrics["cold"]["ndcg@20"] > 2 * random["cold"]["ndcg@20"]
    assert metrics["warm"]["ndcg@20"] == pytest.approx(base["warm"]["ndcg@20"], rel=0.02)
    # Ranked by raw scores, new items seldom reach a mixed list: no worse than the old items alone (the
    # served catalogue keeps them slots, `coldstart.serving.evidence`).
    assert metrics["all"]["ndcg@20"] > 0.99 * base["all"]["ndcg@20"]
    assert result.best["cold_val_ndcg@20"] == pytest.approx(metrics["cold"]["ndcg@20"], abs=1e-6)
    # Reloading the artifact scores identically (it rebuilds from the folder alone).
    again = load_recommender(str(root / "distill"), data)
    np.testing.assert_array_equal(model.score(np.arange(30)), again.score(np.arange(30)))

