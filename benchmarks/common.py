"""Shared by the benchmarks: the MovieLens-style text set and a matmul peak probe."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from coldstart.data import movielens
from coldstart.text.templates import TextTemplates, item_texts, user_texts


def movielens_texts(n: int = 20_000, cache_dir=None) -> list[str]:
    """n item and user texts from ml-1m and ml-100k (user texts with 10 and 3 liked titles), cycled to n."""
    pool: list[str] = []
    for name in ("ml-1m", "ml-100k"):
        ds = movielens.load(name, cache_dir)
        for liked in (10, 3):
            templates = TextTemplates(max_liked=liked)
            pool += user_texts(ds.users, ds.interactions, ds.items, templates)["text"].tolist()
        pool += item_texts(ds.items, TextTemplates())["text"].tolist()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pool))
    return [pool[order[i % len(pool)]] for i in range(n)]


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Measured FLOP/s of a size x size matrix product on this machine with the current threads."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def encoder_flops_per_token(config, tokens_per_text: float) -> float:
    """Forward FLOPs per token of a BERT-like encoder: 2 x (non-embedding weights) + attention scores."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights = layers * (4 * h * h + 2 * h * inter)
    attention = layers * 2 * 2 * tokens_per_text * h  # QK^T and AV for one token against the sequence
    return 2 * weights + attention


def table(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows)
    return frame.to_markdown(index=False, floatfmt=".3f") if hasattr(frame, "to_markdown") else frame.to_string()
