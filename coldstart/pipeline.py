"""The main job: fetch, split, train and evaluate every model the project has, and report.

The core stages (data, baselines, evaluation, report) live here and need no
Ray. Stages that train on Ray are passed in by the CLI as `ModelStage`s
(`coldstart.stages`), so this module never imports `trainers/`; every model
`coldstart.registry` lists has its options here (`PipelineConfig.NAME`) and its
stage among the default ones.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from coldstart import artifacts, registry
from coldstart.config import ConfigError, JobConfig, NotApplicable, RayOptions, ScaleOptions, to_yaml
from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.models.student_encoder import StudentOptions
from coldstart.report import markdown_table, write_report
from coldstart.serving.evidence import choose_served, fit_stated_map, served_row
from coldstart.serving.evidence import frame as served_frame
from coldstart.serving.served_models import update_serving
from coldstart.stages import Ledger, ModelStage, plan_stage, run_stage, run_stages
from coldstart.text import EmbedOptions

log = logging.getLogger(__name__)


class TuneBudget(BaseModel):
    """The pipeline's share of a search's settings (the rest are `coldstart tune`'s defaults)."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(8, gt=0, description="Trials per search.")
    epochs: int | None = Field(None, gt=0, description="Most epochs per trial (default: the job's epochs).")
    seed: int = Field(0, description="Seed of the Optuna sampler.")


def default_stages() -> list[str]:
    """The texts' embedding and the student encoder, then each registered model's stage."""
    return ["embed", "encoder", *registry.pipeline_stages()]


class RunOptions(JobConfig):
    """The pipeline's own settings, before the models' options (`PipelineConfig`)."""

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
    stages: list[str] = Field(default_factory=default_stages,
                              description="Ray stages to run after the baselines, in order.")
    knn_k: int = Field(5, gt=0, description="Item neighbours of the knn-warm baseline (stage baselines).")
    knn_user_k: int = Field(50, gt=0, description="User neighbours of knn-warm on a user-cold split (a profile "
                                                  "of age, gender and job says little, so many are averaged).")
    force: bool = Field(False, description="Retrain every stage, even one whose artifacts exist with the same "
                                           "configuration (by default those are reused).")
    parallel: int = Field(2, gt=0, description="Stages run at once: each starts as soon as the stages it reads "
                                               "have finished (embed beside backbone, the searches beside the "
                                               "towers); Ray shares the cluster's CPUs and GPUs among their "
                                               "runs. 1 runs them one after another, in the listed order.")
    embed: EmbedOptions = Field(default_factory=EmbedOptions, description="The LLM embedding stage.")
    encoder: StudentOptions = Field(default_factory=lambda: StudentOptions(),
                                    description="The distilled student encoder (stage encoder).")


def model_options() -> dict:
    """A field per registered model with options, named after it: its options class, defaults and all."""
    fields = {}
    for spec in registry.MODELS.values():
        if spec.options:
            cls = spec.options_class()
            fields[spec.name] = (cls, Field(default_factory=cls, description=f"{spec.about} (stage {spec.stage})."))
    return fields


ModelOptions = create_model("ModelOptions", __base__=RunOptions, __module__=__name__, **model_options())


class PipelineConfig(ModelOptions):
    """The main job's configuration: the run's settings, each model's options (named after it), the searches,
    workers and cluster."""

    source: str | None = Field(None, description="Source dataset of the transfer stage (a MovieLens name or a "
                                                 "dataset folder); default: ml-1m for an ml-100k target, none "
                                                 "otherwise (the stage is then skipped).")
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


class PipelineFailed(RuntimeError):
    """One or more stages failed; the others' results are in the report. The message names the first."""


def split_fingerprint(split) -> str:
    """The split's content: every set's pairs and the entity tables (not where it came from)."""
    digest = hashlib.sha1(split.cold.encode())
    for name in sorted(split.sets):
        pairs = split.sets[name][["user_id", "item_id"]].sort_values(["user_id", "item_id"])
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(pairs, index=False).to_numpy().tobytes())
    for table in (split.items, split.users):
        if table is not None:
            digest.update(pd.util.hash_pandas_object(table.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_split(cfg: PipelineConfig, progress: Callable[[str], None] = print) -> Path:
    """Fetch and split as configured, or copy the given split, into OUT/split; return that folder.

    The output folder then holds every table serving, evaluation and a later run
    read, whatever `--split` pointed at: it can move to another machine.
    """
    target = cfg.out / "split"
    if cfg.split is not None:
        split = load_split(cfg.split)
        if Path(cfg.split).resolve() == target.resolve():
            return target
        progress(f"copy split {cfg.split} into {target}")
        split.info = {k: v for k, v in split.info.items() if k != "path"} | {"source": str(cfg.split)}
    else:
        dataset = cfg.dataset
        if dataset in movielens.SOURCES:
            progress(f"fetch {dataset}")
            ds = load_dataset(movielens.fetch(dataset, cfg.cache_dir), name=dataset)
        else:
            ds = load_dataset(dataset)
        progress(f"split {ds.name}: cold {cfg.cold}, seed {cfg.seed}")
        split = make_split(ds, cfg.cold, cfg.seed)
    if (target / "split.json").is_file() and split_fingerprint(load_split(target)) == split_fingerprint(split):
        return target  # unchanged: leave it (and everything trained on it) as it is
    return save_split(split, target)


def run_pipeline(cfg: PipelineConfig, stages: list[ModelStage] | None = None,
                 progress: Callable[[str], None] = print, start: Callable[[], None] | None = None) -> dict[str, dict]:
    """Run every stage and write `out/report` after each; returns {model: evaluate JSON}.

    Stages run `cfg.parallel` at once, each when the stages it reads have finished (`run_stages`).
    A stage that does not apply is skipped with its reason; one that fails is
    recorded with its error and the stages that do not need it still run; the
    report keeps everything that finished, and `PipelineFailed` is raised at the
    end. A stage whose artifacts exist with the same fingerprint is reused, not
    retrained (`force` retrains). With `seeds`, one run per seed in OUT/seed-N,
    then OUT/report/summary.md and summary.json with mean and std per model.

    `start` is called once, in the calling thread, before the first stage that trains (none when every
    stage is reused or skipped): the CLI joins or starts the Ray cluster there. Ray ties the processes of a
    cluster it starts to the thread that started them, so one started in a stage's thread would die with it.
    """
    if cfg.seeds:  # one seed too: `--seeds "[48]"` is seed 48's run in OUT/seed-48, never the default seed's
        return _run_seeds(cfg, stages, progress, start)
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
    split_hash = split_fingerprint(split)
    ledger = Ledger(cfg.out / "stages.json")
    title = f"coldstart: {split.info.get('dataset', split.info.get('source', split_dir))} {split.cold}-cold " \
            f"({cfg.report_on})"
    context = {"split": split_dir, "seed": cfg.seed, "protocol": split.info.get("protocol")}
    if split.cold == "users" and (split.users is None or set(split.users.columns) <= {"user_id"}):
        note = ("they come with an id alone (no users table describes them, and they have no history): every "
                "cold-start model can only rank for a new user as for the average user; the cold rows measure that")
        progress(f"new users: {note}")
        context["new users"] = note

    results: dict[str, dict] = {}
    for name in cfg.baselines:
        try:
            model = load_recommender(name, data, seed=cfg.seed)
        except NotApplicable as exc:  # the report says why the row is missing
            progress(f"baseline {name}: skipped: {exc}")
            context[f"{name} (baseline)"] = f"skipped: {exc}"
            continue
        results[name] = _timed_eval(name, model, data, cfg, ks, progress)
    write_report(results, cfg.out / "report", title=title, context=context, stages=ledger.entries)
    baseline_results, stages = dict(results), list(stages or [])
    by_stage: dict[str, dict[str, dict]] = {}
    lock = threading.Lock()

    cluster: list[bool] = []  # whether `start` was called

    def plan(stage: ModelStage) -> tuple[str, str]:
        decided = plan_stage(stage, data, cfg, split_hash, ledger)
        if decided[0] == "run" and start is not None and not cluster:
            start()
            cluster.append(True)
        return decided

    def run_one(stage: ModelStage, planned: tuple[str, str]) -> None:
        models = run_stage(stage, planned, data, cfg, ledger, progress)
        metrics = {name: _timed_eval(name, model, data, cfg, ks, progress) for name, model in models.items()}
        with lock:  # the report lists rows and stages in the configured order, whichever finished first
            by_stage[stage.name] = metrics
            results.clear()
            results.update(baseline_results)
            for s in stages:
                results.update(by_stage.get(s.name, {}))
            write_report(results, cfg.out / "report", title=title, context=context,
                         stages={s.name: ledger.entries[s.name] for s in stages if s.name in ledger.entries})

    run_stages(stages, cfg.parallel, run_one, plan)
    served_error = _served(cfg, data, ks, results, context, progress)
    write_report(results, cfg.out / "report", title=title, context=context,
                 stages={s.name: ledger.entries[s.name] for s in stages if s.name in ledger.entries})

    report = cfg.out / "report"
    progress(f"report written to {report} in {time.perf_counter() - started:.1f} s\n\n" + markdown_table(results))
    failed = [(s.name, ledger.entries[s.name]) for s in stages
              if ledger.entries.get(s.name, {}).get("status") == "failed"]
    if failed:
        raise PipelineFailed(f"stage {failed[0][0]} failed: {failed[0][1]['error']} (the report in {report} "
                             f"keeps what finished; fix the cause and rerun: finished stages are reused)")
    if served_error:
        raise PipelineFailed(f"choosing what to serve failed: {served_error} (the report in {report} keeps the "
                             f"stages' rows)")
    return results


def _served(cfg: PipelineConfig, data: SplitData, ks: tuple[int, ...], results: dict, context: dict,
            progress: Callable[[str], None]) -> str | None:
    """Choose what to serve on the served path's validation evidence (`coldstart.serving.evidence`), record it
    in OUT/serving.json, and add its row, measured through the serving code path, to the results; returns an
    error line, or None."""
    started = time.perf_counter()
    try:
        choice = choose_served(cfg.out, data)
        if not choice:
            return None
        update_serving(cfg.out, **choice)
        try:
            stated = fit_stated_map(cfg.out, data)
        except Exception as exc:  # noqa: BLE001 - a new user's stated interest then takes the mean; serving goes on
            stated = {"generator": choice["generator"], "none": f"fitting failed: {type(exc).__name__}: {exc}"}
        update_serving(cfg.out, stated_map=stated)
        progress(f"a stated interest's map for {stated['generator']}: " + (stated.get("none") or ", ".join(
            f"{column} ({fit['statements']} statements, strength {fit['alpha']:g})"
            for column, fit in stated["columns"].items())))
        name, figures = served_row(cfg.out, data, ks)
    except Exception as exc:  # noqa: BLE001 - the stages' rows stay reported; the run exits 1 with this line
        progress(f"choosing what to serve failed: {type(exc).__name__}: {exc}")
        return f"{type(exc).__name__}: {exc}"
    update_serving(cfg.out, served={on: {g: figures[on][g] for g in figures[on]} for on in figures})
    results[name] = figures[cfg.report_on]
    table = served_frame(figures)
    context["served"] = (f"{name}, chosen on validation through the serving path (serving.json holds the "
                         f"evidence); NDCG@20 val / test: " + "; ".join(
                             f"{g} {table.loc[g, 'val']:.4f} / {table.loc[g, 'test']:.4f}" for g in table.index))
    progress(f"served: {context['served']} ({time.perf_counter() - started:.1f} s)")
    return None


def _run_seeds(cfg: PipelineConfig, stages, progress, start) -> dict[str, dict]:
    if cfg.split is not None:
        raise ConfigError("seeds: a given split has one seed; give a dataset to draw one split per seed")
    runs, failures = {}, []
    for seed in cfg.seeds:
        progress(f"seed {seed}")
        try:
            runs[seed] = run_pipeline(cfg.model_copy(update={"seed": seed, "seeds": None,
                                                             "out": cfg.out / f"seed-{seed}"}), stages, progress,
                                     start)
        except PipelineFailed as exc:
            failures.append(f"seed {seed}: {exc}")
            runs[seed] = artifacts.read_json(cfg.out / f"seed-{seed}" / "report" / "metrics.json")
    summary = summarize(runs)
    artifacts.write_json(cfg.out / "report" / "summary.json", summary)
    artifacts.write_text(cfg.out / "report" / "summary.md", summary_table(summary, cfg.seeds))
    progress("summary over seeds " + ", ".join(map(str, cfg.seeds)) + "\n\n" + summary_table(summary, cfg.seeds))
    if failures:
        raise PipelineFailed("; ".join(failures))
    return summary


def summarize(runs: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """{model: {group: {metric: {"mean", "std", "values"}}}} over the seeds' results."""
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
