"""The pipeline's Ray stages: each trains (or embeds) and hands back models to evaluate.

`coldstart pipeline` runs the core stages itself and these as `cfg.stages`
names them, side by side where one does not read another (`parallel`). Each
stage says what it reads (`needs`, and `after` for what it reads only when the
run makes it), what it writes under OUT (`outputs`) and which configuration its
artifacts depend on (`fingerprint`), so the pipeline can reuse a finished stage
and skip one whose inputs are missing; `load` rebuilds a finished stage's models
from its folders.

Folders, report rows and the ensemble's members are the models' entries in
`coldstart.registry`; a trained generator's own stage is derived from its entry
(`train_stage`), the others are written here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from coldstart import artifacts, registry
from coldstart.config import load_config
from coldstart.evaluate import Recommender, SplitData
from coldstart.models.baselines import ContentKNNRecommender
from coldstart.models.coldstart_model import load_cold_model, load_recommender_artifact
from coldstart.models.inputs import GeneratorInputs
from coldstart.models.neighbours import EnsembleGenerator
from coldstart.models.vectors import VectorsRecommender, read_vectors
from coldstart.pipeline import PipelineConfig
from coldstart.registry import ModelSpec
from coldstart.serving.config import GENERATOR_FOLDERS  # what serving can load, by its folder under OUT
from coldstart.serving.served_models import SERVING_LOCK, update_serving
from coldstart.stages import ModelStage, config_hash
from coldstart.text.encoder import ARTIFACT_FILE
from trainers import backbone, distill, distill_encoder, embed

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
    """Distil the embed stage's encoder into a small student (OUT/encoder), and measure it on what new users
    write as well (`coldstart.text.probe`, kept in its artifact as `probe_cosine`); serving takes it if it is
    faithful on both."""
    from coldstart.content import profile_vectors
    from coldstart.text.encoder import EncoderConfig, TextEncoder
    from coldstart.text.probe import PROBE_TEXTS, probe_cosine

    spec = artifacts.read_json(out / "embeddings" / "embed.json")["encoder"]
    distill_encoder.run(distill_encoder.DistillEncoderConfig(
        **cfg.encoder.model_dump(), teacher=spec["model"], embeddings=out / "embeddings", out=out / "encoder",
        split=split_dir(data), scale=cfg.scale, ray=cfg.ray))
    # the teacher's vectors as profile texts get theirs (kept beside the embeddings; the teacher is loaded only
    # where they are not there yet), the student's from its folder
    teacher = profile_vectors(list(PROBE_TEXTS), out / "embeddings", spec)
    student = TextEncoder(EncoderConfig.model_validate(spec).model_copy(update={
        "model": str((out / "encoder").resolve()), "pooling": "auto", "max_length": None, "device": "auto",
        "dtype": "auto"}))
    record = artifacts.read_json(out / "encoder" / ARTIFACT_FILE)
    record["probe_cosine"] = probe_cosine(np.stack([teacher[t] for t in PROBE_TEXTS]),
                                          student.encode(list(PROBE_TEXTS)))
    artifacts.write_json(out / "encoder" / ARTIFACT_FILE, record)
    return encoder_models(data, cfg, out)


def encoder_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Record which encoder serving uses: the student when its cosine to the teacher reaches the threshold on its
    held-out texts and on what new users write (`probe_cosine`; a student not measured there is not used)."""
    record = artifacts.read_json(out / "encoder" / ARTIFACT_FILE)
    cosine, probe = float(record["val_cosine"]), record.get("probe_cosine")
    faithful = cosine >= cfg.encoder.min_cosine and probe is not None and probe >= cfg.encoder.min_cosine
    choice = "student" if faithful else "teacher"
    update_serving(out, encoder=choice, encoder_cosine=cosine, encoder_probe_cosine=probe,
                   encoder_threshold=cfg.encoder.min_cosine)
    log.info("serving encoder: %s (student's cosine to the teacher %.4f on held-out texts, %s on what new users "
             "write; threshold %.2f)", choice, cosine, "unmeasured" if probe is None else f"{probe:.4f}",
             cfg.encoder.min_cosine)
    return {}


