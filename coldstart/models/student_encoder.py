"""A small student encoder distilled from a large teacher's text embeddings.

The student is either the teacher's first `layers` transformer layers (same
tokenizer, same width, initialised from the teacher) or a small model the user
names, plus a linear projection to the teacher's dimension (started by least squares, `fit_projection`).
It is trained to reproduce the teacher's vectors (cosine or MSE). `save`
writes an encoder artifact that `TextEncoder` loads like any other model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from torch import nn

from coldstart.text.encoder import ARTIFACT_FILE, auto_classes, pool, resolve_model_path, save_encoder
from coldstart.training import StepTraining, unwrap

log = logging.getLogger(__name__)


class StudentOptions(BaseModel):
    """How the student is built and trained, shared by `coldstart train encoder` and the pipeline's encoder stage."""

    model_config = ConfigDict(extra="forbid")
    student_model: str | None = Field(None, description="A small model to use as the student instead of "
                                                        "truncating the teacher.")
    layers: int = Field(2, gt=0, description="Teacher layers the student keeps (when no student_model).")
    loss: Literal["cosine", "mse"] = Field("cosine", description="Distillation loss against the teacher's vectors.")
    fit_projection: bool = Field(True, description="Start from a projection fitted by least squares from the "
                                                   "student's pooled states to the teacher's vectors "
                                                   "(`fit_projection`), not from none or a random one.")
    epochs: int = Field(4, gt=0, description="Training epochs.")
    patience: int = Field(2, gt=0, description="Stop after this many epochs without a better held-out cosine.")
    batch_size: int = Field(64, gt=0, description="Texts per step on each worker.")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_length: int = Field(128, gt=0, description="Max tokens per text for the student.")
    holdout: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of texts held out to measure fidelity.")
    limit: int | None = Field(None, gt=0, description="Use only this many texts (quick runs and tests).")
    min_cosine: float = Field(0.95, ge=-1, le=1, description="Serving uses the student only when its held-out "
                                                             "cosine to the teacher reaches this; else the teacher.")
    seed: int = Field(0, description="Seed of the hold-out draw and of training.")


class StudentEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, pooling: str, projection: nn.Linear | None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.projection = projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling).float()
        if self.projection is not None:
            pooled = self.projection(pooled)
        return nn.functional.normalize(pooled, dim=-1)


def build_student(teacher: str, *, layers: int | None = 2, student_model: str | None = None,
                  teacher_dim: int | None = None, pooling: str = "mean", project: bool = False):
    """(StudentEncoder, tokenizer). Truncates the teacher unless `student_model` is named. A projection to the
    teacher's width follows when widths differ, or always with `project` (`fit_projection` starts it)."""
    _, AutoModel, AutoTokenizer = auto_classes()

    source = resolve_model_path(student_model or teacher)
    local = Path(source).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    # Train in float32 whatever the checkpoint's dtype: an fp16 checkpoint trained as is gave NaN losses.
    if student_model:
        backbone = AutoModel.from_pretrained(source, local_files_only=local, dtype=torch.float32)
    else:
        full = AutoModel.from_pretrained(source, local_files_only=local, dtype=torch.float32)
        config = copy.deepcopy(full.config)
        total = int(config.num_hidden_layers)
        if not layers or layers >= total:
            raise ValueError(f"student layers must be between 1 and {total - 1}, got {layers}")
        config.num_hidden_layers = layers
        backbone = AutoModel.from_config(config)
        # Keep the embeddings and the first `layers` layers: names match, later layers are simply absent.
        missing, _unexpected = backbone.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"student weights missing from the teacher: {missing[:5]}")
        del full
    _drop_pooler(backbone)
    hidden = int(backbone.config.hidden_size)
    target = teacher_dim or hidden
    projection = nn.Linear(hidden, target) if target != hidden or project else None
    return StudentEncoder(backbone, pooling, projection), tokenizer


