"""The pipeline's Ray stages: each trains (or embeds) and hands back models to evaluate.

`coldstart pipeline` runs the core stages itself and these as `cfg.stages`
names them, side by side where one does not read another (`parallel`). Each
stage says what it reads (`needs`, and `after` for what it reads only when the
run makes it), what it writes under OUT (`outputs`) and which configuration its
artifacts depend on (`fingerprint`), so the pipeline can reuse a finished stage
and skip one whose inputs are missing; `load` rebuilds a finished stage's models
from its folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from coldstart import artifacts
from coldstart.config import ConfigError, load_config
from coldstart.content import build_content
from coldstart.evaluate import Recommender, SplitData, evaluate
from coldstart.models.baselines import ContentKNNRecommender
from coldstart.models.coldstart_model import load_cold_model, load_recommender_artifact, save_cold_model
from coldstart.models.mf import EmbeddingRecommender
from coldstart.models.neighbours import EnsembleGenerator, KNNGenerator
from coldstart.models.towers import cold_start_vectors
from coldstart.models.vectors import VectorsRecommender, read_vectors
from coldstart.pipeline import ModelStage, PipelineConfig, config_hash
from coldstart.serving.config import GENERATOR_FOLDERS  # what serving can load, by its folder under OUT
from coldstart.serving.models import SERVING_LOCK, update_serving
from coldstart.text.encoder import ARTIFACT_FILE
from trainers import backbone, distill, distill_encoder, embed, generator

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


# ---- embed -------------------------------------------------------------------------------------------------

def embed_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    result = embed.run(embed.EmbedConfig(**cfg.embed.model_dump(), split=split_dir(data), out=out / "embeddings",
                                         ray=cfg.ray))
    log.info("embedded %s, reused %s (from the vector cache %s) in %.1f s", result.embedded, result.reused,
             result.cached, result.seconds)
    return embed_models(data, cfg, out)


def embed_fingerprint(cfg: PipelineConfig) -> dict:
    """The embed options and the texts they render from OUT/split: a new coldstart that writes a text another
    way (a template change) embeds it again on a rerun, and the stages downstream retrain; unchanged texts
    keep their vectors (the embed job reuses them by text hash)."""
    texts, resolved = embed.build_texts(cfg.out / "split", cfg.embed.templates, announce=False)
    options = cfg.embed.model_dump(mode="json", exclude={"keep_vectors"})  # where vectors come from, not what
    return {"options": options, "resolved": resolved.model_dump(mode="json"),
            "texts": config_hash({kind: list(frame["text_hash"]) for kind, frame in texts.items()})}


def embed_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    folder = out / "embeddings"
    return {
        "content-knn-llm": ContentKNNRecommender(data, aligned_item_vectors(data, folder), name="content-knn-llm"),
        "llm-zero-shot": VectorsRecommender(data, folder, name="llm-zero-shot"),
    }


# ---- the distilled student encoder ----------------------------------------------------------------------------

def encoder_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Distil the embed stage's encoder into a small student (OUT/encoder); serving takes it if it is faithful."""
    teacher = artifacts.read_json(out / "embeddings" / "embed.json")["encoder"]["model"]
    distill_encoder.run(distill_encoder.DistillEncoderConfig(
        **cfg.encoder.model_dump(), teacher=teacher, embeddings=out / "embeddings", out=out / "encoder",
        split=split_dir(data), scale=cfg.scale, ray=cfg.ray))
    return encoder_models(data, cfg, out)