# ---- backbone and the generators without a job of their own ---------------------------------------------------

def backbone_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    result = backbone.run(backbone.BackboneConfig(**cfg.backbone.model_dump(), split=split_dir(data),
                                                  out=out / registry.model("backbone").folder, scale=cfg.scale,
                                                  ray=cfg.ray))
    log.info("backbone: best epoch %s of %d", result.best["epoch"], len(result.history))
    return backbone_models(data, cfg, out)


def backbone_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    return load_rows(data, out, "backbone")


def baselines_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """The bars every cold-start model is judged against: knn-warm (no training, saved as a servable
    generator) and a content-to-backbone regression (the towers trained with alignment alone: an MLP fitted
    with MSE to the warm vectors)."""
    inputs = GeneratorInputs.from_folders(data, out)
    inputs.save(out / registry.model("knn-warm").folder, inputs.knn_warm(cfg.knn_k, cfg.knn_user_k))
    result = distill.run(distill.DistillConfig(
        **{**cfg.distill.model_dump(), "bpr": 0.0, "distill": 0.0, "align": 1.0}, split=split_dir(data),
        embeddings=out / "embeddings", backbone=out / "backbone", out=out / registry.model("regression").folder,
        scale=cfg.scale, ray=cfg.ray))
    log.info("regression baseline: best cold-val epoch %s of %d", result.best["epoch"], len(result.history))
    return baselines_models(data, cfg, out)


def baselines_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return load_rows(data, out, "knn-warm", "regression")


