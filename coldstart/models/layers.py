"""Layers the models share."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """`nn.Dropout` with its CPU mask drawn by `torch.rand` rather than `bernoulli_`, which is slower on CPU
    (the retired `benchmarks/cold_model_steps.py` timed both: RESULTS.md); the same inverted dropout: each element kept with
    probability 1 - p and scaled by 1 / (1 - p). On other devices, and in evaluation, it is `nn.Dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        keep = torch.rand_like(x) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))
