"""The Ray Data embedding job on a small slice, end to end, and incrementally."""

import pandas as pd
import pytest

from coldstart.data.split import load_split, save_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.vectors import VectorsRecommender
from trainers.embed import EmbedConfig, run

pytestmark = pytest.mark.slow


def test_embed_job_then_incremental_rerun(ray_cluster, tiny_split, tmp_path):
    cfg = EmbedConfig(split=tiny_split, out=tmp_path / "emb", replicas=2, block_rows=16)
    first = run(cfg)
    split = load_split(tiny_split)
    assert first.embedded == {"items": len(split.items), "users": 40}
    items = pd.read_parquet(tmp_path / "emb" / "items.parquet")
    assert list(items.columns) == ["item_id", "vector", "text_hash", "text"] and len(items["vector"].iloc[0]) == 384

    again = run(cfg)
    assert again.embedded == {"items": 0, "users": 0}
    assert again.reused == first.embedded

    # Change one item's text: only that item (and users whose text names it) is re-embedded.
    split.items.loc[0, "title"] = "A brand new title"
    save_split(split, tiny_split)
    third = run(cfg)
    assert third.embedded["items"] == 1
    assert third.embedded["users"] < 40

    # The folder is a vectors model on the shared evaluation path.
    data = SplitData.from_split(split)
    metrics = evaluate(VectorsRecommender(data, tmp_path / "emb"), data)
    assert 0 <= metrics["cold"]["ndcg@20"] <= 1
