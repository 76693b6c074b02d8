"""Self-describing model artifacts: constructor arguments in JSON, tensors in safetensors.

A folder holds `model.json` ({"kind": ..., "config": {...}, ...}) and
`weights.safetensors`. Serving and evaluation rebuild a model from the folder
alone, never from a training config; nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from coldstart import artifacts
from coldstart.data.schema import DataError

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


def save_artifact(folder: str | Path, kind: str, meta: dict, tensors: dict[str, torch.Tensor | np.ndarray]) -> Path:
    with artifacts.atomic_dir(folder) as tmp:
        save_file({k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in tensors.items()},
                  str(tmp / WEIGHTS_FILE))
        artifacts.write_json(tmp / MODEL_FILE, {"kind": kind, **meta})
    return Path(folder)


def load_artifact(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file():
        raise DataError(f"not a model artifact (no {MODEL_FILE})", file=folder)
    return artifacts.read_json(folder / MODEL_FILE), load_file(str(folder / WEIGHTS_FILE))


def is_artifact(folder: str | Path) -> bool:
    return (Path(folder) / MODEL_FILE).is_file()
