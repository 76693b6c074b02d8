"""The main job: fetch, split, train and evaluate every model the project has, and report.

The core stages (data, baselines, evaluation, report) live here and need no
Ray. Stages that train on Ray are passed in by the CLI as `ModelStage`s, so
this module never imports `trainers/` and every later model joins the same
report by adding one stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coldstart import artifacts
from coldstart.config import JobConfig, RayOptions, ScaleOptions, to_yaml
from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import Recommender, SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.models.mf import BackboneOptions
from coldstart.models.towers import TowerOptions
from coldstart.models.transfer import TransferOptions
from coldstart.models.vae import VAEOptions
from coldstart.report import markdown_table, write_report
from coldstart.text import EmbedOptions

log = logging.getLogger(__name__)


class TuneBudget(BaseModel):
    """The pipeline's share of a search's settings (the rest are `coldstart tune`'s defaults)."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(8, gt=0, description="Trials per search.")
    epochs: int | None = Field(None, gt=0, description="Most epochs per trial (default: the job's epochs).")
    seed: int = Field(0, description="Seed of the Optuna sampler.")


class PipelineConfig(JobConfig):
    dataset: str | None = Field("ml-100k", description="A MovieLens name (ml-100k, ml-1m) or a dataset folder.")
    split: Path | None = Field(None, description="A ready split folder (ours or your own); skips fetch and split.")
    out: Path = Field(Path("out/pipeline"), description="Folder for the split, models and report.")
    cold: Literal["items", "users"] = Field("items", description="Which side is cold when splitting.")
    seed: int = Field(42, description="Seed of the split and of every model.")
    seeds: list[int] | None = Field(None, description="Several seeds: one full run each (OUT/seed-N), and a "
                                                       "summary with mean and std over them.")
    report_on: Literal["test", "val"] = Field("test", description="Report on the test sets or the val sets.")
    cache_dir: Path | None = Field(None, description="Dataset cache (default $COLDSTART_CACHE or ~/.cache/coldstart).")
    baselines: list[str] = Field(["random", "popularity", "content-knn"], description="Baselines to report.")
    ks: list[int] = Field([10, 20], description="Cut-offs of the ranking metrics.")
    stages: list[str] = Field(["embed", "backbone", "distill", "tune-vae", "transfer"],
                              description="Ray stages to run after the baselines, in order.")
    embed: EmbedOptions = Field(default_factory=EmbedOptions, description="The LLM embedding stage.")
    backbone: BackboneOptions = Field(default_factory=BackboneOptions, description="The warm backbone.")
    distill: TowerOptions = Field(default_factory=TowerOptions, description="The student towers.")
    vae: VAEOptions = Field(default_factory=VAEOptions, description="The conditional-VAE generator (stage vae; "
                                                                    "tune-vae searches around it).")
    transfer: TransferOptions = Field(default_factory=TransferOptions,
                                      description="Transfer from `source` (stage transfer searches lam around it).")
    source: str = Field("ml-1m", description="Source dataset of the transfer stage (a MovieLens name or a folder).")
    tune: TuneBudget = Field(default_factory=lambda: TuneBudget(),
                             description="Ray Tune searches of the tune-vae and transfer stages.")
    scale: ScaleOptions = Field(default_factory=ScaleOptions, description="Workers of the Ray Train stages.")
    ray: RayOptions = Field(default_factory=RayOptions, description="Cluster connection of the Ray stages.")

    @model_validator(mode="after")
    def _needs_data(self):
        if self.split is None and not self.dataset:
            raise ValueError("give a dataset or a split")
        if not self.ks or any(k <= 0 for k in self.ks):
            raise ValueError(f"ks must be positive cut-offs, got {self.ks}")
        return self


@dataclass
class ModelStage:
    """A stage that trains (or loads) one or more models: name -> recommender over `data`."""

    name: str
    run: Callable[[SplitData, PipelineConfig, Path], dict[str, Recommender]]


def prepare_split(cfg: PipelineConfig, progress: Callable[[str], None] = print) -> Path:
    """Fetch and split as configured; return the split folder (unchanged for a given split)."""
    if cfg.split is not None:
        return cfg.split
    dataset = cfg.dataset
    if dataset in movielens.SOURCES:
        progress(f"fetch {dataset}")
        folder = movielens.fetch(dataset, cfg.cache_dir)
        ds = load_dataset(folder, name=dataset)
    else:
        ds = load_dataset(dataset)
    progress(f"split {ds.name}: cold {cfg.cold}, seed {cfg.seed}")
    return save_split(make_split(ds, cfg.cold, cfg.seed), cfg.out / "split")


def run_pipeline(cfg: PipelineConfig, stages: list[ModelStage] | None = None,
                 progress: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every stage and write `out/report`; returns {model: evaluate JSON}.

    With `seeds`, one run per seed in OUT/seed-N, then OUT/report/summary.md and
    summary.json with mean and std per model, group and metric.
    """
    if cfg.seeds and len(cfg.seeds) > 1:
        if cfg.split is not None:
            from coldstart.config import ConfigError

            raise ConfigError("seeds: a given split has one seed; give a dataset to draw one split per seed")
        runs = {}
        for seed in cfg.seeds:
            progress(f"seed {seed}")
            runs[seed] = run_pipeline(cfg.model_copy(update={"seed": seed, "seeds": None,
                                                             "out": cfg.out / f"seed-{seed}"}), stages, progress)
        summary = summarize(runs)
        artifacts.write_json(cfg.out / "report" / "summary.json", summary)
        artifacts.write_text(cfg.out / "report" / "summary.md", summary_table(summary, cfg.seeds))
        progress("summary over seeds " + ", ".join(map(str, cfg.seeds)) + "\n\n" + summary_table(summary, cfg.seeds))
        return summary
    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(cfg.out / "pipeline.yaml", to_yaml(cfg))
    split_dir = prepare_split(cfg, progress)
    split = load_split(split_dir)
    counts = split.info["counts"]
    progress(f"split ready at {split_dir}: train {counts['train']['interactions']} interactions, "
             f"cold {split.cold}: {len(split.cold_ids['val'])} val / {len(split.cold_ids['test'])} test")
    data = SplitData.from_split(split)
    ks = tuple(cfg.ks)

    models: dict[str, Recommender] = {}
    for name in cfg.baselines:
        models[name] = load_recommender(name, data, seed=cfg.seed)
    results: dict[str, dict] = {}
    for name, model in models.items():
        results[name] = _timed_eval(name, model, data, cfg, ks, progress)
    for stage in stages or []:
        progress(f"stage {stage.name}")
        for name, model in stage.run(data, cfg, cfg.out).items():
            results[name] = _timed_eval(name, model, data, cfg, ks, progress)

    title = f"coldstart: {split.info.get('dataset', split_dir)} {split.cold}-cold ({cfg.report_on})"
    report = write_report(results, cfg.out / "report", title=title,
                          context={"split": split_dir, "seed": cfg.seed, "protocol": split.info.get("protocol")})
    progress(f"report written to {report} in {time.perf_counter() - started:.1f} s\n\n" + markdown_table(results))
    return results


def summarize(runs: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """{model: {group: {metric: {"mean", "std", "values"}}}} over the seeds' results."""
    import numpy as np

    first = next(iter(runs.values()))
    out: dict[str, dict] = {}
    for model, groups in first.items():
        out[model] = {}
        for group, metrics in groups.items():
            out[model][group] = {}
            for metric in metrics:
                values = [runs[s][model][group][metric] for s in runs if model in runs[s]]
                out[model][group][metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=0)),
                                             "values": values}
    return out


def summary_table(summary: dict, seeds: list[int], metric: str = "ndcg@20") -> str:
    lines = [f"{metric.upper()}, mean ± std over seeds {', '.join(map(str, seeds))}", "",
             "| model | cold | warm | all |", "|---|---|---|---|"]
    for model, groups in summary.items():
        cells = [f"{groups[g][metric]['mean']:.4f} ± {groups[g][metric]['std']:.4f}" if metric in groups.get(g, {})
                 else "n/a" for g in ("cold", "warm", "all")]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _timed_eval(name, model, data, cfg, ks, progress) -> dict:
    t = time.perf_counter()
    metrics = evaluate(model, data, on=cfg.report_on, ks=ks)
    progress(f"evaluate {name}: cold ndcg@20 {metrics['cold'].get('ndcg@20', float('nan')):.4f}, "
             f"warm {metrics['warm'].get('ndcg@20', float('nan')):.4f}, "
             f"all {metrics['all'].get('ndcg@20', float('nan')):.4f} ({time.perf_counter() - t:.1f} s)")
    return metrics
