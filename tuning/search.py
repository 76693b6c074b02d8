"""Ray Tune searches over the trainers' drivers: Optuna proposes, ASHA stops the weak trials early.

A trial is one call of a trainer's `run` with the sampled fields: with one
worker per trial (the default) the trainer's skeleton fits the model in the
trial's own process (`trainers.loop.run_in_process`); with more, a Ray Train run
whose reports `TuneReportCallback` forwards. No training loop lives here, only
the trials and the scheduler (the spaces are the models' registry entries').
Every epoch's report reaches Tune, so ASHA
compares trials on validation NDCG@20 epoch by epoch. The jobs' own patience is
switched off during a search (set to the number of epochs): stopping early is
ASHA's job. The stage then trains the winner in full the way a trial trains,
unless the winning trial already ran exactly that (`winning_trial_model`).

Output in `out/`: `results.csv` and `results.md` (one row per trial) and
`best.yaml` (the whole job config of the best trial: `coldstart train JOB
--config best.yaml` retrains it). The jobs, one per searchable model of
`coldstart.registry`, and the search-then-train around this are `tuning.jobs`'.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from coldstart import artifacts
from coldstart.config import to_yaml
from trainers.common import ensure_ray
from trainers.loop import LocalContext, run_storage
from trainers.prometheus import record_epoch

log = logging.getLogger(__name__)

METRIC = "cold_val_ndcg@20"
TRIAL_CPU = 0.01  # a trial's driver: a token share, since Tune refuses a trial with no resources


class SearchOptions(BaseModel):
    """How a search runs, shared by `coldstart tune` and the pipeline's tune stages."""

    model_config = ConfigDict(extra="forbid")
    budget: int = Field(8, gt=0, description="Trials to run.")
    epochs: int | None = Field(None, gt=0, description="Most epochs per trial (default: the job's epochs).")
    grace_period: int = Field(1, gt=0, description="ASHA: epochs every trial gets before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: keep the top 1/factor at each rung.")
    concurrency: int | None = Field(None, gt=0, description="Trials at once (default: what the cluster's CPUs "
                                                             "(or GPUs) fit, given each trial's workers).")
    trial_workers: int = Field(1, gt=0, description="Workers per trial: 1 trains each trial in its own "
                                                     "process (seconds to start); more run a Ray Train job of "
                                                     "that many workers per trial.")
    seed: int = Field(0, description="Seed of the Optuna sampler.")


@dataclass
class SearchJob:
    """A trainer as Tune sees it: its config class, its driver and its search space (`tuning.jobs` makes one
    from a model's registry entry)."""

    name: str
    config: type
    run: Callable  # run(cfg, callbacks=...) -> TrainResult
    space: Callable[[], dict]  # Tune search space over the config's fields
    prepare: Callable | None = None  # run once before the trials (e.g. fill a shared cache)
    compare: dict[str, dict] = field(default_factory=dict)  # label -> fixed fields, trained beside the winner
    notes: Callable | None = None  # notes(cfg, model_dir) -> lines heading the comparison


@dataclass
class SearchResult:
    out: Path
    best_config: BaseModel
    best_score: float
    trials: pd.DataFrame
    seconds: float
    scores: dict[str, list[float]]  # trial id -> its METRIC, epoch by epoch


def trial_resources(options: SearchOptions, scale) -> dict[str, float]:
    """What a trial holds. A one-worker trial trains in its own process, so it holds that worker's CPUs (and
    GPU); a trial of more workers drives a Ray Train run whose workers hold them, itself a token share."""
    if options.trial_workers == 1:
        return {"CPU": scale.threads_per_worker, **({"GPU": 1} if scale.use_gpu else {})}
    return {"CPU": TRIAL_CPU}


def trial_concurrency(options: SearchOptions, scale) -> int:
    import ray  # ray: heavy, only a search loads it

    if options.concurrency:
        return min(options.concurrency, options.budget)
    resources = ray.cluster_resources()
    if scale.use_gpu:
        fit = resources.get("GPU", 0) // options.trial_workers
    elif options.trial_workers == 1:
        fit = resources.get("CPU", 1) // scale.threads_per_worker
    else:  # each trial also holds its driver's TRIAL_CPU, so n trials need n * (workers + TRIAL_CPU)
        fit = resources.get("CPU", 1) // (options.trial_workers * scale.threads_per_worker + TRIAL_CPU)
    return int(max(1, min(fit, options.budget)))


def warn_oversubscribed(workers: int, scale, local: bool, cores: int | None = None) -> bool:
    """Warn when `workers` of `scale.threads_per_worker` torch threads each, on a cluster on this machine
    (`local`), ask for more threads than it has cores while each worker has more than one. A local cluster
    counts more logical CPUs than cores (`RayOptions.local_cpus`), and contending threads made trial epochs
    2-3x slower than one thread per worker (benchmarks/HISTORY.md, the demo's run B)."""
    threads = scale.threads_per_worker
    cores = cores or os.cpu_count() or 1
    if threads <= 1 or scale.use_gpu or not local or workers * threads <= cores:
        return False
    log.warning("%d workers x %d threads at once on %d cores: the threads contend (epochs ran 2-3x slower here "
                "than with one thread per worker); --scale.threads-per-worker 1 uses the same cores better",
                workers, threads, cores)
    return True


