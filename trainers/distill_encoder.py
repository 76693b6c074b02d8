"""Distil the large text encoder (teacher) into a small, fast student, on Ray Train.

Inputs are the embed job's folder: every item and user text with its teacher
vector. A TorchTrainer (DDP; GPU workers where present, CPU workers here)
trains the student to reproduce those vectors, checkpoints each epoch
(safetensors + JSON), resumes from the last checkpoint after a failure, and
keeps the epoch with the best held-out cosine. The result is an encoder
artifact that the embed job and serving load like any other encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from coldstart import artifacts
from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.data.schema import DataError
from coldstart.models.student_encoder import EncoderDistillation, build_student, load_student, save_student
from coldstart.text.encoder import DEFAULT_MODEL
from trainers.common import TrainResult, ensure_ray, fault_drill, report_epoch, torch_trainer

log = logging.getLogger(__name__)


class DistillEncoderConfig(JobConfig):
    embeddings: Path = Field(..., description="The embed job's folder: texts and teacher vectors.")
    out: Path = Field(..., description="Where the student encoder artifact is written.")
    teacher: str = Field(DEFAULT_MODEL, description="The teacher model (its tokenizer and first layers seed the student).")
    student_model: str | None = Field(None, description="A small model to use as the student instead of truncating the teacher.")
    layers: int = Field(2, gt=0, description="Teacher layers the student keeps (when no student_model).")
    loss: Literal["cosine", "mse"] = Field("cosine", description="Distillation loss against the teacher's vectors.")
    epochs: int = Field(4, gt=0, description="Training epochs.")
    batch_size: int = Field(64, gt=0, description="Texts per step on each worker.")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_length: int = Field(128, gt=0, description="Max tokens per text for the student.")
    holdout: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of texts held out to measure fidelity.")
    limit: int | None = Field(None, gt=0, description="Use only this many texts (quick runs and tests).")
    split: Path | None = Field(None, description="If set, this split's cold items/users stay out of training "
                                                 "(they stand for entities that arrive after it).")
    seed: int = Field(0, description="Seed of the hold-out draw and of training.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers, devices, failures.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection.")


def load_pairs(folder: Path, limit: int | None = None, exclude: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """(text, target) for every non-empty text of the embed job's folder, less `exclude`d ids."""
    frames = []
    for kind, id_column in (("items", "item_id"), ("users", "user_id")):
        path = folder / f"{kind}.parquet"
        if path.is_file():
            frame = pd.read_parquet(path, columns=[id_column, "text", "vector", "text_hash"])
            frame = frame.loc[~frame[id_column].isin((exclude or {}).get(kind, set()))]
            frames.append(frame.drop(columns=[id_column]))
    if not frames:
        raise DataError("no items.parquet or users.parquet: run `coldstart embed` first", file=folder)
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates("text_hash")
    pairs = pairs.loc[pairs["text"].fillna("").str.strip() != ""]
    if limit:
        pairs = pairs.iloc[:limit]
    pairs["target"] = [np.asarray(v, dtype=np.float32) for v in pairs.pop("vector")]
    return pairs.reset_index(drop=True)


def excluded_ids(split_dir: Path | None) -> dict[str, set[str]]:
    if split_dir is None:
        return {}
    from coldstart.data.split import load_split

    split = load_split(split_dir)
    return {split.cold: set(split.cold_ids["val"]) | set(split.cold_ids["test"])}


