"""The batch step every model's training shares, without Ray: device placement, the optimizer step,
mixed precision, and metric sums that stay on the device until the epoch ends.

A model's training class subclasses `StepTraining` and supplies `loss(batch)`:
the batch arrives already on the model's device, and the loss comes back with
its named parts. `train_epoch(batches)` is what the Ray Train skeleton
(`trainers/loop.py`), a Tune trial, the GPU check and a unit test all drive,
so a bug in how a batch reaches the GPU is fixed here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (and numpy arrays) moved to `device`, through tuples, lists and dicts; anything else as is."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def as_input(array: Any, model: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`array` as a tensor on `model`'s device: how inference feeds a model that may live on a GPU."""
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    return to_device(tensor.to(dtype), model_device(model))


def batch_len(batch: Any) -> int:
    """Rows in a batch: the length of its first element, looking through nested tuples."""
    first = batch
    while isinstance(first, (tuple, list)) and first and isinstance(first[0], (tuple, list, torch.Tensor)):
        first = first[0]
    return len(first)


class StepTraining:
    """One epoch at a time over any iterable of batches; `model` may be DDP-wrapped.

    Subclasses implement `loss(batch) -> (loss, {name: tensor})`. Lookup tables a
    loss indexes (backbone vectors, features) go to the device through `place`.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device | str | None = None,
                 precision: str = "fp32", clip_norm: float | None = None):
        self.model = model
        self.optimizer = optimizer
        self.device = torch.device(device) if device is not None else model_device(model)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.autocast = PRECISIONS[precision]
        # fp16's narrow range underflows small gradients to zero: its losses are scaled (bf16 needs none)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.clip_norm = clip_norm
        self.count = 0  # rows of the last epoch (on this process)

    def place(self, value: Any, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """A lookup table on the training device (float32 unless told otherwise)."""
        if value is None:
            return None
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        return to_device(tensor if dtype is None else tensor.to(dtype), self.device)

    def on_device(self, value: Any) -> Any:
        """Tensors a loss builds from the CPU (token ids, say) moved to the training device."""
        return to_device(value, self.device)

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _precision(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def train_epoch(self, batches: Iterable[Any]) -> dict[str, float]:
        """Mean loss and parts over the epoch's rows, as `train_<name>`; one device sync, at the end."""
        self.model.train()
        names: list[str] | None = None
        sums: torch.Tensor | None = None
        count = 0
        for batch in batches:
            batch = self.on_device(batch)
            with self._precision():
                loss, parts = self.loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                if self.clip_norm:
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                if self.clip_norm:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            n = batch_len(batch)
            if names is None:
                names = ["loss", *parts]
            values = torch.stack([loss.detach().float(), *(parts[k].detach().float() for k in names[1:])]) * n
            sums = values if sums is None else sums + values
            count += n
        self.count = count
        if sums is None:
            return {}
        means = (sums / max(count, 1)).cpu().tolist()
        return {f"train_{k}": v for k, v in zip(names, means)}