def run_trial(config: dict, job: SearchJob, base: dict, root: str) -> None:
    """One trial: the job's driver with the sampled fields, its epochs reported to Tune.

    One worker: the job's training skeleton runs here, in the trial's process (`trainers.loop.run_in_process`),
    reporting each epoch to Tune; a Ray Train run per trial would start a controller and a worker process
    (importing torch in each) for a model that trains in seconds. More workers: a Ray Train run, its reports
    forwarded to Tune by `TuneReportCallback`.
    """
    import ray.tune  # ray: heavy, only a search loads it

    trial_id = ray.tune.get_context().get_trial_id()

    class TrialContext(LocalContext):
        def report(self, metrics: dict, write) -> None:
            super().report(metrics, write)
            record_epoch(metrics, job=f"{job.name}-{trial_id}")  # Prometheus, as a Ray Train worker does
            ray.tune.report(metrics)

    trial_dir = Path(root) / trial_id
    cfg = job.config.model_validate({**base, **config, "out": str(trial_dir / "model"),
                                     "scale": {**base["scale"], "storage": str(trial_dir / "runs")}})
    if cfg.scale.num_workers == 1:
        job.run(cfg, context=TrialContext("cuda" if cfg.scale.use_gpu else "cpu", folder=trial_dir / "run"))
    else:
        from ray.tune.integration.ray_train import TuneReportCallback  # ray: heavy, only a search loads it

        job.run(cfg, callbacks=[TuneReportCallback()])


def trial_function(job: SearchJob) -> Callable:
    """`run_trial` under a name of the job's own. Tune registers a trainable in the cluster by its name, so two
    searches at once from one driver (pipeline stages side by side) would otherwise run each other's jobs."""
    def trial(config: dict, job: SearchJob, base: dict, root: str) -> None:
        run_trial(config, job, base, root)

    trial.__name__ = trial.__qualname__ = f"{job.name}_trial"
    return trial


def search(job: SearchJob, base_cfg: BaseModel, options: SearchOptions, out: Path) -> SearchResult:
    """Run the search for `job` around `base_cfg`; write the results and the best config to `out`."""
    from ray import tune  # ray: heavy, only a search loads it
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    job_name = job.name
    ensure_ray(base_cfg.ray)
    started = time.perf_counter()
    out = Path(out).resolve()
    epochs = options.epochs or base_cfg.epochs
    base = base_cfg.model_dump(mode="json")
    base.update(epochs=epochs, patience=epochs)
    base["scale"] = {**base["scale"], "num_workers": options.trial_workers}
    if job.prepare:
        job.prepare(base_cfg)
    concurrency = trial_concurrency(options, base_cfg.scale)
    log.info("tune %s: %d trials, %d at once, at most %d epochs each", job_name, options.budget, concurrency, epochs)
    warn_oversubscribed(concurrency * options.trial_workers, base_cfg.scale,
                        local=base_cfg.ray.join_address() is None)
    tuner = tune.Tuner(
        # A trial only drives a Ray Train run, whose workers hold the CPUs (or GPUs); the trial itself holds a
        # token share (Tune refuses zero), and `max_concurrent_trials` keeps trials to what the workers fit.
        tune.with_resources(tune.with_parameters(trial_function(job), job=job, base=base, root=str(out / "trials")),
                            trial_resources(options, base_cfg.scale)),
        param_space=job.space(),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=options.budget, max_concurrent_trials=concurrency,
            search_alg=OptunaSearch(seed=options.seed),
            # stop_last_trials=False: a trial that reaches the last epoch ends on its own, so its driver writes
            # its model (which the stage can then take instead of training the winner again).
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=options.grace_period,
                                    reduction_factor=options.reduction_factor, stop_last_trials=False)),
        run_config=tune.RunConfig(name=f"tune-{job_name}", storage_path=str(out / "tune"), verbose=0))
    grid = tuner.fit()
    trials = trial_table(grid, list(job.space()), epochs)
    if trials["best"].isna().all():
        errors = [str(r.error) for r in grid if r.error]
        raise RuntimeError(f"tune {job_name}: no trial reported {METRIC}; first error: {errors[:1]}")
    best_row = trials.loc[trials["best"].idxmax()]
    best_cfg = job.config.model_validate({**base_cfg.model_dump(mode="json"),
                                          **{k: _plain(best_row[k]) for k in job.space()}})
    write_results(out, job_name, trials, best_cfg)
    return SearchResult(out=out, best_config=best_cfg, best_score=float(best_row["best"]), trials=trials,
                        seconds=time.perf_counter() - started, scores=trial_scores(grid))


def _plain(value):
    """numpy scalars -> Python scalars, so the YAML stays plain."""
    return value.item() if hasattr(value, "item") else value


def trial_scores(grid) -> dict[str, list[float]]:
    scores = {}
    for result in grid:
        history, trial_id = result.metrics_dataframe, (result.metrics or {}).get("trial_id")
        if history is not None and METRIC in history and trial_id is not None:
            scores[trial_id] = [float(x) for x in history[METRIC]]
    return scores