def ensemble_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Generators without a training job: knn-bag (`KNNGenerator.bag`: knn-warm averaged over neighbour counts and
    similarity spaces, neighbours among items with at least two training interactions), knn-residual (knn-bag
    plus a ridge correction learnt on the warm entities in closed form: `coldstart.models.residual`), and the mean of the
    ensemble members (`coldstart.registry`: knn-warm, towers, VAE) the run made: less variance.

    On a user-cold split, how far new users are pulled towards the average user is chosen on cold-val.
    """
    inputs = GeneratorInputs.from_folders(data, out)
    bag = inputs.knn_bag()
    inputs.save(out / registry.model("knn-bag").folder, bag)
    residual = inputs.knn_residual(bag)
    log.info("knn-residual: ridge strength %s (items), %s (users), by cross-validation over warm ones",
             residual.config["item_alpha"], residual.config["user_alpha"])
    inputs.save(out / registry.model("knn-residual").folder, residual)
    made = [spec for spec in registry.ensemble_members() if (out / spec.folder / "model.json").is_file()]
    members = [load_cold_model(out / spec.folder)[1] for spec in made]
    center = inputs.user_vectors[inputs.warm_users].mean(axis=0)
    shrinks = ENSEMBLE_SHRINKS if data.split.cold == "users" else (1.0,)
    scored = {s: inputs.cold_val(EnsembleGenerator.of(members, center, s)) for s in shrinks}
    best = max(scored, key=scored.get)
    log.info("ensemble of %s; new users shrunk by %s (cold-val NDCG@20 %s)", [spec.name for spec in made], best,
             scored)
    inputs.save(out / registry.model("ensemble").folder, EnsembleGenerator.of(members, center, best))
    return ensemble_models(data, cfg, out)


ENSEMBLE_SHRINKS = (0.25, 0.5, 0.75, 1.0)


def ensemble_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    choose_generator(out)
    return load_rows(data, out, "knn-bag", "knn-residual", "ensemble")


def ensemble_fingerprint(cfg: PipelineConfig) -> dict:
    """The members as they are now: a retrained member changes the ensemble."""
    found = {}
    for spec in registry.ensemble_members():
        meta = cfg.out / spec.folder / "model.json"
        found[spec.name] = artifacts.read_json(meta).get("metrics") if meta.is_file() else None
    return found


# ---- a trained generator's own stage, from its registry entry --------------------------------------------------

def train_stage(spec: ModelSpec) -> ModelStage:
    """A trained generator's stage: its trainer's driver on the pipeline's options for it (`cfg.NAME`), or on its
    search's winner (OUT/SEARCH/best.yaml) when a search stage of its own left one, into OUT/FOLDER."""
    searched = spec.search_stage if spec.search_stage != spec.stage else None

    def fields(data: SplitData, cfg: PipelineConfig, out: Path) -> dict:
        options = getattr(cfg, spec.name)
        fields = {**options.model_dump(), "split": split_dir(data), "embeddings": out / "embeddings",
                  "backbone": out / "backbone", "out": out / spec.folder, "scale": cfg.scale, "ray": cfg.ray}
        best = out / searched / "best.yaml" if searched else None
        if best is not None and best.is_file():
            tuned = load_config(spec.config_class(), best)
            fields.update({k: getattr(tuned, k) for k in type(options).model_fields})
            log.info("%s: using the tuned settings of %s", spec.name, best)
        return fields

    def run(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
        result = spec.trainer_module().run(spec.config_class()(**fields(data, cfg, out)))
        log.info("%s: best cold-val epoch %s of %d", spec.name, result.best["epoch"], len(result.history))
        return load(data, cfg, out)

    def load(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
        choose_generator(out)
        return load_rows(data, out, spec.name)

    def fingerprint(cfg: PipelineConfig):
        if searched is None:
            return getattr(cfg, spec.name)
        best = cfg.out / searched / "best.yaml"  # a search's winner, when one exists, decides the settings
        return {spec.name: getattr(cfg, spec.name), "tuned": best.read_text() if best.is_file() else None}

    # After its search, when the run searches: it then trains the winner.
    return ModelStage(spec.stage, run, load, fingerprint, needs=("embed", "backbone"), outputs=(spec.folder,),
                      after=(searched,) if searched else ())


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


def load_rows(data: SplitData, out: Path, *names: str) -> dict[str, Recommender]:
    """The named models' report rows, each loaded from its folder under `out`."""
    return {registry.model(name).row: load_model(out / registry.model(name).folder, data) for name in names}


def stages() -> dict[str, ModelStage]:
    """The stages that train on Ray Train (or embed on Ray Data), by name: those written here, then the own
    stage of each registered trainer that has one (a stage that searches is `tuning.stages`')."""
    ensemble_needs = ("baselines",)
    table = {
        "embed": ModelStage("embed", embed_stage, embed_models, embed_fingerprint, outputs=("embeddings",)),
        "encoder": ModelStage("encoder", encoder_stage, encoder_models, lambda cfg: {"student": cfg.encoder},
                              needs=("embed",), outputs=("encoder",)),
        "backbone": ModelStage("backbone", backbone_stage, backbone_models, lambda cfg: cfg.backbone,
                               outputs=(registry.model("backbone").folder,)),
        "baselines": ModelStage("baselines", baselines_stage, baselines_models,
                                lambda cfg: {"distill": cfg.distill, "k": [cfg.knn_k, cfg.knn_user_k]},
                                needs=("embed", "backbone"),
                                outputs=(registry.model("knn-warm").folder, registry.model("regression").folder)),
        # It waits for the stages that make its members when the run includes them.
        "ensemble": ModelStage("ensemble", ensemble_stage, ensemble_models, ensemble_fingerprint,
                               needs=ensemble_needs,
                               outputs=(registry.model("knn-bag").folder, registry.model("knn-residual").folder,
                                        registry.model("ensemble").folder),
                               after=tuple(s for s in registry.member_stages() if s not in (*ensemble_needs,
                                                                                              "ensemble"))),
    }
    for spec in registry.trained():
        if spec.stage not in table and spec.stage != spec.search_stage:
            table[spec.stage] = train_stage(spec)
    return table
