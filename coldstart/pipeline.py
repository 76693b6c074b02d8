"""The main job: fetch, split, train and evaluate every model the project has, and report.

The core stages (data, baselines, evaluation, report) live here and need no
Ray. Stages that train on Ray are passed in by the CLI as `ModelStage`s, so
this module never imports `trainers/` and every later model joins the same
report by adding one stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

import coldstart
from coldstart import artifacts
from coldstart.config import ConfigError, JobConfig, NotApplicable, RayOptions, ScaleOptions, to_yaml
from coldstart.data import movielens
from coldstart.data.schema import load_dataset
from coldstart.data.split import load_split, make_split, save_split
from coldstart.evaluate import Recommender, SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.models.mf import BackboneOptions
from coldstart.models.student_encoder import StudentOptions
from coldstart.models.towers import TowerOptions
from coldstart.models.transfer import TransferOptions
from coldstart.models.vae import VAEOptions
from coldstart.report import markdown_table, write_report
from coldstart.serving.evidence import choose_served, served_row
from coldstart.serving.evidence import frame as served_frame
from coldstart.serving.models import update_serving
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
    stages: list[str] = Field(["embed", "encoder", "backbone", "baselines", "distill", "tune-vae", "ensemble",
                               "transfer"],
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
    backbone: BackboneOptions = Field(default_factory=BackboneOptions, description="The warm backbone.")
    distill: TowerOptions = Field(default_factory=TowerOptions, description="The student towers.")
    vae: VAEOptions = Field(default_factory=VAEOptions, description="The conditional-VAE generator (stage vae; "
                                                                    "tune-vae searches around it).")
    transfer: TransferOptions = Field(default_factory=TransferOptions,
                                      description="Transfer from `source` (stage transfer searches lam around it).")
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


class StageSkipped(Exception):
    """A stage that does not apply to this data; the message is the reason, shown in the log and the report."""


class PipelineFailed(RuntimeError):
    """One or more stages failed; the others' results are in the report. The message names the first."""


@dataclass
class ModelStage:
    """A stage that trains (or loads) one or more models: name -> recommender over `data`.

    `run` trains and returns the models; `load` rebuilds them from finished
    artifacts, so a rerun with the same configuration skips the training.
    `fingerprint(cfg)` is the part of the configuration the artifacts depend on,
    `needs` the earlier stages whose artifacts this one reads, and `outputs` the
    folders under OUT it writes (all must exist for a stage to count as done).
    `after` the stages whose artifacts it reads when the run includes them (an
    ensemble of whichever generators were trained): it waits for them too.
    `applies(data, cfg)` returns why the stage cannot apply to the data, or None.
    """

    name: str
    run: Callable[[SplitData, "PipelineConfig", Path], dict[str, Recommender]]
    load: Callable[[SplitData, "PipelineConfig", Path], dict[str, Recommender]] | None = None
    fingerprint: Callable[["PipelineConfig"], object] = lambda cfg: None
    needs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    applies: Callable[[SplitData, "PipelineConfig"], str | None] = lambda data, cfg: None


class Ledger:
    """OUT/stages.json: each stage's status (done, reused, skipped, failed), fingerprint, time and detail."""

    def __init__(self, path: Path):
        self.path = path
        self.previous = artifacts.read_json(path) if path.is_file() else {}
        self.entries: dict[str, dict] = {}
        self._lock = threading.Lock()  # stages that run at once record from their threads

    def record(self, name: str, **entry) -> None:
        with self._lock:
            self.entries[name] = entry
            artifacts.write_json(self.path, {**self.previous, **self.entries})

    def finished(self, stage: ModelStage, fingerprint: str, out: Path) -> bool:
        entry = self.previous.get(stage.name, {})
        return (entry.get("status") in ("done", "reused") and entry.get("fingerprint") == fingerprint
                and bool(stage.outputs) and all((out / o).exists() for o in stage.outputs))

    def entry(self, name: str) -> dict:
        """This run's record of a stage or, for a stage this run does not include, the last run's."""
        return self.entries.get(name) or self.previous.get(name, {})

    def status(self, name: str) -> str | None:
        return self.entry(name).get("status")


def stage_fingerprint(stage: ModelStage, cfg: "PipelineConfig", split_hash: str, ledger: Ledger) -> str:
    """The stage's configuration, the split, the fingerprints of the stages it reads and the coldstart version,
    hashed: artifacts another release trained are trained again, not reused."""
    upstream = {need: ledger.entry(need).get("fingerprint") for need in stage.needs}
    return config_hash({"stage": stage.name, "config": stage.fingerprint(cfg), "split": split_hash,
                        "needs": upstream, "coldstart": coldstart.__version__})


def config_hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=lambda o: o.model_dump(mode="json") if hasattr(o, "model_dump")
                      else str(o))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


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
    if cfg.seeds and len(cfg.seeds) > 1:
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
        decided = _plan_stage(stage, data, cfg, split_hash, ledger)
        if decided[0] == "run" and start is not None and not cluster:
            start()
            cluster.append(True)
        return decided

    def run_one(stage: ModelStage, planned: tuple[str, str]) -> None:
        models = _run_stage(stage, planned, data, cfg, ledger, progress)
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


