"""The one training skeleton every job runs, on Ray Train workers or in a plain process.

A job (`TrainJob`) supplies its model, its batch step (a `coldstart.training.StepTraining`),
its batches, its validation and how its artifact is written. The skeleton owns
the rest, once for every model:

- device placement: the model goes to the worker's device (`prepare` of the
  context); batches and lookup tables follow it in `StepTraining`;
- sharding (`epoch_shard`, through `TrainJob.shard`): every rank draws the same
  permutation of the rows from (seed, epoch) and takes its own slice, so each
  row is trained once per epoch across the ranks, in equal batch counts;
- resume: the last weights, the optimizer's state and the epoch bookkeeping come
  back from the checkpoint, so a resumed run continues as an uninterrupted one
  (shards from (seed, epoch); negatives and dropout from (seed, epoch, rank));
- validation once: rank 0 validates the whole validation set and the others
  take its figures (a job whose validation reads its own shard, the encoder's,
  sets `validates_shard` and its ranks' figures are averaged, weighted);
- metric reduction: every training figure is averaged over the ranks on the
  device, weighted by the rows each rank saw, and leaves it with `.cpu()`;
- model selection and early stopping on the job's validation key;
- checkpoints: `best/` (the job's own artifact of the best epoch),
  `last.safetensors`, `optimizer.pt` (and fp16's `scaler.pt`) and `state.json`, written when
  `checkpoint_every_s` has passed since the last one and after the final epoch
  (every epoch reports its metrics either way; 0 checkpoints every epoch).

`RayContext` runs it inside a Ray Train worker; `LocalContext` in a process of
its own or one rank of a torch.distributed group started without Ray (the GPU
check, and unit tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from torch import nn

from coldstart import artifacts
from coldstart.training import StepTraining, unwrap
from trainers.common import TrainResult, ensure_ray, torch_trainer
from trainers.contexts import LocalContext, RayContext
from trainers.epochs import (BEST, LAST_WEIGHTS, OPTIMIZER, SCALER, STATE, EarlyStopping, epoch_shard,  # noqa: F401
                             per_worker, reduce_mean)

log = logging.getLogger(__name__)

class TrainJob:
    """What one model's training supplies to the skeleton; a new model is a subclass of this."""

    name = "job"
    key = "val_ndcg@20"  # validation metric that selects the epoch kept and stops early
    throughput = "interactions_per_second"
    validates_shard = False  # True: `validate` reads this rank's own shard, and the ranks' figures are averaged

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    @property
    def patience(self) -> int:
        return self.cfg.patience

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_training(self, model: nn.Module, device: torch.device, precision: str) -> StepTraining:
        """The batch step over `model` (perhaps DDP-wrapped, already on `device`)."""
        raise NotImplementedError

    def batches(self, epoch: int, rank: int, world: int) -> Iterable[Any]:
        """This rank's batches of the epoch, on the CPU (the step places them): the rows `shard` gives."""
        raise NotImplementedError

    def shard(self, n: int, epoch: int, rank: int, world: int, stream: int = 0) -> np.ndarray:
        """This rank's rows of an epoch over `n` (`epoch_shard`); `stream` tells apart two row sets of a job."""
        return epoch_shard(n, seed=self.seed + stream, epoch=epoch, rank=rank, world=world)

    def validate(self, model: nn.Module) -> tuple[dict[str, float], float]:
        """Validation metrics of `model` (unwrapped, in eval mode) and their weight on this rank."""
        raise NotImplementedError

    def save(self, folder: Path, model: nn.Module, meta: dict) -> None:
        """Write the job's self-describing artifact of `model` into `folder`."""
        raise NotImplementedError

    def load(self, folder: Path) -> dict[str, torch.Tensor]:
        """The state dict of an artifact `save` wrote."""
        raise NotImplementedError


