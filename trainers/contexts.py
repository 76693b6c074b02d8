"""Where the training skeleton (`trainers.loop.fit`) runs: a Ray Train worker (`RayContext`), or a plain
process or one rank of a torch.distributed group started without Ray (`LocalContext`: the GPU check, the
unit tests, `fit_in_process`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from coldstart import artifacts
from trainers.common import fault_drill, report_epoch
from trainers.epochs import STATE


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
