"""`coldstart recommend` as a Ray Data job on the session's cluster: the same rows as the plain loop, exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from coldstart.serving.batch import BatchOptions, recommend_in_process
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.served_models import ServingGenerator
from coldstart.serving.stores import open_store
from coldstart.testing.serving_folder import build_artifacts

pytestmark = pytest.mark.slow


def test_the_ray_data_job_writes_what_the_plain_loop_ranks(ray_cluster, tmp_path, minilm):
    from trainers.recommend import RecommendConfig, run

    artifacts = build_artifacts(tmp_path / "artifacts", minilm, epochs=5)
    generator = ServingGenerator(artifacts)
    store = tmp_path / "store"
    catalogue = Catalogue.from_artifacts(artifacts, generator, open_store(store))
    catalogue.register_item("new-hit", generator.arrays["item_vectors"][0] * 10, title="Hit", attributes={}, text="",
                            generator="distill")
    catalogue.register_user("new-fan", None, liked=["i1"], attributes={}, text="", generator="distill")
    expected = recommend_in_process(BatchOptions(artifacts=artifacts, store=store, k=20))

    # More blocks than actors and several batches per block: order across parts and batches is under test.
    cfg = dict(artifacts=artifacts, store=store, k=20, actors=2, batch_size=16)
    result = run(RecommendConfig(**cfg, out=tmp_path / "recs.parquet"))
    assert result.users == 121 and result.rows == len(expected) and result.registered_users == 1
    written = pd.read_parquet(tmp_path / "recs.parquet")
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)  # same rows, same order, same scores
    assert {"new-hit"} <= set(written["item_id"]) and "new-fan" in set(written["user_id"])

    folder = run(RecommendConfig(**cfg, out=tmp_path / "recs"))  # a folder of parts: the driver reads no row
    assert folder.rows == len(expected)
    parts = pd.read_parquet(tmp_path / "recs").sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(parts, expected.sort_values(["user_id", "rank"]).reset_index(drop=True),
                                  check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "recs", "recs.parquet", "store"]
