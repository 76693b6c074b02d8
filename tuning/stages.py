"""The pipeline's Tune stages: search, train the winner, and put it (and the fixed settings) in the report."""

from __future__ import annotations

import logging
from pathlib import Path

from coldstart.evaluate import Recommender, SplitData
from coldstart.pipeline import PipelineConfig
from trainers.stages import _load, _needs, choose_generator, split_dir

log = logging.getLogger(__name__)


def _search_options(cfg: PipelineConfig) -> dict:
    return {"budget": cfg.tune.budget, "epochs": cfg.tune.epochs, "seed": cfg.tune.seed}


def tune_vae_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Search the VAE around `cfg.vae`; OUT/tune-vae/best.yaml, and the best config trained in full as OUT/vae."""
    import shutil

    from tuning.search import tune_and_train, tune_config_class

    _needs(out, "tune-vae", ("embeddings", "backbone"))
    cls = tune_config_class("vae")
    summary = tune_and_train("vae", cls(**cfg.vae.model_dump(), split=split_dir(data), embeddings=out / "embeddings",
                                        backbone=out / "backbone", out=out / "tune-vae", scale=cfg.scale,
                                        ray=cfg.ray, search=_search_options(cfg)))
    from coldstart import artifacts

    with artifacts.atomic_dir(out / "vae") as tmp:  # where serving and `vae` look for the generator
        shutil.copytree(summary["model"], tmp, dirs_exist_ok=True)
    choose_generator(out)
    return {"coldstart (VAE generator, tuned)": _load(out / "vae", data)}


def transfer_stage(data: SplitData, cfg: PipelineConfig, out: Path) -> dict[str, Recommender]:
    """Search lam on the target's cold-val NDCG@20; report lam = 0, lam = 1 and the tuned lam."""
    from tuning.search import tune_and_train, tune_config_class

    if data.split.cold != "items":
        log.warning("transfer: skipped; the domains share items, and this split is %s-cold", data.split.cold)
        return {}
    _needs(out, "transfer", ("embeddings",))
    cls = tune_config_class("transfer")
    summary = tune_and_train("transfer", cls(**cfg.transfer.model_dump(), source=cfg.source,
                                             target=split_dir(data), embeddings=out / "embeddings",
                                             out=out / "transfer", cache_dir=cfg.cache_dir, scale=cfg.scale,
                                             ray=cfg.ray, search=_search_options(cfg)))
    folders = {"lam-0": "transfer lam=0", "lam-1": "transfer lam=1", "model": summary["tuned"]}
    return {name: _load(out / "transfer" / folder, data) for folder, name in folders.items()}


STAGES = {"tune-vae": tune_vae_stage, "transfer": transfer_stage}