def _validate(job: TrainJob, net: nn.Module, ctx) -> dict[str, float]:
    """The epoch's validation figures, the same on every rank (see the module docstring)."""
    if job.validates_shard:
        with torch.no_grad():
            val, weight = job.validate(net)
        return reduce_mean(val, weight, ctx.device)[0]
    val = None
    if ctx.rank == 0:
        with torch.no_grad():
            val = job.validate(net)[0]
    if ctx.world > 1 and dist.is_available() and dist.is_initialized():
        box = [val]
        dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
        val = box[0]
    return val


@contextlib.contextmanager
def _holding(model: nn.Module, state: dict[str, torch.Tensor] | None) -> Iterator[nn.Module]:
    """`model` with `state` loaded for the block, then its own weights back."""
    if state is None:
        yield model
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    try:
        yield model
    finally:
        model.load_state_dict(current)


def fit(job: TrainJob, ctx, precision: str = "fp32", checkpoint_every_s: float = 0.0) -> EarlyStopping:
    """Train `job` to the end (its epochs, or early stopping), reporting every epoch.

    A checkpoint goes with an epoch's report when `checkpoint_every_s` seconds have passed since the last
    one (or the start), and always with the final epoch's: a short epoch then costs its step and its
    validation, not a copy of the weights and optimizer moments, and a failure loses at most that long.
    """
    torch.manual_seed(job.seed)
    model = job.build_model()
    stopping = EarlyStopping(job.key, job.patience)
    best_state = optimizer_state = scaler_state = None
    with ctx.checkpoint() as folder:
        resumed = folder is not None
        if resumed:
            load_model(model, str(folder / LAST_WEIGHTS))
            best_state = job.load(folder / BEST)
            optimizer_state = torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True)
            if (folder / SCALER).is_file():
                scaler_state = torch.load(folder / SCALER, map_location="cpu", weights_only=True)
            stopping = EarlyStopping.resumed(job.key, job.patience, folder / STATE)
            log.info("%s: resuming at epoch %d", job.name, stopping.next_epoch)
    wrapped = ctx.prepare(model)
    net = unwrap(wrapped)
    training = job.build_training(wrapped, ctx.device, precision)
    if optimizer_state is not None:
        training.optimizer.load_state_dict(optimizer_state)  # moves the moments to the parameters' device
    if scaler_state is not None and training.scaler is not None:
        training.scaler.load_state_dict(scaler_state)
    last_checkpoint = time.monotonic()
    for epoch in range(stopping.next_epoch, job.epochs):
        ctx.before_epoch(epoch, resumed)
        torch.manual_seed(job.seed + 1000 * epoch + ctx.rank)  # dropout draws as an uninterrupted run's
        started = time.perf_counter()
        train = training.train_epoch(job.batches(epoch, ctx.rank, ctx.world))
        seconds = time.perf_counter() - started
        train, rows = reduce_mean(train, training.count, ctx.device)
        net.eval()
        val = _validate(job, net, ctx)
        report = {"epoch": epoch, **train, job.throughput: rows / seconds if seconds else 0.0, **val}
        if stopping.update(report):
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

        def write(folder: Path, epoch: int = epoch) -> None:
            with _holding(net, best_state if stopping.best["epoch"] != epoch else None) as best:
                job.save(folder / BEST, best, {"epoch": stopping.best["epoch"], "metrics": stopping.best,
                                               "selected_on": job.key})
            save_model(net, str(folder / LAST_WEIGHTS))
            torch.save(training.optimizer.state_dict(), folder / OPTIMIZER)
            if training.scaler is not None:
                torch.save(training.scaler.state_dict(), folder / SCALER)
            stopping.write(folder / STATE)

        due = stopping.should_stop or epoch == job.epochs - 1 \
            or time.monotonic() - last_checkpoint >= checkpoint_every_s
        ctx.report(report, write if due else None)
        if due:
            last_checkpoint = time.monotonic()
        if stopping.should_stop:
            break
    return stopping


def worker_loop(config: dict) -> None:
    """What each Ray Train worker runs: the job built from its config, fitted by the skeleton."""
    job_class = config["job"]
    cfg = job_class.config_class.model_validate(config["cfg"])
    job = job_class(cfg, **config.get("inputs", {}))
    fit(job, RayContext(cfg.scale), precision=cfg.scale.precision, checkpoint_every_s=cfg.scale.checkpoint_every_s)


