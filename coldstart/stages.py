"""A pipeline's stages and how they run: what a stage is, the ledger of what each did, and running them side
by side as soon as what they read is ready.

A stage (`ModelStage`) trains or loads models; the pipeline (`coldstart.pipeline`) decides, stage by stage,
to skip it (its inputs are missing or it does not apply), reuse its finished artifacts (same fingerprint) or
run it, and records the outcome in OUT/stages.json (`Ledger`). The stages themselves live with what they
train (`trainers.stages`, `tuning.stages`); the CLI hands them over, so the core never imports them.
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

import coldstart
from coldstart import artifacts
from coldstart.config import ConfigError
from coldstart.evaluate import Recommender, SplitData

log = logging.getLogger(__name__)

PipelineConfig = Any  # `coldstart.pipeline.PipelineConfig`, which imports this module


class StageSkipped(Exception):
    """A stage that does not apply to this data; the message is the reason, shown in the log and the report."""


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
    run: Callable[[SplitData, PipelineConfig, Path], dict[str, Recommender]]
    load: Callable[[SplitData, PipelineConfig, Path], dict[str, Recommender]] | None = None
    fingerprint: Callable[[PipelineConfig], object] = lambda cfg: None
    needs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    applies: Callable[[SplitData, PipelineConfig], str | None] = lambda data, cfg: None


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


def stage_fingerprint(stage: ModelStage, cfg: PipelineConfig, split_hash: str, ledger: Ledger) -> str:
    """The stage's configuration, the split, the fingerprints of the stages it reads and the coldstart version,
    hashed: artifacts another release trained are trained again, not reused."""
    upstream = {need: ledger.entry(need).get("fingerprint") for need in stage.needs}
    return config_hash({"stage": stage.name, "config": stage.fingerprint(cfg), "split": split_hash,
                        "needs": upstream, "coldstart": coldstart.__version__})


def config_hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=lambda o: o.model_dump(mode="json") if hasattr(o, "model_dump")
                      else str(o))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


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


def plan_stage(stage: ModelStage, data: SplitData, cfg: PipelineConfig, split_hash: str,
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


def run_stage(stage: ModelStage, plan: tuple[str, str], data: SplitData, cfg: PipelineConfig, ledger: Ledger,
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
    storage = cfg.scale.runs_root(cfg.out) / f"{name}-{fingerprint}"
    if cfg.force:
        shutil.rmtree(storage, ignore_errors=True)
    return cfg.model_copy(update={"scale": cfg.scale.model_copy(update={"storage": storage})})


def build_stages(cfg: PipelineConfig, table: dict[str, ModelStage]) -> list[ModelStage]:
    """The stages `cfg.stages` names, from `table`, in order; a stage that reads another's output must come after
    it."""
    unknown = [s for s in cfg.stages if s not in table]
    if unknown:
        raise ConfigError(f"stages: unknown stage(s) {unknown}; known: {list(table)}")
    stages = [table[name] for name in cfg.stages]
    for position, stage in enumerate(stages):
        late = [need for need in stage.needs if need in cfg.stages[position:]]
        if late:
            raise ConfigError(f"stages: {stage.name} reads what {', '.join(late)} writes; put it after them")
    return stages
