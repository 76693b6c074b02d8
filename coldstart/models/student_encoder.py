"""A small student encoder distilled from a large teacher's text embeddings.

The student is either the teacher's first `layers` transformer layers (same
tokenizer, same width, initialised from the teacher) or a small model the user
names, plus a linear projection to the teacher's dimension when widths differ.
It is trained to reproduce the teacher's vectors (cosine or MSE). `save`
writes an encoder artifact that `TextEncoder` loads like any other model.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coldstart.text.encoder import pool, resolve_model_path, save_encoder

log = logging.getLogger(__name__)


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
                  teacher_dim: int | None = None, pooling: str = "mean"):
    """(StudentEncoder, tokenizer). Truncates the teacher unless `student_model` is named."""
    from transformers import AutoModel, AutoTokenizer

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
    projection = nn.Linear(hidden, target) if target != hidden else None
    return StudentEncoder(backbone, pooling, projection), tokenizer


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


class EncoderDistillation:
    """One epoch at a time, over any iterable of (texts, teacher vectors) batches.

    The Ray Train worker loop, a Tune trial and a unit test all drive it the
    same way; `model` may be DDP-wrapped.
    """

    def __init__(self, model: nn.Module, tokenizer, *, lr: float = 1e-4, weight_decay: float = 0.01,
                 loss: str = "cosine", max_length: int = 128, device: torch.device | str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.loss = loss
        self.max_length = max_length
        self.device = torch.device(device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def _tokens(self, texts: list[str]):
        texts = [t if t and t.strip() else "[empty]" for t in texts]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def train_epoch(self, batches: Iterable[tuple[list[str], np.ndarray]]) -> dict[str, float]:
        self.model.train()
        total, count = 0.0, 0
        for texts, targets in batches:
            ids, mask = self._tokens(list(texts))
            target = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=self.device)
            loss = distill_loss(self.model(ids, mask), target, self.loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            total += float(loss.detach()) * len(texts)
            count += len(texts)
        return {"train_loss": total / max(count, 1), "train_texts": float(count)}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[list[str], np.ndarray]]) -> dict[str, float]:
        """Sum and count of cosines to the teacher (sums, so workers can add them up)."""
        self.model.eval()
        total, count = 0.0, 0
        for texts, targets in batches:
            ids, mask = self._tokens(list(texts))
            target = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=self.device)
            cos = nn.functional.cosine_similarity(self.model(ids, mask), target, dim=-1)
            total += float(cos.sum())
            count += len(texts)
        return {"cosine_sum": total, "count": float(count),
                "cosine": total / count if count else math.nan}


def unwrap(model: nn.Module) -> StudentEncoder:
    return model.module if hasattr(model, "module") else model


def save_student(folder: str | Path, model: nn.Module, tokenizer, *, max_length: int, extra: dict | None = None):
    student = unwrap(model)
    return save_encoder(folder, student.backbone, tokenizer, pooling=student.pooling, max_length=max_length,
                        projection=student.projection, extra=extra)


def load_student(folder: str | Path) -> tuple[StudentEncoder, object, dict]:
    """Rebuild a student from its artifact folder alone (for resuming training)."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from coldstart.text.encoder import ARTIFACT_FILE

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
