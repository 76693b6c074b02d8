"""Two Ray Train workers (gloo on CPU) train what one does: the backbone and the towers, same global batch.

The skeleton's sampler gives each rank its own slice of one permutation per
epoch, so two workers see every interaction once an epoch, as one does; the
rank-0 validation is what both report. Two-rank weight equality and validating
once are checked without Ray in tests/unit/test_sampler.py.
"""

from __future__ import annotations

import pytest

from coldstart.data.schema import validate
from coldstart.data.split import make_split, save_split
from coldstart.testing import make_tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi-worker")
    inter, items, users = make_tables(n_users=150, n_items=120, per_user=15, seed=5)
    return root, save_split(make_split(validate(inter, items, users), "items", seed=0), root / "split")


def test_two_workers_reach_what_one_worker_reaches(ray_cluster, tiny_split, minilm):
    from coldstart.data.split import load_split
    from coldstart.testing.serving_folder import write_embeddings
    from trainers.backbone import BackboneConfig
    from trainers.backbone import run as backbone
    from trainers.distill import DistillConfig
    from trainers.distill import run as distill

    root, split = tiny_split
    write_embeddings(load_split(split), minilm, root / "embeddings")
    results = {}
    for workers in (1, 2):
        scale = {"num_workers": workers, "storage": root / "runs", "checkpoint_every_s": 3600}
        mf = backbone(BackboneConfig(split=split, out=root / f"backbone-{workers}", dim=16, epochs=12, patience=12,
                                     batch_size=256, lr=0.02, scale=scale))
        towers = distill(DistillConfig(split=split, embeddings=root / "embeddings", backbone=root / "backbone-1",
                                       out=root / f"distill-{workers}", epochs=6, patience=6, batch_size=256,
                                       hidden=64, scale=scale))
        results[workers] = (mf, towers)
    for job, key in ((0, "warm_val_ndcg@20"), (1, "cold_val_ndcg@20")):
        one, two = results[1][job], results[2][job]
        assert len(two.history) == len(one.history)
        assert two.best[key] == pytest.approx(one.best[key], abs=0.05), (key, one.best[key], two.best[key])
