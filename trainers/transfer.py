"""Transfer learning from a source dataset to a target split, as a Ray Train job.

`L = lam * L_source + (1 - lam) * L_target` (see `coldstart/models/transfer.py`).
The target is an item-cold split with its LLM embeddings (`coldstart embed`);
the source is a dataset (ml-1m by default) whose item texts are embedded here
with the target's encoder and templates, so both live in one text space (the
vectors are kept and reused by text hash). Model selection and early stopping
are on the target's cold-val NDCG@20, like every cold-start model here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from coldstart import artifacts
from coldstart.config import ConfigError, JobConfig, RayOptions, ScaleOptions
from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models.artifact import load_artifact, save_artifact
from coldstart.models.mf import EmbeddingRecommender, TrainPairs
from coldstart.models.transfer import TransferModel, TransferOptions, TransferTraining, match_items, target_vectors
from coldstart.models.vectors import read_vectors
from coldstart.content import aligned
from trainers.backbone import finish
from trainers.common import EarlyStopping, TrainResult, all_reduce_mean, ensure_ray, fault_drill, report_epoch, torch_trainer

log = logging.getLogger(__name__)


class TransferConfig(JobConfig, TransferOptions):
    source: str = Field("ml-1m", description="Source dataset: a MovieLens name (ml-1m, ml-100k) or a dataset folder.")
    target: Path = Field(..., description="Target split folder (item cold-start).")
    embeddings: Path = Field(..., description="LLM embeddings of the target split (coldstart embed).")
    out: Path = Field(..., description="Where the transfer model artifact is written.")
    source_embeddings: Path | None = Field(None, description="Where the source items' LLM vectors are kept "
                                                             "(default: next to --embeddings, named after both).")
    cache_dir: Path | None = Field(None, description="Dataset cache (default $COLDSTART_CACHE or ~/.cache/coldstart).")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


def load_source(cfg: TransferConfig):
    if cfg.source in movielens.SOURCES:
        return load_dataset(movielens.fetch(cfg.source, cfg.cache_dir), name=cfg.source)
    if not Path(cfg.source).is_dir():
        raise ConfigError(f"source: {cfg.source!r} is neither a MovieLens name ({', '.join(movielens.SOURCES)}) "
                          "nor a dataset folder")
    return load_dataset(cfg.source)


def source_embeddings_dir(cfg: TransferConfig) -> Path:
    """Beside the target's embeddings, so every run on them (Tune trials, lam = 0 and 1) shares one copy."""
    if cfg.source_embeddings:
        return cfg.source_embeddings
    name = Path(cfg.source).name if Path(cfg.source).is_dir() else cfg.source
    return cfg.embeddings.parent / f"{cfg.embeddings.name}-source-{name}"


