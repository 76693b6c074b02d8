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

    _needs(out, "distill", ("embeddings", "backbone"))
    result = run(DistillConfig(**cfg.distill.model_dump(), split=split_dir(data), embeddings=out / "embeddings",
                               backbone=out / "backbone", out=out / "distill", scale=cfg.scale, ray=cfg.ray))
    log.info("distill: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    choose_generator(out)
    return {"coldstart (distilled towers)": load_recommender_artifact(result.out, data)}


def vae_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """The VAE generator from `cfg.vae`, or from OUT/tune-vae/best.yaml when a search left one."""
    from coldstart.config import load_config
    from trainers.generator import GeneratorConfig, run

    _needs(out, "vae", ("embeddings", "backbone"))
    fields = {**cfg.vae.model_dump(), "split": split_dir(data), "embeddings": out / "embeddings",
              "backbone": out / "backbone", "out": out / "vae", "scale": cfg.scale, "ray": cfg.ray}
    best = out / "tune-vae" / "best.yaml"
    if best.is_file():
        tuned = load_config(GeneratorConfig, best)
        fields.update({k: getattr(tuned, k) for k in type(cfg.vae).model_fields})
        log.info("vae: using the tuned settings of %s", best)
    result = run(GeneratorConfig(**fields))
    log.info("vae: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    choose_generator(out)
    return {"coldstart (VAE generator)": _load(result.out, data)}


def choose_generator(out: Path) -> str | None:
    """Write OUT/serving.json: the generator (distill or vae) with the better cold-val NDCG@20; serving reads it."""
    from coldstart import artifacts

    scores = {}
    for name in ("distill", "vae"):
        model = out / name / "model.json"
        if model.is_file():
            scores[name] = artifacts.read_json(model)["metrics"]["cold_val_ndcg@20"]
    if not scores:
        return None
    chosen = max(scores, key=scores.get)
    artifacts.write_json(out / "serving.json", {"generator": chosen, "cold_val_ndcg@20": scores,
                                                "selected_on": "cold_val_ndcg@20"})
    log.info("serving generator: %s (cold-val NDCG@20 %s)", chosen, scores)
    return chosen


def _needs(out: Path, stage: str, needed: tuple[str, ...]) -> None:
    for folder in needed:
        if not (out / folder).is_dir():
            from coldstart.config import ConfigError

            raise ConfigError(f"stages: {stage} needs the {folder} stage before it (no {out / folder})")


def _load(folder: Path, data: SplitData) -> Recommender:
    from coldstart.models.coldstart_model import load_recommender_artifact

    return load_recommender_artifact(folder, data)


STAGES = {"embed": embed_stage, "backbone": backbone_stage, "distill": distill_stage, "vae": vae_stage}


def build_stages(cfg: PipelineConfig, registry: dict | None = None) -> list[ModelStage]:
    registry = registry or STAGES
    unknown = [s for s in cfg.stages if s not in registry]
    if unknown:
        from coldstart.config import ConfigError

        raise ConfigError(f"stages: unknown stage(s) {unknown}; known: {list(registry)}")
    return [ModelStage(name, registry[name]) for name in cfg.stages]
