"""The pipeline's Ray stages: each trains (or embeds) and hands back models to evaluate.

`coldstart pipeline` runs the core stages itself and these in the order
`cfg.stages` names them. Each stage says what it reads (`needs`), what it
writes under OUT (`outputs`) and which configuration its artifacts depend on
(`fingerprint`), so the pipeline can reuse a finished stage and skip one whose
inputs are missing; `load` rebuilds a finished stage's models from its folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from coldstart import artifacts
from coldstart.evaluate import Recommender, SplitData
from coldstart.models.baselines import ContentKNNRecommender
from coldstart.models.vectors import VectorsRecommender, read_vectors
from coldstart.pipeline import ModelStage, PipelineConfig

log = logging.getLogger(__name__)

SERVING = "serving.json"


def split_dir(data: SplitData) -> Path:
    return Path(data.split.info["path"])


def aligned_item_vectors(data: SplitData, folder: Path) -> np.ndarray:
    """LLM item vectors in `data`'s item order; an item without one gets zeros."""
    ids, matrix = read_vectors(folder / "items.parquet", "item_id")
    pos = ids.get_indexer(data.item_ids)
    out = np.zeros((data.n_items, matrix.shape[1]), np.float32)
    out[pos >= 0] = matrix[pos[pos >= 0]]
    return out


def update_serving(out: Path, **fields) -> dict:
    """Merge `fields` into OUT/serving.json (the generator and encoder serving uses) and return it."""
    path = out / SERVING
    current = artifacts.read_json(path) if path.is_file() else {}
    current.update(fields)
    artifacts.write_json(path, current)
    return current


# ---- embed -------------------------------------------------------------------------------------------------

def embed_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    from trainers.embed import EmbedConfig, run

    result = run(EmbedConfig(**cfg.embed.model_dump(), split=split_dir(data), out=out / "embeddings", ray=cfg.ray))
    log.info("embedded %s, reused %s in %.1f s", result.embedded, result.reused, result.seconds)
    return embed_models(data, cfg, out)


def embed_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    folder = out / "embeddings"
    return {
        "content-knn-llm": ContentKNNRecommender(data, aligned_item_vectors(data, folder), name="content-knn-llm"),
        "llm-zero-shot": VectorsRecommender(data, folder, name="llm-zero-shot"),
    }


# ---- the distilled student encoder ----------------------------------------------------------------------------

def encoder_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Distil the embed stage's encoder into a small student (OUT/encoder); serving takes it if it is faithful."""
    from trainers.distill_encoder import DistillEncoderConfig, run

    teacher = artifacts.read_json(out / "embeddings" / "embed.json")["encoder"]["model"]
    run(DistillEncoderConfig(**cfg.encoder.model_dump(), teacher=teacher, embeddings=out / "embeddings",
                             out=out / "encoder", split=split_dir(data), scale=cfg.scale, ray=cfg.ray))
    return encoder_models(data, cfg, out)


