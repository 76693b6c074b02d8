"""The Ray Data embedding job on a small slice, end to end, and incrementally."""

import pandas as pd
import pytest

from coldstart.data.split import load_split, save_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.vectors import VectorsRecommender
from coldstart.text.encoder import EncoderConfig, TextEncoder
from trainers.embed import EmbedConfig, run

pytestmark = pytest.mark.slow


def test_embed_job_then_incremental_rerun(ray_cluster, tiny_split, tmp_path, monkeypatch):
    from coldstart.text.vector_cache import VECTORS_ENV

    monkeypatch.setenv(VECTORS_ENV, str(tmp_path / "vectors"))  # a cache of this test's own
    cfg = EmbedConfig(split=tiny_split, out=tmp_path / "emb", replicas=2, block_rows=16)
    first = run(cfg)
    split = load_split(tiny_split)
    assert first.embedded == {"items": len(split.items), "users": 40}
    items = pd.read_parquet(tmp_path / "emb" / "items.parquet")
    assert list(items.columns) == ["item_id", "vector", "text_hash", "text"] and len(items["vector"].iloc[0]) == 384

    again = run(cfg)
    assert again.embedded == {"items": 0, "users": 0}
    assert again.reused == first.embedded

    # Another output folder (another --out, another seed) takes the same texts' vectors from the cache,
    # byte for byte; without the cache it embeds them again.
    elsewhere = run(cfg.model_copy(update={"out": tmp_path / "elsewhere"}))
    assert elsewhere.embedded == {"items": 0, "users": 0} and elsewhere.cached == first.embedded
    moved = pd.read_parquet(tmp_path / "elsewhere" / "items.parquet")
    assert moved["item_id"].tolist() == items["item_id"].tolist()
    assert all((a == b).all() for a, b in zip(moved["vector"], items["vector"]))
    uncached = run(cfg.model_copy(update={"out": tmp_path / "uncached", "keep_vectors": False}))
    assert uncached.embedded == first.embedded and not any(uncached.cached.values())

    # Change one item's text: only that item (and users whose text names it) is re-embedded, this time
    # streaming parquet -> actors -> parquet (what a large job does), with the same vectors as before.
    before = pd.read_parquet(tmp_path / "emb" / "users.parquet").set_index("user_id")
    split.items.loc[0, "title"] = "A brand new title"
    save_split(split, tiny_split)
    third = run(cfg.model_copy(update={"stream_rows": 0}))
    assert third.embedded["items"] == 1
    assert 0 < third.embedded["users"] < 40
    after = pd.read_parquet(tmp_path / "emb" / "users.parquet").set_index("user_id")
    changed = after.index[after["text_hash"] != before.loc[after.index, "text_hash"]]
    assert len(changed) == third.embedded["users"] and not list((tmp_path).glob(".emb.embedding"))
    encoder = TextEncoder(EncoderConfig())
    for user in changed[:3]:  # a re-embedded text's vector is the encoder's, as the in-memory path gives
        assert abs(after.loc[user, "vector"] - encoder.encode([after.loc[user, "text"]])[0]).max() < 1e-4

    # The folder is a vectors model on the shared evaluation path.
    data = SplitData.from_split(split)
    metrics = evaluate(VectorsRecommender(data, tmp_path / "emb"), data)
    assert 0 <= metrics["cold"]["ndcg@20"] <= 1
