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
from torch.nn.parallel import DistributedDataParallel

from coldstart import artifacts
from coldstart.training import StepTraining, unwrap
from trainers.common import TrainResult, ensure_ray, fault_drill, report_epoch, torch_trainer

log = logging.getLogger(__name__)

LAST_WEIGHTS = "last.safetensors"
OPTIMIZER = "optimizer.pt"
SCALER = "scaler.pt"  # fp16's loss scale and its growth bookkeeping
STATE = "state.json"
BEST = "best"


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


class EarlyStopping:
    """Epoch bookkeeping that travels in every checkpoint: history, best epoch, patience, restarts."""

    def __init__(self, key: str, patience: int, state: dict | None = None):
        self.key, self.patience = key, patience
        self.state = state or {"epoch": -1, "history": [], "best": None, "since_best": 0, "restarts": 0}

    @classmethod
    def resumed(cls, key: str, patience: int, path: Path) -> "EarlyStopping":
        state = json.loads(Path(path).read_text())
        state["restarts"] = state.get("restarts", 0) + 1
        return cls(key, patience, state)

    @property
    def next_epoch(self) -> int:
        return self.state["epoch"] + 1

    @property
    def best(self) -> dict | None:
        return self.state["best"]

    @property
    def history(self) -> list[dict]:
        return self.state["history"]

    def update(self, report: dict) -> bool:
        """Record an epoch; True when it is the best so far on `key`."""
        state = self.state
        state["history"].append(report)
        state["epoch"] = report["epoch"]
        improved = state["best"] is None or report[self.key] > state["best"][self.key]
        state["best"], state["since_best"] = (report, 0) if improved else (state["best"], state["since_best"] + 1)
        return improved

    @property
    def should_stop(self) -> bool:
        return self.state["since_best"] >= self.patience

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.state))


def epoch_shard(n: int, *, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's rows of an epoch: one permutation of range(n) drawn from (seed, epoch), the same on every
    rank, padded by wrapping round to a multiple of `world` and cut into `world` equal slices. Every row is in
    exactly one slice, but for the fewer than `world` that the padding repeats; every rank gets
    ceil(n / world) rows, so all step the same number of batches (DDP waits for the slowest)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per = -(-n // world)
    return np.resize(order, per * world)[rank * per:(rank + 1) * per] if n else order


def per_worker(batch_size: int, world: int) -> int:
    """Each rank's share of a step's rows: a job's batch size means the same whatever the workers."""
    return max(1, batch_size // world)


def reduce_mean(values: dict[str, float], weight: float, device: torch.device) -> tuple[dict[str, float], float]:
    """Weighted mean of per-rank figures across the torch.distributed group, and the total weight.

    The tensor lives on `device`: NCCL reduces only CUDA tensors. Identity on one process.
    """
    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    t = t.cpu()
    total = float(t[-1])
    return {k: float(t[i] / max(total, 1e-12)) for i, k in enumerate(keys)}, total


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


class RayContext:
    """Inside a Ray Train worker: its rank, its device, its checkpoint, `ray.train.report`."""

    def __init__(self, scale):
        import ray.train  # ray: heavy, only the Ray path loads it
        import ray.train.torch

        torch.set_num_threads(scale.threads_per_worker)
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.scale = scale

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        import ray.train  # ray: heavy, only the Ray path loads it

        found = ray.train.get_checkpoint()
        if found is None:
            yield None
            return
        with found.as_directory() as folder:
            yield Path(folder)

    def prepare(self, model: nn.Module) -> nn.Module:
        import ray.train.torch  # ray: heavy, only the Ray path loads it

        return ray.train.torch.prepare_model(model)

    def before_epoch(self, epoch: int, resumed: bool) -> None:
        fault_drill(self.scale, epoch, resumed=resumed)

    def report(self, metrics: dict, write) -> None:
        report_epoch(metrics, write)


class LocalContext:
    """A plain process, or one rank of a torch.distributed group started without Ray.

    With `folder`, each epoch's checkpoint replaces the last there (atomically), and
    `resume=True` starts from it, as a Ray Train worker restarts from its last report.
    """

    def __init__(self, device: str | torch.device = "cpu", folder: Path | None = None, resume: bool = False):
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world = dist.get_world_size() if distributed else 1
        self.device = torch.device(device)
        self.folder = Path(folder) if folder is not None else None
        self.resume = resume
        self.reports: list[dict] = []

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        found = self.resume and self.folder is not None and (self.folder / STATE).is_file()
        yield self.folder if found else None

    def prepare(self, model: nn.Module) -> nn.Module:
        """On the device, DDP-wrapped only with more than one rank, as Ray's `prepare_model` does (a world of
        one is never wrapped there, so neither is it here: the GPU check then runs what a Ray worker runs)."""
        model = model.to(self.device)
        if self.world > 1:
            ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
                if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        return model

    def before_epoch(self, epoch: int, resumed: bool) -> None:
        pass

    def report(self, metrics: dict, write) -> None:
        self.reports.append(metrics)
        if write is not None and self.folder is not None and self.rank == 0:
            with artifacts.atomic_dir(self.folder) as tmp:
                write(tmp)


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
    base = Path(cfg.scale.storage or Path(cfg.out).resolve().parent / "ray_results").resolve()
    settings = cfg.model_dump(mode="json", exclude={"scale": {"storage"}})
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return base / digest