def encoder_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Record which encoder serving uses: the student when its held-out cosine reaches the threshold."""
    from coldstart.text.encoder import ARTIFACT_FILE

    cosine = float(artifacts.read_json(out / "encoder" / ARTIFACT_FILE)["val_cosine"])
    choice = "student" if cosine >= cfg.encoder.min_cosine else "teacher"
    update_serving(out, encoder=choice, encoder_cosine=cosine, encoder_threshold=cfg.encoder.min_cosine)
    log.info("serving encoder: %s (student's held-out cosine to the teacher %.4f, threshold %.2f)", choice, cosine,
             cfg.encoder.min_cosine)
    return {}


# ---- backbone and generators --------------------------------------------------------------------------------

def backbone_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    from trainers.backbone import BackboneConfig, run

    result = run(BackboneConfig(**cfg.backbone.model_dump(), split=split_dir(data), out=out / "backbone",
                                scale=cfg.scale, ray=cfg.ray))
    log.info("backbone: best epoch %s of %d", result.best["epoch"], len(result.history))
    return backbone_models(data, cfg, out)


def backbone_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    return {"backbone (MF-BPR)": load_model(out / "backbone", data)}


def distill_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    from trainers.distill import DistillConfig, run

    result = run(DistillConfig(**cfg.distill.model_dump(), split=split_dir(data), embeddings=out / "embeddings",
                               backbone=out / "backbone", out=out / "distill", scale=cfg.scale, ray=cfg.ray))
    log.info("distill: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return distill_models(data, cfg, out)


def distill_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return {"coldstart (distilled towers)": load_model(out / "distill", data)}


def vae_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """The VAE generator from `cfg.vae`, or from OUT/tune-vae/best.yaml when a search left one."""
    from trainers.generator import GeneratorConfig, run

    result = run(GeneratorConfig(**vae_fields(data, cfg, out)))
    log.info("vae: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return vae_models(data, cfg, out)


def vae_fields(data: SplitData, cfg: PipelineConfig, out: Path) -> dict:
    from coldstart.config import load_config
    from trainers.generator import GeneratorConfig

    fields = {**cfg.vae.model_dump(), "split": split_dir(data), "embeddings": out / "embeddings",
              "backbone": out / "backbone", "out": out / "vae", "scale": cfg.scale, "ray": cfg.ray}
    best = out / "tune-vae" / "best.yaml"
    if best.is_file():
        tuned = load_config(GeneratorConfig, best)
        fields.update({k: getattr(tuned, k) for k in type(cfg.vae).model_fields})
        log.info("vae: using the tuned settings of %s", best)
    return fields


def vae_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return {"coldstart (VAE generator)": load_model(out / "vae", data)}


def vae_fingerprint(cfg: PipelineConfig) -> dict:
    best = cfg.out / "tune-vae" / "best.yaml"  # a search's winner, when one exists, decides the settings
    return {"vae": cfg.vae, "tuned": best.read_text() if best.is_file() else None}


def choose_generator(out: Path) -> str | None:
    """Record in OUT/serving.json the generator (distill or vae) with the better cold-val NDCG@20."""
    scores = {}
    for name in ("distill", "vae"):
        model = out / name / "model.json"
        if model.is_file():
            scores[name] = artifacts.read_json(model)["metrics"]["cold_val_ndcg@20"]
    if not scores:
        return None
    chosen = max(scores, key=scores.get)
    update_serving(out, generator=chosen, **{"cold_val_ndcg@20": scores, "selected_on": "cold_val_ndcg@20"})
    log.info("serving generator: %s (cold-val NDCG@20 %s)", chosen, scores)
    return chosen


def load_model(folder: Path, data: SplitData) -> Recommender:
    from coldstart.models.coldstart_model import load_recommender_artifact

    return load_recommender_artifact(folder, data)


STAGES = {
    "embed": ModelStage("embed", embed_stage, embed_models, lambda cfg: cfg.embed, outputs=("embeddings",)),
    "encoder": ModelStage("encoder", encoder_stage, encoder_models, lambda cfg: {"student": cfg.encoder},
                          needs=("embed",), outputs=("encoder",)),
    "backbone": ModelStage("backbone", backbone_stage, backbone_models, lambda cfg: cfg.backbone,
                           outputs=("backbone",)),
    "distill": ModelStage("distill", distill_stage, distill_models, lambda cfg: cfg.distill,
                          needs=("embed", "backbone"), outputs=("distill",)),
    "vae": ModelStage("vae", vae_stage, vae_models, vae_fingerprint, needs=("embed", "backbone"), outputs=("vae",)),
}


def build_stages(cfg: PipelineConfig, registry: dict | None = None) -> list[ModelStage]:
    """The configured stages in order; a stage that reads another's output must come after it."""
    from coldstart.config import ConfigError

    registry = registry or STAGES
    unknown = [s for s in cfg.stages if s not in registry]
    if unknown:
        raise ConfigError(f"stages: unknown stage(s) {unknown}; known: {list(registry)}")
    stages = [registry[name] for name in cfg.stages]
    for position, stage in enumerate(stages):
        late = [need for need in stage.needs if need in cfg.stages[position:]]
        if late:
            raise ConfigError(f"stages: {stage.name} reads what {', '.join(late)} writes; put it after them")
    return stages
