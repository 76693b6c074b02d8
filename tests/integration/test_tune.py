"""Ray Tune over the VAE driver on tiny data: ASHA stops weak trials, and the best config reproduces."""

import numpy as np
import pytest

from coldstart.config import load_config
from coldstart.data.schema import validate
from coldstart.data.split import make_split, save_split
from tests.conftest import make_tables
from trainers.backbone import BackboneConfig
from trainers.backbone import run as train_backbone
from trainers.embed import EmbedConfig
from trainers.embed import run as embed
from trainers.generator import GeneratorConfig
from trainers.generator import run as train_vae
from tuning.search import SearchOptions, search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-run")
    inter, items, users = make_tables(n_users=150, n_items=200, per_user=20, seed=3)
    split = save_split(make_split(validate(inter, items, users, name="tiny"), "items", seed=0), root / "split")
    embed(EmbedConfig(split=split, out=root / "embeddings", replicas=1))
    train_backbone(BackboneConfig(split=split, out=root / "backbone", dim=16, epochs=15, batch_size=256,
                                  scale={"num_workers": 1, "storage": root / "runs"}))
    return root


def test_four_trials_complete_with_asha_stopping_some_and_the_best_config_reproduces(tiny_run):
    root = tiny_run
    base = GeneratorConfig(split=root / "split", embeddings=root / "embeddings", backbone=root / "backbone",
                           out=root / "vae", batch_size=256, epochs=4, scale={"storage": root / "runs"})
    result = search("vae", base, SearchOptions(budget=4, concurrency=2, seed=1), root / "tune-vae")
    trials = result.trials
    assert len(trials) == 4 and trials["error"].isna().all()
    assert trials["stopped_early"].sum() >= 1  # ASHA cut at least one trial short
    assert (trials["epochs"] == 4).sum() >= 1  # and let at least one run to the end
    for name in ("results.csv", "results.md", "best.yaml"):
        assert (root / "tune-vae" / name).is_file()

    best = load_config(GeneratorConfig, root / "tune-vae" / "best.yaml",
                       {"scale": {"num_workers": 1, "storage": str(root / "runs")}, "out": str(root / "vae-best")})
    top = trials.iloc[0]
    assert best.latent == top["latent"] and best.beta == pytest.approx(top["beta"])
    again = train_vae(best.model_copy(update={"patience": best.epochs}))
    replay = [h["cold_val_ndcg@20"] for h in again.history]
    assert replay[int(top["best_epoch"])] == pytest.approx(top["best"], abs=1e-6)
    assert np.isfinite(replay).all()


@pytest.fixture(scope="module")
def transfer_pair(ray_cluster, tmp_path_factory):
    """Target and source share 200 items (under other ids) whose text says nothing of taste (one genre for all),
    so only the source's interactions can tell the target which of its cold items its users like."""
    from coldstart.data.schema import save_dataset

    root = tmp_path_factory.mktemp("transfer")
    inter, items, users = make_tables(n_users=150, n_items=200, per_user=20, seed=3)
    items = items.assign(genres="Drama")
    split = save_split(make_split(validate(inter, items, users, name="target"), "items", seed=0), root / "split")
    embed(EmbedConfig(split=split, out=root / "embeddings", replicas=1))
    inter, items, users = make_tables(n_users=300, n_items=200, per_user=20, seed=3)  # same items, other users
    source = validate(inter.assign(user_id="s-" + inter["user_id"], item_id="s-" + inter["item_id"]),
                      items.assign(item_id="s-" + items["item_id"], genres="Drama"),
                      users.assign(user_id="s-" + users["user_id"]), name="source")
    save_dataset(source, root / "source")
    return root


def test_transfer_search_stops_weak_trials_and_its_best_lam_reproduces(transfer_pair):
    """`coldstart tune transfer` is tested as `tune vae` is: ASHA cuts trials, best.yaml retrains to the same score."""
    from trainers.transfer import TransferConfig
    from trainers.transfer import run as transfer

    root = transfer_pair
    base = TransferConfig(source=str(root / "source"), target=root / "split", embeddings=root / "embeddings",
                          out=root / "transfer-search", dim=16, epochs=4, batch_size=256, lr=5e-3,
                          scale={"storage": root / "runs"})
    result = search("transfer", base, SearchOptions(budget=4, concurrency=2, seed=1), root / "tune-transfer")
    trials = result.trials
    assert len(trials) == 4 and trials["error"].isna().all()
    assert trials["stopped_early"].sum() >= 1 and (trials["epochs"] == 4).sum() >= 1
    assert trials["lam"].between(0, 1).all() and trials["lam"].nunique() == 4
    assert (root / "tune-transfer" / "metric_vs_lam.png").stat().st_size > 1000

    best = load_config(TransferConfig, root / "tune-transfer" / "best.yaml",
                       {"scale": {"num_workers": 1, "storage": str(root / "runs")},
                        "out": str(root / "transfer-best")})
    top = trials.iloc[0]
    assert best.lam == pytest.approx(top["lam"]) and best.lr == pytest.approx(top["lr"])
    again = transfer(best.model_copy(update={"patience": best.epochs}))
    replay = [h["cold_val_ndcg@20"] for h in again.history]
    assert replay[int(top["best_epoch"])] == pytest.approx(top["best"], abs=1e-6)
