"""Distillation into student towers for cold items and users, as a Ray Train job.

Inputs: a split, the LLM embeddings of its items and users (`coldstart embed`)
and the warm backbone (`coldstart train backbone`). Each worker trains on an
equal shard of the train interactions (DDP), then validates on the cold, warm
and all val sets. Model selection and early stopping are per path: the towers
kept are those of the best cold-val NDCG@20 epoch (the warm path is the
backbone, selected on warm-val when it was trained), because selecting on
all-val, which warm items dominate, leaves a cold mapper barely trained.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.content import build_content
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.coldstart_model import load_backbone, load_towers, save_towers
from coldstart.models.mf import EmbeddingRecommender, TrainPairs
from coldstart.models.towers import ColdStartTowers, TowerOptions, DistillWeights, TowerTraining, cold_start_vectors
from trainers.backbone import finish
from trainers.common import EarlyStopping, TrainResult, all_reduce_mean, ensure_ray, fault_drill, report_epoch, torch_trainer


class DistillConfig(JobConfig, TowerOptions):
    split: Path = Field(..., description="Split folder.")
    embeddings: Path = Field(..., description="LLM embeddings of the split's items and users (coldstart embed).")
    backbone: Path = Field(..., description="Warm backbone artifact (coldstart train backbone).")
    out: Path = Field(..., description="Where the cold-start model artifact is written.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = DistillConfig.model_validate(config["cfg"])
    arrays = {k: np.asarray(v) for k, v in config["arrays"].items()}
    torch.set_num_threads(cfg.scale.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = SplitData.from_split(load_split(cfg.split))
    _, user_vectors, item_vectors = load_backbone(cfg.backbone)
    warm_users = data.train.getnnz(axis=1) > 0
    torch.manual_seed(cfg.seed)
    towers = ColdStartTowers(arrays["item_features"].shape[1], arrays["user_features"].shape[1],
                             user_vectors.shape[1], cfg.hidden, cfg.dropout)
    stopping = EarlyStopping("cold_val_ndcg@20", cfg.patience)
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            towers.load_state_dict(load_towers(Path(folder) / "last")[1].state_dict())
            best_state = load_towers(Path(folder) / "best")[1].state_dict()
            stopping = EarlyStopping.resumed(stopping.key, cfg.patience, Path(folder) / "state.json")
    model = ray.train.torch.prepare_model(towers)
    weights = DistillWeights(cfg.bpr, cfg.align, cfg.distill, cfg.temperature, cfg.teacher_backbone, cfg.teacher_llm)
    training = TowerTraining(model, user_vectors=user_vectors, item_vectors=item_vectors,
                             item_features=arrays["item_features"], user_features=arrays["user_features"],
                             user_text=arrays["user_text"], item_text=arrays["item_text"], weights=weights,
                             lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = data.split.train
    pairs = TrainPairs(data.user_ids.get_indexer(train["user_id"]), data.item_ids.get_indexer(train["item_id"]),
                       np.flatnonzero(data.warm_items), seed=cfg.seed + 1000 * stopping.next_epoch + rank)
    vectors = {"user_vectors": user_vectors, "item_vectors": item_vectors, "warm_users": warm_users,
               "warm_items": data.warm_items, "user_features": arrays["user_features"],
               "item_features": arrays["item_features"]}
    for epoch in range(stopping.next_epoch, cfg.epochs):
        fault_drill(cfg.scale, epoch, resumed=checkpoint is not None)
        started = time.perf_counter()
        metrics = training.train_epoch(pairs.batches(cfg.batch_size, shard=(rank, world)))
        seconds = time.perf_counter() - started
        metrics = all_reduce_mean(metrics, len(pairs) // world)
        users, items = cold_start_vectors(model, **vectors)
        val = evaluate(EmbeddingRecommender(users, items), data, on="val", ks=(20,))
        report = {"epoch": epoch, **metrics, "interactions_per_second": len(pairs) / seconds,
                  **{f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}}
        if stopping.update(report):
            best_state = {k: v.detach().clone() for k, v in towers.state_dict().items()}

        def write(folder: Path) -> None:
            common = dict(user_vectors=user_vectors, item_vectors=item_vectors,
                          user_features=arrays["user_features"], item_features=arrays["item_features"],
                          content=config["content"])
            save_towers(folder / "last", data, towers, meta={"epoch": epoch}, **common)
            best = ColdStartTowers(**towers.config)
            best.load_state_dict(best_state)
            save_towers(folder / "best", data, best, meta={"epoch": stopping.best["epoch"], "metrics": stopping.best,
                                                            "selected_on": stopping.key}, **common)
            stopping.write(folder / "state.json")

        report_epoch(report, write)
        if stopping.should_stop:
            break


def run(cfg: DistillConfig) -> TrainResult:
    ensure_ray(cfg.ray)
    started = time.perf_counter()
    data = SplitData.from_split(load_split(cfg.split))
    item_features, user_features, user_text, item_text, spec = build_content(data, cfg.embeddings)
    arrays = {"item_features": item_features, "user_features": user_features, "user_text": user_text,
              "item_text": item_text}
    trainer = torch_trainer(train_loop, {"cfg": cfg.model_dump(mode="json"), "arrays": arrays,
                                         "content": spec.to_json()},
                            cfg.scale, name=f"distill-{cfg.out.name}", out=cfg.out)
    return finish(trainer.fit(), cfg.out, started)
