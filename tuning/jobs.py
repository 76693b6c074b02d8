"""Tune's jobs, one per model that `coldstart.registry` gives a trainer and a search space, and the search then
full training that `coldstart tune NAME` and the pipeline's search stages run (`tune_and_train`).

A job is its model's entry made runnable: the trainer's config class and driver, the space as Ray Tune's
domains, and what its search does beyond the common path (`registry.Search`): a step before the trials,
fixed settings trained beside the winner to compare it with (transfer: lam = 0 and lam = 1, with a chart of
the metric against lam), notes heading the comparison.

Output in `out/` beside the search's (`tuning.search`): `model/` (the winner trained in full), a folder per
compared setting, `comparison.md` and `comparison.json` (each on the val and test sets) and, when the compared
settings fix one field, `metric_vs_FIELD.png`.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from pydantic import Field, create_model

from coldstart import artifacts, registry
from coldstart.config import ConfigError
from coldstart.data.split import load_split
from coldstart.evaluate import SplitData, evaluate
from coldstart.models import load_recommender
from coldstart.registry import Domain
from coldstart.report import markdown_table
from tuning.search import METRIC, SearchJob, SearchOptions, search, train_all, winning_trial_model

log = logging.getLogger(__name__)


def tune_space(space: Mapping[str, Domain]) -> dict:
    """A registry search space as Ray Tune's domains, in the same order."""
    from ray import tune  # ray: heavy, only a search loads it

    make = {"choice": lambda *values: tune.choice(list(values)), "uniform": tune.uniform,
            "loguniform": tune.loguniform}
    return {name: make[domain.sample](*domain.values) for name, domain in space.items()}


def search_job(name: str) -> SearchJob:
    """The registered model `name` as Tune searches it."""
    known = [spec.name for spec in registry.searchable()]
    if name not in known:
        raise ConfigError(f"tune: unknown job {name!r}; known: {sorted(known)}")
    spec = registry.model(name)
    found = spec.search
    return SearchJob(name, spec.config_class(), spec.trainer_module().run, functools.partial(tune_space, found.space),
                     prepare=registry.resolve(found.prepare) if found.prepare else None,
                     compare={label: dict(fields) for label, fields in found.compare.items()},
                     notes=registry.resolve(found.notes) if found.notes else None)


def tune_config_class(job_name: str) -> type:
    """The job's config plus a `search` section: what `coldstart tune JOB` reads."""
    config = search_job(job_name).config
    return create_model(f"Tune{config.__name__}", __base__=config,
                        search=(SearchOptions, Field(default_factory=SearchOptions, description="The search.")))


def _compared(job: SearchJob) -> list[str]:
    """The fields the job's fixed settings set (transfer's: lam)."""
    return sorted({name for fields in job.compare.values() for name in fields})


def _shown(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def tune_and_train(job_name: str, cfg) -> dict:
    """Search, then train the best config in full into OUT/model and the job's fixed settings beside it, each
    evaluated on the split's val and test sets (comparison.md; metric_vs_FIELD.png against one compared field)."""
    started = time.perf_counter()
    job = search_job(job_name)
    out = Path(cfg.out)
    base = job.config.model_validate(cfg.model_dump(mode="json", exclude={"search"}))
    found = search(job, base, cfg.search, out)
    compared = _compared(job)
    if len(compared) == 1:  # the trials alone until the full runs are in
        artifacts.write_bytes(out / f"metric_vs_{compared[0]}.png", metric_chart(found.trials, compared[0]))
    runs = {"tuned": found.best_config.model_copy(update={"out": out / "model"})}
    for label, fields in job.compare.items():
        runs[label] = found.best_config.model_copy(update={"out": out / label.replace("=", "-"), **fields})
    winner = winning_trial_model(found, base, cfg.search)
    if winner is not None:  # the retrain would replay it epoch for epoch: take the trial's own model
        log.info("tune %s: the winning trial ran the job's %d epochs; its model is the tuned model", job_name,
                 base.epochs)
        with artifacts.atomic_dir(out / "model") as tmp:
            shutil.copytree(winner, tmp, dirs_exist_ok=True)
    train_all(job, [c for label, c in runs.items() if not (label == "tuned" and winner is not None)], cfg.search)
    data = SplitData.from_split(load_split(base.split))
    results, val = {}, {}
    for label, run_cfg in runs.items():
        name = f"{job_name} {label}"
        if label == "tuned" and compared:  # where the winner sits among the fixed settings
            name += " (" + ", ".join(f"{f}={_shown(getattr(run_cfg, f))}" for f in compared) + ")"
        model = load_recommender(str(run_cfg.out), data)
        val[name] = evaluate(model, data, on="val")
        results[name] = evaluate(model, data, on="test")
        if label == "tuned":
            tuned_name = name
    lines = [f"# {job_name}: tuned against fixed settings", ""]
    if job.notes:
        lines += job.notes(base, out / "model")
    if len(compared) == 1:
        fixed = {getattr(run_cfg, compared[0]): val[n]["cold"]["ndcg@20"] for n, run_cfg in zip(results, runs.values())}
        artifacts.write_bytes(out / f"metric_vs_{compared[0]}.png", metric_chart(found.trials, compared[0], fixed))
    table = "Val:\n\n" + markdown_table(val) + "\nTest:\n\n" + markdown_table(results)
    artifacts.write_text(out / "comparison.md", "\n".join(lines) + table)
    artifacts.write_json(out / "comparison.json", {"val": val, "test": results, "tuned": tuned_name})
    return {"table": "\n".join(lines) + table, "best_yaml": out / "best.yaml", "model": out / "model",
            "results": results, "val": val, "tuned": tuned_name, "search": found,
            "seconds": time.perf_counter() - started}


def metric_chart(trials: pd.DataFrame, field: str, fixed: dict | None = None) -> bytes:
    """Cold-val NDCG@20 of every trial against its `field`; `fixed` adds full runs (value -> score) as a line."""
    import matplotlib  # matplotlib: heavy, only the chart draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: heavy, only the chart draws

    fig, ax = plt.subplots(figsize=(6, 4))
    done = trials.dropna(subset=["best"])
    ax.scatter(done[field], done["best"], c=["tab:orange" if s else "tab:blue" for s in done["stopped_early"]])
    if fixed:
        values = sorted(fixed)
        ax.plot(values, [fixed[x] for x in values], "k--", marker="s", label="full runs")
        ax.legend()
    ax.set_xlabel(field)
    ax.set_ylabel(METRIC)
    ax.set_title(f"Cold-val NDCG@20 against {field}\n(dots: trials, orange if ASHA stopped them)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