def trial_table(grid, params: list[str], max_epochs: int) -> pd.DataFrame:
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        scores = history[METRIC] if history is not None and METRIC in history else pd.Series(dtype=float)
        epochs = int(len(scores))
        rows.append({**{p: result.config.get(p) for p in params},
                     "trial_id": (result.metrics or {}).get("trial_id"), "epochs": epochs,
                     "best": float(scores.max()) if epochs else math.nan,
                     "best_epoch": int(scores.to_numpy().argmax()) if epochs else -1,
                     "stopped_early": bool(0 < epochs < max_epochs),
                     "error": None if result.error is None else type(result.error).__name__})
    return pd.DataFrame(rows).sort_values("best", ascending=False, na_position="last").reset_index(drop=True)


def write_results(out: Path, job_name: str, trials: pd.DataFrame, best_cfg: BaseModel) -> None:
    artifacts.write_bytes(out / "results.csv", trials.to_csv(index=False).encode())
    lines = [f"# tune {job_name}: {len(trials)} trials, {int(trials['stopped_early'].sum())} stopped early by ASHA",
             "", f"Objective: best {METRIC} over a trial's epochs.", "",
             "| " + " | ".join(trials.columns) + " |", "|" + "---|" * len(trials.columns)]
    for _, row in trials.iterrows():
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    artifacts.write_text(out / "results.md", "\n".join(lines) + "\n")
    artifacts.write_text(out / "best.yaml", f"# best of {len(trials)} trials on {METRIC}\n" + to_yaml(best_cfg))


def retrain_would_stop_before_best(scores: list[float], patience: int) -> bool:
    """Whether a run with `patience` stops before the best of `scores` (a trial's epochs, run without patience).

    As `trainers.loop.EarlyStopping` counts: an epoch improves on a strictly higher score, and the run stops
    once `patience` epochs in a row have not improved.
    """
    best_epoch = int(np.argmax(scores))
    top, since = -math.inf, 0
    for epoch, score in enumerate(scores[:best_epoch]):
        top, since = (score, 0) if score > top else (top, since + 1)
        if since >= patience:
            return True
    return False


def winning_trial_model(found: SearchResult, base, options: SearchOptions) -> Path | None:
    """The winning trial's model folder when training its config in full would only repeat it: the trial ran
    every epoch the job runs (ASHA did not stop it), on as many workers, and the job's patience would not stop
    the retrain before the trial's best epoch. Training is deterministic for a seed, so it is that model."""
    top = found.trials.loc[found.trials["best"].idxmax()]
    folder = found.out / "trials" / str(top["trial_id"]) / "model"
    scores = found.scores.get(top["trial_id"])
    if (int(top["epochs"]) != base.epochs or options.trial_workers != base.scale.num_workers
            or not (folder / "model.json").is_file() or scores is None
            or retrain_would_stop_before_best(scores, base.patience)):
        return None
    return folder


def train_all(job: SearchJob, configs: list, options: SearchOptions) -> None:
    """Train each config in full, as many at once as the cluster fits, each in a Ray task. A one-worker run
    trains in its task's process, as a one-worker trial does (`full_run`); a run of more workers is a Ray
    Train run driven from its task. On a small cluster the runs' start-ups overlap instead of queueing."""
    import ray  # ray: heavy, only a search loads it

    if not configs:
        return
    scale, resources = configs[0].scale, ray.cluster_resources()
    one_worker = scale.num_workers == 1
    if options.concurrency:
        fit = options.concurrency
    elif scale.use_gpu:
        fit = resources.get("GPU", 0) // scale.num_workers
    elif one_worker:
        fit = resources.get("CPU", 1) // scale.threads_per_worker
    else:  # a run's driver task holds TRIAL_CPU beside its workers
        fit = resources.get("CPU", 1) // (scale.num_workers * scale.threads_per_worker + TRIAL_CPU)
    fit = max(1, int(fit))
    held = {"num_cpus": scale.threads_per_worker, "num_gpus": 1 if scale.use_gpu else 0} if one_worker \
        else {"num_cpus": TRIAL_CPU}
    train = ray.remote(**held)(full_run)
    pending, waiting = [], list(configs)
    while waiting or pending:
        while waiting and len(pending) < fit:
            pending.append(train.remote(job.run, waiting.pop(0)))
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # a failed run raises here, with its own error


def full_run(run: Callable, cfg) -> None:
    """Train `cfg` in full. One worker: the job's skeleton fits it in this process, checkpointing every epoch
    beside its Ray Train runs (`run_storage`), so a task that Ray retries after losing its node resumes
    from its last epoch. More workers: the job's Ray Train run."""
    if cfg.scale.num_workers != 1:
        run(cfg)
        return
    run(cfg, context=LocalContext("cuda" if cfg.scale.use_gpu else "cpu", folder=run_storage(cfg) / "in-process",
                                  resume=True))


def _coverage(model_dir: Path) -> dict:
    return artifacts.read_json(Path(model_dir) / "model.json")["coverage"]