def source_text_vectors(cfg: TransferConfig, source_items: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """The source items' LLM vectors from the target's encoder and templates (one text space)."""
    from coldstart.text.templates import item_texts, text_hash
    from trainers.embed import EmbedConfig, embed_texts

    meta = artifacts.read_json(cfg.embeddings / "embed.json")
    embed_cfg = EmbedConfig(encoder=meta["encoder"], templates=meta["templates"], split=cfg.target,
                            out=source_embeddings_dir(cfg), ray=cfg.ray)
    texts = item_texts(source_items, embed_cfg.templates).rename(columns={"item_id": "id"})
    texts["text_hash"] = texts["text"].map(text_hash)
    result = embed_texts({"items": texts}, embed_cfg)
    log.info("source item vectors: embedded %s, reused %s", result.embedded, result.reused)
    return read_vectors(result.out / "items.parquet", "item_id")


def build_inputs(cfg: TransferConfig, data: SplitData) -> dict:
    """Joint item rows (target items first, then source-only items), their text, and both domains' pairs."""
    source = load_source(cfg)
    matched = match_items(source.items, data.split.items.set_index("item_id").reindex(data.item_ids)
                          .reset_index(names="item_id"))
    target_ids, target_matrix = read_vectors(cfg.embeddings / "items.parquet", "item_id")
    source_ids, source_matrix = source_text_vectors(cfg, source.items)
    source_only = pd.Index(source.items["item_id"]).difference(pd.Index(matched.dropna().to_numpy()))
    # source item id -> joint row; a source item two target items match (duplicate titles) joins the first
    shared = pd.Series(np.arange(data.n_items), index=matched.to_numpy())[matched.notna().to_numpy()]
    rows = pd.concat([shared[~shared.index.duplicated()],
                      pd.Series(np.arange(data.n_items, data.n_items + len(source_only)), index=source_only)])
    text = np.concatenate([aligned(target_ids, target_matrix, data.item_ids),
                           aligned(source_ids, source_matrix, source_only)]).astype(np.float32)

    inter = source.interactions.drop_duplicates(["user_id", "item_id"])
    source_users = pd.Index(sorted(inter["user_id"].unique()))
    train = data.split.train
    cold = np.flatnonzero(~data.warm_items)
    coverage = {"target_items": int(data.n_items), "covered": int(matched.notna().sum()),
                "cold_items": int(len(cold)), "cold_covered": int(matched.iloc[cold].notna().sum()),
                "source": cfg.source, "source_items": int(len(source.items)),
                "source_interactions": int(len(inter))}
    log.info("the source covers %d of %d target items (%d of %d cold)", coverage["covered"],
             coverage["target_items"], coverage["cold_covered"], coverage["cold_items"])
    return {
        "text": text,
        "target_users": data.user_ids.get_indexer(train["user_id"]),
        "target_items": data.item_ids.get_indexer(train["item_id"]),
        "target_negatives": np.flatnonzero(data.warm_items),
        "source_users": source_users.get_indexer(inter["user_id"]),
        "source_items": rows.reindex(inter["item_id"]).to_numpy().astype(np.int64),
        "source_negatives": np.unique(rows.to_numpy()),
        "n_source_users": len(source_users),
        "coverage": coverage,
    }


def save_transfer(folder: Path, data: SplitData, model: TransferModel, text: np.ndarray, meta: dict) -> Path:
    users, items = target_vectors(model, text, np.arange(data.n_items))
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(user_vectors=users, item_vectors=items)
    return save_artifact(folder, TransferModel.KIND, {"config": model.config, "user_ids": list(data.user_ids),
                                                      "item_ids": list(data.item_ids), **meta}, tensors)


def load_transfer_state(folder: Path) -> dict:
    _, tensors = load_artifact(folder)
    return {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("model.")}


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = TransferConfig.model_validate(config["cfg"])
    inputs = config["inputs"]
    torch.set_num_threads(cfg.scale.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = SplitData.from_split(load_split(cfg.target))
    text = np.asarray(inputs["text"])
    torch.manual_seed(cfg.seed)
    transfer = TransferModel(text.shape[1], len(text), inputs["n_source_users"], data.n_users, cfg.dim, cfg.hidden,
                             cfg.dropout)
    stopping = EarlyStopping("cold_val_ndcg@20", cfg.patience)
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            transfer.load_state_dict(load_transfer_state(Path(folder) / "last"))
            best_state = load_transfer_state(Path(folder) / "best")
            stopping = EarlyStopping.resumed(stopping.key, cfg.patience, Path(folder) / "state.json")
    model = ray.train.torch.prepare_model(transfer)
    training = TransferTraining(model, text, lam=cfg.lam, lr=cfg.lr, weight_decay=cfg.weight_decay)
    target = TrainPairs(inputs["target_users"], inputs["target_items"], inputs["target_negatives"])
    source = TrainPairs(inputs["source_users"], inputs["source_items"], inputs["source_negatives"])
    meta = {"lam": cfg.lam, "source": cfg.source, "coverage": inputs["coverage"]}
    for epoch in range(stopping.next_epoch, cfg.epochs):
        fault_drill(cfg.scale, epoch, resumed=checkpoint is not None)
        target.reseed(cfg.seed + 1000 * epoch + rank)
        source.reseed(cfg.seed + 1000 * epoch + rank + 500)
        started = time.perf_counter()
        metrics = training.train_epoch(target.batches(cfg.batch_size, shard=(rank, world)),
                                       source.batches(cfg.batch_size, shard=(rank, world)))
        seconds = time.perf_counter() - started
        metrics = all_reduce_mean(metrics, len(target) // world)
        users, items = target_vectors(model, text, np.arange(data.n_items))
        val = evaluate(EmbeddingRecommender(users, items), data, on="val", ks=(20,))
        report = {"epoch": epoch, "lam": cfg.lam, **metrics, "interactions_per_second": 2 * len(target) / seconds,
                  **{f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}}
        if stopping.update(report):
            best_state = {k: v.detach().clone() for k, v in transfer.state_dict().items()}

        def write(folder: Path) -> None:
            save_transfer(folder / "last", data, transfer, text, {**meta, "epoch": epoch})
            best = TransferModel(**transfer.config)
            best.load_state_dict(best_state)
            save_transfer(folder / "best", data, best, text, {**meta, "epoch": stopping.best["epoch"],
                                                              "metrics": stopping.best, "selected_on": stopping.key})
            stopping.write(folder / "state.json")

        report_epoch(report, write)
        if stopping.should_stop:
            break


def run(cfg: TransferConfig, callbacks: list | None = None) -> TrainResult:
    ensure_ray(cfg.ray)
    started = time.perf_counter()
    data = SplitData.from_split(load_split(cfg.target))
    if data.split.cold != "items":
        raise ConfigError(f"target: transfer needs an item cold-start split (the domains share items, not users); "
                          f"{cfg.target} is {data.split.cold}-cold")
    inputs = build_inputs(cfg, data)
    if inputs["coverage"]["covered"] == 0:
        raise ConfigError(f"source: {cfg.source} shares no item (by title and year) with the target {cfg.target}")
    trainer = torch_trainer(train_loop, {"cfg": cfg.model_dump(mode="json"), "inputs": inputs}, cfg.scale,
                            name=f"transfer-{cfg.out.name}", out=cfg.out, callbacks=callbacks)
    result = finish(trainer.fit(), cfg.out, started)
    result.best["coverage"] = inputs["coverage"]
    return result