@torch.no_grad()
def fit_projection(student: StudentEncoder, tokenizer, batches: Iterable[tuple[list[str], torch.Tensor]], *,
                   max_length: int = 128, ridge: float = 1.0) -> int:
    """Start the student's projection where least squares puts it: the map from its pooled token states to the
    teacher's vectors over `batches` of (texts, teacher vectors), the sums taken over every rank of a process
    group (each reads its own shard), so all ranks start alike. A truncated teacher's pooled states point away
    from the full model's (held-out cosine 0.25 on ml-100k's texts before training); the fitted map starts the
    student at 0.88, where an epoch of training had reached 0.80. Returns the texts it read."""
    gram = cross = None
    count = 0
    student.eval()
    for texts, targets in batches:
        enc = tokenizer([t if t and t.strip() else "[empty]" for t in texts], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        hidden = student.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        x = pool(hidden, enc["attention_mask"], student.pooling).double()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
        gram = x.T @ x if gram is None else gram + x.T @ x
        cross = x.T @ y if cross is None else cross + x.T @ y
        count += len(texts)
    student.train()
    if dist.is_available() and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        width = student.backbone.config.hidden_size + 1
        sums = torch.zeros(width, width + student.projection.out_features, dtype=torch.float64, device=device)
        if gram is not None:
            sums[:, :width], sums[:, width:] = gram, cross
        dist.all_reduce(sums)
        gram, cross = sums[:, :width].cpu(), sums[:, width:].cpu()
    if gram is None or not gram.any():
        return count
    weights = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), cross)
    student.projection.weight.copy_(weights[:-1].T.float())
    student.projection.bias.copy_(weights[-1].float())
    return count


def _drop_pooler(backbone: nn.Module) -> None:
    """We pool token states ourselves; an unused pooler layer would stall DDP and the optimizer."""
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None


def distill_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine":
        return (1.0 - nn.functional.cosine_similarity(pred, target, dim=-1)).mean()
    if kind == "mse":
        return nn.functional.mse_loss(pred, target)
    raise ValueError(f"unknown loss {kind!r}")


class EncoderDistillation(StepTraining):
    """Batches of (texts, teacher vectors); the loss tokenizes on the CPU and runs the student on its device."""

    def __init__(self, model: nn.Module, tokenizer, *, lr: float = 1e-4, weight_decay: float = 0.01,
                 loss: str = "cosine", max_length: int = 128, device: torch.device | str | None = None,
                 precision: str = "fp32"):
        super().__init__(model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay),
                         device=device, precision=precision, clip_norm=1.0)
        self.tokenizer = tokenizer
        self.kind = loss
        self.max_length = max_length

    def _tokens(self, texts: list[str]):
        texts = [t if t and t.strip() else "[empty]" for t in texts]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return self.on_device((enc["input_ids"], enc["attention_mask"]))

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        texts, targets = batch
        ids, mask = self._tokens(list(texts))
        return distill_loss(self.model(ids, mask).float(), targets.float(), self.kind), {}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[list[str], np.ndarray]]) -> dict[str, float]:
        """Mean cosine to the teacher and the count of texts (workers weigh their means by it). The model runs
        unwrapped: a DDP forward is a collective, and ranks holding unequal shards would wait on each other."""
        model = unwrap(self.model)
        model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        for texts, targets in batches:
            ids, mask = self._tokens(list(texts))
            target = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=self.device)
            with self._precision():
                pred = model(ids, mask)
            total += nn.functional.cosine_similarity(pred.float(), target, dim=-1).double().sum()
            count += len(texts)
        total = float(total.cpu())
        return {"cosine_sum": total, "count": float(count), "cosine": total / count if count else math.nan}


def save_student(folder: str | Path, model: nn.Module, tokenizer, *, max_length: int, extra: dict | None = None):
    student = unwrap(model)
    return save_encoder(folder, student.backbone, tokenizer, pooling=student.pooling, max_length=max_length,
                        projection=student.projection, extra=extra)


def load_student(folder: str | Path) -> tuple[StudentEncoder, object, dict]:
    """Rebuild a student from its artifact folder alone (for resuming training)."""
    _, AutoModel, AutoTokenizer = auto_classes()

    folder = Path(folder)
    meta = json.loads((folder / ARTIFACT_FILE).read_text())
    backbone = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    _drop_pooler(backbone)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    projection = None
    if meta.get("projection"):
        projection = nn.Linear(meta["projection"]["in"], meta["projection"]["out"])
        projection.load_state_dict(load_file(str(folder / "projection.safetensors")))
    return StudentEncoder(backbone, meta["pooling"], projection), tokenizer, meta