def finish(result, out: Path, started: float):
    """Copy the best epoch's artifact out of the run's last checkpoint into `out`, atomically."""
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / STATE).read_text())
        copy_best(Path(folder), out)
    return TrainResult(out=Path(out), history=state["history"], best=state["best"],
                       seconds=time.perf_counter() - started, restarts=state.get("restarts", 0))


def run_job(job_class, cfg, *, inputs: dict | None = None, datasets: dict | None = None,
            callbacks: list | None = None, score: str | None = None, context: LocalContext | None = None):
    """Driver side: a TorchTrainer running `worker_loop` over `job_class`, then `finish`.

    With `context` (a `LocalContext` with a folder: a Tune trial's, say), the job is fitted in this process
    instead, on the context's device, and its best epoch's artifact is copied from the context's folder to
    `cfg.out`: no Ray Train run, so no controller and worker processes to start for a small model.
    """
    if context is not None:
        return run_in_process(job_class, cfg, context, inputs=inputs, datasets=datasets)
    ensure_ray(cfg.ray)
    started = time.perf_counter()
    scale = cfg.scale.model_copy(update={"storage": run_storage(cfg)})
    trainer = torch_trainer(worker_loop, {"job": job_class, "cfg": cfg.model_dump(mode="json"),
                                          "inputs": inputs or {}},
                            scale, name=f"{job_class.name}-{cfg.out.name}", out=cfg.out, datasets=datasets,
                            callbacks=callbacks, score=score)
    return finish(trainer.fit(), cfg.out, started)


def run_in_process(job_class, cfg, context: LocalContext, *, inputs: dict | None = None,
                   datasets: dict | None = None):
    if datasets:
        raise ValueError(f"{job_class.name}: a job that reads Ray Datasets runs on Ray Train, not in-process")
    if context.folder is None:
        raise ValueError(f"{job_class.name}: an in-process run needs a context with a folder for its checkpoints")
    started = time.perf_counter()
    torch.set_num_threads(cfg.scale.threads_per_worker)
    stopping = fit(job_class(cfg, **(inputs or {})), context, precision=cfg.scale.precision,
                   checkpoint_every_s=cfg.scale.checkpoint_every_s)
    copy_best(context.folder, cfg.out)  # the final epoch always checkpoints, so best/ is there
    return TrainResult(out=Path(cfg.out), history=stopping.history, best=stopping.best,
                       seconds=time.perf_counter() - started, restarts=stopping.state.get("restarts", 0))


def fit_in_process(job: TrainJob, folder: Path | None = None, **options) -> tuple[nn.Module, EarlyStopping]:
    """Fit `job` in this process (`LocalContext`, checkpoints in `folder`, else a temporary one) and rebuild
    the model of its best epoch from `best/`: what a benchmark or a test measures. `options` go to `fit`."""
    import tempfile

    with tempfile.TemporaryDirectory() if folder is None else contextlib.nullcontext(folder) as where:
        stopping = fit(job, LocalContext(folder=Path(where)), **options)
        model = job.build_model()
        model.load_state_dict(job.load(Path(where) / BEST))
    return model.eval(), stopping


def copy_best(checkpoint: Path, out: Path) -> None:
    """The best epoch's artifact of a checkpoint folder, copied to `out` atomically."""
    with artifacts.atomic_dir(out) as tmp:
        shutil.copytree(checkpoint / BEST, tmp, dirs_exist_ok=True)


def run_storage(cfg) -> Path:
    """Where a job's Ray Train run lives: `scale.storage` (default: beside `out`, in ray_results/) under a
    digest of the job's whole configuration.

    Ray Train resumes a run whose folder it finds (a driver that died and is started again continues from
    its last checkpoint). Keyed by the configuration, that happens only for the same job: a rerun with
    another learning rate, or another split, starts fresh instead of resuming the old run's model.
    """
    base = cfg.scale.runs_root(Path(cfg.out).resolve().parent)
    settings = cfg.model_dump(mode="json", exclude={"scale": {"storage"}})
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return base / digest
