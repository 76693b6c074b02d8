"""The Ray Train loop every cold-start generator shares: distilled towers and the conditional VAE.

Inputs: a split, the LLM embeddings of its items and users (`coldstart embed`)
and the warm backbone (`coldstart train backbone`). Each worker trains on an
equal shard of the train interactions (DDP), then validates on the cold, warm
and all val sets. Model selection and early stopping are per path: the
generator kept is that of the best cold-val NDCG@20 epoch (the warm path is the
backbone, selected on warm-val when it was trained), because selecting on
all-val, which warm items dominate, leaves a cold mapper barely trained.

A job module supplies its config class, how to build its model from the
config and the feature sizes, and how to build its `train_epoch` object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.content import build_content
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.coldstart_model import load_backbone, load_cold_model, save_cold_model
from coldstart.models.mf import EmbeddingRecommender, TrainPairs
from coldstart.models.towers import cold_start_vectors
from trainers.backbone import finish
from trainers.common import EarlyStopping, TrainResult, ensure_ray, report_epoch, run_epoch, torch_trainer


class ColdModelInputs(JobConfig):
    split: Path = Field(..., description="Split folder.")
    embeddings: Path = Field(..., description="LLM embeddings of the split's items and users (coldstart embed).")
    backbone: Path = Field(..., description="Warm backbone artifact (coldstart train backbone).")
    out: Path = Field(..., description="Where the cold-start model artifact is written.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


@dataclass
class ColdModelJob:
    """What differs between generator jobs; everything else is `train_loop` below."""

    name: str
    config: type
    build_model: Callable  # (cfg, item_dim, user_dim, dim) -> nn.Module with .config, .KIND, generate_*
    build_training: Callable  # (cfg, model, user_vectors, item_vectors, arrays) -> object with train_epoch


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    job: ColdModelJob = config["job"]
    cfg = job.config.model_validate(config["cfg"])
    arrays = {k: np.asarray(v) for k, v in config["arrays"].items()}
    torch.set_num_threads(cfg.scale.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = SplitData.from_split(load_split(cfg.split))
    _, user_vectors, item_vectors = load_backbone(cfg.backbone)
    warm_users = data.train.getnnz(axis=1) > 0
    torch.manual_seed(cfg.seed)
    generator = job.build_model(cfg, arrays["item_features"].shape[1], arrays["user_features"].shape[1],
                                user_vectors.shape[1])
    stopping = EarlyStopping("cold_val_ndcg@20", cfg.patience)
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            generator.load_state_dict(load_cold_model(Path(folder) / "last")[1].state_dict())
            best_state = load_cold_model(Path(folder) / "best")[1].state_dict()
            stopping = EarlyStopping.resumed(stopping.key, cfg.patience, Path(folder) / "state.json")
    model = ray.train.torch.prepare_model(generator)
    training = job.build_training(cfg, model, user_vectors, item_vectors, arrays)
    train = data.split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=cfg.seed)
    vectors = {"user_vectors": user_vectors, "item_vectors": item_vectors, "warm_users": warm_users,
               "warm_items": data.warm_items, "user_features": arrays["user_features"],
               "item_features": arrays["item_features"]}
    for epoch in range(stopping.next_epoch, cfg.epochs):
        metrics = run_epoch(training, pairs, cfg, epoch, rank, world, resumed=checkpoint is not None)
        users, items = cold_start_vectors(model, **vectors)
        val = evaluate(EmbeddingRecommender(users, items), data, on="val", ks=(20,))
        report = {"epoch": epoch, **metrics,
                  **{f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}}
        if stopping.update(report):
            best_state = {k: v.detach().clone() for k, v in generator.state_dict().items()}

        def write(folder: Path) -> None:
            common = dict(user_vectors=user_vectors, item_vectors=item_vectors,
                          user_features=arrays["user_features"], item_features=arrays["item_features"],
                          content=config["content"])
            save_cold_model(folder / "last", data, generator, meta={"epoch": epoch}, **common)
            best = type(generator)(**generator.config)
            best.load_state_dict(best_state)
            save_cold_model(folder / "best", data, best, meta={"epoch": stopping.best["epoch"],
                                                               "metrics": stopping.best,
                                                               "selected_on": stopping.key}, **common)
            stopping.write(folder / "state.json")

        report_epoch(report, write)
        if stopping.should_stop:
            break


def run(job: ColdModelJob, cfg, callbacks: list | None = None) -> TrainResult:
    """Build the content features once on the driver, then train on Ray Train and keep the best epoch."""
    ensure_ray(cfg.ray)
    started = time.perf_counter()
    data = SplitData.from_split(load_split(cfg.split))
    item_features, user_features, user_text, item_text, spec = build_content(data, cfg.embeddings)
    arrays = {"item_features": item_features, "user_features": user_features, "user_text": user_text,
              "item_text": item_text}
    trainer = torch_trainer(train_loop, {"job": job, "cfg": cfg.model_dump(mode="json"), "arrays": arrays,
                                         "content": spec.to_json()},
                            cfg.scale, name=f"{job.name}-{cfg.out.name}", out=cfg.out, callbacks=callbacks)
    return finish(trainer.fit(), cfg.out, started)