def holdout_mask(hashes: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Stable per text: the same text is held out whatever else is in the data."""
    def unit(h: str) -> float:
        return int(hashlib.sha1(f"{seed}:{h}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return hashes.map(unit).to_numpy() < fraction


def _batches(shard, batch_size: int, seed: int | None = None):
    kwargs = {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed} if seed is not None else {}
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", **kwargs):
        yield list(batch["text"]), batch["target"]


def train_loop(config: dict) -> None:
    """What each Ray Train worker runs."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    cfg = DistillEncoderConfig.model_validate(config["cfg"])
    teacher_dim = config["teacher_dim"]
    torch.set_num_threads(cfg.scale.threads_per_worker)
    torch.manual_seed(cfg.seed)

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            student, tokenizer, _ = load_student(Path(folder) / "encoder")
            state = json.loads((Path(folder) / "train_state.json").read_text())
            optimizer_state = torch.load(Path(folder) / "optimizer.pt", weights_only=True)
        start_epoch, history = state["epoch"] + 1, state["history"]
    else:
        student, tokenizer = build_student(cfg.teacher, layers=cfg.layers, student_model=cfg.student_model,
                                           teacher_dim=teacher_dim)
        optimizer_state = None
    model = ray.train.torch.prepare_model(student)
    device = ray.train.torch.get_device()
    trainer = EncoderDistillation(model, tokenizer, lr=cfg.lr, weight_decay=cfg.weight_decay, loss=cfg.loss,
                                  max_length=cfg.max_length, device=device)
    if optimizer_state is not None:
        trainer.optimizer.load_state_dict(optimizer_state)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg.epochs):
        fault_drill(cfg.scale, epoch, resumed=checkpoint is not None)
        started = time.perf_counter()
        metrics = trainer.train_epoch(_batches(train_shard, cfg.batch_size, seed=cfg.seed + epoch))
        seconds = time.perf_counter() - started
        val = trainer.evaluate(_batches(val_shard, cfg.batch_size))
        sums = torch.tensor([metrics["train_loss"] * metrics["train_texts"], metrics["train_texts"],
                             val["cosine_sum"], val["count"]], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        report = {"epoch": epoch, "train_loss": float(sums[0] / max(sums[1], 1)),
                  "val_cosine": float(sums[2] / max(sums[3], 1)),
                  "texts_per_second": float(sums[1]) / seconds if seconds else 0.0}
        history.append(report)

        def write(folder: Path) -> None:
            save_student(folder / "encoder", model, tokenizer, max_length=cfg.max_length,
                         extra={"teacher": cfg.teacher, "val_cosine": report["val_cosine"], "epoch": epoch})
            torch.save(trainer.optimizer.state_dict(), folder / "optimizer.pt")
            (folder / "train_state.json").write_text(json.dumps({"epoch": epoch, "history": history}))

        report_epoch(report, write)


def run(cfg: DistillEncoderConfig) -> TrainResult:
    ray = ensure_ray(cfg.ray)
    import ray.data

    started = time.perf_counter()
    pairs = load_pairs(cfg.embeddings, cfg.limit, excluded_ids(cfg.split))
    held = holdout_mask(pairs["text_hash"], cfg.holdout, cfg.seed)
    if held.all() or (~held).sum() < cfg.scale.num_workers:
        raise DataError(f"too few texts ({len(pairs)}) to train {cfg.scale.num_workers} workers", file=cfg.embeddings)
    columns = ["text", "target"]
    datasets = {"train": ray.data.from_pandas(pairs.loc[~held, columns]),
                "val": ray.data.from_pandas(pairs.loc[held, columns] if held.any() else pairs.loc[~held, columns].iloc[:64])}
    trainer = torch_trainer(
        train_loop, {"cfg": cfg.model_dump(mode="json"), "teacher_dim": int(len(pairs["target"].iloc[0]))},
        cfg.scale, name=f"distill-encoder-{cfg.out.name}", out=cfg.out, datasets=datasets, score="val_cosine")
    result = trainer.fit()
    best_checkpoint, best = _best(result)
    with best_checkpoint.as_directory() as folder:
        with artifacts.atomic_dir(cfg.out) as tmp:
            shutil.copytree(Path(folder) / "encoder", tmp, dirs_exist_ok=True)
    with result.checkpoint.as_directory() as folder:  # the latest: its history covers every epoch
        history = json.loads((Path(folder) / "train_state.json").read_text())["history"]
    return TrainResult(out=cfg.out, history=history, best=best, seconds=time.perf_counter() - started)


def _best(result):
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if c is not None]
    if candidates:
        return max(candidates, key=lambda cm: cm[1].get("val_cosine", -1.0))
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    return result.checkpoint, result.metrics or {}
