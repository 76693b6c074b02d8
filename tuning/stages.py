"""The pipeline's Tune stages: search, train the winner, and put it (and the fixed settings) in the report.

A model whose registry entry has a search of its own stage (`coldstart.registry.Search.stage`, tune-NAME by
default) gets `search_stage`: the search around the pipeline's options for it, the winner copied to the
model's folder, where its own stage would train it. Transfer's stage is itself a search, with its source and
its servable generator: it is written here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from coldstart import artifacts, registry
from coldstart.config import NotApplicable
from coldstart.data import movielens
from coldstart.evaluate import Recommender, SplitData
from coldstart.models.coldstart_model import save_cold_model
from coldstart.models.inputs import GeneratorInputs
from coldstart.models.transfer import TransferGenerator, TransferModel, fit_projection
from coldstart.pipeline import PipelineConfig
from coldstart.registry import ModelSpec
from coldstart.report import SOURCE_MARK
from coldstart.serving.evidence import cold_item_shares, item_interval
from coldstart.stages import ModelStage, StageSkipped
from trainers.stages import choose_generator, load_model, split_dir
from trainers.transfer import load_transfer_state
from tuning.jobs import tune_and_train, tune_config_class

log = logging.getLogger(__name__)

# A model that learns a target-cold item from the source's interactions on the same title sees what no
# single-domain method can: its report row says so (`coldstart.report.SOURCE_MARK`).
TRANSFER_ROWS = {"lam-0": "transfer lam=0", "lam-1": f"transfer lam=1 {SOURCE_MARK}"}


def _search_options(cfg: PipelineConfig) -> dict:
    return {"budget": cfg.tune.budget, "epochs": cfg.tune.epochs, "seed": cfg.tune.seed}


def search_stage(spec: ModelSpec) -> ModelStage:
    """Search the model around `cfg.NAME`: OUT/SEARCH/best.yaml, and the best config trained in full, copied to
    OUT/FOLDER (where serving and the model's own stage look for it)."""
    name = spec.search_stage

    def run(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
        cls = tune_config_class(spec.name)
        summary = tune_and_train(spec.name, cls(**getattr(cfg, spec.name).model_dump(), split=split_dir(data),
                                                embeddings=out / "embeddings", backbone=out / "backbone",
                                                out=out / name, scale=cfg.scale, ray=cfg.ray,
                                                search=_search_options(cfg)))
        with artifacts.atomic_dir(out / spec.folder) as tmp:
            shutil.copytree(summary["model"], tmp, dirs_exist_ok=True)
        return load(data, cfg, out)

    def load(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
        choose_generator(out)
        return {spec.tuned_row: load_model(out / spec.folder, data)}

    return ModelStage(name, run, load, lambda cfg: {spec.name: getattr(cfg, spec.name), "tune": cfg.tune},
                      needs=("embed", "backbone"), outputs=(name, spec.folder))


def resolve_source(data: SplitData, cfg: PipelineConfig) -> str | None:
    """The transfer source: the one given, else ml-1m for a MovieLens-100K target, else none."""
    if cfg.source:
        return cfg.source
    if data.split.info.get("dataset") == "ml-100k":
        return "ml-1m"
    return None


def transfer_applies(data: SplitData, cfg: PipelineConfig) -> str | None:
    if data.split.cold != "items":
        return (f"transfer places new items (a source domain shares items with the target, not users); this split's "
                f"cold side is {data.split.cold}")
    if resolve_source(data, cfg) is None:
        return ("no source dataset: transfer runs by default only on an ml-100k target (from ml-1m); "
                "give --source (a MovieLens name or a dataset folder) to run it")
    source = resolve_source(data, cfg)
    if source in movielens.SOURCES and source == data.split.info.get("dataset"):
        return f"the source {source} is the target's own dataset"
    return None


def transfer_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Search lam on the target's cold-val NDCG@20; report lam = 0, lam = 1 and the tuned lam."""
    cls = tune_config_class("transfer")
    try:
        tune_and_train("transfer", cls(**cfg.transfer.model_dump(), source=resolve_source(data, cfg),
                                       target=split_dir(data), embeddings=out / "embeddings",
                                       out=out / "transfer", cache_dir=cfg.cache_dir, scale=cfg.scale, ray=cfg.ray,
                                       search=_search_options(cfg)))
    except NotApplicable as exc:  # no item in common: nothing to transfer, not a fault
        raise StageSkipped(str(exc)) from None
    return transfer_models(data, cfg, out)


def save_transfer_generator(data: SplitData, cfg: PipelineConfig, out: Path) -> Path:
    """OUT/transfer/generator: the tuned transfer model as a servable generator (`TransferGenerator`) in the
    backbone's space: warm users and items keep their backbone vectors, and the cold items' vectors transfer
    learnt, and those it generates for new items, are carried there by a linear map fitted on the warm items
    (`fit_projection`). Saved with the cold-val figures it was selected on.

    A new title the source never saw gets knn-bag's vector, the steadiest placement from content alone,
    unless the tower places the split's cold items better beyond noise
    from their content alone: on val's audit half (which neither was selected on), the lower end of the paired
    bootstrap interval over its items above 0 (`item_interval`). The figures go in the artifact
    (`unknown_titles`). Not serving's default, knn-residual: its vectors, nearer old items' scale, rank among
    the items the source taught and pushed those down on the demo's val-audit (transfer 0.2465 -> 0.2384),
    and transfer was then no longer served (benchmarks/HISTORY.md, the knn-residual section)."""
    meta = artifacts.read_json(out / "transfer" / "model" / "model.json")
    model = TransferModel(**meta["config"])
    model.load_state_dict(load_transfer_state(out / "transfer" / "model"))
    learnt = load_model(out / "transfer" / "model", data)  # its vectors in this split's order
    inputs = GeneratorInputs.from_folders(data, out)  # the backbone's vectors and the content features
    warm = data.warm_items
    projection = fit_projection(learnt.item_vectors[warm], inputs.item_vectors[warm])
    item_vectors = np.where(warm[:, None], inputs.item_vectors, learnt.item_vectors @ projection)

    def generator(**mine) -> TransferGenerator:
        return TransferGenerator.of(model, user_features=inputs.user_features, user_vectors=inputs.user_vectors,
                                    warm_users=inputs.warm_users, user_k=cfg.knn_user_k, projection=projection, **mine)

    # the split's cold items placed as titles the source never saw: from their content alone
    made = {"tower": None, "knn-bag": inputs.knn_bag()}
    placed = {name: inputs.vectors(generator(unknown=unknown)) for name, unknown in made.items()}
    shares = {name: cold_item_shares(*vectors, data, "val-audit") for name, vectors in placed.items()}
    audit = {name: float(sum(s.values())) for name, s in shares.items()}
    # reported beside the choice, not chosen on: what each gives the test set's new titles
    test = {name: float(sum(cold_item_shares(*vectors, data, "test").values())) for name, vectors in placed.items()}
    interval = item_interval(shares["tower"], shares["knn-bag"])
    chosen = "tower" if interval[0] > 0 else "knn-bag"
    log.info("transfer: a title the source never saw gets %s's vector (cold NDCG@20 from content alone on "
             "val-audit: %s; tower minus knn-bag %s)", chosen, audit, interval)
    row_keys = meta.get("row_keys")  # none in a run from before they were recorded: its cold items keep theirs
    served = generator(row_keys=row_keys, unknown=made[chosen])
    if row_keys:  # each cold item as its registration is placed: what the source taught it, or not
        cold = np.flatnonzero(~warm)
        with torch.no_grad():
            item_vectors[cold] = served.generate_items(torch.as_tensor(inputs.item_features[cold]),
                                                       keys=[row_keys[i] for i in cold]).numpy()
    return save_cold_model(out / registry.model("transfer").folder, data, served,
                           user_vectors=inputs.user_vectors, item_vectors=item_vectors.astype(np.float32),
                           user_features=inputs.user_features,
                           item_features=inputs.item_features, content=inputs.content,
                           meta={"epoch": meta.get("epoch"), "metrics": meta["metrics"],
                                 "selected_on": meta.get("selected_on"), "lam": meta["lam"],
                                 "unknown_titles": {"generator": chosen, "cold_val-audit_ndcg@20": audit,
                                                    "tower_minus_knn-bag": interval, "cold_test_ndcg@20": test}},
                           placed_items=np.ones(data.n_items, bool))


def transfer_models(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    generator = out / registry.model("transfer").folder / "model.json"
    # a run from before it was servable, or from before it served in the backbone's space
    if not generator.is_file() or not artifacts.read_json(generator)["config"].get("project_dim"):
        save_transfer_generator(data, cfg, out)
    choose_generator(out)
    tuned = artifacts.read_json(out / "transfer" / "comparison.json")["tuned"]
    lam = artifacts.read_json(out / "transfer" / "model" / "model.json")["lam"]
    rows = {**TRANSFER_ROWS, "model": f"{tuned} {SOURCE_MARK}" if lam > 0 else tuned}
    return {name: load_model(out / "transfer" / folder, data) for folder, name in rows.items()}


def stages() -> dict[str, ModelStage]:
    """The stages that search, by name: transfer's, then the search stage of each registered model that has one
    beside its own stage."""
    table = {"transfer": ModelStage("transfer", transfer_stage, transfer_models,
                                    lambda cfg: {"transfer": cfg.transfer, "source": cfg.source, "tune": cfg.tune},
                                    needs=("embed",), outputs=("transfer",), applies=transfer_applies)}
    for spec in registry.searchable():
        if spec.search_stage not in table and spec.search_stage != spec.stage:
            table[spec.search_stage] = search_stage(spec)
    return table
