"""Models: baselines, vector models, and (later) trained towers and generators.

`load_recommender(spec, data)` turns what a user names on the command line
into a scorer: a baseline name, a trained model artifact, or a folder of
precomputed vectors.
"""

from __future__ import annotations

from pathlib import Path

from coldstart.data.schema import DataError
from coldstart.evaluate import SplitData
from coldstart.models.saved import is_artifact
from coldstart.models.baselines import BASELINES
from coldstart.models.coldstart_model import load_recommender_artifact
from coldstart.models.vectors import VectorsRecommender


def load_recommender(spec: str, data: SplitData, *, seed: int = 0):
    if spec in BASELINES:
        cls = BASELINES[spec]
        return cls(data, seed=seed) if spec == "random" else cls(data)
    path = Path(spec)
    if is_artifact(path):
        return load_recommender_artifact(path, data)
    if path.is_dir():
        return VectorsRecommender(data, path)
    raise DataError(f"'{spec}' is neither a baseline ({', '.join(BASELINES)}) nor a model folder", file=spec)
