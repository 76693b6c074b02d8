"""Distil the large text encoder (teacher) into a small, fast student, on Ray Train.

Inputs are the embed job's folder: every item and user text with its teacher
vector. A TorchTrainer (DDP; GPU workers where present, CPU workers here)
trains the student to reproduce those vectors, checkpoints as the skeleton does
(safetensors + JSON), resumes from the last checkpoint after a failure, and
keeps the epoch with the best held-out cosine. The result is an encoder
artifact that the embed job and serving load like any other encoder.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from coldstart.config import JobConfig, RayOptions, ScaleOptions
from coldstart.data.schema import DataError
from coldstart.data.split import load_split
from coldstart.models.student_encoder import (EncoderDistillation, StudentOptions, build_student, fit_projection,
                                              load_student, save_student)
from coldstart.text.encoder import DEFAULT_MODEL
from trainers.common import TrainResult, ensure_ray
from trainers.loop import TrainJob, run_job

log = logging.getLogger(__name__)


class DistillEncoderConfig(JobConfig, StudentOptions):
    embeddings: Path = Field(..., description="The embed job's folder: texts and teacher vectors.")
    out: Path = Field(..., description="Where the student encoder artifact is written.")
    teacher: str = Field(DEFAULT_MODEL, description="The teacher model (its tokenizer and first layers seed the student).")
    split: Path | None = Field(None, description="If set, this split's cold items/users stay out of training "
                                                 "(they stand for entities that arrive after it).")
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
    split = load_split(split_dir)
    return {split.cold: set(split.cold_ids["val"]) | set(split.cold_ids["test"])}


def holdout_mask(hashes: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Stable per text: the same text is held out whatever else is in the data."""
    def unit(h: str) -> float:
        return int(hashlib.sha1(f"{seed}:{h}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return hashes.map(unit).to_numpy() < fraction


def text_batches(source, batch_size: int, seed: int | None = None):
    """(texts, teacher vectors) batches from a Ray Data shard, shuffled locally when `seed` is given."""
    kwargs = {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed} if seed is not None else {}
    for batch in source.iter_batches(batch_size=batch_size, batch_format="numpy", **kwargs):
        yield list(batch["text"]), torch.as_tensor(np.stack(batch["target"]), dtype=torch.float32)


class EncoderJob(TrainJob):
    """The student encoder as the skeleton sees it: texts in, the teacher's vectors as targets.

    `train` and `val` are anything with Ray Data's `iter_batches` (this rank's shard).
    """

    name = "distill-encoder"
    key = "val_cosine"
    throughput = "texts_per_second"
    config_class = DistillEncoderConfig

    def __init__(self, cfg: DistillEncoderConfig, teacher_dim: int, train=None, val=None):
        super().__init__(cfg)
        self.teacher_dim = teacher_dim
        if train is None:
            import ray.train  # ray: heavy, only the Ray path loads it

            train, val = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
        self.train, self.val = train, val
        self.tokenizer = None

    def build_model(self):
        student, self.tokenizer = build_student(self.cfg.teacher, layers=self.cfg.layers,
                                                student_model=self.cfg.student_model, teacher_dim=self.teacher_dim,
                                                project=self.cfg.fit_projection)
        if self.cfg.fit_projection:  # every rank, on its own shard: the sums are taken over the group
            fit_projection(student, self.tokenizer, text_batches(self.train, self.cfg.batch_size),
                           max_length=self.cfg.max_length)
        return student

    def build_training(self, model, device, precision) -> EncoderDistillation:
        cfg = self.cfg
        self.trainer = EncoderDistillation(model, self.tokenizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           loss=cfg.loss, max_length=cfg.max_length, device=device,
                                           precision=precision)
        return self.trainer

    validates_shard = True  # Ray Data gives each rank its own slice of the validation texts

    def batches(self, epoch, rank, world):
        return text_batches(self.train, self.cfg.batch_size, seed=self.cfg.seed + epoch)

    def validate(self, model):
        val = self.trainer.evaluate(text_batches(self.val, self.cfg.batch_size))
        return {"val_cosine": val["cosine"] if val["count"] else 0.0}, val["count"]

    def save(self, folder, model, meta):
        save_student(folder, model, self.tokenizer, max_length=self.cfg.max_length,
                     extra={"teacher": self.cfg.teacher, "val_cosine": meta["metrics"]["val_cosine"],
                            "epoch": meta["epoch"]})

    def load(self, folder):
        return load_student(folder)[0].state_dict()


def run(cfg: DistillEncoderConfig) -> TrainResult:
    ray = ensure_ray(cfg.ray)
    import ray.data  # ray: heavy, only the Ray path loads it

    pairs = load_pairs(cfg.embeddings, cfg.limit, excluded_ids(cfg.split))
    held = holdout_mask(pairs["text_hash"], cfg.holdout, cfg.seed)
    if held.all() or (~held).sum() < cfg.scale.num_workers:
        raise DataError(f"too few texts ({len(pairs)}) to train {cfg.scale.num_workers} workers", file=cfg.embeddings)
    columns = ["text", "target"]
    datasets = {"train": ray.data.from_pandas(pairs.loc[~held, columns]),
                "val": ray.data.from_pandas(pairs.loc[held, columns] if held.any() else pairs.loc[~held, columns].iloc[:64])}
    return run_job(EncoderJob, cfg, inputs={"teacher_dim": int(len(pairs["target"].iloc[0]))}, datasets=datasets)
