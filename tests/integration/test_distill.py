"""The warm backbone and the student towers on real ml-100k, trained by Ray Train (2 CPU workers).

The MiniLM vectors are encoded in this process (the embed job has tests of its own)."""

import json

import numpy as np
import pytest

from coldstart.data.schema import load_dataset
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.models.baselines import RandomRecommender
from tests.serving_artifacts import write_embeddings
from trainers.backbone import BackboneConfig
from trainers.backbone import run as train_backbone
from trainers.distill import DistillConfig
from trainers.distill import run as train_distill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml100k_run(ray_cluster, ml100k_dir, tmp_path_factory, minilm):
    root = tmp_path_factory.mktemp("ml100k-run")
    split_dir = save_split(make_split(load_dataset(ml100k_dir), "items", 42), root / "split")
    write_embeddings(load_split(split_dir), minilm, root / "embeddings")
    backbone = train_backbone(BackboneConfig(split=split_dir, out=root / "backbone", epochs=10, patience=10, lr=5e-3,
                                             batch_size=2048, scale={"storage": root / "runs"}))
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
    metrics = evaluate(model, data, on="val")
    base = evaluate(load_recommender(str(root / "backbone"), data), data, on="val")
    random = evaluate(RandomRecommender(data), data, on="val")
    assert metrics["cold"]["ndcg@20"] > 2 * random["cold"]["ndcg@20"]
    assert metrics["warm"]["ndcg@20"] == pytest.approx(base["warm"]["ndcg@20"], rel=0.02)
    assert metrics["all"]["ndcg@20"] > base["all"]["ndcg@20"]
    assert result.best["cold_val_ndcg@20"] == pytest.approx(metrics["cold"]["ndcg@20"], abs=1e-6)
    # Reloading the artifact scores identically (it rebuilds from the folder alone).
    again = load_recommender(str(root / "distill"), data)
    np.testing.assert_array_equal(model.score(np.arange(30)), again.score(np.arange(30)))


def test_a_search_with_two_workers_per_trial_runs_each_trial_on_ray_train(ml100k_run):
    """`--search.trial-workers 2`: each trial drives a Ray Train run of two workers, its epochs reported to
    Tune (`TuneReportCallback`); one-worker trials (the pipeline's) train in the trial's own process."""
    from tuning.search import SearchOptions, search
    from trainers.generator import GeneratorConfig

    root, _, _ = ml100k_run
    base = GeneratorConfig(split=root / "split", embeddings=root / "embeddings", backbone=root / "backbone",
                           out=root / "unused", epochs=1, patience=1)
    found = search("vae", base, SearchOptions(budget=1, epochs=1, trial_workers=2), root / "tune-2w")
    trial = found.trials.iloc[0]
    assert trial["epochs"] == 1 and trial["error"] is None and np.isfinite(trial["best"])
    folder = root / "tune-2w" / "trials" / trial["trial_id"]
    assert (folder / "runs").is_dir() and not (folder / "run").exists()  # a Ray Train run's storage
    assert json.loads((folder / "model" / "model.json").read_text())["metrics"]["cold_val_ndcg@20"] == \
        pytest.approx(trial["best"], abs=1e-6)
