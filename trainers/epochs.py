"""Epoch bookkeeping of the training skeleton (`trainers.loop`): the checkpoint's files, early stopping, the
sampler that shards an epoch across ranks, and the reduction of figures across them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

LAST_WEIGHTS = "last.safetensors"
OPTIMIZER = "optimizer.pt"
SCALER = "scaler.pt"  # fp16's loss scale and its growth bookkeeping
STATE = "state.json"
BEST = "best"


class EarlyStopping:
    """Epoch bookkeeping that travels in every checkpoint: history, best epoch, patience, restarts."""

    def __init__(self, key: str, patience: int, state: dict | None = None):
        self.key, self.patience = key, patience
        self.state = state or {"epoch": -1, "history": [], "best": None, "since_best": 0, "restarts": 0}

    @classmethod
    def resumed(cls, key: str, patience: int, path: Path) -> "EarlyStopping":
        state = json.loads(Path(path).read_text())
        state["restarts"] = state.get("restarts", 0) + 1
        return cls(key, patience, state)

    @property
    def next_epoch(self) -> int:
        return self.state["epoch"] + 1

    @property
    def best(self) -> dict | None:
        return self.state["best"]

    @property
    def history(self) -> list[dict]:
        return self.state["history"]

    def update(self, report: dict) -> bool:
        """Record an epoch; True when it is the best so far on `key`."""
        state = self.state
        state["history"].append(report)
        state["epoch"] = report["epoch"]
        improved = state["best"] is None or report[self.key] > state["best"][self.key]
        state["best"], state["since_best"] = (report, 0) if improved else (state["best"], state["since_best"] + 1)
        return improved

    @property
    def should_stop(self) -> bool:
        return self.state["since_best"] >= self.patience

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.state))

    @classmethod
    def stops_before_best(cls, scores: list[float], patience: int) -> bool:
        """Whether a run with `patience` would stop before the best of `scores` (a Tune trial's epochs, run
        without patience): these very rules replayed, so Tune and the skeleton never count apart."""
        stopping, best = cls("score", patience), int(np.argmax(scores))
        for epoch, score in enumerate(scores):
            stopping.update({"epoch": epoch, "score": score})
            if stopping.should_stop:
                return epoch < best
        return False


def epoch_shard(n: int, *, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's rows of an epoch: one permutation of range(n) drawn from (seed, epoch), the same on every
    rank, padded by wrapping round to a multiple of `world` and cut into `world` equal slices. Every row is in
    exactly one slice, but for the fewer than `world` that the padding repeats; every rank gets
    ceil(n / world) rows, so all step the same number of batches (DDP waits for the slowest)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per = -(-n // world)
    return np.resize(order, per * world)[rank * per:(rank + 1) * per] if n else order


def per_worker(batch_size: int, world: int) -> int:
    """Each rank's share of a step's rows: a job's batch size means the same whatever the workers."""
    return max(1, batch_size // world)


def reduce_mean(values: dict[str, float], weight: float, device: torch.device) -> tuple[dict[str, float], float]:
    """Weighted mean of per-rank figures across the torch.distributed group, and the total weight.

    The tensor lives on `device`: NCCL reduces only CUDA tensors. Identity on one process.
    """
    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    t = t.cpu()
    total = float(t[-1])
    return {k: float(t[i] / max(total, 1e-12)) for i, k in enumerate(keys)}, total