def encoder_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Record which encoder serving uses: the student when its held-out cosine reaches the threshold."""
    cosine = float(artifacts.read_json(out / "encoder" / ARTIFACT_FILE)["val_cosine"])
    choice = "student" if cosine >= cfg.encoder.min_cosine else "teacher"
    update_serving(out, encoder=choice, encoder_cosine=cosine, encoder_threshold=cfg.encoder.min_cosine)
    log.info("serving encoder: %s (student's held-out cosine to the teacher %.4f, threshold %.2f)", choice, cosine,
             cfg.encoder.min_cosine)
    return {}


# ---- backbone and generators --------------------------------------------------------------------------------

def backbone_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    result = backbone.run(backbone.BackboneConfig(**cfg.backbone.model_dump(), split=split_dir(data),
                                                  out=out / "backbone", scale=cfg.scale, ray=cfg.ray))
    log.info("backbone: best epoch %s of %d", result.best["epoch"], len(result.history))
    return backbone_models(data, cfg, out)


def backbone_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    return {"backbone (MF-BPR)": load_model(out / "backbone", data)}


def baselines_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """The bars every cold-start model is judged against: knn-warm (no training, saved as a servable
    generator) and a content-to-backbone regression (the towers trained with alignment alone: an MLP fitted
    with MSE to the warm vectors)."""
    inputs = GeneratorInputs.load(data, out)
    knn = KNNGenerator.fit(item_features=inputs.item_features, user_features=inputs.user_features,
                           item_vectors=inputs.item_vectors, user_vectors=inputs.user_vectors,
                           warm_items=data.warm_items, warm_users=inputs.warm_users,
                           item_dims=inputs.content["text_dim"], k=cfg.knn_k, user_k=cfg.knn_user_k)
    inputs.save(out / "knn-warm", knn)
    result = distill.run(distill.DistillConfig(
        **{**cfg.distill.model_dump(), "bpr": 0.0, "distill": 0.0, "align": 1.0}, split=split_dir(data),
        embeddings=out / "embeddings", backbone=out / "backbone", out=out / "regression", scale=cfg.scale,
        ray=cfg.ray))
    log.info("regression baseline: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return baselines_models(data, cfg, out)


def baselines_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return {"knn-warm": load_model(out / "knn-warm", data),
            "regression (MLP, MSE)": load_model(out / "regression", data)}


class GeneratorInputs:
    """What an untrained generator (knn-warm, an ensemble) is saved with, as the trained ones are."""

    def __init__(self, data: SplitData, out: Path):
        self.data = data
        trained = load_model(out / "backbone", data)  # aligned with this split's ids
        self.user_vectors, self.item_vectors = trained.user_vectors, trained.item_vectors
        self.item_features, self.user_features, _, _, spec = build_content(data, out / "embeddings")
        self.content = spec.to_json()
        self.warm_users = data.train.getnnz(axis=1) > 0

    @classmethod
    def load(cls, data: SplitData, out: Path) -> "GeneratorInputs":
        return cls(data, out)

    def val_metrics(self, model) -> dict[str, float]:
        users, items = cold_start_vectors(model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                                          warm_users=self.warm_users, warm_items=self.data.warm_items,
                                          user_features=self.user_features, item_features=self.item_features)
        val = evaluate(EmbeddingRecommender(users, items), self.data, on="val-select", ks=(20,))
        return {f"{g}_val_ndcg@20": val[g]["ndcg@20"] for g in ("cold", "warm", "all")}

    def cold_val(self, model) -> float:
        return self.val_metrics(model)["cold_val_ndcg@20"]

    def save(self, folder: Path, model) -> None:
        """Save `model` with its cold-val figures, so serving's choice can weigh it with the trained ones."""
        metrics = self.val_metrics(model)
        save_cold_model(folder, self.data, model, user_vectors=self.user_vectors, item_vectors=self.item_vectors,
                        user_features=self.user_features, item_features=self.item_features, content=self.content,
                        meta={"epoch": None, "metrics": metrics, "selected_on": None})


