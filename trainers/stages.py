"""The pipeline's Ray stages: each trains (or embeds) and hands back models to evaluate.

`coldstart pipeline` runs the core stages itself and these in the order
`cfg.stages` names them; a stage can use what an earlier one left in `out/`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from coldstart.evaluate import Recommender, SplitData
from coldstart.models.baselines import ContentKNNRecommender
from coldstart.models.vectors import VectorsRecommender, read_vectors
from coldstart.pipeline import ModelStage, PipelineConfig

log = logging.getLogger(__name__)


def split_dir(data: SplitData) -> Path:
    return Path(data.split.info["path"])


def aligned_item_vectors(data: SplitData, folder: Path) -> np.ndarray:
    """LLM item vectors in `data`'s item order; an item without one gets zeros."""
    ids, matrix = read_vectors(folder / "items.parquet", "item_id")
    pos = ids.get_indexer(data.item_ids)
    out = np.zeros((data.n_items, matrix.shape[1]), np.float32)
    out[pos >= 0] = matrix[pos[pos >= 0]]
    return out


def embed_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    from trainers.embed import EmbedConfig, run

    folder = out / "embeddings"
    result = run(EmbedConfig(**cfg.embed.model_dump(), split=split_dir(data), out=folder, ray=cfg.ray))
    log.info("embedded %s, reused %s in %.1f s", result.embedded, result.reused, result.seconds)
    return {
        "content-knn-llm": ContentKNNRecommender(data, aligned_item_vectors(data, folder), name="content-knn-llm"),
        "llm-zero-shot": VectorsRecommender(data, folder, name="llm-zero-shot"),
    }


def backbone_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    from coldstart.models.coldstart_model import load_recommender_artifact
    from trainers.backbone import BackboneConfig, run

    result = run(BackboneConfig(**cfg.backbone.model_dump(), split=split_dir(data), out=out / "backbone",
                                scale=cfg.scale, ray=cfg.ray))
    log.info("backbone: best epoch %s of %d", result.best["epoch"], len(result.history))
    return {"backbone (MF-BPR)": load_recommender_artifact(result.out, data)}


def distill_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    from coldstart.models.coldstart_model import load_recommender_artifact
    from trainers.distill import DistillConfig, run

    for needed in ("embeddings", "backbone"):
        if not (out / needed).is_dir():
            from coldstart.config import ConfigError

            raise ConfigError(f"stages: distill needs the {needed} stage before it (no {out / needed})")
    result = run(DistillConfig(**cfg.distill.model_dump(), split=split_dir(data), embeddings=out / "embeddings",
                               backbone=out / "backbone", out=out / "distill", scale=cfg.scale, ray=cfg.ray))
    log.info("distill: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return {"coldstart (distilled towers)": load_recommender_artifact(result.out, data)}


STAGES = {"embed": embed_stage, "backbone": backbone_stage, "distill": distill_stage}


def build_stages(cfg: PipelineConfig) -> list[ModelStage]:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        from coldstart.config import ConfigError

        raise ConfigError(f"stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
    return [ModelStage(name, STAGES[name]) for name in cfg.stages]