def run_stages(stages: list[ModelStage], parallel: int, run_one: Callable[[ModelStage, Any], None],
               plan: Callable[[ModelStage], Any] = lambda stage: None) -> None:
    """Run every stage once the stages it reads (`needs`, `after`) that are in `stages` have returned, at most
    `parallel` at once, the earliest listed first when several are ready: `plan(stage)` in this thread, then
    `run_one(stage, plan's answer)`.

    `run_one` records a stage's own failure and returns (the stages after it decide for themselves); what it
    raises is raised here, once the stages running beside it have finished. One at a time, stages run in this
    thread; more run in daemon threads, so an interrupt (Ctrl-C) stops the command without waiting for them.
    """
    names = {s.name for s in stages}
    waiting, finished, running = list(stages), set(), set()
    done: queue.Queue[str] = queue.Queue()
    raised: list[BaseException] = []

    def ready() -> ModelStage | None:
        for stage in waiting:
            if all(n in finished or n not in names for n in (*stage.needs, *stage.after)):
                return stage
        return waiting[0] if waiting and not running else None  # a cycle of `after`s: the listed order breaks it

    def work(stage: ModelStage, planned) -> None:
        try:
            run_one(stage, planned)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            raised.append(exc)
        finally:
            done.put(stage.name)

    while waiting or running:
        while not raised and len(running) < parallel and (stage := ready()) is not None:
            waiting.remove(stage)
            running.add(stage.name)
            try:
                planned = plan(stage)
            except BaseException as exc:  # noqa: BLE001 - raised once the stages running have finished
                raised.append(exc)
                running.discard(stage.name)
                break
            if parallel == 1:
                work(stage, planned)
            else:
                threading.Thread(target=work, args=(stage, planned), name=f"stage-{stage.name}", daemon=True).start()
        if not running:
            break
        name = _next(done)
        running.discard(name)
        finished.add(name)
    if raised:
        raise raised[0]


def _next(done: queue.Queue) -> str:
    while True:  # a timed wait, so that Ctrl-C reaches this thread promptly
        try:
            return done.get(timeout=0.5)
        except queue.Empty:
            continue


def _plan_stage(stage: ModelStage, data: SplitData, cfg: PipelineConfig, split_hash: str,
                ledger: Ledger) -> tuple[Literal["skip", "reuse", "run"], str]:
    """What a stage will do, decided once the stages it reads have finished: ("skip", why), or ("reuse" or
    "run", its fingerprint)."""
    blocked = [n for n in stage.needs if ledger.status(n) not in ("done", "reused")]
    reason = (f"needs the {', '.join(blocked)} stage(s), which did not finish" if blocked
              else stage.applies(data, cfg))
    if reason:
        return "skip", reason
    fingerprint = stage_fingerprint(stage, cfg, split_hash, ledger)
    reuse = not cfg.force and stage.load is not None and ledger.finished(stage, fingerprint, cfg.out)
    return ("reuse" if reuse else "run"), fingerprint


def _run_stage(stage: ModelStage, plan: tuple[str, str], data: SplitData, cfg: PipelineConfig, ledger: Ledger,
               progress: Callable[[str], None]) -> dict[str, Recommender]:
    """Skip, reuse or run one stage as planned, recording the outcome; a failure is recorded, not raised."""
    action, detail = plan
    if action == "skip":
        progress(f"stage {stage.name}: skipped: {detail}")
        ledger.record(stage.name, status="skipped", reason=detail)
        return {}
    fingerprint = detail
    t = time.perf_counter()
    try:
        if action == "reuse":
            progress(f"stage {stage.name}: reusing {', '.join(stage.outputs)} (same configuration; --force retrains)")
            models = stage.load(data, cfg, cfg.out)
            status = "reused"
        else:
            progress(f"stage {stage.name}")
            models = stage.run(data, _stage_runs(cfg, stage.name, fingerprint), cfg.out)
            status = "done"
    except StageSkipped as exc:
        progress(f"stage {stage.name}: skipped: {exc}")
        ledger.record(stage.name, status="skipped", reason=str(exc))
        return {}
    except Exception as exc:  # noqa: BLE001 - any stage error is recorded and reported; the rest go on
        line = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.exception("stage %s failed", stage.name)
        progress(f"stage {stage.name}: FAILED: {line}")
        ledger.record(stage.name, status="failed", error=line, fingerprint=fingerprint)
        return {}
    ledger.record(stage.name, status=status, fingerprint=fingerprint, seconds=round(time.perf_counter() - t, 1),
                  models=list(models))
    return models


def _stage_runs(cfg: PipelineConfig, name: str, fingerprint: str) -> PipelineConfig:
    """`cfg` with the stage's Ray runs under OUT/ray_results/STAGE-FINGERPRINT: a stage interrupted and run
    again with the same data and configuration resumes its runs; after a change, or with `force`, it starts
    them fresh (Ray Train would otherwise resume whatever run it finds under the same name)."""
    storage = Path(cfg.scale.storage or cfg.out / "ray_results").resolve() / f"{name}-{fingerprint}"
    if cfg.force:
        shutil.rmtree(storage, ignore_errors=True)
    return cfg.model_copy(update={"scale": cfg.scale.model_copy(update={"storage": storage})})


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