def ensemble_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Generators without training: knn-bag (`KNNGenerator.bag`: knn-warm averaged over neighbour counts and
    similarity spaces, neighbours among items with at least two training interactions), and the mean of the
    generators the run trained (knn-warm, towers, VAE): less variance.

    On a user-cold split, how far new users are pulled towards the average user is chosen on cold-val.
    """
    inputs = GeneratorInputs.load(data, out)
    inputs.save(out / "knn-bag", KNNGenerator.bag(
        item_features=inputs.item_features, user_features=inputs.user_features, item_vectors=inputs.item_vectors,
        user_vectors=inputs.user_vectors, warm_items=data.warm_items, warm_users=inputs.warm_users,
        item_dims=inputs.content["text_dim"], item_counts=data.item_popularity()))
    members = [load_cold_model(out / name)[1] for name in ENSEMBLE_MEMBERS if (out / name / "model.json").is_file()]
    center = inputs.user_vectors[inputs.warm_users].mean(axis=0)
    shrinks = ENSEMBLE_SHRINKS if data.split.cold == "users" else (1.0,)
    scored = {s: inputs.cold_val(EnsembleGenerator.of(members, center, s)) for s in shrinks}
    best = max(scored, key=scored.get)
    log.info("ensemble of %s; new users shrunk by %s (cold-val NDCG@20 %s)", ENSEMBLE_MEMBERS, best, scored)
    inputs.save(out / "ensemble", EnsembleGenerator.of(members, center, best))
    return ensemble_models(data, cfg, out)


ENSEMBLE_SHRINKS = (0.25, 0.5, 0.75, 1.0)


def ensemble_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return {"coldstart (knn-bag)": load_model(out / "knn-bag", data),
            "coldstart (ensemble)": load_model(out / "ensemble", data)}


ENSEMBLE_MEMBERS = ("knn-warm", "distill", "vae")


def ensemble_fingerprint(cfg: PipelineConfig) -> dict:
    """The members as they are now: a retrained member changes the ensemble."""
    found = {}
    for name in ENSEMBLE_MEMBERS:
        meta = cfg.out / name / "model.json"
        found[name] = artifacts.read_json(meta).get("metrics") if meta.is_file() else None
    return found


def distill_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    result = distill.run(distill.DistillConfig(**cfg.distill.model_dump(), split=split_dir(data),
                                               embeddings=out / "embeddings", backbone=out / "backbone",
                                               out=out / "distill", scale=cfg.scale, ray=cfg.ray))
    log.info("distill: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return distill_models(data, cfg, out)


def distill_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return {"coldstart (distilled towers)": load_model(out / "distill", data)}


def vae_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """The VAE generator from `cfg.vae`, or from OUT/tune-vae/best.yaml when a search left one."""
    result = generator.run(generator.GeneratorConfig(**vae_fields(data, cfg, out)))
    log.info("vae: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return vae_models(data, cfg, out)


def vae_fields(data: SplitData, cfg: PipelineConfig, out: Path) -> dict:
    fields = {**cfg.vae.model_dump(), "split": split_dir(data), "embeddings": out / "embeddings",
              "backbone": out / "backbone", "out": out / "vae", "scale": cfg.scale, "ray": cfg.ray}
    best = out / "tune-vae" / "best.yaml"
    if best.is_file():
        tuned = load_config(generator.GeneratorConfig, best)
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
    """Record in OUT/serving.json the generator with the best cold-val NDCG@20 among those the run made."""
    with SERVING_LOCK:
        scores = {}
        for name, folder in GENERATOR_FOLDERS.items():
            model = out / folder / "model.json"
            if model.is_file():
                scores[name] = artifacts.read_json(model)["metrics"]["cold_val_ndcg@20"]
        if not scores:
            return None
        chosen = max(scores, key=scores.get)
        update_serving(out, generator=chosen, **{"cold_val_ndcg@20": scores, "selected_on": "cold_val_ndcg@20"})
    log.info("serving generator: %s (cold-val NDCG@20 %s)", chosen, scores)
    return chosen


def load_model(folder: Path, data: SplitData) -> Recommender:
    return load_recommender_artifact(folder, data)


STAGES = {
    "embed": ModelStage("embed", embed_stage, embed_models, embed_fingerprint, outputs=("embeddings",)),
    "encoder": ModelStage("encoder", encoder_stage, encoder_models, lambda cfg: {"student": cfg.encoder},
                          needs=("embed",), outputs=("encoder",)),
    "backbone": ModelStage("backbone", backbone_stage, backbone_models, lambda cfg: cfg.backbone,
                           outputs=("backbone",)),
    "baselines": ModelStage("baselines", baselines_stage, baselines_models,
                            lambda cfg: {"distill": cfg.distill, "k": [cfg.knn_k, cfg.knn_user_k]},
                            needs=("embed", "backbone"),
                            outputs=("knn-warm", "regression")),
    "ensemble": ModelStage("ensemble", ensemble_stage, ensemble_models, ensemble_fingerprint,
                           needs=("baselines",), outputs=("knn-bag", "ensemble"),
                           after=("distill", "vae", "tune-vae")),
    "distill": ModelStage("distill", distill_stage, distill_models, lambda cfg: cfg.distill,
                          needs=("embed", "backbone"), outputs=("distill",)),
    "vae": ModelStage("vae", vae_stage, vae_models, vae_fingerprint, needs=("embed", "backbone"), outputs=("vae",),
                      after=("tune-vae",)),  # trains the search's winner when the run searches
}


def build_stages(cfg: PipelineConfig, registry: dict | None = None) -> list[ModelStage]:
    """The configured stages in order; a stage that reads another's output must come after it."""
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
