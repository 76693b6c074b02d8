"""The warm collaborative backbone (matrix factorisation, BPR) as a Ray Train job.

Each worker trains on an equal shard of the train interactions (DDP keeps the
replicas identical), evaluates warm validation NDCG@20 every epoch, and stops
early when it has not improved for `patience` epochs. Checkpoints each epoch;
the artifact keeps the best epoch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate_set
from coldstart.models.coldstart_model import load_backbone, save_backbone
from coldstart.models.mf import BackboneOptions, BackboneTraining, EmbeddingRecommender, MatrixFactorization, TrainPairs
from trainers.common import EarlyStopping, TrainResult, ensure_ray, report_epoch, run_epoch, torch_trainer


class BackboneConfig(JobConfig, BackboneOptions):
    split: Path = Field(..., description="Split folder to train on (its train set).")
    out: Path = Field(..., description="Where the backbone artifact is written.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = BackboneConfig.model_validate(config["cfg"])
    torch.set_num_threads(cfg.scale.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = SplitData.from_split(load_split(cfg.split))
    torch.manual_seed(cfg.seed)
    model = MatrixFactorization(data.n_users, data.n_items, cfg.dim)
    stopping = EarlyStopping("warm_val_ndcg@20", cfg.patience)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, user, item = load_backbone(Path(folder) / "last")
            model.user.weight.data.copy_(torch.from_numpy(user))
            model.item.weight.data.copy_(torch.from_numpy(item))
            stopping = EarlyStopping.resumed(stopping.key, cfg.patience, Path(folder) / "state.json")
            best_user, best_item = load_backbone(Path(folder) / "best")[1:]
    else:
        best_user = best_item = None
    model = ray.train.torch.prepare_model(model)
    training = BackboneTraining(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = data.split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=cfg.seed)
    mf = model.module if hasattr(model, "module") else model
    for epoch in range(stopping.next_epoch, cfg.epochs):
        metrics = run_epoch(training, pairs, cfg, epoch, rank, world, resumed=checkpoint is not None)
        user, item = mf.user.weight.detach().numpy().copy(), mf.item.weight.detach().numpy().copy()
        val = evaluate_set(EmbeddingRecommender(user, item), data, data.split.sets["warm_val"],
                           data.candidates("warm"), ks=(20,))
        report = {"epoch": epoch, **metrics, "warm_val_ndcg@20": val["ndcg@20"]}
        if stopping.update(report):
            best_user, best_item = user, item

        def write(folder: Path) -> None:
            save_backbone(folder / "last", data, user, item, {"epoch": epoch})
            save_backbone(folder / "best", data, best_user, best_item, {"epoch": stopping.best["epoch"],
                                                                        "metrics": stopping.best})
            stopping.write(folder / "state.json")

        report_epoch(report, write)
        if stopping.should_stop:
            break


def run(cfg: BackboneConfig) -> TrainResult:
    ensure_ray(cfg.ray)
    started = time.perf_counter()
    trainer = torch_trainer(train_loop, {"cfg": cfg.model_dump(mode="json")}, cfg.scale,
                            name=f"backbone-{cfg.out.name}", out=cfg.out)
    result = trainer.fit()
    return finish(result, cfg.out, started)


def finish(result, out: Path, started: float) -> TrainResult:
    """Copy the best model out of the last checkpoint into `out`, atomically."""
    import shutil

    from coldstart import artifacts

    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / "state.json").read_text())
        with artifacts.atomic_dir(out) as tmp:
            shutil.copytree(Path(folder) / "best", tmp, dirs_exist_ok=True)
    return TrainResult(out=out, history=state["history"], best=state["best"], seconds=time.perf_counter() - started,
                       restarts=state.get("restarts", 0))
